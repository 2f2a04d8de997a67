"""The launcher against a Kubernetes API server on 127.0.0.1 (tests/support/fake_kube.py)."""

from __future__ import annotations

import signal
import subprocess
import sys
import textwrap
import time

import pytest

from components.common.kube.api import KubernetesApiError, RetryPolicy
from components.common.kube.jobs import KubernetesJobClient
from components.common.kube.runner import JobFailed, JobNotStarted, JobQueued, JobTimedOut, job_name, run_job
from components.common.kube.values import validate_name
from components.pytorchjob_train.kind import PYTORCHJOB
from components.pytorchjob_train.manifest import PyTorchJobConfig, build_manifest, training_command
from tests.support.fake_jobs import Step
from tests.support.fake_kube import RESET, FakeKube, Fault, image_pull_backoff, unschedulable
from tests.support.fake_pytorchjob import TrainingOperator

JOBS = "/apis/kubeflow.org/v1/namespaces/team-a/pytorchjobs"
JOB = f"{JOBS}/train-abc123"
FAST_RETRY = RetryPolicy(budget_seconds=5, first_delay_seconds=0.01, max_delay_seconds=0.05)


def manifest(name="train-abc123"):
    config = PyTorchJobConfig(image="registry.example.com/train:0.1.0", command=training_command(1))
    return build_manifest(config, name, "team-a", ["--epochs", "1"])


@pytest.fixture
def operator():
    return TrainingOperator()


@pytest.fixture
def kube(operator):
    server = FakeKube([operator]).start()
    yield server
    server.stop()


def launch(kube, timeout=30.0, retry=FAST_RETRY, lines=None, **kwargs):
    lines, handles = ([] if lines is None else lines), []
    handle = run_job(
        KubernetesJobClient(kube.api_client(), PYTORCHJOB, retry=retry),
        manifest(),
        timeout_seconds=timeout,
        on_created=handles.append,
        poll_seconds=0.05,
        echo=lines.append,
        **kwargs,
    )
    return handle, handles, lines


def test_succeeded_job_streams_logs_reports_phases_and_is_deleted(kube, operator):
    handle, handles, lines = launch(kube)
    assert handles == [handle] and not handle.attached and handle.uid
    assert kube.count("POST", JOBS) == 1
    assert any("Running" in line for line in lines) and any("Succeeded" in line for line in lines)
    assert "[train-abc123-master-0] training finished" in lines
    assert kube.count("DELETE", f"{JOBS}/train-abc123") == 1
    assert operator.objects[("team-a", "train-abc123")].deleted


def test_retry_reattaches_to_the_existing_job(kube, operator):
    client = KubernetesJobClient(kube.api_client(), PYTORCHJOB)
    client.create(manifest())  # an earlier attempt of the step created it, then its pod died
    handle, _, lines = launch(kube)
    assert handle.attached
    assert len([k for k in operator.objects]) == 1 and kube.count("POST", JOBS) == 2  # the second POST got 409
    assert any("re-attached" in line for line in lines)


def test_failed_job_fails_the_step_with_reason_and_log_tail(kube, operator):
    operator.script = [Step(0, "Created"), Step(0.1, "Running"), Step(0.5, "Failed", "OOMKilled", "master-0 exit 137")]
    operator.log_lines = ["epoch 1/3", "RuntimeError: CUDA out of memory"]
    with pytest.raises(JobFailed, match=r"(?s)failed: OOMKilled: master-0 exit 137.*CUDA out of memory"):
        launch(kube)
    assert operator.objects[("team-a", "train-abc123")].deleted


def test_timeout_deletes_the_job_and_fails(kube, operator):
    operator.script = [Step(0, "Created"), Step(0.1, "Running")]  # never finishes
    with pytest.raises(JobTimedOut, match=r"did not succeed within timeout_seconds=0.5 \(last phase Running\)"):
        launch(kube, timeout=0.5)
    assert kube.count("DELETE", f"{JOBS}/train-abc123") == 1


