"""Server-side apply as the API server does it (k8s.io/apimachinery ``fieldmanager``, structured-merge-diff), for
the fields the deploy targets send: who owns which field, conflicts, removal of fields a manager stops applying.

- Fields are paths; a list whose items are mappings with ``name`` is associative (an item is ``k:{"name":...}``,
  as containers, ports, env and imagePullSecrets are in the real schemas), any other list is atomic (one value).
- An apply by manager M of fields F: a field in F that another manager owns, with a different value live, is a
  conflict (HTTP 409 ``Apply failed with N conflict(s)``) unless ``force=true``, which takes it over. A field M
  applied before and leaves out now is removed, unless another manager owns it too. M then owns exactly F.
- An update (a controller's PUT, e.g. the HorizontalPodAutoscaler writing ``spec.replicas`` through the scale
  subresource) takes the fields it changes from every other manager.
- ``metadata.managedFields`` shows each manager's fields in the FieldsV1 format, with operation and time.
"""

from __future__ import annotations

import copy
import json
from dataclasses import dataclass, field
from typing import Any

IDENTITY = {("apiVersion",), ("kind",), ("metadata", "name"), ("metadata", "namespace")}
SERVER_SET = ("managedFields", "resourceVersion", "uid", "creationTimestamp", "generation", "deletionTimestamp")
MISSING = object()

Path = tuple  # of str (a mapping key) or Key (an associative list item)


@dataclass(frozen=True)
class Key:
    """An item of an associative list, by its ``name``."""

    name: str

    def __str__(self) -> str:
        return f'[name="{self.name}"]'


@dataclass
class Manager:
    name: str
    operation: str  # Apply or Update
    api_version: str
    subresource: str = ""
    fields: set = field(default_factory=set)
    time: str = ""


class Conflict(Exception):
    def __init__(self, conflicts: list[tuple[Path, Manager]]):
        self.conflicts = conflicts
        lines = [f'conflict with "{m.name}"' + (f" with subresource \"{m.subresource}\"" if m.subresource else "")
                 + f" using {m.api_version}: {render(p)}" for p, m in conflicts]  # fmt: skip
        noun = "conflict" if len(conflicts) == 1 else "conflicts"
        super().__init__(f"Apply failed with {len(conflicts)} {noun}: " + "\n".join(lines))


def associative(value: Any) -> bool:
    return isinstance(value, list) and bool(value) and all(isinstance(i, dict) and "name" in i for i in value)


def leaves(value: Any, prefix: Path = ()) -> dict[Path, Any]:
    """Every owned path of ``value`` and its value: leaves, associative items (their key), empty mappings."""
    found: dict[Path, Any] = {}
    if isinstance(value, dict) and value:
        for key, child in value.items():
            found.update(leaves(child, (*prefix, key)))
    elif associative(value):
        for item in value:
            path = (*prefix, Key(item["name"]))
            found[path] = {"name": item["name"]}
            found.update(leaves({k: v for k, v in item.items() if k != "name"}, path))
    else:
        found[prefix] = value
    return found


def applied_fields(body: dict) -> dict[Path, Any]:
    """The fields an apply configuration sets, identity and server-set metadata and status aside."""
    body = {k: v for k, v in body.items() if k != "status"}
    metadata = {k: v for k, v in (body.get("metadata") or {}).items() if k not in SERVER_SET}
    return {p: v for p, v in leaves({**body, "metadata": metadata}).items() if p not in IDENTITY and p}


def get(obj: Any, path: Path) -> Any:
    for segment in path:
        if isinstance(segment, Key):
            obj = next((i for i in obj if isinstance(i, dict) and i.get("name") == segment.name), MISSING) \
                if isinstance(obj, list) else MISSING  # fmt: skip
        else:
            obj = obj.get(segment, MISSING) if isinstance(obj, dict) else MISSING
        if obj is MISSING:
            return MISSING
    if isinstance(obj, dict) and path and isinstance(path[-1], Key):
        return {"name": obj["name"]}
    return obj


def remove(obj: dict, path: Path) -> None:
    parent = get(obj, path[:-1]) if len(path) > 1 else obj
    if len(path) > 1 and isinstance(path[-2], Key):  # get() returns the key only for an item: walk again
        parent = _item(obj, path[:-1])
    last = path[-1]
    if isinstance(last, Key) and isinstance(parent, list):
        parent[:] = [i for i in parent if not (isinstance(i, dict) and i.get("name") == last.name)]
    elif isinstance(parent, dict):
        parent.pop(last, None)


