"""The files evaluate writes for the steps after it: per-image predictions and the comparison, read without torch."""

from __future__ import annotations

import gzip
import io
import json
import random
import subprocess
import sys

import pytest

from components.evaluate.comparison_file import (
    BaselineSummary,
    Comparison,
    ComparisonFileError,
    read_comparison,
    write_comparison,
)
from components.evaluate.predictions import (
    COLUMNS,
    Prediction,
    PredictionsFileError,
    read_predictions,
    worst_classified,
    write_predictions,
)
from components.evaluate.scores import compare_on_shared, confusion_scores
from components.evaluate.worst_images import (
    MIN_SIDE,
    THUMBNAIL_SIDE,
    WorstImagesError,
    read_worst_images,
    thumbnail,
    write_worst_images,
)


def synthetic_predictions(classes: int, images: int, seed: int = 0) -> list[Prediction]:
    """A test split laid out as class folders, with a model right about 80 % of the time."""
    rng = random.Random(seed)
    names = [f"class_{i:03d}" for i in range(classes)]
    rows = []
    for i in range(images):
        true = rng.randrange(classes)
        predicted = true if rng.random() < 0.8 else rng.randrange(classes)
        probability = rng.uniform(0.3, 1.0)
        true_probability = probability if predicted == true else rng.uniform(0.0, probability)
        path = f"test/{names[true]}/IMG_{i:06d}.jpg"
        rows.append(Prediction(path, names[true], names[predicted], probability, true_probability))
    return rows


def test_predictions_round_trip_to_six_significant_digits(tmp_path):
    rows = synthetic_predictions(5, 200)
    assert write_predictions(tmp_path / "predictions", rows) == 200
    read = read_predictions(tmp_path / "predictions")
    assert [(r.path, r.true_class, r.predicted_class) for r in read] == [
        (r.path, r.true_class, r.predicted_class) for r in rows
    ]
    assert [r.probability for r in read] == pytest.approx([r.probability for r in rows], rel=1e-5)
    text = gzip.decompress((tmp_path / "predictions").read_bytes()).decode()
    assert text.splitlines()[0] == ",".join(COLUMNS)


def test_the_file_is_the_same_bytes_for_the_same_rows(tmp_path):
    rows = synthetic_predictions(3, 50)
    write_predictions(tmp_path / "a", rows)
    write_predictions(tmp_path / "b", rows)
    assert (tmp_path / "a").read_bytes() == (tmp_path / "b").read_bytes()  # no time stamp in the gzip header


def test_a_100_class_50000_image_split_fits_in_about_a_megabyte(tmp_path):
    write_predictions(tmp_path / "predictions", synthetic_predictions(100, 50_000))
    size = (tmp_path / "predictions").stat().st_size
    assert size < 1_500_000, size
    assert len(read_predictions(tmp_path / "predictions")) == 50_000


def test_names_with_commas_quotes_and_non_ascii_survive(tmp_path):
    rows = [Prediction('folder, with "quotes"/é.png', "crème, brûlée", "a\nb", 0.9, 0.1)]
    write_predictions(tmp_path / "p", rows)
    assert read_predictions(tmp_path / "p") == [
        Prediction('folder, with "quotes"/é.png', "crème, brûlée", "a\nb", 0.9, 0.1)
    ]


def test_the_worst_classified_are_the_misses_with_the_least_probability_on_the_true_class():
    rows = [
        Prediction("a.png", "cat", "cat", 0.9, 0.9),
        Prediction("b.png", "cat", "dog", 0.6, 0.3),
        Prediction("c.png", "dog", "cat", 0.99, 0.001),
        Prediction("d.png", "dog", "owl", 0.5, 0.4),
    ]
    assert [p.path for p in worst_classified(rows, 2)] == ["c.png", "b.png"]
    assert [p.path for p in worst_classified(rows, 10)] == ["c.png", "b.png", "d.png"]


def write_raw(path, text: str) -> None:
    path.write_bytes(gzip.compress(text.encode()))


HEADER = ",".join(COLUMNS) + "\n"


