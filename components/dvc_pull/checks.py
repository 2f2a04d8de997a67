"""The checks a pull makes before any work: its parameters, and where GCS credentials come from.

``validate_inputs`` needs nothing but the parameters, so pipelines run it when they are
built too. Credentials never travel as parameters: a remote setting that holds one is
refused, and for a ``gs://`` remote they come from the file named by
``GOOGLE_APPLICATION_CREDENTIALS`` or ``credentialpath`` (in a cluster, a Kubernetes
Secret mounted as a volume) or from Application Default Credentials such as GKE
Workload Identity (``check_gcs_credentials``).
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path, PurePosixPath
from urllib.parse import urlsplit

from components.dvc_pull.errors import DvcPullError, DvcPullInputError
from components.dvc_pull.redaction import redact_url, url_secrets
from components.dvc_pull.sources import application_default_credentials_file, dvc_bool, unusable_adc_message

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
    if dvc_bool(remote_settings.get("allow_anonymous_login", "")):
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
        adc_file = application_default_credentials_file()
        if adc_file:
            raise DvcPullError(unusable_adc_message(adc_file)) from None
        raise DvcPullError(
            "no GCS credentials: set GOOGLE_APPLICATION_CREDENTIALS to a service-account key file mounted "
            "from a Kubernetes Secret, or run with Workload Identity"
        ) from None
    return "Application Default Credentials"


def settings_secrets(settings: Mapping[str, object]) -> set[str]:
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
