"""build_bento's packaging: pinned requirements from the build environment (no torch on the CPU), a build
with the network closed, and the model's lineage in the bento's labels and its image's environment."""

from __future__ import annotations

import subprocess
import sys
from importlib import metadata
from pathlib import Path

import pytest
import yaml

from components.build_bento.packaging import MODEL_TAG_ENV, build_bento_archive
from components.build_bento.requirements import is_cuda_package, pinned_requirements, public_version
from tests.support.offline_bento import build_offline, make_model, network_can_be_closed

REPO = Path(__file__).resolve().parents[1]


# --- requirements (no bento) --------------------------------------------------------------------


def test_cpu_requirements_pin_what_is_installed_and_no_torch():
    lines = pinned_requirements("cpu")
    pins = dict(line.split("==") for line in lines)
    assert {"onnxruntime", "numpy", "pillow", "aiohttp"} <= set(pins)
    assert all(pins[name] == metadata.version(name) for name in pins)
    assert not [name for name in pins if is_cuda_package(name)]
    assert "bentoml" not in pins  # BentoML writes its own bentoml==<version> line


def test_cuda_requirements_pin_torch_and_its_cuda_wheels():
    pytest.importorskip("torch")
    pins = dict(line.split("==") for line in pinned_requirements("cuda"))
    assert pins["torch"] == public_version(metadata.version("torch"))
    assert "+" not in pins["torch"]  # PyPI's version: its Linux x86_64 wheels are the CUDA builds
    assert set(pinned_requirements("cpu")) < {f"{k}=={v}" for k, v in pins.items()}


@pytest.mark.parametrize("accelerator", ["gpu", "CUDA", "", "rocm"])
def test_an_unknown_accelerator_is_refused_before_anything_is_built(accelerator, tmp_path):
    with pytest.raises(ValueError, match=r"accelerator .* is not one of cpu, cuda"):
        build_bento_archive(tmp_path / "no-model", tmp_path / "bento", accelerator=accelerator)
    assert not (tmp_path / "bento").exists()


def library_imports(relative: str) -> set[str]:
    """The library modules (``serving.*``, ``components.*``) a file imports anywhere, as repository paths."""
    import ast

    found = set()
    for node in ast.walk(ast.parse((REPO / relative).read_text())):
        names = [a.name for a in node.names] if isinstance(node, ast.Import) else []
        if isinstance(node, ast.ImportFrom) and node.module:
            names = [node.module, *(f"{node.module}.{a.name}" for a in node.names)]
        for name in names:
            if name.split(".")[0] in ("serving", "components"):
                path = name.replace(".", "/")
                found |= {f"{path}.py"} if (REPO / f"{path}.py").is_file() else set()
                found |= {f"{path}/__init__.py"} if (REPO / path / "__init__.py").is_file() else set()
    return found


@pytest.mark.parametrize("accelerator", ["cpu", "cuda"])
def test_the_bento_carries_every_library_module_the_service_imports(accelerator):
    from components.build_bento.packaging import included_files

    carried = set(included_files(accelerator))
    cuda_only = {"serving/torch_backend.py", "components/common/model.py"}  # imported only when serving on cuda
    for relative in sorted(carried):
        missing = library_imports(relative) - carried - (cuda_only if accelerator == "cpu" else set())
        assert not missing, f"{relative} imports {sorted(missing)}, which the {accelerator} bento does not carry"


# --- a real bento, built with the network closed ----------------------------------------------------


@pytest.fixture(scope="module")
def offline_bento(tmp_path_factory):
    if not network_can_be_closed():
        pytest.skip("needs unshare -rn (a network namespace) to close the network")
    root = tmp_path_factory.mktemp("offline-bento")
    descriptor, log = build_offline(make_model(root / "model"), root / "bento", root)
    return {"descriptor": descriptor, "log": log, "path": Path(descriptor["path"]), "root": root}


def test_the_bento_builds_with_no_network_and_locks_nothing(offline_bento):
    assert "Locking PyPI package versions" not in offline_bento["log"]
    # Neither BentoML's `pip install uv` nor its `uv pip compile` ran; nothing asked for a package tool.
    tools = [c for c in offline_bento["descriptor"]["commands"] if {"pip", "uv", "-mpip"} & {Path(p).name for p in c}]
    assert tools == []
    assert not (offline_bento["path"] / "env/python/requirements.lock.txt").exists()
    assert (offline_bento["root"] / "bento" / offline_bento["descriptor"]["archive"]).is_file()


