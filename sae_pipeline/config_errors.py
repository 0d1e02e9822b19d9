"""Config validation errors as one line a person can act on.

pydantic reports a location such as `columns.3.nulable`, the rule, and a link to its documentation. A user wants
the column by its name, the key they mistyped with the nearest valid key, and no link: `describe_validation_error`
turns the first problem into that line and counts the others. Values are never echoed (they may hold secrets).
"""

from __future__ import annotations

import difflib
import re
import types
import typing

from pydantic import BaseModel, ValidationError


def _unwrap(annotation) -> list:
    """The alternatives of an annotation (`X | None` -> [X, None]); Annotated[...] reduced to its type."""
    origin = typing.get_origin(annotation)
    if origin is typing.Annotated:
        return _unwrap(typing.get_args(annotation)[0])
    if origin in (typing.Union, types.UnionType):
        return [alternative for arg in typing.get_args(annotation) for alternative in _unwrap(arg)]
    return [annotation]


def _step(annotation, key):
    """The annotation one location step below `annotation` (a field, a list item or a mapping value), or None."""
    for alternative in _unwrap(annotation):
        if isinstance(alternative, type) and issubclass(alternative, BaseModel):
            if isinstance(key, str) and key in alternative.model_fields:
                return alternative.model_fields[key].annotation
        elif typing.get_origin(alternative) in (list, tuple) and isinstance(key, int):
            return typing.get_args(alternative)[0]
        elif typing.get_origin(alternative) is dict and isinstance(key, str):
            return typing.get_args(alternative)[1]
    return None


def _keys_of(annotation) -> list[str]:
    return [
        name
        for alternative in _unwrap(annotation)
        if isinstance(alternative, type) and issubclass(alternative, BaseModel)
        for name in alternative.model_fields
    ]


def _where(location: tuple, raw: object) -> str:
    """`columns[3] (column 'amount').min`: list items that have a `name` are named."""
    text, node = "", raw
    for key in location:
        if isinstance(key, int):
            text += f"[{key}]"
            node = node[key] if isinstance(node, list) and key < len(node) else None
            if isinstance(node, dict) and isinstance(node.get("name"), str):
                text += f" (column {node['name']!r})"
        else:
            text += f".{key}" if text else str(key)
            node = node.get(key) if isinstance(node, dict) else None
    return text or "the top level"


def _nearest(word: object, choices: list[str]) -> str | None:
    found = difflib.get_close_matches(str(word), choices, n=1, cutoff=0.6)
    return found[0] if found else None


def describe_problem(problem: dict, raw: object, model: type[BaseModel]) -> str:
    """One pydantic error item as `where: what (did you mean ...?)`."""
    location = tuple(problem["loc"])
    message = re.sub(r"^(Value|Assertion) error, ", "", problem["msg"])
    if problem["type"] == "extra_forbidden":
        parent = model
        for key in location[:-1]:
            parent = _step(parent, key)
        valid = _keys_of(parent)
        suggestion = _nearest(location[-1], valid)
        advice = f"did you mean {suggestion!r}?" if suggestion else f"valid keys: {', '.join(valid)}"
        where = f"{_where(location[:-1], raw)}: unknown key" if location[:-1] else "unknown top-level key"
        return f"{where} {location[-1]!r} ({advice})"
    if problem["type"] == "missing":
        return f"{_where(location[:-1], raw)}: required key {location[-1]!r} is missing"
    if problem["type"] == "literal_error":
        expected = re.findall(r"'([^']*)'", problem.get("ctx", {}).get("expected", ""))
        node = raw
        for key in location:
            node = node[key] if isinstance(node, (dict, list)) and _has(node, key) else None
        suggestion = _nearest(node, expected) if isinstance(node, str) else None
        advice = f"; did you mean {suggestion!r}?" if suggestion else ""
        return f"{_where(location, raw)}: must be one of {', '.join(expected)}{advice}"
    return f"{_where(location, raw)}: {message}"


def _has(node: dict | list, key) -> bool:
    return key in node if isinstance(node, dict) else isinstance(key, int) and key < len(node)


def describe_validation_error(error: ValidationError, raw: object, model: type[BaseModel]) -> str:
    """The first problem of `error` as one line, with the count of the others."""
    problems = error.errors(include_url=False, include_input=False)
    first = describe_problem(problems[0], raw, model)
    more = len(problems) - 1
    return first + (f" (and {more} more problem(s) after this one)" if more else "")
