"""docs/api.md's examples, run as written there, in order, in one namespace (as cells of one notebook)."""

from __future__ import annotations

import re

import pytest
from conftest import REPO

EXAMPLES = ["train", "dataset", "model", "estimator", "metrics", "notebook_model"]


def docs_examples() -> dict[str, str]:
    text = (REPO / "docs" / "api.md").read_text(encoding="utf-8")
    return dict(re.findall(r"<!-- example: (\w+) -->\n```python\n(.*?)```", text, re.S))


def test_every_example_of_the_page_is_run_here():
    assert list(docs_examples()) == EXAMPLES


@pytest.fixture(scope="module")
def notebook(tmp_path_factory):
    """One namespace the examples share, like a notebook's cells; `out` is where they write."""
    return {"out": tmp_path_factory.mktemp("api")}


@pytest.mark.parametrize("name", EXAMPLES)
def test_the_documented_example_runs(notebook, name):
    exec(compile(docs_examples()[name], f"docs/api.md example {name}", "exec"), notebook)  # noqa: S102

