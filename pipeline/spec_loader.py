"""The loader that every job spec shares: YAML read, dotted-key overrides and flags applied, credentials
refused, local paths made absolute (Ray workers run elsewhere), and every problem reported with the dotted
key it concerns.

The schemas it validates into are elsewhere: the restore job's in :mod:`pipeline.spec`, the training job's
in :mod:`pipeline.training.spec`; each hands its schema (and the keys that hold its local paths) to
:func:`validate_spec`.

Credentials never belong in a spec: they come from the environment, a profile or an instance role, and a
spec that holds one is refused; so is a URI (weights, input, output, endpoint) on a cloud metadata service,
which would hand the job the machine's own credentials.
"""

from __future__ import annotations

import argparse
import re
from collections.abc import Iterator
from pathlib import Path
from types import UnionType
from typing import Any, Literal, TypeVar, Union, get_args, get_origin

import yaml
from pydantic import BaseModel, ValidationError

from .storage import metadata_service_host

_SECRET_KEYS = re.compile(r"(secret|password|token|credential|access_key|session_key)", re.IGNORECASE)

M = TypeVar("M", bound=BaseModel)


class SpecError(ValueError):
    """A job spec that cannot run; the message names the offending key."""


def _strings(obj: Any, path: str = "") -> Iterator[tuple[str, str]]:
    """``(dotted key, value)`` of every string in a spec."""
    if isinstance(obj, dict):
        for k, v in obj.items():
            yield from _strings(v, f"{path}.{k}" if path else str(k))
    elif isinstance(obj, list):
        for i, v in enumerate(obj):
            yield from _strings(v, f"{path}[{i}]")
    elif isinstance(obj, str):
        yield path, obj


def _find_secrets(obj: Any, path: str = "") -> list[str]:
    found = []
    if isinstance(obj, dict):
        for k, v in obj.items():
            where = f"{path}.{k}" if path else str(k)
            if _SECRET_KEYS.search(str(k)):
                found.append(where)
            found.extend(_find_secrets(v, where))
    elif isinstance(obj, list):
        for i, v in enumerate(obj):
            found.extend(_find_secrets(v, f"{path}[{i}]"))
    return found


def _absolute_local_paths(data: dict[str, Any], keys: tuple[tuple[str, str], ...]) -> dict[str, Any]:
    """Local paths made absolute against the driver's working directory: Ray workers run elsewhere."""
    import os

    out = {k: dict(v) if isinstance(v, dict) else v for k, v in data.items()}
    for section, key in keys:
        value = out.get(section, {}).get(key) if isinstance(out.get(section), dict) else None
        if isinstance(value, str) and value and "://" not in value:
            out[section][key] = os.path.abspath(os.path.expanduser(value))
    return out


def validate_spec(
    schema: type[M], data: dict[str, Any], *, source: str = "spec", path_keys: tuple[tuple[str, str], ...] = ()
) -> M:
    """Validate a spec dict into ``schema``; every problem is reported with the dotted key it concerns.

    ``path_keys``: the ``(section, key)`` pairs that hold local paths, made absolute here.
    """
    secrets = _find_secrets(data)
    if secrets:
        raise SpecError(
            f"{source}: refusing credentials in a job spec ({', '.join(secrets)}). Use the environment "
            "(AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY), a profile (AWS_PROFILE) or an instance role."
        )
    for key, value in _strings(data):
        host = metadata_service_host(value)
        if host:
            raise SpecError(
                f"{source}: {key}: refusing {value!r}: {host} is a cloud metadata service, which hands out the "
                "machine's own credentials. Give a URI of the storage that holds the data."
            )
    data = _absolute_local_paths(data, path_keys)
    try:
        return schema.model_validate(data)
    except ValidationError as err:
        lines = []
        for e in err.errors():
            key = ".".join(str(p) for p in e["loc"]) or "(top level)"
            msg = "unknown key" if e["type"] == "extra_forbidden" else e["msg"]
            lines.append(f"  {key}: {msg}")
        raise SpecError(f"{source} is not a valid job spec:\n" + "\n".join(lines)) from None


def spec_field(dotted: str, schema: type[BaseModel]) -> Any:
    """The pydantic field of a dotted key of ``schema``, e.g. ``spec_field("resources.batch_size", RestoreSpec)``."""
    model: Any = schema
    *sections, leaf = dotted.split(".")
    for name in sections:
        model = model.model_fields[name].annotation
    return model.model_fields[leaf]


def _flag_kind(annotation: Any) -> tuple[type, tuple[Any, ...] | None]:
    """``(type, choices)`` of a flag for a field of type ``annotation`` (``X | None`` is ``X``)."""
    args = [a for a in get_args(annotation) if a is not type(None)]
    if get_origin(annotation) in (Union, UnionType) and len(args) == 1:
        annotation = args[0]
    if get_origin(annotation) is Literal:
        choices = get_args(annotation)
        return type(choices[0]), choices
    return annotation, None


def add_spec_flags(parser: argparse.ArgumentParser, flags: dict[str, str], schema: type[BaseModel]) -> None:
    """A ``--flag`` for each ``flag: dotted key`` of ``flags``, typed, limited and described by its field
    in ``schema`` (:class:`~pipeline.spec.RestoreSpec`, :class:`~pipeline.training.spec.TrainSpec`).

    Parsed values are ``None`` where a flag is not given; :func:`flag_overrides` turns the rest into
    overrides for :func:`~pipeline.spec.load_spec`.
    """
    for flag, dotted in flags.items():
        field = spec_field(dotted, schema)
        kind, choices = _flag_kind(field.annotation)
        name, help = "--" + flag.replace("_", "-"), f"{field.description or ''} (spec: {dotted})".lstrip()
        if kind is bool:
            parser.add_argument(name, dest=flag, action="store_true", default=None, help=help)
        else:
            parser.add_argument(name, dest=flag, type=kind, choices=choices, help=help)


def flag_overrides(args: argparse.Namespace, flags: dict[str, str]) -> dict[str, Any]:
    """The dotted-key overrides of the flags given on the command line."""
    return {dotted: getattr(args, flag) for flag, dotted in flags.items() if getattr(args, flag) is not None}


def read_yaml(path: str | Path, overrides: dict[str, Any] | None = None) -> dict[str, Any]:
    """A YAML spec as a dict, with ``overrides`` (dotted keys, e.g. ``{"input.uri": "s3://b/p"}``) applied."""
    data = yaml.safe_load(Path(path).read_text()) or {}
    if not isinstance(data, dict):
        raise SpecError(f"{path}: expected a mapping at the top level, but got {type(data).__name__} instead.")
    for dotted, value in (overrides or {}).items():
        node = data
        *parents, leaf = dotted.split(".")
        for p in parents:
            node = node.setdefault(p, {})
        node[leaf] = value
    return data
