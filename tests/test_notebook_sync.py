"""Every notebooks/NN_name.py (the source) and NN_name.ipynb (executed, stored) pair agrees.

Both files are read with jupytext and compared cell by cell (type, source, tags and nbgrader's
metadata, which the py:percent source keeps on its ``# %%`` lines), so editing
one without ``jupytext --sync`` fails CI. Fix with: ``.venv/bin/jupytext --sync notebooks/*.py``.
Solution cells answer the exercise posed above them.
"""

import re
from pathlib import Path

import jupytext
import pytest

NOTEBOOKS = Path(__file__).resolve().parent.parent / "notebooks"
PAIRS = sorted(p for p in NOTEBOOKS.glob("[0-9][0-9]_*.py"))


def _cells(path: Path) -> list[tuple[str, str, list, dict]]:
    """Type, source, tags and nbgrader metadata (points, grade ids) of each cell."""
    nb = jupytext.read(path)
    return [
        (c.cell_type, c.source.strip(), sorted(c.metadata.get("tags", [])),
         dict(c.metadata.get("nbgrader", {})))
        for c in nb.cells
    ]  # fmt: skip


def test_every_notebook_has_a_pair():
    py = {p.stem for p in PAIRS}
    ipynb = {p.stem for p in NOTEBOOKS.glob("[0-9][0-9]_*.ipynb")}
    assert py == ipynb, f"unpaired notebooks: {sorted(py ^ ipynb)}"


@pytest.mark.parametrize("source", PAIRS, ids=lambda p: p.stem)
def test_pair_in_sync(source: Path):
    stored = source.with_suffix(".ipynb")
    a, b = _cells(source), _cells(stored)
    assert len(a) == len(b), (
        f"{source.name}: {len(a)} cells, {stored.name}: {len(b)}; run jupytext --sync"
    )
    for i, (ca, cb) in enumerate(zip(a, b, strict=True)):
        assert ca == cb, (
            f"cell {i} differs between {source.name} and {stored.name}; run jupytext --sync"
        )


@pytest.mark.parametrize("source", PAIRS, ids=lambda p: p.stem)
def test_solutions_follow_their_exercise(source: Path):
    """Exercise convention: each solution cell is tagged and answers the exercise posed in the
    markdown cell before it (the exercises may sit anywhere in the notebook)."""
    cells = jupytext.read(source).cells
    for i, c in enumerate(cells):
        if "solution" not in c.metadata.get("tags", []):
            continue
        before = [p for p in cells[:i] if p.cell_type == "markdown"]
        question = re.compile(r"Exercise|^\*\*\d", re.M)  # "**Exercise 3.**" or "**3.**"
        assert before and question.search(before[-1].source), (
            f"{source.name}: solution cell {i} follows no exercise question"
        )
