"""Descriptions of options, written once where each option is defined, and the docstrings KFP compiles from them.

KFP takes a component's or pipeline's descriptions from the decorated function's docstring (``inspect.getdoc``,
parsed by ``docstring_parser`` as Google style): the ``Args:`` section describes the inputs, the ``Returns:``
section the outputs (each ``Output[...]`` parameter by its name, a single return value as ``Output``, a
``NamedTuple``'s fields by theirs). The Kubeflow UI shows them beside each parameter, and a component spec carries
them to ``load_component_from_file`` users.

- ``option(default, description)`` is a dataclass field that carries its description; ``field_descriptions(cls)``
  reads them back (``TrainConfig``, the distributed jobs' configs).
- ``input_descriptions(component)`` reads a component's, for a pipeline parameter that is passed on to it.
- ``@described(*sources)``, placed under ``@dsl.component`` or ``@dsl.pipeline``, rewrites the function's
  docstring with an entry for every input and output: the docstring's own entry where it has one, else the first
  source's. The function itself is unchanged, and KFP embeds a component's source without its decorators, so
  the code that runs in a step's pod is the same.

Plain Python: no KFP at import (``TrainConfig`` and the job configs use ``option``), only in ``described``.
"""

from __future__ import annotations

import dataclasses
import inspect
import re
from collections.abc import Callable, Mapping
from typing import Any, TypeVar

DESCRIPTION = "description"  # the key of a dataclass field's metadata
SECTIONS = ("Args", "Returns")
ENTRY = re.compile(r"^    (?P<name>[A-Za-z_]\w*): ?(?P<text>.*)$")

F = TypeVar("F", bound=Callable[..., Any])


def option(default: Any = dataclasses.MISSING, description: str = "", *, default_factory: Any = dataclasses.MISSING):
    """A dataclass field with its description: what the option does and what its default (or ``-1``, ``""``) means."""
    if not description:
        raise ValueError("an option needs a description")
    return dataclasses.field(default=default, default_factory=default_factory, metadata={DESCRIPTION: description})


def field_descriptions(cls: type) -> dict[str, str]:
    """The descriptions of the dataclass ``cls``'s fields (its bases' included), by field name."""
    return {item.name: item.metadata[DESCRIPTION] for item in dataclasses.fields(cls) if DESCRIPTION in item.metadata}


def input_descriptions(component, **renamed: str) -> dict[str, str]:
    """A KFP component's input descriptions, by input name; ``renamed`` (new name = the input's name) adds them
    under the names of the pipeline parameters passed on to those inputs."""
    inputs = component.component_spec.inputs or {}
    found = {name: spec.description for name, spec in inputs.items() if spec.description}
    return found | {new: found[old] for new, old in renamed.items() if old in found}


def described(*sources: Mapping[str, str]) -> Callable[[F], F]:
    """Decorator: give ``func`` a docstring that describes each of its inputs under ``Args:`` and each output under
    ``Returns:``, from its own entries first, then from ``sources`` in order.

    The head of the docstring (its summary and text) stays as written. One entry per name, each on one line,
    so that the compiled description is one paragraph. An output's own entry may stand under either section (an
    ``Output[...]`` parameter is a parameter too). An input or output described nowhere gets no entry (the tests
    find it); an entry that is not ``name: text``, or that names neither an input nor an output, is an error.
    """

    def decorate(func: F) -> F:
        head, own = parse_docstring(inspect.getdoc(func) or "")
        inputs, outputs = interface(func)
        stray = sorted((set(own["Args"]) - set(inputs) - set(outputs)) | (set(own["Returns"]) - set(outputs)))
        if stray:
            raise ValueError(
                f"{func.__name__}'s docstring describes {', '.join(stray)}, which it does not take or give"
            )

        def entries(names: list[str], lookup: list[Mapping[str, str]]) -> list[str]:
            lines = []
            for name in names:
                text = next((source[name] for source in lookup if source.get(name)), "")
                if text:
                    lines.append(f"    {name}: {' '.join(text.split())}")
            return lines

        parts = [head] if head else []
        for title, names, lookup in (
            ("Args", inputs, [own["Args"], *sources]),
            ("Returns", outputs, [own["Returns"], own["Args"], *sources]),
        ):
            lines = entries(names, lookup)
            if lines:
                parts.append("\n".join([f"{title}:", *lines]))
        func.__doc__ = "\n\n".join(parts) + "\n"
        return func

    return decorate


def parse_docstring(docstring: str) -> tuple[str, dict[str, dict[str, str]]]:
    """(the head: everything before the first section, each section's entries by name: ``Args`` and ``Returns``)."""
    head: list[str] = []
    entries: dict[str, dict[str, list[str]]] = {title: {} for title in SECTIONS}
    section, current = None, None
    for line in docstring.splitlines():
        title = line.rstrip()
        if title.endswith(":") and title[:-1] in SECTIONS:
            section, current = title[:-1], None
            continue
        if section is None:
            head.append(line)
            continue
        match = ENTRY.match(line)
        if match:
            current = match.group("name")
            if current in entries[section]:
                raise ValueError(f"{current} is described twice under {section}:")
            entries[section][current] = [match.group("text")]
        elif line.startswith("        ") and current is not None:
            entries[section][current].append(line.strip())
        elif line.strip():
            raise ValueError(f"a {section}: entry must read 'name: description', got {line.strip()!r}")
    parsed = {
        title: {name: " ".join(" ".join(lines).split()) for name, lines in found.items()}
        for title, found in entries.items()
    }
    return "\n".join(head).strip(), parsed


def interface(func: Callable) -> tuple[list[str], list[str]]:
    """(the names of ``func``'s inputs, of its outputs) as KFP sees them: ``Output[...]`` parameters are outputs,
    and so is the return value (``Output``, or a ``NamedTuple``'s fields)."""
    from kfp.dsl.types.type_annotations import is_artifact_wrapped_in_Output

    signature = inspect.signature(func)
    inputs, outputs = [], []
    for name, parameter in signature.parameters.items():
        (outputs if is_artifact_wrapped_in_Output(parameter.annotation) else inputs).append(name)
    returned = signature.return_annotation
    if returned not in (inspect.Signature.empty, None):
        outputs += list(getattr(returned, "_fields", None) or ["Output"])
    return inputs, outputs
