"""A Debian base image for bentos, made from Debian packages with mmdebstrap (no registry needed).

Where no image can be pulled (air-gapped CI, this project's test machines), this
builds ``localhost/kfp-torch-lifecycle/bento-base:bookworm`` once into buildah's
storage: Debian bookworm with Python 3.11, uv, and what BentoML's generated
Dockerfile installs anyway (build-essential, git, gnupg2, ca-certificates), plus
the host's extra CA certificates so builds behind a TLS-inspecting proxy work.

    python -m components.containerize.debian_base [--storage-root DIR]
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import tempfile
from pathlib import Path

from components.containerize.buildah import _global_flags, find_buildah

BASE_IMAGE = "localhost/kfp-torch-lifecycle/bento-base:bookworm"
PACKAGES = ["python3", "python3-venv", "ca-certificates", "bash", "git", "gnupg2", "build-essential"]
MIRROR = "http://deb.debian.org/debian"


def _uv_binary() -> str | None:
    """uv from the uv package BentoML depends on, else from PATH."""
    try:
        from uv import find_uv_bin

        return find_uv_bin()
    except (ImportError, FileNotFoundError):
        return shutil.which("uv")


def image_exists(image: str, storage_root: str = "") -> bool:
    done = subprocess.run(
        [find_buildah(), *_global_flags(storage_root), "images", "--quiet", image], capture_output=True, text=True
    )
    return done.returncode == 0 and bool(done.stdout.strip())


def build_base_image(storage_root: str = "", image: str = BASE_IMAGE, suite: str = "bookworm") -> str:
    """Build ``image`` unless it is already in storage; return its name."""
    buildah = find_buildah()
    if image_exists(image, storage_root):
        return image
    if shutil.which("mmdebstrap") is None:
        raise RuntimeError("mmdebstrap is not installed (Debian/Ubuntu: apt-get install mmdebstrap)")
    flags = _global_flags(storage_root)
    with tempfile.TemporaryDirectory(prefix="mmdebstrap-") as tmp:
        rootfs = Path(tmp) / "rootfs"
        # mmdebstrap rather than debootstrap: apt installs every package in one pass (half the time and CPU
        # here), and apt's lists and downloaded packages are left out of the tree.
        made = subprocess.run(
            ["mmdebstrap", "--mode=root", "--variant=minbase", f"--include={','.join(PACKAGES)}", suite, str(rootfs)]
            + [MIRROR],
            capture_output=True,
            text=True,
        )
        if made.returncode != 0:
            raise RuntimeError(f"mmdebstrap failed (exit {made.returncode}):\n{made.stderr[-3000:]}")
        extra_cas = sorted(Path("/usr/local/share/ca-certificates").glob("*.crt"))
        for ca in extra_cas:
            shutil.copy2(ca, rootfs / "usr/local/share/ca-certificates" / ca.name)
        if extra_cas:
            subprocess.run(["chroot", str(rootfs), "update-ca-certificates"], check=True, capture_output=True)
        uv = _uv_binary()
        if uv:  # BentoML's Dockerfile pip-installs uv when it is missing; Debian's pip refuses (PEP 668)
            shutil.copy2(uv, rootfs / "usr/local/bin/uv")
        container = subprocess.run(
            [buildah, *flags, "from", "scratch"], check=True, capture_output=True, text=True
        ).stdout.strip()
        try:
            subprocess.run([buildah, *flags, "copy", container, f"{rootfs}/", "/"], check=True, capture_output=True)
            subprocess.run(
                [buildah, *flags, "config", "--env", "SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt"]
                + ["--env", "UV_NATIVE_TLS=1", "--env", "LANG=C.UTF-8", "--cmd", "/bin/bash", container],
                check=True,
                capture_output=True,
            )
            subprocess.run([buildah, *flags, "commit", container, image], check=True, capture_output=True)
        finally:
            subprocess.run([buildah, *flags, "rm", container], capture_output=True)
    return image


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--storage-root", default="", help="buildah storage (default: buildah's own)")
    args = parser.parse_args(argv)
    print(build_base_image(args.storage_root))


if __name__ == "__main__":
    main()
