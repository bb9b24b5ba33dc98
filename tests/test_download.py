"""`pskd download` against a local HTTP server on 127.0.0.1 serving archives built here."""

from __future__ import annotations

import hashlib
import http.server
import io
import stat
import threading
import zipfile
from pathlib import Path

import pytest
from conftest import run_cli
from test_utd_mhad import make_copy

from pskd.data import utd_mhad
from pskd.data.download import fetch, read_manifest, safe_extract
from pskd.errors import DataError

KEYS = [(a, s, t) for a in range(1, 28) for s in range(1, 9) for t in range(1, 5)
        if (a, s, t) not in utd_mhad.KNOWN_MISSING]


class Server:
    """Serves `files` (name -> bytes); honours Range unless told not to; records the requests."""

    def __init__(self):
        self.files: dict[str, bytes] = {}
        self.ranges = True
        self.requests: list[tuple[str, str | None]] = []
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):  # noqa: N802
                name = self.path.lstrip("/")
                server.requests.append((name, self.headers.get("Range")))
                if name not in server.files:
                    self.send_error(404, "Not Found")
                    return
                body, status = server.files[name], 200
                wanted = self.headers.get("Range")
                if wanted and server.ranges:
                    start = int(wanted.removeprefix("bytes=").split("-")[0])
                    if start >= len(body):
                        self.send_error(416, "Range Not Satisfiable")
                        return
                    body, status = body[start:], 206
                self.send_response(status)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args):
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


def zip_folder(folder: Path, prefix: str = "") -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as handle:
        for path in sorted(folder.rglob("*")):
            handle.write(path, prefix + str(path.relative_to(folder.parent)))
    return buffer.getvalue()


@pytest.fixture(scope="module")
def release(tmp_path_factory):
    """The two archives of a made-up UTD-MHAD release and the manifest of its files."""
    root = make_copy(tmp_path_factory.mktemp("release") / "utd_mhad", KEYS)
    manifest = "".join(
        f"{hashlib.sha256(p.read_bytes()).hexdigest()}  ./{p.relative_to(root)}\n"
        for p in sorted(root.rglob("*.mat"))
    )
    path = tmp_path_factory.mktemp("manifest") / "files.sha256"
    path.write_text(manifest)
    # Skeleton.zip wraps its folder in a parent folder, as some mirrors do
    return {"Skeleton.zip": zip_folder(root / "Skeleton", "UTD-MHAD/"), "Inertial.zip": zip_folder(root / "Inertial")}, path


@pytest.fixture
def server():
    running = Server()
    yield running
    running.close()


def digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def test_download_verifies_and_extracts_a_usable_copy(release, server, tmp_path, capsys):
    archives, manifest = release
    server.files.update(archives)
    args = ["download", "utd_mhad", "--data-dir", str(tmp_path), "--url", server.url, "--manifest", str(manifest)]
    for name, data in archives.items():
        args += ["--sha256", f"{name}={digest(data)}"]
    code, out, err = run_cli(args, capsys)
    assert code == 0, err
    assert "SHA-256 verified" in err and "1722 files verified" in err
    info, clips = utd_mhad.load(tmp_path / "utd_mhad")
    assert len(clips) == 861
    assert not (tmp_path / ".downloads").exists()  # archives removed once extracted
    assert sorted(p.name for p in tmp_path.iterdir()) == ["utd_mhad"]  # no staging folder left
    # a second download into the same place is refused instead of overwriting
    code, _, err = run_cli(args, capsys)
    assert code == 2 and "already holds" in err


def test_a_corrupted_archive_is_refused_and_deleted(release, server, tmp_path, capsys):
    archives, manifest = release
    server.files.update(archives)
    good = digest(archives["Inertial.zip"])
    server.files["Inertial.zip"] = archives["Inertial.zip"][:-100] + bytes(100)  # damaged in transit
    code, _, err = run_cli(["download", "utd_mhad", "--data-dir", str(tmp_path), "--url", server.url,
                            "--manifest", str(manifest), "--sha256", f"Inertial.zip={good}"], capsys)
    last = err.strip().splitlines()[-1]
    assert code == 2 and last.startswith("pskd: error:") and "does not match the expected" in last
    assert not (tmp_path / ".downloads" / "Inertial.zip").exists()
    assert not (tmp_path / "utd_mhad").exists()


