"""build_bento as the components image runs it: a tiny model saved with the library's contract, and the bento
built in its own process with the network closed (``unshare -rn``), every command it ran recorded."""

from __future__ import annotations

import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

from tests.support.bento_server import run_build_script

REPO = Path(__file__).resolve().parents[2]
CLOSED_NETWORK = ["unshare", "-rn"]  # a new network namespace: only a downed loopback, no route anywhere


def network_can_be_closed() -> bool:
    if shutil.which("unshare") is None:
        return False
    return subprocess.run([*CLOSED_NETWORK, "true"], capture_output=True).returncode == 0


# The model: a tiny network saved with the library's contract (spec.json + ONNX export), lineage included.
MAKE_MODEL = textwrap.dedent(
    """
    import sys, torch
    from components.train.contract import save_model
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 3))
    save_model(net, sys.argv[1], ["a", "b", "c"], 8, channels=1, normalization={"mean": [0.5], "std": [0.5]},
               dataset_info={"commit": "0123abcd", "path": "data/raw"})
    """
)

# The build as the components image runs it: no uv installed (BentoML would `pip install uv` first),
# and, by the caller, no network and no pip configuration (this machine's pip finds wheels on local disk).
# Every command the build runs is recorded.
BUILD = textwrap.dedent(
    """
    import importlib.metadata, json, shutil, subprocess, sys
    commands = []
    def recording(run):
        def wrapper(command, *args, **kwargs):
            commands.append([str(part) for part in command] if isinstance(command, (list, tuple)) else [command])
            return run(command, *args, **kwargs)
        return wrapper
    for name in ("run", "call", "check_call", "check_output"):
        setattr(subprocess, name, recording(getattr(subprocess, name)))
    real_version, real_which = importlib.metadata.version, shutil.which
    def version(name):
        if name == "uv":
            raise importlib.metadata.PackageNotFoundError(name)
        return real_version(name)
    importlib.metadata.version = version
    shutil.which = lambda name, *a, **k: None if name in ("uv", "uvx") else real_which(name, *a, **k)
    import bentoml
    from components.build_bento.packaging import build_bento_archive
    d = build_bento_archive(sys.argv[1], sys.argv[2], evaluation={"accuracy": 0.97, "macro_f1": 0.9, "reason": "ok"})
    d["path"] = bentoml.get(d["bento_tag"]).path
    d["commands"] = commands
    print(json.dumps(d))
    """
)


def make_model(model_dir: Path) -> Path:
    subprocess.run([sys.executable, "-c", MAKE_MODEL, str(model_dir)], check=True, cwd=REPO, timeout=300)
    return model_dir


def build_offline(model_dir: Path, output_dir: Path, home: Path) -> tuple[dict, str]:
    """build_bento in its own process with the network closed; its descriptor and its log."""
    env = {"PATH": "/usr/bin:/bin", "HOME": str(home), "BENTOML_HOME": str(home / "bentoml"), "DO_NOT_TRACK": "true"}
    env.update({"PIP_CONFIG_FILE": "/dev/null", "PIP_NO_INDEX": "1", "PIP_FIND_LINKS": ""})
    return run_build_script(BUILD, [str(model_dir), str(output_dir)], env, launcher=tuple(CLOSED_NETWORK))
