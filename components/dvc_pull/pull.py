"""Materialise DVC-tracked paths of a git revision into a directory.

Plain Python over git and DVC's own API, no KFP. ``pull`` clones the
repository, checks out the revision, checks that every path is tracked by DVC,
applies remote settings locally (never committed, never logged), fetches from
the remote and moves the files into the output directory, which appears only
when everything succeeded.

Credentials never travel as parameters. For a ``gs://`` remote they come from
the file named by ``GOOGLE_APPLICATION_CREDENTIALS`` (in a cluster, a
Kubernetes Secret mounted as a volume) or, without it, from Application
Default Credentials such as GKE Workload Identity.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import socket
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path, PurePosixPath
from urllib.parse import urlsplit

from components.common.artifacts import atomic_directory
from components.common.git import (
    absolute_if_local,
    git_message,
    is_local_path,
    is_transient,
    run_git,
    run_git_remote,
    unknown_revision_message,
)
from components.dvc_pull import manifests, materialise, sources
from components.dvc_pull.redaction import redact_text, redact_url, redacted_logs, url_secrets

log = logging.getLogger(__name__)

# Remote settings that hold secrets: they must come from mounted files instead.
SECRET_SETTINGS = frozenset(
    {
        "password",
        "access_key_id",
        "secret_access_key",
        "session_token",
        "token",
        "key",
        "account_key",
        "sas_token",
        "connection_string",
        "client_secret",
        "gdrive_client_secret",
        "ask_password",
        "key_file",
    }
)
CREDENTIAL_TYPES = ("service_account", "authorized_user", "external_account", "impersonated_service_account")


class DvcPullError(RuntimeError):
    """A pull that cannot succeed; the message says which input is wrong and what would be valid."""


class DvcPullInputError(DvcPullError, ValueError):
    """A parameter is wrong on its face, before any repository or remote is contacted."""


@dataclass
class PullResult:
    repo_url: str
    revision: str
    commit: str
    remote: str
    paths: list[str]
    md5: dict[str, str]  # DVC hash of each path ("<md5>.dir" for directories)
    file_count: int
    total_bytes: int
    fetched_objects: int = -1  # downloaded by the fast path (-1: DVC's transfer was used)
    cached_objects: int = -1  # already in the DVC cache, not fetched again
    extra: dict = field(default_factory=dict)

    def metadata(self) -> dict:
        """Flat, JSON-friendly artifact metadata."""
        payload = asdict(self)
        payload.pop("extra")
        return payload


def validate_inputs(
    repo_url: str,
    rev: str,
    paths: Sequence[str],
    remote_config: Mapping[str, object] | None = None,
    jobs: int = 4,
    **timeouts: float,
) -> None:
    """Checks that need nothing but the parameters; run at pipeline build time too.

    ``timeouts``: ``connect_timeout``, ``read_timeout``, ``object_deadline`` in seconds.
    """
    if not repo_url or not isinstance(repo_url, str):
        raise DvcPullInputError(
            "repo_url is empty: give a git URL (https://, ssh://, git@host:org/repo) or a local path"
        )
    parts = urlsplit(repo_url)
    if parts.password or (parts.scheme in ("http", "https") and parts.username):
        raise DvcPullInputError(
            f"repo_url {redact_url(repo_url)} embeds credentials; pass a URL without them and mount "
            "git credentials from a Kubernetes Secret instead"
        )
    if not rev or not isinstance(rev, str) or rev.startswith("-") or any(c.isspace() for c in rev):
        raise DvcPullInputError(f"rev {rev!r} is not a valid git revision: give a branch, tag or commit SHA")
    if isinstance(paths, str) or not paths:
        raise DvcPullInputError(f"paths must be a non-empty list of DVC-tracked paths, got {paths!r}")
    for path in paths:
        pure = PurePosixPath(path)
        if not path or pure.is_absolute() or ".." in pure.parts:
            raise DvcPullInputError(
                f"path {path!r} must be relative to the repository root and stay inside it (e.g. 'data/raw')"
            )
    normalised = [PurePosixPath(path).as_posix() for path in paths]
    for path in normalised:
        overlapping = [other for other in normalised if other != path and other.startswith(path + "/")]
        if overlapping or normalised.count(path) > 1:
            raise DvcPullInputError(
                f"path {path!r} is given twice or contains {overlapping[0]!r}; give each DVC path once"
                if overlapping
                else f"path {path!r} is given twice; give each DVC path once"
            )
    if not isinstance(jobs, int) or jobs < 1:
        raise DvcPullInputError(f"jobs must be an integer >= 1, got {jobs!r}")
    for name, value in timeouts.items():
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value <= 3600:
            raise DvcPullInputError(f"{name} must be a number of seconds in (0, 3600], got {value!r}")
    for key in remote_config or {}:
        if key.lower() in SECRET_SETTINGS:
            raise DvcPullInputError(
                f"remote setting {key!r} is a credential and must not be passed as a parameter; mount it "
                "from a Kubernetes Secret (for GCS: a key file named by GOOGLE_APPLICATION_CREDENTIALS)"
            )


def check_gcs_credentials(remote_settings: Mapping[str, object]) -> str:
    """Fail early, with a clear message, when GCS credentials are missing or malformed.

    Returns a description of where credentials come from (never their content).
    """
    if sources.dvc_bool(remote_settings.get("allow_anonymous_login", "")):
        return "anonymous access (allow_anonymous_login)"
    path = remote_settings.get("credentialpath") or os.environ.get("GOOGLE_APPLICATION_CREDENTIALS")
    source = "credentialpath" if remote_settings.get("credentialpath") else "GOOGLE_APPLICATION_CREDENTIALS"
    if path:
        path = Path(str(path))
        if not path.is_file():
            raise DvcPullError(
                f"GCS credentials file {path} (from {source}) does not exist; mount the service-account "
                "key Secret there or fix the path"
            )
        try:
            payload = json.loads(path.read_text())
        except (OSError, ValueError) as error:
            raise DvcPullError(
                f"GCS credentials file {path} (from {source}) is not a readable JSON key file: {type(error).__name__}"
            ) from None
        kind = payload.get("type") if isinstance(payload, dict) else None
        if kind not in CREDENTIAL_TYPES:
            raise DvcPullError(
                f"GCS credentials file {path} (from {source}) has type {kind!r}; expected one of "
                f"{', '.join(CREDENTIAL_TYPES)}"
            )
        if kind == "service_account" and not (payload.get("client_email") and payload.get("private_key")):
            raise DvcPullError(
                f"GCS credentials file {path} (from {source}) is a service_account key without "
                "client_email or private_key"
            )
        return f"{kind} key file from {source}"
    if remote_settings.get("endpointurl"):
        # An emulator or private endpoint: let it decide.
        return "no credentials (custom endpointurl)"
    import google.auth
    from google.auth.exceptions import DefaultCredentialsError

    try:
        google.auth.default()
    except DefaultCredentialsError:
        adc_file = sources.application_default_credentials_file()
        if adc_file:
            raise DvcPullError(sources.unusable_adc_message(adc_file)) from None
        raise DvcPullError(
            "no GCS credentials: set GOOGLE_APPLICATION_CREDENTIALS to a service-account key file mounted "
            "from a Kubernetes Secret, or run with Workload Identity"
        ) from None
    return "Application Default Credentials"


def _clone_at(repo_url: str, rev: str, destination: Path) -> str:
    """Clone ``repo_url`` into ``destination`` without a work tree; return the commit SHA of ``rev``.

    A repository behind a URL is cloned without file contents (``--filter=blob:none``, where the
    server allows it): the few files read later are fetched on demand.
    """
    options = ["--quiet", "--no-checkout"]
    if is_local_path(repo_url):
        repo_url = absolute_if_local(repo_url)  # a relative path: git runs from another directory
    else:
        options.append("--filter=blob:none")
    cloned = run_git_remote(
        "clone", *options, repo_url, str(destination), cwd=destination.parent, what=f"git clone {redact_url(repo_url)}"
    )
    if cloned.returncode != 0:
        error = DvcPullError if is_transient(cloned.stderr) else DvcPullInputError
        raise error(
            f"cannot clone {redact_url(repo_url)}: {git_message(cloned.stderr)}; check the URL and that "
            "the repository is reachable from this pod"
        )
    commit = None
    for candidate in (rev, f"origin/{rev}"):
        parsed = run_git("rev-parse", "--verify", "--quiet", f"{candidate}^{{commit}}", cwd=destination)
        if parsed.returncode == 0:
            commit = parsed.stdout.strip()
            break
    if commit is None and re.fullmatch(r"[0-9a-fA-F]{7,40}", rev):
        # A commit that no branch or tag advertises can still be fetched by SHA.
        if run_git("fetch", "--quiet", "origin", rev, cwd=destination).returncode == 0:
            commit = run_git("rev-parse", "FETCH_HEAD", cwd=destination).stdout.strip()
    if commit is None:
        refs = run_git("for-each-ref", "--format=%(refname:short)", "refs/remotes/origin", "refs/tags", cwd=destination)
        known = sorted(r.removeprefix("origin/") for r in refs.stdout.split() if r != "origin/HEAD" and r != "origin")
        raise DvcPullInputError(unknown_revision_message(rev, redact_url(repo_url), known))
    return commit


def _checkout(destination: Path, commit: str) -> None:
    checked_out = run_git("checkout", "--quiet", "--detach", commit, cwd=destination)
    if checked_out.returncode != 0:
        raise DvcPullError(f"cannot check out {commit}: {git_message(checked_out.stderr)}")


def _read_blobs(checkout: Path, commit: str, names: Sequence[str]) -> dict[str, bytes | None]:
    """The content of each file at ``commit`` (None where absent), read from git without a checkout."""
    request = "".join(f"{commit}:{name}\n" for name in names).encode()
    done = run_git("cat-file", "--batch", cwd=checkout, input=request)
    blobs: dict[str, bytes | None] = dict.fromkeys(names)
    if done.returncode != 0:
        return blobs
    out, position = done.stdout, 0
    for name in names:
        end = out.find(b"\n", position)
        if end < 0:
            break
        header = out[position:end].split()
        position = end + 1
        if len(header) == 3 and header[2].isdigit():
            size = int(header[2])
            if header[1] == b"blob":
                blobs[name] = out[position : position + size]
            position += size + 1
    return blobs


def _repo_relative(repo, out) -> str:
    return PurePosixPath(os.path.relpath(out.fs_path, repo.root_dir)).as_posix()


def _tracked_outputs(repo) -> list[str]:
    return sorted({_repo_relative(repo, out) for stage in repo.index.stages for out in stage.outs})


def _remote_settings(config: Mapping, remote: str) -> tuple[str, dict]:
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


def _apply_remote_config(repo, name: str, settings: Mapping[str, object]) -> None:
    from dvc.config import ConfigError

    try:
        with repo.config.edit("local") as local:
            section = local.setdefault("remote", {}).setdefault(name, {})
            for key, value in settings.items():
                section[key] = value if isinstance(value, str) else json.dumps(value)
    except ConfigError as error:
        raise DvcPullError(f"invalid remote setting for remote {name!r}: {error}") from None


# --- Reading what DVC would read, without DVC -------------------------------------------------------
# DVC takes about half a second to import and open a repository. For the common case (outputs
# tracked by `.dvc` files, DVC 3 md5 hashes, a gs:// or directory remote with plain settings) the
# same answers come from two small files read straight out of git; anything else goes to DVC.

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


def _absolute_remote_paths(remote_config: Mapping[str, object]) -> dict:
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


def _read_config(checkout: Path, repo_config: bytes) -> dict | None:
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
        _merge(merged, _parse_config(repo_config.decode(), str(checkout / ".dvc")))
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


def _outputs_from_dvc_files(blobs: Mapping[str, bytes | None], paths: Sequence[str]) -> list[manifests.Output] | None:
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
        outputs.append(manifests.Output(tracked, md5, within))
    return outputs


@dataclass
class _DirectPlan:
    outputs: list[manifests.Output]
    remote: str
    url: str
    settings: dict
    cache_dir: str  # from the DVC config; empty for none


def _plan_direct(
    checkout: Path, commit: str, paths: Sequence[str], remote: str, remote_config: Mapping[str, object]
) -> _DirectPlan | None:
    """Everything the fast path needs, read from git alone; None where DVC must take over."""
    if any("\n" in path for path in paths):
        return None
    names = [".dvc/config", *dict.fromkeys(n for p in paths for n in _candidate_dvc_files(p))]
    blobs = _read_blobs(checkout, commit, names)
    if blobs[".dvc/config"] is None:
        return None
    config = _read_config(checkout, blobs[".dvc/config"])
    if config is None:
        return None
    name, settings = _remote_settings(config, remote)  # an unknown remote fails here, as with DVC
    settings.update(remote_config)
    url = str(settings.get("url", ""))
    scheme = urlsplit(url).scheme
    kind = "gs" if scheme == "gs" else "local" if scheme in ("", "file") and url else None
    if kind is None or set(settings) - _DIRECT_SETTINGS[kind]:
        return None
    if sources.dvc_bool(settings.get("allow_anonymous_login", "")) is None:
        return None
    outputs = _outputs_from_dvc_files(blobs, paths)
    if outputs is None:
        return None
    cache_dir = (config.get("cache") or {}).get("dir") or ""
    return _DirectPlan(outputs=outputs, remote=name, url=url, settings=settings, cache_dir=str(cache_dir))


def _settings_secrets(settings: Mapping[str, object]) -> set[str]:
    """Every secret a remote's settings carry: URL passwords and credential-valued keys."""
    secrets: set[str] = set()
    for key, value in settings.items():
        if not isinstance(value, str):
            continue
        if key.lower() in SECRET_SETTINGS and len(value) >= 3:
            secrets.add(value)
        if "://" in value:
            secrets |= url_secrets(value)
    return secrets


