"""The local target below the step: a failed first deployment, bad archives, the server's crash loop read from its
log, and ``make serve`` with nothing deployed. (The step itself, under kfp.local: tests/test_deploy_local.py.)"""

from __future__ import annotations

import io
import tarfile
from pathlib import Path

import pytest

from components.deploy.deploy import DeployFailed, run_deploy
from components.deploy.held_out import select_held_out
from components.deploy.local_bentos import BentoArchive, BentoArchiveError, BentoStore
from components.deploy.local_server import BentoServer
from components.deploy.local_target import LocalTarget, main
from components.deploy.target import DeployRequest
from components.deploy.verification import verify_held_out

# What BentoML 1.4 logs when a service cannot start, twice (from a real `bentoml serve` of a bento whose ONNX file
# is damaged; paths shortened). Each crash logs "Application startup failed" twice at the same second.
CRASHING_LOG = """\
2026-12-05T02:15:48+0000 [INFO] [cli] Starting production HTTP BentoServer from "image-classifier:yp6" listening on http://127.0.0.1:34835
2026-12-05T02:15:50+0000 [ERROR] [entry_service:image_classifier:1] Initializing service error
Traceback (most recent call last):
  File "/bentoml/bentos/image-classifier/yp6/src/components/common/onnx_model.py", line 35, in __init__
    self.session = onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
                   ^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^
onnxruntime.capi.onnxruntime_pybind11_state.InvalidProtobuf: [ONNXRuntimeError] : 7 : INVALID_PROTOBUF

2026-12-05T02:15:50+0000 [ERROR] [entry_service:image_classifier:1] Application startup failed. Exiting.
2026-12-05T02:15:50+0000 [ERROR] [entry_service:image_classifier:1] Application startup failed. Exiting.
"""
SECOND_CRASH = CRASHING_LOG.split("\n", 1)[1].replace("02:15:50", "02:16:01")


@pytest.fixture
def held_out(digits_dir, trained_models, digits_predictions):
    return select_held_out(digits_dir, trained_models / "strong", digits_predictions, 8)


@pytest.mark.slow
def test_a_failed_first_deployment_is_removed_unless_kept(deploy_bentos, held_out, tmp_path):
    broken = deploy_bentos["broken"]
    request = DeployRequest(target="local", name="digits", bento=str(broken["archive"]))

    def verify(url):
        return verify_held_out(url, held_out)

    with LocalTarget("digits", tmp_path) as target:
        with pytest.raises(DeployFailed, match=r"It was the first deployment and was removed"):
            run_deploy(target, request, verify, deadline_seconds=300)
    assert target.record() is None
    assert not list((tmp_path / "digits" / "bentoml" / "bentos").rglob("bento.yaml"))  # the store is empty again

    with LocalTarget("digits", tmp_path) as target:
        with pytest.raises(DeployFailed, match=r"kept for debugging \(keep_failed=true\)"):
            run_deploy(target, request, verify, keep_failed=True, deadline_seconds=300)
    record = target.record()
    assert record["bento"] == broken["bento_tag"] and record["verified"] is False
    assert len(list((tmp_path / "digits" / "bentoml" / "bentos").rglob("bento.yaml"))) == 1


def test_files_that_are_not_bento_archives_are_refused_naming_them(tmp_path):
    with pytest.raises(BentoArchiveError, match=r"missing.bento is not a file: give the .bento file build_bento"):
        BentoArchive.read(tmp_path / "missing.bento")
    text = tmp_path / "notes.bento"
    text.write_text("not a tar file")
    with pytest.raises(BentoArchiveError, match=r"notes.bento is not a bento archive \(a tar file BentoML exported\)"):
        BentoArchive.read(text)
    other = tmp_path / "other.bento"
    with tarfile.open(other, "w:gz") as archive:
        info = tarfile.TarInfo("README.md")
        info.size = 5
        archive.addfile(info, io.BytesIO(b"hello"))
    with pytest.raises(BentoArchiveError, match=r"other.bento holds no bento.yaml"):
        BentoArchive.read(other)


def test_an_exported_bento_says_what_it_serves_and_with_which_environment(deploy_bentos):
    good = deploy_bentos["good"]
    archive = BentoArchive.read(good["archive"])
    assert archive.tag == good["bento_tag"] and archive.model_tag == good["model_tag"]
    assert archive.env["KFP_TORCH_LIFECYCLE_MODEL_TAG"] == good["model_tag"]
    assert len(archive.sha256) == 64


def test_relative_paths_to_the_archive_and_the_store_are_taken_from_where_they_were_given(
    deploy_bentos, tmp_path, monkeypatch
):
    good = Path(deploy_bentos["good"]["archive"])
    (tmp_path / "bento").mkdir()
    (tmp_path / "bento" / good.name).write_bytes(good.read_bytes())
    monkeypatch.chdir(tmp_path)
    assert BentoStore("store").ensure(BentoArchive.read(f"bento/{good.name}")) is True
    assert (tmp_path / "store" / "bentos" / deploy_bentos["good"]["bento_tag"].split(":")[0]).is_dir()


def test_a_crash_loop_is_read_from_the_server_log(tmp_path):
    server = BentoServer("image-classifier:yp6", {}, tmp_path / "serve.log", tmp_path)
    assert server.crashes() == 0  # no log yet
    server.log_path.write_text(CRASHING_LOG)
    assert server.crashes() == 1  # one crash, though logged twice
    server.log_path.write_text(CRASHING_LOG + SECOND_CRASH)
    assert server.crashes() == 2
    lines = server.last_lines()
    assert (
        lines[-1]
        == "2026-12-05T02:16:01+0000 [ERROR] [entry_service:image_classifier:1] Application startup failed. Exiting."
    )
    assert lines[-2].startswith("onnxruntime.capi.onnxruntime_pybind11_state.InvalidProtobuf")
    assert not any(set(line.strip()) <= {"^"} for line in lines)


def test_make_serve_with_nothing_deployed_says_what_to_run(tmp_path, capsys):
    assert main(["serve", "--state-dir", str(tmp_path)]) == 1
    assert "nothing is deployed locally as 'image-classifier'" in capsys.readouterr().err
    assert main(["show", "--state-dir", str(tmp_path)]) == 1