def test_without_a_known_digest_the_manifest_still_catches_a_changed_file(release, server, tmp_path, capsys):
    archives, manifest = release
    server.files.update(archives)
    lines = manifest.read_text().splitlines()
    lines[5] = "0" * 64 + lines[5][64:]  # the manifest expects something else for one file
    (tmp_path / "m.sha256").write_text("\n".join(lines) + "\n")
    code, _, err = run_cli(["download", "utd_mhad", "--data-dir", str(tmp_path / "d"), "--url", server.url,
                            "--manifest", str(tmp_path / "m.sha256")], capsys)
    assert code == 2 and "1 file(s) differ from the manifest" in err
    assert not (tmp_path / "d" / "utd_mhad").exists() and not (tmp_path / "d" / ".downloads").exists()


def test_a_path_traversal_member_is_refused_before_anything_is_written(server, tmp_path, capsys):
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as handle:
        handle.writestr("Skeleton/a1_s1_t1_skeleton.mat", b"x")
        handle.writestr("../../escaped.txt", b"gotcha")
    server.files["Skeleton.zip"] = buffer.getvalue()
    server.files["Inertial.zip"] = buffer.getvalue()
    target = tmp_path / "a" / "b"
    code, _, err = run_cli(["download", "utd_mhad", "--data-dir", str(target), "--url", server.url], capsys)
    assert code == 2 and "'../../escaped.txt' is a '..' component" in err
    assert not list(tmp_path.rglob("escaped.txt"))
    assert not (target / "utd_mhad").exists()


def test_links_and_absolute_paths_are_refused(tmp_path):
    link = zipfile.ZipInfo("Skeleton/link")
    link.external_attr = (stat.S_IFLNK | 0o777) << 16
    for member, message in ((link, "a link or special file"), (zipfile.ZipInfo("/etc/evil"), "an absolute path")):
        path = tmp_path / "bad.zip"
        with zipfile.ZipFile(path, "w") as handle:
            handle.writestr(member, b"/etc/passwd")
        with pytest.raises(DataError, match=message):
            safe_extract(path, tmp_path / "out")
        assert not (tmp_path / "out").exists()
    import tarfile

    path = tmp_path / "bad.tar"
    with tarfile.open(path, "w") as handle:
        info = tarfile.TarInfo("Inertial/link")
        info.type, info.linkname = tarfile.SYMTYPE, "/etc/passwd"
        handle.addfile(info)
    with pytest.raises(DataError, match="a link or special file"):
        safe_extract(path, tmp_path / "out")


def test_a_partial_download_resumes_with_a_range_request(server, tmp_path):
    payload = bytes(range(256)) * 1000
    server.files["big.bin"] = payload
    target = tmp_path / "big.bin"
    (tmp_path / "big.bin.part").write_bytes(payload[:100_000])
    fetch(server.url + "big.bin", target)
    assert target.read_bytes() == payload and not (tmp_path / "big.bin.part").exists()
    assert server.requests[-1] == ("big.bin", "bytes=100000-")
    # a server that ignores the range sends everything: the download starts again, still whole
    server.ranges = False
    target.unlink()
    (tmp_path / "big.bin.part").write_bytes(payload[:5000])
    fetch(server.url + "big.bin", target)
    assert target.read_bytes() == payload


def test_server_errors_are_one_line(server, tmp_path, capsys):
    code, _, err = run_cli(["download", "utd_mhad", "--data-dir", str(tmp_path), "--url", server.url], capsys)
    assert code == 2 and "HTTP 404" in err and err.strip().splitlines()[-1].startswith("pskd: error:")
    code, _, err = run_cli(["download", "utd_mhad", "--data-dir", str(tmp_path), "--sha256", "x=1"], capsys)
    assert code == 2 and "expected NAME=<64 hex digits>" in err
    code, _, err = run_cli(["download", "kinetics", "--data-dir", str(tmp_path)], capsys)
    assert code == 2 and "no download for 'kinetics'" in err


def test_the_shipped_manifest_matches_the_real_copy(utd_root):
    from importlib import resources

    text = resources.files("pskd.data").joinpath("manifests", "utd_mhad.sha256").read_text()
    manifest = read_manifest(text, "utd_mhad.sha256")
    assert len(manifest) == 1722
    root = utd_mhad.resolve_root(utd_root)
    for relative in list(manifest)[::97]:  # a sample: hashing all 1,722 files is the download's job
        assert hashlib.sha256((root / relative).read_bytes()).hexdigest() == manifest[relative]
