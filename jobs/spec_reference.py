"""Write docs/spec.md, the reference of every job spec key, from the spec schemas themselves.

    python jobs/spec_reference.py            # rewrite docs/spec.md
    python jobs/spec_reference.py --check    # exit 1 when docs/spec.md is not what the schemas give now

Every key of the restore job's spec (:class:`pipeline.spec.RestoreSpec`) and of the training job's
(:class:`pipeline.training.spec.TrainSpec`) is listed with its dotted path, type and limits, default, the
flag that sets it (the jobs' ``FLAGS``) and its meaning: the field's ``description``, else the comment on
or above its line (the training spec's ``degradation`` section is a dataclass of :mod:`dgunet.degrade`,
described by comments). tests/test_docs.py checks that docs/spec.md is what this writes.
"""

from __future__ import annotations

import argparse
import ast
import dataclasses
import inspect
import io
import sys
import textwrap
import tokenize
import typing
from pathlib import Path
from types import NoneType, UnionType
from typing import Any, Literal, Union, get_args, get_origin

from pydantic import BaseModel
from pydantic_core import PydanticUndefined

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "docs" / "spec.md"

INTRO = """\
# Job spec reference

<!-- Written by `python jobs/spec_reference.py` from the schemas in pipeline/spec.py and
pipeline/training/spec.py: edit those, then run it. tests/test_docs.py fails while this file is stale. -->

A spec (`jobs/specs/*.yaml`) names the task, the model and weights, the inputs and outputs and the
resources; flags override it. It is validated before any work starts: an unknown key or a bad value is
an error naming the key, and a spec holding credentials is refused (credentials come from the
environment, `AWS_PROFILE`, or an instance role). So is a URI (weights, input, output, endpoint) on a
cloud metadata service, which would hand the job the machine's own credentials.

A key is named by its dotted path: `output.format` is `format:` under `output:`. A flag sets the key it
names (`--max-actors 4` is `resources.max_actors: 4`), over what the spec says. `null` is YAML's `None`;
"required" marks the keys a spec must give.
"""

JOBS = [
    (
        "The restore job",
        "jobs/restore_bucket.py",
        "pipeline.spec",
        "RestoreSpec",
        "Without `--spec`, `jobs/specs/demo.yaml` gives the defaults. What the outputs hold:\n"
        "[formats](formats.md); how the gate, incremental runs, the lock and stopping behave:\n"
        "[operations](operations.md).",
    ),
    (
        "The training job",
        "jobs/train.py",
        "pipeline.training.spec",
        "TrainSpec",
        "Built from the restore spec's parts (the same `model` section, loader and checks). How training\n"
        "goes, and the specs in `jobs/specs/`: [models and training](models.md#training).",
    ),
]


def _flags(script: str) -> dict[str, str]:
    """``dotted key -> --flag`` of a job script's ``FLAGS``, read from its source (nothing is imported); a
    script that imports its ``FLAGS`` (``from pipeline.run.cli import FLAGS``) is followed to that module."""
    tree = ast.parse((ROOT / script).read_text())
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(isinstance(t, ast.Name) and t.id == "FLAGS" for t in node.targets):
            flags = ast.literal_eval(node.value)
            return {dotted: "--" + flag.replace("_", "-") for flag, dotted in flags.items()}
        if isinstance(node, ast.ImportFrom) and node.module and any(a.name == "FLAGS" for a in node.names):
            return _flags(node.module.replace(".", "/") + ".py")
    return {}


def _comments(cls: type) -> dict[str, str]:
    """The comment of each field of ``cls`` (and of the classes it inherits from): the one on its line,
    else the comment lines right above it."""
    found: dict[str, str] = {}
    for klass in reversed(cls.__mro__):
        if klass is object or klass.__module__.startswith(("pydantic", "builtins")):
            continue
        try:
            source = textwrap.dedent(inspect.getsource(klass))
        except (OSError, TypeError):
            continue
        comments: dict[int, tuple[str, bool]] = {}  # line -> (text, whether it stands alone on its line)
        for tok in tokenize.generate_tokens(io.StringIO(source).readline):
            if tok.type == tokenize.COMMENT:
                alone = not tok.line[: tok.start[1]].strip()
                comments[tok.start[0]] = (tok.string.lstrip("#").strip(), alone)
        (node,) = ast.parse(source).body
        for stmt in node.body:
            if not (isinstance(stmt, ast.AnnAssign) and isinstance(stmt.target, ast.Name)):
                continue
            on_line = [
                comments[n][0]
                for n in range(stmt.lineno, (stmt.end_lineno or stmt.lineno) + 1)
                if n in comments and not comments[n][1]
            ]
            above, n = [], stmt.lineno - 1
            while n in comments and comments[n][1]:
                above.insert(0, comments[n][0])
                n -= 1
            text = " ".join(on_line or above)
            if text:
                found[stmt.target.id] = text
    return found


def _is_section(annotation: Any) -> bool:
    return isinstance(annotation, type) and (issubclass(annotation, BaseModel) or dataclasses.is_dataclass(annotation))


