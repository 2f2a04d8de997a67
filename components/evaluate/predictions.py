"""The per-image predictions evaluate writes: what the candidate answered for every test file.

The deploy step compares what the served model answers with these, file by file; the report
shows the worst-classified images from them. Torch-free, so both read it without torch.

The file (evaluate's ``predictions`` artifact) is CSV compressed with gzip: UTF-8, a header row,
then one row per test file in the order of the test split, quoted as Python's ``csv`` module does:

    path,true_class,predicted_class,probability,true_class_probability
    images/0007.png,7,7,0.998213,0.998213
    images/0042.png,3,5,0.61022,0.30113

- ``path``: the file relative to the dataset directory (the folder holding ``labels.csv`` or the
  class folders, found under the ``Dataset`` as ``components.common.dataset`` finds it), with
  ``/`` separators: the path the split rule hashes;
- ``true_class``, ``predicted_class``: class names;
- ``probability``: the softmax probability of ``predicted_class``; ``true_class_probability``:
  the probability given to the true class (the lowest are the worst-classified images). Six
  significant digits. The probabilities are ONNX Runtime's, from the export that serving runs.

For a 100-class test split of 50,000 images the file is about 1 MB.
"""

from __future__ import annotations

import csv
import gzip
import io
import math
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

COLUMNS = ("path", "true_class", "predicted_class", "probability", "true_class_probability")
SLACK = 1e-5  # the two probabilities are rounded separately; the predicted one is never lower than that


class PredictionsFileError(ValueError):
    """A predictions file that is not what evaluate writes; the message names the file and line."""


@dataclass(frozen=True)
class Prediction:
    path: str
    true_class: str
    predicted_class: str
    probability: float
    true_class_probability: float

    @property
    def correct(self) -> bool:
        return self.predicted_class == self.true_class


def write_predictions(path: str | Path, predictions: Iterable[Prediction]) -> int:
    """Write the file at ``path``; returns the number of rows. The bytes depend on the rows alone."""
    text = io.StringIO(newline="")
    writer = csv.writer(text, lineterminator="\n")
    writer.writerow(COLUMNS)
    rows = 0
    for row in predictions:
        writer.writerow(
            (
                row.path,
                row.true_class,
                row.predicted_class,
                _number(row.probability),
                _number(row.true_class_probability),
            )
        )
        rows += 1
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as raw, gzip.GzipFile(fileobj=raw, mode="wb", mtime=0, filename="") as packed:
        packed.write(text.getvalue().encode("utf-8"))
    return rows


def read_predictions(path: str | Path) -> list[Prediction]:
    """Every row of the predictions file at ``path``, checked; ``PredictionsFileError`` naming the line when
    it is not what evaluate writes."""
    try:
        with gzip.open(path, "rt", encoding="utf-8", newline="") as handle:
            lines = list(csv.reader(handle))
    except (OSError, EOFError, UnicodeDecodeError, csv.Error) as error:
        raise PredictionsFileError(f"{path} is not a gzip-compressed CSV predictions file: {error}") from None
    if not lines or tuple(lines[0]) != COLUMNS:
        found = ",".join(lines[0]) if lines else "nothing"
        raise PredictionsFileError(f"{path}: the header is {found!r}, expected {','.join(COLUMNS)!r}")
    rows, seen = [], set()
    for number, fields in enumerate(lines[1:], start=2):
        row = parse_row(fields, f"{path} line {number}")
        if row.path in seen:
            raise PredictionsFileError(f"{path} line {number}: {row.path!r} appears twice")
        seen.add(row.path)
        rows.append(row)
    return rows


def worst_classified(predictions: Iterable[Prediction], count: int) -> list[Prediction]:
    """The ``count`` misclassified files whose true class got the least probability, worst first."""
    wrong = [p for p in predictions if not p.correct]
    return sorted(wrong, key=lambda p: (p.true_class_probability, -p.probability, p.path))[:count]


def _number(value: float) -> str:
    return f"{value:.6g}"


def parse_row(fields: list[str], where: str) -> Prediction:
    """One row's fields (text, in ``COLUMNS`` order) as a checked ``Prediction``; ``where`` names it in errors."""
    if len(fields) != len(COLUMNS):
        raise PredictionsFileError(f"{where}: {len(fields)} fields, expected {len(COLUMNS)} ({','.join(COLUMNS)})")
    path, true_class, predicted_class, probability, true_probability = fields
    relative = PurePosixPath(path)
    if not path or relative.is_absolute() or ".." in relative.parts or "\\" in path or "\x00" in path:
        raise PredictionsFileError(f"{where}: path {path!r} is not a '/'-separated path inside the dataset directory")
    if not true_class or not predicted_class:
        raise PredictionsFileError(f"{where}: empty class name")
    numbers = []
    for name, text in (("probability", probability), ("true_class_probability", true_probability)):
        try:
            value = float(text)
        except ValueError:
            value = math.nan
        if not 0.0 <= value <= 1.0:  # NaN fails too
            raise PredictionsFileError(f"{where}: {name} {text!r} is not a number in [0, 1]")
        numbers.append(value)
    row = Prediction(path, true_class, predicted_class, *numbers)
    if row.correct and abs(row.probability - row.true_class_probability) > SLACK:
        raise PredictionsFileError(f"{where}: the true class was predicted, but the two probabilities differ")
    if row.probability < row.true_class_probability - SLACK:
        raise PredictionsFileError(f"{where}: the predicted class has a lower probability than the true class")
    return row
