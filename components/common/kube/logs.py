"""Following the log of a job's master pod into the step's own, across streams that end while the job runs."""

from __future__ import annotations

import collections
import logging
import re
import threading
from collections.abc import Callable

from components.common.kube.jobs import KubernetesJobClient

log = logging.getLogger(__name__)

LOG_TIMESTAMP = re.compile(r"^(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)(?:\.(\d{1,9}))?Z$")


def _sortable(timestamp: str) -> str | None:
    """The kubelet's RFC 3339 timestamp with its fraction padded to nanoseconds (it trims trailing zeros, so the
    raw strings do not sort); None for anything else."""
    match = LOG_TIMESTAMP.match(timestamp)
    return f"{match[1]}.{(match[2] or '').ljust(9, '0')}" if match else None


class LogPosition:
    """Where a reopened log stream picks up, so that no line is echoed twice.

    The log is read with timestamps=true and a reopened stream starts again from the container's first line:
    lines older than the last one echoed are skipped, and of those that share its timestamp, as many as were
    echoed already. A new pod (another node, another clock) starts afresh.
    """

    def __init__(self) -> None:
        self.pod_uid: str | None = None
        self.last = ""
        self.echoed_at_last = 0
        self._skip_at_last = 0

    def open(self, pod_uid: str) -> None:
        if pod_uid != self.pod_uid:
            self.pod_uid, self.last, self.echoed_at_last = pod_uid, "", 0
        self._skip_at_last = self.echoed_at_last

    def new_text(self, line: str) -> str | None:
        """The line's text when it was not echoed yet, else None."""
        stamp, _, text = line.partition(" ")
        key = _sortable(stamp)
        if key is None:  # no timestamp to compare: better twice than never
            return line
        if key < self.last:
            return None
        if key == self.last:
            if self._skip_at_last:
                self._skip_at_last -= 1
                return None
            self.echoed_at_last += 1
            return text
        self.last, self.echoed_at_last, self._skip_at_last = key, 1, 0
        return text


class LogFollower(threading.Thread):
    """Streams the master's log into ours, keeping the last lines for error messages.

    A stream that ends while the job is not finished (a log rotation, the API server or a proxy closing it, a
    container restart) is reopened; once the job is finished, the follower reads what is left and stops.
    """

    def __init__(
        self, client: KubernetesJobClient, name: str, namespace: str, poll: float, echo: Callable[[str], None]
    ):
        super().__init__(daemon=True, name=f"logs-{name}")
        self.client, self.name, self.namespace, self.poll, self.echo = client, name, namespace, poll, echo
        self.tail: collections.deque[str] = collections.deque(maxlen=30)
        self.stopped = threading.Event()
        self.job_finished = threading.Event()
        self.position = LogPosition()

    def run(self) -> None:
        while not self.stopped.is_set():
            last_read = self.job_finished.is_set()
            try:
                pod = self.client.master_pod(self.name, self.namespace)
                if pod is not None:
                    self._read(pod)
            except Exception as error:  # the pod may not be up yet; logs are best effort
                log.debug("log follow of %s: %s", self.name, error)
            if last_read:
                return
            self.stopped.wait(self.poll)

    def _read(self, pod) -> None:
        self.position.open(pod.metadata.uid)
        for line in self.client.follow_log(pod.metadata.name, self.namespace):
            text = self.position.new_text(line)
            if text is not None:
                self.tail.append(text)
                self.echo(f"[{pod.metadata.name}] {text}")
            if self.stopped.is_set():
                return

    def finish(self, timeout: float) -> None:
        """The job is finished: let the last lines arrive, for at most ``timeout`` seconds."""
        self.job_finished.set()
        self.join(timeout=timeout)
