"""What a ``Metrics`` artifact shows for a training history (``spec.json``'s ``training.history``); torch-free."""

from __future__ import annotations

from typing import Any

EPOCH_METRICS = ("train_loss", "train_accuracy", "val_loss", "val_accuracy")


def metric_values(history: list[dict[str, Any]]) -> dict[str, float]:
    """What a ``Metrics`` artifact shows for a training history: each epoch's values
    (``<name>_epoch_<N>``) and the final ones."""
    values = {}
    for row in history:
        for name in EPOCH_METRICS:
            if row.get(name) is not None:
                values[f"{name}_epoch_{row['epoch']}"] = round(row[name], 6)
    for name in EPOCH_METRICS:
        if history and history[-1].get(name) is not None:
            values[name] = round(history[-1][name], 6)
    return values
