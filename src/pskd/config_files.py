"""A config as a tree, before it is checked: a file read within pskd's limits on YAML (pskd.bounded) and written on
top of the `_base_` files it names (each bounded the same way, confined to the config's folder, never in a
cycle); `--set` values parsed and set at their dotted keys; the whole tree's numbers and nesting bounded."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import yaml

from pskd import limits
from pskd.bounded import LimitError, load_yaml, read_text
from pskd.errors import ConfigError

BASE_KEY = "_base_"  # at the top of a config file: the file(s) it is written on top of


def read_config_tree(path: Path) -> dict:
    """The tree of a config file, written on top of its `_base_` files: `_base_: other.yaml` (or a list, merged in
    order) names files relative to the file naming it; a base's mappings are merged key by key under the file's,
    its lists and values replaced by the file's. Every file is read within the limits of read_yaml; bases lie in
    the folder of the config named (or below it, links resolved), at most limits.CONFIG_BASE_DEPTH levels deep,
    limits.CONFIG_BASE_FILES files in all, and never in a cycle."""
    root = path.resolve().parent
    count = [0]

    def load(file: Path, chain: tuple[tuple[Path, Path], ...]) -> dict:
        count[0] += 1
        if count[0] > limits.CONFIG_BASE_FILES:
            raise ConfigError(f"{path}: more than {limits.CONFIG_BASE_FILES} files through {BASE_KEY}")
        tree = _mapping(file)
        bases = tree.pop(BASE_KEY, None)
        if bases is None:
            return tree
        if isinstance(bases, str):
            bases = [bases]
        if not isinstance(bases, list) or not bases or not all(isinstance(b, str) and b.strip() for b in bases):
            raise ConfigError(f"{file}: {BASE_KEY}: expected a file name or a list of file names")
        merged: dict = {}
        for name in bases:
            shown, real = _base_path(file, name, root)
            walked = [str(seen) for seen, _ in chain]
            if any(real == known for _, known in chain):
                raise ConfigError(f"{file}: {BASE_KEY} {_cut(name)}: a cycle ({' -> '.join([*walked, str(shown)])})")
            if len(chain) > limits.CONFIG_BASE_DEPTH:
                raise ConfigError(f"{file}: {BASE_KEY} {_cut(name)}: more than {limits.CONFIG_BASE_DEPTH} levels of "
                                  f"bases ({' -> '.join([*walked, str(shown)])})")
            merged = merge_over(merged, load(shown, (*chain, (shown, real))))
        return merge_over(merged, tree)

    return load(path, ((path, path.resolve()),))


def _base_path(file: Path, name: str, root: Path) -> tuple[Path, Path]:
    """A base named by `file`: the path as shown, and resolved (links followed), refused outside `root`."""
    if Path(name).is_absolute() or name.startswith("~"):
        raise ConfigError(f"{file}: {BASE_KEY} {_cut(name)}: expected a path relative to {file.name}")
    shown = file.parent / name
    try:
        real = shown.resolve()
        inside, found = real.is_relative_to(root), real.is_file()
    except (OSError, ValueError, RuntimeError) as err:  # a NUL, a name too long, a loop of links
        raise ConfigError(f"{file}: {BASE_KEY} {_cut(name)!r}: cannot be read "
                          f"({getattr(err, 'strerror', None) or str(err)[:80]})") from None
    if not inside:
        raise ConfigError(f"{file}: {BASE_KEY} {_cut(name)}: leads outside {root} (the folder of the config named), "
                          "where bases must lie")
    if not found:
        raise ConfigError(f"{file}: {BASE_KEY} {_cut(name)}: base file not found")
    return shown, real


def _cut(name: str) -> str:
    return name if len(name) <= 200 else name[:200] + "..."


def _mapping(path: Path) -> dict:
    tree = read_yaml(path, ConfigError)
    if tree is None:
        return {}
    if not isinstance(tree, dict):
        raise ConfigError(f"{path}: the top level must be a mapping of sections, got {type(tree).__name__}")
    return tree


def merge_over(base: dict, tree: dict) -> dict:
    """`tree` written on top of `base`: mappings merged key by key, lists and values replaced (neither changed)."""
    out = dict(base)
    for key, value in tree.items():
        out[key] = merge_over(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) \
            else value
    return out


def read_yaml(path: Path, error: type[Exception]) -> Any:
    """A YAML file read within the limits on its size, nodes (aliases counted) and nesting; `error` with the
    file's name and one line on what is wrong otherwise."""
    try:
        return load_yaml(read_text(path, limits.CONFIG_BYTES))
    except LimitError as err:
        raise error(f"{path}: {err}") from None
    except OSError as err:
        raise error(f"{path}: cannot be read ({err.strerror})") from None
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark is not None else ""
        raise error(f"{path}: not valid YAML{where}") from None
    except UnicodeDecodeError:
        raise error(f"{path}: not a UTF-8 text file") from None


