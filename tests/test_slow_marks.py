"""The quick loop (``pytest -m "not slow"``) leaves out exactly what the root conftest.py
names: every notebook nbval runs, and each entry of its ``SLOW``, which must name a test file
or a test function that exists (a renamed test would otherwise drop back into the loop).
"""

from __future__ import annotations

import ast
from pathlib import Path
from types import SimpleNamespace

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def root_conftest(pytestconfig):
    """The root conftest.py as pytest loaded it (tests/conftest.py is also ``conftest``)."""
    for plugin in pytestconfig.pluginmanager.get_plugins():
        if Path(getattr(plugin, "__file__", "") or "") == ROOT / "conftest.py":
            return plugin
    pytest.fail("the root conftest.py is not loaded")


def _tests_in(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    return {n.name for n in tree.body if isinstance(n, ast.FunctionDef)}


def test_every_slow_entry_names_a_test_that_exists(root_conftest):
    entries = [e for group in root_conftest.SLOW.values() for e in group]
    assert len(entries) == len(set(entries)), "an entry is listed twice"
    for entry in entries:
        file, _, name = entry.partition("::")
        assert (ROOT / file).is_file(), f"SLOW names {file}, which does not exist"
        assert not name or name in _tests_in(ROOT / file), f"SLOW names {entry}: no such test"


@pytest.mark.parametrize(
    "nodeid,suffix,slow",
    [
        ("notebooks/03_coupled_kernels.ipynb::Cell 4", ".ipynb", True),
        ("tests/test_browser.py::test_anything", ".py", True),
        ("tests/test_cli.py::test_debug_shows_the_traceback[before]", ".py", True),
        ("tests/test_cli.py::test_debug_shows_the_traceback_more", ".py", False),
        ("tests/test_cli.py::test_bad_flag_values_are_one_line_errors_before_anything_runs[x]",
         ".py", False),
    ],
)  # fmt: skip
def test_what_is_slow(root_conftest, nodeid, suffix, slow):
    item = SimpleNamespace(nodeid=nodeid, path=ROOT / f"x{suffix}")
    assert root_conftest.is_slow(item) is slow
