"""Synthetic evaluate outputs for report tests: a comparison file and worst-classified pictures.

Made with evaluate's own scoring, gate and writers from made-up predictions (no model runs), so a
100-class evaluation takes a second.
"""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np
from PIL import Image

from components.evaluate.baseline import Baseline
from components.evaluate.comparison_file import (
    COMPARED,
    NONE,
    BaselineSummary,
    Comparison,
    write_comparison,
)
from components.evaluate.gate import promotion_decision
from components.evaluate.predictions import Prediction
from components.evaluate.scores import compare_on_shared, confusion_scores
from components.evaluate.worst_images import write_worst_images


def history(epochs: int, final_accuracy: float, seed: int) -> list[dict]:
    rng = random.Random(seed)
    rows = []
    for epoch in range(1, epochs + 1):
        progress = epoch / epochs
        rows.append(
            {
                "epoch": epoch,
                "train_loss": 2.3 * (1 - progress) + 0.1 + rng.uniform(0, 0.05),
                "val_loss": 2.3 * (1 - progress) + 0.2 + rng.uniform(0, 0.08),
                "train_accuracy": min(1.0, final_accuracy * progress + 0.05),
                "val_accuracy": min(1.0, final_accuracy * progress),
                "seconds": 1.0,
                "samples_per_second": 100.0,
                "learning_rate": 0.003,
            }
        )
    return rows


def model_record(uri: str, classes: list[str], epochs: int, accuracy: float, seed: int, **parameters) -> dict:
    return {
        "uri": uri,
        "architecture": parameters.get("architecture", "resnet18"),
        "classes": classes,
        "training": {
            "parameters": {"epochs": epochs, "learning_rate": 0.003, "batch_size": 64, "architecture": "resnet18"}
            | parameters,
            "history": history(epochs, accuracy, seed),
            "pretrained_weights": "",
            "train_samples": 100 * len(classes),
        },
        "dataset": {
            "repo_url": "https://github.com/example/photos.git",
            "commit": f"{seed:040x}",
            "md5": {"data/raw": f"{seed:032x}.dir"},
            "file_count": 60 * len(classes),
            "total_bytes": 60 * len(classes) * 48_000,
        },
        "versions": {"library": "0.1.0", "torch": "2.14.1"},
    }


def synthetic_evaluation(
    directory: Path,
    classes: int = 100,
    images: int = 5000,
    candidate_accuracy: float = 0.80,
    baseline_accuracy: float | None = 0.88,
    baseline_classes: list[str] | None = None,
    threshold: float = 0.5,
    seed: int = 0,
) -> tuple[Path, Path, Comparison]:
    """Write ``comparison`` and ``worst_images`` under ``directory``; returns their paths and the comparison.

    ``baseline_accuracy`` None: no baseline (the resolution step said none). The class folders hold
    photo-like pictures for the worst images.
    """
    rng = random.Random(seed)
    names = [f"class_{i:03d}" for i in range(classes)]
    other = baseline_classes or names
    true = [rng.randrange(classes) for _ in range(images)]

    def answer(accuracy: float, known: list[str]) -> list[str]:
        return [names[t] if rng.random() < accuracy else rng.choice(known) for t in true]

    candidate_answers = answer(candidate_accuracy, names)
    index = {name: i for i, name in enumerate(names)}
    candidate = confusion_scores(true, [index[a] for a in candidate_answers], names)
    candidate.loss, candidate.onnx_max_difference = 0.7, 3.1e-07
    models = {"candidate": model_record("minio://mlpipeline/v2/artifacts/run/train/model", names, 12, 0.8, seed)}

    shared, summary = (
        None,
        BaselineSummary(NONE, "no baseline", "nothing is in production yet", {"baseline": NONE}, None),
    )
    if baseline_accuracy is not None:
        baseline_answers = answer(baseline_accuracy, other)
        shared = compare_on_shared([names[t] for t in true], candidate_answers, baseline_answers, names, other)
        source = {
            "baseline": "production",
            "registry": "mlflow",
            "model_name": "photos",
            "version": "7",
            "uri": "s3://m/7",
        }
        label = Baseline("production", source, model_dir=directory).label()
        summary = BaselineSummary(COMPARED, label, "", source, list(other))
        models["baseline"] = model_record("s3://m/7", list(other), 10, 0.88, seed + 1, learning_rate=0.01)
    else:
        models["baseline"] = None
    decision = promotion_decision(candidate, threshold, shared, summary.label if shared else "", summary.reason)
    comparison = Comparison(decision.promote, decision.reason, threshold, candidate, summary, shared, models)
    write_comparison(directory / "comparison", comparison)

    data = directory / "dataset"
    pixels = np.random.default_rng(seed)
    predictions = []
    for i, (t, a) in enumerate(zip(true, candidate_answers, strict=True)):
        if a == names[t] or len(predictions) >= 16:
            continue
        path = f"{names[t]}/IMG_{i:05d}.jpg"
        (data / names[t]).mkdir(parents=True, exist_ok=True)
        photo = pixels.integers(0, 256, (240, 320, 3), dtype=np.uint8)
        Image.fromarray(photo).save(data / path, quality=90)
        predictions.append(Prediction(path, names[t], a, 0.6, rng.uniform(0.0, 0.3)))
    write_worst_images(directory / "worst_images", predictions, data)
    return directory / "comparison", directory / "worst_images", comparison
