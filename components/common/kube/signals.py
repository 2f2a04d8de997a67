"""SIGTERM (the pipeline run being terminated) turned into ``StepTerminated``, without leaking what a step creates."""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Iterator

from components.common.kube.api import StepTerminated


class SignalGuard:
    """Turns SIGTERM into StepTerminated in the main thread, except:

    - while held (``held()``, around the request that creates an object) the signal waits until the reply is in:
      interrupted, the create could still succeed on the server after the cleanup ran, and the object would leak;
    - once disarmed (the cleanup), a signal is only noted: a second SIGTERM must not cut the deletion short.

    ``what`` names what the cleanup deletes, for the StepTerminated message.
    """

    def __init__(self, what: str):
        self.what = what
        self.received: int | None = None
        self._holding = False
        self._armed = True
        self._previous = None

    def __enter__(self) -> SignalGuard:
        if threading.current_thread() is threading.main_thread():
            self._previous = signal.signal(signal.SIGTERM, self._on_signal)
        return self

    def __exit__(self, error_type, error, traceback) -> None:
        if self._previous is not None:
            signal.signal(signal.SIGTERM, self._previous)
        if self.received is not None and error_type is None:  # the signal came during the cleanup of a success
            raise self._terminated()

    def _on_signal(self, signum, _frame) -> None:
        self.received = signum
        if self._armed and not self._holding:
            raise self._terminated()

    @contextlib.contextmanager
    def held(self) -> Iterator[None]:
        self._holding = True
        try:
            yield
        finally:
            self._holding = False
            if self.received is not None and self._armed:
                raise self._terminated()

    def disarm(self) -> None:
        self._armed = False

    def _terminated(self) -> StepTerminated:
        return StepTerminated(f"step received signal {self.received}; {self.what} is being deleted")
