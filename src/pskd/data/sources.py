"""The datasets pskd can read, keyed by the names configs use."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType

from pskd.config import DataConfig
from pskd.data import berkeley_mhad, folder, mmact, synthetic, utd_mhad
from pskd.data.clip import Clip, DatasetInfo
from pskd.errors import ConfigError, DataError

DATA_DIR_VARIABLE = "PSKD_DATA_DIR"


@dataclass
class Source:
    name: str
    needs_data_dir: bool
    load: Callable[[DataConfig, Path | None], tuple[DatasetInfo, list[Clip]]]
    fingerprint: Callable[[DataConfig, Path | None], str]  # changes whenever the clips would change
    module: ModuleType  # the code that reads or generates the clips (part of the cache key)
    summarize: Callable[[Path], dict] | None = None


def _file_fingerprint(root: Path) -> str:
    """Names, sizes and modification times of every file under root: cheap, and enough to notice any change."""
    digest = hashlib.sha256()
    for path in sorted(root.rglob("*")):
        if path.is_file():
            stat = path.stat()
            digest.update(f"{path.relative_to(root)}|{stat.st_size}|{stat.st_mtime_ns}\n".encode())
    return digest.hexdigest()


def _utd_fingerprint(config: DataConfig, root: Path | None) -> str:
    return "utd_mhad-v1-" + _file_fingerprint(utd_mhad.resolve_root(root))


def _berkeley_fingerprint(config: DataConfig, root: Path | None) -> str:
    return (f"berkeley_mhad-v1-{config.berkeley_mhad.watch}-"
            + _file_fingerprint(berkeley_mhad.resolve_root(root) / "Accelerometer"))


def _synthetic_fingerprint(config: DataConfig, root: Path | None) -> str:
    return "synthetic-v1-" + config.synthetic.model_dump_json()


SOURCES = {
    "utd_mhad": Source(
        name="utd_mhad",
        needs_data_dir=True,
        load=lambda config, root: utd_mhad.load(root),
        fingerprint=_utd_fingerprint,
        module=utd_mhad,
        summarize=utd_mhad.summarize,
    ),
    "berkeley_mhad": Source(
        name="berkeley_mhad",
        needs_data_dir=True,
        load=lambda config, root: berkeley_mhad.load(root, config.berkeley_mhad.watch),
        fingerprint=_berkeley_fingerprint,
        module=berkeley_mhad,
        summarize=berkeley_mhad.summarize,
    ),
    "folder": Source(
        name="folder",
        needs_data_dir=True,
        load=lambda config, root: folder.load(root),
        fingerprint=lambda config, root: "folder-v1-" + _file_fingerprint(folder.resolve_root(root)),
        module=folder,
        summarize=folder.summarize,
    ),
    "mmact": Source(
        name="mmact",
        needs_data_dir=True,
        load=lambda config, root: mmact.load(root, config.mmact.camera),
        fingerprint=lambda config, root: (f"mmact-v1-cam{config.mmact.camera}-"
                                          + _file_fingerprint(mmact.resolve_root(root))),
        module=mmact,
        summarize=mmact.summarize,
    ),
    "synthetic": Source(
        name="synthetic",
        needs_data_dir=False,
        load=lambda config, root: synthetic.load(**config.synthetic.model_dump()),
        fingerprint=_synthetic_fingerprint,
        module=synthetic,
    ),
}


def get_source(name: str) -> Source:
    if name not in SOURCES:
        raise ConfigError(f"unknown dataset '{name}'; known: {', '.join(sorted(SOURCES))}")
    return SOURCES[name]


def resolve_data_dir(name: str, data_dir: str | os.PathLike | None) -> Path:
    """The folder given, else $PSKD_DATA_DIR (the loader accepts the data root or the dataset's own folder)."""
    if data_dir is None:
        data_dir = os.environ.get(DATA_DIR_VARIABLE)
        if not data_dir:
            raise DataError(f"no data folder for {name}: pass --data-dir DIR or set {DATA_DIR_VARIABLE}")
    return Path(data_dir).expanduser()
