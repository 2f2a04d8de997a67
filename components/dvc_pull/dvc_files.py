"""Read what DVC would read, without DVC: the repository's DVC config and its ``.dvc`` files, from git.

DVC takes about half a second to import and open a repository. For the common case (outputs
tracked by ``.dvc`` files, DVC 3 md5 hashes, a ``gs://`` or directory remote with plain
settings) the same answers come from two small files read straight out of git objects
(``plan_direct``). Anything else (outputs in ``dvc.yaml``, legacy hashes, fields or remote
settings beyond these, an unreadable config) gets None, and DVC resolves it.
The config is merged as DVC merges it: system, global, the repository's, then ``remote_config``.
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from urllib.parse import urlsplit

from components.common.git import read_blobs
from components.dvc_pull.errors import DvcPullError
from components.dvc_pull.manifests import Output
from components.dvc_pull.request import PullRequest
from components.dvc_pull.sources import dvc_bool

log = logging.getLogger(__name__)

_PATH_SETTINGS = ("url", "credentialpath")  # remote settings DVC resolves against the config file's directory
_DIRECT_SETTINGS = {
    "gs": frozenset(
        {
            "url",
            "endpointurl",
            "allow_anonymous_login",
            "credentialpath",
            "projectname",
            "jobs",
            "checksum_jobs",
            "verify",
        }
    ),
    "local": frozenset({"url", "jobs", "checksum_jobs", "verify"}),
}
_DIRECT_OUT_KEYS = frozenset({"md5", "size", "nfiles", "hash", "path"})
_MD5 = re.compile(r"[0-9a-f]{32}(\.dir)?")


def _resolve_config_path(conf_dir: str, path: str) -> str:
    """As DVC's ``Config._resolve``: URLs and absolute paths stay, relative paths join the config's directory."""
    if re.match(r"\w+://", path) or os.path.isabs(path):
        return path
    expanded = os.path.expanduser(path)
    return expanded if os.path.isabs(expanded) else os.path.abspath(os.path.join(conf_dir, path))


def absolute_remote_paths(remote_config: Mapping[str, object]) -> dict:
    """``remote_config`` with relative local paths made absolute (against the working directory)."""
    return {
        key: _resolve_config_path(os.getcwd(), value) if key in _PATH_SETTINGS and isinstance(value, str) else value
        for key, value in remote_config.items()
    }


def _merge(into: dict, update: Mapping) -> None:
    for key, value in update.items():
        if isinstance(into.get(key), dict) and isinstance(value, Mapping):
            _merge(into[key], value)
        else:
            into[key] = dict(value) if isinstance(value, Mapping) else value


def _parse_config(text: str, conf_dir: str) -> dict:
    """One DVC config file, as ``Config.load_one`` reads it (named sections split, paths resolved)."""
    from configobj import ConfigObj

    def lower(data: Mapping) -> dict:
        return {k.lower(): lower(v) if isinstance(v, Mapping) else v for k, v in data.items()}

    conf: dict = {"remote": {}}
    for section, values in lower(ConfigObj(text.splitlines()).dict()).items():
        named = re.match(r'^\s*(remote|machine|db)\s*"(.*)"\s*$', section)
        if named:
            conf.setdefault(named.group(1), {})[named.group(2)] = values
        else:
            conf[section] = values
    for settings in conf["remote"].values():
        for key in _PATH_SETTINGS:
            if isinstance(settings.get(key), str):
                settings[key] = _resolve_config_path(conf_dir, settings[key])
    cache = conf.get("cache")
    if isinstance(cache, dict) and isinstance(cache.get("dir"), str):
        cache["dir"] = _resolve_config_path(conf_dir, cache["dir"])
    return conf


def _read_config(clone: Path, repo_config: bytes) -> dict | None:
    """DVC's merged config (system, global, then the repository's), or None where DVC should read it."""
    import platformdirs

    levels = [
        os.getenv("DVC_SYSTEM_CONFIG_DIR") or platformdirs.site_config_dir("dvc", "iterative"),
        os.getenv("DVC_GLOBAL_CONFIG_DIR") or platformdirs.user_config_dir("dvc", "iterative"),
    ]
    merged: dict = {}
    try:
        for directory in levels:
            path = Path(directory) / "config"
            if path.is_file():
                _merge(merged, _parse_config(path.read_text(), str(directory)))
        _merge(merged, _parse_config(repo_config.decode(), str(clone / ".dvc")))
    except Exception:  # unreadable or malformed: DVC reports it properly
        log.debug("reading the DVC config directly failed", exc_info=True)
        return None
    return merged


def _md5_from_dvc_file(text: bytes, relative: str) -> str | None:
    """The hash in ``<relative>.dvc`` when it is a plain DVC 3 output of that path; None where DVC should read it."""
    import yaml

    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    try:
        data = yaml.load(text, Loader=loader)  # noqa: S506 - a safe loader
    except yaml.YAMLError:
        return None
    if not isinstance(data, dict) or set(data) != {"outs"} or not isinstance(data["outs"], list):
        return None
    if len(data["outs"]) != 1 or not isinstance(data["outs"][0], dict):
        return None
    out = data["outs"][0]
    # Anything beyond a plain DVC 3 output (legacy hashes, `cache: false`, a per-output remote,
    # an executable file, ...) is DVC's to handle.
    if set(out) - _DIRECT_OUT_KEYS or out.get("hash") != "md5":
        return None
    if not isinstance(out.get("md5"), str) or not _MD5.fullmatch(out["md5"]):
        return None
    target = os.path.normpath(os.path.join(os.path.dirname(relative), str(out.get("path", ""))))
    if PurePosixPath(target).as_posix() != relative:
        return None
    return out["md5"]


def _candidate_dvc_files(path: str) -> list[str]:
    """Where the output holding ``path`` may be defined: ``path.dvc``, then each parent's ``.dvc``."""
    relative = PurePosixPath(path)
    return [f"{p.as_posix()}.dvc" for p in (relative, *relative.parents) if p.parts]


