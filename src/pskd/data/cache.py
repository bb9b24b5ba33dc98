"""Prepared tensors: every clip resampled to fixed lengths, kept on disk keyed by what produced them.

The key hashes the source's fingerprint (file names, sizes and times, or generator settings) and the
preprocessing config, so a second run with the same settings reads one .npz instead of re-reading the dataset,
and any change of data or preprocessing gives a new entry.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
import zipfile
from dataclasses import asdict
from pathlib import Path

import numpy as np

from pskd.config import DataConfig, PreprocessConfig
from pskd.console import log_stderr
from pskd.data import transforms
from pskd.data.cache_entry import Unreadable, check_members, check_prepared, read_meta
from pskd.data.clip import SKELETON, Clip, DatasetInfo
from pskd.data.layouts import dataset_layout
from pskd.data.prepared import Prepared
from pskd.data.registry import get_dataset
from pskd.data.transforms import center_skeleton, resample, scale_skeleton
from pskd.errors import ConfigError
from pskd.fileio import WriteError, write_atomically

CACHE_VERSION = 3
CACHE_VARIABLE = "PSKD_CACHE_DIR"


def stream_length(stream: str, preprocess: PreprocessConfig) -> int:
    return preprocess.skeleton_length if stream == SKELETON else preprocess.sensor_length


def check_channels(info: DatasetInfo, clips: list[Clip], preprocess: PreprocessConfig) -> None:
    """preprocess.channels names streams this dataset has, and channels within their width."""
    for stream, kept in preprocess.channels.items():
        if stream not in info.streams:
            raise ConfigError(f"preprocess.channels.{stream}: no such stream in {info.name} (it has "
                              f"{', '.join(info.streams)})")
        width = int(np.prod(clips[0].streams[stream].shape[1:])) if clips else 0
        if max(kept) >= width:
            raise ConfigError(f"preprocess.channels.{stream}: channel {max(kept)} does not exist ({stream} has "
                              f"{width} channels, numbered from 0)")


def prepare_clips(info: DatasetInfo, clips: list[Clip], preprocess: PreprocessConfig) -> Prepared:
    check_channels(info, clips, preprocess)
    layout = dataset_layout(info.layout, info.layout_spec)
    streams = {}
    for name in info.streams:
        rows = []
        for clip in clips:
            x = resample(clip.streams[name], stream_length(name, preprocess), preprocess.resample, preprocess.antialias)
            if name in preprocess.channels:
                x = x[:, preprocess.channels[name]]
            if name == SKELETON and layout is not None:
                x = center_skeleton(x, layout, preprocess.skeleton_center)
                if preprocess.skeleton_scale:
                    x = scale_skeleton(x, layout)
            rows.append(x)
        streams[name] = np.stack(rows).astype(np.float32)
    return Prepared(
        info=info,
        streams=streams,
        labels=np.array([c.label for c in clips], dtype=np.int64),
        subjects=np.array([c.subject for c in clips], dtype=np.int64),
        trials=np.array([c.trial for c in clips], dtype=np.int64),
        scenes=np.array([c.scene for c in clips], dtype=np.int64),
        clip_ids=[c.clip_id for c in clips],
        source_lengths={n: np.array([len(c.streams[n]) for c in clips], dtype=np.int64) for n in info.streams},
    )


def cache_dir(config: DataConfig) -> Path:
    if config.cache_dir:
        return Path(config.cache_dir).expanduser()
    if os.environ.get(CACHE_VARIABLE):
        return Path(os.environ[CACHE_VARIABLE]).expanduser()
    return Path.home() / ".cache" / "pskd"


def code_fingerprint(*modules) -> str:
    """A hash of the source of the modules that produce prepared tensors: editing a loader, the generator or a
    transform invalidates the cache instead of silently serving tensors the current code would not make."""
    digest = hashlib.sha256()
    for module in modules:
        digest.update(Path(module.__file__).read_bytes())
    return digest.hexdigest()[:16]


def cache_key(fingerprint: str, preprocess: PreprocessConfig, code: str = "") -> str:
    text = json.dumps(
        {"v": CACHE_VERSION, "source": fingerprint, "code": code, "preprocess": preprocess.model_dump()},
        sort_keys=True,
    )
    return hashlib.sha256(text.encode()).hexdigest()[:20]


def _save(path: Path, prepared: Prepared) -> None:
    arrays = {f"stream/{n}": v for n, v in prepared.streams.items()}
    arrays.update({f"length/{n}": v for n, v in prepared.source_lengths.items()})
    arrays.update(labels=prepared.labels, subjects=prepared.subjects, trials=prepared.trials,
                  scenes=prepared.scenes)
    meta = {"info": asdict(prepared.info), "clip_ids": prepared.clip_ids}
    arrays["meta"] = np.frombuffer(json.dumps(meta).encode(), dtype=np.uint8)
    write_atomically(path, lambda handle: np.savez(handle, **arrays))


def _load(path: Path, preprocess: PreprocessConfig | None = None) -> Prepared:
    """A cache entry, checked as untrusted input (pskd.data.cache_entry): its member sizes before anything is
    inflated, then its metadata and arrays; an Unreadable (a ValueError) when it is not what _save writes."""
    members = check_members(path)
    with np.load(path, allow_pickle=False) as data:
        info, clip_ids = read_meta(data["meta"])
        streams = {k.split("/", 1)[1]: data[k] for k in members if k.startswith("stream/")}
        lengths = {k.split("/", 1)[1]: data[k] for k in members if k.startswith("length/")}
        prepared = Prepared(
            info=info,
            streams=streams,
            labels=data["labels"],
            subjects=data["subjects"],
            trials=data["trials"],
            scenes=data["scenes"],
            clip_ids=clip_ids,
            source_lengths=lengths,
        )
    expected = None if preprocess is None else {name: stream_length(name, preprocess) for name in info.streams}
    check_prepared(prepared, expected)
    return prepared


def prepare(config: DataConfig, preprocess: PreprocessConfig, log=log_stderr) -> Prepared:
    """Load and resample a dataset, through the on-disk cache when config.cache is on."""
    source = get_dataset(config.dataset)
    options = config.options()
    root = source.root(config.data_dir)
    path = None
    if config.cache:
        code = code_fingerprint(source.module, transforms, sys.modules[__name__])
        key = cache_key(source.cache_fingerprint(options, root), preprocess, code)
        path = cache_dir(config) / f"{source.name}-{key}.npz"
        if path.is_file():
            try:
                return _load(path, preprocess)
            except Unreadable as err:
                log(f"cache {path} is unreadable ({err}); rebuilding it", file=sys.stderr)
            except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as err:
                log(f"cache {path} is unreadable ({type(err).__name__}); rebuilding it", file=sys.stderr)
    info, clips = source.load(options, root)
    prepared = prepare_clips(info, clips, preprocess)
    if path is not None:
        try:
            _save(path, prepared)
        except WriteError as err:
            log(f"could not write the cache ({err}); continuing without it", file=sys.stderr)
    return prepared
