"""The fake API server's server-side apply (tests/support/server_side_apply.py) behaves as the API server's field
manager does for the fields the deploy targets send: ownership, conflicts, removal, takeover by an update."""

from __future__ import annotations

import pytest

from tests.support import server_side_apply as ssa

STAMP = "2025-01-01T00:00:00Z"


def deployment(image: str, **spec) -> dict:
    container = {"name": "bento", "image": image}
    return {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "d", "namespace": "n"},
            "spec": {**spec, "template": {"spec": {"containers": [container]}}}}  # fmt: skip


def test_a_field_left_out_is_removed_unless_another_manager_owns_it():
    state: dict = {}
    live = ssa.apply(state, None, deployment("a", replicas=2, paused=False), "me", False, STAMP)
    live = ssa.apply(state, live, deployment("a"), "me", False, STAMP)
    assert "replicas" not in live["spec"] and "paused" not in live["spec"]
    live = ssa.apply(state, live, deployment("a", replicas=2), "me", False, STAMP)
    ssa.update(state, live, ("spec", "replicas"), 5, "kube-controller-manager", "autoscaling/v1", "scale", STAMP)
    assert ssa.owner(state, ("spec", "replicas")) == ["kube-controller-manager"]
    live = ssa.apply(state, live, deployment("b"), "me", False, STAMP)
    assert live["spec"]["replicas"] == 5, "the autoscaler's field survives an apply that leaves it out"


def test_a_different_value_in_another_managers_field_conflicts_unless_forced():
    state: dict = {}
    live = ssa.apply(state, None, deployment("a"), "me", False, STAMP)
    path = ("spec", "template", "spec", "containers", ssa.Key("bento"), "image")
    ssa.update(state, live, path, "edited", "kubectl-set", "apps/v1", "", STAMP)
    with pytest.raises(ssa.Conflict, match=r'conflict with "kubectl-set" using apps/v1: .*\[name="bento"\]\.image'):
        ssa.apply(state, live, deployment("b"), "me", False, STAMP)
    assert ssa.apply(state, live, deployment("edited"), "me", False, STAMP), "the same value is shared, no conflict"
    live = ssa.apply(state, live, deployment("b"), "me", True, STAMP)
    assert live["spec"]["template"]["spec"]["containers"][0]["image"] == "b"
    assert ssa.owner(state, path) == ["me"], "force takes the field over"


def test_managed_fields_are_shown_in_fieldsv1():
    state: dict = {}
    ssa.apply(state, None, deployment("a"), "me", False, STAMP)
    (entry,) = ssa.managed_fields(state)
    assert entry["manager"] == "me" and entry["operation"] == "Apply" and entry["fieldsType"] == "FieldsV1"
    containers = entry["fieldsV1"]["f:spec"]["f:template"]["f:spec"]["f:containers"]
    assert containers == {'k:{"name": "bento"}': {"f:image": {}, ".": {}}}