def _item(obj: Any, path: Path) -> Any:
    for segment in path:
        if isinstance(segment, Key):
            obj = next(i for i in obj if isinstance(i, dict) and i.get("name") == segment.name)
        else:
            obj = obj[segment]
    return obj


def merge(live: Any, applied: Any) -> Any:
    """``applied`` merged into ``live``: mappings key by key, associative lists item by item, the rest replaced."""
    if isinstance(live, dict) and isinstance(applied, dict):
        merged = dict(live)
        for key, value in applied.items():
            merged[key] = merge(live[key], value) if key in live else copy.deepcopy(value)
        return merged
    if associative(live) and associative(applied):
        by_name = {item["name"]: item for item in live}
        merged = [merge(by_name[i["name"]], i) if i["name"] in by_name else copy.deepcopy(i) for i in applied]
        applied_names = {i["name"] for i in applied}
        return merged + [i for i in live if i["name"] not in applied_names]
    return copy.deepcopy(applied)


def managers_of(state: dict) -> list[Manager]:
    return state.setdefault("managers", [])


def apply(state: dict, live: dict | None, body: dict, manager: str, force: bool, now_text: str) -> dict:
    """The object after ``manager`` applies ``body`` over ``live`` (None: created); raises ``Conflict``."""
    fields = applied_fields(body)
    managers = managers_of(state)
    mine = next((m for m in managers if m.name == manager and m.operation == "Apply" and not m.subresource), None)
    others = [m for m in managers if m is not mine]
    if live is None:
        result = copy.deepcopy(body)
    else:
        conflicts = [
            (path, other)
            for other in others
            for path in sorted(other.fields & fields.keys(), key=render)
            if get(live, path) is not MISSING and get(live, path) != fields[path]
        ]
        if conflicts and not force:
            raise Conflict(conflicts)
        for path, other in conflicts:
            other.fields.discard(path)
        owned_elsewhere = set().union(*(m.fields for m in others)) if others else set()
        result = copy.deepcopy(live)
        dropped = (mine.fields if mine else set()) - fields.keys() - owned_elsewhere
        for path in sorted(dropped, key=len, reverse=True):
            remove(result, path)
        result = merge(result, {k: v for k, v in body.items() if k != "status"})
    if mine is None:
        mine = Manager(manager, "Apply", body.get("apiVersion", ""))
        managers.append(mine)
    mine.fields, mine.time = set(fields), now_text
    managers[:] = [m for m in managers if m.fields]
    return result


def update(state: dict, obj: dict, path: Path, value: Any, manager: str, api_version: str, subresource: str,
           now_text: str) -> None:  # fmt: skip
    """A controller's update of one field: it takes the field from every other manager."""
    parent = obj
    for segment in path[:-1]:
        if isinstance(segment, Key):
            parent = next(i for i in parent if isinstance(i, dict) and i.get("name") == segment.name)
        else:
            parent = parent.setdefault(segment, {})
    parent[path[-1]] = value
    managers = managers_of(state)
    for other in managers:
        other.fields.discard(path)
    mine = next((m for m in managers if (m.name, m.operation, m.subresource) == (manager, "Update", subresource)), None)
    if mine is None:
        mine = Manager(manager, "Update", api_version, subresource)
        managers.append(mine)
    mine.fields.add(path)
    mine.time = now_text
    managers[:] = [m for m in managers if m.fields]


def owner(state: dict, path: Path) -> list[str]:
    return [m.name for m in managers_of(state) if path in m.fields]


def render(path: Path) -> str:
    return "".join(str(s) if isinstance(s, Key) else f".{s}" for s in path)


def managed_fields(state: dict) -> list[dict]:
    """``metadata.managedFields``, as the API server shows it."""
    entries = []
    for manager in managers_of(state):
        tree: dict = {}
        for path in manager.fields:
            node = tree
            for segment in path:
                name = f"k:{json.dumps({'name': segment.name})}" if isinstance(segment, Key) else f"f:{segment}"
                node = node.setdefault(name, {})
            if path and isinstance(path[-1], Key):
                node.setdefault(".", {})
        entry = {
            "manager": manager.name,
            "operation": manager.operation,
            "apiVersion": manager.api_version,
            "time": manager.time,
            "fieldsType": "FieldsV1",
            "fieldsV1": tree,
        }
        if manager.subresource:
            entry["subresource"] = manager.subresource
        entries.append(entry)
    return entries
