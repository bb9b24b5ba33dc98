"""Fetch a dataset's official archives, verify them, and extract them safely.

- **Where from.** Each dataset lists its archives and a base URL, which `--url` (or $PSKD_<DATASET>_URL) replaces:
  a mirror, or a local server.
- **Resumable.** An archive is downloaded into `<name>.part`. An interrupted download continues from where it
  stopped (an HTTP Range request); a server that ignores the range starts it again.
- **Verified.** An archive whose SHA-256 is known (listed here, or given with `--sha256 NAME=HEX`) must match it,
  or it is deleted and the download fails. After extraction, every file named in the dataset's manifest of
  per-file SHA-256 digests (shipped with pskd for UTD-MHAD) must match too.
- **Safe extraction.** A member with an absolute path, a `..` component, a link or a device is refused before
  anything is written. Members are extracted into a temporary folder beside the target, checked, and only then
  moved into place; a failure leaves the target as it was.
"""

from __future__ import annotations

import hashlib
import os
import stat
import tarfile
import urllib.error
import urllib.parse
import urllib.request
import zipfile
from collections.abc import Callable
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path, PurePosixPath

from pskd.bounded import LimitError, read_text
from pskd.errors import DataError, UserError
from pskd.fileio import LinkRefused, WriteError, create_folder, make_temp_folder, open_binary_append, remove, rename
from pskd.limits import METADATA_BYTES


@dataclass
class Archive:
    name: str  # file name under the base URL
    sha256: str | None = None  # of the archive, when known


@dataclass
class Download:
    dataset: str
    base_url: str
    archives: list[Archive]
    folders: list[str]  # what the archives must create under the dataset folder
    manifest: str | None = None  # package resource with "<sha256>  ./<relative path>" lines
    notes: list[str] = field(default_factory=list)


DOWNLOADS = {
    "utd_mhad": Download(
        dataset="utd_mhad",
        # the dataset's page is https://personal.utdallas.edu/~kehtar/UTD-MHAD.html
        base_url="https://personal.utdallas.edu/~kehtar/UTD-MAD/",
        archives=[Archive("Skeleton.zip"), Archive("Inertial.zip")],
        folders=["Skeleton", "Inertial"],
        manifest="utd_mhad.sha256",
        notes=["the archives' own digests are not published; every extracted file is checked against the "
               "manifest of the 1,722 skeleton and inertial files shipped with pskd"],
    ),
}

CHUNK = 1 << 16


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(CHUNK), b""):
            digest.update(block)
    return digest.hexdigest()


def fetch(url: str, target: Path, progress: Callable[[int, int | None], None] | None = None,
          timeout: float = 60.0) -> Path:
    """Download url to target, resuming target.part if it exists. Returns target. A link at either is refused
    (never written through): the folder of downloads is pskd's own."""
    part = target.with_name(target.name + ".part")
    for path in (part, target):
        if path.is_symlink():
            raise DataError(f"{path}: is a symbolic link; pskd writes no download through a link (remove it)")
    have = part.stat().st_size if part.exists() else 0
    request = urllib.request.Request(url, headers={"Range": f"bytes={have}-"} if have else {})
    try:
        response = urllib.request.urlopen(request, timeout=timeout)
    except urllib.error.HTTPError as err:
        if err.code == 416 and have:  # the part file is already whole
            _keep(part, target)
            return target
        raise DataError(f"{url}: HTTP {err.code} {err.reason}") from None
    except (urllib.error.URLError, OSError) as err:
        reason = getattr(err, "reason", err)
        raise DataError(f"{url}: cannot download ({reason})") from None
    with response:
        resumed = have and response.status == 206
        mode = "ab" if resumed else "wb"
        if have and not resumed:
            have = 0  # the server sent the whole file: start again
        length = response.headers.get("Content-Length")
        total = have + int(length) if length is not None else None
        done = have
        try:
            with open_binary_append(part, truncate=mode == "wb") as handle:
                while True:
                    block = response.read(CHUNK)
                    if not block:
                        break
                    handle.write(block)
                    done += len(block)
                    if progress:
                        progress(done, total)
        except LinkRefused as err:
            raise DataError(str(err)) from None
        except (OSError, WriteError) as err:
            raise DataError(f"{url}: download interrupted ({err}); run the command again to resume") from None
    if total is not None and done != total:
        raise DataError(f"{url}: download incomplete ({done} of {total} bytes); run the command again to resume")
    _keep(part, target)
    return target


