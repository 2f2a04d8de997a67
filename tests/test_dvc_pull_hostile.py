"""dvc_pull against a hostile or broken remote (issue 13).

A DVC remote is data, not code: its ``.dir`` manifests name the files a pull writes
and the objects it reads. Here crafted manifests try to write outside the output,
read files of the host, or confuse the layout; caches hold garbage; servers cut a
download short, never answer, or refuse a token; credentials sit in URLs and key
files. Every failure must be a ``DvcPullError`` that names the remote, the tracked
path and the offending value, leave no output and nothing new anywhere else, and
never echo a secret. Empty directories and paths inside a tracked directory are
compared with real ``dvc pull``.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import http.server
import json
import logging
import os
import re
import stat
import subprocess
import sys
import threading
import time
import traceback
import uuid
from pathlib import Path

import pytest

from components.dvc_pull.errors import DvcPullError
from components.dvc_pull.pull import pull
from tests.support.hostile_remote import FrozenServer, GcsMediaServer, TokenRefusingServer, refused_port
from tests.support.trees import same_tree

DVC = [sys.executable, "-m", "dvc"]
GIT = ["git", "-c", "user.name=t", "-c", "user.email=t@example.com", "-c", "init.defaultBranch=main"]
BUCKET = "dvc-hostile"  # not the gcs_remote fixture's bucket: the digits need not be pushed for these tests
PREFIX = "hostile"
PASSWORD = "s3cr3t-pw"
# Loggers whose records must reach the test's capture (and so a pod's log).
LIBRARY_LOGGERS = (
    "components",
    "dvc",
    "dvc_objects",
    "dvc_data",
    "dvc_http",
    "dvc_gs",
    "fsspec",
    "gcsfs",
    "urllib3",
    "aiohttp",
    "aiohttp_retry",
    "google",
)


def git(*args: str, cwd: Path) -> str:
    return subprocess.run([*GIT, *args], cwd=cwd, check=True, capture_output=True, text=True).stdout.strip()


def md5_of(data: bytes) -> str:
    return hashlib.md5(data).hexdigest()


def entry(md5: object, relpath: object) -> dict:
    return {"md5": md5, "relpath": relpath}


# --- a crafted repository and remote -----------------------------------------------------------------


class Crafted:
    """A clone of the digits repo whose remote ``storage`` is a small local directory we write.

    ``branch(manifest)`` stores a manifest (JSON-encoded, or raw bytes) in the remote under
    its md5, as DVC names it, and commits a branch whose ``data/raw.dvc`` points at it.
    With ``enable_gcs`` every object also goes to ``gs://dvc-test/hostile`` on the fake
    GCS server.
    """

    def __init__(self, base: Path, source_repo: str):
        self.base = base
        self.repo = base / "repo"
        self.remote = base / "remote"
        self.remote.mkdir()
        self.bucket = None
        self._branches = 0
        self._big: dict[str, str] = {}
        subprocess.run(["git", "clone", "-q", source_repo, str(self.repo)], check=True)
        (self.repo / ".dvc/config").write_text(
            f"[core]\n    remote = storage\n['remote \"storage\"']\n    url = {self.remote}\n"
        )
        self.hello = self.put(b"hello\n")
        self.world = self.put(b"world\n")
        benign = [entry(self.hello, "a.txt"), entry(self.world, "sub/b.txt")]
        self.benign_md5 = self.put(json.dumps(benign).encode(), suffix=".dir")
        self._write_dvc_file(self.benign_md5, size=12, nfiles=2)
        git("commit", "-q", "-am", "a crafted remote", cwd=self.repo)

    def put(self, data: bytes, suffix: str = "", oid: str = "") -> str:
        """Store ``data`` in the remote under its md5 (or, to forge one, under ``oid``)."""
        oid = oid or md5_of(data)
        target = self.remote / "files/md5" / oid[:2] / f"{oid[2:]}{suffix}"
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(data)
        if self.bucket is not None:
            self.bucket.blob(f"{PREFIX}/{target.relative_to(self.remote).as_posix()}").upload_from_string(data)
        return oid

    def _write_dvc_file(self, oid: str, size: int | None = None, nfiles: int | None = None) -> None:
        out = {"md5": f"{oid}.dir"}
        if size is not None:
            out["size"] = size
        if nfiles is not None:
            out["nfiles"] = nfiles
        lines = [f"- md5: {out['md5']}"] + [f"  {k}: {out[k]}" for k in ("size", "nfiles") if k in out]
        (self.repo / "data/raw.dvc").write_text("outs:\n" + "\n".join([*lines, "  hash: md5", "  path: raw"]) + "\n")

    def branch(self, manifest: object) -> str:
        """A branch whose data/raw is the directory ``manifest`` describes (a JSON value, or raw bytes)."""
        raw = manifest if isinstance(manifest, bytes) else json.dumps(manifest).encode()
        return self.branch_to(self.put(raw, suffix=".dir"))

    def branch_to(self, oid: str) -> str:
        """A branch whose data/raw.dvc names the listing ``oid`` (whatever the remote holds under it)."""
        self._branches += 1
        name = f"case-{self._branches}"
        git("checkout", "-q", "-b", name, "main", cwd=self.repo)
        try:
            self._write_dvc_file(oid)
            git("commit", "-q", "-am", name, cwd=self.repo)
        finally:
            git("checkout", "-q", "main", cwd=self.repo)
        return name

    def enable_gcs(self, bucket) -> None:
        self.bucket = bucket
        for path in self.remote.rglob("*"):
            if path.is_file():
                bucket.blob(f"{PREFIX}/{path.relative_to(self.remote).as_posix()}").upload_from_filename(str(path))

    def big(self, size: int) -> str:
        """The md5 of a random object of ``size`` bytes in the remote (made once)."""
        if size not in self._big:
            self._big[size] = self.put(os.urandom(size))
        return self._big[size]


@pytest.fixture(scope="module")
def crafted(digits_repo, tmp_path_factory) -> Crafted:
    return Crafted(tmp_path_factory.mktemp("hostile"), digits_repo.repo_url)


@pytest.fixture(scope="module")
def crafted_gcs(crafted, fake_gcs) -> dict:
    """The crafted remote on the fake GCS server: remote settings for ``pull``."""
    client = fake_gcs.client()
    bucket = client.bucket(BUCKET)
    if not bucket.exists():
        client.create_bucket(BUCKET)
    crafted.enable_gcs(bucket)
    return {"url": f"gs://{BUCKET}/{PREFIX}", "endpointurl": fake_gcs.url, "allow_anonymous_login": "true"}


def remote_settings(kind: str, request) -> dict:
    return {} if kind == "local" else request.getfixturevalue("crafted_gcs")


# --- what a failed pull must leave behind: nothing ---------------------------------------------------


def snapshot(root: Path) -> dict[str, tuple]:
    """Every entry under ``root``: kind, and for files size and mtime."""
    found = {}
    for directory, dirs, files in os.walk(root):
        for name in dirs + files:
            path = Path(directory, name)
            info = path.lstat()
            regular = stat.S_ISREG(info.st_mode)
            found[path.relative_to(root).as_posix()] = (
                stat.S_IFMT(info.st_mode),
                info.st_size if regular else 0,
                info.st_mtime_ns if regular else 0,
            )
    return found


def assert_same_snapshot(before: dict, after: dict, where: Path) -> None:
    added = sorted(set(after) - set(before))
    removed = sorted(set(before) - set(after))
    changed = sorted(k for k in set(before) & set(after) if before[k] != after[k])
    assert not (added or removed or changed), f"under {where}: added {added}, removed {removed}, changed {changed}"


def failed_pull(
    repo: Path, rev: str, tmp_path: Path, settings: dict, watch: tuple[Path, ...] = (), **kwargs
) -> DvcPullError:
    """Run a pull that must fail; check it left no output and changed nothing under tmp_path or ``watch``.

    The output sits at ``tmp_path/a/b/c/out`` (its parent made beforehand) so a relative
    escape of up to four levels still lands inside tmp_path, where it is seen.
    """
    out = tmp_path / "a/b/c/out"
    out.parent.mkdir(parents=True, exist_ok=True)
    roots = (tmp_path, *watch)
    before = [snapshot(root) for root in roots]
    top = sorted(os.listdir("/"))
    with pytest.raises(DvcPullError) as caught:
        pull(str(repo), rev, ["data/raw"], out, remote_config=settings, **kwargs)
    assert not out.exists()
    for root, earlier in zip(roots, before, strict=True):
        assert_same_snapshot(earlier, snapshot(root), root)
    assert sorted(os.listdir("/")) == top
    return caught.value


def full_text(error: BaseException) -> str:
    """The error as a pod's log would show it: the whole traceback, chained exceptions included."""
    return "".join(traceback.format_exception(error))


