"""The datasets pskd can read, keyed by the names configs use: the one place a new dataset plugs in.

A dataset module registers its loader with `@register_dataset(name, protocols=..., options=...)`. The entry owns
everything configs and commands need of it:

- `load(options, root)`: every clip and the DatasetInfo (root is None for a generated dataset);
- its protocols, name -> rule(subjects, trials, scenes=..., options=...) giving the boolean "is a training
  clip" mask (scenes: each clip's scene or None; options: the dataset's options as a dict);
- its own config section `data.<name>`, a DatasetOptions model checked when the config is read;
- how to find its folder (`resolve_root`), how to fingerprint it for the cache, how to summarise it for
  `pskd data check` (`summarize(options, root, protocol)`, the protocol a config names, or None).

This registry imports none of its datasets: the built-in ones register themselves when the package pskd.data
imports them, and a user's dataset registers from a plugin file (a config's `plugins`) the same way.
"""

from __future__ import annotations

import hashlib
import os
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType

from pydantic import BaseModel, ConfigDict

from pskd.errors import ConfigError, DataError
from pskd.suggest import did_you_mean, validation_hint

DATA_DIR_VARIABLE = "PSKD_DATA_DIR"
# keys of the data section that are not datasets (pskd.config.DataConfig): a dataset cannot take these names
RESERVED = frozenset({"dataset", "data_dir", "protocol", "val_subjects", "cache", "cache_dir", "labels"})


class DatasetOptions(BaseModel):
    """A dataset's own settings (data.<name>); unknown keys are errors."""

    model_config = ConfigDict(extra="forbid")


Rule = Callable[..., "object"]  # (subjects, trials, scenes=, options=) -> boolean mask of training clips


@dataclass(frozen=True)
class Dataset:
    name: str
    load: Callable  # (options, root: Path | None) -> (DatasetInfo, list[Clip])
    protocols: dict[str, Rule]
    options: type[DatasetOptions] = DatasetOptions
    needs_data_dir: bool = True  # False: generated, no folder (load gets root None)
    # the dataset's own folder from the data root given (default: the folder given, which must exist)
    resolve_root: Callable[[Path], Path] | None = None
    summarize: Callable | None = None  # (options, root, protocol) -> the dict `pskd data check` prints
    # what, besides the files and the code, changes the clips (default: every option)
    fingerprint: Callable | None = None  # (options, root) -> str
    # the protocol rules' keyword arguments from the options (default: the options as a dict)
    protocol_options: Callable | None = None  # (options, DatasetInfo) -> dict
    module: ModuleType | None = None  # the code that reads the clips (part of the cache key)
    version: str = "v1"

    def root(self, data_dir: str | os.PathLike | None) -> Path | None:
        """The folder `load` reads (None for a generated dataset), from the data root given, else $PSKD_DATA_DIR."""
        if not self.needs_data_dir:
            return None
        data_dir = resolve_data_dir(self.name, data_dir)
        if self.resolve_root is not None:
            return self.resolve_root(data_dir)
        if not data_dir.is_dir():
            raise DataError(f"{data_dir}: {self.name} folder not found")
        return data_dir

    def parse_options(self, raw: dict | None) -> DatasetOptions:
        """The options model of `data.<name>` (defaults for what is not given); a bad value is a ConfigError."""
        from pydantic import ValidationError

        try:
            return self.options.model_validate(raw or {})
        except ValidationError as err:
            item = err.errors()[0]
            key = ".".join(str(p) for p in item["loc"])
            shown = "" if isinstance(item.get("input"), (dict, list)) else f" (got {item.get('input')!r})"
            hint = validation_hint(self.options, item)
            message = "unknown key" + hint if item["type"] == "extra_forbidden" else item["msg"] + shown + hint
            raise ConfigError(f"data.{self.name}.{key}: {message}") from None

    def cache_fingerprint(self, options: DatasetOptions, root: Path | None) -> str:
        """Changes whenever the clips would: the options, and the names, sizes and times of the files under root."""
        own = self.fingerprint(options, root) if self.fingerprint else options.model_dump_json()
        files = file_fingerprint(root) if root is not None else ""
        return f"{self.name}-{self.version}-{own}-{files}"

    def split_options(self, options: DatasetOptions, info) -> dict:
        return self.protocol_options(options, info) if self.protocol_options else options.model_dump()


DATASETS: dict[str, Dataset] = {}


def register_dataset(name: str, *, protocols: dict[str, Rule], options: type[DatasetOptions] = DatasetOptions,
                     **details):
    """Decorate a loader `load(options, root)` to make it the dataset `name` (details: the Dataset fields)."""
    if not name.isidentifier() or name in RESERVED:
        raise ValueError(f"'{name}' cannot name a dataset (an identifier, not one of {sorted(RESERVED)})")
    if not protocols:
        raise ValueError(f"dataset '{name}' needs at least one protocol")
    if not (isinstance(options, type) and issubclass(options, DatasetOptions)):
        raise TypeError(f"register_dataset('{name}'): options must be a pskd.DatasetOptions subclass")

    def wrap(load: Callable) -> Callable:
        if name in DATASETS and DATASETS[name].load is not load:
            raise ValueError(f"a dataset named '{name}' is already registered ({DATASETS[name].load.__module__})")
        module = details.pop("module", None) or sys.modules[load.__module__]
        DATASETS[name] = Dataset(name=name, load=load, protocols=dict(protocols), options=options, module=module,
                                 **details)
        return load

    return wrap


def dataset_names() -> list[str]:
    return sorted(DATASETS)


def get_dataset(name: str) -> Dataset:
    if name not in DATASETS:
        raise ConfigError(f"unknown dataset '{name}'{did_you_mean(name, DATASETS)}; known: {', '.join(sorted(DATASETS))}")
    return DATASETS[name]


def lookup(name: str) -> Dataset | None:
    """The dataset registered as `name`, or None (a plugin's dataset may register later)."""
    return DATASETS.get(name)


def file_fingerprint(root: Path) -> str:
    """Names, sizes and modification times of every file under root: cheap, and enough to notice any change."""
    digest = hashlib.sha256()
    for path in sorted(root.rglob("*")):
        if path.is_file():
            stat = path.stat()
            digest.update(f"{path.relative_to(root)}|{stat.st_size}|{stat.st_mtime_ns}\n".encode())
    return digest.hexdigest()


def resolve_data_dir(name: str, data_dir: str | os.PathLike | None) -> Path:
    """The folder given, else $PSKD_DATA_DIR (the loader accepts the data root or the dataset's own folder)."""
    if data_dir is None:
        data_dir = os.environ.get(DATA_DIR_VARIABLE)
        if not data_dir:
            raise DataError(f"no data folder for {name}: pass --data-dir DIR or set {DATA_DIR_VARIABLE}")
    return Path(data_dir).expanduser()
