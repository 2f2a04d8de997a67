"""The step's side of the custom-script contract (``components.train.contract``).

Locally (``launcher="local"``) the step calls ``run_script`` itself. In a
distributed job (a PyTorchJob, a TrainJob) every replica runs this module as its command, in
the user's image (which holds this library, as KFP's own launcher rides along in
every step):

    python -m components.train.script_runner --dataset URI --output URI \\
        [--hyperparameters JSON] [--dataset-info JSON] -- COMMAND [ARG ...]

1. the dataset is copied to a local directory (once per pod);
2. ``COMMAND`` runs under ``torchrun --no-python`` with the nodes, node rank and
   processes per node the job's controller set (``components.train.rendezvous``),
   so every process finds the distributed environment as torchrun sets it, plus
   the contract's variables and the hyperparameters as ``--<name> <value>``
   arguments;
3. on node 0, once every process exited 0, the output directory is published
   to the Model's URI (``spec.json`` last, so a reader never sees half a model).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from components.common.spec import SPEC_FILE
from components.common.storage import local_copy, publish
from components.train.contract import (
    DATASET_DIR_ENV,
    DATASET_INFO_ENV,
    HYPERPARAMETERS_ENV,
    OUTPUT_DIR_ENV,
    read_metrics,
)
from components.train.local_launcher import own_command, run_torchrun
from components.train.rendezvous import rendezvous_from_env

log = logging.getLogger(__name__)


class ScriptFailed(RuntimeError):
    pass


def script_arguments(dataset_dir: str, output_dir: str, hyperparameters: dict[str, Any]) -> list[str]:
    args = ["--dataset-dir", str(dataset_dir), "--output-dir", str(output_dir)]
    for name, value in sorted(hyperparameters.items()):
        args += ["--" + name.replace("_", "-"), json.dumps(value) if isinstance(value, (dict, list)) else str(value)]
    return args


def script_environment(
    dataset_dir: str, output_dir: str, hyperparameters: dict[str, Any], dataset_info: dict[str, Any]
) -> dict[str, str]:
    return {
        DATASET_DIR_ENV: str(dataset_dir),
        OUTPUT_DIR_ENV: str(output_dir),
        HYPERPARAMETERS_ENV: json.dumps(hyperparameters, sort_keys=True),
        DATASET_INFO_ENV: json.dumps(dataset_info, sort_keys=True),
    }


def run_script(
    command: Sequence[str],
    dataset_dir: str,
    output_dir: str,
    hyperparameters: dict[str, Any],
    dataset_info: dict[str, Any],
    nproc_per_node: int | str,
    timeout_seconds: float,
    rendezvous: Sequence[str] = ("--standalone",),
    echo: Callable[[str], None] = print,
) -> None:
    """Run ``command`` under torchrun with the contract's environment; fail naming an empty output."""
    Path(output_dir).mkdir(parents=True, exist_ok=True)
    run_torchrun(
        nproc_per_node,
        own_command([*command, *script_arguments(dataset_dir, output_dir, hyperparameters)]),
        timeout_seconds,
        echo=echo,
        env=script_environment(dataset_dir, output_dir, hyperparameters, dataset_info),
        rendezvous=rendezvous,
    )


def check_output(output_dir: Path) -> None:
    if not output_dir.is_dir() or not any(output_dir.iterdir()):
        raise ScriptFailed(
            f"the script exited 0 but wrote nothing to {OUTPUT_DIR_ENV} ({output_dir}): write the model files and "
            "metrics.json there (rank 0)"
        )


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if "--" not in argv:
        raise SystemExit("usage: script_runner --dataset URI --output URI [...] -- COMMAND [ARG ...]")
    split = argv.index("--")
    parser = argparse.ArgumentParser(prog="python -m components.train.script_runner")
    parser.add_argument("--dataset", required=True)
    parser.add_argument("--output", required=True)
    parser.add_argument("--hyperparameters", default="{}")
    parser.add_argument("--dataset-info", default="{}")
    args = parser.parse_args(argv[:split])
    command = argv[split + 1 :]
    if not command:
        raise SystemExit("script_runner: no command after --")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    nproc, rendezvous, node_zero = rendezvous_from_env(dict(os.environ))
    with local_copy(args.dataset) as dataset_dir, tempfile.TemporaryDirectory(prefix="output-") as tmp:
        output_dir = Path(tmp) / "output"
        run_script(
            command,
            str(dataset_dir),
            str(output_dir),
            json.loads(args.hyperparameters),
            json.loads(args.dataset_info),
            nproc,
            timeout_seconds=float("inf"),  # the step's timeout and activeDeadlineSeconds bound the job
            rendezvous=rendezvous,
        )
        if node_zero:
            check_output(output_dir)
            read_metrics(output_dir)  # a malformed metrics.json fails the job, before anything is published
            publish(output_dir, args.output, last=SPEC_FILE)
            log.info("published %s to %s", output_dir, args.output)
    return 0


if __name__ == "__main__":
    sys.exit(main())
