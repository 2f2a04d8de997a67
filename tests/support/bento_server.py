"""Build a bento with build_bento in its own process and serve it with a real ``bentoml serve`` on 127.0.0.1."""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path

from components.common.processes import free_port

BUILD = (
    "import json, sys, bentoml; from components.build_bento.packaging import build_bento_archive; "
    "d = build_bento_archive(sys.argv[1], sys.argv[2], evaluation={'accuracy': 0.97}); "
    "d['requirements'] = (bentoml.get(d['bento_tag']).path_of('env/python/requirements.txt')); "
    "print(json.dumps(d))"
)


def bento_environment(root: Path) -> dict[str, str]:
    env = {key: value for key, value in os.environ.items() if key != "PYTHONPATH"}
    return {**env, "BENTOML_HOME": str(root / "bentoml"), "DO_NOT_TRACK": "true"}


def run_build_script(
    script: str, args: list[str], env: dict[str, str], launcher: tuple[str, ...] = ()
) -> tuple[dict, str]:
    """Run ``script`` (a build that prints a JSON descriptor last) in its own process: (descriptor, stderr)."""
    done = subprocess.run(
        [*launcher, sys.executable, "-c", script, *args],
        capture_output=True,
        text=True,
        env=env,
        cwd=Path(__file__).resolve().parents[2],
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1]), done.stderr


def build(model_dir: Path, output_dir: Path, env: dict[str, str]) -> dict:
    """build_bento's descriptor, plus the path of the bento's locked requirements."""
    return run_build_script(BUILD, [str(model_dir), str(output_dir)], env)[0]


@contextlib.contextmanager
def serve(bento_tag: str, env: dict[str, str], workdir: Path) -> Iterator[str]:
    """``bentoml serve`` the bento from ``workdir`` (not the repository: the bento's own code is served)."""
    port = free_port()
    log_path = workdir / f"serve-{port}.log"
    with open(log_path, "w") as log:
        server = subprocess.Popen(
            [sys.executable, "-m", "bentoml", "serve", bento_tag, "--host", "127.0.0.1", "--port", str(port)],
            stdout=log,
            stderr=subprocess.STDOUT,
            env=env,
            cwd=workdir,
            start_new_session=True,
        )
        url = f"http://127.0.0.1:{port}"
        try:
            deadline = time.monotonic() + 180
            while True:
                try:
                    with urllib.request.urlopen(f"{url}/readyz", timeout=2) as response:
                        if response.status == 200:
                            break
                except OSError:
                    pass
                if server.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError("bentoml serve did not become ready:\n" + log_path.read_text()[-3000:])
                time.sleep(0.5)
            yield url
        finally:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(server.pid, 15)
            server.wait(timeout=30)


def post(url: str, body: bytes, content_type: str) -> tuple[int, dict]:
    request = urllib.request.Request(url, data=body, headers={"Content-Type": content_type}, method="POST")
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read() or b"{}")


def post_json(url: str, payload) -> tuple[int, dict]:
    return post(url, json.dumps(payload).encode(), "application/json")


def post_files(url: str, files: list[tuple[str, bytes]]) -> tuple[int, dict]:
    boundary = uuid.uuid4().hex
    parts = [
        f'--{boundary}\r\nContent-Disposition: form-data; name="files"; filename="{name}"\r\n'
        f"Content-Type: application/octet-stream\r\n\r\n".encode()
        + content
        + b"\r\n"
        for name, content in files
    ]
    return post(url, b"".join(parts) + f"--{boundary}--\r\n".encode(), f"multipart/form-data; boundary={boundary}")
