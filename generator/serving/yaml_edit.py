"""Line-level edits of a YAML document that keep everything else (comments, order, layout).

`tritongen tune --write` changes a few fields of a hand-written spec; re-dumping the document
would drop every comment. `model_changes` lists the fields that differ between the spec as
loaded and as tuned; `apply_changes` edits only the lines of those keys, for the YAML
that specs are written in: block mappings, block sequences of mappings (`versions:`), and
one-line flow mappings (`batching: {max_batch_size: 32, ...}`); values written are scalars,
flow lists and flow mappings. `apply_changes` checks its result: the edited text must load
as the wanted document, else it raises instead of writing something else.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import yaml
from pydantic import BaseModel
from pydantic_core import to_jsonable_python

from generator.errors import TritongenError

Path_ = tuple[str | int, ...]
DELETE = object()
"""The value of a change that removes the key."""


class YamlEditError(TritongenError, ValueError):
    """The document cannot be edited in place (a layout this editor does not handle)."""


@dataclass(frozen=True)
class Change:
    """Set `path` (mapping keys and sequence indexes) to `value`, or delete it (`DELETE`)."""

    path: Path_
    value: Any


def model_changes(old: BaseModel, new: BaseModel, path: Path_ = ()) -> list[Change]:
    """The changes that turn a document loading as `old` into one loading as `new`: two models
    of one class compared field by field (nested models of one class, and tuples of them of
    equal length by index, field by field too). A changed field is set to its new value in
    YAML's plain types; one changed to its default empty tuple is deleted (`buckets`)."""
    if type(old) is not type(new):
        raise TypeError(
            f"model_changes compares two models of one class, not {type(old).__name__} and {type(new).__name__}"
        )
    changes: list[Change] = []
    for name, info in type(new).model_fields.items():
        before, after = getattr(old, name), getattr(new, name)
        if before == after:
            continue
        where = (*path, name)
        if isinstance(before, BaseModel) and type(before) is type(after):
            changes += model_changes(before, after, where)
        elif _alike_models(before, after):
            for index, (a, b) in enumerate(zip(before, after, strict=True)):
                changes += model_changes(a, b, (*where, index))
        elif after == () and info.default == ():
            changes.append(Change(where, DELETE))
        else:
            changes.append(Change(where, to_jsonable_python(after)))
    return changes


def _alike_models(old: Any, new: Any) -> bool:
    """Whether `old` and `new` are tuples of equal length of models of one class, item by item."""
    return (
        isinstance(old, tuple)
        and isinstance(new, tuple)
        and len(old) == len(new)
        and all(isinstance(a, BaseModel) and type(a) is type(b) for a, b in zip(old, new, strict=True))
    )


def apply_changes(text: str, changes: Sequence[Change]) -> str:
    """`text` with `changes` made line by line; raises YamlEditError if the result does not
    load as the original document with the changes applied."""
    wanted = yaml.safe_load(text)
    lines = text.splitlines()
    for change in changes:
        _apply(lines, change)
        wanted = _changed(wanted, change)
    result = "\n".join(lines) + "\n"
    if yaml.safe_load(result) != wanted:
        raise YamlEditError("the edited document does not load as intended (layout not handled)")
    return result


def render(value: Any) -> str:
    """`value` in YAML flow style, on one line."""
    if isinstance(value, dict):
        return "{" + ", ".join(f"{render(k)}: {render(v)}" for k, v in value.items()) + "}"
    if isinstance(value, list | tuple):
        return "[" + ", ".join(render(v) for v in value) + "]"
    dumped: str = yaml.safe_dump([value], default_flow_style=True, width=1 << 16).strip()
    return dumped[1:-1]


# --- document model ------------------------------------------------------------------------


_KEY = re.compile(r"^(?P<key>[A-Za-z_][A-Za-z0-9_-]*):(?:\s+(?P<rest>.*))?$")


def _indent(line: str) -> int:
    return len(line) - len(line.lstrip(" "))


def _is_content(line: str) -> bool:
    stripped = line.strip()
    return bool(stripped) and not stripped.startswith("#")


def _entry(line: str) -> tuple[int, str, str] | None:
    """(key column, key, rest) of a `key: rest` line, also after a sequence dash."""
    column = _indent(line)
    body = line[column:]
    if body.startswith("- "):
        column += 2
        body = body[2:]
    match = _KEY.match(body.rstrip())
    if not match:
        return None
    return column, match.group("key"), match.group("rest") or ""


def _split_comment(rest: str) -> tuple[str, str]:
    """(value, ' # comment' with its spacing) of the text after `key:`."""
    if rest.startswith("#"):
        return "", "  " + rest
    quote = None
    for index, char in enumerate(rest):
        if quote:
            quote = None if char == quote else quote
        elif char in "'\"":
            quote = char
        elif char == "#" and index > 0 and rest[index - 1] in " \t":
            value = rest[:index].rstrip()
            return value, rest[len(value) : index] + rest[index:]
    return rest.rstrip(), ""


def _block_end(lines: list[str], index: int, column: int) -> int:
    """End (exclusive) of the value block of the key at `index` whose key column is `column`."""
    end = index + 1
    for position in range(index + 1, len(lines)):
        if _is_content(lines[position]):
            if _indent(lines[position]) <= column:
                break
            end = position + 1
    return end


def _find_key(lines: list[str], start: int, end: int, column: int, key: str) -> int | None:
    for position in range(start, end):
        entry = _entry(lines[position]) if _is_content(lines[position]) else None
        if entry and entry[0] == column and entry[1] == key:
            return position
    return None


