"""DVC's own path: outputs and remote resolved by ``dvc.repo.Repo``, objects by the fast fetch or DVC's transfer.

It takes what the direct reader leaves to DVC: outputs defined in ``dvc.yaml``, ``.dvc``
files with fields beyond the plain case (legacy DVC 2 hashes, ``cache: false``, a
per-output remote, executable files), remote settings beyond the plain ones, an unreadable
config. Objects of ``gs://`` and directory remotes with DVC 3 hashes still come through the
fast fetch; other remotes use DVC's transfer. Before DVC's transfer runs, each directory
listing is read, verified and checked as the fast fetch checks it, and put in DVC's cache,
so DVC acts on exactly the listing that was checked (stock DVC follows ``..`` out of the
output).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path, PurePosixPath
from urllib.parse import urlsplit

from components.common.artifacts import atomic_directory
from components.dvc_pull import manifests, sources
from components.dvc_pull.checks import check_gcs_credentials, settings_secrets
from components.dvc_pull.dvc_files import remote_settings
from components.dvc_pull.errors import DvcPullError
from components.dvc_pull.redaction import redact_url
from components.dvc_pull.remote import (
    bad_manifest_error,
    fetch_objects,
    first_line,
    missing_error,
    open_source,
    probe_endpoint,
)
from components.dvc_pull.request import PullRequest, PullResult

log = logging.getLogger(__name__)


def pull_with_dvc(request: PullRequest, commit: str, checkout: Path, secrets: set[str]) -> PullResult:
    """Pull ``request`` from the work tree ``checkout`` of ``commit``, DVC resolving outputs and remote.

    The secrets of the remote's settings join ``secrets`` (masked in every message and log line).
    """
    from dvc.repo import Repo

    with Repo(str(checkout)) as repo:
        outputs, plain_md5 = _dvc_outputs(repo, checkout, commit, request.paths)
        name, settings = remote_settings(repo.config, request.remote)
        secrets |= settings_secrets(settings)
        _apply_remote_config(repo, name, request.remote_config)
        settings.update(request.remote_config)
        url = str(settings.get("url", ""))
        if request.cache_dir:
            with repo.config.edit("local") as local:
                local.setdefault("cache", {})["dir"] = str(Path(request.cache_dir).resolve())
        # Re-open so DVC sees the local settings written above.
    with Repo(str(checkout)) as repo:
        scheme = urlsplit(url).scheme
        layered = any(sources.dvc_bool(settings.get(key)) for key in ("version_aware", "worktree"))
        if plain_md5 and scheme in ("gs", "", "file") and not layered:
            source = open_source(name, url, settings, request.jobs, request.timeouts)
        else:
            source = None
            if url.startswith("gs://"):
                log.info("GCS credentials: %s", check_gcs_credentials(settings))
            _check_remote_reachable(repo, name, url, settings, request.timeouts.connect)
        cache = Path(repo.cache.local.path)
        with atomic_directory(request.output_dir) as staging:
            if source is not None:
                stats = fetch_objects(
                    source, outputs, cache, staging, name, url, request.jobs, shared_cache=bool(request.cache_dir)
                )
            else:
                log.info("no fast path for %s remotes: using DVC's own transfer", scheme or "these")
                _check_listings_for_dvc(repo, outputs, name, url, cache)
                _fetch_and_checkout(repo, [str(checkout / p) for p in request.paths], outputs, name, url, request.jobs)
                for path in request.paths:
                    target = staging / path
                    target.parent.mkdir(parents=True, exist_ok=True)
                    os.replace(checkout / path, target)
                stats = None
            file_count, total_bytes = _summarise_tree(staging)
            return request.result(
                commit,
                name,
                outputs,
                file_count,
                total_bytes,
                fetched_objects=stats.fetched if stats else -1,
                cached_objects=stats.cached if stats else -1,
            )


def _dvc_outputs(repo, checkout: Path, commit: str, paths: Sequence[str]) -> tuple[list[manifests.Output], bool]:
    """The output holding each path as DVC resolves it, and whether all are plain DVC 3 md5 outputs."""
    from dvc.exceptions import OutputNotFoundError

    outputs = []
    plain_md5 = True  # DVC 3 md5 hashes, stored under files/md5/ (legacy hashes are not)
    for path in paths:
        try:
            outs = repo.find_outs_by_path(str(checkout / path), strict=False)
        except OutputNotFoundError:
            raise DvcPullError(
                f"path {path!r} is not tracked by DVC at {commit[:12]}, nor inside a tracked directory; tracked "
                f"paths: {', '.join(_tracked_outputs(repo)) or '(none)'}"
            ) from None
        relative = PurePosixPath(path).as_posix()
        tracked = _repo_relative(repo, outs[0])
        if len(outs) != 1 or not (relative == tracked or relative.startswith(tracked + "/")):
            raise DvcPullError(
                f"path {path!r} is not a DVC output at {commit[:12]}; give one of: {', '.join(_tracked_outputs(repo))}"
            )
        within = relative[len(tracked) + 1 :] if relative != tracked else ""
        oid = outs[0].hash_info.value
        if within and not (isinstance(oid, str) and oid.endswith(".dir")):
            raise DvcPullError(f"path {path!r} lies inside {tracked!r}, which DVC tracks as a file, not a directory")
        outputs.append(manifests.Output(tracked, oid, within))
        plain_md5 = plain_md5 and outs[0].hash_info.name == "md5" and not getattr(outs[0].meta, "isexec", False)
    return outputs, plain_md5


def _repo_relative(repo, out) -> str:
    return PurePosixPath(os.path.relpath(out.fs_path, repo.root_dir)).as_posix()


def _tracked_outputs(repo) -> list[str]:
    return sorted({_repo_relative(repo, out) for stage in repo.index.stages for out in stage.outs})


def _apply_remote_config(repo, name: str, settings: Mapping[str, object]) -> None:
    from dvc.config import ConfigError

    try:
        with repo.config.edit("local") as local:
            section = local.setdefault("remote", {}).setdefault(name, {})
            for key, value in settings.items():
                section[key] = value if isinstance(value, str) else json.dumps(value)
    except ConfigError as error:
        raise DvcPullError(f"invalid remote setting for remote {name!r}: {error}") from None


def _check_remote_reachable(repo, name: str, url: str, settings: Mapping[str, object], timeout: float) -> None:
    """Fail fast on a remote that does not exist or does not answer, before any transfer."""
    probe_endpoint(name, url, settings, timeout)
    try:
        odb = repo.cloud.get_remote_odb(name)
        exists = odb.fs.exists(odb.path)
    except Exception as error:
        raise DvcPullError(
            f"DVC remote {name!r} ({redact_url(url)}) is unreachable: {type(error).__name__}: {first_line(error)}"
        ) from None
    if not exists:
        raise DvcPullError(
            f"DVC remote {name!r} ({redact_url(url)}) does not exist or is empty: nothing was ever pushed there"
        )


def _check_listings_for_dvc(repo, outputs: Sequence[manifests.Output], name: str, url: str, cache: Path) -> None:
    """Check each directory listing before DVC's own transfer acts on it (DVC would follow ``..`` out).

    The verified listing is put in DVC's cache, so DVC uses exactly the bytes checked here
    rather than asking the remote again.
    """
    where = f"DVC remote {name!r} ({redact_url(url)})"
    odb = repo.cloud.get_remote_odb(name)
    for output in outputs:
        if not output.oid.endswith(".dir"):
            continue
        try:
            data = odb.fs.cat_file(odb.oid_to_path(output.oid))
        except FileNotFoundError:
            continue  # DVC's transfer reports what is missing
        except Exception as error:
            raise DvcPullError(f"{where} failed reading the listing of {output.path!r}: {first_line(error)}") from None
        actual = hashlib.md5(data).hexdigest()
        if actual != output.oid.removesuffix(".dir"):
            raise DvcPullError(
                f"{output.path} (directory listing) is corrupt on {where}: expected md5 "
                f"{output.oid.removesuffix('.dir')}, got {actual}"
            )
        try:
            manifests.parse_manifest(data, output.oid)
        except manifests.BadManifest as bad:
            bad.path = output.path
            raise bad_manifest_error(where, bad) from None
        target = Path(manifests.cache_path(cache, output.oid))
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=".listing-", dir=target.parent)
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
        os.chmod(tmp, 0o444)
        os.replace(tmp, target)


def _fetch_and_checkout(
    repo, targets: Sequence[str], outputs: Sequence[manifests.Output], name: str, url: str, jobs: int
) -> None:
    from dvc.exceptions import DvcException

    try:
        repo.pull(targets=list(targets), remote=name, jobs=jobs)
    except DvcException as error:
        missing = _missing_from_remote(repo, name, outputs, jobs)
        if missing:
            raise missing_error(name, url, missing) from None
        raise DvcPullError(f"dvc pull from remote {name!r} ({redact_url(url)}) failed: {first_line(error)}") from None


def _missing_from_remote(repo, name: str, outputs: Sequence[manifests.Output], jobs: int) -> list[tuple[str, str]]:
    """(path, md5) of every object the remote lacks for the given DVC outputs."""
    try:
        odb = repo.cloud.get_remote_odb(name)
        missing = []
        for output in outputs:
            path, oid = output.path, output.oid
            if not oid.endswith(".dir"):
                if not odb.exists(oid):
                    missing.append((path, oid))
                continue
            if not odb.exists(oid):
                missing.append((f"{path} (directory listing)", oid))
                continue
            entries = manifests.parse_manifest(odb.fs.cat_file(odb.oid_to_path(oid)), oid)
            present = set(odb.oids_exist([entry.md5 for entry in entries], jobs=jobs))
            missing += [(f"{path}/{e.relpath}", e.md5) for e in entries if e.md5 not in present]
        return missing
    except Exception:  # diagnosis is best effort; the caller reports the original failure
        log.debug("could not list missing objects", exc_info=True)
        return []


def _summarise_tree(root: Path) -> tuple[int, int]:
    file_count = total_bytes = 0
    for directory, _, names in os.walk(root):
        for file_name in names:
            file_count += 1
            total_bytes += os.path.getsize(os.path.join(directory, file_name))
    return file_count, total_bytes
