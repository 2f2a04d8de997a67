"""build_bento's packaging: pinned requirements from the build environment (no torch on the CPU), a build
with the network closed, and the model's lineage in the bento's labels and its image's environment."""

from __future__ import annotations

import shutil
import subprocess
import sys
import textwrap
from importlib import metadata
from pathlib import Path

import pytest
import yaml

from components.build_bento.packaging import MODEL_TAG_ENV, build_bento_archive
from components.build_bento.requirements import is_cuda_package, pinned_requirements, public_version
from tests.support.bento_server import run_build_script

REPO = Path(__file__).resolve().parents[1]
CLOSED_NETWORK = ["unshare", "-rn"]  # a new network namespace: only a downed loopback, no route anywhere


def network_can_be_closed() -> bool:
    if shutil.which("unshare") is None:
        return False
    return subprocess.run([*CLOSED_NETWORK, "true"], capture_output=True).returncode == 0


# The model: a tiny network saved with the library's contract (spec.json + ONNX export), lineage included.
MAKE_MODEL = textwrap.dedent(
    """
    import sys, torch
    from components.train.contract import save_model
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 3))
    save_model(net, sys.argv[1], ["a", "b", "c"], 8, channels=1, normalization={"mean": [0.5], "std": [0.5]},
               dataset_info={"commit": "0123abcd", "path": "data/raw"})
    """
)

# The build as the components image runs it: no uv installed (BentoML would `pip install uv` first),
# and, by the caller, no network and no pip configuration (this machine's pip finds wheels on local disk).
# Every command the build runs is recorded.
BUILD = textwrap.dedent(
    """
    import importlib.metadata, json, shutil, subprocess, sys
    commands = []
    def recording(run):
        def wrapper(command, *args, **kwargs):
            commands.append([str(part) for part in command] if isinstance(command, (list, tuple)) else [command])
            return run(command, *args, **kwargs)
        return wrapper
    for name in ("run", "call", "check_call", "check_output"):
        setattr(subprocess, name, recording(getattr(subprocess, name)))
    real_version, real_which = importlib.metadata.version, shutil.which
    def version(name):
        if name == "uv":
            raise importlib.metadata.PackageNotFoundError(name)
        return real_version(name)
    importlib.metadata.version = version
    shutil.which = lambda name, *a, **k: None if name in ("uv", "uvx") else real_which(name, *a, **k)
    import bentoml
    from components.build_bento.packaging import build_bento_archive
    d = build_bento_archive(sys.argv[1], sys.argv[2], evaluation={"accuracy": 0.97, "macro_f1": 0.9, "reason": "ok"})
    d["path"] = bentoml.get(d["bento_tag"]).path
    d["commands"] = commands
    print(json.dumps(d))
    """
)


def make_model(model_dir: Path) -> Path:
    subprocess.run([sys.executable, "-c", MAKE_MODEL, str(model_dir)], check=True, cwd=REPO, timeout=300)
    return model_dir


def build_offline(model_dir: Path, output_dir: Path, home: Path) -> tuple[dict, str]:
    """build_bento in its own process with the network closed; its descriptor and its log."""
    env = {"PATH": "/usr/bin:/bin", "HOME": str(home), "BENTOML_HOME": str(home / "bentoml"), "DO_NOT_TRACK": "true"}
    env.update({"PIP_CONFIG_FILE": "/dev/null", "PIP_NO_INDEX": "1", "PIP_FIND_LINKS": ""})
    return run_build_script(BUILD, [str(model_dir), str(output_dir)], env, launcher=tuple(CLOSED_NETWORK))


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
