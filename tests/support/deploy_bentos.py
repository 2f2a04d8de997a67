"""The bentos the deploy tests and benchmark serve: one good, one with a preprocessing drift, one that cannot start.

All three come from one trained model; each is built by ``build_bento`` (in a process of its own, with a throwaway
BENTOML_HOME) from a copy of the model directory, changed as its name says.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from tests.support.bento_server import bento_environment, run_build_script

DRIFTED_NORMALIZATION = {"mean": [0.5], "std": [0.5]}  # a common default, not the training images' own

BUILD_ALL = """
import json, sys
from components.build_bento.packaging import build_bento_archive
built = {}
root = sys.argv[1]
for name in sys.argv[2:]:
    built[name] = build_bento_archive(f"{root}/{name}-model", f"{root}/{name}-bento", evaluation={"accuracy": 0.97})
print(json.dumps(built))
"""


def build_deploy_bentos(model_dir: Path, root: Path) -> dict[str, dict]:
    """Build the three bentos under ``root``; {name: descriptor + ``dir`` + ``archive`` (the .bento path)}."""
    shutil.copytree(model_dir, root / "good-model")
    shutil.copytree(model_dir, root / "drifted-model")
    spec_path = root / "drifted-model" / "spec.json"
    spec = json.loads(spec_path.read_text())
    spec["normalization"] = DRIFTED_NORMALIZATION
    spec_path.write_text(json.dumps(spec))
    shutil.copytree(model_dir, root / "broken-model")
    (root / "broken-model" / "model.onnx").write_bytes(b"not an ONNX model")
    names = ["good", "drifted", "broken"]
    built, _ = run_build_script(BUILD_ALL, [str(root), *names], bento_environment(root))
    for name, descriptor in built.items():
        descriptor["dir"] = root / f"{name}-bento"
        descriptor["archive"] = descriptor["dir"] / descriptor["archive"]
    return built
