"""The ``local`` deploy target: a bento served by ``bentoml serve`` on 127.0.0.1 (what ``kfp.local`` and ``make run``
use), and ``make serve``, which serves what was deployed last.

Everything lives under a state directory (``KFP_TORCH_LOCAL_DEPLOY_DIR``, default ``.local/deploy``), one folder per
service name::

    <state>/<name>/bentoml/        a BENTOML_HOME of the target's own: the bentos deployed here
    <state>/<name>/deployed.json   what is deployed: the bento, its model, the archive's sha256, the environment it
                                   serves with, whether it was verified (and the figures)
    <state>/<name>/logs/           each server's log

As a ``Target`` (``components.deploy.target``), driven by ``run_deploy``:

- ``apply`` reads the bento archive (``build_bento``'s ``.bento``), imports it into the target's store and records
  it as deployed; the same archive deployed again changes nothing (``changed`` False);
- ``wait_ready`` starts ``bentoml serve <bento>`` on a free port of 127.0.0.1, with the environment the bento's
  image would have, and waits until BentoML's ``/readyz`` answers; a server that exits, or whose service fails to
  start twice, fails the rollout with its own last log lines;
- ``rollback`` records the previous bento as deployed again and shows that it still serves (started, ready,
  stopped); ``remove`` forgets a first deployment that failed.

The step ends with ``close`` (or by leaving the ``with`` block): the server stops, and the store keeps only the bento
deployed now and the one before it. ``make serve`` then serves the bento
``deployed.json`` names, on http://127.0.0.1:3000: after a failed deployment that is still the previous one.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import sys
from pathlib import Path
from typing import Any

from components.common.artifacts import write_json_atomic
from components.common.processes import free_port
from components.deploy.local_bentos import BentoArchive, BentoStore
from components.deploy.local_server import BentoServer
from components.deploy.target import Applied, DeployRequest, Revision

STATE_DIR_ENV = "KFP_TORCH_LOCAL_DEPLOY_DIR"
DEFAULT_STATE_DIR = ".local/deploy"
RECORD_FILE = "deployed.json"
HOST = "127.0.0.1"
SERVE_PORT = 3000  # make serve's
DEFAULT_NAME = "image-classifier"


def state_root() -> Path:
    """Where the local target keeps its state: ``$KFP_TORCH_LOCAL_DEPLOY_DIR``, else ``.local/deploy`` here."""
    return Path(os.environ.get(STATE_DIR_ENV) or DEFAULT_STATE_DIR).expanduser().resolve()


def serve_url(port: int = SERVE_PORT) -> str:
    """Where ``make serve`` serves the deployed bento."""
    return f"http://{HOST}:{port}"


class LocalTarget:
    """The ``local`` target for the service ``name``; see the module docstring. Use it in a ``with`` block (or call
    ``stop``), so that no server outlives the step."""

    def __init__(self, name: str = DEFAULT_NAME, root: str | Path | None = None, echo=print):
        self.name = name
        self.directory = Path(root).resolve() / name if root is not None else state_root() / name
        self.store = BentoStore(self.directory / "bentoml")
        self.echo = echo
        self.server: BentoServer | None = None
        self.changed = False  # whether this step's apply changed what is deployed
        self.replaced = ""  # the bento that was deployed before it

    def __enter__(self) -> LocalTarget:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # --- Target -------------------------------------------------------------------------------------------

    def current(self) -> Revision | None:
        record = self.record()
        return _revision(record) if record else None

    def apply(self, request: DeployRequest) -> Applied:
        archive = BentoArchive.read(request.bento)
        record = self.record()
        previous = _revision(record) if record else None
        manifest = self._manifest(request, archive)
        if record and record["bento"] == archive.tag and record["archive_sha256"] == archive.sha256:
            self.store.ensure(archive)  # the same bento again: nothing to change (a pruned store is mended)
            return Applied(request, False, previous, (manifest,), {"record": record})
        if self.store.ensure(archive):
            self.echo(f"imported bento {archive.tag} into {self.store.home}")
        self.changed, self.replaced = True, record["bento"] if record else ""
        new = {
            "name": self.name,
            "bento": archive.tag,
            "model_tag": archive.model_tag,
            "archive": str(archive.path),
            "archive_sha256": archive.sha256,
            "env": archive.env,
            "labels": dict(request.labels),
            "deployed_at": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
            "verified": False,
            "verification": None,
        }
        self._write(new)
        return Applied(request, True, previous, (manifest,), {"record": new})

    def wait_ready(self, applied: Applied, deadline: float) -> str:
        return self._start(applied.marker["record"]).wait_ready(deadline)

    def rollback(self, previous: Revision, deadline: float) -> None:
        (record,) = previous.manifests
        self._write(record)
        try:
            self._start(record).wait_ready(deadline)
        finally:
            self.stop()

    def remove(self) -> None:
        self.stop()
        (self.directory / RECORD_FILE).unlink(missing_ok=True)  # close() then empties the store

    # --- the step's own ---------------------------------------------------------------------------------------

    def record(self) -> dict[str, Any] | None:
        """What ``deployed.json`` says is deployed; None when nothing is."""
        path = self.directory / RECORD_FILE
        if not path.is_file():
            return None
        return json.loads(path.read_text())

    def record_verification(self, verification: dict[str, Any]) -> None:
        """Mark what is deployed as verified, with the figures."""
        record = self.record()
        if record is None:
            raise RuntimeError(f"nothing is deployed under {self.directory}: there is no deployment to mark verified")
        self._write({**record, "verified": True, "verification": verification})

    def close(self) -> None:
        """End the step: stop the server; after a change, keep in the store only what is deployed now and what
        was deployed before it (a failed bento goes)."""
        self.stop()
        if self.changed:
            record = self.record()
            self.store.keep_only([tag for tag in (record["bento"] if record else "", self.replaced) if tag])
            self.changed = False

    def stop(self) -> None:
        """Stop the server this target started, if it runs."""
        if self.server is not None:
            self.server.stop()
            self.server = None

    def _start(self, record: dict[str, Any]) -> BentoServer:
        self.stop()
        port = free_port(HOST)
        log_path = self.directory / "logs" / f"{record['bento'].partition(':')[2]}-{port}.log"
        env = self.store.environment(record["env"])
        server = BentoServer(record["bento"], env, log_path, self.directory, HOST, port)
        self.server = server.start()
        self.echo(f"bentoml serve {record['bento']} on {server.url} (log: {server.log_path})")
        return server

    def _write(self, record: dict[str, Any]) -> None:
        write_json_atomic(self.directory / RECORD_FILE, record)

    def _manifest(self, request: DeployRequest, archive: BentoArchive) -> dict[str, Any]:
        """What the local target applies, as the step's artifact records it."""
        return {
            "target": "local",
            "name": self.name,
            "labels": dict(request.labels),
            "bento": archive.tag,
            "model_tag": archive.model_tag,
            "archive_sha256": archive.sha256,
            "bentoml_home": str(self.store.home),
            "host": HOST,
            "env": archive.env,
        }


