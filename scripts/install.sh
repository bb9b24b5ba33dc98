#!/usr/bin/env bash
# Install pskd into ./.venv: PyTorch's CPU build first (a bare `torch` requirement would pull several GB of
# CUDA packages), then the package with its test, export, LiteRT and docs extras (PSKD_EXTRAS chooses others, e.g.
# PSKD_EXTRAS=dev,export leaves LiteRT out: its tests then skip; docs, a few MB of pure Python, is what .ci/run's
# `mkdocs build --strict` needs). Safe to run again.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3.11}
command -v "$PYTHON" >/dev/null || PYTHON=python3
[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
.venv/bin/python -m pip install --quiet --upgrade pip
# Set TORCH_SPEC to choose another build (e.g. a CUDA one on a GPU machine); any torch >= 2.2 works.
.venv/bin/python -m pip install --quiet "${TORCH_SPEC:-torch==2.13.0}"
.venv/bin/python -m pip install --quiet -e ".[${PSKD_EXTRAS:-dev,export,litert,docs}]" "${TORCH_SPEC:-torch==2.13.0}"
.venv/bin/pskd --version
