"""A user's own extensions: Python files, named by a config's `plugins` list, imported before anything is checked
so that the losses, methods and models they register are known to the config. A path is taken relative to the
working directory; a file is imported once per process, however many runs name it."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

from pskd.errors import ConfigError

_LOADED: dict[Path, str] = {}


def load_plugins(paths: list[str]) -> None:
    for text in paths:
        path = Path(text).expanduser().resolve()
        if path in _LOADED:
            continue
        if not path.is_file() or path.suffix != ".py":
            raise ConfigError(f"plugins: {text}: not a Python file")
        name = f"pskd_plugin_{len(_LOADED)}_{''.join(c if c.isalnum() else '_' for c in path.stem)}"
        spec = importlib.util.spec_from_file_location(name, path)
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        try:
            spec.loader.exec_module(module)
        except Exception as err:  # a plugin's own error, reported as the user's: one line naming the file
            del sys.modules[name]
            raise ConfigError(f"plugins: {text}: {type(err).__name__}: {err}") from None
        _LOADED[path] = name
