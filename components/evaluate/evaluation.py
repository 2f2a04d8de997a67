"""Run a model on its test split, check its ONNX export, and score what it answered.

Plain PyTorch, no KFP. ``split_for_model`` picks the test files with the split rule
the candidate's ``spec.json`` recorded, so evaluate sees exactly the files
training never saw. ``run_model`` feeds them through the model's own
preprocessing to the torch network *and* to its ONNX export (what serving
runs), fails loudly when the two disagree by more than 1e-4, and returns the
logits: ONNX Runtime's when the model has an export, since that is what serves.
``evaluate`` scores a candidate on every test file (accuracy, mean loss, macro F1,
per-class recall, confusion matrix); ``prediction_rows`` gives its per-image
predictions; ``compare`` scores a baseline on the same files, over the classes
both models know. The gate is ``components.evaluate.gate``.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from components.common.dataset import DatasetFormatError, DatasetIndex, SplitRule, index_dataset
from components.common.loader import normalization_tensors, preprocessed_batches, to_device_batch
from components.common.model import load_model
from components.common.onnx_model import OnnxClassifier, check_parity
from components.common.resources import usable_cpus
from components.common.spec import ModelFormatError, load_spec
from components.evaluate.predictions import Prediction
from components.evaluate.scores import Evaluation, SharedComparison, compare_on_shared, confusion_scores

log = logging.getLogger(__name__)


@dataclass
class ModelOutputs:
    """What a model answered on the test files of an index, in the index's test order."""

    classes: list[str]  # the model's own classes, in its output order
    logits: torch.Tensor  # N x len(classes), float32: ONNX Runtime's when the model has an export
    onnx_max_difference: float | None  # largest |torch - ONNX| logit; None when the export was not checked

    def predicted(self) -> list[str]:
        return [self.classes[i] for i in self.logits.argmax(1).tolist()]


def score(logits: torch.Tensor, labels: torch.Tensor, classes: list[str]) -> Evaluation:
    """Scores from logits and true labels: ``confusion_scores`` and the mean cross-entropy loss."""
    result = confusion_scores(labels.tolist(), logits.argmax(1).tolist(), classes)
    result.loss = float(nn.functional.cross_entropy(logits, labels))
    return result


def split_for_model(dataset_dir: str | Path, model_dir: str | Path) -> DatasetIndex:
    """The dataset indexed with the split rule the model at ``model_dir`` was trained with."""
    spec = load_spec(model_dir)
    index = index_dataset(dataset_dir, SplitRule.from_record(spec.split))
    if not index.samples("test"):
        raise DatasetFormatError(
            f"dataset {index.root} has no test images under the model's split rule "
            f"(test_fraction {index.rule.test_fraction}, given splits: {', '.join(index.given) or 'none'})"
        )
    return index


def run_model(
    model_dir: str | Path,
    index: DatasetIndex,
    require_onnx: bool = True,
    workers: int | None = None,
    batch_size: int = 256,
) -> ModelOutputs:
    """Logits of the model in ``model_dir`` for every test file of ``index``, through its own preprocessing.

    With ``require_onnx`` the model must carry its ONNX export, which must reproduce torch's logits
    within ``PARITY_TOLERANCE`` on every test image (``OnnxParityError`` otherwise). Without it, an
    export that is present is still checked (a baseline trained before exports existed has none).
    """
    model, spec = load_model(model_dir)
    workers = usable_cpus() if workers is None else workers
    onnx_file = Path(model_dir) / spec.files.get("onnx", "model.onnx")
    if require_onnx and not onnx_file.is_file():
        raise ModelFormatError(
            f"model {model_dir} has no ONNX export ({onnx_file.name}); every Model this library writes carries one, "
            "and serving runs it"
        )
    onnx = OnnxClassifier(onnx_file, threads=usable_cpus()) if onnx_file.is_file() else None
    mean, std = normalization_tensors(spec.normalization, torch.device("cpu"))
    samples = index.samples("test")
    logits = torch.empty((len(samples), len(spec.classes)), dtype=torch.float32)
    largest = 0.0
    with torch.inference_mode():
        for indices, _, images in preprocessed_batches(
            index.root, samples, spec.channels, spec.image_size, workers, "test split", batch_size
        ):
            batch = to_device_batch(images, mean, std, torch.device("cpu"), channels_last=False)
            torch_logits = model(batch).float()
            if onnx is None:
                logits[indices] = torch_logits
                continue
            onnx_logits = onnx.logits(batch.numpy())
            where = f"test images {samples[indices[0]].path} .. {samples[indices[-1]].path}"
            largest = max(largest, check_parity(torch_logits.numpy(), onnx_logits, where))
            logits[indices] = torch.from_numpy(onnx_logits).float()
    if onnx is not None:
        log.info("ONNX export matches torch on %d test images (largest logit difference %.3g)", len(samples), largest)
    return ModelOutputs(list(spec.classes), logits, largest if onnx is not None else None)


def check_classes(model_dir: str | Path, index: DatasetIndex) -> None:
    """The candidate must know exactly the dataset's classes, in order: its outputs are read by position."""
    classes = load_spec(model_dir).classes
    if list(index.classes) != list(classes):
        raise ValueError(
            f"model {model_dir} was trained on classes {classes} but the dataset has {list(index.classes)}"
        )


def score_outputs(outputs: ModelOutputs, index: DatasetIndex) -> Evaluation:
    """The candidate's scores on every test file (its classes are the dataset's, see ``check_classes``)."""
    labels = torch.tensor([s.label for s in index.samples("test")], dtype=torch.int64)
    result = score(outputs.logits, labels, outputs.classes)
    result.onnx_max_difference = outputs.onnx_max_difference
    return result


def evaluate(
    model_dir: str | Path,
    dataset_dir: str | Path | None = None,
    index: DatasetIndex | None = None,
    require_onnx: bool = True,
    workers: int | None = None,
    batch_size: int = 256,
) -> Evaluation:
    """Score the model in ``model_dir`` on the test split (``index``, or ``dataset_dir`` with the model's rule)."""
    if index is None:
        if dataset_dir is None:
            raise ValueError("give dataset_dir or index")
        index = split_for_model(dataset_dir, model_dir)
    check_classes(model_dir, index)
    return score_outputs(run_model(model_dir, index, require_onnx, workers, batch_size), index)


def prediction_rows(outputs: ModelOutputs, index: DatasetIndex) -> list[Prediction]:
    """What the candidate answered for each test file, with the probability it gave the true class."""
    probabilities = torch.softmax(outputs.logits.double(), dim=1)
    best, chosen = probabilities.max(1)
    rows = []
    for i, sample in enumerate(index.samples("test")):
        rows.append(
            Prediction(
                path=sample.path,
                true_class=index.classes[sample.label],
                predicted_class=outputs.classes[int(chosen[i])],
                probability=float(best[i]),
                true_class_probability=float(probabilities[i, sample.label]),
            )
        )
    return rows


def compare(candidate: ModelOutputs, baseline: ModelOutputs, index: DatasetIndex) -> SharedComparison | None:
    """Both models on the same test files, over the classes both know (None: no shared class has a test file)."""
    true_classes = [index.classes[s.label] for s in index.samples("test")]
    return compare_on_shared(
        true_classes, candidate.predicted(), baseline.predicted(), candidate.classes, baseline.classes
    )