def _keep(part: Path, target: Path) -> None:
    """The whole download takes its name (flushed to disk first); a link at the target is refused."""
    try:
        with open_binary_append(part) as handle:
            os.fsync(handle.fileno())
        rename(part, target)
    except (OSError, WriteError) as err:
        raise DataError(f"{target}: cannot keep the download ({getattr(err, 'strerror', None) or err})") from None


def _unsafe_name(name: str) -> str | None:
    path = PurePosixPath(name.replace("\\", "/"))
    if path.is_absolute() or name.startswith(("/", "\\")) or (len(name) > 1 and name[1] == ":"):
        return "an absolute path"
    if ".." in path.parts:
        return "a '..' component"
    return None


def _check_members(archive: Path) -> list[str]:
    """The member names, after refusing any that could write outside the target or is not a plain file."""
    if zipfile.is_zipfile(archive):
        with zipfile.ZipFile(archive) as handle:
            members = handle.infolist()
            for member in members:
                why = _unsafe_name(member.filename)
                kind = stat.S_IFMT(member.external_attr >> 16)
                if why is None and kind and kind not in (stat.S_IFREG, stat.S_IFDIR):
                    why = "a link or special file"
                if why:
                    raise DataError(f"{archive}: member '{member.filename}' is {why}; refusing to extract")
            return [m.filename for m in members]
    try:
        with tarfile.open(archive) as handle:
            members = handle.getmembers()
    except tarfile.TarError:
        raise DataError(f"{archive}: neither a zip nor a tar archive") from None
    for member in members:
        why = _unsafe_name(member.name)
        if why is None and not (member.isfile() or member.isdir()):
            why = "a link or special file"
        if why:
            raise DataError(f"{archive}: member '{member.name}' is {why}; refusing to extract")
    return [m.name for m in members]


def safe_extract(archive: Path, into: Path) -> None:
    """Extract archive into the folder `into` (created), after checking every member."""
    _check_members(archive)
    create_folder(into, exist_ok=True)
    try:
        if zipfile.is_zipfile(archive):
            with zipfile.ZipFile(archive) as handle:
                handle.extractall(into)
        else:
            with tarfile.open(archive) as handle:
                handle.extractall(into, filter="data")
    except (zipfile.BadZipFile, tarfile.TarError, OSError, EOFError) as err:
        raise DataError(f"{archive}: extraction failed ({err})") from None


def read_manifest(text: str, source: str) -> dict[str, str]:
    out = {}
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        parts = line.split(maxsplit=1)
        if len(parts) != 2 or len(parts[0]) != 64:
            raise DataError(f"{source}: line {number} is not '<sha256>  <path>'")
        out[parts[1].strip().removeprefix("./")] = parts[0].lower()
    return out


def _find_folders(extracted: Path, folders: list[str]) -> dict[str, Path]:
    """Where each expected folder ended up (an archive may wrap it in a parent folder)."""
    found = {}
    for name in folders:
        candidates = sorted(p for p in extracted.rglob(name) if p.is_dir())
        if candidates:
            found[name] = min(candidates, key=lambda p: len(p.parts))
    return found


def _fetch_and_extract(archive, base: str, downloads: Path, staging: Path, want: str | None, log,
                       progress: Callable[[str, int, int | None], None] | None) -> None:
    """One archive: fetched unless already there (resumed when partial), its SHA-256 checked, extracted safely."""
    source = urllib.parse.urljoin(base, archive.name)
    path = downloads / archive.name
    if path.is_symlink():
        raise DataError(f"{path}: is a symbolic link; a download is never read or written through a link (remove "
                        "it)")
    if not path.exists():
        log(f"downloading {source}")
        fetch(source, path, (lambda done, total, n=archive.name: progress(n, done, total)) if progress else None)
    want = want or archive.sha256
    if want:
        got = sha256_of(path)
        if got != want:
            remove(path)
            raise DataError(f"{source}: SHA-256 {got} does not match the expected {want}; the file was deleted")
        log(f"{archive.name}: SHA-256 verified")
    try:
        safe_extract(path, staging / archive.name)
    except DataError:
        remove(path)  # an archive that cannot be extracted safely is not kept for next time
        raise


