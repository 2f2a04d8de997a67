"""The Containerfiles and ``make images`` agree with the images the compiled YAML names."""

from __future__ import annotations

import configparser
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from components import __version__

ROOT = Path(__file__).resolve().parents[1]
CONTAINERFILES = {
    "components": ROOT / "images/components/Containerfile",
    "training-cuda": ROOT / "images/training/Containerfile",
}


def setup_cfg() -> configparser.ConfigParser:
    parser = configparser.ConfigParser()
    parser.read(ROOT / "setup.cfg")
    return parser


@pytest.mark.parametrize("image", sorted(CONTAINERFILES))
def test_each_containerfile_installs_the_library_and_the_pinned_torch(image):
    text = CONTAINERFILES[image].read_text()
    assert re.search(r"^ARG BASE_IMAGE=\S+python:3\.11", text, re.MULTILINE)
    assert "FROM ${BASE_IMAGE}" in text
    requirements = [line.strip() for line in setup_cfg()["options"]["install_requires"].splitlines()]
    pins = [next(line for line in requirements if line.startswith(f"{name}==")) for name in ("torch", "torchvision")]
    assert f'pip install --index-url "${{TORCH_INDEX_URL}}" {" ".join(pins)}' in text  # the pair, before the rest
    packages = [p for p in setup_cfg()["options.packages.find"]["include"].split() if "*" not in p]
    for package in packages:
        assert f"COPY {package} {package}" in text, f"{image} image lacks the {package} package"
    assert "RUN pip install . &&" in text  # the library itself, with KFP, from the build context


def test_make_images_tags_exactly_what_the_components_name(tmp_path):
    env = {**os.environ, "KFP_TORCH_LIFECYCLE_REGISTRY": "registry.example.com/ml"}
    planned = subprocess.run(["make", "-n", "images"], cwd=ROOT, env=env, capture_output=True, text=True, check=True)
    named = subprocess.run(
        [
            sys.executable,
            "-c",
            "from components.container_images import COMPONENTS_IMAGE as c, TRAINING_IMAGE as t; print(c, t)",
        ],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    assert named == [
        f"registry.example.com/ml/components:{__version__}",
        f"registry.example.com/ml/training-cuda:{__version__}",
    ]
    for image in named:
        assert f"-t {image} ." in planned.stdout


def test_the_registry_variable_reaches_the_compiled_yaml(tmp_path):
    env = {**os.environ, "KFP_TORCH_LIFECYCLE_REGISTRY": "registry.example.com/ml"}
    subprocess.run(
        [sys.executable, "-m", "pipelines.compile", "--output-dir", str(tmp_path)], cwd=ROOT, env=env, check=True
    )
    text = (tmp_path / "training_pipeline.yaml").read_text()
    images = set(re.findall(r"^ +image: (\S+)$", text, re.MULTILINE))
    assert images == {
        f"registry.example.com/ml/components:{__version__}",
        f"registry.example.com/ml/training-cuda:{__version__}",
    }


def test_the_build_context_leaves_out_local_state():
    ignored = (ROOT / ".containerignore").read_text().split()
    assert {".git", ".venv", ".local", "build"} <= set(ignored)


# Opt-in: after `make images`, run three compiled steps inside the images, exactly as a
# pod would (the YAML's command and args, nothing installed first). KFP_TORCH_LIFECYCLE_IMAGE_STORAGE
# names the buildah storage the image is in ("default" for buildah's own).
IMAGE_STORAGE = os.environ.get("KFP_TORCH_LIFECYCLE_IMAGE_STORAGE", "")


@pytest.mark.slow
@pytest.mark.skipif(not IMAGE_STORAGE, reason="set KFP_TORCH_LIFECYCLE_IMAGE_STORAGE after `make images`")
def test_compiled_steps_run_inside_the_built_images(tmp_path, digits_repo):
    import json

    import yaml

    from components.containerize.buildah import _global_flags
    from pipelines.compile import compile_all

    flags = ["buildah", *_global_flags("" if IMAGE_STORAGE == "default" else IMAGE_STORAGE)]
    compiled = compile_all(tmp_path / "compiled")[0]
    executors = next(yaml.safe_load_all(compiled.read_text()))["deploymentSpec"]["executors"]
    remote = str(digits_repo.remote_dir)
    mounts = ["--volume", f"{digits_repo.repo_url}:/data/repo:ro", "--volume", f"{remote}:{remote}:ro"]

    def run_step(executor: str, executor_input: dict, extra_mounts: tuple[str, ...] = ()) -> dict:
        work = tmp_path / executor
        work.mkdir()
        container = executors[executor]["container"]
        executor_input["outputs"]["outputFile"] = "/work/executor_output.json"
        args = [arg.replace("{{$}}", json.dumps(executor_input)) for arg in container["args"]]
        name = subprocess.run([*flags, "from", container["image"]], capture_output=True, text=True, check=True)
        try:
            done = subprocess.run(
                [*flags, "run", "--isolation", "chroot", *mounts, *extra_mounts, "--volume", f"{work}:/work"]
                + [name.stdout.strip(), "--", *container["command"], *args],
                capture_output=True,
                text=True,
            )
        finally:
            subprocess.run([*flags, "rm", name.stdout.strip()], capture_output=True)
        assert done.returncode == 0, done.stderr[-3000:]
        assert "pip install" not in done.stdout + done.stderr
        return json.loads((work / "executor_output.json").read_text())

    resolved = run_step(
        "exec-resolve-revision",
        {
            "inputs": {"parameterValues": {"repo_url": "/data/repo", "rev": "main"}},
            "outputs": {"parameters": {"Output": {"outputFile": "/work/output"}}},
        },
    )
    assert resolved["parameterValues"]["Output"] == digits_repo.commit
    dataset = {"name": "dataset", "type": {"schemaTitle": "system.Dataset"}, "uri": "/work/dataset", "metadata": {}}
    pulled = run_step(
        "exec-dvc-pull",
        {
            "inputs": {"parameterValues": {"repo_url": "/data/repo", "rev": digits_repo.commit, "paths": ["data/raw"]}},
            "outputs": {"artifacts": {"dataset": {"artifacts": [dataset]}}},
        },
    )
    assert pulled["artifacts"]["dataset"]["artifacts"][0]["metadata"]["file_count"] == 1799
    model = {"name": "model", "type": {"schemaTitle": "system.Model"}, "uri": "/work/model", "metadata": {}}
    metrics = {"name": "metrics", "type": {"schemaTitle": "system.Metrics"}, "uri": "/work/metrics", "metadata": {}}
    trained = run_step(  # on the training image
        "exec-train",
        {
            "inputs": {
                "parameterValues": {"epochs": 1},
                "artifacts": {"dataset": {"artifacts": [{**dataset, "uri": "/pulled/dataset"}]}},
            },
            "outputs": {"artifacts": {"model": {"artifacts": [model]}, "metrics": {"artifacts": [metrics]}}},
        },
        extra_mounts=("--volume", f"{tmp_path / 'exec-dvc-pull'}:/pulled:ro"),
    )
    assert trained["artifacts"]["metrics"]["artifacts"][0]["metadata"]["val_accuracy"] > 0.5
    assert (tmp_path / "exec-train/model/weights.pt").is_file()
