"""Two gates on the same decision, one on a bare return (``Output``), one on a NamedTuple field (``promote``),
to show which ``kfp.local`` can resolve inside a ``dsl.If`` (see components/evaluate/README.md).

Kept apart from the tests: KFP reads the pipeline's signature, which postponed annotations would
turn into strings.
"""

from typing import NamedTuple

from kfp import dsl


@dsl.component
def decide_bare(promote: bool) -> bool:
    return promote


@dsl.component
def decide_named(promote: bool) -> NamedTuple("Decision", [("promote", bool)]):
    return (promote,)


@dsl.component
def passed(gate: str) -> str:
    return gate


@dsl.pipeline(name="gates")
def gates(promote: bool):
    bare = decide_bare(promote=promote)
    with dsl.If(bare.output == True, name="bare-gate"):  # noqa: E712 (KFP condition)
        passed(gate="bare").set_display_name("bare")
    named = decide_named(promote=promote)
    with dsl.If(named.outputs["promote"] == True, name="named-gate"):  # noqa: E712 (KFP condition)
        passed(gate="named").set_display_name("named")