def _verify(expected_files: dict[str, str], found: dict[str, Path], dataset: str, downloads: Path) -> None:
    """Every extracted file against the manifest's digests; on a mismatch the archives are deleted."""
    bad, missing = [], []
    for relative, digest in expected_files.items():
        folder, _, rest = relative.partition("/")
        if folder not in found:
            continue
        path = found[folder] / rest
        if not path.is_file():
            missing.append(relative)
        elif sha256_of(path) != digest:
            bad.append(relative)
    if bad or missing:
        detail = "; ".join(part for part in (
            f"{len(bad)} file(s) differ from the manifest ({', '.join(bad[:3])})" if bad else "",
            f"{len(missing)} file(s) missing ({', '.join(missing[:3])})" if missing else "") if part)
        _remove_quietly(downloads)  # not kept: the next run downloads afresh
        raise DataError(f"{dataset}: the extracted files do not verify: {detail}; the archives were deleted")


def download(dataset: str, data_dir: Path, url: str | None = None, sha256: dict[str, str] | None = None,
             manifest: Path | None = None, keep_archives: bool = False, log=print,
             progress: Callable[[str, int, int | None], None] | None = None) -> Path:
    """Fetch, verify and extract `dataset` into data_dir/<dataset>; return that folder."""
    if dataset not in DOWNLOADS:
        raise UserError(f"no download for '{dataset}'; known: {', '.join(sorted(DOWNLOADS))}")
    spec = DOWNLOADS[dataset]
    base = url or os.environ.get(f"PSKD_{dataset.upper()}_URL") or spec.base_url
    if not base.endswith("/"):
        base += "/"
    sha256 = {k: v.lower() for k, v in (sha256 or {}).items()}
    unknown = sorted(set(sha256) - {a.name for a in spec.archives})
    if unknown:
        raise UserError(f"--sha256 names {unknown}; the archives of {dataset} are "
                        f"{', '.join(a.name for a in spec.archives)}")
    data_dir = Path(data_dir).expanduser()
    target = data_dir / dataset
    present = [f for f in spec.folders if (target / f).exists()]
    if present:
        raise UserError(f"{target}: already holds {', '.join(present)}; remove it or choose another --data-dir")
    downloads = data_dir / ".downloads"
    for path in (target, downloads):
        if path.is_symlink():
            raise UserError(f"{path}: is a symbolic link; pskd downloads nothing through a link (remove it, or "
                            "choose another --data-dir)")
    try:
        create_folder(downloads, exist_ok=True)
    except LinkRefused as err:
        raise UserError(str(err)) from None
    except WriteError as err:
        raise UserError(f"{data_dir}: cannot write there ({err})") from None
    expected_files = None
    if manifest is not None:
        try:
            text = read_text(manifest, METADATA_BYTES)
        except LimitError as err:
            raise DataError(f"--manifest {manifest}: {err}") from None
        except (OSError, UnicodeDecodeError):
            raise DataError(f"--manifest {manifest}: not a readable UTF-8 text file") from None
        expected_files = read_manifest(text, str(manifest))
    elif spec.manifest:
        text = resources.files("pskd.data").joinpath("manifests", spec.manifest).read_text(encoding="utf-8")
        expected_files = read_manifest(text, spec.manifest)
    for note in spec.notes:
        log(f"note: {note}")
    staging = make_temp_folder(data_dir, f".{dataset}.")
    try:
        for archive in spec.archives:
            _fetch_and_extract(archive, base, downloads, staging, sha256.get(archive.name), log, progress)
        found = {}
        for archive in spec.archives:
            found.update(_find_folders(staging / archive.name, [f for f in spec.folders if f not in found]))
        absent = [f for f in spec.folders if f not in found]
        if absent:
            raise DataError(f"the archives of {dataset} hold no {', '.join(absent)} folder")
        if expected_files is not None:
            _verify(expected_files, found, dataset, downloads)
            log(f"{len(expected_files)} files verified against the manifest")
        create_folder(target, exist_ok=True)
        for name in spec.folders:
            _move_in(found[name], target / name, data_dir)
    finally:
        _remove_quietly(staging)
    if not keep_archives:
        _remove_quietly(downloads)
    return target


def _move_in(source: Path, target: Path, data_dir: Path) -> None:
    """An extracted folder into the dataset's folder (the same file system: a rename), never over anything nor
    through a link below the data root."""
    if os.path.lexists(target):
        raise DataError(f"{target}: appeared while downloading; remove it and run the command again")
    try:
        rename(source, target, root=data_dir)
    except (OSError, WriteError) as err:
        raise DataError(f"{target}: cannot move the extracted files there ({getattr(err, 'strerror', None) or err})") \
            from None


def _remove_quietly(path: Path) -> None:
    try:
        remove(path)
    except WriteError:
        pass
