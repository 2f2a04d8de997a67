"""The launcher core running TrainJobs against the fake API server with Kubeflow Trainer and JobSet
(tests/support/fake_trainjob.py): the lifecycle as TrainJob really behaves."""

from __future__ import annotations

import signal
import subprocess
import sys
import textwrap
import time

import pytest

from components.common.kube.api import KubernetesApiError, RetryPolicy
from components.common.kube.jobs import KubernetesJobClient
from components.common.kube.runner import JobFailed, JobNotStarted, JobQueued, JobTimedOut, run_job
from components.trainjob_train.kind import TRAINJOB
from components.trainjob_train.manifest import TrainJobConfig, build_manifest, training_command
from tests.support.fake_jobs import Step
from tests.support.fake_kube import RESET, FakeKube, Fault, image_pull_backoff, unschedulable
from tests.support.fake_trainjob import KubeflowTrainer

NAME = "train-abc123"
JOBS = "/apis/trainer.kubeflow.org/v1alpha1/namespaces/team-a/trainjobs"
FAST_RETRY = RetryPolicy(budget_seconds=5, first_delay_seconds=0.01, max_delay_seconds=0.05)


def manifest(release="2.3", **settings):
    config = TrainJobConfig(
        image="registry.example.com/train:0.1.0", command=training_command(), trainer_release=release, **settings
    )
    return build_manifest(config, NAME, "team-a", ["--epochs", "1"])


@pytest.fixture(params=["2.3", "2.1"])
def trainer(request):
    return KubeflowTrainer(release=request.param)


@pytest.fixture
def kube(trainer):
    server = FakeKube([trainer]).start()
    yield server
    server.stop()


def launch(kube, trainer, timeout=30.0, lines=None, body=None, **kwargs):
    lines = [] if lines is None else lines
    handle = run_job(
        KubernetesJobClient(kube.api_client(), TRAINJOB, retry=FAST_RETRY),
        body or manifest(trainer.release),
        timeout_seconds=timeout,
        poll_seconds=0.05,
        echo=lines.append,
        **kwargs,
    )
    return handle, lines


def phases(lines):
    return [line.split(": ")[1].split(" ")[0].rstrip(";") for line in lines if line.startswith(f"TrainJob {NAME}: ")]


def test_a_complete_trainjob_streams_the_rank_0_node_log_and_is_deleted(kube, trainer):
    handle, lines = launch(kube, trainer)
    assert handle.kind == "TrainJob" and handle.uid and not handle.attached
    assert phases(lines) == ["Pending", "Running", "Complete"]
    assert any("Complete (AllJobsCompleted: jobset completed successfully)" in line for line in lines)
    rank0 = trainer.pod_name(trainer.objects[("team-a", NAME)], 0)
    assert f"[{rank0}] training finished" in lines  # the node container of the pod with completion index 0
    assert kube.count("DELETE", f"{JOBS}/{NAME}") == 1
    assert trainer.objects[("team-a", NAME)].deleted


def test_the_log_comes_from_the_node_container_even_beside_sidecars(trainer):
    server = FakeKube([trainer], sidecars=["istio-proxy"]).start()
    try:
        _, lines = launch(server, trainer)
    finally:
        server.stop()
    assert any(line.endswith("] training finished") for line in lines)
    assert all("container=node" in r.query for r in server.requests if r.path.endswith("/log"))


def test_a_failed_trainjob_fails_with_jobsets_reason_the_log_tail_and_the_events(kube, trainer):
    trainer.script = [Step(0, "Pending"), Step(0.1, "Running"), Step(0.4, "Failed")]
    trainer.log_lines = ["epoch 1/3", "RuntimeError: CUDA out of memory"]
    with pytest.raises(JobFailed) as raised:
        launch(kube, trainer)
    message = str(raised.value)
    assert f"TrainJob team-a/{NAME} failed: FailedJobs: jobset failed due to one or more job failures" in message
    assert "CUDA out of memory" in message
    assert f"Job {NAME}-node-0: BackoffLimitExceeded: Job has reached the specified backoff limit" in message
    assert f"JobSet {NAME}: FailedJobs" in message
    assert trainer.objects[("team-a", NAME)].deleted