def assert_names(error: DvcPullError, *expected: str | tuple[str, ...]) -> None:
    """The message names the remote, the tracked path and each expected value (a tuple: any of them)."""
    message = str(error)
    assert "'storage'" in message, message
    assert "data/raw" in message, message
    for value in expected:
        alternatives = value if isinstance(value, tuple) else (value,)
        # A long value may be shortened in the message: its start is enough.
        alternatives = tuple(a[:60] for a in alternatives)
        assert any(a in message for a in alternatives), f"none of {alternatives} in: {message}"


# --- reads of host files are caught by an audit hook ------------------------------------------------

_WATCHED = {"name": None, "opened": []}
_HOOK_INSTALLED = False


def _audit(event: str, args: tuple) -> None:
    if event != "open" or _WATCHED["name"] is None:
        return
    try:
        path = args[0]
        if isinstance(path, (str, bytes, os.PathLike)) and os.fsdecode(path).endswith(_WATCHED["name"]):
            _WATCHED["opened"].append(os.fsdecode(path))
    except Exception:  # an audit hook must never break the code it watches
        pass


@contextlib.contextmanager
def watching_opens(name: str):
    """Yield a list that collects every path opened (in this process) whose name ends with ``name``."""
    global _HOOK_INSTALLED
    if not _HOOK_INSTALLED:
        sys.addaudithook(_audit)  # cannot be removed: inert while nothing is watched
        _HOOK_INSTALLED = True
    opened: list[str] = []
    _WATCHED.update(name=name, opened=opened)
    try:
        yield opened
    finally:
        _WATCHED["name"] = None


