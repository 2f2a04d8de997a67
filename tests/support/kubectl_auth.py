"""``kubectl auth can-i`` commands: how the opt-in cluster tests ask a real cluster what a ServiceAccount may do."""

from __future__ import annotations


def can_i(kubectl: str, verb: str, group: str, resource: str, user: str, namespace: str) -> list[str]:
    """`kubectl auth can-i` for one rule; e.g. `get pods --subresource=log`, `create pytorchjobs.kubeflow.org`."""
    resource, _, subresource = resource.partition("/")
    command = [kubectl, "auth", "can-i", verb, f"{resource}.{group}" if group else resource]
    command += [f"--subresource={subresource}"] if subresource else []
    return [*command, f"--as={user}", "-n", namespace]