def test_a_missing_runtime_is_named_when_the_webhook_refuses_the_trainjob(kube, trainer):
    trainer.runtimes.clear()
    with pytest.raises(KubernetesApiError) as raised:
        launch(kube, trainer)
    message = str(raised.value)
    assert "admission webhook refused it" in message and "lacks the permission" not in message
    assert "must be created before the TrainJob is created" in message
    assert "The training runtime ClusterTrainingRuntime 'torch-distributed' is missing or unsupported" in message
    assert not trainer.created


def test_a_missing_runtime_without_the_webhook_is_reported_from_its_events(kube, trainer):
    trainer.webhook = False
    trainer.runtimes.clear()
    with pytest.raises(JobNotStarted) as raised:
        launch(kube, trainer, scheduling_timeout_seconds=0.3)
    message = str(raised.value)
    assert "No pods were created" in message
    assert (
        f"TrainJob {NAME}: TrainJobResourcesCreationFailed: TrainJob resources reconciliation failed: not found "
        'ClusterTrainingRuntime specified in TrainJob: clustertrainingruntimes.trainer.kubeflow.org "torch-distributed"'
        " not found" in message
    )
    assert trainer.objects[("team-a", NAME)].deleted


def test_an_unsupported_runtime_fails_naming_the_runtime(kube, trainer):
    trainer.webhook = False
    trainer.runtime_kinds = {"ClusterTrainingRuntime"}  # the registry has no TrainingRuntime
    with pytest.raises(JobFailed) as raised:
        launch(kube, trainer, body=manifest(trainer.release, runtime="team-runtime", runtime_kind="TrainingRuntime"))
    message = str(raised.value)
    assert "failed: TrainingRuntimeNotSupported: unsupported runtime: TrainingRuntime.trainer.kubeflow.org" in message
    assert "The training runtime TrainingRuntime 'team-runtime' is missing or unsupported" in message
    assert "kubectl get trainingruntimes -n team-a" in message


def test_a_trainjob_held_by_kueue_waits_in_its_queue_and_is_running_once_resumed(kube, trainer):
    trainer.script = [
        Step(0, "Suspended"),  # Kueue's webhook suspends a queued job at creation
        Step(0.6, "Resumed"),  # admitted: longer in the queue than the scheduling timeout
        Step(0.8, "Running"),
        Step(1.0, "Complete"),
    ]
    _, lines = launch(kube, trainer, body=manifest(trainer.release, queue_name="gpu-queue"),
                      scheduling_timeout_seconds=0.4, queue_timeout_seconds=5)  # fmt: skip
    assert phases(lines) == ["Suspended", "Resumed", "Running", "Complete"]  # never "Created" once resumed
    (waiting,) = [line for line in lines if line.startswith(f"TrainJob {NAME}: Suspended")]
    assert "(Suspended: TrainJob is suspended); waiting in Kueue's queue 'gpu-queue'" in waiting
    assert "not failed and is not stuck" in waiting


def test_a_trainjob_left_in_the_queue_fails_after_the_queue_timeout(kube, trainer):
    trainer.script = [Step(0, "Suspended")]
    with pytest.raises(JobQueued, match=r"still suspended after queue_timeout_seconds=0.3, waiting in Kueue's queue "):
        launch(kube, trainer, body=manifest(trainer.release, queue_name="gpu-queue"), queue_timeout_seconds=0.3)
    assert trainer.objects[("team-a", NAME)].deleted


def test_pods_that_never_start_fail_with_their_reasons_and_events(kube, trainer):
    trainer.script = [Step(0, "Pending")]
    trainer.pending_pods = {"node": unschedulable()}
    with pytest.raises(JobNotStarted) as raised:
        launch(kube, trainer, scheduling_timeout_seconds=0.3)
    message = str(raised.value)
    rank0 = trainer.pod_name(trainer.objects[("team-a", NAME)], 0)
    assert f"{rank0} (Pending): Unschedulable: 0/3 nodes are available: 3 Insufficient nvidia.com/gpu." in message
    assert f"Pod {rank0}: FailedScheduling: 0/3 nodes are available" in message


