"""Checking a Kubernetes object against a CustomResourceDefinition's schema, as the API server would.

A CRD's ``openAPIV3Schema`` is a *structural* schema: the API server validates types, formats, enums,
patterns, bounds and required fields, and silently **drops** fields the schema does not declare (pruning).
A misspelt key in a manifest is therefore never an error in ``kubectl apply``: it just does nothing. Here
an unknown field is an error, like every other violation, each reported with its path.

Covers the keywords of KubeRay's generated CRDs: ``type``, ``properties``, ``additionalProperties``,
``items``, ``required``, ``enum``, ``pattern``, ``minLength``/``maxLength``, ``minimum``, ``minItems``,
``nullable``, ``format`` (int32, int64, date-time), ``x-kubernetes-int-or-string`` (with its ``anyOf``),
``x-kubernetes-preserve-unknown-fields``, ``x-kubernetes-list-type`` (set, map with its keys).
CEL rules (``x-kubernetes-validations``) are not evaluated: a value under one is reported, so that a
manifest that starts using such a field is checked by hand (or by a real API server) first.
"""

from __future__ import annotations

import re
from datetime import datetime
from pathlib import Path
from typing import Any

import yaml

_INT_RANGE = {"int32": (-(2**31), 2**31 - 1), "int64": (-(2**63), 2**63 - 1)}
# The metadata the API server keeps on create (ObjectMeta), for the root's bare `metadata: {type: object}`.
_OBJECT_META = {"name", "generateName", "namespace", "labels", "annotations", "finalizers", "ownerReferences"}


def load_crds(folder: Path) -> dict[tuple[str, str], dict]:
    """``(apiVersion, kind) -> openAPIV3Schema`` of every served version of the CRDs in ``folder``."""
    schemas = {}
    for path in sorted(folder.glob("*.yaml")):
        crd = yaml.load(path.read_text(), Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))
        group, kind = crd["spec"]["group"], crd["spec"]["names"]["kind"]
        for version in crd["spec"]["versions"]:
            if version.get("served"):
                schemas[(f"{group}/{version['name']}", kind)] = version["schema"]["openAPIV3Schema"]
    return schemas


def validate_object(obj: dict, schemas: dict[tuple[str, str], dict]) -> list[str]:
    """Every violation of ``obj`` (a whole manifest) against its CRD's schema; ``[]`` when it is valid."""
    key = (obj.get("apiVersion"), obj.get("kind"))
    if key not in schemas:
        return [f"no CRD serves apiVersion {key[0]!r} kind {key[1]!r}"]
    errors = validate(obj, schemas[key])
    metadata = obj.get("metadata")
    if not isinstance(metadata, dict) or not (metadata.get("name") or metadata.get("generateName")):
        errors.append("metadata.name: required")
    for field in sorted(set(metadata or {}) - _OBJECT_META):
        errors.append(f"metadata.{field}: unknown field (Kubernetes would drop it)")
    return errors


def validate(value: Any, schema: dict, path: str = "") -> list[str]:
    """Violations of ``value`` against a structural ``schema``, each as ``"<path>: <what>"``."""
    where = path or "(root)"
    if value is None:
        return [] if schema.get("nullable") else [f"{where}: must not be null"]
    errors: list[str] = []
    if schema.get("x-kubernetes-validations"):
        rules = "; ".join(r.get("rule", "") for r in schema["x-kubernetes-validations"])
        if any(r.get("rule") != "self == oldSelf" for r in schema["x-kubernetes-validations"]):  # transition rules
            errors.append(f"{where}: has CEL rules this checker does not evaluate ({rules})")
    if schema.get("x-kubernetes-int-or-string"):
        if not (_is_int(value) or isinstance(value, str)):
            return [f"{where}: expected an integer or a string, but got {type(value).__name__} instead"]
        if isinstance(value, str) and "pattern" in schema and not re.search(schema["pattern"], value):
            errors.append(f"{where}: {value!r} does not match {schema['pattern']}")
        return errors
    kind = schema.get("type")
    check = _TYPES.get(kind)
    if check is not None and not check(value):
        return [f"{where}: expected {kind}, but got {type(value).__name__} ({value!r}) instead"]
    if "enum" in schema and value not in schema["enum"]:
        errors.append(f"{where}: {value!r} is not one of {schema['enum']}")
    if kind == "string":
        errors += _string(value, schema, where)
    elif kind in ("integer", "number"):
        lo, hi = _INT_RANGE.get(schema.get("format", ""), (None, None))
        if lo is not None and not lo <= value <= hi:
            errors.append(f"{where}: {value} is out of the {schema['format']} range")
        if "minimum" in schema and value < schema["minimum"]:
            errors.append(f"{where}: {value} is less than the minimum {schema['minimum']}")
    elif kind == "array":
        errors += _array(value, schema, path)
    elif kind == "object":
        errors += _object(value, schema, path)
    return errors


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


_TYPES = {
    "string": lambda v: isinstance(v, str),
    "integer": _is_int,
    "number": lambda v: _is_int(v) or isinstance(v, float),
    "boolean": lambda v: isinstance(v, bool),
    "array": lambda v: isinstance(v, list),
    "object": lambda v: isinstance(v, dict),
}


def _string(value: str, schema: dict, where: str) -> list[str]:
    errors = []
    if "pattern" in schema and not re.search(schema["pattern"], value):
        errors.append(f"{where}: {value!r} does not match {schema['pattern']}")
    if "maxLength" in schema and len(value) > schema["maxLength"]:
        errors.append(f"{where}: longer than {schema['maxLength']} characters")
    if "minLength" in schema and len(value) < schema["minLength"]:
        errors.append(f"{where}: shorter than {schema['minLength']} characters")
    if schema.get("format") == "date-time":
        try:
            datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            errors.append(f"{where}: {value!r} is not an RFC 3339 date-time")
    return errors


def _array(value: list, schema: dict, path: str) -> list[str]:
    errors = []
    if "minItems" in schema and len(value) < schema["minItems"]:
        errors.append(f"{path}: fewer than {schema['minItems']} items")
    for i, item in enumerate(value):
        errors += validate(item, schema.get("items", {}), f"{path}[{i}]")
    list_type = schema.get("x-kubernetes-list-type")
    if list_type == "set" and len({repr(v) for v in value}) < len(value):
        errors.append(f"{path}: a set with duplicate items")
    if list_type == "map":
        keys = [tuple(item.get(k) for k in schema.get("x-kubernetes-list-map-keys", [])) for item in value]
        if len(set(keys)) < len(keys):
            errors.append(f"{path}: a map list with duplicate keys {schema.get('x-kubernetes-list-map-keys')}")
    return errors


def _object(value: dict, schema: dict, path: str) -> list[str]:
    errors = []
    for name in schema.get("required", []):
        if name not in value:
            errors.append(f"{path + '.' if path else ''}{name}: required")
    properties, extra = schema.get("properties", {}), schema.get("additionalProperties")
    for name, item in value.items():
        sub = f"{path}.{name}" if path else str(name)
        if path == "" and name == "metadata":
            continue  # the API server's own ObjectMeta: see validate_object
        if name in properties:
            errors += validate(item, properties[name], sub)
        elif isinstance(extra, dict):
            errors += validate(item, extra, sub)
        elif not (extra is True or schema.get("x-kubernetes-preserve-unknown-fields")):
            errors.append(f"{sub}: unknown field (Kubernetes would drop it)")
    return errors
