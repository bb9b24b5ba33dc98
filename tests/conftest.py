import os
from pathlib import Path

import numpy as np
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


# A small student trained once for the deployment tests (tests/test_deploy.py, tests/test_live.py).
SUBJECTS, TRIALS, CLASSES = 6, 6, 4
TRAIN = [
    "data.dataset=synthetic", f"data.synthetic.subjects={SUBJECTS}", f"data.synthetic.trials={TRIALS}",
    f"data.synthetic.classes={CLASSES}", "preprocess.sensor_length=64", "train.epochs=30", "train.refit=false",
    "student.options.widths=[16,32]", "student.options.embedding_dim=32", "progress=false", "threads=1",
]


@pytest.fixture(scope="session")
def trained(tmp_path_factory):
    """A small student trained on synthetic data (odd subjects train, even subjects test), and its export."""
    pytest.importorskip("onnxruntime", reason="the export extra (onnx, onnxruntime) is not installed")
    from pskd.config import load_config
    from pskd.deploy.export import export_run
    from pskd.pipeline import run

    out = tmp_path_factory.mktemp("deploy") / "run"
    run(load_config(REPO / "configs/utd_mhad/student_ce.yaml", TRAIN), out, log=lambda *a, **k: None)
    report = export_run(out, int8=True, log=lambda *a, **k: None)
    return out, report


def recording_of(actions: list[int], per_action: int = 3) -> tuple[np.ndarray, list[tuple[int, float, float]]]:
    """Test subjects' raw clips (50 Hz, g) of each action, back to back: the signal and its true segments."""
    from pskd.data import synthetic
    from pskd.data.clip import ACCELEROMETER

    pieces, truth, t = [], [], 0.0
    test_subjects = [s for s in range(1, SUBJECTS + 1) if s % 2 == 0]
    for k, action in enumerate(actions):
        start = t
        for i in range(per_action):
            clip = synthetic.generate_clip(0, test_subjects[(k + i) % len(test_subjects)], action, 1 + i)
            pieces.append(clip.streams[ACCELEROMETER])
            t += len(pieces[-1]) / synthetic.ACCELEROMETER_RATE
        truth.append((action, start, t))
    return np.concatenate(pieces), truth