def test_an_image_that_cannot_be_pulled_is_named(kube, trainer):
    trainer.script = [Step(0, "Pending")]
    trainer.pending_pods = {"node": image_pull_backoff("registry.example.com/train:0.1.0", container="node")}
    with pytest.raises(JobNotStarted, match=r"container node ImagePullBackOff: Back-off pulling image"):
        launch(kube, trainer, scheduling_timeout_seconds=0.3)


def test_a_retried_step_reattaches_to_its_trainjob(kube, trainer):
    KubernetesJobClient(kube.api_client(), TRAINJOB).create(manifest(trainer.release))
    handle, lines = launch(kube, trainer)
    assert handle.attached and any("re-attached" in line for line in lines)


def test_a_failed_trainjob_of_an_earlier_attempt_is_replaced(kube, trainer):
    trainer.script = [Step(0, "Pending"), Step(0, "Failed")]
    KubernetesJobClient(kube.api_client(), TRAINJOB).create(manifest(trainer.release))
    trainer.script = [Step(0, "Pending"), Step(0.1, "Running"), Step(0.3, "Complete")]
    _, lines = launch(kube, trainer)
    assert any("of an earlier attempt Failed (FailedJobs" in line for line in lines)
    assert len(trainer.created) == 2


@pytest.mark.parametrize(
    "fault", [Fault("GET", f"/trainjobs/{NAME}", 503, times=3), Fault("GET", f"/trainjobs/{NAME}", RESET)]
)
def test_transient_errors_are_retried_and_the_trainjob_lives_on(kube, trainer, fault):
    kube.inject(fault)
    _, lines = launch(kube, trainer)
    assert phases(lines)[-1] == "Complete"


def test_the_timeout_deletes_the_trainjob(kube, trainer):
    trainer.script = [Step(0, "Pending"), Step(0.1, "Running")]
    with pytest.raises(JobTimedOut, match=r"did not succeed within timeout_seconds=0.5 \(last phase Running\)"):
        launch(kube, trainer, timeout=0.5)
    assert kube.count("DELETE", f"{JOBS}/{NAME}") == 1


def test_a_cluster_without_trainer_is_told_so_with_the_alternative():
    server = FakeKube([]).start()
    try:
        with pytest.raises(KubernetesApiError) as raised:
            launch(server, KubeflowTrainer())
    finally:
        server.stop()
    message = str(raised.value)
    assert "this cluster serves no TrainJob (trainer.kubeflow.org/v1alpha1), so Kubeflow Trainer" in message
    assert "launcher=pytorchjob" in message and "launcher=auto" in message


SIGTERM_SCRIPT = textwrap.dedent(
    """
    import sys
    from kubernetes import client
    from components.common.kube.api import RetryPolicy
    from components.common.kube.jobs import KubernetesJobClient
    from components.common.kube.runner import run_job
    from components.trainjob_train.kind import TRAINJOB
    from components.trainjob_train.manifest import TrainJobConfig, build_manifest, training_command

    configuration = client.Configuration()
    configuration.host = sys.argv[1]
    config = TrainJobConfig(image="img:1", command=training_command(), trainer_release=sys.argv[2])
    manifest = build_manifest(config, "train-abc123", "team-a", [])
    run_job(KubernetesJobClient(client.ApiClient(configuration), TRAINJOB, retry=RetryPolicy(budget_seconds=30)),
            manifest, timeout_seconds=120, on_created=lambda h: print("CREATED", flush=True), poll_seconds=0.1,
            echo=lambda l: print(l, flush=True))
    """
)


def test_sigterm_deletes_the_trainjob_its_only_cleanup(kube, trainer):
    """TrainJob has no TTL (kubeflow/trainer#2899): a terminated run's step must delete it itself."""
    trainer.script = [Step(0, "Pending"), Step(0.1, "Running")]
    process = subprocess.Popen(
        [sys.executable, "-c", SIGTERM_SCRIPT, kube.url, trainer.release],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    for line in process.stdout:
        if line.startswith("CREATED"):
            break
    time.sleep(0.3)
    process.send_signal(signal.SIGTERM)
    output = process.communicate(timeout=30)[0]
    assert process.returncode != 0
    assert "StepTerminated" in output and f"deleted TrainJob team-a/{NAME}" in output
    assert trainer.objects[("team-a", NAME)].deleted
    assert not kube.pods("team-a", time.monotonic() + 1)  # the deletion cascades to the JobSet's pods
