"""Build an OCI image from an exported bento with buildah, no Docker daemon, and push it.

Plain Python over the ``buildah`` command line, no KFP. The bento's own
generated ``env/docker/Dockerfile`` is built with ``buildah build`` using the
vfs storage driver and chroot isolation (what works unprivileged in a pod),
with its first ``FROM`` replaced by the requested base image, and labelled
with the bento's lineage (``image_labels``: bento and model tags, the bento's
labels such as dataset commit and metrics). The built image's size is logged.
Registry
credentials come from a dockerconfigjson file (a Kubernetes Secret of type
``kubernetes.io/dockerconfigjson`` mounted as a volume), named by path or by
``REGISTRY_AUTH_FILE``; their content is never read here, passed on the
command line or logged.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import subprocess
import tarfile
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger(__name__)

DOCKERFILE = "env/docker/Dockerfile"
BENTO_YAML = "bento.yaml"
LABEL_PREFIX = "io.kfp-torch-lifecycle."
# BentoML's generated Dockerfile runs apt-get update and leaves apt's lists and caches (~150 MB) behind.
DROP_APT_CACHES = "RUN rm -rf /var/lib/apt/lists/* /var/cache/apt/*.bin /var/cache/apt/archives/*.deb"
# [registry[:port]/]path[:tag], lowercase path components as the distribution spec requires.
IMAGE_REFERENCE = re.compile(
    r"^(?:(?P<registry>[a-zA-Z0-9.-]+(?::[0-9]+)?)/)?(?P<path>[a-z0-9]+(?:[._-][a-z0-9]+)*(?:/[a-z0-9]+(?:[._-][a-z0-9]+)*)*)"
    r"(?::(?P<tag>[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}))?$"
)


# What a push meets on the way (worth retrying), as opposed to refused credentials or an unknown repository.
TRANSIENT_PUSH_FAILURE = re.compile(
    r"connection refused|connection reset|i/o timeout|tls handshake timeout|timeout exceeded|unexpected eof"
    r"|broken pipe|\b50[234]\b|too many requests",
    re.IGNORECASE,
)
PUSH_ATTEMPTS = 3
PUSH_RETRY_SECONDS = 10.0


class BuildahMissing(RuntimeError):
    """buildah is not installed: images cannot be built here."""


class ContainerizeError(RuntimeError):
    pass


@dataclass(frozen=True)
class BuiltImage:
    image: str  # the reference it was tagged with
    digest: str  # sha256:… of the image manifest
    pushed: bool
    size_bytes: int = 0  # as buildah stores it (uncompressed layers)
    labels: dict[str, str] | None = None

    @property
    def reference(self) -> str:
        """``repository@digest``: what a deployment should pin."""
        return f"{self.image.rsplit(':', 1)[0] if _has_tag(self.image) else self.image}@{self.digest}"


def _has_tag(image: str) -> bool:
    return ":" in image.rsplit("/", 1)[-1]


def validate_image(image: str, what: str = "image") -> None:
    if not isinstance(image, str) or not IMAGE_REFERENCE.match(image):
        raise ValueError(
            f"{what} {image!r} is not an image reference like registry.example.com/team/name:tag "
            "(lowercase repository path, optional :tag)"
        )


def find_buildah() -> str:
    path = shutil.which("buildah")
    if path is None:
        raise BuildahMissing(
            "buildah is not installed, so no image can be built here; install it (Debian/Ubuntu: "
            "apt-get install buildah) or run this step on the components image, which has it"
        )
    return path


def _global_flags(storage_root: str) -> list[str]:
    flags = ["--storage-driver", "vfs"]
    if storage_root:
        flags += ["--root", str(Path(storage_root) / "root"), "--runroot", str(Path(storage_root) / "run")]
    return flags


def _run(command: list[str], echo: Callable[[str], None], what: str) -> str:
    env = {**os.environ, "BUILDAH_ISOLATION": "chroot", "BUILDAH_FORMAT": "oci"}
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
    lines: list[str] = []
    for line in process.stdout:
        line = line.rstrip("\n")
        lines.append(line)
        echo(line)
    if process.wait() != 0:
        raise ContainerizeError(f"{what} failed (exit {process.returncode}); last output:\n" + "\n".join(lines[-25:]))
    return "\n".join(lines)


def _push(command: list[str], image: str, echo: Callable[[str], None], sleep: Callable[[float], None] = time.sleep):
    """``buildah push``, retried when the network or the registry failed (a refused or reset connection, a
    timeout, HTTP 502/503/504 or 429); refused credentials or an unknown repository fail at once."""
    delay = PUSH_RETRY_SECONDS
    for attempt in range(1, PUSH_ATTEMPTS + 1):
        try:
            return _run(command, echo, f"buildah push of {image}")
        except ContainerizeError as error:
            if attempt == PUSH_ATTEMPTS or not TRANSIENT_PUSH_FAILURE.search(str(error)):
                raise
            retry = f"retry in {delay:g} s"
            echo(f"buildah push of {image} failed on the way (attempt {attempt} of {PUSH_ATTEMPTS}); {retry}")
            sleep(delay)
            delay *= 2


def extract_bento(archive: Path, destination: Path) -> Path:
    with tarfile.open(archive) as bundle:
        bundle.extractall(destination, filter="data")
    if not (destination / DOCKERFILE).is_file():
        raise ContainerizeError(f"{archive} is not an exported bento: it has no {DOCKERFILE}")
    return destination


def drop_apt_caches(dockerfile: Path) -> None:
    """Add a step that removes apt's lists and caches, as root: before the last ``USER``, else at the end.
    buildah commits the build as one layer over the base, so what is removed takes no room."""
    lines = dockerfile.read_text().splitlines()
    users = [i for i, line in enumerate(lines) if line.strip().upper().startswith("USER ")]
    at = users[-1] if users else len(lines)
    dockerfile.write_text("\n".join(lines[:at] + [DROP_APT_CACHES] + lines[at:]) + "\n")


def image_labels(context: Path) -> dict[str, str]:
    """Labels for the image from the bento's ``bento.yaml``: OCI title and version, the bento and model
    tags, and each of the bento's own labels (for build_bento's: architecture, dataset commit, library
    version, accelerator, metrics) under ``io.kfp-torch-lifecycle.``."""
    import yaml

    info = yaml.safe_load((context / BENTO_YAML).read_text()) or {}
    name, version = str(info.get("name", "")), str(info.get("version", ""))
    labels = {"org.opencontainers.image.title": name, "org.opencontainers.image.version": version}
    labels[LABEL_PREFIX + "bento"] = f"{name}:{version}"
    models = [str(model["tag"]) for model in info.get("models") or [] if isinstance(model, dict) and "tag" in model]
    if models:
        labels[LABEL_PREFIX + "model"] = ",".join(models)
    for key, value in (info.get("labels") or {}).items():
        labels[LABEL_PREFIX + str(key)] = str(value)
    return labels


def image_size(buildah: str, flags: list[str], image: str) -> int:
    """The image's layers and config in bytes, from its manifest (locally built: uncompressed tar sizes)."""
    inspected = json.loads(
        _run([buildah, *flags, "inspect", "--type", "image", image], lambda line: None, "inspecting the image")
    )
    manifest = json.loads(inspected.get("Manifest") or "{}")
    return sum(int(layer.get("size", 0)) for layer in manifest.get("layers", [])) + int(
        manifest.get("config", {}).get("size", 0)
    )


