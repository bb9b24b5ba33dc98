import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def real_data_root() -> Path | None:
    """$PSKD_DATA_DIR, else the ../shared/data beside the repository (as in CI)."""
    candidates = [os.environ.get("PSKD_DATA_DIR"), str(REPO.parent / "shared" / "data")]
    for candidate in candidates:
        if candidate and (Path(candidate) / "utd_mhad" / "Inertial").is_dir():
            return Path(candidate)
    return None


def run_cli(args: list[str], capsys) -> tuple[int, str, str]:
    """The `pskd` command in this process: (exit code, stdout, stderr)."""
    from pskd.cli import main

    try:
        main(args)
        code = 0
    except SystemExit as done:
        code = done.code
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture(scope="session")
def utd_root() -> Path:
    root = real_data_root()
    if root is None:
        pytest.skip("real UTD-MHAD not found: set PSKD_DATA_DIR or place shared/data beside the repository")
    return root


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path_factory, monkeypatch):
    """Tests never write into the user's ~/.cache; one cache folder for the whole session."""
    monkeypatch.setenv("PSKD_CACHE_DIR", str(tmp_path_factory.getbasetemp() / "cache"))
