"""spec.json: its formats round-trip, older ones load, and the training images' input_range is measured."""

from __future__ import annotations

import json
from dataclasses import asdict

import pytest
import torch
from torch.utils.data import DataLoader

from components.common.loader import DecodePassResult
from components.common.spec import SPEC_FORMAT_VERSION, ModelFormatError, ModelSpec, load_spec, write_spec

INPUT_RANGE = {"scale": [0, 255], "min": 0, "max": 255, "typical_max": 239, "typical_max_percentile": 1, "images": 9}


def a_spec(**overrides) -> ModelSpec:
    fields = {
        "architecture": "small_cnn",
        "classes": ["0", "1"],
        "input_shape": [1, 8, 8],
        "normalization": {"mean": [0.2], "std": [0.3]},
        "files": {"weights": "weights.pt", "onnx": "model.onnx"},
        "split": {"method": "given", "given": ["train", "test"]},
    }
    return ModelSpec(**{**fields, **overrides})


def test_a_spec_with_its_input_range_round_trips(tmp_path):
    spec = a_spec(input_range=INPUT_RANGE)
    write_spec(tmp_path, spec)
    assert json.loads((tmp_path / "spec.json").read_text())["format_version"] == SPEC_FORMAT_VERSION == 3
    assert load_spec(tmp_path) == spec and load_spec(tmp_path).input_range == INPUT_RANGE


def test_a_format_2_spec_without_input_range_loads_with_none_measured(tmp_path):
    payload = asdict(a_spec())
    del payload["input_range"]
    payload["format_version"] = 2
    (tmp_path / "spec.json").write_text(json.dumps(payload))
    spec = load_spec(tmp_path)
    assert spec.input_range == {} and spec.format_version == SPEC_FORMAT_VERSION
    assert spec.classes == ["0", "1"]
    write_spec(tmp_path, spec)  # written again, it is a valid current spec
    assert load_spec(tmp_path) == spec


def test_a_format_1_spec_still_loads(tmp_path):
    payload = asdict(a_spec())
    for key in ("input_range", "files", "split", "preprocessing"):
        del payload[key]
    payload["format_version"] = 1
    (tmp_path / "spec.json").write_text(json.dumps(payload))
    spec = load_spec(tmp_path)
    assert spec.files == {"weights": "weights.pt"} and spec.input_range == {}


def test_a_newer_format_is_named(tmp_path):
    payload = asdict(a_spec()) | {"format_version": 4}
    (tmp_path / "spec.json").write_text(json.dumps(payload))
    with pytest.raises(ModelFormatError, match=r"format_version 4; this library reads 1, 2, 3"):
        load_spec(tmp_path)


def measured(maxima: list[int], low: int = 0) -> dict:
    counts = torch.bincount(torch.tensor(maxima), minlength=256)
    zeros = torch.zeros(1, dtype=torch.float64)
    result = DecodePassResult([], None, zeros, zeros, image_max_counts=counts, range_low=low, range_high=max(maxima))
    return result.input_range()


def test_input_range_typical_max_is_the_first_percentile_of_the_images_maxima():
    # 300 images: the 1st percentile is the 3rd smallest maximum.
    assert measured([12, 40, 200] + [255] * 297)["typical_max"] == 200
    assert measured([12, 40, 200, 201] + [255] * 296)["typical_max"] == 200
    assert measured([12, 40] + [255] * 298)["typical_max"] == 255
    # Fewer than 100 images: the smallest maximum, the most conservative.
    few = measured([230, 255, 255], low=3)
    assert few == INPUT_RANGE | {"min": 3, "typical_max": 230, "images": 3}
    assert DecodePassResult([], None, torch.zeros(1), torch.zeros(1)).input_range() == {}  # nothing measured


