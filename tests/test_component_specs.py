"""The published component specs: build/components/<name>.yaml, for kfp.components.load_component_from_file."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import pytest
from kfp import components

from pipelines.cli import main
from pipelines.compile import compile_components, library_components

LIBRARY = {
    "resolve_revision",
    "dvc_pull",
    "train",
    "evaluate",
    "pytorchjob_train",
    "trainjob_train",
    "distributed_train",
    "build_bento",
    "containerize",
    "find_baseline",
    "register",
    "report",
}


@pytest.fixture(scope="module")
def specs(tmp_path_factory):
    folder = tmp_path_factory.mktemp("components")
    return {path.stem: path for path in compile_components(folder)}


def test_every_component_is_written_and_loads_with_its_interface(specs):
    assert LIBRARY <= set(specs)
    for name, component in library_components().items():
        loaded = components.load_component_from_file(str(specs[name]))
        assert loaded.name == component.name
        assert loaded.component_spec.inputs == component.component_spec.inputs
        assert loaded.component_spec.outputs == component.component_spec.outputs
        image = component.component_spec.implementation.container.image
        assert loaded.component_spec.implementation.container.image == image


def test_component_specs_are_byte_identical_run_to_run(specs, tmp_path):
    # Another process: protobuf map order, which the compiled header prints, can change between processes.
    script = "import sys; from pipelines.compile import compile_components; compile_components(sys.argv[1])"
    subprocess.run([sys.executable, "-c", script, str(tmp_path)], check=True, timeout=300)
    again = {path.stem: path for path in tmp_path.glob("*.yaml")}
    assert again.keys() == specs.keys()
    for name, path in specs.items():
        assert again[name].read_bytes() == path.read_bytes(), name


def test_kfp_torch_compile_writes_the_components_beside_the_pipelines(tmp_path, capsys):
    argv = ["compile", "--output-dir", str(tmp_path / "pipelines"), "--components-dir", str(tmp_path / "components")]
    assert main(argv) == 0
    printed = capsys.readouterr().out.splitlines()
    assert LIBRARY <= {path.stem for path in (tmp_path / "components").glob("*.yaml")}
    assert str(tmp_path / "components" / "dvc_pull.yaml") in printed
    assert str(tmp_path / "pipelines" / "training_pipeline.yaml") in printed


# A user's pipeline made of the published files alone: the driver imports nothing of this repository
# (kfp.local's task processes run each component's own code, which imports the library's modules).
USERS_PIPELINE = textwrap.dedent(
    """
    import json, sys
    from pathlib import Path
    from kfp import compiler, components, dsl, local

    specs, package, root, repo_url = Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3], sys.argv[4]
    resolve_revision = components.load_component_from_file(str(specs / "resolve_revision.yaml"))
    dvc_pull = components.load_component_from_file(str(specs / "dvc_pull.yaml"))

    @dsl.pipeline(name="pull-digits")
    def pull_digits(repo_url: str, rev: str = "main"):
        commit = resolve_revision(repo_url=repo_url, rev=rev).set_caching_options(False)
        dvc_pull(repo_url=repo_url, rev=commit.output, paths=["data/raw"])

    compiler.Compiler().compile(pull_digits, str(package))
    local.init(runner=local.SubprocessRunner(use_venv=False), pipeline_root=root, raise_on_error=True)
    components.load_component_from_file(str(package))(repo_url=repo_url)
    print(json.dumps(sorted(name for name in sys.modules if name.split(".")[0] in ("pipelines", "components"))))
    """
)


@pytest.mark.slow
def test_a_pipeline_built_from_the_component_files_alone_compiles_and_runs(specs, digits_repo, tmp_path):
    folder = next(iter(specs.values())).parent
    package, root = tmp_path / "pull_digits.yaml", tmp_path / "root"
    done = subprocess.run(
        [sys.executable, "-c", USERS_PIPELINE, str(folder), str(package), str(root), digits_repo.repo_url],
        capture_output=True,
        text=True,
        cwd=tmp_path,  # not the repository: nothing of ours is importable from the working directory
        timeout=600,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert json.loads(done.stdout.strip().splitlines()[-1]) == []  # the driver imported none of our code
    assert "pull-digits" in package.read_text()
    (dataset,) = root.glob("pull-digits-*/dvc-pull/dataset")
    assert (dataset / "data/raw/labels.csv").is_file()