def _probe_endpoint(name: str, url: str, settings: Mapping[str, object], timeout: float) -> None:
    """A TCP connect to an object store's endpoint: fails in seconds where client retries take minutes."""
    scheme = urlsplit(url).scheme
    if scheme == "gs":
        endpoint = sources.gcs_endpoint(settings)
    elif scheme in ("http", "https", "webdav", "webdavs"):
        endpoint = url.replace("webdav", "http", 1)
    else:
        endpoint = str(settings.get("endpointurl") or "")
    if not endpoint:
        return
    parts = urlsplit(endpoint)
    port = parts.port or (443 if parts.scheme == "https" else 80)
    try:
        socket.create_connection((parts.hostname, port), timeout=timeout).close()
    except OSError as error:
        raise DvcPullError(
            f"DVC remote {name!r} ({redact_url(url)}) is unreachable: cannot connect to {parts.hostname}:{port} "
            f"({error.strerror or error})"
        ) from None


def _check_remote_reachable(repo, name: str, url: str, settings: Mapping[str, object], timeout: float) -> None:
    """Fail fast on a remote that does not exist or does not answer, before any transfer."""
    _probe_endpoint(name, url, settings, timeout)
    try:
        odb = repo.cloud.get_remote_odb(name)
        exists = odb.fs.exists(odb.path)
    except Exception as error:
        raise DvcPullError(
            f"DVC remote {name!r} ({redact_url(url)}) is unreachable: {type(error).__name__}: {_first_line(error)}"
        ) from None
    if not exists:
        raise DvcPullError(
            f"DVC remote {name!r} ({redact_url(url)}) does not exist or is empty: nothing was ever pushed there"
        )


