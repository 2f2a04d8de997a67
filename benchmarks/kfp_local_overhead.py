"""Per-step overhead that kfp.local adds around the component functions."""

import tempfile
import time
import warnings
from pathlib import Path

from kfp import dsl, local

from components.container_images import COMPONENTS_IMAGE
from components.dvc_pull.component import dvc_pull
from components.dvc_pull.pull import pull


@dsl.component(base_image=COMPONENTS_IMAGE, install_kfp_package=False)
def noop(value: int) -> int:
    """A component that does nothing: its run time is kfp.local's overhead alone."""
    return value


def _timed(fn, *args, **kwargs) -> float:
    began = time.perf_counter()
    fn(*args, **kwargs)
    return time.perf_counter() - began


def run(repo_url: str, rounds: int = 3) -> dict:
    with tempfile.TemporaryDirectory() as tmp, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        local.init(runner=local.SubprocessRunner(use_venv=False), pipeline_root=str(Path(tmp) / "root"))
        direct, through_kfp, empty = [], [], []
        for i in range(rounds):
            direct.append(_timed(pull, repo_url, "main", ["data/raw"], Path(tmp) / f"direct-{i}"))
            through_kfp.append(_timed(dvc_pull, repo_url=repo_url, rev="main", paths=["data/raw"]))
            empty.append(_timed(noop, value=i))
    return {
        "dvc_pull_direct_s": min(direct),
        "dvc_pull_kfp_local_s": min(through_kfp),
        "dvc_pull_overhead_s": min(through_kfp) - min(direct),
        "noop_component_s": min(empty),
        "ratio_direct_over_kfp_local": min(direct) / min(through_kfp),
    }
