"""Checks of Kubernetes values, as the API server checks them: names, namespaces, quantities, label values,
extended resource names, tolerations and environment variable names.

Each check is made before anything is sent to a cluster, so that a bad value fails at once, named, with what
would be valid. ``validate_*`` raise ``InvalidValue``; ``is_*`` and ``*_problems`` answer for callers that
collect every problem of a configuration first.
"""

from __future__ import annotations

import re
from typing import Any

DNS_1123_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
DNS_1035_LABEL = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")
DNS_1123_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
ENV_NAME = re.compile(r"^[-._a-zA-Z][-._a-zA-Z0-9]*$")
SECRET_LIKE_ENV = re.compile(r"(PASSWORD|PASSWD|SECRET|TOKEN|PRIVATE_KEY|ACCESS_KEY|API_KEY)", re.IGNORECASE)
# k8s.io/apimachinery resource.Quantity: <sign><digits>[.<digits>] or <sign>.<digits>, then a binary suffix
# (Ki ... Ei), a decimal one (n u m "" k M G T P E: lowercase k only) or a decimal exponent (e/E<signed integer>).
# Both ParseQuantity (what a controller's pods go through) and the CRDs' pattern accept exactly these.
QUANTITY = re.compile(r"^[+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[KMGTPE]i|[numkMGTPE]|[eE][+-]?[0-9]+)?\Z")
LABEL_VALUE = re.compile(r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$")
TOLERATION_KEYS = {"key", "operator", "value", "effect", "tolerationSeconds"}
TOLERATION_OPERATORS = ("Exists", "Equal")
TOLERATION_EFFECTS = ("NoSchedule", "PreferNoSchedule", "NoExecute", "")


class InvalidValue(ValueError):
    """A value the API server would refuse, or that would make an object no controller can run."""


def is_quantity(text: Any) -> bool:
    """A string Kubernetes parses as a resource.Quantity: '2', '500m', '1.5', '8Gi', '1e3', '-1' (16K, 1mm,
    5Gi5 and 1.2.3 are not)."""
    return isinstance(text, str) and bool(QUANTITY.match(text))


def is_resource_quantity(text: Any) -> bool:
    """A quantity a pod may request: not negative (the API server rejects negative requests and limits)."""
    return is_quantity(text) and not text.startswith("-")


def is_label_value(value: Any) -> bool:
    """Up to 63 letters, digits, '-', '_' or '.', starting and ending with a letter or digit (or empty)."""
    return isinstance(value, str) and len(value) <= 63 and bool(LABEL_VALUE.match(value))


def is_extended_resource(name: Any) -> bool:
    """``domain/name``, as device plugins advertise them (``nvidia.com/gpu``, ``amd.com/gpu``)."""
    prefix, _, resource = str(name).rpartition("/")
    return bool(prefix and DNS_1123_SUBDOMAIN.match(prefix) and resource and LABEL_VALUE.match(resource))


def is_env_name(name: Any) -> bool:
    """A name the API server accepts for a container's environment variable."""
    return isinstance(name, str) and bool(ENV_NAME.match(name))


def looks_like_secret(name: str) -> bool:
    """An environment variable name that suggests a credential (``HF_TOKEN``, ``DB_PASSWORD``): its value would
    show in the object, the pipeline's YAML and ``kubectl describe``."""
    return bool(SECRET_LIKE_ENV.search(name))


def validate_name(name: str, what: str = "job name") -> None:
    """A DNS-1035 label (at most 63 characters, starting with a letter): what names that become pod and Service
    names need (the Training Operator's and Trainer's jobs, Services)."""
    if not isinstance(name, str) or len(name) > 63 or not DNS_1035_LABEL.match(name):
        raise InvalidValue(
            f"{what} {name!r} is not a DNS-1035 label: at most 63 lowercase letters, digits and '-', "
            "starting with a letter and ending with a letter or digit"
        )


def validate_namespace(namespace: str) -> None:
    """Namespaces are DNS-1123 labels: at most 63 characters, and may start with a digit ('1team')."""
    if not isinstance(namespace, str) or len(namespace) > 63 or not DNS_1123_LABEL.match(namespace):
        raise InvalidValue(
            f"namespace {namespace!r} is not a DNS-1123 label: at most 63 lowercase letters, digits and '-', "
            "starting and ending with a letter or digit"
        )


def toleration_problems(index: int, toleration: Any) -> list[str]:
    """What is wrong with ``tolerations[index]``, as the API server validates a pod's tolerations."""
    where = f"tolerations[{index}]"
    if not isinstance(toleration, dict):
        return [f"{where} must be a mapping with keys from {', '.join(sorted(TOLERATION_KEYS))}"]
    problems = []
    unknown = set(toleration) - TOLERATION_KEYS
    if unknown:
        problems.append(
            f"{where} has unknown key(s) {', '.join(sorted(unknown))}; allowed: {', '.join(sorted(TOLERATION_KEYS))}"
        )
    operator = toleration.get("operator", "Equal")
    if operator not in TOLERATION_OPERATORS:
        problems.append(f"{where}.operator must be one of {', '.join(TOLERATION_OPERATORS)}, got {operator!r}")
    if operator == "Exists" and toleration.get("value"):
        problems.append(f"{where}: operator Exists takes no value")
    effect = toleration.get("effect", "")
    if effect not in TOLERATION_EFFECTS:
        problems.append(f"{where}.effect must be one of NoSchedule, PreferNoSchedule, NoExecute, got {effect!r}")
    if "tolerationSeconds" in toleration and not _int(toleration["tolerationSeconds"]):
        problems.append(f"{where}.tolerationSeconds must be an integer")
    return problems


def _int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)