def _open_source(
    name: str, url: str, settings: Mapping[str, object], jobs: int, timeouts: sources.Timeouts
) -> sources.ObjectSource:
    """The fast path's reader of ``url``, after checking credentials and that the remote answers."""
    if url.startswith("gs://"):
        log.info("GCS credentials: %s", check_gcs_credentials(settings))
    _probe_endpoint(name, url, settings, timeouts.connect)  # a missing object or listing is reported by the fetch
    try:
        source = sources.source_for(url, settings, connections=jobs, timeouts=timeouts)
    except sources.RemoteError as error:  # a key file google-auth cannot load: the message names it
        raise DvcPullError(f"cannot open DVC remote {name!r} ({redact_url(url)}): {error}") from None
    except Exception as error:
        raise DvcPullError(
            f"cannot open DVC remote {name!r} ({redact_url(url)}): {type(error).__name__}: {_first_line(error)}"
        ) from None
    if isinstance(source, sources.LocalSource) and not source.root.is_dir():
        raise DvcPullError(
            f"DVC remote {name!r} ({redact_url(url)}) does not exist or is empty: nothing was ever pushed there"
        )
    return source


def _first_line(error: BaseException) -> str:
    text = str(error).strip()
    return redact_text(text.splitlines()[0]) if text else type(error).__name__