# --- the crafted repository is valid ------------------------------------------------------------------


def test_crafted_repository_pulls_like_dvc(crafted, tmp_path):
    """The benign manifest: stock `dvc pull` and ours give the same tree (the crafting itself is sound)."""
    clone = tmp_path / "clone"
    subprocess.run(["git", "clone", "-q", str(crafted.repo), str(clone)], check=True)
    subprocess.run([*DVC, "pull", "-q"], cwd=clone, check=True)
    result = pull(str(crafted.repo), "main", ["data/raw"], tmp_path / "out")
    assert same_tree(tmp_path / "out/data/raw", clone / "data/raw")
    assert (tmp_path / "out/data/raw/sub/b.txt").read_bytes() == b"world\n"
    assert result.file_count == 2


# --- hostile manifests --------------------------------------------------------------------------------


def _deep_chain(tmp_path: Path) -> str:
    # Climbs past the filesystem root, then comes back down into tmp_path, so a write lands where it is seen.
    return "../" * 64 + tmp_path.relative_to("/").as_posix() + "/deep-escape"


# id -> (manifest(hello, world, tmp_path), expected in the message: a string, or a tuple of alternatives)
MANIFESTS = {
    "dotdot": (lambda h, w, t: [entry(h, "a.txt"), entry(w, "../../escape")], "'../../escape'"),
    "dotdot-past-the-output": (
        lambda h, w, t: [entry(h, "a.txt"), entry(w, "../../../../escape")],
        "'../../../../escape'",
    ),
    "deep-dotdot-chain": (lambda h, w, t: [entry(h, "a.txt"), entry(w, _deep_chain(t))], None),
    "dotdot-inside": (lambda h, w, t: [entry(h, "a.txt"), entry(w, "a/../../x")], "'a/../../x'"),
    "absolute": (lambda h, w, t: [entry(h, "a.txt"), entry(w, str(t / "abs-escape"))], None),
    "empty-relpath": (lambda h, w, t: [entry(h, "a.txt"), entry(w, "")], "''"),
    "dot-relpath": (lambda h, w, t: [entry(h, "a.txt"), entry(w, ".")], "'.'"),
    "nul-in-relpath": (lambda h, w, t: [entry(h, "a.txt"), entry(w, "b\x00.txt")], repr("b\x00.txt")),
    "relpath-not-a-string": (lambda h, w, t: [entry(h, "a.txt"), entry(w, 7)], "7"),
    "md5-int": (lambda h, w, t: [entry(h, "a.txt"), entry(12345, "b.txt")], "12345"),
    "md5-null": (lambda h, w, t: [entry(h, "a.txt"), entry(None, "b.txt")], "None"),
    "md5-missing": (lambda h, w, t: [entry(h, "a.txt"), {"relpath": "b.txt"}], "md5"),
    "relpath-missing": (lambda h, w, t: [entry(h, "a.txt"), {"md5": w}], "relpath"),
    "entry-not-a-dict": (lambda h, w, t: [entry(h, "a.txt"), "b.txt"], "'b.txt'"),
    "md5-uppercase": (lambda h, w, t: [entry(h, "a.txt"), entry(w.upper(), "b.txt")], None),
    "md5-31-chars": (lambda h, w, t: [entry(h, "a.txt"), entry(w[:31], "b.txt")], None),
    "md5-with-dir-suffix": (lambda h, w, t: [entry(h, "a.txt"), entry(f"{w}.dir", "b.txt")], None),
    "duplicate-relpath": (lambda h, w, t: [entry(h, "dup.txt"), entry(w, "dup.txt")], "'dup.txt'"),
    "file-and-directory": (lambda h, w, t: [entry(h, "a"), entry(w, "a/b")], ("'a'", "'a/b'")),
    "manifest-a-dict": (lambda h, w, t: {"a.txt": h}, None),
    "manifest-a-number": (lambda h, w, t: 42, None),
    "manifest-not-json": (lambda h, w, t: b"\x89PNG\r\n\x1a\n not a manifest {", None),
}
# Values whose repr depends on the case's data.
_REPR_OF_BAD_MD5 = {
    "md5-uppercase": lambda h, w: repr(w.upper()),
    "md5-31-chars": lambda h, w: repr(w[:31]),
    "md5-with-dir-suffix": lambda h, w: repr(f"{w}.dir"),
}


@pytest.mark.parametrize("case", list(MANIFESTS))
def test_hostile_manifest_is_refused_before_anything_is_written(crafted, tmp_path, case):
    make, expected = MANIFESTS[case]
    manifest = make(crafted.hello, crafted.world, tmp_path)
    rev = crafted.branch(manifest)
    error = failed_pull(crafted.repo, rev, tmp_path, {}, watch=(crafted.remote,))
    values = [expected] if expected is not None else []
    if case in _REPR_OF_BAD_MD5:
        values.append(_REPR_OF_BAD_MD5[case](crafted.hello, crafted.world))
    if case in ("deep-dotdot-chain", "absolute"):
        values.append(repr(manifest[1]["relpath"]))
    if case in ("md5-missing", "relpath-missing"):
        values.append((repr(manifest[1]), "missing"))  # the entry that lacks the key, or a word for it
    assert_names(error, *values)
    assert not (tmp_path / "escape").exists() and not (tmp_path / "a/b/escape").exists()