def test_the_archive_is_a_plain_tar_that_bentoml_imports(offline_bento, tmp_path):
    """Uncompressed, not BentoML's default xz, which took ~30 s on a resnet18; `bentoml import` reads it."""
    archive = offline_bento["root"] / "bento" / offline_bento["descriptor"]["archive"]
    assert archive.name.endswith(".tar") and archive.read_bytes()[257:262] == b"ustar"  # the POSIX tar magic
    env = {
        "PATH": "/usr/bin:/bin",
        "HOME": str(tmp_path),
        "BENTOML_HOME": str(tmp_path / "store"),
        "DO_NOT_TRACK": "true",
    }
    code = "import sys, bentoml; print(bentoml.import_bento(sys.argv[1]).tag)"
    done = subprocess.run(
        [sys.executable, "-c", code, str(archive)], env=env, capture_output=True, text=True, timeout=120, cwd=tmp_path
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip().splitlines()[-1] == offline_bento["descriptor"]["bento_tag"]
    assert (tmp_path / "store" / "models" / "image-classifier").is_dir()


def test_a_relative_output_directory_holds_the_archive(offline_bento, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    descriptor = build_bento_archive(offline_bento["root"] / "model", Path("out") / "bento")
    assert (tmp_path / "out" / "bento" / descriptor["archive"]).is_file()


def test_the_bentos_requirements_are_the_installed_versions_without_torch(offline_bento):
    lines = (offline_bento["path"] / "env/python/requirements.txt").read_text().split()
    assert all("==" in line for line in lines), lines
    pins = dict(line.lower().split("==") for line in lines)
    assert pins["bentoml"] == metadata.version("bentoml")
    assert pins["onnxruntime"] == metadata.version("onnxruntime")
    assert not {"torch", "torchvision", "triton"} & set(pins)
    assert [name for name in pins if name.startswith("nvidia-")] == ["nvidia-ml-py"]
    assert sorted(line for line in lines if not line.startswith("bentoml==")) == sorted(pinned_requirements("cpu"))


def test_the_lineage_is_in_the_bentos_labels_and_its_images_environment(offline_bento):
    descriptor = offline_bento["descriptor"]
    info = yaml.safe_load((offline_bento["path"] / "bento.yaml").read_text())
    assert info["labels"]["dataset_commit"] == "0123abcd"
    assert info["labels"]["accuracy"] == "0.97" and info["labels"]["accelerator"] == "cpu"
    expected = {
        MODEL_TAG_ENV: descriptor["model_tag"],
        "KFP_TORCH_LIFECYCLE_DATASET_COMMIT": "0123abcd",
        "KFP_TORCH_LIFECYCLE_ARCHITECTURE": "custom",
        "KFP_TORCH_LIFECYCLE_ACCELERATOR": "cpu",
        "KFP_TORCH_LIFECYCLE_METRIC_ACCURACY": "0.97",
        "KFP_TORCH_LIFECYCLE_METRIC_MACRO_F1": "0.9",
    }
    assert {e["name"]: e["value"] for e in info["envs"]}.items() >= expected.items()
    assert descriptor["env"].items() >= expected.items()
    dockerfile = (offline_bento["path"] / "env/docker/Dockerfile").read_text()
    for name, value in expected.items():
        assert f"ARG {name}={value}" in dockerfile and f"ENV {name}=${name}" in dockerfile


def test_the_bento_carries_exactly_the_library_files_it_needs_from_a_context_of_only_those(offline_bento):
    """BentoML walks its whole build context; the library's root (a repository with its venv, or
    site-packages) would cost seconds and grow with what lies there."""
    from components.build_bento.packaging import build_context, included_files

    def files(root: Path) -> list[str]:
        return sorted(str(path.relative_to(root)) for path in root.rglob("*") if path.is_file())

    with build_context("cuda") as context:
        assert files(context) == sorted(included_files("cuda"))
    assert not context.exists()
    assert files(offline_bento["path"] / "src") == sorted([*included_files("cpu"), "bentofile.yaml"])


def test_bentoml_is_handed_the_staged_context_not_the_librarys_root(offline_bento, monkeypatch):
    import bentoml

    from components.build_bento.packaging import included_files, library_root

    class Handed(Exception):
        pass

    def build(*args, build_ctx, **kwargs):
        context = Path(build_ctx)
        assert context != library_root()
        raise Handed(sorted(str(p.relative_to(context)) for p in context.rglob("*") if p.is_file()))

    assert bentoml.bentos.build  # BentoML's lazy module copies the real one's names in on first use
    monkeypatch.setattr(bentoml.bentos, "build", build)
    with pytest.raises(Handed) as handed:
        build_bento_archive(offline_bento["root"] / "model", offline_bento["root"] / "unused")
    assert handed.value.args[0] == sorted(included_files("cpu"))
