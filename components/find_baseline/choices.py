"""What a ``baseline`` argument may be, checked without touching a registry or a model (and without torch).

``baseline_kind`` is what ``find_baseline`` starts with and what the pipelines' ``check_arguments`` step
runs first, so a bad value fails a run in seconds, before any data is pulled.
"""

from __future__ import annotations

from components.common.storage import SCHEMES

PRODUCTION, NONE, URI = "production", "none", "uri"
CHOICES = (PRODUCTION, NONE)


class BaselineError(ValueError):
    """A baseline that cannot be found or read; the message says which and what would be valid."""


def baseline_kind(baseline: str) -> str:
    """``production``, ``none`` or ``uri`` for a valid ``baseline``, else ``BaselineError``."""
    value = (baseline or "").strip()
    if value in CHOICES:
        return value
    scheme = value.split("://", 1)[0] if "://" in value else ""
    if scheme in (*SCHEMES, "file") or (not scheme and value.startswith("/")):
        return URI
    raise BaselineError(
        f"baseline={baseline!r}: give 'production' (the version the registry says is serving), 'none', or a "
        f"model's URI ({', '.join(f'{s}://' for s in SCHEMES)}, or an absolute path)"
    )
