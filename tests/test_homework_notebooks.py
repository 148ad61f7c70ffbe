"""The homework notebooks (05, 06) keep the course's conventions.

* They open with learning objectives, prerequisites, a study time and how to switch fast/full
  mode, and end with a summary and references.
* Each exercise is in nbgrader's format: a solution cell (``solution: true``, tagged
  ``solution``, collapsed, the answer between ``### BEGIN/END SOLUTION``) followed by a locked
  test cell with points that calls a checker from ``ucvae_lite.lab.checks``.
* Each written question (every "Predict, then check" and every written exercise) is answered
  in a manually graded markdown cell (``grade`` and ``solution`` true, points), collapsed, whose
  solution region holds a model answer and a rubric for those points.
* The stored notebooks show no solution output, and 05 loads the shipped models by default.
"""

import json
from pathlib import Path

import jupytext
import pytest

from classroom import assignments

NOTEBOOKS = Path(__file__).resolve().parent.parent / "notebooks"
HOMEWORK = ["05_training", "06_when_practical"]


def cells(stem: str):
    return jupytext.read(NOTEBOOKS / f"{stem}.py").cells


@pytest.mark.parametrize("stem", HOMEWORK)
def test_opens_with_objectives_and_ends_with_summary_and_references(stem):
    c = cells(stem)
    head = c[0].source
    for part in ("**Learning objectives.**", "**Prerequisites.**", "**Study time", "UCVAE_FAST"):
        assert part in head, f"{stem}: the first cell lacks {part}"
    markdown = [x.source for x in c if x.cell_type == "markdown"]
    assert any(s.lstrip().startswith("## Summary") for s in markdown[-3:])
    references = next(s for s in markdown if "## References" in s)
    for author in ("Burda", "Ruiz", "Jacob"):
        assert author in references, f"{stem}: no reference to {author}"


@pytest.mark.parametrize("stem", HOMEWORK)
def test_exercises_in_nbgrader_format_with_checkers(stem):
    c = cells(stem)
    ids = []
    solutions = [
        i for i, x in enumerate(c)
        if x.cell_type == "code" and x.metadata.get("nbgrader", {}).get("solution")
    ]  # fmt: skip
    assert len(solutions) >= 3
    for i in solutions:
        sol, test = c[i], c[i + 1]
        assert "solution" in sol.metadata["tags"]
        assert sol.metadata["jupyter"]["source_hidden"] is True
        assert "### BEGIN SOLUTION" in sol.source and "### END SOLUTION" in sol.source
        assert "Exercise" in c[i - 1].source and c[i - 1].cell_type == "markdown"
        grade = test.metadata["nbgrader"]
        assert grade["grade"] is True and grade["locked"] is True and grade["points"] > 0
        assert "checks.check_" in test.source
        assert assignments.scored_points(test.source) == grade["points"], (
            "partial credit: end with score"
        )
        ids += [sol.metadata["nbgrader"]["grade_id"], grade["grade_id"]]
    assert len(ids) == len(set(ids)), f"{stem}: grade ids must be unique"


@pytest.mark.parametrize("stem", HOMEWORK)
def test_written_questions_have_manually_graded_answers(stem):
    c = cells(stem)
    prompts = [i for i, x in enumerate(c) if x.cell_type == "markdown"
               and ("Predict, then check" in x.source or "written)" in x.source)]  # fmt: skip
    assert prompts, f"{stem}: no written question found"
    ids = []
    for i in prompts:
        answer = c[i + 1]
        meta = answer.metadata.get("nbgrader", {})
        assert answer.cell_type == "markdown", f"{stem}: cell {i + 1} should take the answer"
        assert meta.get("grade") is True and meta.get("solution") is True
        assert meta.get("locked") is False and meta.get("points", 0) > 0
        assert "solution" in answer.metadata["tags"]
        assert answer.metadata["jupyter"]["source_hidden"] is True
        body = answer.source.split("### BEGIN SOLUTION", 1)[1].split("### END SOLUTION", 1)[0]
        assert "**Model answer.**" in body and f"**Rubric ({meta['points']} point" in body
        ids.append(meta["grade_id"])
    assert len(ids) == len(set(ids)), f"{stem}: grade ids must be unique"


@pytest.mark.parametrize("stem", HOMEWORK)
def test_stored_notebook_hides_solutions(stem):
    nb = json.loads((NOTEBOOKS / f"{stem}.ipynb").read_text())
    solutions = [x for x in nb["cells"] if x["metadata"].get("nbgrader", {}).get("solution")]
    assert solutions
    for cell in solutions:
        if cell["cell_type"] == "code":
            assert cell["outputs"] == [] and cell["execution_count"] is None
        assert cell["metadata"]["jupyter"]["source_hidden"] is True
    outputs = [o for x in nb["cells"] if x["cell_type"] == "code" for o in x["outputs"]]
    assert not [o for o in outputs if o["output_type"] == "error"]


def test_training_notebook_loads_the_shipped_models_by_default():
    source = (NOTEBOOKS / "05_training.py").read_text()
    assert "TRAIN_FROM_SCRATCH = False" in source and "pretrained.load(" in source
