"""The checks of Kubernetes values (components/common/kube/values.py) accept what the API server accepts and refuse
what it refuses."""

from __future__ import annotations

import re

import pytest

from components.common.kube.values import QUANTITY, InvalidValue, is_quantity, validate_name, validate_namespace


@pytest.mark.parametrize("name", ["Train", "train_1", "-train", "train-", "9train", "x" * 64, ""])
def test_job_names_that_are_not_dns_1035_labels(name):
    with pytest.raises(InvalidValue, match="is not a DNS-1035 label"):
        validate_name(name)


@pytest.mark.parametrize("namespace", ["Team", "team_a", "-team", "team-", "a" * 64, "", "team.a"])
def test_namespaces_that_are_not_dns_1123_labels(namespace):
    with pytest.raises(InvalidValue, match=r"namespace .* is not a DNS-1123 label"):
        validate_namespace(namespace)


# What k8s.io/apimachinery's resource.ParseQuantity accepts (and the CRD's pattern: both must pass).
VALID_QUANTITIES = [
    "0", "2", "500m", "1.5", "0.5", ".5", "1.", "+1", "-1", "8Gi", "16Ki", "1Ei", "1k", "1M", "1G", "1T", "1P",
    "1E", "100n", "100u", "1e3", "1E3", "1e-3", "1e+3", "1.5e3", "2.5Gi", "1.G", "007",
]  # fmt: skip
INVALID_QUANTITIES = [
    "16K", "1mm", "5Gi5", "1.2.3", "", ".", "Gi", "1 Gi", "1gi", "1KI", "1ki", "1e", "1e1.5", "1Mi3", "--1", "1E+",
    "1.5.Gi", " 1", "1\n", "0x10", "1b", "1Ki ",
]  # fmt: skip
QUANTITY_PATTERN = re.compile(
    r"^(\+|-)?(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))(([KMGTPE]i)|[numkMGTPE]|([eE](\+|-)?(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))))?$"
)  # the reference CRD's pattern for resource quantities


@pytest.mark.parametrize("text", VALID_QUANTITIES)
def test_kubernetes_quantities_are_accepted(text):
    assert is_quantity(text) and QUANTITY.match(text)
    assert QUANTITY_PATTERN.match(text)  # the API server's schema agrees


@pytest.mark.parametrize("text", INVALID_QUANTITIES)
def test_what_the_api_server_rejects_is_not_a_quantity(text):
    assert not is_quantity(text) and not QUANTITY.match(text)
