"""What the command fuzzers (tests/test_fuzz_*.py) share: a workspace holding a canary folder, a snapshot of a
folder taken with lstat (no link followed), the hostile states applied to a run folder, and the one check made
after every command: exit code 0 or 2, one error line and no traceback on 2, peak memory under a bound, nothing
outside the paths the command owns created, changed or removed, and inside them nothing that existed before
changed unless the command was told to replace it and it was a pskd output of the kind replaced.

Profiles: `ci` (the default, a few hundred examples over both files) and `long` (20 times as many), chosen with
PSKD_FUZZ_PROFILE=long (or PSKD_FUZZ=long, as tests/test_bounds.py reads it, or --hypothesis-profile=long).
"""

from __future__ import annotations

import hashlib
import os
import resource
import shutil
import stat
from collections.abc import Iterable
from pathlib import Path

from conftest import run_cli
from hypothesis import HealthCheck, event, settings
from hypothesis import strategies as st

LONG_SCALE = 20
MEMORY_BYTES = 1024**3  # what one command may add to the process's resident memory at its peak


def _status(field: str) -> int | None:
    """A field of /proc/self/status in bytes (VmRSS, VmHWM), or None where there is none."""
    try:
        with open("/proc/self/status") as handle:
            for line in handle:
                if line.startswith(field + ":"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def _reset_peak() -> int:
    """Reset the process's peak resident memory to what it holds now (Linux: clear_refs 5), and return that; where
    it cannot be reset, the peak so far (ru_maxrss), so that the bound only grows stricter."""
    try:
        with open("/proc/self/clear_refs", "w") as handle:
            handle.write("5")
        now = _status("VmRSS")
        if now is not None:
            return now
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def _peak() -> int:
    return _status("VmHWM") or resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def is_long() -> bool:
    return settings.default.max_examples >= 1000  # the `long` profile (tests/conftest.py) is loaded


def fuzz(examples: int) -> settings:
    """`examples` in the ci profile, LONG_SCALE times as many in the long one."""
    return settings(max_examples=examples * (LONG_SCALE if is_long() else 1), deadline=None, database=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture,
                                           HealthCheck.data_too_large, HealthCheck.filter_too_much])


# snapshots