def _revision(record: dict[str, Any]) -> Revision:
    return Revision(image=record["bento"], name=f"archive sha256:{record['archive_sha256'][:12]}", manifests=(record,))


def serve_command(record: dict[str, Any], port: int = SERVE_PORT) -> list[str]:
    """``bentoml serve`` of the recorded bento on 127.0.0.1:``port`` (run with the store's environment)."""
    return [sys.executable, "-m", "bentoml", "serve", record["bento"], "--host", HOST, "--port", str(port)]


def main(argv: list[str] | None = None) -> int:
    """``make serve``: serve the deployed bento on 127.0.0.1 (``serve``), or print its record (``show``)."""
    parser = argparse.ArgumentParser(prog="python -m components.deploy.local_target", description=main.__doc__)
    parser.add_argument("action", choices=("serve", "show"))
    parser.add_argument("--name", default=DEFAULT_NAME, help=f"the deployed service's name (default {DEFAULT_NAME})")
    parser.add_argument("--port", type=int, default=SERVE_PORT)
    parser.add_argument("--state-dir", help=f"default ${STATE_DIR_ENV}, else {DEFAULT_STATE_DIR}")
    args = parser.parse_args(argv)
    target = LocalTarget(args.name, args.state_dir)
    record = target.record()
    if record is None:
        print(
            f"nothing is deployed locally as {args.name!r} (no {target.directory / RECORD_FILE}): `make run` trains, "
            "verifies and deploys one",
            file=sys.stderr,
        )
        return 1
    if args.action == "show":
        print(json.dumps(record, indent=2, sort_keys=True))
        return 0
    verification = record.get("verification") or {}
    if record.get("verified"):
        state = (
            f"verified: {verification.get('agreed')} of {verification.get('images')} held-out images agreed with "
            "evaluate"
        )
    else:
        state = "NOT verified (its deploy step failed or was stopped before the verification ended)"
    print(f"Serving {record['bento']} (model {record['model_tag']}), deployed {record['deployed_at']}, {state}")
    print(f"on {serve_url(args.port)}; Ctrl-C stops it", flush=True)
    os.chdir(target.directory)
    command = serve_command(record, args.port)
    os.execve(command[0], command, target.store.environment(record["env"]))
    return 0  # not reached


if __name__ == "__main__":
    sys.exit(main())
