"""components/distributed_train/rbac.yaml grants the distributed steps' ServiceAccount what the launcher uses, for
PyTorchJobs and TrainJobs, and nothing else but a few read-only verbs for people following a run.

What the launcher uses is not written down here: the launcher runs against the fake API server
(tests/support/launcher_traffic.py) through the scenarios that reach every Kubernetes API method it calls
(checked against the source of components/common/kube/), and each request it sends is turned into what the API
server's RBAC authorizer checks for it: verb, API group, resource and subresource. A new call in the launcher
changes that set, and these tests fail until the Role and the README follow.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml
from kubernetes import client as k8s

from tests.support.fake_kube import Access, access
from tests.support.launcher_traffic import (
    NAMESPACE,
    Permission,
    api_attributes,
    api_methods_in_source,
    launcher_permissions,
    launcher_traffic,
)

ROOT = Path(__file__).resolve().parents[1]
RBAC_YAML = ROOT / "components" / "distributed_train" / "rbac.yaml"
README = ROOT / "components" / "distributed_train" / "README.md"
APPLY = "kubectl apply -n <profile-namespace> -f components/distributed_train/rbac.yaml"
RBAC_API = "rbac.authorization.k8s.io/v1"
SERVICE_ACCOUNT = "default-editor"
# Read-only, for people following a run (`kubectl get pytorchjobs -w`, `kubectl get trainjobs -w`, `kubectl describe
# pod`; pods/log list as Kubernetes' own view role has it). The launcher sends none of these.
FOR_PEOPLE: set[Permission] = {
    ("kubeflow.org", "pytorchjobs", "list"),
    ("kubeflow.org", "pytorchjobs", "watch"),
    ("trainer.kubeflow.org", "trainjobs", "list"),
    ("trainer.kubeflow.org", "trainjobs", "watch"),
    ("", "pods", "get"),
    ("", "pods/log", "list"),
}


# --- what rbac.yaml grants --------------------------------------------------------------------------------------


def rbac_documents() -> list[dict]:
    return [document for document in yaml.safe_load_all(RBAC_YAML.read_text()) if document is not None]


def of_kind(kind: str) -> dict:
    matching = [document for document in rbac_documents() if document.get("kind") == kind]
    assert len(matching) == 1, f"rbac.yaml must hold exactly one {kind}, holds {len(matching)}"
    return matching[0]


def granted(role: dict) -> set[Permission]:
    return {
        (group, resource, verb)
        for rule in role["rules"]
        for group in rule["apiGroups"]
        for resource in rule["resources"]
        for verb in rule["verbs"]
    }


def readme_permissions() -> set[Permission]:
    """The table of README's "Permissions (RBAC)" section: one row per API group and resource."""
    section = README.read_text().split("## Permissions (RBAC)\n", 1)[1].split("\n## ", 1)[0]
    listed = set()
    for row in re.findall(r"^\|(.+)\|$", section, flags=re.MULTILINE):
        cells = [cell.strip() for cell in row.split("|")]
        if not cells[0].startswith("`"):
            continue  # the header and its rule
        group = re.findall(r"`([^`]*)`", cells[0])[0].strip('"')
        resource = re.findall(r"`([^`]*)`", cells[1])[0]
        listed |= {(group, resource, verb) for verb in re.findall(r"`([^`]*)`", cells[2])}
    return listed


# --- the tests --------------------------------------------------------------------------------------------------


JOBS = "/apis/kubeflow.org/v1/namespaces/a/pytorchjobs"


@pytest.mark.parametrize(
    "method, path, query, expected",
    [
        ("POST", JOBS, "", ("create", "kubeflow.org", "pytorchjobs")),
        ("GET", f"{JOBS}/j", "", ("get", "kubeflow.org", "pytorchjobs")),
        ("GET", JOBS, "", ("list", "kubeflow.org", "pytorchjobs")),
        ("GET", JOBS, "watch=true", ("watch", "kubeflow.org", "pytorchjobs")),
        ("DELETE", f"{JOBS}/j", "", ("delete", "kubeflow.org", "pytorchjobs")),
        ("DELETE", JOBS, "", ("deletecollection", "kubeflow.org", "pytorchjobs")),
        ("PATCH", f"{JOBS}/j", "", ("patch", "kubeflow.org", "pytorchjobs")),
        ("GET", "/api/v1/namespaces/a/pods", "labelSelector=x%3Dy", ("list", "", "pods")),
        ("GET", "/api/v1/namespaces/a/pods", "watch=1&labelSelector=x", ("watch", "", "pods")),
        ("GET", "/api/v1/namespaces/a/pods/p", "", ("get", "", "pods")),
        ("GET", "/api/v1/namespaces/a/pods/p/log", "follow=True&container=c", ("get", "", "pods/log")),
        ("GET", "/api/v1/namespaces/a/events", "fieldSelector=involvedObject.name%3Dp", ("list", "", "events")),
        ("GET", "/api/v1/namespaces/a", "", ("get", "", "namespaces")),
    ],
)
def test_requests_are_read_as_the_rbac_authorizer_reads_them(method, path, query, expected):
    """GET on one object is get, on a collection list (watch with ?watch=true), a subresource is its own resource."""
    resolved = access(method, path, query)
    assert (resolved.verb, *resolved.rule[:2]) == expected
    assert access("GET", "/apis", "") is None and access("GET", "/version", "") is None


