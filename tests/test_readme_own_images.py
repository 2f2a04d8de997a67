"""The README's "Train on your own images" commands, run as written on a small folder laid out as Food-11 is.

Only the folder's and the weights file's paths are swapped for the test's, and the run made fast (1 epoch,
32x32 images); the weights are a torchvision mobilenet_v3_small state_dict in torchvision's file format
(this machine cannot download torchvision's own).
"""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.photos import food11_like

README = Path(__file__).resolve().parent.parent / "README.md"
SECTION = "## Train on your own images"
FAST = ["--epochs", "1", "--image-size", "32"]


def readme_commands() -> list[list[str]]:
    """The ``make run ARGS="..."`` lines of the section, as the arguments ``kfp-torch local`` gets."""
    text = README.read_text()
    section = text[text.index(SECTION) : text.index("\n## ", text.index(SECTION) + 1)]
    return [shlex.split(match) for match in re.findall(r'^make run ARGS="([^"]+)"$', section, flags=re.M)]


def run_local(argv: list[str], cwd: Path) -> tuple[int, list[str]]:
    done = subprocess.run(
        [sys.executable, "-m", "pipelines.cli", "local", *argv],
        cwd=cwd,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=os.environ | {"PYTHONUNBUFFERED": "1", "PYTHONPATH": str(README.parent)},
        timeout=900,
    )
    return done.returncode, done.stdout.splitlines()


def summary_files(lines: list[str]) -> list[Path]:
    start = lines.index("Files:") + 1
    return [Path(line.split()[-1]) for line in lines[start : lines.index("", start)]]


def metric(lines: list[str], task: str, name: str) -> str:
    return next(line.split(maxsplit=2)[2] for line in lines if line.split()[:2] == [task, name])


@pytest.mark.slow
def test_the_readme_trains_on_a_food11_like_folder_from_scratch_then_from_pretrained_weights(tmp_path):
    import torch
    import torchvision

    scratch, pretrained = readme_commands()
    assert scratch[:2] == ["--data", "~/food-11"] and "--pretrained-weights" in pretrained
    photos = food11_like(tmp_path / "food-11")
    weights = tmp_path / "weights" / "mobilenet_v3_small-047dcff4.pth"
    weights.parent.mkdir()
    torch.save(torchvision.models.mobilenet_v3_small(weights=None).state_dict(), weights)
    paths = {"~/food-11": str(photos), "~/weights/mobilenet_v3_small-047dcff4.pth": str(weights)}
    workdir = ["--workdir", str(tmp_path / "work")]

    code, lines = run_local([paths.get(arg, arg) for arg in scratch] + FAST + workdir, tmp_path)
    assert code == 0, "\n".join(lines)
    assert any(line.startswith(f"Data: {photos} versioned in ") and "(new repository)" in line for line in lines)
    assert all(path.exists() for path in summary_files(lines))
    assert float(metric(lines, "evaluate", "accuracy")) >= 0 and metric(lines, "evaluate", "promote") == "false"
    reason = metric(lines, "evaluate", "reason")
    assert lines[-1] == f"No bento was built: the promotion gate held the model back ({reason})."

    # The pretrained route, on the same folder: its repository's commit is reused; the gate opened for the test.
    gate_open = ["--accuracy-threshold", "0"]
    code, lines = run_local([paths.get(arg, arg) for arg in pretrained] + FAST + gate_open + workdir, tmp_path)
    assert code == 0, "\n".join(lines)
    data = next(line for line in lines if line.startswith(f"Data: {photos} versioned in "))
    assert "(unchanged, commit reused)" in data
    log = Path(next(line for line in lines if line.startswith("Full logs of every step: ")).split(": ", 1)[1])
    loaded = rf"loaded \d+ tensors from {re.escape(str(weights))} \(head 'classifier.3' left new\)"
    assert re.search(loaded, log.read_text())
    files = summary_files(lines)
    assert all(path.exists() for path in files) and any(path.name == "bento" for path in files)
    assert metric(lines, "evaluate", "promote") == "true"
    assert lines[-4].startswith("Next: serve the bento image-classifier:") and lines[-2] == "and send it an image:"
    image = tmp_path / shlex.split(lines[-1])[-1].removeprefix("files=@")  # relative to where it ran
    assert image.is_file() and image.parent.parent == photos / "evaluation"
