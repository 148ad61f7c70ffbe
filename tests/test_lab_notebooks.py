"""The lab's notebooks (00-04) as a learner meets them: how they open and close, exercises in
nbgrader's format with a checker, solutions collapsed and stored without outputs, and no
overlong lines in their sources; and ``nbstore``, which stores them that way."""

from __future__ import annotations

import json
import re
from pathlib import Path

import jupytext
import pytest

from classroom import assignments
from ucvae_lite.lab import nbstore

ROOT = Path(__file__).resolve().parents[1]
LAB = sorted((ROOT / "notebooks").glob("0[0-4]_*.py"))
IDS = [p.stem for p in LAB]


def _cells(path: Path):
    return jupytext.read(path).cells


@pytest.mark.parametrize("path", LAB, ids=IDS)
def test_opens_with_objectives_time_and_modes(path):
    first = _cells(path)[0].source
    for needed in ("Learning objectives", "Prerequisites", "Study time", "UCVAE_FAST=1",
                   "UCVAE_FAST=0"):  # fmt: skip
        assert needed in first, f"{path.name}: the first cell should state {needed!r}"
    assert re.search(r"Study time: about \d+ minutes", first)


@pytest.mark.parametrize("path", LAB, ids=IDS)
def test_ends_with_summary_and_references(path):
    last = _cells(path)[-1].source
    assert "## Summary" in last and "## References" in last
    assert "Ruiz" in last  # every notebook cites the paper it teaches


@pytest.mark.parametrize("path", LAB, ids=IDS)
def test_exercises_have_a_hidden_solution_and_a_checker(path):
    cells = _cells(path)
    # (written answers, graded by hand, are markdown solution cells: not exercises with checkers)
    solutions = [
        i for i, c in enumerate(cells)
        if c.cell_type == "code" and c.metadata.get("nbgrader", {}).get("solution")
    ]  # fmt: skip
    assert solutions, f"{path.name}: no exercises"
    ids = set()
    for i in solutions:
        sol, test = cells[i], cells[i + 1]
        meta = sol.metadata
        assert "solution" in meta.get("tags", []) and meta["jupyter"]["source_hidden"]
        assert "### BEGIN SOLUTION" in sol.source and "### END SOLUTION" in sol.source
        grade = test.metadata.get("nbgrader", {})
        assert grade.get("grade") and grade.get("points", 0) > 0, f"{path.name}: cell {i + 1}"
        assert "checks.check_" in test.source, "each exercise is checked by ucvae_lite.lab.checks"
        assert assignments.scored_points(test.source) == grade["points"], (
            "partial credit: end with score"
        )
        assert grade["grade_id"] == meta["nbgrader"]["grade_id"] + "_test"
        ids |= {grade["grade_id"], meta["nbgrader"]["grade_id"]}
    assert len(ids) == 2 * len(solutions), "grade ids are unique"


@pytest.mark.parametrize("path", LAB, ids=IDS)
def test_written_questions_have_a_graded_answer_cell_with_a_rubric(path):
    """Each "Predict" is followed by an answer cell that nbgrader grades by hand: a markdown
    solution + grade cell with points, collapsed, holding a model answer and a rubric (behind
    <details>, so that the site shows it collapsed too); the release replaces it wholesale."""
    cells = _cells(path)
    answers = [
        i for i, c in enumerate(cells)
        if c.cell_type == "markdown" and c.metadata.get("nbgrader", {}).get("solution")
    ]  # fmt: skip
    predicts = [i for i, c in enumerate(cells) if "**Predict.**" in c.source]
    assert predicts and all(i + 1 in answers for i in predicts), f"{path.name}: unanswered"
    ids = set()
    for i in answers:
        meta, text = cells[i].metadata, cells[i].source
        grade = meta["nbgrader"]
        assert grade.get("grade") and grade.get("points", 0) > 0 and not grade.get("locked")
        assert meta["jupyter"]["source_hidden"] and "solution" not in meta.get("tags", [])
        assert "### BEGIN" not in text, "a markdown answer is cleared whole, without markers"
        assert text.startswith("<details>") and text.rstrip().endswith("</details>")
        assert "Model answer" in text
        rubric = re.search(r"\*\*Rubric \((\d+) points?\)", text)
        assert rubric and int(rubric.group(1)) == grade["points"], f"{path.name}: cell {i}"
        question = cells[i - 1].source
        assert "**Predict.**" in question or "Exercise" in question, f"{path.name}: cell {i}"
        ids.add(grade["grade_id"])
    assert len(ids) == len(answers), "grade ids are unique"


def test_the_lab_has_the_exercises_the_issue_asks_for():
    text = "".join(p.read_text() for p in LAB)
    for checker in ("check_maximal_coupling", "check_cis_step", "check_coupled_step",
                    "check_hkm", "check_iwae_bound", "check_iwae_gradient",
                    "03_expected_tau_S4", "03_degenerate_tail_S10_t10"):  # fmt: skip
        assert checker in text, checker
    assert text.count("**Predict.**") >= 5


@pytest.mark.parametrize("path", LAB, ids=IDS)
def test_stored_solutions_are_collapsed_without_outputs(path):
    nb = json.loads(path.with_suffix(".ipynb").read_text())
    for cell in nb["cells"]:
        if nbstore.is_solution(cell):
            assert cell["metadata"]["jupyter"]["source_hidden"]
            assert cell.get("outputs", []) == [], f"{path.name}: a solution shows its output"
        elif cell["cell_type"] == "code":
            errors = [o for o in cell["outputs"] if o["output_type"] == "error"]
            assert not errors, f"{path.name}: a stored cell failed"


@pytest.mark.parametrize("path", LAB, ids=IDS)
def test_source_lines_fit(path):
    """100 characters, except jupytext's cell markers (nbgrader metadata makes them long)."""
    long = [
        ln for ln in path.read_text().splitlines() if len(ln) > 100 and not ln.startswith("# %%")
    ]
    assert not long, f"{path.name}: lines over 100 characters: {long[:3]}"


def test_nbstore_hides_solutions(tmp_path, capsys):
    nb = {
        "cells": [
            {"cell_type": "code", "metadata": {"tags": ["solution"]}, "outputs": [{"x": 1}],
             "execution_count": 3, "source": ["a = 1"]},
            {"cell_type": "code", "metadata": {"nbgrader": {"solution": True}}, "outputs": [],
             "execution_count": None, "source": ["b = 2"]},
            {"cell_type": "code", "metadata": {}, "outputs": [{"y": 2}], "execution_count": 4,
             "source": ["print(a)"]},
        ],
        "metadata": {}, "nbformat": 4, "nbformat_minor": 5,
    }  # fmt: skip
    path = tmp_path / "n.ipynb"
    nbstore.write(nb, path)
    assert nbstore.main([str(path)]) == 0
    assert "2 solution cells" in capsys.readouterr().out
    out = nbstore.read(path)["cells"]
    assert out[0]["outputs"] == [] and out[0]["execution_count"] is None
    assert all(c["metadata"]["jupyter"]["source_hidden"] for c in out[:2])
    assert out[2]["outputs"] == [{"y": 2}] and "jupyter" not in out[2]["metadata"]
    assert nbstore.main([str(tmp_path / "missing.ipynb")]) == 2
