"""dvc_pull's pure pieces: the manifest check, URL redaction, and the log records of a running pull."""

from __future__ import annotations

import json
import logging

import pytest

from components.dvc_pull.manifests import BadManifest, Entry, parse_manifest
from components.dvc_pull.redaction import redact_text, redact_url, redacted_logs, url_secrets

GOOD = "0123456789abcdef0123456789abcdef"


def manifest(*entries) -> bytes:
    return json.dumps(list(entries)).encode()


def test_a_dvc_manifest_parses_into_entries():
    data = manifest({"md5": GOOD, "relpath": "a/b.png"}, {"md5": GOOD, "relpath": "run.sh", "isexec": True})
    assert parse_manifest(data, "x.dir") == [Entry("a/b.png", GOOD), Entry("run.sh", GOOD, True)]
    assert parse_manifest(b"[]", "x.dir") == []


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"not json", "not JSON"),
        (b"\xff\xfe", "not JSON"),
        (b'{"md5": "x"}', "a JSON dict, not a list"),
        (manifest("a"), "entry 'a' is not an object"),
        (manifest({"md5": GOOD, "relpath": "../../escape"}), "'..' segment.*'../../escape'"),
        (manifest({"md5": GOOD, "relpath": "a/../../x"}), "'..' segment"),
        (manifest({"md5": GOOD, "relpath": "/etc/passwd"}), "not a relative POSIX path"),
        (manifest({"md5": GOOD, "relpath": ""}), "relpath is empty"),
        (manifest({"md5": GOOD, "relpath": "a\0b"}), "NUL"),
        (manifest({"md5": GOOD, "relpath": "a//b"}), "empty, '.' or '..' segment"),
        (manifest({"md5": GOOD, "relpath": "./a"}), "empty, '.' or '..' segment"),
        (manifest({"md5": GOOD}), "relpath is not a string"),
        (manifest({"md5": GOOD, "relpath": 7}), "relpath is not a string"),
        (manifest({"relpath": "a"}), "md5 None"),
        (manifest({"md5": 12, "relpath": "a"}), "md5 12"),
        (manifest({"md5": "..//etc/secret.json", "relpath": "a"}), r"md5 '..//etc/secret.json'"),
        (manifest({"md5": GOOD.upper(), "relpath": "a"}), "lowercase hex"),
        (manifest({"md5": GOOD[:-1], "relpath": "a"}), "32 lowercase hex"),
        (manifest({"md5": GOOD, "relpath": "a"}, {"md5": GOOD, "relpath": "a"}), "'a' is listed twice"),
        (manifest({"md5": GOOD, "relpath": "a"}, {"md5": GOOD, "relpath": "a/b/c"}), "'a' is listed as a file"),
    ],
)
def test_an_unsafe_or_malformed_manifest_is_refused_with_the_reason(data, reason):
    with pytest.raises(BadManifest, match=reason) as refused:
        parse_manifest(data, "ab.dir")
    assert refused.value.oid == "ab.dir"


def test_a_manifest_refusal_shows_a_long_entry_shortened():
    with pytest.raises(BadManifest) as refused:
        parse_manifest(manifest({"md5": GOOD, "relpath": "../" + "x" * 5000}), "ab.dir")
    assert len(refused.value.reason) < 500


@pytest.mark.parametrize(
    "url",
    [
        "https://user:s3cr3t-pw@example.com/repo.git",
        "http://s3cr3t-pw@127.0.0.1:9/",
        "gs://user:s3cr3t-pw@bucket/path",
        "see 'https://u:s3cr3t-pw@h/x' here",
        "https://u:p@s3cr3t-pw@host:8443/x",  # an unencoded "@" in the password
    ],
)
def test_user_info_in_urls_is_masked(url):
    assert "s3cr3t-pw" not in redact_text(url)
    assert "***@" in redact_text(url)


def test_a_url_keeps_everything_but_its_user_info():
    assert redact_url("https://u:p@ss@host:8443/r.git?a=b@c") == "https://***@host:8443/r.git?a=b@c"
    assert redact_url("https://host/path@x and http://h2/") == "https://host/path@x and http://h2/"


def test_literal_secrets_are_masked_in_every_form():
    secrets = url_secrets("https://u:p%40ss-w0rd@h/")
    assert {"p@ss-w0rd", "p%40ss-w0rd"} <= secrets
    assert redact_text("password p@ss-w0rd and p%40ss-w0rd", secrets) == "password *** and ***"
    assert redact_text("http://example.com/a@b") == "http://example.com/a@b"  # an @ in the path is not user info


def test_a_secret_that_contains_another_is_masked_whole():
    """Longest first: masking 'hunter2' first would leave '***-prod' of 'hunter2-prod'."""
    assert redact_text("hunter2-prod", {"hunter2", "hunter2-prod"}) == "***"
    assert redact_text("hunter2-prod and hunter2", ["hunter2", "hunter2-prod"]) == "*** and ***"


def test_log_records_of_any_logger_are_redacted_while_a_pull_runs(caplog):
    caplog.set_level(logging.DEBUG)
    library = logging.getLogger("fsspec.http")
    with redacted_logs() as secrets:
        secrets.add("tok3n-value")
        library.debug("GET %s", "http://user:s3cr3t-pw@127.0.0.1/x")
        library.debug("header Authorization: Bearer %s", "tok3n-value")
        try:
            raise OSError("cannot open http://user:s3cr3t-pw@127.0.0.1/x")
        except OSError:
            library.debug("failed", exc_info=True)
    library.debug("after: http://user:s3cr3t-pw@127.0.0.1/x")
    text = caplog.text
    assert "GET http://***@127.0.0.1/x" in text and "Bearer ***" in text
    assert text.count("s3cr3t-pw") == 1 and "after: http://user:s3cr3t-pw" in text  # only outside the pull
    assert "tok3n-value" not in text


def test_a_manifest_md5_never_becomes_a_path():
    from components.dvc_pull.manifests import cache_path, object_key

    for bad in ("..//etc/passwd", "../" + GOOD[3:], GOOD.upper()):
        with pytest.raises(ValueError):
            object_key(bad)
        with pytest.raises(ValueError):
            cache_path("/cache", bad)
    assert object_key(GOOD + ".dir") == f"files/md5/01/{GOOD[2:]}.dir"
