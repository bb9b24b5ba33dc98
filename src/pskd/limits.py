"""Every bound pskd puts on what it reads, in one place (docs/limits.md lists them with their reasons).

Untrusted input (configs, `--set` values, manifests, layouts, recordings, cache entries, a sweep's records, model
cards) is checked against these before it is parsed, so a hostile file costs at most a bounded amount of memory
and time and ends in one error line. The file sizes a legitimate user could outgrow are raised with the
environment variable PSKD_MAX_FILE_MB (a number of MiB, applied to each of FILE_BYTES; it never lowers them);
the others are far above anything a real input needs. Nothing here imports more than the standard library and
pskd.errors.
"""

from __future__ import annotations

import math
import os

from pskd.errors import UserError

MiB = 1024**2
FILE_MB_VARIABLE = "PSKD_MAX_FILE_MB"

NAME_CHARS = 200  # a joint's, class's, stream's or model's name

# File sizes a legitimate user could reach; PSKD_MAX_FILE_MB raises each to that many MiB.
FILE_BYTES = {
    "manifest": 64 * MiB,  # manifest.csv: about 500,000 rows of 120 characters
    "recording": 2 * 1024 * MiB,  # one recording of a folder dataset (.npy data or .csv text)
    "cache": 4 * 1024 * MiB,  # one prepared-dataset entry (.npz) in the cache
    "records": 64 * MiB,  # a sweep's rows.jsonl or invocations.jsonl: about 1 kB a run
    "checkpoint": 512 * MiB,  # a model checkpoint as its members unpack: pskd's models are 0.1-50 MB
}

# Files no legitimate input comes near (fixed).
CONFIG_BYTES = 1 * MiB  # a config (or a run's saved config.yaml) is a few kB
LAYOUT_BYTES = 1 * MiB  # layout.json: a 1,000-joint layout with its edges is about 50 kB
METADATA_BYTES = 16 * MiB  # metrics.json, an export's report, a truth file of segments: kB to a few MB
CARD_BYTES = 1_000_000  # a model card is a few kB
CACHE_META_BYTES = 64 * MiB  # a cache entry's metadata (dataset info and every clip id): about 50 bytes a clip

# Structure of YAML and JSON.
NESTING_DEPTH = 32  # levels of nested lists and mappings (a config has 5, a layout 3)
YAML_NODES = 20_000  # YAML nodes, every alias counted as the nodes it stands for (a config has a few hundred)
OVERRIDE_CHARS = 100_000  # the value of one --set KEY=VALUE
CONFIG_BASE_DEPTH = 8  # levels of `_base_` above a config file (the shipped configs use 2)
CONFIG_BASE_FILES = 32  # files one config reads through `_base_`, every level counted

# manifest.csv
MANIFEST_COLUMNS = 1_000  # columns of the header (a clip with 50 streams, each cropped, needs 205)
MANIFEST_FIELD_CHARS = 4_096  # characters in one cell: the longest path a file system accepts

# layout.json
LAYOUT_JOINTS = 1_000  # joints of a skeleton (Kinect has 25, a detailed hand-and-body model 135)
LAYOUT_EDGES = 10_000  # edges listed (a tree has joints - 1; repeated edges count once in the graph)

# Numbers of a config.
MAX_EPOCHS = 100_000  # epochs (and warm-up, patience, stage starts): days of training on the smallest dataset
MAX_BATCH_SIZE = 1_000_000  # clips in a batch: more than any dataset holds
MAX_CLIP_SAMPLES = 10_000  # samples a clip is resampled to (80 times the default 128)
MAX_THREADS = 1_024  # torch threads
MAX_CROSS_FIT_FOLDS = 100  # each fold costs one more training of every teacher

# Recordings and model outputs.
MAX_RATE_HZ = 100_000.0  # a sampling rate (a model card allows no more: such a model could not be deployed)
FLOAT32_MAX = 3.4028234663852886e38  # a value beyond this becomes inf in float32: refused, with its file named

# What a model card may say (larger values are refused as a card no training writes).
CARD_FIELDS = {"classes": 10_000, "streams": 16, "channels": 4096, "seq_len": 1_000_000, "rate_hz": MAX_RATE_HZ,
               "window_s": 24 * 3600.0, "text": NAME_CHARS}

# pskd bench
MAX_BENCH_REPEATS = 1_000_000  # timed runs per runtime (each is also bounded by --max-seconds)
MAX_BENCH_WARMUP = 100_000  # untimed runs first


def file_bytes(kind: str) -> int:
    """The size limit of one of FILE_BYTES' kinds of file: its default, or PSKD_MAX_FILE_MB MiB when larger."""
    default = FILE_BYTES[kind]
    text = os.environ.get(FILE_MB_VARIABLE, "").strip()
    if not text:
        return default
    try:
        mib = float(text)
    except ValueError:
        mib = math.nan
    if not mib >= 0:
        raise UserError(f"{FILE_MB_VARIABLE}={text!r}: expected a number of MiB")
    return max(default, int(min(mib, 2.0**40) * MiB))


def shown(size: int) -> str:
    """A size in bytes, for an error line."""
    return f"{size / MiB:.1f} MiB" if size >= MiB else f"{size} bytes"
