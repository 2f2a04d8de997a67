"""Bento archives and the BentoML store the ``local`` target serves from.

``BentoArchive.read`` reads what an exported bento (``build_bento``'s ``.bento`` file) says of itself,
from the ``bento.yaml`` inside it: its tag, its model's tag and the environment its image would run
with (``envs``: the model tag the service loads, the lineage variables). A file that is not a bento
archive is refused before anything is imported.

``BentoStore`` is a BENTOML_HOME of the target's own (never the user's ``~/bentoml``, nor the store the
build wrote to): bentos are imported into it with BentoML's own ``import_bento``, and ``keep_only``
prunes it to the bentos still wanted (what serves, and what it would roll back to), their models
included. BentoML reads its home once per process, so each operation runs in a short process of its
own with ``BENTOML_HOME`` set.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import tarfile
from dataclasses import dataclass, field
from pathlib import Path

import yaml

BENTO_FILE = "bento.yaml"
MODEL_TAG_ENV = "KFP_TORCH_LIFECYCLE_MODEL_TAG"
STORE_SECONDS = 300


class BentoArchiveError(ValueError):
    """A file that is not an exported bento; the message names it."""


@dataclass(frozen=True)
class BentoArchive:
    path: Path
    tag: str  # name:version
    model_tag: str  # the model the service loads
    env: dict[str, str] = field(default_factory=dict)  # the image's environment (the bento's runtime envs)
    sha256: str = ""

    @classmethod
    def read(cls, path: str | Path) -> BentoArchive:
        path = Path(path)
        if not path.is_file():
            raise BentoArchiveError(
                f"bento archive {path} is not a file: give the .bento file build_bento exported (its 'bento' "
                "artifact holds it beside bento.json)"
            )
        info = _bento_yaml(path)
        try:
            tag = f"{info['name']}:{info['version']}"
            env = {
                str(item["name"]): str(item["value"])
                for item in info.get("envs") or []
                if item.get("stage", "all") in ("all", "runtime")
            }
            models = [str(model["tag"]) for model in info.get("models") or []]
        except (KeyError, TypeError) as error:
            raise BentoArchiveError(f"{path}: its {BENTO_FILE} lacks {error}: not a bento BentoML exported") from None
        model_tag = env.get(MODEL_TAG_ENV) or (models[0] if models else "")
        return cls(path.resolve(), tag, model_tag, env, _sha256(path))  # the store imports it from its own directory


def _bento_yaml(path: Path) -> dict:
    try:
        with tarfile.open(path, "r|*") as archive:  # a stream: bento.yaml comes early, nothing else is unpacked
            for member in archive:
                if member.isfile() and member.name.removeprefix("./") == BENTO_FILE:
                    info = yaml.safe_load(archive.extractfile(member).read())
                    if isinstance(info, dict):
                        return info
                    break
    except (tarfile.TarError, OSError, EOFError, yaml.YAMLError) as error:
        raise BentoArchiveError(f"{path} is not a bento archive (a tar file BentoML exported): {error}") from None
    raise BentoArchiveError(f"{path} holds no {BENTO_FILE}: not a bento archive BentoML exported")


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


_IMPORT = """
import json, sys, bentoml
from bentoml.exceptions import NotFound
try:
    bento = bentoml.get(sys.argv[2])
    imported = False
except NotFound:
    bento = bentoml.import_bento(sys.argv[1])
    imported = True
print(json.dumps({"tag": str(bento.tag), "imported": imported}))
"""

_KEEP_ONLY = """
import json, sys, bentoml
kept = set(json.loads(sys.argv[1]))
models = set()
removed = []
for bento in bentoml.list():
    if str(bento.tag) in kept:
        models.update(str(model.tag) for model in bento.info.all_models)
for bento in bentoml.list():
    if str(bento.tag) not in kept:
        bentoml.delete(bento.tag)
        removed.append(str(bento.tag))
for model in bentoml.models.list():
    if str(model.tag) not in models:
        bentoml.models.delete(model.tag)
        removed.append(str(model.tag))
print(json.dumps({"removed": removed}))
"""


class BentoStore:
    """A BENTOML_HOME at ``home``, used by short processes of its own."""

    def __init__(self, home: str | Path):
        self.home = Path(home).resolve()

    def environment(self, extra: dict[str, str] | None = None) -> dict[str, str]:
        """The environment of a process that uses this store: this one's, without PYTHONPATH (what runs is the
        bento's own code and the installed packages, as in its image), with ``extra`` (the bento's envs)."""
        env = {key: value for key, value in os.environ.items() if key != "PYTHONPATH"}
        env.update(extra or {})
        env.update({"BENTOML_HOME": str(self.home), "DO_NOT_TRACK": "true"})
        return env

    def ensure(self, archive: BentoArchive) -> bool:
        """Import ``archive`` unless the store holds its tag already; whether it was imported."""
        answer = self._run(_IMPORT, str(archive.path), archive.tag)
        if answer["tag"] != archive.tag:
            raise BentoArchiveError(
                f"{archive.path} imported as {answer['tag']}, but its {BENTO_FILE} says {archive.tag}"
            )
        return answer["imported"]

    def keep_only(self, tags: list[str]) -> list[str]:
        """Delete every bento but ``tags``, and every model they do not use; what was deleted."""
        return self._run(_KEEP_ONLY, json.dumps(sorted(set(tags))))["removed"]

    def _run(self, script: str, *args: str) -> dict:
        self.home.mkdir(parents=True, exist_ok=True)
        done = subprocess.run(
            [sys.executable, "-c", script, *args],
            capture_output=True,
            text=True,
            env=self.environment(),
            cwd=self.home,
            timeout=STORE_SECONDS,
        )
        if done.returncode != 0:
            raise RuntimeError(f"BentoML store {self.home}: {done.stderr.strip()[-2000:]}")
        return json.loads(done.stdout.strip().splitlines()[-1])
