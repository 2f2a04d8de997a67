"""Served bento under bounded concurrent load vs the model's own batched forward pass, batching on and off."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import numpy as np
import torch

from components.common.dataset import index_dataset
from components.common.images import load_preprocessed, normalize
from components.common.model import load_model
from components.train.trainer import TrainConfig, train


def _port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def direct_images_per_s(model_dir: Path, dataset_dir: Path, batch_size: int = 64, seconds: float = 5.0) -> float:
    model, spec = load_model(model_dir)
    index = index_dataset(dataset_dir)
    samples = index.samples("test")[:batch_size]
    uint8 = np.stack([load_preprocessed(index.root / s.path, spec.channels, spec.image_size) for s in samples])
    done, began = 0, time.perf_counter()
    with torch.inference_mode():
        while time.perf_counter() - began < seconds:
            batch = torch.from_numpy(normalize(uint8, spec.normalization["mean"], spec.normalization["std"]))
            torch.softmax(model(batch), dim=1)
            done += len(samples)
    return done / (time.perf_counter() - began)


def _serve_and_load(bento_tag: str, env: dict, batching: bool, concurrency: int, seconds: float) -> dict:
    port = _port()
    server = subprocess.Popen(
        [sys.executable, "-m", "bentoml", "serve", bento_tag, "--host", "127.0.0.1", "--port", str(port)],
        env={**env, "KFP_TORCH_LIFECYCLE_BATCHING": "on" if batching else "off"},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            try:
                with urllib.request.urlopen(f"{url}/readyz", timeout=2):
                    break
            except OSError:
                time.sleep(0.5)
        load = subprocess.run(
            [sys.executable, "-m", "benchmarks.load_generator", url, "--concurrency", str(concurrency)]
            + ["--seconds", str(seconds)],
            capture_output=True,
            text=True,
            check=True,
        )
        return json.loads(load.stdout)
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(timeout=30)


def run(dataset_dir: Path, concurrency: int = 16, seconds: float = 10.0) -> dict:
    with tempfile.TemporaryDirectory(prefix="bench-serving-") as tmp:
        tmp = Path(tmp)
        train(dataset_dir, tmp / "model", TrainConfig(epochs=3, augment=False))
        env = {**os.environ, "BENTOML_HOME": str(tmp / "bentoml"), "DO_NOT_TRACK": "true"}
        built = subprocess.run(
            [sys.executable, "-c", "import json,sys; from components.build_bento.packaging import build_bento; "
             "print(json.dumps(build_bento(sys.argv[1], sys.argv[2])))", str(tmp / "model"), str(tmp / "bento")],
            capture_output=True, text=True, env=env, check=True,
        )  # fmt: skip
        bento_tag = json.loads(built.stdout.strip().splitlines()[-1])["bento_tag"]
        direct = direct_images_per_s(tmp / "model", dataset_dir)
        results = {"direct_images_per_s": direct, "concurrency": concurrency}
        for batching in (True, False):
            key = "batching_on" if batching else "batching_off"
            results[key] = _serve_and_load(bento_tag, env, batching, concurrency, seconds)
            results[key]["ratio_to_direct"] = results[key]["requests_per_s"] / direct
        return results