SIGTERM_SCRIPT = textwrap.dedent(
    """
    import sys
    from kubernetes import client
    from components.common.kube.api import RetryPolicy
    from components.common.kube.jobs import KubernetesJobClient
    from components.common.kube.runner import run_job
    from components.pytorchjob_train.kind import PYTORCHJOB
    from components.pytorchjob_train.manifest import PyTorchJobConfig, build_manifest, training_command

    configuration = client.Configuration()
    configuration.host = sys.argv[1]
    manifest = build_manifest(
        PyTorchJobConfig(image="img:1", command=training_command(1)), "train-abc123", "team-a", []
    )
    retry = RetryPolicy(budget_seconds=30, first_delay_seconds=float(sys.argv[2]))
    run_job(KubernetesJobClient(client.ApiClient(configuration), PYTORCHJOB, retry=retry), manifest,
            timeout_seconds=120, on_created=lambda h: print("CREATED", flush=True), poll_seconds=0.1,
            echo=lambda l: print(l, flush=True))
    """
)


def start_step(kube, first_retry_delay=0.05):
    return subprocess.Popen(
        [sys.executable, "-c", SIGTERM_SCRIPT, kube.url, str(first_retry_delay)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def test_sigterm_deletes_the_job(kube, operator):
    operator.script = [Step(0, "Created"), Step(0.1, "Running")]
    process = start_step(kube)
    for line in process.stdout:
        if line.startswith("CREATED"):
            break
    time.sleep(0.3)
    process.send_signal(signal.SIGTERM)
    output = process.communicate(timeout=30)[0]
    assert process.returncode != 0
    assert "StepTerminated" in output and "deleted PyTorchJob team-a/train-abc123" in output
    assert operator.objects[("team-a", "train-abc123")].deleted


def test_job_names_are_dns_labels_unique_per_run_and_stable_per_task():
    first = job_name("run-1", "pytorchjob-train")
    assert first == job_name("run-1", "pytorchjob-train")
    assert first != job_name("run-2", "pytorchjob-train")
    assert len(job_name("r" * 100, "T" * 100)) <= 63
    validate_name(first)


def test_job_names_tell_parallelfor_iterations_apart():
    """Every iteration of a ParallelFor has the run id and task name; KFP's task id differs."""
    names = {job_name("run-1", "pytorchjob-train", task_id) for task_id in ("17", "18", "19")}
    assert len(names) == 3
    assert job_name("run-1", "pytorchjob-train", "17") == job_name("run-1", "pytorchjob-train", "17")  # retries
    for name in [*names, job_name("9" * 100, "9-Task_" * 20, "u" * 100)]:
        assert len(name) <= 63
        validate_name(name)  # a DNS-1035 label: a letter first


# --- the API server misbehaving ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "fault",
    [
        Fault("GET", JOB, 500),
        Fault("GET", JOB, 503, times=2),
        Fault("GET", JOB, 429, retry_after=0, times=5),  # urllib3 retries 3 times on Retry-After itself, then gives up
        Fault("GET", JOB, RESET, times=6),  # beyond urllib3's own 3 retries
    ],
    ids=["500", "503-twice", "429-retry-after", "resets"],
)
def test_transient_errors_while_waiting_are_retried_and_the_job_lives_on(kube, operator, fault):
    operator.script = [Step(0, "Created"), Step(0.1, "Running"), Step(0.4, "Succeeded")]
    kube.inject(fault)
    handle, _, lines = launch(kube)
    assert fault.times == 0 and not handle.attached
    assert any("Succeeded" in line for line in lines)
    assert kube.count("DELETE", JOB) == 1 and len(operator.created) == 1


def test_a_create_whose_reply_was_lost_is_not_created_twice(kube, operator):
    kube.inject(Fault("POST", JOBS, RESET, carried_out=True))  # the job was created, the reply never came
    launch(kube)
    assert kube.count("POST", JOBS) == 2 and len(operator.created) == 1  # the second POST found it (409)
    assert operator.objects[("team-a", "train-abc123")].deleted


def test_transient_errors_that_persist_fail_the_step_naming_them(kube, operator):
    operator.script = [Step(0, "Created"), Step(0.1, "Running")]
    kube.inject(Fault("GET", JOB, 503, times=1000))
    retry = RetryPolicy(budget_seconds=0.5, first_delay_seconds=0.05, max_delay_seconds=0.1)
    with pytest.raises(
        KubernetesApiError,
        match=r"could not get pytorchjobs.kubeflow.org in namespace team-a: "
        r"HTTP 503 Service Unavailable.*still failing after \d+ attempts",
    ):
        launch(kube, retry=retry)
    assert operator.objects[("team-a", "train-abc123")].deleted  # the cleanup got through: DELETE is not faulty


@pytest.mark.parametrize(
    "fault, message",
    [
        (
            Fault("GET", JOB, 403),
            r"could not get pytorchjobs.kubeflow.org in namespace team-a: the step's ServiceAccount lacks the "
            r"permission to get pytorchjobs.kubeflow.org \(HTTP 403 Forbidden: .*cannot get resource "
            r"\"pytorchjobs\".*apiGroups \['kubeflow.org'\], resources \['pytorchjobs'\], verbs \['get'\]",
        ),
        (Fault("GET", JOB, 404), r"PyTorchJob team-a/train-abc123 disappeared while the step waited for it"),
    ],
    ids=["403", "404"],
)
def test_persistent_errors_fail_at_once_naming_them(kube, operator, fault, message):
    operator.script = [Step(0, "Created"), Step(0.1, "Running")]
    kube.inject(fault)
    with pytest.raises((KubernetesApiError, JobFailed), match=message):
        launch(kube)
    assert kube.count("GET", JOB) == 1  # not retried


def test_a_forbidden_create_names_the_missing_permission_and_creates_nothing(kube, operator):
    kube.inject(Fault("POST", JOBS, 403))
    with pytest.raises(KubernetesApiError, match=r"lacks the permission to create pytorchjobs.kubeflow.org"):
        launch(kube)
    assert kube.count("POST", JOBS) == 1 and not operator.created


# --- a job of the same name from an earlier attempt ------------------------------------------------------------


def test_a_job_still_being_deleted_is_waited_out_and_a_new_one_created(kube, operator):
    kube.deletion_seconds = 0.6  # its pods take this long to terminate: a foreground deletion lingers
    client = KubernetesJobClient(kube.api_client(), PYTORCHJOB, retry=FAST_RETRY)
    operator.script = [Step(0, "Created"), Step(0, "Running")]  # the earlier attempt's job, running when deleted
    client.create(manifest())
    client.delete("train-abc123", "team-a")
    operator.script = [Step(0, "Created"), Step(0.1, "Running"), Step(0.3, "Succeeded")]
    handle, _, lines = launch(kube)
    assert not handle.attached and len(operator.created) == 2
    assert handle.uid == operator.created[1].body["metadata"]["uid"]
    assert any("of an earlier attempt is being deleted" in line for line in lines)
    assert kube.count("POST", JOBS) == 3  # the first one's, the launcher's refused (409), the new one


def test_a_failed_job_of_an_earlier_attempt_is_replaced_not_reported(kube, operator):
    client = KubernetesJobClient(kube.api_client(), PYTORCHJOB, retry=FAST_RETRY)
    operator.script = [Step(0, "Created"), Step(0, "Failed", "OOMKilled", "the earlier attempt's failure")]
    client.create(manifest())  # the step that created it was killed before it could delete it
    operator.script = [Step(0, "Created"), Step(0.1, "Running"), Step(0.3, "Succeeded")]
    handle, _, lines = launch(kube)
    assert not handle.attached and len(operator.created) == 2 and operator.created[0].deleted
    assert any("of an earlier attempt Failed (OOMKilled" in line for line in lines)


# --- pods that never start --------------------------------------------------------------------------------------


def test_pods_that_never_start_fail_the_step_with_their_reasons(kube, operator):
    operator.script = [Step(0, "Created")]
    operator.pending_pods = {
        "master": unschedulable(),
        "worker": image_pull_backoff("registry.example.com/train:0.1.0"),
    }
    with pytest.raises(JobNotStarted) as raised:
        launch(kube, timeout=5, scheduling_timeout_seconds=0.3)
    message = str(raised.value)
    assert "did not start within scheduling_timeout_seconds=0.3" in message
    assert (
        "train-abc123-master-0 (Pending): Unschedulable: 0/3 nodes are available: 3 Insufficient nvidia.com/gpu."
        in message
    )
    assert (
        'train-abc123-worker-0 (Pending): container pytorch ImagePullBackOff: Back-off pulling image "registry'
        in message
    )
    assert operator.objects[("team-a", "train-abc123")].deleted


def test_a_suspended_job_stops_the_scheduling_clock(kube, operator):
    """Kueue holds a job back by suspending it: it has no pods to schedule until it is resumed."""
    operator.script = [Step(0, "Created"), Step(0.05, "Suspended"), Step(0.7, "Running"), Step(0.9, "Succeeded")]
    _, _, lines = launch(kube, scheduling_timeout_seconds=0.4)
    assert [line.split(": ")[1].split(" ")[0] for line in lines if line.startswith("PyTorchJob train-abc123: ")] == [
        "Created",
        "Suspended",
        "Running",
        "Succeeded",
    ]


def test_the_scheduling_clock_starts_afresh_when_a_suspended_job_is_resumed(kube, operator):
    """Held by Kueue longer than the scheduling timeout, then resumed: its pods get the whole timeout again."""
    operator.script = [
        Step(0, "Created"),
        Step(0.05, "Suspended"),  # suspended for 0.7 s: longer than the scheduling timeout
        Step(0.75, "Created"),  # resumed; its pods wait 0.25 s to start: within the timeout
        Step(1.0, "Running"),
        Step(1.2, "Succeeded"),
    ]
    _, _, lines = launch(kube, scheduling_timeout_seconds=0.4)
    assert [line.split(": ")[1].split(" ")[0] for line in lines if line.startswith("PyTorchJob train-abc123: ")] == [
        "Created",
        "Suspended",
        "Created",
        "Running",
        "Succeeded",
    ]


def test_a_restarting_job_is_followed_to_the_end(kube, operator):
    operator.script = [
        Step(0, "Created"),
        Step(0.1, "Running"),
        Step(0.3, "Restarting", "PyTorchJobRestarting", "master-0 exited 1; restarting"),
        Step(0.5, "Running"),
        Step(0.7, "Succeeded"),
    ]
    _, _, lines = launch(kube, scheduling_timeout_seconds=0.2)
    assert any("Restarting (PyTorchJobRestarting: master-0 exited 1; restarting)" in line for line in lines)
    assert any("Succeeded" in line for line in lines)


def test_the_newest_condition_is_told_by_its_timestamp_not_its_place_in_the_list():
    job = {
        "status": {
            "conditions": [
                {"type": "Running", "status": "True", "lastTransitionTime": "2025-01-01T10:05:00Z"},
                {"type": "Created", "status": "True", "lastTransitionTime": "2025-01-01T10:00:00Z"},
            ]
        }
    }
    assert PYTORCHJOB.phase(job)[0] == "Running"


# --- the master's log -------------------------------------------------------------------------------------------


def test_a_log_stream_that_ends_while_the_job_runs_is_reopened_without_repeating_lines(kube, operator):
    kube.log_stream_seconds = 0.3  # the API server ends every stream after this long (a log rotation, a proxy)
    operator.script = [Step(0, "Created"), Step(0.1, "Running"), Step(1.4, "Succeeded")]
    operator.log_lines = [(0.15, "epoch 1"), (0.15, "epoch 1 loss 0.5"), (0.6, "epoch 2"), (1.2, "epoch 3")]
    _, _, lines = launch(kube)
    echoed = [line for line in lines if line.startswith("[train-abc123-master-0]")]
    assert echoed == [
        f"[train-abc123-master-0] {text}" for text in ("epoch 1", "epoch 1 loss 0.5", "epoch 2", "epoch 3")
    ]


def test_the_log_names_its_container_when_the_pod_has_several(kube):
    kube.sidecars = ["fluent-bit"]  # injected by a mutating webhook
    _, _, lines = launch(kube)
    assert "[train-abc123-master-0] training finished" in lines


# --- SIGTERM ------------------------------------------------------------------------------------------------------


def test_sigterm_while_the_create_is_in_flight_leaves_no_job(kube, operator):
    kube.inject(Fault("POST", JOBS, delay=1.0))  # the API server takes its time; the job appears only then
    process = start_step(kube)
    kube.wait_for(lambda: kube.count("POST", JOBS) == 1)
    time.sleep(0.1)
    process.send_signal(signal.SIGTERM)
    output = process.communicate(timeout=30)[0]
    kube.wait_for(lambda: len(operator.created) == 1)
    assert process.returncode != 0 and "StepTerminated" in output
    assert operator.created[0].deleted, output
    assert "confirmed: PyTorchJob team-a/train-abc123 is being deleted" in output


def test_a_second_sigterm_does_not_cut_the_cleanup_short(kube, operator):
    operator.script = [Step(0, "Created"), Step(0.1, "Running")]
    kube.inject(Fault("DELETE", JOB, 503))  # the first DELETE fails: the cleanup waits, then retries
    process = start_step(kube, first_retry_delay=1.0)
    for line in process.stdout:
        if line.startswith("CREATED"):
            break
    process.send_signal(signal.SIGTERM)
    kube.wait_for(lambda: kube.count("DELETE", JOB) == 1)
    process.send_signal(signal.SIGTERM)  # Kubernetes, or an impatient user, again
    output = process.communicate(timeout=30)[0]
    assert "WARNING: could not delete" not in output
    assert operator.objects[("team-a", "train-abc123")].deleted, output


def test_after_a_signal_a_job_that_appeared_after_the_delete_is_deleted_too(kube, operator):
    operator.script = [Step(0, "Created"), Step(0.1, "Running")]
    # The DELETE reaches the API server before a create still on its way commits: "not found", then it is there.
    kube.inject(Fault("DELETE", JOB, 404))
    process = start_step(kube)
    for line in process.stdout:
        if line.startswith("CREATED"):
            break
    process.send_signal(signal.SIGTERM)
    output = process.communicate(timeout=30)[0]
    assert "which appeared after the first delete" in output
    assert kube.count("DELETE", JOB) == 2 and operator.objects[("team-a", "train-abc123")].deleted, output


def test_a_cluster_without_the_kind_is_told_so_with_the_alternative():
    """A fresh Kubeflow install serves TrainJob, not PyTorchJob: the API server answers the POST 404."""
    server = FakeKube([]).start()
    try:
        with pytest.raises(KubernetesApiError) as raised:
            launch(server)
    finally:
        server.stop()
    message = str(raised.value)
    assert message.startswith("could not create pytorchjobs.kubeflow.org in namespace team-a: this cluster serves no ")
    assert "PyTorchJob (kubeflow.org/v1), so the Training Operator is not installed" in message
    assert "launcher=trainjob" in message and "launcher=auto" in message
    assert "HTTP 404" not in message


def test_a_failure_carries_the_warning_events_about_the_job_and_its_pods(kube, operator):
    operator.script = [Step(0, "Created"), Step(0.1, "Running"), Step(0.4, "Failed", "Failed", "master failed")]
    involved = {"kind": "Pod", "namespace": "team-a", "name": "train-abc123-master-0", "uid": "u"}
    kube.record_event(involved, "BackOff", "Back-off restarting failed container pytorch", type="Warning")
    kube.record_event(involved, "Pulled", "Container image already present on machine")  # Normal: left out
    kube.record_event({**involved, "name": "someone-else"}, "BackOff", "not ours", type="Warning")
    with pytest.raises(JobFailed) as raised:
        launch(kube)
    message = str(raised.value)
    assert (
        "Warning Events:\n  Pod train-abc123-master-0: BackOff: Back-off restarting failed container pytorch" in message
    )
    assert "already present" not in message and "not ours" not in message


def test_a_job_suspended_in_a_kueue_queue_is_said_to_wait_there(kube, operator):
    operator.script = [Step(0, "Created"), Step(0.05, "Suspended"), Step(0.5, "Running"), Step(0.7, "Succeeded")]
    queued = manifest()
    queued["metadata"]["labels"]["kueue.x-k8s.io/queue-name"] = "gpu-queue"
    lines = []
    run_job(
        KubernetesJobClient(kube.api_client(), PYTORCHJOB, retry=FAST_RETRY),
        queued,
        timeout_seconds=30,
        poll_seconds=0.05,
        echo=lines.append,
        queue_timeout_seconds=5,
    )
    (suspended,) = [line for line in lines if line.startswith("PyTorchJob train-abc123: Suspended")]
    assert "waiting in Kueue's queue 'gpu-queue': it has not failed and is not stuck" in suspended


def test_a_job_held_in_the_queue_past_the_queue_timeout_fails_naming_the_queue(kube, operator):
    operator.script = [Step(0, "Created"), Step(0.05, "Suspended")]  # never admitted
    queued = manifest()
    queued["metadata"]["labels"]["kueue.x-k8s.io/queue-name"] = "gpu-queue"
    client = KubernetesJobClient(kube.api_client(), PYTORCHJOB, retry=FAST_RETRY)
    with pytest.raises(JobQueued, match=r"still suspended after queue_timeout_seconds=0.3, waiting in Kueue's "):
        run_job(client, queued, timeout_seconds=30, poll_seconds=0.05, echo=lambda _: None, queue_timeout_seconds=0.3)
    assert operator.objects[("team-a", "train-abc123")].deleted
