"""Compile every pipeline to YAML that the Kubeflow UI, ``kfp.Client`` and ``kfp.local`` accept, and every component.

Each component is written as a component spec (``<name>.yaml``) that
``kfp.components.load_component_from_file`` loads into a pipeline of anyone's, without this library's
Python code at hand. The output is byte-identical from run to run for the same code and settings,
so the YAML can be committed and diffed.
"""

from __future__ import annotations

import argparse
import importlib
import pkgutil
from pathlib import Path

import yaml
from kfp import compiler
from kfp.dsl.python_component import PythonComponent

from pipelines.distributed_training_pipeline import build_distributed_training_pipeline, distributed_training_pipeline
from pipelines.kubernetes_settings import ClusterSettings, load_settings
from pipelines.promote_pipeline import build_promote_pipeline, promote_pipeline
from pipelines.training_pipeline import build_training_pipeline, training_pipeline

# The pipelines with default settings, by file name; BUILDERS make them with other settings.
PIPELINES = {
    "training_pipeline": training_pipeline,
    "distributed_training_pipeline": distributed_training_pipeline,
    "promote_pipeline": promote_pipeline,
}
BUILDERS = {
    "training_pipeline": build_training_pipeline,
    "distributed_training_pipeline": build_distributed_training_pipeline,
    "promote_pipeline": build_promote_pipeline,
}
DEFAULT_OUTPUT_DIR = Path("build/pipelines")
DEFAULT_COMPONENTS_DIR = Path("build/components")


def compile_all(
    output_dir: str | Path = DEFAULT_OUTPUT_DIR,
    settings_path: str | Path | None = None,
    settings: ClusterSettings | None = None,
) -> list[Path]:
    """Write ``<name>.yaml`` for every pipeline into ``output_dir``; return the paths.

    ``settings_path`` (a YAML file) or ``settings`` give the compile-time
    Kubernetes settings; neither: the defaults.
    """
    if settings is None:
        settings = load_settings(settings_path)
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for name, build in BUILDERS.items():
        path = output_dir / f"{name}.yaml"
        compiler.Compiler().compile(build(settings), str(path))
        path.write_text(_with_stable_header(path.read_text()))
        written.append(path)
    return written


def library_components() -> dict[str, PythonComponent]:
    """Every component of the library by name: the ``@dsl.component`` functions of ``components/*/component.py``."""
    import components

    found = {}
    for package in sorted(info.name for info in pkgutil.iter_modules(components.__path__) if info.ispkg):
        try:
            module = importlib.import_module(f"components.{package}.component")
        except ModuleNotFoundError as error:
            if error.name == f"components.{package}.component":
                continue  # a package of shared code, not a component
            raise
        for name, value in vars(module).items():
            if isinstance(value, PythonComponent) and value.python_func.__module__ == module.__name__:
                found[name] = value
    return found


def compile_components(output_dir: str | Path = DEFAULT_COMPONENTS_DIR) -> list[Path]:
    """Write ``<name>.yaml``, a component spec, for every component into ``output_dir``; return the paths."""
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for name, component in library_components().items():
        path = output_dir / f"{name}.yaml"
        compiler.Compiler().compile(component, str(path))
        path.write_text(_with_stable_header(path.read_text()))
        written.append(path)
    return written


def _with_stable_header(text: str) -> str:
    """The compiled text with its ``# Inputs:`` header made deterministic.

    KFP prints each input's default in that header from a protobuf Struct, whose map order
    upb randomises per process; a default with several keys (the GPU tolerations) would make
    the file differ from run to run. The defaults are printed here with sorted keys instead.
    """
    parameters = next(yaml.safe_load_all(text))["root"].get("inputDefinitions", {}).get("parameters", {})
    structured = {
        name: spec["defaultValue"]
        for name, spec in parameters.items()
        if isinstance(spec.get("defaultValue"), (dict, list))
    }
    lines = text.split("\n")
    for index, line in enumerate(lines):
        if not line.startswith("#"):
            break  # the header is the comment block at the top
        name = line.removeprefix("#    ").split(":", 1)[0]
        if line.startswith("#    ") and name in structured and " [Default: " in line:
            lines[index] = f"{line.split(' [Default: ', 1)[0]} [Default: {_sorted_keys(structured[name])}]"
    return "\n".join(lines)


def _sorted_keys(value):
    if isinstance(value, dict):
        return {key: _sorted_keys(value[key]) for key in sorted(value)}
    if isinstance(value, list):
        return [_sorted_keys(item) for item in value]
    return value


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--output-dir", default=str(DEFAULT_OUTPUT_DIR))
    parser.add_argument("--components-dir", default=str(DEFAULT_COMPONENTS_DIR), help="where the component specs go")
    parser.add_argument("--settings", help="YAML file of compile-time Kubernetes settings")
    args = parser.parse_args(argv)
    for path in compile_all(args.output_dir, settings_path=args.settings) + compile_components(args.components_dir):
        print(path)


if __name__ == "__main__":
    main()
