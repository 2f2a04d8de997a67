"""The deploy step's own overhead on the ``local`` target, and the verification's latency.

A digits model is trained (4 epochs), evaluated as ``evaluate`` does (its per-image predictions) and built into a
bento, once. Then ``ROUNDS`` first deployments, each into a fresh state directory, through ``run_deploy`` with the
local target and the real verification (64 held-out images through ``bentoml.SyncHTTPClient``), timed in phases:

- apply: reading the archive and importing it into the target's BentoML store;
- rollout: ``bentoml serve`` started until ``/readyz`` answers (the revision is ready);
- ready to verified: the verification, BentoML's client made (it fetches the service's schema) and every image
  sent and compared: the step's own overhead beyond the rollout, which should be a few seconds;
- close: the server stopped and the store pruned.

The verification's latency figures (p50 and p99 of a one-image request through the client) are each round's own.

    .venv/bin/python -m benchmarks.deploy_overhead
"""

from __future__ import annotations

import statistics
import tempfile
import time
from pathlib import Path

from components.deploy.deploy import run_deploy
from components.deploy.held_out import select_held_out
from components.deploy.local_target import LocalTarget
from components.deploy.target import DeployRequest
from components.deploy.verification import verify_held_out

ROUNDS = 3
WORKDIR = Path(".local/bench")


class TimedLocalTarget(LocalTarget):
    """The local target, noting when each phase ends."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.marks: dict[str, float] = {}

    def apply(self, request):
        self.marks["apply_began"] = time.perf_counter()
        applied = super().apply(request)
        self.marks["applied"] = time.perf_counter()
        return applied

    def wait_ready(self, applied, deadline):
        url = super().wait_ready(applied, deadline)
        self.marks["ready"] = time.perf_counter()
        return url


def prepare(workdir: Path) -> dict:
    """A trained digits model, evaluate's predictions for it and its bento archive, under ``workdir``."""
    import os

    from components.build_bento.packaging import build_bento_archive
    from components.evaluate.evaluation import prediction_rows, run_model, split_for_model
    from components.evaluate.predictions import write_predictions
    from components.train.trainer import TrainConfig, train_model
    from pipelines.demo_data import prepare_digits_repo

    repo = prepare_digits_repo(workdir)
    dataset_dir = Path(repo.repo_url) / repo.data_path
    root = Path(tempfile.mkdtemp(prefix="deploy-bench-", dir=workdir))
    train_model(dataset_dir, root / "model", TrainConfig(epochs=4, augment=False))
    index = split_for_model(dataset_dir, root / "model")
    write_predictions(root / "predictions.csv.gz", prediction_rows(run_model(root / "model", index), index))
    os.environ.setdefault("BENTOML_HOME", str(root / "bentoml"))  # the build's store; the target has its own
    descriptor = build_bento_archive(root / "model", root / "bento")
    return {
        "root": root,
        "dataset_dir": dataset_dir,
        "model_dir": root / "model",
        "predictions": root / "predictions.csv.gz",
        "archive": root / "bento" / descriptor["archive"],
        "model_tag": descriptor["model_tag"],
    }


def run(workdir: Path = WORKDIR, rounds: int = ROUNDS) -> dict:
    inputs = prepare(workdir)
    held_out = select_held_out(inputs["dataset_dir"], inputs["model_dir"], inputs["predictions"], 64)
    phases: dict[str, list[float]] = {"apply": [], "rollout": [], "ready_to_verified": [], "close": [], "step": []}
    latency = []
    verified_at: dict[str, float] = {}

    def verify(url: str):
        result = verify_held_out(url, held_out, expected_model_tag=inputs["model_tag"])
        verified_at["at"] = time.perf_counter()
        return result

    request = DeployRequest(target="local", name="image-classifier", bento=str(inputs["archive"]))
    for round_ in range(rounds):
        target = TimedLocalTarget("image-classifier", inputs["root"] / f"state-{round_}", echo=lambda line: None)
        began = time.perf_counter()
        result = run_deploy(target, request, verify, echo=lambda line: None)
        assert result.verification.passed, result.verification.summary()
        target.close()
        ended = time.perf_counter()
        marks = target.marks
        phases["apply"].append(marks["applied"] - marks["apply_began"])
        phases["rollout"].append(marks["ready"] - marks["applied"])
        phases["ready_to_verified"].append(verified_at["at"] - marks["ready"])
        phases["close"].append(ended - verified_at["at"])
        phases["step"].append(ended - began)
        latency.append((result.verification.p50_ms, result.verification.p99_ms, result.verification.images))
    return {
        "rounds": rounds,
        "images": latency[0][2],
        **{f"{phase}_s": statistics.median(values) for phase, values in phases.items()},
        "ready_to_verified_each_s": phases["ready_to_verified"],
        "p50_ms": [round(p50, 1) for p50, _, _ in latency],
        "p99_ms": [round(p99, 1) for _, p99, _ in latency],
    }


def report(result: dict) -> None:
    print(
        f"Deploy step, target local (digits bento, {result['images']} held-out images; median of {result['rounds']} "
        "first deployments)"
    )
    print(f"  apply (import the bento)        {result['apply_s']:6.2f} s")
    print(f"  rollout (bentoml serve, ready)  {result['rollout_s']:6.2f} s")
    each = ", ".join(f"{seconds:.2f}" for seconds in result["ready_to_verified_each_s"])
    print(f"  ready -> verified               {result['ready_to_verified_s']:6.2f} s   (each: {each}; target: a few s)")
    print(f"  stop and prune                  {result['close_s']:6.2f} s")
    print(f"  whole step                      {result['step_s']:6.2f} s")
    p50 = ", ".join(map(str, result["p50_ms"]))
    p99 = ", ".join(map(str, result["p99_ms"]))
    print(f"  verification latency, one image per request: p50 {p50} ms; p99 {p99} ms")


def main() -> None:
    report(run())


if __name__ == "__main__":
    main()