def _fields(cls: type) -> list[tuple[str, Any, Any, str, list[Any]]]:
    """``(name, annotation, default, description, constraints)`` of each field of a section; ``default``
    is ``PydanticUndefined`` for a required key."""
    comments = _comments(cls)
    if issubclass(cls, BaseModel):
        return [
            (
                name,
                f.annotation,
                f.default if f.default_factory is None else f.default_factory(),
                f.description or comments.get(name, ""),
                list(f.metadata),
            )
            for name, f in cls.model_fields.items()
        ]
    hints = typing.get_type_hints(cls)
    return [(f.name, hints[f.name], f.default, comments.get(f.name, ""), []) for f in dataclasses.fields(cls)]


_NAMES = {int: "int", float: "float", str: "string", bool: "bool", NoneType: "null"}


def _type(annotation: Any) -> str:
    origin, args = get_origin(annotation), get_args(annotation)
    if origin in (Union, UnionType):
        return " or ".join(_type(a) for a in args)
    if origin is Literal:
        return " or ".join(f"`{a}`" for a in args)
    if origin is tuple:
        if len(args) == 2 and args[1] is Ellipsis:
            return f"list of {_type(args[0])}"
        return "[" + ", ".join(_type(a) for a in args) + "]"
    return _NAMES.get(annotation, getattr(annotation, "__name__", str(annotation)))


def _limits(constraints: list[Any]) -> str:
    signs = {"ge": ">=", "gt": ">", "le": "<=", "lt": "<"}
    parts = []
    for c in constraints:
        for attr, sign in signs.items():
            value = getattr(c, attr, None)
            if value is not None:
                parts.append(f"{sign} {_value(value)}")
    return ", ".join(parts)


def _value(value: Any) -> str:
    """A default as it would be written in YAML."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (tuple, list)):
        return "[" + ", ".join(_value(v) for v in value) + "]"
    if isinstance(value, float):
        return repr(value).replace("e-0", "e-")
    return str(value)


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("``", "`")


def _summary(cls: type) -> str:
    """The first paragraph of a section's docstring, in Markdown."""
    doc = inspect.getdoc(cls) or ""
    return " ".join(doc.split("\n\n")[0].split()).replace("``", "`")


def _rows(cls: type, prefix: str, flags: dict[str, str]) -> tuple[list[str], list[tuple[str, type]]]:
    """The table rows of a section's keys, and its subsections ``(dotted, class)``."""
    rows, sections = [], []
    for name, annotation, default, description, constraints in _fields(cls):
        dotted = f"{prefix}{name}"
        if _is_section(annotation):
            sections.append((dotted, annotation))
            continue
        kind = _type(annotation)
        limits = _limits(constraints)
        shown_default = "required" if default is PydanticUndefined else f"`{_value(default)}`"
        flag = f"`{flags[dotted]}`" if dotted in flags else ""
        cells = [f"`{dotted}`", kind + (f", {limits}" if limits else ""), shown_default, flag, description]
        rows.append("| " + " | ".join(_cell(c) for c in cells) + " |")
    return rows, sections


def _table(rows: list[str]) -> list[str]:
    return ["| key | type | default | flag | meaning |", "|---|---|---|---|---|", *rows]


def undescribed() -> list[str]:
    """The dotted keys (``job:key``) that have neither a description nor a comment."""
    missing = []
    for title, _, module, name, _ in JOBS:
        stack: list[tuple[str, type]] = [("", _schema(module, name))]
        while stack:
            prefix, cls = stack.pop()
            for field, annotation, _, description, _ in _fields(cls):
                if _is_section(annotation):
                    stack.append((f"{prefix}{field}.", annotation))
                elif not description:
                    missing.append(f"{title}: {prefix}{field}")
    return missing


def _schema(module: str, name: str) -> type:
    import importlib

    return getattr(importlib.import_module(module), name)


def render() -> str:
    """docs/spec.md as the schemas give it now."""
    out = [INTRO]
    for title, script, module, name, note in JOBS:
        schema = _schema(module, name)
        flags = _flags(script)
        out += [f"## {title} (`{script}`)", "", f"`{module}.{name}`. {note}", ""]
        rows, sections = _rows(schema, "", flags)
        out += [f"### {title}: top level", "", *_table(rows), ""]
        for dotted, cls in sections:
            rows, nested = _rows(cls, f"{dotted}.", flags)
            assert not nested, f"{dotted}: sections within sections are not rendered"
            summary = _summary(cls)
            out += [f"### {title}: `{dotted}`", "", *([summary, ""] if summary else []), *_table(rows), ""]
    return "\n".join(out).rstrip("\n") + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--check", action="store_true", help="only say whether docs/spec.md is current (exit 1 if not)")
    args = ap.parse_args(argv)
    text = render()
    if args.check:
        current = OUT.read_text() if OUT.exists() else ""
        if current != text:
            print(f"{OUT.relative_to(ROOT)} is stale: run python jobs/spec_reference.py", file=sys.stderr)
            return 1
        return 0
    OUT.parent.mkdir(exist_ok=True)
    OUT.write_text(text)
    print(f"wrote {OUT.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
