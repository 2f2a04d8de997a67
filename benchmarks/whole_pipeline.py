"""The whole local pipeline, step by step: importer → train → evaluate → build_bento under kfp.local.

450 real photos (``tests/support/photos.py``: crops of scikit-image's sample photos, 3 classes
of 150, mixed sizes, modes and formats), resnet18 from scratch for 8 epochs at 64 px, run through
``kfp.local``'s SubprocessRunner as ``make run`` runs its pipeline. Every line the run prints is
timestamped as it arrives, with the CPU seconds of the finished child processes by then, which
gives each step's wall and CPU time and, inside the train step, its phases from its own log: the
process start and imports up to the first line, the index, network and decode pass, the epoch
loop, the ONNX export and its check, and the rest with the process exit. *Training* is the epoch
loop (every epoch's steps, validation and checkpoint); the *time beyond training* is the whole
run less that. For scale, the plain torchvision loop a tutorial writes (``ImageFolder`` +
``DataLoader``, the same network, train-split files, batch, optimiser, augmentation and workers)
trains the same epochs, without validation. The machine's load average is printed with the
figures: on a shared machine they move with it.
"""

import contextlib
import io
import json
import os
import re
import resource
import tempfile
import time
import warnings
from pathlib import Path

from kfp import dsl

from components.build_bento.component import build_bento
from components.evaluate.component import evaluate
from components.train.component import train

CLASSES = ("cat", "coffee", "rocket")
PER_CLASS = 150
ARCHITECTURE = "resnet18"
EPOCHS = 8
IMAGE_SIZE = 64
BATCH_SIZE = 64
SEED = 0
TARGET_BEYOND_TRAINING_S = 15.0
STEPS = ("importer", "train", "evaluate", "build-bento")

ANSI = re.compile(r"\x1b\[[0-9;]*m")
# The train step's own log lines (components.train.trainer, components.common.model) that mark its phases.
FIRST_TRAINER_LINE = re.compile(r": dataset .+ classes; train \d+")
LOOP_STARTED = re.compile(r": starting training ")
EPOCH_DONE = re.compile(r": epoch \d+/\d+  train_loss")
LOOP_DONE = re.compile(r": training done: ")
EXPORT_STARTED = re.compile(r": exporting \S+ to ONNX ")
MODEL_WRITTEN = re.compile(r": model written to ")


@dsl.pipeline(name="bench-whole-pipeline")
def whole_pipeline(dataset_uri: str, architecture: str, epochs: int, image_size: int, batch_size: int, seed: int):
    dataset = dsl.importer(artifact_uri=dataset_uri, artifact_class=dsl.Dataset)
    trained = train(
        dataset=dataset.output,
        architecture=architecture,
        epochs=epochs,
        image_size=image_size,
        batch_size=batch_size,
        seed=seed,
    )
    scored = evaluate(model=trained.outputs["model"], dataset=dataset.output, accuracy_threshold=0.0)
    build_bento(model=trained.outputs["model"], evaluation=scored.outputs["metrics"])


class TimedLines(io.TextIOBase):
    """Stands in for stdout during the run: every line goes to the log file and is kept with its arrival
    time and the CPU seconds of the finished child processes by then (kfp.local runs one step at a time,
    each in a child process, so the difference across a step is that step's CPU time, its workers' too)."""

    def __init__(self, log):
        self.log, self.pending, self.lines = log, "", []

    def writable(self) -> bool:
        return True

    def write(self, text: str) -> int:
        now = time.perf_counter()
        children = resource.getrusage(resource.RUSAGE_CHILDREN)
        self.log.write(text)
        self.pending += text
        *lines, self.pending = self.pending.split("\n")
        self.lines += [(now, children.ru_utime + children.ru_stime, ANSI.sub("", line)) for line in lines]
        return len(text)

    def flush(self) -> None:
        self.log.flush()

    def first(self, pattern: re.Pattern, after: float = 0.0) -> tuple[float, float] | None:
        """(time, child CPU seconds) of the first line matching ``pattern`` at or after ``after``."""
        return next(((t, cpu) for t, cpu, line in self.lines if t >= after and pattern.search(line)), None)

    def last(self, pattern: re.Pattern) -> tuple[float, float] | None:
        found = [(t, cpu) for t, cpu, line in self.lines if pattern.search(line)]
        return found[-1] if found else None