def _summarise_tree(root: Path) -> tuple[int, int]:
    file_count = total_bytes = 0
    for directory, _, names in os.walk(root):
        for file_name in names:
            file_count += 1
            total_bytes += os.path.getsize(os.path.join(directory, file_name))
    return file_count, total_bytes


def pull(
    repo_url: str,
    rev: str,
    paths: Sequence[str],
    output_dir: str | Path,
    remote: str = "",
    remote_config: Mapping[str, object] | None = None,
    jobs: int = 4,
    cache_dir: str = "",
    connect_timeout: float = 10.0,
    read_timeout: float = 20.0,
    object_deadline: float = 60.0,
) -> PullResult:
    """Pull ``paths`` of ``repo_url`` at ``rev`` into ``output_dir``.

    The output keeps the repository layout (``output_dir/data/raw/...``). It
    appears only when every path was pulled; on any failure it is absent. A path
    may be a DVC output or lie inside a tracked directory (``data/raw/images``).
    ``cache_dir`` points DVC at a shared cache (e.g. on a PVC) so objects
    already there are not fetched again. A remote that stops answering fails the
    pull after ``object_deadline`` seconds on one object, waiting at most
    ``connect_timeout`` for a connection and ``read_timeout`` for each read.
    """
    remote_config = dict(remote_config or {})
    validate_inputs(
        repo_url,
        rev,
        paths,
        remote_config,
        jobs,
        connect_timeout=connect_timeout,
        read_timeout=read_timeout,
        object_deadline=object_deadline,
    )
    timeouts = sources.Timeouts(connect_timeout, read_timeout, object_deadline)
    with redacted_logs() as secrets:
        secrets |= _settings_secrets(remote_config)
        try:
            return _pull(
                repo_url, rev, paths, Path(output_dir), remote, remote_config, jobs, cache_dir, timeouts, secrets
            )
        except DvcPullError as error:
            message = redact_text(str(error), secrets)
            if message == str(error):
                raise
            raise type(error)(message) from None


