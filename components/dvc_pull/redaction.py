"""Keep credentials out of what a pull prints: its errors, its logs and the logs of the libraries it calls.

A remote's URL may carry ``user:password@`` (in ``.dvc/config`` of a repository that
someone else controls, or in an ``endpointurl``). fsspec, aiohttp and DVC log URLs at
DEBUG, and their exceptions quote them, so redacting our own messages is not enough:
while a pull runs, every log record made in the process passes through ``redact_text``.
"""

from __future__ import annotations

import logging
import re
import threading
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from urllib.parse import quote, unquote, urlsplit

# scheme://user:password@host -> scheme://***@host: everything up to the authority's last "@"
# (an unencoded "@" in a password included), never past the first "/" or space.
_USERINFO = re.compile(r"(?P<scheme>\b[A-Za-z][A-Za-z0-9+.-]*://)[^/\s'\"<>]+@")
MASK = "***"

_lock = threading.Lock()
_active: list[set[str]] = []  # the secrets of every pull running now
_previous_factory = None


def url_secrets(url: str) -> set[str]:
    """The password (and its quoted and unquoted forms) a URL carries; empty for none."""
    try:
        password = urlsplit(url).password
    except ValueError:
        return set()
    if not password:
        return set()
    return {s for s in (password, unquote(password), quote(password, safe="")) if len(s) >= 3}


def redact_url(url: str) -> str:
    """``url`` with any user and password replaced, for messages and logs."""
    return redact_text(url)


def redact_text(text: str, secrets: Iterable[str] = ()) -> str:
    """``text`` with URL user info masked and every literal secret replaced."""
    text = _USERINFO.sub(rf"\g<scheme>{MASK}@", text)
    for secret in sorted(secrets, key=len, reverse=True):
        text = text.replace(secret, MASK)
    return text


def _all_secrets() -> set[str]:
    return set().union(*_active) if _active else set()


def _redacting_factory(*args, **kwargs) -> logging.LogRecord:
    record = _previous_factory(*args, **kwargs)
    try:
        message = record.getMessage()
    except Exception:  # a malformed record is the logging module's to report
        return record
    secrets = _all_secrets()
    clean = redact_text(message, secrets)
    if clean != message:
        record.msg, record.args = clean, None
    if record.exc_info and record.exc_info[1] is not None:
        text = logging.Formatter().formatException(record.exc_info)
        record.exc_text = redact_text(text, secrets)
        record.exc_info = None  # the formatter would otherwise render the raw traceback again
    return record


@contextmanager
def redacted_logs() -> Iterator[set[str]]:
    """While the body runs, every log record is redacted; add the secrets you learn to the yielded set."""
    global _previous_factory
    secrets: set[str] = set()
    with _lock:
        if not _active:
            _previous_factory = logging.getLogRecordFactory()
            logging.setLogRecordFactory(_redacting_factory)
        _active.append(secrets)
    try:
        yield secrets
    finally:
        with _lock:
            _active.remove(secrets)
            if not _active:
                logging.setLogRecordFactory(_previous_factory)