@pytest.mark.parametrize(
    "content, message",
    [
        ("path,true,predicted\n", r"the header is 'path,true,predicted', expected 'path,true_class,"),
        (HEADER + "a.png,cat,cat,0.9\n", r"line 2: 4 fields, expected 5"),
        (HEADER + "../etc/passwd,cat,cat,0.9,0.9\n", r"line 2: path '../etc/passwd' is not a '/'-separated path"),
        (HEADER + "/etc/passwd,cat,cat,0.9,0.9\n", r"path '/etc/passwd' is not"),
        (HEADER + "a\\b.png,cat,cat,0.9,0.9\n", r"is not a '/'-separated path"),
        (HEADER + "a.png,,cat,0.9,0.9\n", r"line 2: empty class name"),
        (HEADER + "a.png,cat,dog,nan,0.1\n", r"line 2: probability 'nan' is not a number in \[0, 1\]"),
        (HEADER + "a.png,cat,dog,1.5,0.1\n", r"probability '1.5' is not a number in \[0, 1\]"),
        (HEADER + "a.png,cat,dog,0.9,x\n", r"true_class_probability 'x' is not"),
        (HEADER + "a.png,cat,cat,0.9,0.2\n", r"the true class was predicted, but the two probabilities differ"),
        (HEADER + "a.png,cat,dog,0.2,0.7\n", r"the predicted class has a lower probability than the true class"),
        (HEADER + "a.png,cat,cat,0.9,0.9\na.png,cat,cat,0.9,0.9\n", r"line 3: 'a.png' appears twice"),
    ],
)
def test_a_file_that_is_not_what_evaluate_writes_is_refused_naming_the_line(tmp_path, content, message):
    write_raw(tmp_path / "p", content)
    with pytest.raises(PredictionsFileError, match=message):
        read_predictions(tmp_path / "p")


def test_a_file_that_is_not_gzip_is_named(tmp_path):
    (tmp_path / "p").write_text(HEADER)
    with pytest.raises(PredictionsFileError, match=r"p is not a gzip-compressed CSV predictions file"):
        read_predictions(tmp_path / "p")


# --- the worst-classified images ----------------------------------------------------------------


def test_the_worst_images_are_small_pictures_worst_first_and_an_unreadable_one_is_listed(tmp_path):
    import numpy as np
    from PIL import Image

    data = tmp_path / "data"
    (data / "cat").mkdir(parents=True)
    photo = np.random.default_rng(0).integers(0, 256, (480, 640, 3), dtype=np.uint8)  # as busy as a photo
    Image.fromarray(photo).save(data / "cat" / "big.jpg")
    Image.new("L", (8, 8), 128).save(data / "cat" / "tiny.png")
    (data / "cat" / "broken.png").write_bytes(b"not a png")
    rows = [
        Prediction("cat/big.jpg", "cat", "dog", 0.8, 0.1),
        Prediction("cat/tiny.png", "cat", "dog", 0.9, 0.05),
        Prediction("cat/broken.png", "cat", "owl", 0.7, 0.2),
        Prediction("cat/right.png", "cat", "cat", 0.9, 0.9),  # correct: never among the worst
    ]
    assert write_worst_images(tmp_path / "worst", rows, data) == 3
    tiny, big, broken = read_worst_images(tmp_path / "worst")
    assert [w.prediction.path for w in (tiny, big, broken)] == ["cat/tiny.png", "cat/big.jpg", "cat/broken.png"]
    assert Image.open(io.BytesIO(tiny.picture)).size == (MIN_SIDE, MIN_SIDE)  # enlarged without smoothing
    assert max(Image.open(io.BytesIO(big.picture)).size) == THUMBNAIL_SIDE
    assert big.mime == "image/jpeg" and tiny.mime == "image/png"  # whichever is smaller
    assert broken.picture is None and "is not a readable PNG or JPEG image" in broken.problem


def test_a_thumbnail_of_a_16_bit_grayscale_image_is_scaled_not_clipped(tmp_path):
    import numpy as np
    from PIL import Image

    Image.fromarray(np.full((4, 4), 65535, dtype=np.uint16)).save(tmp_path / "deep.png")
    data, mime = thumbnail(tmp_path / "deep.png")
    assert mime == "image/png" and Image.open(io.BytesIO(data)).getpixel((0, 0)) == 255


@pytest.mark.parametrize(
    "index, message",
    [
        ({"path": "a.png"}, r"holds dict, not a list"),
        ([{"path": "a.png", "true_class": "c", "predicted_class": "d", "probability": 0.9,
           "true_class_probability": 0.1, "file": "../../etc/passwd"}], r"file '../../etc/passwd' is not a picture"),
        ([{"path": "../a.png", "true_class": "c", "predicted_class": "d", "probability": 0.9,
           "true_class_probability": 0.1}], r"path '../a.png' is not"),
        ([{"path": "a.png", "true_class": 3}], r"path and class names must be text"),
    ],
)  # fmt: skip
def test_a_worst_images_directory_that_is_not_what_evaluate_writes_is_refused(tmp_path, index, message):
    (tmp_path / "index.json").write_text(json.dumps(index))
    with pytest.raises(WorstImagesError, match=message):
        read_worst_images(tmp_path)


