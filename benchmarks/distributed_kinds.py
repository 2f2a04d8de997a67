"""TrainJob and PyTorchJob, side by side under ``launcher=local``'s torchrun: the same results and the same DDP
scaling figure.

Each step (``trainjob_train``'s and ``pytorchjob_train``'s) trains the digits with 1 and with 2 Gloo processes on
this machine, as ``kfp.local`` runs them; the figures are the final validation accuracy and loss, whether the two
kinds' models are byte-identical, and samples/s of 2 processes against 1 (``benchmarks/ddp_scaling.py``'s figure).

    python -m benchmarks.distributed_kinds [DATASET_DIR]    (default: the demo's digits, made under .local/bench)
"""

from __future__ import annotations

import hashlib
import sys
import tempfile
from pathlib import Path

from components.common.distributed_step import ArtifactLocation
from components.common.spec import load_spec
from components.pytorchjob_train import step as pytorchjob
from components.train.config import TrainConfig
from components.trainjob_train import step as trainjob

EPOCHS = 6


def _train(kind: str, dataset_dir: Path, processes: int, config: TrainConfig) -> dict:
    """One local run of ``kind``'s step: its final validation figures, samples/s after the first epoch and the
    model's weights' digest."""
    with tempfile.TemporaryDirectory() as tmp:
        model = Path(tmp) / "model"
        common = dict(
            dataset=ArtifactLocation(str(dataset_dir), str(dataset_dir)),
            model=ArtifactLocation(str(model), str(model)),
            job_output_path=str(Path(tmp) / "job"),
            train=config,
            run_id="bench",
            task_name=kind,
            dataset_info={},
        )
        if kind == "trainjob":
            job = trainjob.default_job_config("unused", 1, num_nodes=processes)
            trainjob.run_step("local", job=job, **common)
        else:
            job = pytorchjob.default_job_config("unused", 1, num_workers=processes)
            pytorchjob.run_step("local", job=job, **common)
        history = load_spec(model).training["history"]
        digest = hashlib.sha256((model / "weights.pt").read_bytes()).hexdigest()[:16]
    steady = history[1:]  # epoch 1 includes warm-up
    return {
        "val_accuracy": history[-1]["val_accuracy"],
        "val_loss": history[-1]["val_loss"],
        "samples_per_s": sum(row["samples_per_second"] for row in steady) / len(steady),
        "weights": digest,
    }


def run(dataset_dir: Path, epochs: int = EPOCHS) -> dict:
    config = TrainConfig(epochs=epochs, augment=False)
    results = {}
    for kind in ("trainjob", "pytorchjob"):
        one, two = (_train(kind, dataset_dir, processes, config) for processes in (1, 2))
        results[kind] = {"one": one, "two": two, "scaling": two["samples_per_s"] / one["samples_per_s"]}
    results["same_weights"] = {
        processes: results["trainjob"][processes]["weights"] == results["pytorchjob"][processes]["weights"]
        for processes in ("one", "two")
    }
    return results


def report(results: dict) -> None:
    print(f"TrainJob and PyTorchJob under launcher=local (torchrun, Gloo, CPU; digits, {EPOCHS} epochs)")
    for kind in ("trainjob", "pytorchjob"):
        row = results[kind]
        print(
            f"  {kind:<10} 2 processes: val accuracy {row['two']['val_accuracy']:.4f}, val loss "
            f"{row['two']['val_loss']:.4f}; 1 process: {row['one']['val_accuracy']:.4f}; "
            f"samples/s 2/1 {row['scaling']:.3f}"
        )
    same = results["same_weights"]
    print(f"  same weights, TrainJob vs PyTorchJob: 1 process {same['one']}, 2 processes {same['two']}")


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    if argv:
        dataset_dir = Path(argv[0])
    else:
        from pipelines.demo_data import prepare_digits_repo

        repo = prepare_digits_repo(Path(".local/bench"))
        dataset_dir = Path(repo.repo_url) / repo.data_path
    report(run(dataset_dir))


if __name__ == "__main__":
    main()