@pytest.mark.parametrize("case", ["dotdot-past-the-output", "absolute", "manifest-not-json"])
def test_hostile_manifest_on_gcs(crafted, crafted_gcs, tmp_path, case):
    make, expected = MANIFESTS[case]
    manifest = make(crafted.hello, crafted.world, tmp_path)
    rev = crafted.branch(manifest)
    error = failed_pull(crafted.repo, rev, tmp_path, crafted_gcs)
    values = [expected] if expected is not None else []
    if case == "absolute":
        values.append(repr(manifest[1]["relpath"]))
    assert_names(error, *values)


@pytest.mark.parametrize("remote_kind", ["local", "gs"])
def test_a_listing_whose_bytes_do_not_match_its_md5_is_named(crafted, tmp_path, request, remote_kind):
    """A manifest stored under another manifest's md5: refused as corrupt, naming the tracked directory."""
    settings = remote_settings(remote_kind, request)
    listing = json.dumps([entry(crafted.hello, "a.txt")]).encode()
    claimed = crafted.put(listing, suffix=".dir", oid=md5_of(b"another listing"))
    error = failed_pull(crafted.repo, crafted.branch_to(claimed), tmp_path, settings)
    assert "data/raw (directory listing) is corrupt on DVC remote 'storage'" in str(error)
    assert f"expected md5 {claimed}, got {md5_of(listing)}" in str(error)


@pytest.fixture(scope="module")
def crafted_http(crafted):
    """The crafted remote served over HTTP: a remote with no fast path, so DVC's own transfer runs."""
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(crafted.remote))
    handler.log_message = lambda *args: None
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield {"url": f"http://127.0.0.1:{server.server_port}"}
    server.shutdown()


@pytest.mark.parametrize("case", ["dotdot", "deep-dotdot-chain", "absolute", "manifest-not-json"])
def test_hostile_manifest_is_refused_before_dvcs_own_transfer(crafted, crafted_http, tmp_path, case):
    """Stock DVC follows '..' out of the output; the listing is checked before DVC acts on it."""
    make, expected = MANIFESTS[case]
    manifest = make(crafted.hello, crafted.world, tmp_path)
    rev = crafted.branch(manifest)
    error = failed_pull(crafted.repo, rev, tmp_path, crafted_http, watch=(crafted.remote,))
    values = [expected] if expected is not None else []
    if case in ("deep-dotdot-chain", "absolute"):
        values.append(repr(manifest[1]["relpath"]))
    assert_names(error, *values)


def test_dvcs_own_transfer_still_pulls_a_benign_listing(crafted, crafted_http, tmp_path):
    pull(str(crafted.repo), "main", ["data/raw"], tmp_path / "out", remote_config=crafted_http)
    assert (tmp_path / "out/data/raw/a.txt").read_bytes() == b"hello\n"
    assert (tmp_path / "out/data/raw/sub/b.txt").read_bytes() == b"world\n"


@pytest.mark.parametrize("remote_kind", ["local", "gs"])
def test_manifest_md5_naming_a_host_file_never_reads_it(crafted, tmp_path, request, remote_kind):
    """An md5 of ``..//<absolute path>`` joins into a host path, in the remote and in the cache alike."""
    settings = remote_settings(remote_kind, request)
    token = uuid.uuid4().hex
    secret = tmp_path / f"secret-{token}.txt"
    content = f"TOP-SECRET-{token}"
    secret.write_text(content)
    bad_md5 = f"..//{secret}"
    rev = crafted.branch([entry(crafted.hello, "a.txt"), entry(bad_md5, "stolen.txt")])

    with watching_opens(secret.name) as opened:
        error = failed_pull(crafted.repo, rev, tmp_path, settings, watch=(crafted.remote,))
    assert opened == [], f"the host file was opened: {opened}"
    assert content not in full_text(error)
    assert_names(error, repr(bad_md5))

    with watching_opens(secret.name) as opened:  # the hook itself works
        secret.read_text()
    assert opened


# --- caches are checked, not trusted by name -----------------------------------------------------------


@pytest.mark.parametrize("which", ["file", "manifest"])
def test_garbage_in_the_cache_is_fetched_again(crafted, tmp_path, which):
    if which == "file":
        oid, size = crafted.hello, len(b"hello\n")
    else:
        oid = f"{crafted.benign_md5}.dir"
        size = (crafted.remote / "files/md5" / oid[:2] / oid[2:]).stat().st_size
    cache = tmp_path / "cache"
    bad = cache / "files/md5" / oid[:2] / oid[2:]
    bad.parent.mkdir(parents=True)
    bad.write_bytes(b"x" * size)  # the right size, the wrong bytes
    bad.chmod(0o444)  # as DVC leaves cache objects

    pull(str(crafted.repo), "main", ["data/raw"], tmp_path / "out", cache_dir=str(cache))
    out = tmp_path / "out/data/raw"
    assert sorted(p.relative_to(out).as_posix() for p in out.rglob("*")) == ["a.txt", "sub", "sub/b.txt"]
    assert (out / "a.txt").read_bytes() == b"hello\n"
    assert (out / "sub/b.txt").read_bytes() == b"world\n"


