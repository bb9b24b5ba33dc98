"""'did you mean' for a misspelt key or name: the closest of the choices (difflib), as a suffix of an error line."""

from __future__ import annotations

import difflib
import inspect
import types
import typing
from collections.abc import Iterable

from pydantic import BaseModel

LONGEST = 200  # a word longer than this is no misspelling of a name (and is not compared)


def did_you_mean(word: object, choices: Iterable[object]) -> str:
    """` (did you mean 'x'?)` when one of `choices` is close to `word` (case aside), else ''."""
    if not isinstance(word, str) or not word or len(word) > LONGEST:
        return ""
    names = [str(c) for c in choices if str(c) != word]
    lowered = {name.lower(): name for name in reversed(names)}
    if word.lower() in lowered:  # 'radam' for 'RAdam', 'Adamw' for 'adamw'
        close = [lowered[word.lower()]]
    else:
        close = difflib.get_close_matches(word, names, n=1, cutoff=0.6)
    if not close:
        found = difflib.get_close_matches(word.lower(), list(lowered), n=1, cutoff=0.6)
        close = [lowered[found[0]]] if found else []
    return f" (did you mean '{close[0]}'?)" if close else ""


def _members(annotation) -> list:
    """The types a union (or Optional) stands for, None left out; [annotation] for anything else."""
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        return [a for a in typing.get_args(annotation) if a is not type(None)]
    return [annotation]


def _step(annotation, part):
    """The annotation one key (or index) below `annotation`, or None when it cannot be told."""
    members = _members(annotation)
    if len(members) > 1 and isinstance(part, str) and part.startswith("literal["):  # pydantic's tag of a union
        members = [m for m in members if typing.get_origin(m) is typing.Literal]
        return members[0] if len(members) == 1 else None
    if len(members) != 1:
        return None
    node = members[0]
    if inspect.isclass(node) and issubclass(node, BaseModel):
        field = node.model_fields.get(part) if isinstance(part, str) else None
        return field.annotation if field is not None else None
    origin, args = typing.get_origin(node), typing.get_args(node)
    if origin is dict and len(args) == 2:
        return args[1]
    if origin is list and args and isinstance(part, int):
        return args[0]
    return None


def annotation_at(model: type[BaseModel], loc: tuple) -> object:
    """The annotation of the value at `loc` (pydantic's error location) in `model`, or None."""
    node: object = model
    for part in loc:
        node = _step(node, part)
        if node is None:
            return None
    return node


def validation_hint(model: type[BaseModel], item: dict) -> str:
    """The 'did you mean' of one pydantic error of `model`: an unknown key against the keys of its section, a value
    outside a closed choice (a Literal) against the choices."""
    loc = tuple(item.get("loc") or ())
    if not loc:
        return ""
    if item.get("type") == "extra_forbidden":
        parent = _members(annotation_at(model, loc[:-1]))
        if len(parent) == 1 and inspect.isclass(parent[0]) and issubclass(parent[0], BaseModel):
            return did_you_mean(loc[-1], parent[0].model_fields)
        return ""
    if item.get("type") == "literal_error":
        for member in _members(annotation_at(model, loc)):
            if typing.get_origin(member) is typing.Literal:
                return did_you_mean(item.get("input"), typing.get_args(member))
    return ""
