"""Reading untrusted files, JSON and YAML within the bounds of pskd.limits: a file's size is checked before it is
read (and no more than the limit is ever read), nesting depth is bounded, and YAML is composed by a loader that
counts its nodes, every alias as the nodes it stands for, so an alias bomb is refused after a bounded amount of
work. What is wrong is a LimitError (a ValueError); callers name the file and raise their own error (ConfigError,
DataError) or, for the cache, rebuild the entry.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import yaml

from pskd.limits import FILE_MB_VARIABLE, NESTING_DEPTH, YAML_NODES, file_bytes, shown


class LimitError(ValueError):
    """An input beyond one of pskd's limits, or a value its parser cannot take; the message says which."""


def _no_follow(name, flags):
    return os.open(name, flags | getattr(os, "O_NOFOLLOW", 0))


def read_bytes(path: str | Path, limit: int, hint: str = "", follow_links: bool = True) -> bytes:
    """The bytes of `path`, refused (LimitError) when it holds more than `limit`: the size is checked before any
    is read, and at most limit + 1 bytes are read (a file that grows, or a device, is refused too). With
    follow_links false, a link at `path` is an OSError."""
    with open(path, "rb", opener=None if follow_links else _no_follow) as handle:
        size = os.fstat(handle.fileno()).st_size
        if size > limit:
            raise LimitError(f"{shown(size)}, more than the {shown(limit)} allowed{hint}")
        data = bytearray(handle.read(size + 1))  # what the file holds, not the limit, is allocated
        while len(data) <= limit and (more := handle.read(min(1 << 20, limit + 1 - len(data)))):
            data += more  # it holds more than it said (it grows, or it is a device)
    if len(data) > limit:
        raise LimitError(f"more than the {shown(limit)} allowed{hint}")
    return bytes(data)


def read_text(path: str | Path, limit: int, encoding: str = "utf-8", hint: str = "") -> str:
    """The text of `path` within `limit` bytes (UnicodeDecodeError when it is not text in `encoding`)."""
    return read_bytes(path, limit, hint).decode(encoding)


def read_data_text(path: str | Path, kind: str, encoding: str = "utf-8") -> str:
    """The text of a file of one of limits.FILE_BYTES' kinds, within its limit (which PSKD_MAX_FILE_MB raises)."""
    return read_text(path, file_bytes(kind), encoding, hint=f" (set {FILE_MB_VARIABLE} to raise it)")


def too_deep(value: object, limit: int = NESTING_DEPTH) -> bool:
    """Whether lists and mappings nest more than `limit` levels in `value` (walked without recursion)."""
    stack = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        children = item.values() if isinstance(item, dict) else item if isinstance(item, list) else None
        if children is None:
            continue
        if depth > limit:
            return True
        stack.extend((child, depth + 1) for child in children)
    return False


def loads_json(text: str | bytes, limit: int = NESTING_DEPTH) -> object:
    """JSON text as Python values; json.JSONDecodeError when it is not JSON, LimitError when it nests deeper than
    `limit` or holds a number Python does not read (an integer of thousands of digits)."""
    try:
        value = json.loads(text)
    except RecursionError:
        raise LimitError(f"nested deeper than {limit} levels") from None
    except json.JSONDecodeError:
        raise
    except ValueError as err:
        raise LimitError(f"a value that cannot be read ({str(err).splitlines()[0][:80]})") from None
    if too_deep(value, limit):
        raise LimitError(f"nested deeper than {limit} levels")
    return value


class _BoundedLoader(yaml.SafeLoader):
    """PyYAML's safe loader, counting nodes as it composes them: every alias counts the nodes of what it refers
    to, nesting is bounded, and an alias to a node that holds it is refused."""

    def __init__(self, stream, nodes: int, depth: int):
        super().__init__(stream)
        self.max_nodes, self.max_depth = nodes, depth
        self.nodes = self.depth = 0
        self.sizes: dict[int, int] = {}

    def _count(self, nodes: int) -> None:
        self.nodes += nodes
        if self.nodes > self.max_nodes:
            raise LimitError(f"more than {self.max_nodes} YAML nodes (aliases counted as what they repeat)")

    def compose_node(self, parent, index):
        if self.check_event(yaml.AliasEvent):
            node = super().compose_node(parent, index)
            if id(node) not in self.sizes:
                raise LimitError("an alias refers to the list or mapping that holds it")
            self._count(self.sizes[id(node)])
            return node
        self.depth += 1
        if self.depth > self.max_depth:
            raise LimitError(f"nested deeper than {self.max_depth} levels")
        before = self.nodes
        node = super().compose_node(parent, index)
        self.depth -= 1
        self._count(1)
        self.sizes[id(node)] = self.nodes - before
        return node


# YAML 1.2 reads 1e-8, 1.0e3 and .5e3 as numbers; PyYAML's 1.1 rules keep them strings (a float there needs a dot
# and an exponent a sign). Tried after 1.1's own resolvers, so integers and timestamps stay what they were.
_BoundedLoader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:[0-9][0-9_]*(?:\.[0-9_]*)?|\.[0-9_]+)[eE][-+]?[0-9]+$"), list("-+.0123456789"))


def load_yaml(text: str, nodes: int = YAML_NODES, depth: int = NESTING_DEPTH) -> object:
    """YAML text as Python values (safe types only); yaml.YAMLError when it is not YAML, LimitError when it is
    beyond the node or depth limit or holds a value that cannot be read."""
    loader = _BoundedLoader(text, nodes, depth)
    try:
        return loader.get_single_data()
    except LimitError:
        raise
    except RecursionError:
        raise LimitError(f"nested deeper than {depth} levels") from None
    except ValueError as err:  # e.g. an integer of more digits than Python converts
        raise LimitError(f"a value that cannot be read ({str(err).splitlines()[0][:80]})") from None
    finally:
        loader.dispose()
