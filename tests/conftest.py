import os
from pathlib import Path

import numpy as np
import pytest
from hypothesis import settings

REPO = Path(__file__).resolve().parents[1]

# Hypothesis profiles: `ci` (the default) and `long`, which multiplies the examples of the command fuzzers
# (tests/fuzzing.py) by 20: PSKD_FUZZ_PROFILE=long (or PSKD_FUZZ=long, or --hypothesis-profile=long).
settings.register_profile("ci", deadline=None)
settings.register_profile("long", deadline=None, max_examples=2000)
settings.load_profile("long" if "long" in (os.environ.get("PSKD_FUZZ_PROFILE"), os.environ.get("PSKD_FUZZ"))
                      else "ci")


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


# A tiny finished run, exported (fp32 and int8), and an evaluation of it: what the command fuzzers mutate.
FUZZ_CONFIG = {
    "name": "fuzz", "method": "ce", "threads": 1, "progress": False,
    "data": {"dataset": "synthetic", "synthetic": {"subjects": 6, "trials": 4, "classes": 4}},
    "preprocess": {"sensor_length": 32, "skeleton_length": 16},
    "student": {"name": "compact_cnn", "options": {"widths": [8, 16], "embedding_dim": 16}},
    "train": {"epochs": 1, "batch_size": 8, "refit": False},
}


@pytest.fixture(scope="session")
def fuzz_base(tmp_path_factory) -> dict[str, Path]:
    """{run: a finished run with its export/ (fp32, int8), evaluation: an evaluation of it, config: its config,
    recording: a CSV recording}, made once per session."""
    pytest.importorskip("onnxruntime", reason="the export extra (onnx, onnxruntime) is not installed")
    import yaml

    from pskd.config import build_config
    from pskd.deploy.evaluate import evaluate_model
    from pskd.deploy.export import export_run
    from pskd.pipeline import run

    base = tmp_path_factory.mktemp("fuzz-base")
    quiet = lambda *a, **k: None  # noqa: E731
    run(build_config(FUZZ_CONFIG), base / "run", log=quiet)
    export_run(base / "run", int8=True, max_int8_drop=1.0, log=quiet)
    evaluate_model(base / "run", "test", base / "evaluation", [], log=quiet)
    (base / "config.yaml").write_text(yaml.safe_dump(FUZZ_CONFIG))
    np.savetxt(base / "recording.csv", np.random.default_rng(0).normal(size=(400, 3)), delimiter=",", fmt="%.4f")
    return {"run": base / "run", "evaluation": base / "evaluation", "config": base / "config.yaml",
            "recording": base / "recording.csv"}
