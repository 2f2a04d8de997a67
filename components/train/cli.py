"""Command line for the train module: what PyTorchJob replicas and ``torchrun`` start.

    python -m components.train.cli --dataset URI --model URI [--checkpoint-dir PATH]
        [--pretrained-weights URI] [--epochs N --architecture resnet18 ...]

``--dataset``, ``--model`` and ``--pretrained-weights`` take a local path or an
object-store URI (gs://…). Every ``TrainConfig`` field is an option
(``--batch-size``, ``--lr-schedule``, ``--augment true|false``, …).
Every rank reads the dataset; only rank 0 writes the model (``spec.json`` last).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import sys
import tempfile
from dataclasses import asdict, fields
from pathlib import Path
from typing import Any

from components.common.spec import SPEC_FILE
from components.common.storage import is_remote, local_copy, publish
from components.train.config import TrainConfig


def _boolean(text: str) -> bool:
    lowered = text.strip().lower()
    if lowered in ("true", "1", "yes"):
        return True
    if lowered in ("false", "0", "no"):
        return False
    raise argparse.ArgumentTypeError(f"expected true or false, got {text!r}")


def option(name: str) -> str:
    return "--" + name.replace("_", "-")


def config_arguments(config: TrainConfig) -> list[str]:
    """``config`` as command-line options, in the form ``parse_args`` reads back."""
    args: list[str] = []
    for name, value in asdict(config).items():
        text = (
            str(value).lower() if isinstance(value, bool) else repr(value) if isinstance(value, float) else str(value)
        )
        args += [option(name), text]
    return args


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    defaults = TrainConfig()
    parser = argparse.ArgumentParser(prog="python -m components.train.cli", description=__doc__)
    parser.add_argument("--dataset", required=True, help="dataset directory path or URI")
    parser.add_argument("--model", required=True, help="model directory path or URI to write")
    parser.add_argument("--checkpoint-dir", default="", help="shared path (e.g. a PVC) for per-epoch checkpoints")
    parser.add_argument("--dataset-info", default="{}", help="JSON provenance recorded in spec.json")
    parser.add_argument("--pretrained-weights", default="", help="checkpoint file or Model directory, path or URI")
    for item in fields(TrainConfig):
        default = getattr(defaults, item.name)
        kind = _boolean if isinstance(default, bool) else type(default)
        parser.add_argument(option(item.name), dest=item.name, type=kind, default=default)
    return parser.parse_args(argv)


def config_from(args: argparse.Namespace) -> TrainConfig:
    values: dict[str, Any] = {item.name: getattr(args, item.name) for item in fields(TrainConfig)}
    return TrainConfig(**values)


def main(argv: list[str] | None = None) -> int:
    # Imported here: the launcher pod builds the replicas' options with config_arguments, without torch.
    from components.train.trainer import train_model

    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    config = config_from(args)
    config.validate()
    with contextlib.ExitStack() as stack:
        dataset_dir = stack.enter_context(local_copy(args.dataset))
        pretrained = stack.enter_context(local_copy(args.pretrained_weights)) if args.pretrained_weights else None
        tmp = stack.enter_context(tempfile.TemporaryDirectory(prefix="model-"))
        model_dir = Path(tmp) / "model" if is_remote(args.model) else Path(args.model)
        result = train_model(
            dataset_dir,
            model_dir,
            config,
            checkpoint_dir=args.checkpoint_dir or None,
            dataset_info=json.loads(args.dataset_info),
            pretrained_weights=pretrained,
        )
        if is_remote(args.model) and model_dir.exists():  # rank 0 only wrote it
            publish(model_dir, args.model, last=SPEC_FILE)
    logging.getLogger(__name__).info("training finished after %d epochs", len(result.history))
    return 0


if __name__ == "__main__":
    sys.exit(main())