def photo_dataset(workdir: Path) -> Path:
    """The 450 photos in class folders (made once, then reused)."""
    from tests.support.photos import write_photo_dataset

    root = workdir / f"photos-{len(CLASSES)}x{PER_CLASS}"
    marker = root / ".complete"
    if not marker.is_file():
        write_photo_dataset(root / "data", classes=CLASSES, per_class=PER_CLASS, seed=SEED)
        marker.write_text("")
    return root / "data"


def run_pipeline(dataset_dir: Path, workdir: Path) -> dict:
    """One run of the pipeline under kfp.local: wall and CPU seconds of the run, each step and the train
    step's phases."""
    from kfp import local

    os.environ.setdefault("DO_NOT_TRACK", "true")
    log_path = workdir / "whole-pipeline.log"
    with tempfile.TemporaryDirectory(prefix="bench-pipeline-", dir=workdir) as tmp, _bentoml_home(Path(tmp)):
        root = Path(tmp) / "root"
        local.init(runner=local.SubprocessRunner(use_venv=False), pipeline_root=str(root))
        with open(log_path, "w") as log, warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*non-Python base image", category=RuntimeWarning)
            timed = TimedLines(log)
            with contextlib.redirect_stdout(timed):
                began = time.perf_counter()
                cpu_began = _children_cpu()
                whole_pipeline(
                    dataset_uri=str(dataset_dir.resolve()),
                    architecture=ARCHITECTURE,
                    epochs=EPOCHS,
                    image_size=IMAGE_SIZE,
                    batch_size=BATCH_SIZE,
                    seed=SEED,
                )
                total = time.perf_counter() - began
                total_cpu = _children_cpu() - cpu_began
        bento = json.loads(next(root.rglob("bento.json")).read_text())
        spec = json.loads(next(root.rglob("spec.json")).read_text())
    steps = {}
    for step in STEPS:
        started = timed.first(re.compile(rf"Executing task '{step}'"))
        ended = timed.first(re.compile(rf"Task '{step}' finished with status SUCCESS"))
        if started is None or ended is None:
            raise RuntimeError(f"step {step} did not run to success; see {log_path}")
        steps[step] = {
            "started": started,
            "ended": ended,
            "wall_s": ended[0] - started[0],
            "cpu_s": ended[1] - started[1],
        }
    train_started, train_ended = steps["train"]["started"], steps["train"]["ended"]
    marks = {
        "first line": timed.first(FIRST_TRAINER_LINE, train_started[0]),
        "loop started": timed.first(LOOP_STARTED, train_started[0]),
        # The trainer says when the loop ends; before it did, the last epoch's line (before its checkpoint).
        "loop done": timed.first(LOOP_DONE, train_started[0]) or timed.last(EPOCH_DONE),
        "export started": timed.first(EXPORT_STARTED, train_started[0]),
        "model written": timed.first(MODEL_WRITTEN, train_started[0]),
    }
    phases = {
        "process start, imports": marks["first line"][0] - train_started[0],
        "index, network, decode pass": marks["loop started"][0] - marks["first line"][0],
        "epoch loop": marks["loop done"][0] - marks["loop started"][0],
    }
    if marks["export started"] and marks["model written"]:
        phases["ONNX export and check"] = marks["model written"][0] - marks["export started"][0]
        phases["the rest, and process exit"] = train_ended[0] - marks["model written"][0]
    else:
        phases["export, check and exit"] = train_ended[0] - marks["loop done"][0]
    history = spec["training"]["history"]
    return {
        "total_s": total,
        "total_cpu_s": total_cpu,
        "steps": {step: {"wall_s": row["wall_s"], "cpu_s": row["cpu_s"]} for step, row in steps.items()},
        "between_steps_s": total - sum(row["wall_s"] for row in steps.values()),
        "train_phases_s": phases,
        "training_s": phases["epoch loop"],
        "beyond_training_s": total - phases["epoch loop"],
        "beyond_train_step_s": total - steps["train"]["wall_s"],
        "train_images": spec["training"]["train_samples"],
        "val_accuracy": history[-1]["val_accuracy"],
        "bento_bytes": bento["size_bytes"],
        "test_accuracy": bento["evaluation"].get("accuracy"),
        "log": str(log_path),
    }


