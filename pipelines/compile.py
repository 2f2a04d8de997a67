"""Compile every pipeline to YAML that the Kubeflow UI, ``kfp.Client`` and ``kfp.local`` accept."""

from __future__ import annotations

import argparse
from pathlib import Path

from kfp import compiler

from pipelines.distributed_training_pipeline import distributed_training_pipeline
from pipelines.training_pipeline import training_pipeline

PIPELINES = {
    "training_pipeline": training_pipeline,
    "distributed_training_pipeline": distributed_training_pipeline,
}
DEFAULT_OUTPUT_DIR = Path("build/pipelines")


def compile_all(output_dir: str | Path = DEFAULT_OUTPUT_DIR) -> list[Path]:
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for name, pipeline in PIPELINES.items():
        path = output_dir / f"{name}.yaml"
        compiler.Compiler().compile(pipeline, str(path))
        written.append(path)
    return written


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--output-dir", default=str(DEFAULT_OUTPUT_DIR))
    args = parser.parse_args(argv)
    for path in compile_all(args.output_dir):
        print(path)


if __name__ == "__main__":
    main()
