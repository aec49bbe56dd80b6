"""The spec reference: Markdown generated from the spec models' class and field docstrings.

`python -m generator.pipeline.spec_reference` writes docs/spec.md; with `--check` it writes
nothing and exits 1 when the file differs. The models are found at run time by walking the
fields of `ModelSpec` (nested models, unions, discriminated unions, enums), so the reference
follows every model that hangs off it, wherever its class is defined.
"""

from __future__ import annotations

import argparse
import ast
import inspect
import sys
import textwrap
import types
from collections.abc import Iterator, Sequence
from enum import Enum
from pathlib import Path
from typing import Annotated, Any, Literal, Union, get_args, get_origin

import annotated_types
from pydantic import BaseModel, Discriminator
from pydantic.fields import FieldInfo

from generator import PROJECT_ROOT
from generator.pipeline.repository_settings import RepositorySettings
from generator.pipeline.spec import REPOSITORY_FILE, ModelSpec

REFERENCE_PATH = PROJECT_ROOT / "docs" / "spec.md"
"""Where the reference is written."""
COMMAND = "python -m generator.pipeline.spec_reference"
"""The command that regenerates it."""

INTRO = f"""\
# Model spec reference

Each served model is one YAML file, `models/<name>.yaml` (the file name is the spec's `name`);
`tritongen generate` loads every `*.yaml` of the folder but `{REPOSITORY_FILE}`, and unknown keys
are errors. The top level of a file is a [ModelSpec](#modelspec); the sections below follow its
fields down. `models/{REPOSITORY_FILE}` (optional) holds the budget of the whole repository:
[RepositorySettings](#repositorysettings).

This file is generated from the spec models' docstrings: do not edit it by hand, run
`{COMMAND}` (a unit test fails when it is out of date).
"""

_SCALARS: dict[Any, str] = {int: "integer", str: "string", bool: "boolean", float: "number", type(None): "null"}
"""YAML names of the scalar types."""

Documented = type[BaseModel] | type[Enum]


def _members(annotation: Any) -> tuple[Any, ...]:
    """The types an annotation is made of (union members, item types), Annotated unwrapped."""
    origin = get_origin(annotation)
    if origin is Annotated:
        return (get_args(annotation)[0],)
    if origin is Literal:
        return ()
    return tuple(arg for arg in get_args(annotation) if arg is not Ellipsis)


def _is_model(annotation: Any) -> bool:
    return isinstance(annotation, type) and issubclass(annotation, BaseModel)


def _is_enum(annotation: Any) -> bool:
    return isinstance(annotation, type) and issubclass(annotation, Enum)


def _documented_types(annotation: Any, path: str) -> Iterator[tuple[Documented, str]]:
    """(model or enum, YAML path) for every model and enum inside an annotation."""
    if _is_model(annotation) or _is_enum(annotation):
        yield annotation, path
        return
    origin = get_origin(annotation)
    members = _members(annotation)
    if origin in (tuple, list):
        path += "[]"
    elif origin is dict:
        members, path = members[1:], path + ".<key>"
    for member in members:
        yield from _documented_types(member, path)


def spec_types(root: type[BaseModel] = ModelSpec) -> dict[Documented, list[str]]:
    """Every model and enum reachable from `root`, depth first in field order (a section order
    that reads top down), each with every YAML path it appears at (the root's path is empty)."""
    found: dict[Documented, list[str]] = {root: [""]}
    names: dict[str, Documented] = {root.__name__: root}

    def walk(model: type[BaseModel], prefix: str, inside: frozenset[type]) -> None:
        for name, field in model.model_fields.items():
            path = f"{prefix}.{name}" if prefix else name
            for kind, where in _documented_types(field.annotation, path):
                if names.setdefault(kind.__name__, kind) is not kind:
                    raise TypeError(f"two spec types are named {kind.__name__}: the reference needs unique names")
                paths = found.setdefault(kind, [])
                if where not in paths:
                    paths.append(where)
                if _is_model(kind) and kind not in inside:
                    assert issubclass(kind, BaseModel)
                    walk(kind, where, inside | {kind})

    walk(root, "", frozenset({root}))
    return found