@contextlib.contextmanager
def _bentoml_home(directory: Path):
    """The bento the run builds goes into a store of its own, not ~/bentoml."""
    previous = os.environ.get("BENTOML_HOME")
    os.environ["BENTOML_HOME"] = str(directory / "bentoml")
    try:
        yield
    finally:
        if previous is None:
            os.environ.pop("BENTOML_HOME")
        else:
            os.environ["BENTOML_HOME"] = previous


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def plain_loop(dataset_dir: Path) -> float:
    """The loop a torchvision tutorial writes, on the train split's files; seconds for the epochs."""
    import torch
    import torchvision
    from torch import nn
    from torch.utils.data import DataLoader
    from torchvision.transforms import v2

    from components.common.dataset import index_dataset
    from components.common.resources import usable_cpus

    index = index_dataset(dataset_dir)
    train_files = {str(index.root / sample.path) for sample in index.samples("train")}
    transform = v2.Compose(
        [
            v2.RGB(),
            v2.RandomResizedCrop(IMAGE_SIZE, antialias=True),
            v2.RandomHorizontalFlip(),
            v2.ToImage(),
            v2.ToDtype(torch.float32, scale=True),
            v2.Normalize([0.5] * 3, [0.25] * 3),
        ]
    )
    dataset = torchvision.datasets.ImageFolder(
        str(index.root), transform=transform, is_valid_file=lambda path: path in train_files
    )
    workers = usable_cpus()
    torch.set_num_threads(workers)
    loader = DataLoader(
        dataset, batch_size=BATCH_SIZE, shuffle=True, num_workers=workers, persistent_workers=workers > 0
    )
    torch.manual_seed(SEED)
    model = torchvision.models.get_model(ARCHITECTURE, weights=None, num_classes=len(dataset.classes))
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3, weight_decay=0.01)
    began = time.perf_counter()
    for _ in range(EPOCHS):
        model.train()
        for x, y in loader:
            loss = nn.functional.cross_entropy(model(x), y)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
    return time.perf_counter() - began


def run(workdir: str | Path) -> dict:
    workdir = Path(workdir).resolve()
    workdir.mkdir(parents=True, exist_ok=True)
    dataset_dir = photo_dataset(workdir)
    load_before = os.getloadavg()[0]
    result = run_pipeline(dataset_dir, workdir)
    result["plain_loop_s"] = plain_loop(dataset_dir)
    result["images"] = len(CLASSES) * PER_CLASS
    result["load_average"] = (load_before, os.getloadavg()[0])
    return result


def report(result: dict) -> None:
    print(
        f"Whole local pipeline (kfp.local SubprocessRunner): importer → train → evaluate → build_bento on "
        f"{result['images']} photos ({len(CLASSES)} classes, {result['train_images']} in the train split), "
        f"{ARCHITECTURE} for {EPOCHS} epochs at {IMAGE_SIZE} px; wall seconds (CPU seconds of the step's processes); "
        f"load average {result['load_average'][0]:.1f} before, {result['load_average'][1]:.1f} after"
    )
    for step, row in result["steps"].items():
        print(f"  {step:<32} {row['wall_s']:7.1f} s  ({row['cpu_s']:6.1f} s CPU)")
        if step == "train":
            for phase, seconds in result["train_phases_s"].items():
                print(f"    {phase:<30} {seconds:7.1f} s")
    print(f"  {'kfp.local between the steps':<32} {result['between_steps_s']:7.1f} s")
    print(f"  {'whole pipeline':<32} {result['total_s']:7.1f} s  ({result['total_cpu_s']:6.1f} s CPU)")
    met = "met" if result["beyond_training_s"] < TARGET_BEYOND_TRAINING_S else "MISSED"
    print(
        f"  {'beyond training (the epoch loop)':<32} {result['beyond_training_s']:7.1f} s   "
        f"(target < {TARGET_BEYOND_TRAINING_S:.0f} s, {met})"
    )
    print(f"  {'beyond the train step':<32} {result['beyond_train_step_s']:7.1f} s")
    print(f"  {'plain torchvision loop':<32} {result['plain_loop_s']:7.1f} s   (the same epochs' steps, for scale)")
    print(
        f"  test accuracy {result['test_accuracy']}, bento archive {result['bento_bytes'] / 1e6:.1f} MB; "
        f"kfp.local's output: {result['log']}"
    )


def main() -> None:
    import sys

    report(run(sys.argv[1] if len(sys.argv) > 1 else ".local/bench"))


if __name__ == "__main__":
    main()
