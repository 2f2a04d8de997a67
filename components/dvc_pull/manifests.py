"""DVC's content-addressed layout, read defensively: outputs, where each object lives, and directory listings.

A DVC output is a repository path and the md5 of its content (``Output``); a tracked
directory's md5 ends in ``.dir`` and names a JSON listing of ``{"md5", "relpath"}``
entries. Every object lives at ``files/md5/<first two hex>/<rest>`` on a remote and in
a cache (``object_key``, ``cache_path``), and an md5 becomes a path only after it has
matched the pattern of one.

A listing comes from a remote someone else controls (a shared bucket), so
``parse_manifest`` checks it before anything is written: every path stays below the
tracked directory, no path is claimed twice, no file is also a directory.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

MAX_MANIFEST_BYTES = 256 << 20  # a listing of millions of files; anything larger is not a DVC manifest

OID = re.compile(r"[0-9a-f]{32}(\.dir)?")
FILE_MD5 = re.compile(r"[0-9a-f]{32}")


@dataclass(frozen=True)
class Output:
    """A DVC output to materialise: its repository path and hash, optionally one sub-path inside it."""

    path: str
    oid: str
    within: str = ""  # a path inside a tracked directory, relative to it ("" for the whole output)

    @property
    def wanted(self) -> str:
        return f"{self.path}/{self.within}" if self.within else self.path


class BadManifest(Exception):
    """A ``.dir`` listing that is not a safe DVC manifest; ``path`` is the tracked output it belongs to."""

    def __init__(self, oid: str, reason: str):
        super().__init__(oid, reason)
        self.oid, self.reason = oid, reason
        self.path = ""


def _object_relpath(oid: str) -> str:
    """``<first two hex>/<rest>``, where DVC keeps ``oid`` under ``files/md5/`` on a remote and in a cache."""
    if not OID.fullmatch(oid):  # callers check first; this keeps a bad name from ever becoming a path
        raise ValueError(f"not a DVC md5: {oid!r}")
    return f"{oid[:2]}/{oid[2:]}"


def object_key(oid: str) -> str:
    return f"files/md5/{_object_relpath(oid)}"


def cache_path(cache: Path, oid: str) -> str:
    """Where ``oid`` lies in a cache's ``files/md5`` directory ``cache``."""
    return os.path.join(cache, _object_relpath(oid))


@dataclass(frozen=True)
class Entry:
    relpath: str
    md5: str
    executable: bool = False


def _relpath_problem(relpath: object) -> str | None:
    if not isinstance(relpath, str):
        return "relpath is not a string"
    if not relpath:
        return "relpath is empty"
    if "\0" in relpath:
        return "relpath contains a NUL byte"
    if relpath.startswith("/") or "\\" in relpath:
        return "relpath is not a relative POSIX path"
    parts = relpath.split("/")
    if any(part in ("", ".", "..") for part in parts):
        return "relpath has an empty, '.' or '..' segment"
    return None


def parse_manifest(data: bytes, oid: str) -> list[Entry]:
    """The entries of the ``.dir`` object ``data``, or BadManifest saying why it cannot be trusted.

    A valid manifest is a JSON list of ``{"md5": <32 hex>, "relpath": <relative path>}``
    objects (``isexec`` optional), where no path is claimed twice and no file is also
    a directory. Paths stay below the tracked directory: no absolute paths, no ``..``.
    """
    try:
        listing = json.loads(data)
    except (ValueError, UnicodeDecodeError):
        raise BadManifest(oid, "the listing is not JSON") from None
    if not isinstance(listing, list):
        raise BadManifest(oid, f"the listing is a JSON {type(listing).__name__}, not a list of entries")
    entries: list[Entry] = []
    seen: set[str] = set()
    for item in listing:
        if not isinstance(item, dict):
            raise BadManifest(oid, f"entry {item!r} is not an object")
        relpath, md5 = item.get("relpath"), item.get("md5")
        problem = _relpath_problem(relpath)
        if problem:
            raise BadManifest(oid, f"{problem}: entry {_shown(item)}")
        if not isinstance(md5, str) or not FILE_MD5.fullmatch(md5):
            raise BadManifest(oid, f"md5 {md5!r} is not 32 lowercase hex digits: entry {_shown(item)}")
        if relpath in seen:
            raise BadManifest(oid, f"relpath {relpath!r} is listed twice")
        seen.add(relpath)
        entries.append(Entry(relpath, md5, item.get("isexec") is True))
    for entry in entries:
        parent = PurePosixPath(entry.relpath).parent
        while parent.parts:
            if parent.as_posix() in seen:
                raise BadManifest(
                    oid, f"{parent.as_posix()!r} is listed as a file and as the directory of {entry.relpath!r}"
                )
            parent = parent.parent
    return entries


def _shown(item: Mapping) -> str:
    text = repr({key: item.get(key) for key in ("md5", "relpath") if key in item} or item)
    return text if len(text) <= 300 else text[:300] + "...}"
