"""The deploy step on any ``Target``: apply, wait for the rollout, verify what is served, and roll back on failure.

``run_deploy`` checks the request before anything is applied, then:

1. notes what serves now (``Target.current``);
2. applies the request. Nothing changed (the same image and settings serve already): it says so, and still
   checks that the revision is ready and verifies it;
3. waits until the new revision is rolled out, by the target's rules, until ``deadline_seconds``;
4. verifies the new revision through its URL (``verify(url)``: held-out images against evaluate's predictions);
5. on a rollout or verification failure: returns to the previous revision and waits until it is healthy again
   (with a fresh ``deadline_seconds``: a rollback must not be starved by the rollout that used up the first),
   or, for a first deployment, removes what was created unless ``keep_failed``; then raises ``DeployFailed``
   naming the cause.

A canary (``request.canary_percent`` set) is served beside the revision serving now; a failed canary is removed
(``CanaryTarget.rollback_canary``) and the stable revision left serving. ``run_promotion`` later moves all traffic
to the canary's image, verifies it and rolls back to the previous stable revision on failure.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from components.deploy.target import Applied, CanaryTarget, DeployRequest, Revision, RolloutFailed, Target


class DeployFailed(RuntimeError):
    """The step failed; the message names the cause and what became of the service (rolled back, removed, kept).
    ``result``, when the request got as far as being applied, is what the step's outputs record (``rolled_back``,
    the manifests sent, the verification that failed)."""

    def __init__(self, message: str, result: DeployResult | None = None):
        super().__init__(message)
        self.result = result


class VerificationLike(Protocol):
    """What ``run_deploy`` reads of a verification (``components.deploy.verification.Verification``)."""

    @property
    def passed(self) -> bool: ...

    def summary(self) -> str: ...


Verify = Callable[[str], VerificationLike]


@dataclass(frozen=True)
class DeployResult:
    """What the step outputs: the URL the new revision serves at, its image, the image it replaced ("" for a first
    deployment), whether anything changed, whether it was rolled back, the verification and the manifests sent."""

    url: str
    image: str
    previous_image: str
    changed: bool
    rolled_back: bool
    verification: Any
    manifests: Sequence[dict] = field(default_factory=tuple)
    canary: bool = False


def run_deploy(
    target: Target,
    request: DeployRequest,
    verify: Verify,
    keep_failed: bool = False,
    deadline_seconds: float = 600.0,
    echo: Callable[[str], None] = print,
) -> DeployResult:
    """Deploy ``request`` on ``target`` and verify it; see the module docstring. Raises ``DeployFailed``."""
    request.validate()
    _check_deadline(deadline_seconds)
    what = _what(request)
    previous = target.current()
    if request.canary:
        return _run_canary(target, request, verify, previous, deadline_seconds, echo)
    echo(f"{what}: {'serving ' + previous.image + ' (' + previous.name + ')' if previous else 'nothing serves yet'}")
    applied = target.apply(request)
    if not applied.changed:
        echo(f"{what} already serves {request.image or request.bento} with these settings: nothing changed")
    else:
        echo(
            f"{what}: applied {request.image or request.bento}; waiting for the rollout (up to {deadline_seconds:g} s)"
        )
    cause, url, verification = _roll_out_and_verify(target, applied, verify, deadline_seconds, echo)
    previous_image = previous.image if previous else ""
    if cause is None:
        echo(f"{what}: serving {request.image or request.bento} at {url}; verified: {verification.summary()}")
        return DeployResult(url, request.image, previous_image, applied.changed, False, verification,
                            applied.manifests)  # fmt: skip
    if not applied.changed:
        raise DeployFailed(f"{what}: {cause}. Nothing was changed (it already served this image), so there is "
                           "nothing to roll back to",
                           DeployResult(url, request.image, previous_image, False, False, verification,
                                        applied.manifests))  # fmt: skip
    message, rolled_back = _undo(target, applied, cause, keep_failed, deadline_seconds, echo)
    raise DeployFailed(message, DeployResult("", request.image, previous_image, True, rolled_back, verification,
                                             applied.manifests))  # fmt: skip


def run_promotion(
    target: CanaryTarget,
    request: DeployRequest,
    verify: Verify,
    deadline_seconds: float = 600.0,
    echo: Callable[[str], None] = print,
) -> DeployResult:
    """Move all traffic to the canary of ``request`` (served by ``run_deploy`` with ``canary_percent``), verify the
    promoted service, and on failure return to the stable revision that served before."""
    request.validate()
    _check_deadline(deadline_seconds)
    what = _what(request)
    previous = target.current()
    echo(f"{what}: promoting the canary {request.image} to all traffic")
    cause, url, verification = None, "", None
    try:
        url = target.promote_canary(request, time.monotonic() + deadline_seconds)
        verification = verify(url)
        if not verification.passed:
            cause = f"the promoted revision failed verification: {verification.summary()}"
    except RolloutFailed as error:
        cause = f"the promotion did not roll out: {error}"
    except Exception as error:  # the verification could not run (the service refused connections, ...)
        cause = f"the promoted revision could not be verified: {type(error).__name__}: {error}"
    if cause is None:
        echo(f"{what}: promoted {request.image} at {url}; verified: {verification.summary()}")
        return DeployResult(url, request.image, previous.image if previous else "", True, False, verification)
    if previous is None or previous.image == request.image:
        raise DeployFailed(f"{what}: {cause}; no earlier revision is recorded to roll back to")
    echo(f"{what}: {cause}; rolling back to {previous.image} ({previous.name})")
    target.rollback(previous, time.monotonic() + deadline_seconds)
    raise DeployFailed(f"{what}: {cause}. Rolled back to {previous.image} ({previous.name}), which is healthy again")


def _run_canary(
    target: Target,
    request: DeployRequest,
    verify: Verify,
    previous: Revision | None,
    deadline_seconds: float,
    echo: Callable[[str], None],
) -> DeployResult:
    what = _what(request)
    if not isinstance(target, CanaryTarget):
        raise DeployFailed(f"{what}: target {request.target} cannot serve a canary beside the current revision")
    if previous is None:
        raise DeployFailed(f"{what}: a canary needs a revision serving already, and nothing serves; deploy "
                           "without canary_percent first")  # fmt: skip
    echo(f"{what}: serving {previous.image} ({previous.name}); adding the canary {request.image} at "
         f"{request.canary_percent}% of the traffic")  # fmt: skip
    applied = target.apply(request)
    cause, url, verification = _roll_out_and_verify(target, applied, verify, deadline_seconds, echo)
    if cause is None:
        echo(f"{what}: canary {request.image} at {request.canary_percent}% serves at {url}; verified: "
             f"{verification.summary()}")  # fmt: skip
        return DeployResult(url, request.image, previous.image, applied.changed, False, verification,
                            applied.manifests, canary=True)  # fmt: skip
    echo(f"{what}: {cause}; removing the canary")
    target.rollback_canary(request, time.monotonic() + deadline_seconds)
    raise DeployFailed(f"{what}: the canary {request.image} {cause}. The canary was removed; {previous.image} "
                       "serves all traffic again")  # fmt: skip


def _roll_out_and_verify(
    target: Target, applied: Applied, verify: Verify, deadline_seconds: float, echo: Callable[[str], None]
) -> tuple[str | None, str, Any]:
    """(cause of failure or None, the URL, the verification)."""
    try:
        url = target.wait_ready(applied, time.monotonic() + deadline_seconds)
    except RolloutFailed as error:
        return f"did not roll out: {error}", "", None
    echo(f"{_what(applied.request)}: rolled out; verifying {url}")
    try:
        verification = verify(url)
    except Exception as error:  # the service could not be asked at all: as much a failure as a wrong answer
        return f"could not be verified at {url}: {type(error).__name__}: {error}", url, None
    if not verification.passed:
        return f"failed verification: {verification.summary()}", url, verification
    return None, url, verification


def _undo(
    target: Target,
    applied: Applied,
    cause: str,
    keep_failed: bool,
    deadline_seconds: float,
    echo: Callable[[str], None],
) -> tuple[str, bool]:
    """Return to what served before (or remove a first deployment): (the failure's message, rolled back)."""
    request, previous = applied.request, applied.previous
    what, new = _what(request), request.image or request.bento
    if previous is not None:
        echo(f"{what}: {new} {cause}; rolling back to {previous.image} ({previous.name})")
        try:
            target.rollback(previous, time.monotonic() + deadline_seconds)
        except Exception as error:
            return f"{what}: {new} {cause}. The rollback to {previous.image} failed too: {error}", False
        return (f"{what}: {new} {cause}. Rolled back to {previous.image} ({previous.name}), which is healthy "
                "again", True)  # fmt: skip
    if keep_failed:
        return f"{what}: {new} {cause}. It was the first deployment; kept for debugging (keep_failed=true)", False
    echo(f"{what}: {new} {cause}; removing the first deployment")
    try:
        target.remove()
    except Exception as error:
        return f"{what}: {new} {cause}. It was the first deployment, and removing it failed: {error}", False
    return f"{what}: {new} {cause}. It was the first deployment and was removed (keep_failed=true keeps it)", False


def _what(request: DeployRequest) -> str:
    where = f"{request.namespace}/{request.name}" if request.namespace else request.name
    return f"{request.target} {where}"


def _check_deadline(deadline_seconds: float) -> None:
    if not isinstance(deadline_seconds, (int, float)) or isinstance(deadline_seconds, bool) or deadline_seconds <= 0:
        raise ValueError(f"deadline_seconds must be > 0 seconds, got {deadline_seconds!r}")
