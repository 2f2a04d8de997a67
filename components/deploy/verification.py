"""Verify what a new revision serves: held-out test images sent to it, compared with what ``evaluate`` answered.

A health check says a server answers; it cannot see a wrong image, a preprocessing drift or a stale
model. Here each held-out test image (``components.deploy.held_out``: from the Dataset, with the
Model's own split rule) is sent to the revision's address, one image per request, through BentoML's
own client (``bentoml.SyncHTTPClient``: ``client.predict(files=[path])``, the multipart form a user's
client sends for a file), and:

- every answer must be 200;
- each served class must equal evaluate's prediction for the same file, and its probability must be
  evaluate's within ``probability_tolerance`` (1e-3: evaluate's figures are ONNX Runtime's, as served,
  rounded to 6 digits; a drift that moves probabilities without flipping a class is caught too);
- the served accuracy on those images must equal evaluate's accuracy on them;
- when the model tag the service must report is known (the bento's), every answer must carry it.

The result, a :class:`Verification`, says what was compared: how many images, how many answered 200,
how many agreed, both accuracies, the latency p50 and p99 (each request's round trip through the
client, in milliseconds) and the disagreements. Torch-free.
"""

from __future__ import annotations

import contextlib
import logging
import math
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from components.deploy.held_out import DEFAULT_COUNT, HeldOutImage, HeldOutSet, select_held_out

DEFAULT_TIMEOUT_SECONDS = 30.0
PROBABILITY_TOLERANCE = 1e-3
SHOWN_DISAGREEMENTS = 20  # kept in the JSON; the summary names the first
# The figures a deploy step's artifact metadata shows (its deployment.json holds them all).
FIGURES = ("images", "agreed", "answered_200", "served_accuracy", "evaluated_accuracy", "p50_ms", "p99_ms", "passed")


@dataclass(frozen=True)
class Disagreement:
    """A held-out image whose served answer is not evaluate's."""

    path: str  # relative to the dataset directory
    status: int  # the HTTP status; 0 when no answer came
    expected: str  # evaluate's class
    expected_probability: float
    served: str  # the served class, or what went wrong
    served_probability: float | None = None

    def describe(self) -> str:
        if self.status != 200:
            return f"{self.path}: {'HTTP ' + str(self.status) if self.status else 'no answer'}: {self.served}"
        return (
            f"{self.path}: served {self.served!r} ({self.served_probability:.4f}), "
            f"evaluate {self.expected!r} ({self.expected_probability:.4f})"
        )


@dataclass
class Verification:
    images: int  # held-out images sent
    agreed: int  # answered 200 with evaluate's class and probability
    answered_200: int
    served_accuracy: float  # on those images, from the served classes
    evaluated_accuracy: float  # evaluate's, on the same images
    p50_ms: float
    p99_ms: float
    disagreements: list[Disagreement] = field(default_factory=list)
    max_probability_difference: float = 0.0  # over the answers with evaluate's class
    model_tag: str = ""  # what the service said it serves
    problems: list[str] = field(default_factory=list)  # anything else that fails it (an unexpected model tag)

    @property
    def passed(self) -> bool:
        return (
            self.images > 0
            and self.answered_200 == self.images
            and self.agreed == self.images
            and self.served_accuracy == self.evaluated_accuracy
            and not self.problems
        )

    def summary(self) -> str:
        figures = (
            f"{self.images} held-out images: {self.answered_200} answered 200, {self.agreed} agreed with evaluate; "
            f"served accuracy {self.served_accuracy:.4f}, evaluate's {self.evaluated_accuracy:.4f}; "
            f"latency p50 {self.p50_ms:.1f} ms, p99 {self.p99_ms:.1f} ms"
        )
        if self.passed:
            return f"verified {figures}"
        reasons = [*self.problems]
        if self.disagreements:
            shown = "; ".join(d.describe() for d in self.disagreements[:3])
            more = len(self.images_disagreeing()) - min(3, len(self.disagreements))
            reasons.append(shown + (f"; and {more} more" if more > 0 else ""))
        return f"verification failed: {figures}. " + ". ".join(reasons)

    def images_disagreeing(self) -> list[str]:
        return [d.path for d in self.disagreements]

    def to_dict(self) -> dict[str, Any]:
        """The figures as JSON (what the deploy step's artifact and the report carry)."""
        record = asdict(self)
        record["disagreements"] = record["disagreements"][:SHOWN_DISAGREEMENTS]
        record["disagreeing"] = len(self.disagreements)
        record["passed"] = self.passed
        return record


def verify(
    base_url: str,
    dataset_dir: str | Path,
    model_dir: str | Path,
    predictions_file: str | Path,
    count: int = DEFAULT_COUNT,
    timeout_seconds: float = DEFAULT_TIMEOUT_SECONDS,
    expected_model_tag: str = "",
) -> Verification:
    """Verify the revision at ``base_url`` with ``count`` held-out test images (see the module docstring)."""
    held_out = select_held_out(dataset_dir, model_dir, predictions_file, count)
    return verify_held_out(base_url, held_out, timeout_seconds, expected_model_tag)