def parse_value(text: str, where: str = "--set value") -> Any:
    """Turn the right-hand side of `--set key=value` into a Python value (YAML scalars, lists, mappings); a
    ConfigError naming `where` when it is beyond the limits on size, nesting and YAML nodes."""
    if len(text) > limits.OVERRIDE_CHARS:
        raise ConfigError(f"{where}: {len(text)} characters, more than the {limits.OVERRIDE_CHARS} allowed")
    try:
        value = load_yaml(text) if text.strip() else ""
    except yaml.YAMLError:
        return text
    except LimitError as err:
        raise ConfigError(f"{where}: {err}") from None
    return value  # "1e-3" is the float a user means: pskd.bounded reads YAML 1.2's numbers


def check_tree(tree: Any, source: str) -> None:
    """Every number of a config tree finite, its nesting and size within pskd.limits (walked without recursion,
    before anything else walks it); a ConfigError naming the key otherwise."""
    stack: list[tuple[Any, tuple]] = [(tree, ())]
    walked = 0
    while stack:
        item, where = stack.pop()
        walked += 1
        key = ".".join(where)
        if walked > limits.YAML_NODES:
            raise ConfigError(f"{source}: more than {limits.YAML_NODES} values")
        if isinstance(item, float) and not math.isfinite(item):
            raise ConfigError(f"{source}: {key + ': ' if key else ''}{item} is not a finite number")
        children = item.items() if isinstance(item, dict) else enumerate(item) if isinstance(item, list) else ()
        if children and len(where) >= limits.NESTING_DEPTH:
            raise ConfigError(f"{source}: {key}: nested deeper than {limits.NESTING_DEPTH} levels")
        stack.extend((child, (*where, str(name))) for name, child in children)


def apply_override(tree: dict, dotted: str, value: Any, where: str | None = None) -> None:
    """Set the value at a dotted key of a config tree, making the sections on the way. A `*` as one of the keys
    stands for every key the tree already has at that level (`teachers.*.train.epochs`); matching none is an
    error. `where` names the option in an error (default: --set KEY)."""
    where = where or f"--set {dotted}"
    keys = dotted.split(".")
    if not all(keys):
        raise ConfigError(f"{where}: empty key in dotted path")
    reached: list[tuple[dict, tuple[str, ...]]] = [(tree, ())]
    targets: list[tuple[dict, str]] = []
    for depth, key in enumerate(keys):
        last = depth == len(keys) - 1
        below = []
        for node, path in reached:
            names = list(node) if key == "*" else [key]
            if not names:
                section = ".".join(path) or "the top level"
                raise ConfigError(f"{where}: '*' matches no key of {section}")
            for name in names:
                if last:
                    targets.append((node, name))
                    continue
                child = node.get(name)
                if child is None:
                    child = node[name] = {}
                if not isinstance(child, dict):
                    raise ConfigError(f"{where}: '{name}' is a value, not a section")
                below.append((child, (*path, name)))
        reached = below
    if len(targets) > 1 and len(targets) * _nodes(value) > limits.YAML_NODES:
        raise ConfigError(f"{where}: sets {len(targets)} keys, more than {limits.YAML_NODES} values in all")
    for node, name in targets:
        node[name] = fresh(value)


def _nodes(value: Any) -> int:
    """Lists, mappings and values in `value` (walked without recursion)."""
    stack, count = [value], 0
    while stack:
        item = stack.pop()
        count += 1
        stack.extend(item.values() if isinstance(item, dict) else item if isinstance(item, list) else ())
    return count


def fresh(value: Any) -> Any:
    """A copy of nested dicts and lists in which nothing is shared (deepcopy would keep shared parts shared)."""
    if isinstance(value, dict):
        return {key: fresh(item) for key, item in value.items()}
    if isinstance(value, list):
        return [fresh(item) for item in value]
    return value