def undocumented(root: type[BaseModel] = ModelSpec) -> list[str]:
    """`Model` or `Model.field` for each spec model without a docstring and each field without
    an attribute docstring (its `description`)."""
    missing = []
    for kind in spec_types(root):
        if not (kind.__doc__ or "").strip():
            missing.append(kind.__name__)
        if _is_model(kind):
            assert issubclass(kind, BaseModel)
            missing += [f"{kind.__name__}.{name}" for name, f in kind.model_fields.items() if not f.description]
    return missing


def _link(kind: type) -> str:
    return f"[{kind.__name__}](#{kind.__name__.lower()})"


def _type_text(annotation: Any) -> str:
    """An annotation in words, models and enums linked to their sections."""
    if annotation in _SCALARS:
        return _SCALARS[annotation]
    if _is_model(annotation) or _is_enum(annotation):
        return _link(annotation)
    origin = get_origin(annotation)
    if origin is Annotated:
        return _type_text(get_args(annotation)[0])
    if origin is Literal:
        return " or ".join(f"`{_yaml(value)}`" for value in get_args(annotation))
    if origin in (Union, types.UnionType):
        return " or ".join(_type_text(member) for member in get_args(annotation))
    if origin in (tuple, list) and (origin is list or get_args(annotation)[1:] == (Ellipsis,)):
        item = _type_text(get_args(annotation)[0])
        return f"list of ({item})" if " or " in item else f"list of {item}"
    if origin is dict:
        key, value = (_type_text(arg) for arg in get_args(annotation))
        return f"mapping of {key} to {value}"
    raise TypeError(f"the spec reference cannot describe the type {annotation!r}")


def _yaml(value: Any) -> str:
    """A default value as it is written in YAML."""
    if isinstance(value, Enum):
        return _yaml(value.value)
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return "null"
    if isinstance(value, str):
        return value if value else '""'
    if isinstance(value, tuple | list):
        return "[" + ", ".join(_yaml(item) for item in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{_yaml(k)}: {_yaml(v)}" for k, v in value.items()) + "}"
    return str(value)


def _count(length: int, field: FieldInfo) -> str:
    """A length bound with its unit: characters of a string, items of a list."""
    unit = "character" if field.annotation is str else "item"
    return f"{length} {unit}" + ("" if length == 1 else "s")


def _constraints(field: FieldInfo) -> list[str]:
    """The field's declared bounds and pattern, in words."""
    words = []
    for item in field.metadata:
        if isinstance(item, annotated_types.Ge):
            words.append(f"at least {item.ge}")
        elif isinstance(item, annotated_types.Gt):
            words.append(f"over {item.gt}")
        elif isinstance(item, annotated_types.Le):
            words.append(f"at most {item.le}")
        elif isinstance(item, annotated_types.Lt):
            words.append(f"under {item.lt}")
        elif isinstance(item, annotated_types.MinLen):
            words.append(f"at least {_count(item.min_length, field)}")
        elif isinstance(item, annotated_types.MaxLen):
            words.append(f"at most {_count(item.max_length, field)}")
        elif getattr(item, "pattern", None) is not None:
            words.append(f"matching `{item.pattern}`")
        elif isinstance(item, Discriminator):
            continue  # a union chosen by a function (`_field_type`)
        else:
            words.append(f"`{item!r}`")
    return words


def _field_type(field: FieldInfo) -> str:
    text = _type_text(field.annotation)
    if isinstance(field.discriminator, str):
        members = [_type_text(member) for member in get_args(field.annotation)]
        text = f"one of {', '.join(members)}, chosen by its `{field.discriminator}`"
    elif any(isinstance(item, Discriminator) for item in field.metadata):
        members = [_type_text(member) for member in get_args(field.annotation)]
        text = f"one of {', '.join(members)}, chosen by the key it holds"
    constraints = _constraints(field)
    return f"{text}; {', '.join(constraints)}" if constraints else text


def _default(field: FieldInfo) -> str:
    if field.is_required():
        return "required"
    value = field.get_default(call_default_factory=True)
    if isinstance(value, BaseModel):
        return "its defaults"
    return f"`{_yaml(value)}`"