def cache_files_are_the_objects_they_name(cache: Path) -> list[Path]:
    """Every file in a shared cache's ``files/md5``, after checking that its md5 is its name."""
    files = [p for p in (cache / "files/md5").rglob("*") if p.is_file()] if (cache / "files/md5").exists() else []
    for path in files:
        oid = path.parent.name + path.name.removesuffix(".dir")
        assert md5_of(path.read_bytes()) == oid, f"{path} in the cache is not the object it names"
    return files


@pytest.mark.parametrize("remote_kind", ["local", "gs"])
def test_a_corrupt_object_never_reaches_the_shared_cache(crafted, tmp_path, tmp_path_factory, request, remote_kind):
    """The md5 is checked before an object is published anywhere: the output, or a cache that outlives the step."""
    settings = remote_settings(remote_kind, request)
    claimed = md5_of(b"what the listing says c.txt holds\n")
    crafted.put(b"garbage\n", oid=claimed)
    rev = crafted.branch([entry(crafted.hello, "a.txt"), entry(claimed, "c.txt")])
    cache = tmp_path_factory.mktemp("shared-cache")  # outside tmp_path, which must stay untouched
    error = failed_pull(crafted.repo, rev, tmp_path, settings, cache_dir=str(cache))
    assert "data/raw/c.txt is corrupt on DVC remote 'storage'" in str(error)
    assert f"expected md5 {claimed}, got {md5_of(b'garbage' + bytes([10]))}" in str(error)
    cached = cache_files_are_the_objects_they_name(cache)
    assert not (cache / "files/md5" / claimed[:2] / claimed[2:]).exists()
    assert cached  # the listing, at least, was kept: the check ran on real entries