def _child_column(lines: list[str], start: int, end: int) -> int | None:
    for position in range(start, end):
        if _is_content(lines[position]):
            return _indent(lines[position])
    return None


def _sequence_item(lines: list[str], start: int, end: int, item: int) -> tuple[int, int, int]:
    """(start, end, mapping column) of item `item` of the block sequence in lines [start, end)."""
    dashes = [p for p in range(start, end) if _is_content(lines[p]) and lines[p].lstrip().startswith("- ")]
    if not dashes:
        raise YamlEditError(f"no block sequence at line {start + 1}")
    column = min(_indent(lines[p]) for p in dashes)
    items = [p for p in dashes if _indent(lines[p]) == column]
    if item >= len(items):
        raise YamlEditError(f"the sequence at line {start + 1} has no item {item}")
    item_end = items[item + 1] if item + 1 < len(items) else end
    return items[item], item_end, column + 2


def _apply(lines: list[str], change: Change) -> None:
    start, end, column = 0, len(lines), 0
    path = change.path
    for depth, step in enumerate(path[:-1]):
        if isinstance(step, int):
            start, end, column = _sequence_item(lines, start, end, step)
            continue
        position = _find_key(lines, start, end, column, step)
        if position is None:
            # A missing parent mapping: write the rest of the path as one flow value.
            value: Any = change.value
            if value is DELETE:
                return
            for key in reversed(path[depth + 1 :]):
                value = {key: value}
            _insert(lines, start, end, column, str(step), value)
            return
        entry = _entry(lines[position])
        assert entry is not None
        value_text, comment = _split_comment(entry[2])
        if value_text.startswith("{"):
            if depth != len(path) - 2:
                raise YamlEditError(f"line {position + 1}: nested keys inside a flow mapping")
            lines[position] = _edit_flow(lines[position], entry, value_text, comment, str(path[-1]), change.value)
            return
        if value_text:
            raise YamlEditError(f"line {position + 1}: {step} holds a scalar, not a mapping")
        start, end = position + 1, _block_end(lines, position, entry[0])
        child = _child_column(lines, start, end)
        column = child if child is not None else entry[0] + 2
    last = path[-1]
    if isinstance(last, int):
        raise YamlEditError("setting a sequence item by index is not supported")
    position = _find_key(lines, start, end, column, last)
    if position is None:
        if change.value is not DELETE:
            _insert(lines, start, end, column, last, change.value)
        return
    entry = _entry(lines[position])
    assert entry is not None
    block_end = _block_end(lines, position, entry[0])
    if change.value is DELETE:
        if lines[position].lstrip().startswith("- "):
            raise YamlEditError(f"line {position + 1}: cannot delete the first key of a sequence item")
        del lines[position:block_end]
        return
    _value, comment = _split_comment(entry[2])
    key_at = lines[position].index(last, entry[0])
    lines[position] = f"{lines[position][:key_at]}{last}: {render(change.value)}{comment}"
    # A block value (nested lines) is replaced by the one-line flow value.
    del lines[position + 1 : block_end]


def _insert(lines: list[str], start: int, end: int, column: int, key: str, value: Any) -> None:
    """Add `key: value` as the last entry of the block mapping in lines [start, end)."""
    last = max((p for p in range(start, end) if _is_content(lines[p])), default=start - 1)
    lines.insert(last + 1, f"{' ' * column}{key}: {render(value)}")


def _edit_flow(line: str, entry: tuple[int, str, str], value_text: str, comment: str, key: str, value: Any) -> str:
    inner = value_text.strip()
    if not inner.endswith("}"):
        raise YamlEditError(f"a flow mapping over several lines: {line.strip()!r}")
    pairs = [p.strip() for p in _split_top_level(inner[1:-1]) if p.strip()]
    items: list[tuple[str, str]] = []
    for pair in pairs:
        name, separator, text = pair.partition(":")
        if not separator:
            raise YamlEditError(f"flow mapping entry {pair!r} is not `key: value`")
        items.append((name.strip(), text.strip()))
    if value is DELETE:
        items = [(k, v) for k, v in items if k != key]
    elif any(k == key for k, _v in items):
        items = [(k, render(value) if k == key else v) for k, v in items]
    else:
        items.append((key, render(value)))
    key_at = line.index(entry[1], entry[0])
    return f"{line[:key_at]}{entry[1]}: {{{', '.join(f'{k}: {v}' for k, v in items)}}}{comment}"


def _split_top_level(text: str) -> list[str]:
    parts, depth, current, quote = [], 0, "", None
    for char in text:
        if quote:
            quote = None if char == quote else quote
        elif char in "'\"":
            quote = char
        elif char in "[{":
            depth += 1
        elif char in "]}":
            depth -= 1
        elif char == "," and depth == 0:
            parts.append(current)
            current = ""
            continue
        current += char
    parts.append(current)
    return parts


def _changed(document: Any, change: Change) -> Any:
    """`document` with `change` applied (the expected result of an edit)."""
    document = copy.deepcopy(document)
    parent = document
    for step in change.path[:-1]:
        if isinstance(step, str) and step not in parent:
            if change.value is DELETE:
                return document  # nothing to delete (`_apply` leaves the text alone too)
            parent[step] = {}
        parent = parent[step]
    if change.value is DELETE:
        parent.pop(change.path[-1], None)
    else:
        parent[change.path[-1]] = change.value
    return document