def _pull(
    repo_url: str,
    rev: str,
    paths: Sequence[str],
    output_dir: Path,
    remote: str,
    remote_config: dict,
    jobs: int,
    cache_dir: str,
    timeouts: sources.Timeouts,
    secrets: set[str],
) -> PullResult:
    remote_config = _absolute_remote_paths(remote_config)
    os.environ.setdefault("DVC_NO_ANALYTICS", "1")
    # gcsfs probes each bucket's type and warns once per file when it cannot; off unless asked for.
    os.environ.setdefault("GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT", "false")

    output_dir.parent.mkdir(parents=True, exist_ok=True)
    workdir = Path(tempfile.mkdtemp(prefix=".dvc-pull-", dir=output_dir.parent))
    try:
        checkout = workdir / "repo"
        commit = _clone_at(repo_url, rev, checkout)
        log.info("resolved %s at %s to %s", redact_url(repo_url), rev, commit)
        plan = _plan_direct(checkout, commit, paths, remote, remote_config)
        if plan is not None:
            secrets |= _settings_secrets(plan.settings)
            result = _pull_direct(plan, repo_url, rev, commit, paths, output_dir, checkout, jobs, cache_dir, timeouts)
        else:
            log.debug("outputs or remote settings beyond the direct reader: DVC resolves them")
            _checkout(checkout, commit)
            result = _pull_with_dvc(
                repo_url,
                rev,
                commit,
                paths,
                output_dir,
                checkout,
                remote,
                remote_config,
                jobs,
                cache_dir,
                timeouts,
                secrets,
            )
        log.info("pulled %d files, %d bytes from remote %r", result.file_count, result.total_bytes, result.remote)
        return result
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


