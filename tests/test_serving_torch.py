"""The torch serving backend (bentos built with accelerator="cuda"), checked on the CPU.

No GPU here: the backend runs with ``KFP_TORCH_LIFECYCLE_SERVING_DEVICE=cpu`` and must answer what
ONNX Runtime answers; without that override, and without CUDA, it must refuse to start.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from components.common.images import normalize
from components.common.onnx_model import OnnxClassifier, check_parity
from components.common.spec import load_spec
from components.train.contract import save_model
from serving.service import ACCELERATOR_ENV, load_backend, serving_accelerator, softmax
from serving.torch_backend import DEVICE_ENV, ServingDeviceError, TorchClassifier
from tests.support.bento_server import bento_environment, post_json, run_build_script, serve

REPO = Path(__file__).resolve().parents[1]
no_cuda = pytest.mark.skipif(torch.cuda.is_available(), reason="checks the refusal on a machine without CUDA")


@pytest.fixture(scope="module")
def digits_model(trained_models, tmp_path_factory) -> Path:
    model_dir = tmp_path_factory.mktemp("torch-digits") / "model"
    shutil.copytree(trained_models / "one-epoch", model_dir)
    return model_dir


@pytest.fixture(scope="module")
def program_model(tmp_path_factory) -> Path:
    """A network the library cannot rebuild (as a model_factory's): served from its torch.export program."""
    model_dir = tmp_path_factory.mktemp("torch-program") / "model"
    torch.manual_seed(0)
    network = torch.nn.Sequential(
        torch.nn.Conv2d(3, 8, 3, padding=1),
        torch.nn.BatchNorm2d(8),
        torch.nn.ReLU(),
        torch.nn.AdaptiveAvgPool2d(1),
        torch.nn.Flatten(),
        torch.nn.Linear(8, 4),
    )
    save_model(network, model_dir, ["a", "b", "c", "d"], 12, channels=3)
    assert (model_dir / "program.pt2").is_file()
    return model_dir


def normalized_batch(model_dir: Path, size: int = 16, seed: int = 0) -> np.ndarray:
    spec = load_spec(model_dir)
    pixels = np.random.default_rng(seed).integers(0, 256, (size, *spec.input_shape), dtype=np.uint8)
    return normalize(pixels, spec.normalization["mean"], spec.normalization["std"])


@pytest.mark.slow
@pytest.mark.parametrize("which", ["digits_model", "program_model"])
def test_the_torch_backend_on_cpu_gives_the_onnx_logits(which, request):
    model_dir = request.getfixturevalue(which)
    batch = normalized_batch(model_dir)
    onnx = OnnxClassifier(model_dir / "model.onnx", threads=1).logits(batch)
    backend = TorchClassifier(model_dir, device="cpu", threads=1)
    logits = backend.logits(batch)
    assert logits.dtype == np.float32 and logits.shape == onnx.shape
    assert check_parity(onnx, logits, which) <= 1e-4  # relative to max(1, |logit|)
    assert np.abs(logits).max() > 0  # a real answer, not zeros


@no_cuda
def test_cuda_without_a_gpu_is_refused_naming_the_way_out(program_model, monkeypatch):
    monkeypatch.setenv(ACCELERATOR_ENV, "cuda")
    monkeypatch.delenv(DEVICE_ENV, raising=False)
    with pytest.raises(ServingDeviceError, match=rf"CUDA was asked for .* not available .*{DEVICE_ENV}=cpu"):
        load_backend(program_model, load_spec(program_model), threads=1)


def test_the_serving_device_override_is_checked(monkeypatch):
    monkeypatch.setenv(DEVICE_ENV, "gpu")
    with pytest.raises(ServingDeviceError, match=r"'gpu' .* is not one of cpu, cuda, cuda:<index>"):
        TorchClassifier("no-model")


@pytest.mark.slow
def test_cuda_with_the_cpu_override_serves_with_torch_as_onnx_does(digits_model, monkeypatch):
    spec = load_spec(digits_model)
    batch = normalized_batch(digits_model, size=32, seed=1)
    monkeypatch.delenv(ACCELERATOR_ENV, raising=False)
    onnx = load_backend(digits_model, spec, threads=1)
    assert isinstance(onnx, OnnxClassifier)  # the default: unchanged
    monkeypatch.setenv(ACCELERATOR_ENV, "cuda")
    monkeypatch.setenv(DEVICE_ENV, "cpu")
    backend = load_backend(digits_model, spec, threads=1)
    assert isinstance(backend, TorchClassifier)
    np.testing.assert_allclose(softmax(backend.logits(batch)), softmax(onnx.logits(batch)), atol=1e-5)


@pytest.mark.parametrize("value", ["gpu", "CUDA", "onnx", " cpu"])
def test_a_bad_accelerator_is_refused_naming_it_and_the_valid_ones(value, monkeypatch):
    monkeypatch.setenv(ACCELERATOR_ENV, value)
    with pytest.raises(ValueError, match=rf"{ACCELERATOR_ENV}={value!r} is not one of cpu, cuda"):
        serving_accelerator()
    with pytest.raises(ValueError, match=r"is not one of cpu, cuda"):
        load_backend("no-model", None, threads=1)


def test_the_accelerator_defaults_to_cpu(monkeypatch):
    monkeypatch.delenv(ACCELERATOR_ENV, raising=False)
    assert serving_accelerator() == "cpu"
    monkeypatch.setenv(ACCELERATOR_ENV, "cuda")
    assert serving_accelerator() == "cuda"


def test_the_torch_backend_module_does_not_import_torch():
    code = "import sys, serving.torch_backend, serving.service; print('torch' in sys.modules)"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip() == "False"


# --- a cuda bento, built and served here with torch on the CPU -----------------------------------

BUILD_CUDA = textwrap.dedent(
    """
    import json, sys, bentoml
    from components.build_bento.packaging import build_bento_archive
    d = build_bento_archive(sys.argv[1], sys.argv[2], accelerator="cuda")
    d["path"] = bentoml.get(d["bento_tag"]).path
    print(json.dumps(d))
    """
)


@pytest.fixture(scope="module")
def cuda_bento(program_model, tmp_path_factory):
    root = tmp_path_factory.mktemp("cuda-bento")
    env = bento_environment(root)
    descriptor, _ = run_build_script(BUILD_CUDA, [str(program_model), str(root / "bento")], env)
    return {"descriptor": descriptor, "path": Path(descriptor["path"]), "env": env, "root": root}


@pytest.mark.slow
def test_the_cuda_bento_pins_torch_and_torchvision_and_carries_the_torch_backend(cuda_bento):
    from importlib import metadata

    from components.build_bento.requirements import public_version

    path = cuda_bento["path"]
    lines = (path / "env/python/requirements.txt").read_text().lower().split()
    pins = dict(line.split("==") for line in lines if "==" in line)
    assert pins["torch"] == public_version(metadata.version("torch"))
    assert pins["torchvision"] == public_version(metadata.version("torchvision"))
    assert pins["onnxruntime"] == metadata.version("onnxruntime")
    for name in ("serving/torch_backend.py", "components/common/model.py", "serving/service.py"):
        assert (path / "src" / name).is_file(), name
    assert not (path / "src/components/train").exists()  # no training code
    info = yaml.safe_load((path / "bento.yaml").read_text())
    envs = {e["name"]: e["value"] for e in info["envs"]}
    assert envs[ACCELERATOR_ENV] == "cuda" and info["labels"]["accelerator"] == "cuda"
    assert cuda_bento["descriptor"]["env"][ACCELERATOR_ENV] == "cuda"
    store = Path(cuda_bento["env"]["BENTOML_HOME"]) / "models"  # the bento's model (exported with it)
    model = store / cuda_bento["descriptor"]["model_tag"].replace(":", "/")
    assert sorted(p.name for p in model.iterdir() if p.suffix != ".yaml") == [
        "model.onnx",
        "program.pt2",
        "spec.json",
        "weights.pt",
    ]


@pytest.mark.slow
def test_the_cuda_bento_serves_with_torch_what_onnx_answers(cuda_bento, program_model):
    spec = load_spec(program_model)
    pixels = np.random.default_rng(2).integers(0, 256, (6, *spec.input_shape), dtype=np.uint8)
    normalized = normalize(pixels, spec.normalization["mean"], spec.normalization["std"])
    expected = softmax(OnnxClassifier(program_model / "model.onnx", threads=1).logits(normalized))
    env = {**cuda_bento["env"], ACCELERATOR_ENV: "cuda", DEVICE_ENV: "cpu"}
    with serve(cuda_bento["descriptor"]["bento_tag"], env, cuda_bento["root"]) as url:
        status, answer = post_json(f"{url}/predict", {"images": pixels.transpose(0, 2, 3, 1).tolist()})
    assert status == 200, answer
    served = np.array([[p["probabilities"][c] for c in spec.classes] for p in answer["predictions"]])
    np.testing.assert_allclose(served, expected, atol=1e-5)
    log = "".join(p.read_text() for p in cuda_bento["root"].glob("serve-*.log"))
    assert f"the model runs in torch on cpu ({ACCELERATOR_ENV}=cuda)" in log
