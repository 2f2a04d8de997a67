"""Command line for the train module: what PyTorchJob replicas and ``torchrun`` start.

    python -m components.train.cli --dataset URI --model URI [--checkpoint-dir PATH] [--epochs N ...]

``--dataset`` and ``--model`` take a local path or an object-store URI (gs://…).
Every rank reads the dataset; only rank 0 writes the model (``spec.json`` last).
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import tempfile
from pathlib import Path

from components.common.model import SPEC_FILE
from components.common.storage import is_remote, local_copy, publish
from components.train.trainer import TrainConfig, train


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    defaults = TrainConfig()
    parser = argparse.ArgumentParser(prog="python -m components.train.cli", description=__doc__)
    parser.add_argument("--dataset", required=True, help="dataset directory path or URI")
    parser.add_argument("--model", required=True, help="model directory path or URI to write")
    parser.add_argument("--checkpoint-dir", default="", help="shared path (e.g. a PVC) for per-epoch checkpoints")
    parser.add_argument("--dataset-info", default="{}", help="JSON provenance recorded in spec.json")
    parser.add_argument("--epochs", type=int, default=defaults.epochs)
    parser.add_argument("--batch-size", type=int, default=defaults.batch_size)
    parser.add_argument("--learning-rate", type=float, default=defaults.learning_rate)
    parser.add_argument("--seed", type=int, default=defaults.seed)
    parser.add_argument("--validation-fraction", type=float, default=defaults.validation_fraction)
    parser.add_argument("--architecture", default=defaults.architecture)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    config = TrainConfig(
        epochs=args.epochs,
        batch_size=args.batch_size,
        learning_rate=args.learning_rate,
        seed=args.seed,
        validation_fraction=args.validation_fraction,
        architecture=args.architecture,
    )
    config.validate()
    with local_copy(args.dataset) as dataset_dir, tempfile.TemporaryDirectory(prefix="model-") as tmp:
        model_dir = Path(tmp) / "model" if is_remote(args.model) else Path(args.model)
        result = train(
            dataset_dir,
            model_dir,
            config,
            checkpoint_dir=args.checkpoint_dir or None,
            dataset_info=json.loads(args.dataset_info),
        )
        if is_remote(args.model) and model_dir.exists():  # rank 0 only wrote it
            publish(model_dir, args.model, last=SPEC_FILE)
    logging.getLogger(__name__).info("training finished after %d epochs", len(result.history))
    return 0


if __name__ == "__main__":
    sys.exit(main())
