"""Each component, and the pipeline, run for real through kfp.local's SubprocessRunner."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from kfp import local

from components.dvc_pull.component import dvc_pull
from pipelines.compile import compile_all
from pipelines.local import describe_run, run_local


@pytest.fixture
def kfp_local(tmp_path):
    root = tmp_path / "pipeline-root"
    local.init(runner=local.SubprocessRunner(use_venv=False), pipeline_root=str(root), raise_on_error=True)
    return root


def test_dvc_pull_component(digits_repo, kfp_local):
    task = dvc_pull(repo_url=digits_repo.repo_url, rev="main", paths=["data/raw"])
    dataset = task.outputs["dataset"]
    assert dataset.metadata["commit"] == digits_repo.commit
    assert dataset.metadata["file_count"] == 1799
    assert dataset.metadata["md5"]["data/raw"].endswith(".dir")
    assert (Path(dataset.path) / "data/raw/labels.csv").is_file()


def test_failing_dvc_pull_component_fails_the_task_and_leaves_no_dataset(digits_repo, kfp_local, capfd):
    with pytest.raises(RuntimeError, match=r"Task .*dvc-pull.* finished with status .*FAILURE"):
        dvc_pull(repo_url=digits_repo.repo_url, rev="no-such-tag", paths=["data/raw"])
    # The task failed for the reason it gave, not any other.
    captured = capfd.readouterr()  # kfp.local streams the task's log to stdout or stderr, as logging is set up
    assert "DvcPullInputError: unknown revision 'no-such-tag'" in captured.out + captured.err
    assert not list(kfp_local.rglob("dataset"))
    assert not list(kfp_local.rglob("*.partial-*"))


def promotion_record(run_dir: Path) -> Path:
    """What register writes without a model registry (kfp.local's runs have none)."""
    return run_dir / "register" / "registered" / "promotion.json"


def reports(run_dir: Path) -> list[Path]:
    """The report tasks that ran: exactly one per run, whichever way it went through the gate."""
    return sorted(path.parent for path in run_dir.glob("report*/markdown"))


@pytest.mark.slow
def test_training_pipeline_promotes_a_good_model(digits_repo, stock_sdk_run):
    run_dir = stock_sdk_run["run_dir"]
    record = json.loads(promotion_record(run_dir).read_text())
    assert record["dataset"]["commit"] == digits_repo.commit
    assert record["evaluation"]["accuracy"] >= 0.9 and record["evaluation"]["promote"] is True
    assert (run_dir / "train" / "model" / "weights.pt").is_file()
    bento = json.loads((run_dir / "build-bento" / "bento" / "bento.json").read_text())
    assert bento["bento_tag"].startswith("image-classifier:") and bento["size_bytes"] > 0
    assert (run_dir / "build-bento" / "bento" / bento["archive"]).is_file()
    baseline = json.loads((run_dir / "find-baseline" / "executor_output.json").read_text())
    (found,) = baseline["artifacts"]["baseline_model"]["artifacts"]
    assert found["metadata"]["baseline"] == "none"  # the default without a registry
    [report] = reports(run_dir)
    assert report.name == "report-2"  # promoted, image build off, not deployed (report: deployed locally)
    markdown = (report / "markdown").read_text()
    assert markdown.startswith("# Promoted:") and "not registered in this run" not in markdown
    assert "no image built in this run" in markdown
    assert (report / "html").read_text().startswith("<!DOCTYPE html>")
    description = describe_run(run_dir)
    assert "evaluate.metrics" in description and "accuracy" in description


@pytest.mark.slow
def test_training_pipeline_gate_holds_back_a_model_below_threshold(digits_repo, tmp_path):
    run_dir = run_local({"repo_url": digits_repo.repo_url, "epochs": 1, "accuracy_threshold": 1.0}, tmp_path / "root")
    evaluate_output = json.loads((run_dir / "evaluate" / "executor_output.json").read_text())
    assert evaluate_output["parameterValues"]["Output"] is False
    assert not promotion_record(run_dir).exists()
    assert not (run_dir / "build-bento").exists()
    [report] = reports(run_dir)  # the held-back path's own report: the decision and the comparison
    assert (report / "markdown").read_text().startswith("# Not promoted:")
    assert "not registered in this run" in (report / "markdown").read_text()


@pytest.mark.parametrize(
    "arguments, message",
    [
        ({"epochs": 0}, r"epochs must be an integer >= 1, got 0"),
        ({"accuracy_threshold": 1.2}, r"accuracy_threshold must be a number in \[0, 1\], got 1.2"),
        ({"learning_rate": -1.0}, r"learning_rate must be a number in \(0, 10\)"),
        ({"batch": 3}, r"unknown argument\(s\) batch; the pipeline takes .*batch_size"),
        ({"repo_url": "https://u:secret@example.com/r.git"}, r"embeds credentials"),
    ],
)
def test_bad_arguments_fail_before_anything_runs(digits_repo, tmp_path, arguments, message):
    with pytest.raises(ValueError, match=message):
        run_local({"repo_url": digits_repo.repo_url} | arguments, tmp_path / "root")
    assert not list((tmp_path / "root").glob("*")) if (tmp_path / "root").exists() else True


ROUND_TRIP = textwrap.dedent(
    """
    import json, sys
    from kfp import components, local

    pipeline = components.load_component_from_file(sys.argv[1])
    local.init(runner=local.SubprocessRunner(use_venv=False), pipeline_root=sys.argv[2], raise_on_error=True)
    pipeline(repo_url=sys.argv[3], epochs=6, augment=False, accuracy_threshold=0.9, build_image=False)
    loaded = sorted(name for name in sys.modules if name.split(".")[0] in ("pipelines", "components"))
    print(json.dumps(loaded))
    """
)


@pytest.fixture(scope="module")
def stock_sdk_run(digits_repo, tmp_path_factory) -> dict:
    """One run of the compiled training pipeline, loaded and run by the stock KFP SDK alone (kfp.local) in a
    process of its own, promoting a good model; the tests that read a whole run's results share it."""
    work = tmp_path_factory.mktemp("stock-sdk")
    yaml_path = work / "compiled" / "training_pipeline.yaml"
    assert yaml_path in compile_all(work / "compiled")
    root = work / "root"
    done = subprocess.run(
        [sys.executable, "-c", ROUND_TRIP, str(yaml_path), str(root), digits_repo.repo_url],
        capture_output=True,
        text=True,
        cwd=work,  # not the repository: nothing of ours is importable from the working directory
        timeout=600,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    (run_dir,) = root.glob("pytorch-training-*")
    return {"run_dir": run_dir, "driver_imported": json.loads(done.stdout.strip().splitlines()[-1])}


@pytest.mark.slow
def test_compiled_yaml_runs_with_the_stock_sdk_alone(stock_sdk_run):
    assert stock_sdk_run["driver_imported"] == []  # the driver imported none of our code
    assert promotion_record(stock_sdk_run["run_dir"]).is_file()


@pytest.mark.slow
def test_train_component_fine_tunes_from_an_imported_weights_artifact(tmp_path, kfp_local):
    """The pretrained weights arrive as a Model artifact from dsl.importer, as a gs:// checkpoint would."""
    import torch
    import torchvision

    from tests.support.fine_tune_pipeline import fine_tune
    from tests.support.photos import write_photo_dataset

    photos = write_photo_dataset(tmp_path / "photos", per_class=8)
    torch.manual_seed(0)
    checkpoint = tmp_path / "resnet18-f37072fd.pth"
    torch.save(torchvision.models.resnet18(weights=None).state_dict(), checkpoint)

    fine_tune(dataset_uri=str(photos), weights_uri=str(checkpoint))
    (model_dir,) = kfp_local.glob("fine-tune-*/train/model")
    spec = json.loads((model_dir / "spec.json").read_text())
    assert spec["training"]["pretrained_weights"] == str(checkpoint)
    assert spec["training"]["fine_tune"] == "head" and spec["architecture"] == "resnet18"
    trained = torch.load(model_dir / "weights.pt", weights_only=True)
    original = torch.load(checkpoint, weights_only=True)
    assert torch.equal(trained["layer4.1.conv2.weight"], original["layer4.1.conv2.weight"])


@pytest.mark.slow
def test_evaluate_component_gates_a_candidate_against_a_baseline_model(digits_dir, trained_models, kfp_local):
    from components.evaluate.comparison_file import read_comparison
    from components.evaluate.predictions import read_predictions
    from tests.support.evaluate_pipeline import gate_against_baseline

    def gate(candidate: str, baseline: str) -> tuple[dict, Path]:
        gate_against_baseline(
            dataset_uri=str(digits_dir),
            candidate_uri=str(trained_models / candidate),
            baseline_uri=str(trained_models / baseline),
            threshold=0.0,
        )
        latest = max(kfp_local.glob("gate-against-baseline-*"), key=lambda p: p.stat().st_mtime)
        return json.loads((latest / "evaluate" / "executor_output.json").read_text()), latest / "evaluate"

    worse, outputs = gate("weak", "strong")
    assert worse["parameterValues"] == {"Output": False}  # worse than the model in production
    (metrics,) = worse["artifacts"]["metrics"]["artifacts"]
    assert metrics["metadata"]["baseline_accuracy"] > metrics["metadata"]["accuracy"]
    assert "worse than the baseline" in metrics["metadata"]["reason"]
    assert metrics["metadata"]["baseline"] == "the production model: digits version 3 in the mlflow registry"
    comparison = read_comparison(outputs / "comparison")
    assert comparison.baseline.status == "compared" and comparison.baseline.source["model_name"] == "digits"
    assert comparison.shared.baseline.accuracy == pytest.approx(metrics["metadata"]["baseline_accuracy"], abs=1e-6)
    assert len(comparison.shared.baseline.confusion_matrix) == 10
    rows = read_predictions(outputs / "predictions")
    assert len(rows) == metrics["metadata"]["test_samples"] == 359
    assert sum(row.correct for row in rows) / len(rows) == pytest.approx(comparison.candidate.accuracy)
    assert gate("strong", "weak")[0]["parameterValues"] == {"Output": True}


@pytest.mark.slow
def test_evaluate_component_without_a_baseline_says_so(digits_dir, trained_models, kfp_local, tmp_path):
    from components.evaluate.comparison_file import read_comparison
    from tests.support.evaluate_pipeline import NO_BASELINE_REASON, gate_without_baseline

    empty = tmp_path / "no-baseline"
    empty.mkdir()
    gate_without_baseline(
        dataset_uri=str(digits_dir), candidate_uri=str(trained_models / "strong"), empty_uri=str(empty), threshold=0.5
    )
    (outputs,) = kfp_local.glob("gate-without-baseline-*/evaluate")
    result = json.loads((outputs / "executor_output.json").read_text())
    assert result["parameterValues"] == {"Output": True}
    (metrics,) = result["artifacts"]["metrics"]["artifacts"]
    assert metrics["metadata"]["reason"].endswith(f"; compared with no baseline: {NO_BASELINE_REASON}")
    assert metrics["metadata"]["baseline"] == f"none: {NO_BASELINE_REASON}"
    assert "baseline_accuracy" not in metrics["metadata"]
    comparison = read_comparison(outputs / "comparison")
    assert (comparison.baseline.status, comparison.baseline.reason) == ("none", NO_BASELINE_REASON)
    assert comparison.shared is None


def test_kfp_local_resolves_a_gate_on_a_bare_output_but_skips_one_on_a_named_output(kfp_local):
    """Why evaluate's decision is its bare ``Output``: under kfp.local 2.17 a ``dsl.If`` on a NamedTuple field
    of a task beside it evaluates to false, with a warning only. When this fails, kfp.local has learnt named
    outputs, and evaluate can name its output ``promote``."""
    from tests.support.named_output_gate import gates

    gates(promote=True)
    (run,) = kfp_local.glob("gates-*")
    ran = {
        json.loads(path.read_text())["parameterValues"]["Output"] for path in run.glob("passed*/executor_output.json")
    }
    assert ran == {"bare"}


def readme_snippet() -> str:
    """The README's "Running it yourself" code, as written there."""
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    section = readme[readme.index("### Running it yourself") :]
    return section[section.index("```python") + len("```python") : section.index("```", section.index("```python") + 3)]


@pytest.mark.slow
def test_the_readmes_own_snippet_runs_with_only_the_data_repository(digits_repo, tmp_path):
    snippet = readme_snippet()
    assert 'repo_url="https://github.com/you/your-data-repo.git", rev="v1.2"' in snippet
    code = snippet.replace("https://github.com/you/your-data-repo.git", digits_repo.repo_url)
    code = code.replace('"v1.2"', '"main"')
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path, timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    (run_dir,) = (tmp_path / ".local/pipeline-root").glob("pytorch-training-*")
    assert (run_dir / "evaluate" / "executor_output.json").is_file()
    assert not (run_dir / "containerize").exists()  # no registry given: no image, no buildah needed


def test_a_bad_argument_fails_the_first_step_before_any_data_is_pulled(digits_repo, kfp_local, capfd):
    """Called directly, as a notebook would, with no submission-time check in front of it."""
    from pipelines.training_pipeline import training_pipeline

    with pytest.raises(RuntimeError, match=r"Inner task failed: .*check-arguments"):
        training_pipeline(repo_url=digits_repo.repo_url, epochs=0)
    captured = capfd.readouterr()
    assert "epochs must be an integer >= 1, got 0" in captured.out + captured.err
    assert not list(kfp_local.rglob("dvc-pull"))
