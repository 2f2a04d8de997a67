"""components/deploy/rbac.yaml grants the deploy step's ServiceAccount what the step sends, and nothing else but a
few read-only verbs for people following a rollout.

What the step sends is not written down here: both cluster targets run against the fake API server through
scenarios that reach every Kubernetes API method their source calls (tests/support/deploy_cluster.py), and each
request is turned into what the API server's RBAC authorizer checks for it. A new call changes that set, and these
tests fail until the Role and the README follow.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import yaml

from components.deploy import deployment_target, kserve_target, kube_client, rollout
from tests.support.deploy_cluster import NAMESPACE, deploy_permissions, deploy_traffic

ROOT = Path(__file__).resolve().parents[1]
RBAC_YAML = ROOT / "components" / "deploy" / "rbac.yaml"
README = ROOT / "components" / "deploy" / "README.md"
APPLY = "kubectl apply -n <profile-namespace> -f components/deploy/rbac.yaml"
WRITTEN = (("apps", "deployments"), ("", "services"), ("autoscaling", "horizontalpodautoscalers"),
           ("serving.kserve.io", "inferenceservices"))  # fmt: skip
FOR_PEOPLE = {(group, resource, verb) for group, resource in WRITTEN for verb in ("list", "watch")} | {
    ("", "pods", "get")
}


def granted() -> set[tuple[str, str, str]]:
    documents = [d for d in yaml.safe_load_all(RBAC_YAML.read_text()) if d]
    (role,) = [d for d in documents if d["kind"] == "Role"]
    return {
        (g, r, v) for rule in role["rules"] for g in rule["apiGroups"] for r in rule["resources"] for v in rule["verbs"]
    }


def readme_permissions() -> set[tuple[str, str, str]]:
    section = README.read_text().split("## Permissions (RBAC)\n", 1)[1].split("\n## ", 1)[0]
    listed = set()
    for row in re.findall(r"^\|(.+)\|$", section, flags=re.MULTILINE):
        cells = [cell.strip() for cell in row.split("|")]
        if not cells[0].startswith("`"):
            continue
        group = re.findall(r"`([^`]*)`", cells[0])[0].strip('"')
        resource = re.findall(r"`([^`]*)`", cells[1])[0]
        listed |= {(group, resource, verb) for verb in re.findall(r"`([^`]*)`", cells[2])}
    return listed


def api_methods_in_source() -> set[str]:
    """Every method of the client's API objects (core, apps, custom, ...) and of DeployApi the targets call."""
    names = set()
    for module in (deployment_target, kserve_target, kube_client, rollout):
        for node in ast.walk(ast.parse(Path(module.__file__).read_text())):
            if isinstance(node, ast.Attribute) and _names_api(node.value):
                names.add(node.attr)
    return names


def _names_api(node: ast.AST) -> bool:
    """``self.api`` or ``api``: the DeployApi the targets and the diagnosis call."""
    return (isinstance(node, ast.Attribute) and node.attr == "api") or (isinstance(node, ast.Name) and node.id == "api")


def test_the_scenarios_reach_every_call_the_targets_make():
    """Each DeployApi method the targets call sends a request in the scenarios, so its permission counts."""
    called = api_methods_in_source()
    assert called >= {"apply", "get", "delete", "pods", "log_tail", "warnings"}, called
    rules = {request.access.rule for request in deploy_traffic() if request.access}
    expected = {"apply": "patch", "get": "get", "delete": "delete", "pods": "list", "log_tail": "get",
                "warnings": "list"}  # fmt: skip
    for method in called & expected.keys():
        assert any(verb == expected[method] for _, _, verb in rules), f"no scenario reaches DeployApi.{method}"


def test_every_request_is_namespaced_in_the_deploy_namespace():
    for request in deploy_traffic():
        assert request.access is not None, f"{request} addresses no resource"
        assert request.access.namespace == NAMESPACE, request


def test_the_role_grants_what_the_step_sends_and_only_read_only_extras():
    needed = deploy_permissions()
    assert needed - granted() == set(), f"the step would get HTTP 403 for {sorted(needed - granted())}"
    extra = granted() - needed - FOR_PEOPLE
    assert extra == set(), f"rbac.yaml grants {sorted(extra)}, which the step never sends"
    assert all(verb in ("get", "list", "watch") for _, _, verb in FOR_PEOPLE)


def test_the_readme_lists_what_the_step_sends():
    assert deploy_permissions() == readme_permissions()
    assert APPLY in RBAC_YAML.read_text() and APPLY in README.read_text()


def test_rbac_yaml_names_no_namespace_and_binds_the_pipeline_service_account():
    documents = [d for d in yaml.safe_load_all(RBAC_YAML.read_text()) if d]
    assert sorted(d["kind"] for d in documents) == ["Role", "RoleBinding"]
    for document in documents:
        assert "namespace" not in document["metadata"]
    (binding,) = [d for d in documents if d["kind"] == "RoleBinding"]
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": "default-editor"}]
    assert binding["roleRef"]["name"] == "kfp-torch-lifecycle-deploy"
