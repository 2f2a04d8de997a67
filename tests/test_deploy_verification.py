"""The deploy step's verification: held-out test images chosen by the model's split rule, sent to a real
``bentoml serve`` through BentoML's own client, compared with evaluate's per-image predictions."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import pytest

from components.common.dataset import SplitRule, index_dataset
from components.common.processes import free_port
from components.common.spec import load_spec
from components.deploy.held_out import HeldOutError, HeldOutImage, HeldOutSet, load_held_out, select_held_out
from components.deploy.verification import Verification, percentile, verify, verify_held_out
from components.evaluate.predictions import read_predictions, write_predictions
from tests.support.bento_server import bento_environment, serve


@pytest.fixture(scope="module")
def model_dir(trained_models) -> Path:
    return trained_models / "strong"


@pytest.fixture(scope="module")
def served(deploy_bentos, tmp_path_factory):
    """The good and the drifted bento, each served by a real ``bentoml serve``: {name: (url, model tag)}."""
    root = tmp_path_factory.mktemp("verified-servers")
    env = bento_environment(deploy_bentos["good"]["dir"].parent)  # the store the bentos were built into
    servers = {}
    for name in ("good", "drifted"):  # each with its image's environment: the model tag it loads
        servers[name] = {**env, **deploy_bentos[name]["env"]}
    with serve(deploy_bentos["good"]["bento_tag"], servers["good"], root) as good:
        with serve(deploy_bentos["drifted"]["bento_tag"], servers["drifted"], root) as drifted:
            yield {"good": good, "drifted": drifted}


# --- the held-out images ------------------------------------------------------------------------------------


def test_held_out_images_are_test_files_of_the_model_split_half_of_them_the_least_confident(
    digits_dir, model_dir, digits_predictions
):
    held_out = select_held_out(digits_dir, model_dir, digits_predictions, 64)
    index = index_dataset(digits_dir, SplitRule.from_record(load_spec(model_dir).split))
    test = {sample.path: index.classes[sample.label] for sample in index.samples("test")}
    assert len(held_out) == 64 and held_out.test_files == len(test)
    paths = [image.prediction.path for image in held_out.images]
    assert len(set(paths)) == 64 and set(paths) <= set(test)
    assert all(test[image.prediction.path] == image.prediction.true_class for image in held_out.images)
    assert all(image.file == index.root / image.prediction.path and image.file.is_file() for image in held_out.images)
    # The 32 least confident test files are all in, the rest spread over the split; always the same ones.
    rows = read_predictions(digits_predictions)
    least_confident = sorted(rows, key=lambda row: (row.probability, row.path))[:32]
    assert {row.path for row in least_confident} <= set(paths)
    assert paths == [
        image.prediction.path for image in select_held_out(digits_dir, model_dir, digits_predictions).images
    ]
    assert held_out.evaluated_accuracy == sum(image.prediction.correct for image in held_out.images) / 64
    assert held_out.evaluated_accuracy < 1.0  # the misclassified files are among the least confident: compared too


def test_a_count_beyond_the_test_split_takes_all_of_it_and_a_bad_count_is_refused(
    digits_dir, model_dir, digits_predictions
):
    everything = select_held_out(digits_dir, model_dir, digits_predictions, 10_000)
    assert len(everything) == everything.test_files == len(read_predictions(digits_predictions))
    for bad in (0, -3, 2.5, True, "64"):
        with pytest.raises(HeldOutError, match=r"number of verification images must be an integer >= 1"):
            select_held_out(digits_dir, model_dir, digits_predictions, bad)


def test_predictions_made_for_other_files_or_classes_are_refused_naming_the_file(
    digits_dir, model_dir, digits_predictions, tmp_path
):
    rows = read_predictions(digits_predictions)
    fewer = tmp_path / "fewer.csv.gz"
    write_predictions(fewer, rows[1:])
    with pytest.raises(
        HeldOutError, match=rf"1 of the model's {len(rows)} test files are not in it \(e.g. {rows[0].path}\)"
    ):
        select_held_out(digits_dir, model_dir, fewer)
    other = tmp_path / "other.csv.gz"
    write_predictions(other, [*rows, rows[0].__class__("images/elsewhere.png", "3", "3", 0.9, 0.9)])
    with pytest.raises(HeldOutError, match=r"1 of its files are not test files .* \(e\.g\. images/elsewhere.png\)"):
        select_held_out(digits_dir, model_dir, other)
    relabelled = tmp_path / "relabelled.csv.gz"
    first = rows[0]
    wrong = "1" if first.true_class != "1" else "2"
    write_predictions(relabelled, [first.__class__(first.path, wrong, wrong, 0.9, 0.9), *rows[1:]])
    with pytest.raises(HeldOutError, match=rf"gives {first.path} the true class '{wrong}'"):
        select_held_out(digits_dir, model_dir, relabelled)
    not_predictions = tmp_path / "spec.csv.gz"
    not_predictions.write_bytes(gzip.compress(b"filename,label\n"))
    with pytest.raises(ValueError, match=r"the header is 'filename,label'"):
        select_held_out(digits_dir, model_dir, not_predictions)


def test_a_saved_held_out_set_reads_back_the_same(digits_dir, model_dir, digits_predictions, tmp_path):
    held_out = select_held_out(digits_dir, model_dir, digits_predictions, 16)
    held_out.save(tmp_path / "held_out")
    again = load_held_out(tmp_path / "held_out")
    assert [image.prediction for image in again.images] == [image.prediction for image in held_out.images]
    assert [image.file.read_bytes() for image in again.images] == [image.file.read_bytes() for image in held_out.images]
    (tmp_path / "held_out" / "images" / held_out.images[3].prediction.path).unlink()
    with pytest.raises(HeldOutError, match=rf"names {held_out.images[3].prediction.path}, but .* is missing"):
        load_held_out(tmp_path / "held_out")
    with pytest.raises(HeldOutError, match=r"holds no expected.csv.gz"):
        load_held_out(tmp_path)


# --- what is served, through BentoML's client ---------------------------------------------------------------


@pytest.mark.slow
def test_the_served_bento_agrees_with_evaluate_on_every_held_out_image(
    served, deploy_bentos, digits_dir, model_dir, digits_predictions
):
    model_tag = deploy_bentos["good"]["model_tag"]
    result = verify(served["good"], digits_dir, model_dir, digits_predictions, expected_model_tag=model_tag)
    assert result.passed, result.summary()
    assert (result.images, result.answered_200, result.agreed) == (64, 64, 64)
    assert result.served_accuracy == result.evaluated_accuracy < 1.0
    assert result.model_tag == model_tag and result.disagreements == [] and result.problems == []
    assert 0 < result.p50_ms <= result.p99_ms
    assert result.max_probability_difference < 1e-5  # ONNX Runtime both times, rounded to 6 digits in the file
    assert result.summary().startswith("verified 64 held-out images: 64 answered 200, 64 agreed with evaluate")
    record = json.loads(json.dumps(result.to_dict()))
    assert {"images", "agreed", "p50_ms", "p99_ms", "passed"} <= set(record) and record["passed"] is True


@pytest.mark.slow
def test_a_preprocessing_drift_fails_the_verification_naming_the_images(
    served, digits_dir, model_dir, digits_predictions
):
    result = verify(served["drifted"], digits_dir, model_dir, digits_predictions)
    assert not result.passed
    assert result.answered_200 == 64 and result.agreed < 64
    assert len(result.disagreements) == 64 - result.agreed
    first = result.disagreements[0]
    assert first.status == 200 and (
        first.served != first.expected or first.served_probability != first.expected_probability
    )
    summary = result.summary()
    assert summary.startswith("verification failed: 64 held-out images: 64 answered 200, ")
    assert f"{first.path}: served {first.served!r}" in summary


@pytest.mark.slow
def test_a_stale_model_and_a_refused_image_fail_it(served, digits_dir, model_dir, digits_predictions, tmp_path):
    held_out = select_held_out(digits_dir, model_dir, digits_predictions, 8)
    stale = verify_held_out(served["good"], held_out, expected_model_tag="image-classifier:another")
    assert not stale.passed and stale.agreed == 8
    assert stale.problems == [f"the service answered as model {stale.model_tag!r}, expected 'image-classifier:another'"]
    # A file the service refuses: a real 415 from the service, counted and named, the others still compared.
    text = tmp_path / "notes.png"
    text.write_text("not an image")
    refused = HeldOutSet((HeldOutImage(text, held_out.images[0].prediction), *held_out.images[1:]), 8)
    result = verify_held_out(served["good"], refused)
    assert not result.passed and (result.answered_200, result.agreed) == (7, 7)
    (problem,) = result.disagreements
    assert problem.status == 415 and "unsupported_format" in problem.served
    assert f"{held_out.images[0].prediction.path}: HTTP 415" in result.summary()


def test_nothing_listening_fails_the_verification_without_raising(digits_dir, model_dir, digits_predictions):
    held_out = select_held_out(digits_dir, model_dir, digits_predictions, 4)
    url = f"http://127.0.0.1:{free_port()}"
    result = verify_held_out(url, held_out, timeout_seconds=5)
    assert not result.passed and result.answered_200 == 0
    assert result.problems and result.problems[0].startswith(f"BentoML's client could not reach {url}")
    with pytest.raises(ValueError, match=r"base_url must be an http\(s\) URL"):
        verify_held_out("127.0.0.1:3000", held_out)


def test_passing_needs_every_answer_and_equal_accuracies():
    figures = dict(
        images=4, agreed=4, answered_200=4, served_accuracy=0.75, evaluated_accuracy=0.75, p50_ms=1, p99_ms=2
    )
    assert Verification(**figures).passed
    assert not Verification(**{**figures, "agreed": 3}).passed
    assert not Verification(**{**figures, "answered_200": 3}).passed
    assert not Verification(**{**figures, "served_accuracy": 1.0}).passed
    assert not Verification(**{**figures, "images": 0, "agreed": 0, "answered_200": 0}).passed
    assert not Verification(**figures, problems=["answers came from several models"]).passed
    assert percentile([1.0, 2.0, 3.0, 4.0], 0.5) == 2.0 and percentile([1.0, 2.0, 3.0, 4.0], 0.99) == 4.0
    assert percentile([], 0.5) == 0.0