def _escape(text: str) -> str:
    """Text safe inside a Markdown table cell (GitHub reads `|` as a column break, even in code)."""
    return text.replace("|", "\\|")


def _cell(text: str) -> str:
    """Docstring text as one Markdown table cell: paragraphs kept, lines joined, pipes escaped."""
    paragraphs = [" ".join(part.split()) for part in inspect.cleandoc(text).split("\n\n")]
    return _escape("<br><br>".join(paragraphs))


def _where(paths: Sequence[str]) -> str:
    shown = ", ".join(f"`{path}`" for path in paths if path)
    return "Where: the top level of `models/<name>.yaml`." if not shown else f"Where: {shown}."


def _member_docs(enum: type[Enum]) -> dict[str, str]:
    """Member name -> the docstring under its assignment in the enum's source (if readable)."""
    try:
        tree = ast.parse(textwrap.dedent(inspect.getsource(enum)))
    except (OSError, TypeError, SyntaxError):
        return {}
    body = tree.body[0].body if tree.body and isinstance(tree.body[0], ast.ClassDef) else []
    docs = {}
    for statement, following in zip(body, body[1:], strict=False):
        if (
            isinstance(statement, ast.Assign)
            and len(statement.targets) == 1
            and isinstance(statement.targets[0], ast.Name)
            and isinstance(following, ast.Expr)
            and isinstance(following.value, ast.Constant)
            and isinstance(following.value.value, str)
        ):
            docs[statement.targets[0].id] = following.value.value
    return docs


def _model_section(model: type[BaseModel], paths: Sequence[str]) -> list[str]:
    lines = [f"## {model.__name__}", "", _where(paths), "", inspect.cleandoc(model.__doc__ or ""), ""]
    lines += ["| Field | Type | Default | Description |", "| --- | --- | --- | --- |"]
    for name, field in model.model_fields.items():
        cells = (f"`{name}`", _escape(_field_type(field)), _escape(_default(field)), _cell(field.description or ""))
        lines.append("| " + " | ".join(cells) + " |")
    return [*lines, ""]


def _enum_section(enum: type[Enum], paths: Sequence[str]) -> list[str]:
    lines = [f"## {enum.__name__}", "", _where(paths), "", inspect.cleandoc(enum.__doc__ or ""), ""]
    lines += ["| Value | Meaning |", "| --- | --- |"]
    docs = _member_docs(enum)
    for member in enum:
        lines.append(f"| `{_yaml(member.value)}` | {_cell(docs.get(member.name, ''))} |")
    return [*lines, ""]


def render_reference(root: type[BaseModel] = ModelSpec) -> str:
    """The whole reference: the intro, then one section per model, then one per enum."""
    found = spec_types(root)
    lines = [INTRO]
    for kind, paths in found.items():
        if _is_model(kind):
            assert issubclass(kind, BaseModel)
            lines += _model_section(kind, paths)
    for kind, paths in found.items():
        if _is_enum(kind):
            assert issubclass(kind, Enum)
            lines += _enum_section(kind, paths)
    if root is ModelSpec:
        lines += _model_section(RepositorySettings, [f"models/{REPOSITORY_FILE}"])
    return "\n".join(lines).rstrip("\n") + "\n"


def main(argv: Sequence[str] | None = None, path: Path = REFERENCE_PATH) -> int:
    """Write the reference to `path`, or with `--check` report whether it is current (exit 1 if not)."""
    parser = argparse.ArgumentParser(prog=COMMAND, description="Generate the model spec reference (docs/spec.md).")
    parser.add_argument("--check", action="store_true", help="write nothing; exit 1 if the file is out of date")
    arguments = parser.parse_args(argv)
    text = render_reference()
    current = path.read_text(encoding="utf-8") if path.exists() else None
    if arguments.check:
        if current != text:
            print(f"{path} is out of date: run `{COMMAND}`", file=sys.stderr)
            return 1
        return 0
    if current != text:
        path.write_text(text, encoding="utf-8", newline="\n")
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
