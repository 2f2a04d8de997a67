"""Small synthetic Model directories and evaluations for the registry tests (no training needed).

A directory holds what ``train`` writes, as far as the registry and the baseline look: ``spec.json`` (a real,
current spec: architecture, classes, dataset lineage, training parameters), and placeholder ``weights.pt`` and
``model.onnx`` files whose bytes say which model they are, so a fetched baseline can be told apart.
"""

from __future__ import annotations

from pathlib import Path

from components.common.spec import ModelSpec, write_spec

CLASSES = ["cat", "dog", "ramen"]


def synthetic_model(directory: Path, tag: str, commit: str = "0" * 40, epochs: int = 3) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    spec = ModelSpec(
        architecture="small_cnn",
        classes=list(CLASSES),
        input_shape=[1, 8, 8],
        normalization={"mean": [0.5], "std": [0.25]},
        files={"weights": "weights.pt", "onnx": "model.onnx"},
        dataset={
            "commit": commit,
            "md5": {"data/raw": "5f0f1b1ad1e7a1de5f3c5e3ee1a3c1d2.dir"},
            "repo_url": "https://github.com/example/food-data.git",
        },
        training={"parameters": {"epochs": epochs, "learning_rate": 0.003, "architecture": "small_cnn"}},
        versions={"library": "0.1.0", "torch": "2.14.1"},
    )
    write_spec(directory, spec)
    (directory / "weights.pt").write_bytes(f"weights of {tag}".encode())
    (directory / "model.onnx").write_bytes(f"onnx of {tag}".encode())
    return directory


def evaluation(accuracy: float, promote: bool = True) -> dict:
    """What evaluate's Metrics metadata holds: the scores, promote and reason (and KFP's display_name)."""
    return {
        "display_name": "metrics",
        "accuracy": accuracy,
        "macro_f1": accuracy - 0.01,
        "loss": 0.5,
        "recall_cat": accuracy,
        "recall_dog": accuracy,
        "recall_ramen": accuracy,
        "test_samples": 120,
        "promote": promote,
        "reason": f"accuracy {accuracy:.4f} >= threshold 0.5000",
    }
