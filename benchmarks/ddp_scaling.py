"""DDP on this machine: samples/s of 2 Gloo processes against 1, and launcher start-up time."""

from __future__ import annotations

import tempfile
from pathlib import Path

from components.common.spec import load_spec
from components.pytorchjob_train.step import train_arguments
from components.train.config import TrainConfig
from components.train.local_launcher import library_training, run_torchrun


def _throughput(dataset_dir: Path, processes: int, config: TrainConfig) -> tuple[float, float]:
    """(global samples/s over the epochs after the first, seconds from launch to the first step)."""
    with tempfile.TemporaryDirectory() as tmp:
        args = train_arguments(str(dataset_dir), str(Path(tmp) / "model"), config, {}, "")
        to_first_step = run_torchrun(processes, library_training(args), timeout_seconds=900, echo=lambda line: None)
        history = load_spec(Path(tmp) / "model").training["history"][1:]  # epoch 1 includes warm-up
    return sum(row["samples_per_second"] for row in history) / len(history), to_first_step


def run(dataset_dir: Path, epochs: int = 6) -> dict:
    config = TrainConfig(epochs=epochs, augment=False)
    one, start_one = _throughput(dataset_dir, 1, config)
    two, start_two = _throughput(dataset_dir, 2, config)
    return {
        "one_process_samples_per_s": one,
        "two_processes_samples_per_s": two,
        "scaling": two / one,
        "seconds_to_first_step_1": start_one,
        "seconds_to_first_step_2": start_two,
    }