def _size(size_bytes: int) -> str:
    return f"{size_bytes / 1e6:.1f} MB ({size_bytes} bytes)"


def build_image(
    bento_archive: str | Path,
    image: str,
    base_image: str,
    push: bool = False,
    registry_auth_file: str = "",
    storage_root: str = "",
    echo: Callable[[str], None] = print,
) -> BuiltImage:
    """Build ``bento_archive`` into ``image`` on ``base_image``; push it when asked. Returns the digest."""
    validate_image(image)
    validate_image(base_image, "base_image")
    auth_file = _auth_file(registry_auth_file) if push else ""
    buildah = find_buildah()
    flags = _global_flags(storage_root)
    with tempfile.TemporaryDirectory(prefix="bento-context-") as tmp:
        context = extract_bento(Path(bento_archive), Path(tmp) / "bento")
        labels = image_labels(context) if (context / BENTO_YAML).is_file() else {}
        drop_apt_caches(context / DOCKERFILE)
        label_flags = [flag for key, value in labels.items() for flag in ("--label", f"{key}={value}")]
        _run(
            [buildah, *flags, "build", "--isolation", "chroot", "--format", "oci", "--pull=false", *label_flags]
            + ["--from", base_image, "--file", str(context / DOCKERFILE), "--tag", image, str(context)],
            echo,
            f"buildah build of {image}",
        )
    digest = (
        _run(
            [buildah, *flags, "images", "--no-trunc", "--digests", "--format", "{{.Digest}}", image],
            lambda line: None,
            "reading the image digest",
        )
        .strip()
        .splitlines()[0]
    )
    size_bytes = image_size(buildah, flags, image)
    echo(f"image {image}: {_size(size_bytes)}")
    if push:
        digest = push_image(image, auth_file, storage_root, echo)
    return BuiltImage(image=image, digest=digest, pushed=push, size_bytes=size_bytes, labels=labels)


def _auth_file(registry_auth_file: str) -> str:
    """The registry credentials file to push with (``REGISTRY_AUTH_FILE`` when none is given), checked to
    exist before anything is built."""
    auth_file = registry_auth_file or os.environ.get("REGISTRY_AUTH_FILE", "")
    if auth_file and not Path(auth_file).is_file():
        raise ContainerizeError(
            f"registry credentials file {auth_file} does not exist; mount the dockerconfigjson Secret there"
        )
    return auth_file


def push_image(
    image: str, registry_auth_file: str = "", storage_root: str = "", echo: Callable[[str], None] = print
) -> str:
    """Push the locally built ``image`` to its registry; return the pushed manifest's digest."""
    auth_file = _auth_file(registry_auth_file)
    with tempfile.TemporaryDirectory() as tmp:
        digest_file = Path(tmp) / "digest"
        command = [find_buildah(), *_global_flags(storage_root), "push", "--digestfile", str(digest_file)]
        if auth_file:
            command += ["--authfile", auth_file]
        _push(command + [image, f"docker://{image}"], image, echo)
        return digest_file.read_text().strip()