def _outputs_from_dvc_files(blobs: Mapping[str, bytes | None], paths: Sequence[str]) -> list[Output] | None:
    """The output holding each path (itself, or a tracked directory above it), or None where DVC should resolve it."""
    outputs = []
    for path in paths:
        relative = PurePosixPath(path).as_posix()
        name = next((n for n in _candidate_dvc_files(path) if blobs.get(n) is not None), None)
        if name is None:
            return None
        tracked = name.removesuffix(".dvc")
        md5 = _md5_from_dvc_file(blobs[name], tracked)
        if md5 is None:
            return None
        within = relative[len(tracked) + 1 :] if tracked != relative else ""
        if within and not md5.endswith(".dir"):
            return None  # a path inside a tracked file: DVC names the error
        outputs.append(Output(tracked, md5, within))
    return outputs


@dataclass
class DirectPlan:
    """What the fast path needs: each path's output, and the remote's name, URL and settings."""

    outputs: list[Output]
    remote: str
    url: str
    settings: dict
    cache_dir: str  # from the DVC config; empty for none


def plan_direct(clone: Path, commit: str, request: PullRequest) -> DirectPlan | None:
    """Everything the fast path needs, read from the git objects of ``clone`` alone; None where DVC must take over."""
    paths = request.paths
    if any("\n" in path for path in paths):
        return None
    names = [".dvc/config", *dict.fromkeys(n for p in paths for n in _candidate_dvc_files(p))]
    blobs = read_blobs(clone, commit, names)
    if blobs[".dvc/config"] is None:
        return None
    config = _read_config(clone, blobs[".dvc/config"])
    if config is None:
        return None
    name, settings = remote_settings(config, request.remote)  # an unknown remote fails here, as with DVC
    settings.update(request.remote_config)
    url = str(settings.get("url", ""))
    scheme = urlsplit(url).scheme
    kind = "gs" if scheme == "gs" else "local" if scheme in ("", "file") and url else None
    if kind is None or set(settings) - _DIRECT_SETTINGS[kind]:
        return None
    if dvc_bool(settings.get("allow_anonymous_login", "")) is None:
        return None
    outputs = _outputs_from_dvc_files(blobs, paths)
    if outputs is None:
        return None
    cache_dir = (config.get("cache") or {}).get("dir") or ""
    return DirectPlan(outputs=outputs, remote=name, url=url, settings=settings, cache_dir=str(cache_dir))


def remote_settings(config: Mapping, remote: str) -> tuple[str, dict]:
    """The remote's name and settings in a DVC config (``repo.config`` or one read by ``_read_config``)."""
    remotes = config.get("remote") or {}
    name = remote or (config.get("core") or {}).get("remote")
    if not name:
        raise DvcPullError(
            "the repository has no default DVC remote and no remote name was given; "
            f"configured remotes: {', '.join(remotes) or '(none)'}"
        )
    if name not in remotes:
        raise DvcPullError(f"unknown DVC remote {name!r}; configured remotes: {', '.join(remotes) or '(none)'}")
    return name, dict(remotes[name])