def _sha(path: Path) -> str:
    digest = hashlib.sha256()
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
    with os.fdopen(fd, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def snapshot(root: Path) -> dict[Path, tuple]:
    """Every entry below `root` (absolute path -> what it is), by lstat, links never followed: a file's size,
    mode, mtime and content hash; a folder's mode; a link's target."""
    found: dict[Path, tuple] = {}
    for here, folders, files in os.walk(root):  # os.walk does not descend into a link to a folder
        for name in folders + files:
            path = Path(here) / name
            info = os.lstat(path)
            if stat.S_ISLNK(info.st_mode):
                found[path] = ("link", os.readlink(path))
            elif stat.S_ISDIR(info.st_mode):
                found[path] = ("folder", stat.S_IMODE(info.st_mode))
            elif stat.S_ISREG(info.st_mode):
                found[path] = ("file", info.st_size, stat.S_IMODE(info.st_mode), info.st_mtime_ns, _sha(path))
            else:
                found[path] = ("other", stat.S_IFMT(info.st_mode))
    return found


def under(path: Path, folders: Iterable[Path]) -> bool:
    return any(path == f or path.is_relative_to(f) for f in folders)


# the workspace


CANARY_FILES = {"secret.txt": b"four years of work\n", "sub/notes.md": b"# notes\n", "model.onnx": b"my model"}


def workspace(parent: Path, name: str) -> Path:
    """A fresh folder holding canary/ (files no command may ever change, the target of every planted link)."""
    ws = parent / name
    for rel, data in CANARY_FILES.items():
        (ws / "canary" / rel).parent.mkdir(parents=True, exist_ok=True)
        (ws / "canary" / rel).write_bytes(data)
    return ws


def link_targets(ws: Path) -> list[Path]:
    """Where planted links point: a canary file, the canary folder, a folder in it, a dangling name in it."""
    return [ws / "canary" / "secret.txt", ws / "canary", ws / "canary" / "sub", ws / "canary" / "missing"]


def replace_with_link(path: Path, target: Path) -> None:
    remove(path)
    path.parent.mkdir(parents=True, exist_ok=True)  # (a folder, where the caller checked it is not a link)
    path.symlink_to(target, target_is_directory=target.is_dir())


def remove(path: Path) -> None:
    if path.is_symlink() or path.is_file():
        path.unlink()
    elif path.is_dir():
        shutil.rmtree(path)


# hostile states of a run folder

GARBAGE = st.binary(max_size=64) | st.sampled_from([b"", b"\x00" * 300, b"{}", b"[]", b'{"kind": "run"}', b"nan",
                                                    b"PK\x03\x04" + b"\x00" * 40, b"\x93NUMPY\x01\x00v\x00"])
MARKERS = st.sampled_from(['{"kind": "run"}', '{"kind": "evaluation"}', '{"kind": "export"}', '{"kind": "sweep"}',
                           '{"kind": "bogus"}', '{"kind": ["run"]}', "[]", "not json", "", '{"kind": "run"' * 50,
                           "{" * 5000 + "}" * 5000, '{"kind": "run", "x": 1e999}'])
PLANTS = {  # a name planted in the run and what it holds
    ".lock": b"12345\n", "state/x.tmp": b"half a checkpoint", "state/last.pt": b"not a checkpoint",
    "notes.txt": b"a file of my own", "export/.student.onnx.pskd-tmp": b"left by a kill",
    "checkpoints/best.pt.tmp": b"x", "bench.json": b'{"old": 1}', "history/extra.csv": b"a,b\n1,2\n",
}


def run_entries(run: Path) -> list[str]:
    """The relative paths of everything in a run (its files and folders)."""
    return sorted(str(p.relative_to(run)) for p in run.rglob("*"))


@st.composite
def run_mutations(draw, entries: list[str], max_size: int = 4) -> list[tuple]:
    """A sequence of changes to a run folder (applied by mutate): delete, truncate, garbage, a link out, a plant,
    a marker's text."""
    target = st.sampled_from(entries)
    one = st.one_of(
        st.tuples(st.just("delete"), target),
        st.tuples(st.just("truncate"), target, st.integers(0, 4096)),
        st.tuples(st.just("garbage"), target, GARBAGE),
        st.tuples(st.just("link"), target | st.sampled_from(sorted(PLANTS)) | st.just("export"), st.integers(0, 3)),
        st.tuples(st.just("plant"), st.sampled_from(sorted(PLANTS))),
        st.tuples(st.just("marker"), st.sampled_from([".pskd-output.json", "export/.pskd-output.json"]), MARKERS),
    )
    return draw(st.lists(one, max_size=max_size))


def mutate(run: Path, ws: Path, changes: list[tuple]) -> set[str]:
    """Apply `changes` to the run folder; the relative paths touched."""
    touched = set()
    for change in changes:
        kind, rel = change[0], change[1]
        path = run / rel
        parent = path.parent
        if parent != run and (parent.is_symlink() or (parent.exists() and not parent.is_dir())):
            continue  # an earlier change made a file or a link of this entry's folder
        touched.add(rel)
        if kind == "delete":
            remove(path)
        elif kind == "truncate":
            if path.is_file() and not path.is_symlink():
                os.truncate(path, min(change[2], path.stat().st_size))
        elif kind in ("garbage", "marker"):
            remove(path)
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(change[2] if kind == "garbage" else change[2].encode())
        elif kind == "link":
            replace_with_link(path, link_targets(ws)[change[2]])
        elif kind == "plant":
            remove(path)
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(PLANTS[rel])
    return touched


# the check


def run_command(args: list, capsys) -> tuple[int, str, str]:
    """The command in this process: exit 0 or 2 (no other exception escapes run_cli), one error line and no
    traceback on 2, and the process's peak resident memory during the command under MEMORY_BYTES more than
    before it."""
    start = _reset_peak()
    code, out, err = run_cli([str(a) for a in args], capsys)
    peak = _peak()
    event(f"{args[0]}: exit {code}")  # shown by --hypothesis-show-statistics
    assert code in (0, 2), f"exit {code}: {args}\n{err[-3000:]}"
    assert "Traceback" not in err and "Traceback" not in out, err[-3000:]
    if code == 2:
        lines = err.strip().splitlines()
        errors = [line for line in lines if line.startswith(("pskd: error:", "Error:"))]
        assert len(errors) == 1 and lines[-1] == errors[0], f"{args}\n{err[-3000:]}"
        if errors[0].startswith("Error:"):  # click's own: a usage error, which the fuzzer must not generate
            raise AssertionError(f"usage error: {args}\n{err}")
    assert peak - start < MEMORY_BYTES, f"peak memory {(peak - start) / 2**20:.0f} MiB over {start / 2**20:.0f}: {args}"
    return code, out, err


def check_changes(before: dict, after: dict, owned: Iterable[Path], replaceable: Iterable[Path] = (),
                  tidied: Iterable[Path] = (), what: str = "") -> None:
    """Outside `owned` nothing is created, changed or removed. Inside it, what existed before is unchanged
    unless it lies in `replaceable` (a pskd output the command was told to replace) or in `tidied` (leftovers
    the command may remove: a lock, temporary files, per-epoch checkpoints)."""
    owned, replaceable, tidied = list(owned), list(replaceable), list(tidied)
    for path, was in before.items():
        now = after.get(path)
        if now == was:
            continue
        if now is None and under(path, tidied):
            continue
        assert under(path, owned), f"{what}: {path} outside what the command owns was {'changed' if now else 'removed'}"
        assert under(path, replaceable), f"{what}: {path}, which the command may not replace, was " \
                                         f"{'changed' if now else 'removed'} ({was[:2]} -> {now and now[:2]})"
    for path in after.keys() - before.keys():
        assert under(path, owned), f"{what}: {path} created outside what the command owns"
