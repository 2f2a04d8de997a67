"""The held-out test images a deployment is verified with, and what ``evaluate`` answered for each.

``select_held_out`` takes them from the Dataset with the Model's own split rule (the one its
``spec.json`` recorded, as ``evaluate`` applied it), so they are files training never saw, and pairs
each with evaluate's prediction for the same file (``components.evaluate.predictions``). The
predictions must have been made for exactly this test split: a file missing from them, a file that is
not a test file, or another true class means they belong to another model or dataset, and the
selection fails before anything is deployed.

Which images: ``count`` of them (all when the split is smaller), half the least confident ones
(evaluate's lowest probabilities: where a small preprocessing drift flips an answer first) and the
rest spread evenly over the test split in its order. Deterministic: the same inputs give the same
images.

A set is saved into the deploy step's output (``save``: the images under ``images/`` and
``expected.csv.gz`` in evaluate's format) and read back with ``load_held_out``, so a later deploy
of the same image (``promote_pipeline``'s canary) is verified with the very same files and answers.
Torch-free.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from components.common.dataset import SplitRule, index_dataset
from components.common.spec import load_spec
from components.evaluate.predictions import Prediction, read_predictions, write_predictions

DEFAULT_COUNT = 64
IMAGES_DIR = "images"
EXPECTED_FILE = "expected.csv.gz"


class HeldOutError(ValueError):
    """Inputs that cannot give a held-out set: the message names the file and what would be valid."""


@dataclass(frozen=True)
class HeldOutImage:
    """One test file: where its bytes are here, and evaluate's prediction for it (``prediction.path`` is
    its path relative to the dataset directory)."""

    file: Path
    prediction: Prediction


@dataclass(frozen=True)
class HeldOutSet:
    images: tuple[HeldOutImage, ...]
    test_files: int  # how many files the test split holds (the set is drawn from them)

    def __len__(self) -> int:
        return len(self.images)

    @property
    def evaluated_accuracy(self) -> float:
        """evaluate's accuracy on these images."""
        return sum(image.prediction.correct for image in self.images) / len(self.images)

    def save(self, directory: str | Path) -> Path:
        """Copy the images and evaluate's predictions for them into ``directory`` (created; must be new)."""
        directory = Path(directory)
        directory.mkdir(parents=True)
        for image in self.images:
            target = directory / IMAGES_DIR / image.prediction.path
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(image.file, target)
        write_predictions(directory / EXPECTED_FILE, [image.prediction for image in self.images])
        return directory


def select_held_out(
    dataset_dir: str | Path, model_dir: str | Path, predictions_file: str | Path, count: int = DEFAULT_COUNT
) -> HeldOutSet:
    """``count`` test files of the dataset under the model's split rule, with evaluate's predictions."""
    check_count(count)
    spec = load_spec(model_dir)
    index = index_dataset(dataset_dir, SplitRule.from_record(spec.split))
    test = index.samples("test")
    if not test:
        raise HeldOutError(
            f"dataset {index.root} has no test files under the model's split rule (test_fraction "
            f"{index.rule.test_fraction}): nothing held out to verify with"
        )
    predictions = {row.path: row for row in read_predictions(predictions_file)}
    paths = [sample.path for sample in test]
    missing = [path for path in paths if path not in predictions]
    extra = sorted(set(predictions) - set(paths))
    if missing or extra:
        parts = []
        if missing:
            parts.append(f"{len(missing)} of the model's {len(paths)} test files are not in it (e.g. {missing[0]})")
        if extra:
            parts.append(f"{len(extra)} of its files are not test files of this model and dataset (e.g. {extra[0]})")
        raise HeldOutError(
            f"the predictions file {predictions_file} was not made for this model's test split: "
            f"{'; '.join(parts)}; pass evaluate's predictions for this model and this dataset"
        )
    for sample in test:
        true_class = index.classes[sample.label]
        if predictions[sample.path].true_class != true_class:
            raise HeldOutError(
                f"the predictions file {predictions_file} gives {sample.path} the true class "
                f"{predictions[sample.path].true_class!r}, the dataset {true_class!r}: it was made for other data"
            )
    chosen = _choose([predictions[path] for path in paths], count)
    return HeldOutSet(tuple(HeldOutImage(index.root / row.path, row) for row in chosen), len(paths))


def load_held_out(directory: str | Path) -> HeldOutSet:
    """A set that ``HeldOutSet.save`` wrote (a deploy step's output), checked."""
    directory = Path(directory)
    expected = directory / EXPECTED_FILE
    if not expected.is_file():
        raise HeldOutError(
            f"{directory} holds no {EXPECTED_FILE}: not a held-out set a deploy step saved (its output 'deployment' "
            f"artifact holds one under held_out/)"
        )
    images = []
    for row in read_predictions(expected):
        file = directory / IMAGES_DIR / PurePosixPath(row.path)
        if not file.is_file():
            raise HeldOutError(f"{expected} names {row.path}, but {file} is missing")
        images.append(HeldOutImage(file, row))
    if not images:
        raise HeldOutError(f"{expected} lists no images")
    return HeldOutSet(tuple(images), len(images))


def check_count(count: int) -> None:
    if isinstance(count, bool) or not isinstance(count, int) or count < 1:
        raise HeldOutError(f"the number of verification images must be an integer >= 1, got {count!r}")


def _choose(rows: list[Prediction], count: int) -> list[Prediction]:
    """Half the least confident rows, then the rest evenly spread over ``rows``' order; in ``rows``' order."""
    if count >= len(rows):
        return list(rows)
    by_confidence = sorted(range(len(rows)), key=lambda i: (rows[i].probability, rows[i].path))
    taken = set(by_confidence[: count // 2])
    rest = [i for i in range(len(rows)) if i not in taken]
    wanted = count - len(taken)
    taken.update(rest[(j * len(rest)) // wanted] for j in range(wanted))
    return [rows[i] for i in sorted(taken)]