def _hashes(paths: Sequence[str], outputs: Sequence[manifests.Output]) -> dict[str, str]:
    """Each requested path's DVC hash: its own, or that of the tracked directory holding it."""
    return {path: output.oid for path, output in zip(paths, outputs, strict=True)}


def _pull_direct(
    plan: _DirectPlan,
    repo_url: str,
    rev: str,
    commit: str,
    paths: Sequence[str],
    output_dir: Path,
    checkout: Path,
    jobs: int,
    cache_dir: str,
    timeouts: sources.Timeouts,
) -> PullResult:
    """The fast path, DVC not even imported: outputs and remote came from git, objects come from the remote."""
    source = _open_source(plan.remote, plan.url, plan.settings, jobs, timeouts)
    cache_root = Path(cache_dir).resolve() if cache_dir else Path(plan.cache_dir or checkout / ".dvc" / "cache")
    cache = cache_root / "files" / "md5"  # DVC 3's layout
    with atomic_directory(output_dir) as staging:
        stats = _fetch_direct(source, plan.outputs, cache, staging, plan.remote, plan.url, jobs, bool(cache_dir))
        return PullResult(
            repo_url=redact_url(repo_url),
            revision=rev,
            commit=commit,
            remote=plan.remote,
            paths=list(paths),
            md5=_hashes(paths, plan.outputs),
            file_count=stats.files,
            total_bytes=stats.total_bytes,
            fetched_objects=stats.fetched,
            cached_objects=stats.cached,
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


def _pull_with_dvc(
    repo_url: str,
    rev: str,
    commit: str,
    paths: Sequence[str],
    output_dir: Path,
    checkout: Path,
    remote: str,
    remote_config: Mapping[str, object],
    jobs: int,
    cache_dir: str,
    timeouts: sources.Timeouts,
    secrets: set[str],
) -> PullResult:
    """DVC resolves outputs and remote (``dvc.yaml`` outputs, legacy hashes, any remote setting)."""
    from dvc.repo import Repo

    with Repo(str(checkout)) as repo:
        outputs, plain_md5 = _dvc_outputs(repo, checkout, commit, paths)
        name, settings = _remote_settings(repo.config, remote)
        secrets |= _settings_secrets(settings)
        _apply_remote_config(repo, name, remote_config)
        settings.update(remote_config)
        url = str(settings.get("url", ""))
        if cache_dir:
            with repo.config.edit("local") as local:
                local.setdefault("cache", {})["dir"] = str(Path(cache_dir).resolve())
        # Re-open so DVC sees the local settings written above.
    with Repo(str(checkout)) as repo:
        scheme = urlsplit(url).scheme
        layered = any(sources.dvc_bool(settings.get(key)) for key in ("version_aware", "worktree"))
        if plain_md5 and scheme in ("gs", "", "file") and not layered:
            source = _open_source(name, url, settings, jobs, timeouts)
        else:
            source = None
            if url.startswith("gs://"):
                log.info("GCS credentials: %s", check_gcs_credentials(settings))
            _check_remote_reachable(repo, name, url, settings, timeouts.connect)
        cache = Path(repo.cache.local.path)
        with atomic_directory(output_dir) as staging:
            if source is not None:
                stats = _fetch_direct(source, outputs, cache, staging, name, url, jobs, shared_cache=bool(cache_dir))
            else:
                log.info("no fast path for %s remotes: using DVC's own transfer", scheme or "these")
                _check_listings_for_dvc(repo, outputs, name, url, cache)
                _fetch_and_checkout(repo, [str(checkout / p) for p in paths], outputs, name, url, jobs)
                for path in paths:
                    target = staging / path
                    target.parent.mkdir(parents=True, exist_ok=True)
                    os.replace(checkout / path, target)
                stats = None
            file_count, total_bytes = _summarise_tree(staging)
            return PullResult(
                repo_url=redact_url(repo_url),
                revision=rev,
                commit=commit,
                remote=name,
                paths=list(paths),
                md5=_hashes(paths, outputs),
                file_count=file_count,
                total_bytes=total_bytes,
                fetched_objects=stats.fetched if stats else -1,
                cached_objects=stats.cached if stats else -1,
            )


def _missing_error(name: str, url: str, missing: list[tuple[str, str]]) -> DvcPullError:
    shown = ", ".join(f"{path} (md5 {oid})" for path, oid in missing[:10])
    more = f" and {len(missing) - 10} more" if len(missing) > 10 else ""
    return DvcPullError(
        f"{len(missing)} object(s) missing from DVC remote {name!r} ({redact_url(url)}): {shown}{more}; "
        "was `dvc push` run for this revision?"
    )


def _fetch_direct(
    source,
    outputs: Sequence[manifests.Output],
    cache: Path,
    staging: Path,
    name: str,
    url: str,
    jobs: int,
    shared_cache: bool,
):
    where = f"DVC remote {name!r} ({redact_url(url)})"
    try:
        stats = materialise.materialise(source, outputs, cache, staging, jobs=jobs, keep_in_cache=shared_cache)
    except manifests.BadManifest as bad:
        raise _bad_manifest_error(where, bad) from None
    except materialise.NotInOutput as absent:
        raise DvcPullError(
            f"path {absent.output.wanted!r} is not in the tracked directory {absent.output.path!r} "
            f"(md5 {absent.output.oid}) on {where}; give a file or folder inside it"
        ) from None
    except materialise.CorruptObject as corrupt:
        raise DvcPullError(
            f"{corrupt.path} is corrupt on {where}: expected md5 "
            f"{corrupt.oid.removesuffix('.dir')}, got {corrupt.actual}"
        ) from None
    except sources.RemoteError as error:
        raise DvcPullError(f"{where} failed: {error}") from None
    if stats.missing:
        raise _missing_error(name, url, stats.missing)
    log.info(
        "fetched %d objects (%d bytes) from %s; %d were already in the DVC cache",
        stats.fetched,
        stats.fetched_bytes,
        redact_url(url),
        stats.cached,
    )
    return stats


def _bad_manifest_error(where: str, bad: manifests.BadManifest) -> DvcPullError:
    return DvcPullError(
        f"{where} holds an unsafe or malformed listing for the tracked directory {bad.path!r} "
        f"(md5 {bad.oid}): {bad.reason}; nothing was written. Whoever can write to the remote "
        "should push the directory again with DVC"
    )


def _check_listings_for_dvc(repo, outputs: Sequence[manifests.Output], name: str, url: str, cache: Path) -> None:
    """Check each directory listing before DVC's own transfer acts on it (DVC would follow ``..`` out).

    The verified listing is put in DVC's cache, so DVC uses exactly the bytes checked here
    rather than asking the remote again.
    """
    import hashlib

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
            raise DvcPullError(f"{where} failed reading the listing of {output.path!r}: {_first_line(error)}") from None
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
            raise _bad_manifest_error(where, bad) from None
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
            raise _missing_error(name, url, missing) from None
        raise DvcPullError(f"dvc pull from remote {name!r} ({redact_url(url)}) failed: {_first_line(error)}") from None


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