def test_the_decode_pass_measures_the_training_images_only(digits_dir):
    from components.common.dataset import index_dataset
    from components.common.loader import decode_pass

    index = index_dataset(digits_dir)
    samples = index.samples("train")[:150] + index.samples("test")[:50]
    result = decode_pass(index.root, samples, 1, (8, 8), 0, keep=True, range_for=150)
    maxima = result.images[:150].flatten(1).amax(1)
    record = result.input_range()
    assert record["images"] == 150 and record["max"] == int(maxima.max()) == 255
    assert record["min"] == int(result.images[:150].min()) == 0
    assert record["typical_max"] == int(maxima.sort().values[1])  # ceil(1 % of 150) = 2nd smallest
    assert decode_pass(index.root, samples, 1, (8, 8), 0, keep=False).input_range() == {}


def test_no_test_image_of_the_digits_is_taken_for_another_scale(digits_dir):
    from components.common.dataset import index_dataset
    from components.common.loader import decode_pass
    from serving.validation import ScaleCheck, arrays_to_batch

    index = index_dataset(digits_dir)
    train, test = index.samples("train"), index.samples("test")
    result = decode_pass(index.root, train + test, 1, (8, 8), 0, keep=True, range_for=len(train))
    check = ScaleCheck.from_input_range(result.input_range())
    images = result.images[len(train) :, 0].numpy()
    assert len(images) == 359 and int(images.reshape(359, -1).max(1).min()) > check.ceiling
    assert arrays_to_batch(images.tolist(), [1, 8, 8], 359, check).shape == (359, 1, 8, 8)


def test_dataloader_workers_decode_only_what_would_take_longer_here_than_their_start():
    from components.common.loader import WORKER_START_SECONDS, decode_workers

    assert decode_workers(0.0001, 1374, 2) == 0  # the digits: 0.14 s here, against 0.5 s to start two workers
    assert decode_workers(0.005, 1000, 2) == 2  # photos: 5 s here, 2.5 s each with two workers
    assert decode_workers(1.0, 1000, 0) == 0  # none allowed
    started = WORKER_START_SECONDS * 2
    assert decode_workers(1.0, round(started * 2) + 1, 2) == 2 and decode_workers(1.0, round(started * 2) - 1, 2) == 0


def test_workers_and_this_process_decode_the_same_and_list_the_same_bad_files(digits_dir, tmp_path, monkeypatch):
    import shutil

    from components.common import loader
    from components.common.dataset import DatasetFormatError, index_dataset

    data = tmp_path / "digits"
    shutil.copytree(digits_dir, data)
    index = index_dataset(data)
    samples = index.samples("train")[:300]
    here = loader.decode_pass(index.root, samples, 1, (8, 8), 2, keep=True, statistics_for=300, range_for=300)
    monkeypatch.setattr(loader, "WORKER_START_SECONDS", 0.0)  # workers for the rest, whatever it costs
    chosen = []
    monkeypatch.setattr(loader, "DataLoader", lambda *a, **k: chosen.append(k["num_workers"]) or DataLoader(*a, **k))
    by_workers = loader.decode_pass(index.root, samples, 1, (8, 8), 2, keep=True, statistics_for=300, range_for=300)
    assert chosen == [2]
    assert by_workers.digests == here.digests and torch.equal(by_workers.images, here.images)
    assert torch.equal(by_workers.channel_sum, here.channel_sum) and by_workers.input_range() == here.input_range()

    for sample in (samples[3], samples[200]):  # one in the first batch, one after it
        (index.root / sample.path).write_bytes(b"not a png")
    for start_seconds in (0.0, 1e9):
        monkeypatch.setattr(loader, "WORKER_START_SECONDS", start_seconds)
        with pytest.raises(DatasetFormatError, match=r"2 of 300 image\(s\) in the x under .* cannot be read") as error:
            loader.decode_pass(index.root, samples, 1, (8, 8), 2, keep=True, what="x")
        assert samples[3].path in str(error.value) and samples[200].path in str(error.value)