def verify_held_out(
    base_url: str,
    held_out: HeldOutSet,
    timeout_seconds: float = DEFAULT_TIMEOUT_SECONDS,
    expected_model_tag: str = "",
    probability_tolerance: float = PROBABILITY_TOLERANCE,
) -> Verification:
    """Send every image of ``held_out`` to ``base_url`` and compare; a request that fails is a disagreement,
    never an exception (only bad arguments raise)."""
    if not base_url.startswith(("http://", "https://")):
        raise ValueError(f"base_url must be an http(s) URL, got {base_url!r}")
    import bentoml

    outcome = _Outcome(held_out, expected_model_tag, probability_tolerance)
    try:
        client = bentoml.SyncHTTPClient(base_url, timeout=timeout_seconds)
    except Exception as error:  # noqa: BLE001 (any failure to reach the service fails the verification)
        outcome.problems.append(f"BentoML's client could not reach {base_url}: {_error_text(error)}")
        return outcome.result()
    try:
        with quiet_requests():
            for image in held_out.images:
                began = time.perf_counter()
                try:
                    answer = client.predict(files=[image.file])
                except Exception as error:  # noqa: BLE001 (the client raises BentoMLException or httpx's errors)
                    outcome.failed(image, _status(error), _error_text(error), time.perf_counter() - began)
                else:
                    outcome.answered(image, answer, time.perf_counter() - began)
    finally:
        client.close()
    return outcome.result()


@contextlib.contextmanager
def quiet_requests() -> Iterator[None]:
    """httpx logs every request at INFO, which would bury the step's log under one line per image: WARNING while
    verifying."""
    logger = logging.getLogger("httpx")
    level = logger.level
    logger.setLevel(max(level, logging.WARNING))
    try:
        yield
    finally:
        logger.setLevel(level)


class _Outcome:
    """The comparison as the answers come in."""

    def __init__(self, held_out: HeldOutSet, expected_model_tag: str, tolerance: float):
        self.held_out, self.expected_model_tag, self.tolerance = held_out, expected_model_tag, tolerance
        self.seconds: list[float] = []
        self.answered_200 = self.agreed = self.correct = 0
        self.max_difference = 0.0
        self.disagreements: list[Disagreement] = []
        self.problems: list[str] = []
        self.model_tags: list[str] = []

    def failed(self, image: HeldOutImage, status: int, message: str, seconds: float) -> None:
        self.seconds.append(seconds)
        expected = image.prediction
        self.disagreements.append(
            Disagreement(expected.path, status, expected.predicted_class, expected.probability, message)
        )

    def answered(self, image: HeldOutImage, answer: Any, seconds: float) -> None:
        self.seconds.append(seconds)
        self.answered_200 += 1
        expected = image.prediction
        try:
            (served,) = answer["predictions"]
            served_class, served_probability = str(served["class"]), float(served["probability"])
        except (TypeError, KeyError, ValueError) as error:
            self.disagreements.append(
                Disagreement(
                    expected.path, 200, expected.predicted_class, expected.probability, f"unreadable answer ({error})"
                )
            )
            return
        tag = str(answer.get("model_tag", ""))
        if tag not in self.model_tags:
            self.model_tags.append(tag)
        self.correct += served_class == expected.true_class
        difference = abs(served_probability - expected.probability)
        if served_class == expected.predicted_class:
            self.max_difference = max(self.max_difference, difference)
        if served_class == expected.predicted_class and difference <= self.tolerance:
            self.agreed += 1
        else:
            self.disagreements.append(
                Disagreement(
                    expected.path,
                    200,
                    expected.predicted_class,
                    expected.probability,
                    served_class,
                    served_probability,
                )
            )

    def result(self) -> Verification:
        images = len(self.held_out)
        if self.expected_model_tag and any(tag != self.expected_model_tag for tag in self.model_tags):
            self.problems.append(
                f"the service answered as model {', '.join(map(repr, self.model_tags))}, "
                f"expected {self.expected_model_tag!r}"
            )
        elif len(self.model_tags) > 1:
            self.problems.append(f"answers came from several models: {', '.join(map(repr, self.model_tags))}")
        milliseconds = sorted(1000 * s for s in self.seconds)
        return Verification(
            images=images,
            agreed=self.agreed,
            answered_200=self.answered_200,
            served_accuracy=self.correct / images if images else 0.0,
            evaluated_accuracy=self.held_out.evaluated_accuracy if images else 0.0,
            p50_ms=percentile(milliseconds, 0.50),
            p99_ms=percentile(milliseconds, 0.99),
            disagreements=self.disagreements,
            max_probability_difference=self.max_difference,
            model_tag=self.model_tags[0] if len(self.model_tags) == 1 else "",
            problems=self.problems,
        )


def percentile(ordered: list[float], fraction: float) -> float:
    """The nearest-rank percentile of an ascending list (0.0 for none)."""
    if not ordered:
        return 0.0
    return ordered[max(0, math.ceil(fraction * len(ordered)) - 1)]


def _status(error: Exception) -> int:
    code = getattr(error, "error_code", None)
    try:
        return int(code) if code is not None else 0
    except (TypeError, ValueError):
        return 0


def _error_text(error: Exception) -> str:
    text = " ".join(str(error).split())
    return f"{type(error).__name__}: {text[:300]}" if text else type(error).__name__
