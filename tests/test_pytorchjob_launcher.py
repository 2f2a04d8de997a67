"""The launcher against a Kubernetes API server on 127.0.0.1 (tests/support/fake_kube.py)."""

from __future__ import annotations

import signal
import subprocess
import sys
import textwrap
import time

import pytest

from components.pytorchjob_train.launcher import (
    JobFailed,
    JobTimedOut,
    KubernetesJobClient,
    job_name,
    run_job,
)
from components.pytorchjob_train.manifest import PyTorchJobConfig, build_manifest, training_command, validate_name
from tests.support.fake_kube import FakeKube, Step

JOBS = "/apis/kubeflow.org/v1/namespaces/team-a/pytorchjobs"


def manifest(name="train-abc123"):
    config = PyTorchJobConfig(image="registry.example.com/train:0.1.0", command=training_command(1))
    return build_manifest(config, name, "team-a", ["--epochs", "1"])


@pytest.fixture
def kube():
    server = FakeKube().start()
    yield server
    server.stop()


def launch(kube, timeout=30.0, **kwargs):
    lines, handles = [], []
    handle = run_job(
        KubernetesJobClient(kube.api_client()),
        manifest(),
        timeout_seconds=timeout,
        on_created=handles.append,
        poll_seconds=0.05,
        echo=lines.append,
        **kwargs,
    )
    return handle, handles, lines


def test_succeeded_job_streams_logs_reports_phases_and_is_deleted(kube):
    handle, handles, lines = launch(kube)
    assert handles == [handle] and not handle.attached and handle.uid
    assert kube.count("POST", JOBS) == 1
    assert any("Running" in line for line in lines) and any("Succeeded" in line for line in lines)
    assert "[train-abc123-master-0] training finished" in lines
    assert kube.count("DELETE", f"{JOBS}/train-abc123") == 1
    assert kube.jobs[("team-a", "train-abc123")].deleted


def test_retry_reattaches_to_the_existing_job(kube):
    client = KubernetesJobClient(kube.api_client())
    client.create(manifest())  # an earlier attempt of the step created it, then its pod died
    handle, _, lines = launch(kube)
    assert handle.attached
    assert len([k for k in kube.jobs]) == 1 and kube.count("POST", JOBS) == 2  # the second POST got 409
    assert any("re-attached" in line for line in lines)


def test_failed_job_fails_the_step_with_reason_and_log_tail(kube):
    kube.script = [Step(0, "Created"), Step(0.1, "Running"), Step(0.5, "Failed", "OOMKilled", "master-0 exit 137")]
    kube.log_lines = ["epoch 1/3", "RuntimeError: CUDA out of memory"]
    with pytest.raises(JobFailed, match=r"(?s)failed: OOMKilled: master-0 exit 137.*CUDA out of memory"):
        launch(kube)
    assert kube.jobs[("team-a", "train-abc123")].deleted


def test_timeout_deletes_the_job_and_fails(kube):
    kube.script = [Step(0, "Created"), Step(0.1, "Running")]  # never finishes
    with pytest.raises(JobTimedOut, match=r"did not succeed within timeout_seconds=0.5 \(last phase Running\)"):
        launch(kube, timeout=0.5)
    assert kube.count("DELETE", f"{JOBS}/train-abc123") == 1


SIGTERM_SCRIPT = textwrap.dedent(
    """
    import sys
    from kubernetes import client
    from components.pytorchjob_train.launcher import KubernetesJobClient, run_job
    from components.pytorchjob_train.manifest import PyTorchJobConfig, build_manifest, training_command

    configuration = client.Configuration()
    configuration.host = sys.argv[1]
    manifest = build_manifest(
        PyTorchJobConfig(image="img:1", command=training_command(1)), "train-abc123", "team-a", []
    )
    run_job(KubernetesJobClient(client.ApiClient(configuration)), manifest, timeout_seconds=120,
            on_created=lambda h: print("CREATED", flush=True), poll_seconds=0.1, echo=lambda l: print(l, flush=True))
    """
)


def test_sigterm_deletes_the_job(kube):
    kube.script = [Step(0, "Created"), Step(0.1, "Running")]
    process = subprocess.Popen(
        [sys.executable, "-c", SIGTERM_SCRIPT, kube.url], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    for line in process.stdout:
        if line.startswith("CREATED"):
            break
    time.sleep(0.3)
    process.send_signal(signal.SIGTERM)
    output = process.communicate(timeout=30)[0]
    assert process.returncode != 0
    assert "StepTerminated" in output and "deleted PyTorchJob team-a/train-abc123" in output
    assert kube.jobs[("team-a", "train-abc123")].deleted


def test_job_names_are_dns_labels_unique_per_run_and_stable_per_task():
    first = job_name("run-1", "pytorchjob-train")
    assert first == job_name("run-1", "pytorchjob-train")
    assert first != job_name("run-2", "pytorchjob-train")
    assert len(job_name("r" * 100, "T" * 100)) <= 63
    validate_name(first)
