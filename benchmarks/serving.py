"""The served bento against the model's own forward pass and against a bare BentoML service.

One run, side by side: one-image requests at concurrency 1, 16, 64 and 256, and 32-image requests at
concurrency 8, each against

- the model: the raw in-process forward pass at the batch size the service can form (the request's
  images times the concurrency, up to the service's largest batch), with ONNX Runtime (what the
  service runs) and with torch eager;
- the framework: the same requests to ``benchmarks.bare_service``, which returns a constant.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import numpy as np

from components.common.dataset import index_dataset
from components.common.images import load_preprocessed, normalize
from components.common.onnx_model import OnnxClassifier
from components.common.processes import free_port, stop_process_group
from components.common.resources import usable_cpus
from components.common.spec import load_spec
from components.train.trainer import TrainConfig, train_model

CASES = ((1, 1), (1, 16), (1, 64), (1, 256), (32, 8))  # (images per request, concurrent clients)
LARGEST_BATCH = 64  # what the service's batcher forms at most


def _test_images(model_dir: Path, dataset_dir: Path, count: int) -> np.ndarray:
    spec = load_spec(model_dir)
    index = index_dataset(dataset_dir)
    samples = index.samples("test")
    chosen = [samples[i % len(samples)] for i in range(count)]
    return np.stack([load_preprocessed(index.root / s.path, spec.channels, spec.image_size) for s in chosen])


def _rate(forward, batch: np.ndarray, seconds: float) -> float:
    forward(batch)  # warm up
    done, began = 0, time.perf_counter()
    while time.perf_counter() - began < seconds:
        forward(batch)
        done += len(batch)
    return done / (time.perf_counter() - began)


def raw_images_per_s(model_dir: Path, uint8: np.ndarray, batch_size: int, seconds: float = 3.0) -> dict[str, float]:
    """Images/s of the bare forward pass (normalisation, logits, softmax) at ``batch_size``, ORT and torch eager."""
    import torch

    from components.common.model import load_model

    spec = load_spec(model_dir)
    mean, std = spec.normalization["mean"], spec.normalization["std"]
    batch = uint8[:batch_size]
    onnx = OnnxClassifier(Path(model_dir) / spec.files.get("onnx", "model.onnx"), threads=usable_cpus())

    def onnx_forward(images):
        logits = onnx.logits(normalize(images, mean, std))
        exp = np.exp(logits - logits.max(axis=1, keepdims=True))
        return exp / exp.sum(axis=1, keepdims=True)

    model, _ = load_model(model_dir)
    torch.set_num_threads(usable_cpus())

    def torch_forward(images):
        with torch.inference_mode():
            return torch.softmax(model(torch.from_numpy(normalize(images, mean, std))), dim=1)

    return {"onnxruntime": _rate(onnx_forward, batch, seconds), "torch": _rate(torch_forward, batch, seconds)}


def request_costs(model_dir: Path, body: Path, rounds: int = 300) -> dict[str, float]:
    """Milliseconds per request of the service's own steps, in process: parse and check the JSON, the
    model (normalise, ONNX Runtime, softmax), and the answer (describe each image, encode JSON)."""
    import orjson

    from serving import validation
    from serving.service import describe_predictions, softmax

    spec = load_spec(model_dir)
    onnx = OnnxClassifier(Path(model_dir) / spec.files.get("onnx", "model.onnx"), threads=usable_cpus())
    content = body.read_bytes()
    scale = validation.ScaleCheck.from_input_range(spec.input_range)  # what the service checks too
    mean, std = spec.normalization["mean"], spec.normalization["std"]

    costs = {}
    began = time.perf_counter()
    for _ in range(rounds):
        batch = validation.json_to_batch(content, list(spec.input_shape), validation.MAX_BATCH, scale)
    costs["parse_ms"] = 1000 * (time.perf_counter() - began) / rounds
    began = time.perf_counter()
    for _ in range(rounds):
        probabilities = softmax(onnx.logits(normalize(batch, mean, std)))
    costs["model_ms"] = 1000 * (time.perf_counter() - began) / rounds
    began = time.perf_counter()
    for _ in range(rounds):
        orjson.dumps({"predictions": describe_predictions(spec.classes, probabilities)})
    costs["answer_ms"] = 1000 * (time.perf_counter() - began) / rounds
    return costs


def _serve(target: str, env: dict, cwd: Path) -> tuple[subprocess.Popen, str]:
    port = free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "bentoml", "serve", target, "--host", "127.0.0.1", "--port", str(port)],
        env=env,
        cwd=cwd,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"{url}/readyz", timeout=2):
                return server, url
        except OSError:
            if server.poll() is not None:
                raise RuntimeError(f"bentoml serve {target} exited with {server.returncode}") from None
            time.sleep(0.5)
    stop_process_group(server, 30)
    raise RuntimeError(f"bentoml serve {target} was not ready in 180 s")


def _load(url: str, body: Path, concurrency: int, seconds: float) -> dict:
    done = subprocess.run(
        [sys.executable, "-m", "benchmarks.load_generator", url, str(body)]
        + ["--concurrency", str(concurrency), "--seconds", str(seconds)],
        capture_output=True,
        text=True,
        check=True,
    )
    return json.loads(done.stdout)


def _bodies(uint8: np.ndarray, folder: Path) -> dict[int, Path]:
    """JSON request bodies of 1 and 32 images (H x W arrays for one channel, C x H x W otherwise)."""
    bodies = {}
    for count in sorted({images for images, _ in CASES}):
        images = uint8[:count]
        images = images[:, 0] if images.shape[1] == 1 else images
        path = folder / f"{count}.json"
        path.write_text(json.dumps({"images": images.tolist()}))
        bodies[count] = path
    return bodies


def run(dataset_dir: Path, seconds: float = 8.0) -> dict:
    root = Path(__file__).resolve().parents[1]
    with tempfile.TemporaryDirectory(prefix="bench-serving-") as tmp:
        tmp = Path(tmp)
        train_model(dataset_dir, tmp / "model", TrainConfig(epochs=3, augment=False))
        env = {**os.environ, "BENTOML_HOME": str(tmp / "bentoml"), "DO_NOT_TRACK": "true"}
        built = subprocess.run(
            [sys.executable, "-c", "import json,sys; from components.build_bento.packaging import build_bento_archive; "
             "print(json.dumps(build_bento_archive(sys.argv[1], sys.argv[2])))",
             str(tmp / "model"), str(tmp / "bento")],
            capture_output=True, text=True, env=env, check=True, cwd=root,
        )  # fmt: skip
        bento_tag = json.loads(built.stdout.strip().splitlines()[-1])["bento_tag"]
        uint8 = _test_images(tmp / "model", dataset_dir, LARGEST_BATCH)
        bodies = _bodies(uint8, tmp)
        raw = {
            size: raw_images_per_s(tmp / "model", uint8, size)
            for size in sorted({min(images * clients, LARGEST_BATCH) for images, clients in CASES})
        }
        served = {}
        for name, target in (("ours", bento_tag), ("bare", "benchmarks.bare_service:BareClassifier")):
            server, url = _serve(target, env, root)
            try:
                served[name] = {
                    case: _load(url, bodies[case[0]], case[1], seconds) for case in CASES
                }  # fmt: skip
            finally:
                stop_process_group(server, 30)
        rows = []
        for images, clients in CASES:
            ours, bare = served["ours"][(images, clients)], served["bare"][(images, clients)]
            forward = raw[min(images * clients, LARGEST_BATCH)]
            images_per_s = ours["requests_per_s"] * images
            rows.append(
                {
                    "images_per_request": images,
                    "concurrency": clients,
                    "batch": min(images * clients, LARGEST_BATCH),
                    "images_per_s": images_per_s,
                    "to_onnxruntime": images_per_s / forward["onnxruntime"],
                    "to_torch": images_per_s / forward["torch"],
                    "bare_images_per_s": bare["requests_per_s"] * images,
                    "bare_to_onnxruntime": bare["requests_per_s"] * images / forward["onnxruntime"],
                    "to_bare": ours["requests_per_s"] / bare["requests_per_s"] if bare["requests_per_s"] else 0.0,
                    "ours": ours,
                    "bare": bare,
                }
            )
        costs = {count: request_costs(tmp / "model", path) for count, path in bodies.items()}
        return {"rows": rows, "raw": raw, "costs": costs}


def report(results: dict) -> None:
    print("Serving: bentoml serve on 127.0.0.1 (JSON requests from a second process sharing the 2 cores)")
    print("  raw forward in process, images/s:", ", ".join(
        f"batch {size}: ONNX Runtime {rates['onnxruntime']:.0f}, torch {rates['torch']:.0f}"
        for size, rates in results["raw"].items()
    ))  # fmt: skip
    print(
        "  images x clients  ours img/s  ÷ORT   ÷torch  bare img/s  bare÷ORT  ours÷bare  "
        "p50 ms  p99 ms  non-200 (shed, 5xx)"
    )
    for row in results["rows"]:
        ours = row["ours"]
        print(
            f"  {row['images_per_request']:>6} x {row['concurrency']:<7} {row['images_per_s']:10.0f}  "
            f"{row['to_onnxruntime']:5.3f}  {row['to_torch']:6.3f}  {row['bare_images_per_s']:10.0f}  "
            f"{row['bare_to_onnxruntime']:8.3f}  {row['to_bare']:9.3f}  {ours['p50_ms']:6.1f}  {ours['p99_ms']:6.1f}  "
            f"{ours['non_200']} ({ours['shed']}, {ours['server_errors']})"
        )
    for count, cost in results["costs"].items():
        print(
            f"  where a {count}-image request's time goes, in process: parse and check {cost['parse_ms']:.2f} ms, "
            f"model {cost['model_ms']:.2f} ms, answer {cost['answer_ms']:.2f} ms (the bare service does none of these)"
        )
    print(
        "  targets: ÷ORT >= 0.3 for one image at 64 clients and >= 0.6 for 32 images; ours÷bare >= 0.8; no 5xx. "
        "Where the bare service's own ratio (bare÷ORT) is below a model target, the framework's floor governs."
    )