# --- the comparison file --------------------------------------------------------------------------


def comparison(status: str = "compared") -> Comparison:
    candidate = confusion_scores([0, 1, 1, 2], [0, 1, 0, 2], ["cat", "dog", "owl"])
    candidate.loss, candidate.onnx_max_difference = 0.3, 2e-7
    shared = None
    if status == "compared":
        shared = compare_on_shared(
            ["cat", "dog", "dog", "owl"], ["cat", "dog", "cat", "owl"], ["cat", "cat", "fox", "fox"],
            ["cat", "dog", "owl"], ["cat", "dog", "fox"],
        )  # fmt: skip
    summary = BaselineSummary(
        status,
        "the production model: pets version 2 in the mlflow registry" if status == "compared" else "no baseline",
        "" if status == "compared" else "nothing in production yet",
        {"baseline": "production", "registry": "mlflow", "model_name": "pets", "version": "2", "uri": "s3://m"}
        if status == "compared"
        else {"baseline": "none"},
        ["cat", "dog", "fox"] if status == "compared" else None,
    )
    history = [{"epoch": 1, "train_loss": 0.9, "val_loss": 1.0, "train_accuracy": 0.5, "val_accuracy": 0.4}]
    model = {
        "uri": "minio://b/model",
        "architecture": "small_cnn",
        "classes": ["cat", "dog", "owl"],
        "training": {"parameters": {"epochs": 1}, "history": history},
        "dataset": {"commit": "c0ffee", "file_count": 4},
        "versions": {"library": "0.1.0"},
    }
    baseline_model = dict(model, uri="s3://m", classes=["cat", "dog", "fox"]) if status == "compared" else None
    models = {"candidate": model, "baseline": baseline_model}
    return Comparison(True, "accuracy 0.7500 meets the threshold 0.5000", 0.5, candidate, summary, shared, models)


@pytest.mark.parametrize("status", ["compared", "none"])
def test_the_comparison_round_trips(tmp_path, status):
    written = comparison(status)
    write_comparison(tmp_path / "comparison", written)
    assert read_comparison(tmp_path / "comparison") == written


@pytest.mark.parametrize(
    "change, message",
    [
        (lambda r: r.update(format_version=2), r"format_version is 2; this library reads 1"),
        (lambda r: r["decision"].update(promote="yes"), r"decision.promote is not true or false"),
        (lambda r: r["candidate"].update(accuracy=1.5), r"candidate.accuracy is 1.5, not a number in \[0, 1\]"),
        (lambda r: r["candidate"]["confusion_matrix"].pop(), r"candidate.confusion_matrix must be 3 rows of 3"),
        (lambda r: r["candidate"]["per_class_recall"].pop("owl"), r"candidate.per_class_recall must give"),
        (lambda r: r["baseline"].update(status="better"), r"baseline.status must be one of"),
        (lambda r: r.update(shared=None), r"shared must be given exactly when baseline.status is 'compared'"),
        (lambda r: r["shared"].update(baseline=r["candidate"]), r"shared.baseline.classes differ from shared.classes"),
        (lambda r: r["models"].update(candidate=None), r"models.candidate must describe the candidate"),
        (lambda r: r["models"]["baseline"].pop("uri"), r"models.baseline needs a uri and classes"),
        (lambda r: r["models"]["baseline"].update(training=[]), r"models.baseline.training must be an object"),
        (lambda r: r["models"]["candidate"]["training"].update(history=[1]), r"training.history must be a list of"),
    ],
)
def test_a_comparison_file_that_is_not_what_evaluate_writes_is_named(tmp_path, change, message):
    record = comparison().record()
    change(record)
    (tmp_path / "comparison").write_text(json.dumps(record))
    with pytest.raises(ComparisonFileError, match=message):
        read_comparison(tmp_path / "comparison")


def test_the_readers_need_no_torch():
    """The deploy step and the report read these files in steps that may not have torch."""
    code = (
        "import sys; sys.modules['torch'] = None\n"
        "import components.evaluate.predictions, components.evaluate.comparison_file, components.evaluate.baseline\n"
        "import components.evaluate.gate, components.evaluate.metrics_file, components.evaluate.worst_images"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