def test_the_scenarios_reach_every_api_method_the_launcher_calls():
    """Otherwise a call only some other path makes would be missing from the permissions derived below."""
    assert api_attributes() == {"custom": "CustomObjectsApi", "core": "CoreV1Api"}, (
        "the launcher has another API object: the recorder wraps it, add a scenario that reaches its calls"
    )
    in_source = api_methods_in_source()
    assert in_source, "no API calls found in the launcher's modules: has the client moved?"
    never_reached = in_source - launcher_traffic().methods
    assert not never_reached, f"no scenario here reaches {sorted(never_reached)}: add one, so its permission counts"


def test_every_request_the_launcher_sends_is_a_namespaced_resource_in_the_jobs_namespace():
    """A Role grants nothing at the cluster scope nor in another namespace."""
    requests = launcher_traffic().requests
    assert requests
    for request in requests:
        assert isinstance(request.access, Access), f"{request} addresses no resource"
        assert request.access.namespace == NAMESPACE, f"{request} is not in the job's namespace"


def test_the_launcher_needs_what_the_readme_lists():
    assert launcher_permissions() == readme_permissions(), (
        "the launcher's requests and README's Permissions (RBAC) table differ: "
        f"needed {sorted(launcher_permissions())}, listed {sorted(readme_permissions())}"
    )


def test_rbac_yaml_is_a_valid_role_and_a_binding_of_it_to_the_pipeline_service_account():
    documents = rbac_documents()
    assert sorted(document.get("kind") for document in documents) == ["Role", "RoleBinding"]
    api = k8s.ApiClient()
    for document in documents:
        assert document["apiVersion"] == RBAC_API
        # The client's models raise on a missing required field; their serialisation drops unknown (misspelt) ones.
        model = api._ApiClient__deserialize(document, f"V1{document['kind']}")
        assert api.sanitize_for_serialization(model) == document, f"unknown fields in the {document['kind']}"
        assert re.fullmatch(r"[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?", document["metadata"]["name"])
    role, binding = of_kind("Role"), of_kind("RoleBinding")
    for rule in role["rules"]:
        assert rule["apiGroups"] and rule["resources"] and rule["verbs"], rule
        assert "*" not in [*rule["apiGroups"], *rule["resources"], *rule["verbs"]], f"a wildcard grants more: {rule}"
        assert not rule.get("resourceNames"), "job and pod names are decided at run time"
        assert not rule.get("nonResourceURLs"), "a Role cannot grant non-resource URLs"
    assert binding["roleRef"] == {
        "apiGroup": "rbac.authorization.k8s.io",
        "kind": "Role",
        "name": role["metadata"]["name"],
    }
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": SERVICE_ACCOUNT}]


def test_the_role_grants_every_permission_the_launcher_uses():
    missing = launcher_permissions() - granted(of_kind("Role"))
    assert not missing, f"the launcher would get HTTP 403 for {sorted(missing)}: add them to rbac.yaml's Role"


def test_the_role_grants_nothing_beyond_the_launchers_needs_and_read_only_access():
    extra = granted(of_kind("Role")) - launcher_permissions() - FOR_PEOPLE
    assert not extra, f"rbac.yaml's Role grants {sorted(extra)}, which the launcher never uses"
    assert all(verb in ("get", "list", "watch") for _, _, verb in FOR_PEOPLE)
    assert FOR_PEOPLE <= granted(of_kind("Role")), "the README promises these to people following a run"


def test_rbac_yaml_is_applied_to_a_namespace_and_names_none():
    """Applied with -n <namespace>: the Role, the binding and its ServiceAccount all land there.

    A ServiceAccount subject without a namespace is, to the RBAC authorizer, the one in the binding's namespace.
    """
    for document in rbac_documents():
        assert "namespace" not in document["metadata"], f"the {document['kind']} hard-codes a namespace"
    for subject in of_kind("RoleBinding")["subjects"]:
        assert "namespace" not in subject, "the subject hard-codes the ServiceAccount's namespace"
    header = RBAC_YAML.read_text().split("\napiVersion:", 1)[0]
    assert APPLY in header, "rbac.yaml's header comment says how to apply it"
    assert APPLY in README.read_text(), "the README says how to apply rbac.yaml"