def test_a_listing_over_one_chunk_leaves_no_partial_file_in_the_shared_cache(crafted, tmp_path):
    """A listing larger than 1 MiB goes through a temporary file; a successful pull removes it."""
    from components.dvc_pull.sources import CHUNK_BYTES

    folder = "a-long-folder-name-" * 10
    manifest = [entry(crafted.hello, f"{folder}/{i:05d}.txt") for i in range(CHUNK_BYTES // 200)]
    assert len(json.dumps(manifest).encode()) > CHUNK_BYTES
    rev = crafted.branch(manifest)
    cache = tmp_path / "shared-cache"
    result = pull(str(crafted.repo), rev, ["data/raw"], tmp_path / "out", cache_dir=str(cache))
    assert result.file_count == len(manifest)
    partial = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob(".dvc-partial-*"))
    assert partial == [], f"temporary files left behind: {partial}"
    assert len(cache_files_are_the_objects_they_name(cache)) == 2  # the listing and hello


def test_a_missing_object_costs_one_request_and_fails_without_retrying(crafted, tmp_path, caplog):
    """A 404 is final: no retry, no wait for the object deadline."""
    absent = md5_of(b"never pushed\n")
    rev = crafted.branch([entry(crafted.hello, "a.txt"), entry(absent, "gone.txt")])
    caplog.set_level(logging.DEBUG, logger="components.dvc_pull")
    with GcsMediaServer(crafted.remote, BUCKET, PREFIX) as server:
        settings = {"url": f"gs://{BUCKET}/{PREFIX}", "endpointurl": server.url, "allow_anonymous_login": "true"}
        error = failed_pull(crafted.repo, rev, tmp_path, settings, object_deadline=3600)
        asked = [request for request in server.requests if absent[2:] in request]
    assert len(asked) == 1, asked
    assert "1 object(s) missing from DVC remote 'storage'" in str(error) and f"data/raw/gone.txt (md5 {absent})" in str(
        error
    )
    assert not [r for r in caplog.records if "retrying" in r.getMessage() or "attempt" in r.getMessage()]


# --- large files and downloads cut short ---------------------------------------------------------------

BIG = 20 * 1024 * 1024


@pytest.mark.parametrize("remote_kind", ["local", "gs"])
def test_large_file_pulls_intact(crafted, tmp_path, request, remote_kind):
    big = crafted.big(BIG)
    settings = remote_settings(remote_kind, request)
    rev = crafted.branch([entry(big, "big.bin"), entry(crafted.hello, "small.txt")])
    result = pull(str(crafted.repo), rev, ["data/raw"], tmp_path / "out", remote_config=settings)
    written = tmp_path / "out/data/raw/big.bin"
    assert written.stat().st_size == BIG
    assert md5_of(written.read_bytes()) == big
    assert result.total_bytes == BIG + len(b"hello\n")


@pytest.mark.parametrize("remote_kind", ["local", "gs"])
def test_large_file_is_streamed_not_held_in_memory(crafted, tmp_path, request, remote_kind):
    """Beyond the letter of the brief: a 20 MB object should never sit whole in Python memory."""
    import tracemalloc

    big = crafted.big(BIG)
    settings = remote_settings(remote_kind, request)
    rev = crafted.branch([entry(big, "big.bin")])
    tracemalloc.start()
    try:
        pull(str(crafted.repo), rev, ["data/raw"], tmp_path / "out", remote_config=settings, jobs=1)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert md5_of((tmp_path / "out/data/raw/big.bin").read_bytes()) == big
    assert peak < BIG // 2, f"peak Python memory {peak / 1e6:.1f} MB for a {BIG / 1e6:.0f} MB file"


def test_download_cut_mid_stream_leaves_no_partial_file(crafted, tmp_path):
    declared, sent = 10 * 1024 * 1024, 1024 * 1024
    zeros = md5_of(b"\0" * declared)
    rev = crafted.branch([entry(crafted.hello, "small.txt"), entry(zeros, "big.bin")])
    name = f"{PREFIX}/files/md5/{zeros[:2]}/{zeros[2:]}"
    cache = tmp_path / "cache"
    cache.mkdir()
    with GcsMediaServer(crafted.remote, BUCKET, PREFIX, truncated={name: (declared, sent)}) as server:
        settings = {"url": f"gs://{BUCKET}/{PREFIX}", "endpointurl": server.url, "allow_anonymous_login": "true"}
        out = tmp_path / "a/b/c/out"
        out.parent.mkdir(parents=True)
        before = {k: v for k, v in snapshot(tmp_path).items() if not k.startswith("cache")}
        with pytest.raises(DvcPullError) as caught:
            pull(str(crafted.repo), rev, ["data/raw"], out, remote_config=settings, cache_dir=str(cache))
        assert any(zeros[2:] in request for request in server.requests)  # the cut object was asked for
    assert "'storage'" in str(caught.value)
    assert not out.exists()
    assert_same_snapshot(before, {k: v for k, v in snapshot(tmp_path).items() if not k.startswith("cache")}, tmp_path)
    # Whatever the shared cache holds is a whole, verified object, never a partial one.
    for path in (cache / "files/md5").rglob("*") if (cache / "files/md5").exists() else []:
        if path.is_file():
            oid = path.parent.name + path.name.removesuffix(".dir")
            assert md5_of(path.read_bytes()) == oid, f"{path} in the cache is not the object it names"
    assert not (cache / "files/md5" / zeros[:2] / zeros[2:]).exists()


def test_a_retried_error_leaves_the_connection_clean(crafted, tmp_path, caplog):
    """A 503 with a long body, then the object: one retry, no answer misread from the rest of that body.

    The error body is read only in part; urllib3 discards a pooled connection that still has
    unread data, so the retry gets a fresh one.
    """
    body_size = 200_000
    rev = crafted.branch([entry(crafted.hello, "a.txt")])
    name = f"{PREFIX}/files/md5/{crafted.hello[:2]}/{crafted.hello[2:]}"
    caplog.set_level(logging.DEBUG, logger="components.dvc_pull")
    with GcsMediaServer(crafted.remote, BUCKET, PREFIX, busy_once={name: body_size}) as server:
        settings = {"url": f"gs://{BUCKET}/{PREFIX}", "endpointurl": server.url, "allow_anonymous_login": "true"}
        pull(str(crafted.repo), rev, ["data/raw"], tmp_path / "out", remote_config=settings, jobs=1)
        asked = [request for request in server.requests if crafted.hello[2:] in request]
    assert (tmp_path / "out/data/raw/a.txt").read_bytes() == b"hello\n"
    assert len(asked) == 2, asked  # the 503, then the object: no third try after a misread answer
    retries = [r for r in caplog.records if "retrying" in r.getMessage() or "attempt" in r.getMessage()]
    assert len(retries) == 1 and "HTTP 503" in retries[0].getMessage()


# --- a server that accepts connections and never answers --------------------------------------------


def _capture_everything(caplog) -> None:
    caplog.set_level(logging.DEBUG)
    for name in LIBRARY_LOGGERS:
        caplog.set_level(logging.DEBUG, logger=name)


def _assert_loggers_propagate(caplog) -> None:
    """Records of the libraries' loggers reach the root's handlers (and so the capture).

    A logger's own level may drop records (DVC sets aiohttp's to CRITICAL): those reach no
    handler at all, so they cannot leak; what matters is that nothing diverts the others.
    """
    for name in LIBRARY_LOGGERS + ("dvc.fs", "fsspec.http", "urllib3.connectionpool"):
        marker = f"propagation probe {name}"
        logger = logging.getLogger(name)
        assert not logger.disabled, f"logger {name} is disabled"
        logger.handle(logger.makeRecord(name, logging.WARNING, __file__, 0, marker, (), None))
        assert any(r.getMessage() == marker for r in caplog.records), f"logger {name} does not propagate"


def test_frozen_server_fails_within_the_object_deadline(crafted, tmp_path, caplog):
    _capture_everything(caplog)
    with FrozenServer() as frozen:
        settings = {"url": f"gs://{BUCKET}/{PREFIX}", "endpointurl": frozen.url, "allow_anonymous_login": "true"}
        began = time.monotonic()
        error = failed_pull(
            crafted.repo, "main", tmp_path, settings, connect_timeout=1, read_timeout=1, object_deadline=3
        )
        elapsed = time.monotonic() - began
    assert elapsed < 8, f"took {elapsed:.1f} s"
    message = str(error)
    assert "'storage'" in message
    assert re.search(r"did not answer|not respond|timed out|time-out|timeout", message, re.IGNORECASE), message
    loud = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(loud) <= 4, [f"{r.name}: {r.getMessage()}" for r in loud]
    assert not [r for r in loud if r.name.startswith("urllib3")], [r.getMessage() for r in loud]


# --- credentials never leak ---------------------------------------------------------------------------


@pytest.mark.parametrize("case", ["gs-endpoint-frozen", "gs-endpoint-refused", "http-url-refused"])
def test_credentials_in_remote_urls_never_reach_messages_or_logs(crafted, tmp_path, caplog, capfd, case):
    _capture_everything(caplog)
    with FrozenServer() as frozen:
        port = frozen.port if case == "gs-endpoint-frozen" else refused_port()
        if case.startswith("gs"):
            settings = {
                "url": f"gs://{BUCKET}/{PREFIX}",
                "endpointurl": f"http://user:{PASSWORD}@127.0.0.1:{port}",
                "allow_anonymous_login": "true",
            }
        else:
            settings = {"url": f"http://user:{PASSWORD}@127.0.0.1:{port}/"}
        began = time.monotonic()
        error = failed_pull(
            crafted.repo, "main", tmp_path, settings, connect_timeout=1, read_timeout=1, object_deadline=3
        )
        assert time.monotonic() - began < 30
    assert "'storage'" in str(error)
    captured = capfd.readouterr()
    for where, text in [
        ("the error", full_text(error)),
        ("the log", caplog.text),
        ("stdout", captured.out),
        ("stderr", captured.err),
    ]:
        assert PASSWORD not in text, f"{where} shows the password: {text[-2000:]}"
    for record in caplog.records:
        assert PASSWORD not in record.getMessage(), record.name
    _assert_loggers_propagate(caplog)


MALFORMED_KEYS = {
    "not-json": "this is not json MARKER-7d3f",
    "json-without-type": json.dumps({"client_email": "MARKER-7d3f@example.com", "private_key": "MARKER-7d3f"}),
    "service-account-without-private-key": json.dumps(
        {"type": "service_account", "client_email": "MARKER-7d3f@example.com", "project_id": "MARKER-7d3f"}
    ),
    # Passes the shape check; google-auth cannot load the key (it once fell back to anonymous access).
    "service-account-with-a-broken-private-key": json.dumps(
        {
            "type": "service_account",
            "client_email": "puller@example.com",
            "private_key": "-----BEGIN PRIVATE KEY-----\nMARKER-7d3f\n-----END PRIVATE KEY-----\n",
            "token_uri": "http://127.0.0.1:9/token",
        }
    ),
}


def test_unusable_application_default_credentials_are_named(crafted, crafted_gcs, tmp_path, monkeypatch, caplog):
    """gcloud's ADC file, broken: named, never a silent fall back to anonymous access (endpointurl is set)."""
    gcloud = tmp_path / "gcloud"
    gcloud.mkdir()
    adc = gcloud / "application_default_credentials.json"
    adc.write_text(MALFORMED_KEYS["not-json"])
    monkeypatch.setenv("CLOUDSDK_CONFIG", str(gcloud))
    monkeypatch.delenv("GOOGLE_APPLICATION_CREDENTIALS", raising=False)
    settings = {k: v for k, v in crafted_gcs.items() if k != "allow_anonymous_login"}
    caplog.set_level(logging.DEBUG)
    error = failed_pull(crafted.repo, "main", tmp_path, settings)
    assert str(adc) in str(error) and "Application Default Credentials" in str(error)
    assert "MARKER-7d3f" not in full_text(error) and "MARKER-7d3f" not in caplog.text


def settings_with_key(gcs_settings: dict, key_file: Path, via: str, monkeypatch) -> dict:
    """Remote settings that authenticate with ``key_file``, named by ``credentialpath`` or the environment."""
    settings = {k: v for k, v in gcs_settings.items() if k != "allow_anonymous_login"}
    if via == "credentialpath":
        monkeypatch.delenv("GOOGLE_APPLICATION_CREDENTIALS", raising=False)
        settings["credentialpath"] = str(key_file)
    else:
        monkeypatch.setenv("GOOGLE_APPLICATION_CREDENTIALS", str(key_file))
    return settings


@pytest.mark.parametrize("via", ["GOOGLE_APPLICATION_CREDENTIALS", "credentialpath"])
@pytest.mark.parametrize("kind", list(MALFORMED_KEYS))
def test_malformed_key_file_is_named_never_shown(crafted, crafted_gcs, tmp_path, monkeypatch, caplog, kind, via):
    key_file = tmp_path / "keys" / "key.json"
    key_file.parent.mkdir()
    key_file.write_text(MALFORMED_KEYS[kind])
    settings = settings_with_key(crafted_gcs, key_file, via, monkeypatch)
    caplog.set_level(logging.DEBUG)
    error = failed_pull(crafted.repo, "main", tmp_path, settings)
    assert str(key_file) in str(error)
    assert "MARKER-7d3f" not in full_text(error)
    assert "MARKER-7d3f" not in caplog.text


@pytest.fixture(scope="module")
def private_key_pem() -> str:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()


@pytest.mark.parametrize("via", ["GOOGLE_APPLICATION_CREDENTIALS", "credentialpath"])
def test_refused_token_refresh_names_remote_and_key_file(
    crafted, crafted_gcs, tmp_path, monkeypatch, caplog, private_key_pem, via
):
    caplog.set_level(logging.DEBUG)
    with TokenRefusingServer() as tokens:
        key_file = tmp_path / "keys" / "key.json"
        key_file.parent.mkdir()
        key_file.write_text(
            json.dumps(
                {
                    "type": "service_account",
                    "project_id": "test",
                    "private_key_id": "1",
                    "private_key": private_key_pem,
                    "client_email": "puller@test.iam.gserviceaccount.com",
                    "token_uri": tokens.token_uri,
                }
            )
        )
        settings = settings_with_key(crafted_gcs, key_file, via, monkeypatch)
        error = failed_pull(crafted.repo, "main", tmp_path, settings)
        assert tokens.requests, "the token endpoint was never asked"
    message = str(error)
    assert "'storage'" in message and str(key_file) in message, message
    key_body = private_key_pem.splitlines()[1]  # a line of the key itself
    assert key_body not in full_text(error)
    assert key_body not in caplog.text and "PRIVATE KEY" not in caplog.text


# --- empty directories and paths inside a tracked directory, as `dvc pull` has them ------------------


@pytest.fixture(scope="module")
def empty_dir_repo(tmp_path_factory) -> tuple[Path, Path]:
    """A repository tracking an empty directory ``data/empty``, and a clone after stock `dvc pull`."""
    base = tmp_path_factory.mktemp("empty-dir")
    repo, remote, reference = base / "repo", base / "remote", base / "reference"
    repo.mkdir()
    git("init", "-q", cwd=repo)
    subprocess.run([*DVC, "init", "-q"], cwd=repo, check=True)
    subprocess.run([*DVC, "remote", "add", "-d", "storage", str(remote)], cwd=repo, check=True, capture_output=True)
    (repo / "data/empty").mkdir(parents=True)
    subprocess.run([*DVC, "add", "-q", "data/empty"], cwd=repo, check=True)
    git("add", "-A", cwd=repo)
    git("commit", "-q", "-m", "an empty directory", cwd=repo)
    subprocess.run([*DVC, "push", "-q"], cwd=repo, check=True)
    subprocess.run(["git", "clone", "-q", str(repo), str(reference)], check=True)
    subprocess.run([*DVC, "pull", "-q"], cwd=reference, check=True)
    assert (reference / "data/empty").is_dir()
    return repo, reference


def test_empty_tracked_directory_is_created(empty_dir_repo, tmp_path):
    repo, reference = empty_dir_repo
    result = pull(str(repo), "main", ["data/empty"], tmp_path / "out")
    assert (tmp_path / "out/data/empty").is_dir()
    assert same_tree(tmp_path / "out/data/empty", reference / "data/empty")
    assert result.file_count == 0


@pytest.fixture(scope="module")
def subpath_references(digits_repo, tmp_path_factory) -> dict[str, Path]:
    """For each path inside data/raw, a fresh clone after stock `dvc pull <path>`."""
    base = tmp_path_factory.mktemp("subpaths")
    clones = {}
    for path in ("data/raw/images", "data/raw/labels.csv"):
        clone = base / Path(path).name
        subprocess.run(["git", "clone", "-q", digits_repo.repo_url, str(clone)], check=True)
        subprocess.run([*DVC, "pull", "-q", "-j", "4", path], cwd=clone, check=True)
        clones[path] = clone
    return clones


def _listing(root: Path) -> list[str]:
    return sorted(p.relative_to(root).as_posix() for p in root.rglob("*"))


def test_directory_inside_a_tracked_directory(digits_repo, subpath_references, tmp_path):
    reference = subpath_references["data/raw/images"]
    pull(digits_repo.repo_url, "main", ["data/raw/images"], tmp_path / "out")
    out = tmp_path / "out"
    assert same_tree(out / "data/raw/images", reference / "data/raw/images")
    # Nothing else of data/raw: what `dvc pull data/raw/images` materialises under data/raw.
    assert sorted(os.listdir(out / "data/raw")) == sorted(os.listdir(reference / "data/raw")) == ["images"]
    assert os.listdir(out) == ["data"] and os.listdir(out / "data") == ["raw"]


def test_file_inside_a_tracked_directory(digits_repo, subpath_references, tmp_path):
    reference = subpath_references["data/raw/labels.csv"]
    pull(digits_repo.repo_url, "main", ["data/raw/labels.csv"], tmp_path / "out")
    out = tmp_path / "out"
    assert _listing(out / "data/raw") == _listing(reference / "data/raw") == ["labels.csv"]
    assert (out / "data/raw/labels.csv").read_bytes() == (reference / "data/raw/labels.csv").read_bytes()
    assert os.listdir(out) == ["data"] and os.listdir(out / "data") == ["raw"]


@pytest.mark.parametrize("path", ["data/raw/no-such-file.csv", "data/raw/images/no-such-dir"])
def test_missing_path_inside_a_tracked_directory(digits_repo, tmp_path, path):
    out = tmp_path / "out"
    with pytest.raises(DvcPullError) as caught:
        pull(digits_repo.repo_url, "main", [path], out)
    assert repr(path) in str(caught.value) or path in str(caught.value), str(caught.value)
    assert not out.exists()
    assert sorted(os.listdir(tmp_path)) == []
