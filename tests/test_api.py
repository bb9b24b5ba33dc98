"""The Python API as a notebook uses it: pskd.train called again and again, old import paths still working."""

from __future__ import annotations

import subprocess
import sys

from test_distill_pipeline import TINY

import pskd


def test_pskd_train_can_be_called_three_times_in_one_process(tmp_path):
    quiet = lambda *a, **k: None  # noqa: E731
    config = {**TINY, "method": "ce"}
    runs = [pskd.train({**config, "seed": seed}, tmp_path / f"seed{seed}", log=quiet) for seed in range(3)]
    assert [out.name for out, _ in runs] == ["seed0", "seed1", "seed2"]
    assert all((out / "metrics.json").is_file() for out, _ in runs)
    assert callable(pskd.train)


def test_the_former_import_paths_warn_and_give_the_same_modules():
    code = ("import warnings, pskd\n"
            "with warnings.catch_warnings(record=True) as caught:\n"
            "    warnings.simplefilter('always')\n"
            "    import pskd.train.loop as old\n"
            "import pskd.training.loop as new\n"
            "assert old is new, (old, new)\n"
            "assert callable(pskd.train), pskd.train\n"
            "assert any(issubclass(w.category, DeprecationWarning) and 'pskd.training' in str(w.message) "
            "for w in caught)\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr


def test_every_benchmark_script_imports():
    """A benchmark the docs tell users to run must at least import (its main() is not run here)."""
    import importlib.util
    from pathlib import Path

    folder = Path(__file__).resolve().parents[1] / "benchmarks"
    sys.path.insert(0, str(folder))
    try:
        for path in sorted(folder.glob("*.py")):
            spec = importlib.util.spec_from_file_location(f"benchmark_{path.stem}", path)
            module = importlib.util.module_from_spec(spec)
            spec.loader.exec_module(module)
            assert callable(getattr(module, "main", None)), path.name
    finally:
        sys.path.remove(str(folder))
