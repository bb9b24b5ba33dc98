"""A user's own extensions: Python files, named by a config's `plugins` list, imported before anything is checked
so that the losses, methods and models they register are known to the config. A path is taken relative to the
working directory; a file is imported once per process, however many runs name it.

Plugins are code. A run records each file it used with its SHA-256 (in config.yaml and in the student's
checkpoint), and a recorded entry `{path, sha256}` loads only a file of that digest. Commands that read a run
someone else may have written (export, evaluate, bench, predict) import no plugin by themselves: the user names
the file (`--plugin FILE`), and it is imported only when its digest is one the run recorded.
"""

from __future__ import annotations

import hashlib
import re
import sys
import types
from pathlib import Path

from pskd.bounded import LimitError, read_bytes
from pskd.errors import ConfigError, DataError

_LOADED: dict[Path, str] = {}  # each plugin imported in this process: its module's name
_DIGESTS: dict[Path, str] = {}  # and the SHA-256 of the very bytes that were run
PLUGIN_BYTES = 8 * 1024 * 1024  # a plugin is a Python file of a few kB
DIGEST = re.compile(r"^[0-9a-f]{64}$")


def entry_path(entry) -> str:
    """The path of a `plugins` entry: a path, or a recorded {path, sha256}."""
    return entry if isinstance(entry, str) else entry.path


def read_plugin(path: Path, where: str = "plugins", shown: str | None = None) -> bytes:
    """The bytes of a plugin file, read once: what is hashed is what is executed (no bytecode cache is used)."""
    shown = shown or str(path)
    if not path.is_file() or path.suffix != ".py":
        raise ConfigError(f"{where}: {shown}: not a Python file")
    try:
        return read_bytes(path, PLUGIN_BYTES)
    except LimitError as err:
        raise ConfigError(f"{where}: {shown}: {err}") from None
    except OSError as err:
        raise ConfigError(f"{where}: {shown}: cannot be read ({err.strerror})") from None


def sha256_of(path: Path, where: str = "plugins", shown: str | None = None) -> str:
    """The SHA-256 of a plugin file (named in messages as `shown`, by default its path)."""
    return hashlib.sha256(read_plugin(path, where, shown)).hexdigest()


def record(entries: list) -> list[dict]:
    """Each plugin entry as a run records it: the absolute path it was read from and the SHA-256 of the bytes this
    process ran (read again only for a plugin not imported here)."""
    paths = [Path(entry_path(e)).expanduser().resolve() for e in entries]
    return [{"path": str(path), "sha256": _DIGESTS.get(path) or sha256_of(path)} for path in paths]


def load_plugins(entries: list) -> None:
    """Import each plugin file once per process; an entry with a recorded sha256 only when the file still has it."""
    for entry in entries:
        text = entry_path(entry)
        path = Path(text).expanduser().resolve()
        if path in _LOADED:
            continue
        data = read_plugin(path, shown=text)
        digest = hashlib.sha256(data).hexdigest()
        expected = None if isinstance(entry, str) else entry.sha256
        if expected is not None and digest != expected:
            raise ConfigError(f"plugins: {text}: its SHA-256 is {digest[:16]}..., not the {expected[:16]}... "
                              "recorded; the file changed since the run (restore it, or give the path alone)")
        _execute(path, data, digest, text)


def _execute(path: Path, data: bytes, digest: str, text: str) -> None:
    """Run the plugin's bytes as the module pskd_plugin_<n>_<name>: the very bytes that were read and hashed,
    compiled here (a __pycache__ file beside the plugin is never read)."""
    name = f"pskd_plugin_{len(_LOADED)}_{''.join(c if c.isalnum() else '_' for c in path.stem)}"
    module = types.ModuleType(name)
    module.__file__ = str(path)
    sys.modules[name] = module
    try:
        exec(compile(data, str(path), "exec", dont_inherit=True), module.__dict__)  # noqa: S102 (the user's plugin)
    except Exception as err:  # a plugin's own error, reported as the user's: one line naming the file
        del sys.modules[name]
        raise ConfigError(f"plugins: {text}: {type(err).__name__}: {err}") from None
    _LOADED[path], _DIGESTS[path] = name, digest


def recorded_plugins(meta: dict, source: str) -> list[dict]:
    """The plugins a checkpoint's meta records, checked: a list of {path, sha256}."""
    found = meta.get("plugins") or []
    if not isinstance(found, list) or not all(
        isinstance(e, dict) and isinstance(e.get("path"), str) and isinstance(e.get("sha256"), str)
        and DIGEST.match(e["sha256"]) for e in found
    ):
        raise DataError(f"{source}: its record of plugins is malformed")
    return found


def load_named_plugins(files: list[Path], recorded: list[dict], source: str) -> None:
    """Import the plugin files a user named for a run (`--plugin`), each only if the run recorded its digest."""
    digests = {e["sha256"]: e["path"] for e in recorded}
    for file in files:
        path = Path(file).expanduser().resolve()
        data = read_plugin(path, "--plugin", str(file))
        digest = hashlib.sha256(data).hexdigest()
        if digest not in digests:
            known = ", ".join(f"{Path(p).name} ({d[:12]}...)" for d, p in digests.items()) or "none"
            raise ConfigError(f"--plugin {file}: SHA-256 {digest[:12]}... is not that of a plugin {source} was "
                              f"trained with (recorded: {known})")
        if path not in _LOADED:
            _execute(path, data, digest, str(file))


def source_of(cls: type) -> str:
    """Where a registered class comes from: pskd itself, a plugin file, or other Python code (a notebook cell, an
    installed package), as a run records it."""
    module = getattr(cls, "__module__", "") or ""
    if module == "pskd" or module.startswith("pskd."):
        return "pskd"
    for path, name in _LOADED.items():
        if name == module:
            return f"plugin {path}"
    return f"python module {module}"


def unknown_model(name: str, meta: dict, source: str) -> DataError:
    """What to say when a checkpoint's model is not registered in this process."""
    recorded = recorded_plugins(meta, source)
    origin = str(meta.get("model_source") or "")
    if origin.startswith("plugin ") or recorded:
        path = origin.removeprefix("plugin ") if origin.startswith("plugin ") else recorded[0]["path"]
        digest = next((e["sha256"][:12] for e in recorded if e["path"] == path), "?")
        return DataError(f"{source}: its model '{name}' comes from the plugin {path} (SHA-256 {digest}...): pass "
                         f"that file with --plugin")
    if origin.startswith("python module"):
        return DataError(f"{source}: its model '{name}' was registered by {origin.removeprefix('python module ')}, "
                         "not by a plugin file, so no command can load it: put the class in a .py file, name it in "
                         "the config's plugins and train again (in the Python session that registered it, "
                         "pskd.load_classifier loads the run)")
    return DataError(f"{source}: unknown model '{name}' (not registered here, and the run records no plugin)")
