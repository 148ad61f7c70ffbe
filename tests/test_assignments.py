"""The nbgrader assignments (``make assignments``): grading works, and it can fail.

One course directory is built for the module, in a temporary folder, by the code behind
``make assignments`` (``classroom.assignments.build``: every notebook with autograded tests,
released with nbgrader). Then

* the release hides every answer: no line of a solution region or of a hidden test survives,
  each solution cell is nbgrader's stub, outputs and widget state are gone;
* a class hands in: ``bob`` every release unchanged, ``alice`` notebook 00 with the
  solutions filled in. Their submissions to 00 come as one zip, a folder per student,
  through ``nbgrader zip_collect``; bob's others are put straight into ``submitted/bob/``.
  ``nbgrader autograde`` grades all, ``nbgrader generate_feedback`` writes the feedback on
  00. Bob scores 0 on every graded cell (each raised, or its ``checks.score`` returned 0),
  and the rest of each unchanged notebook ran without error (a learner can run it up to
  the first stub and past it); alice scores full marks on every autograded cell, her hidden
  test among them, and her written answer waits for a grader; the feedback HTML shows both
  scores. Notebook 00 has one of each kind of cell (a code exercise, a written answer, a
  test with hidden lines), so one solved assignment takes the whole path; a second one
  (03, until 0.2) ran another notebook and exercised nothing new.

That the solutions of every source notebook pass their tests, hidden ones included (what
``nbgrader validate`` checks), is checked where the source notebooks already run: nbval runs
them, and the root conftest.py grades each test cell it runs as nbgrader does
(``classroom.assignments.why_not_full_marks``, tested here). Running them a second time here
for ``nbgrader validate`` cost 186 s of CPU.

Executing the submissions is the cost (fast mode, ``UCVAE_FAST=1``): each of the 9 once,
``JOBS`` assignments at once, one thread per kernel, with nbgrader imported once
(``classroom.autograde``) rather than once per assignment (3 CPU s each). Notebook 07
alone takes a quarter of it. Outside CI the module skips when nbgrader is not installed
(``make instructor``); with ``CI=true`` it fails instead.
"""

from __future__ import annotations

import json
import re
import shutil
import zipfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from conftest import IN_CI

from classroom import assignments

ASSIGNMENTS = [
    p.stem for p in sorted(assignments.NOTEBOOKS.glob(assignments.PATTERN))
    if assignments.why_not_an_assignment(p) is None
]  # fmt: skip
SOLVED = [a for a in ("00_overview",) if a in ASSIGNMENTS]
COURSE_ID = "ucvae_lite"
JOBS = 2  # autograde processes at once (CI has 2 cores)

try:
    import nbgrader  # noqa: F401
except ImportError:
    if IN_CI:
        raise
    pytest.skip("nbgrader not installed: make instructor", allow_module_level=True)


def _read(path: Path) -> dict:
    return json.loads(path.read_text(encoding="utf-8"))


def _cells(course: Path, step: str, assignment: str, student: str = ".") -> list[dict]:
    return _read(course / step / student / assignment / f"{assignment}.ipynb")["cells"]


def _grade_id(cell: dict) -> str | None:
    return cell.get("metadata", {}).get("nbgrader", {}).get("grade_id")


@pytest.fixture(scope="module")
def course(tmp_path_factory) -> Path:
    """A course directory with every assignment released, as ``make assignments`` makes it."""
    if not ASSIGNMENTS:
        pytest.fail("no notebook has autograded test cells")
    folder = tmp_path_factory.mktemp("course")
    assert assignments.build(folder) == ASSIGNMENTS
    return folder


@pytest.fixture(scope="module")
def graded(course: Path) -> Path:
    """The course after a class handed in, was autograded and got feedback."""
    for assignment in ASSIGNMENTS:
        release = course / "release" / assignment / f"{assignment}.ipynb"
        if assignment in SOLVED:
            archive = course / "downloaded" / assignment / "archive"
            archive.mkdir(parents=True)
            with zipfile.ZipFile(archive / "submissions.zip", "w") as z:
                z.write(release, f"bob/{assignment}.ipynb")
                z.writestr(f"alice/{assignment}.ipynb", _solved(course, assignment))
        else:
            bob = course / "submitted" / "bob" / assignment
            bob.mkdir(parents=True)
            shutil.copyfile(release, bob / release.name)
    _each(course, "zip_collect", SOLVED)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("UCVAE_FAST", "1")  # the kernels nbgrader starts inherit both
        mp.setenv("OMP_NUM_THREADS", "1")  # one thread each: JOBS kernels share JOBS cores
        _autograde_every_assignment(course)
    _each(course, "generate_feedback", SOLVED, "--force")  # the only feedback the tests read
    return course


def _each(course: Path, command: str, names: list[str], *args: str) -> None:
    """``nbgrader COMMAND NAME ARGS`` for each name, JOBS at once."""
    with ThreadPoolExecutor(JOBS) as pool:
        list(pool.map(lambda a: assignments.nbgrader(course, command, a, *args), names))


def _autograde_every_assignment(course: Path) -> None:
    """``nbgrader autograde`` of every assignment, JOBS at once, the later (longer)
    notebooks first (``assignments.autograde``). The students are in the gradebook
    beforehand: each process would add them, and two processes adding the same student
    collide."""
    from nbgrader.api import Gradebook

    with Gradebook(f"sqlite:///{course / 'gradebook.db'}", COURSE_ID) as gb:
        for student in ("alice", "bob"):
            gb.update_or_create_student(student)
    assignments.autograde(course, sorted(ASSIGNMENTS, reverse=True), JOBS)


def _solved(course: Path, assignment: str) -> str:
    """The released notebook with each solution cell filled in from the source notebook."""
    source = {_grade_id(c): c["source"] for c in _cells(course, "source", assignment)}
    nb = _read(course / "release" / assignment / f"{assignment}.ipynb")
    for cell in nb["cells"]:
        if assignments.is_solution(cell):
            cell["source"] = source[_grade_id(cell)]
    return json.dumps(nb)


def _secret_lines(cells: list[dict]) -> list[str]:
    """Lines of the source's solution regions and hidden tests that appear nowhere else."""
    region = re.compile(
        r"### BEGIN (SOLUTION|HIDDEN TESTS)[^\n]*\n(.*?)### END (SOLUTION|HIDDEN TESTS)", re.S
    )
    public = "\n".join(region.sub("", "".join(c["source"])) for c in cells)
    secret = []
    for cell in cells:
        for match in region.finditer("".join(cell["source"])):
            for line in match.group(2).splitlines():
                line = line.strip()
                if len(line) >= 12 and line not in public:  # short lines could match by chance
                    secret.append(line)
    return secret


@pytest.mark.parametrize("assignment", ASSIGNMENTS)
def test_release_hides_every_answer(course: Path, assignment: str):
    source = _cells(course, "source", assignment)
    release = _cells(course, "release", assignment)
    secrets = _secret_lines(source)
    assert secrets, f"{assignment}: no solution text found in the source to look for"
    text = json.dumps(release)
    leaked = [line for line in secrets if json.dumps(line)[1:-1] in text]
    assert not leaked, f"{assignment}: answers left in the release: {leaked[:3]}"
    assert "### BEGIN" not in text and "### END" not in text
    # written answers without markers: nbgrader replaces the whole cell
    written = [
        line.strip()
        for c in source
        if c["cell_type"] == "markdown" and assignments.is_solution(c)
        and "### BEGIN SOLUTION" not in "".join(c["source"])  # else: _secret_lines has them
        for line in "".join(c["source"]).splitlines()
        if len(line.strip()) >= 12
    ]  # fmt: skip
    leaked = [line for line in written if json.dumps(line)[1:-1] in text]
    assert not leaked, f"{assignment}: model answers left in the release: {leaked[:3]}"
    stubs = [c for c in release if assignments.is_solution(c)]
    assert len(stubs) == sum(assignments.is_solution(c) for c in source)
    for cell in stubs:
        body = "".join(cell["source"])
        if cell["cell_type"] == "code":
            assert "# YOUR CODE HERE" in body and "raise NotImplementedError()" in body
        else:  # a written answer, graded by hand
            assert "YOUR ANSWER HERE" in body and "Rubric" not in body
        assert not cell["metadata"].get("jupyter", {}).get("source_hidden"), "stub collapsed"
    points = [c["metadata"]["nbgrader"]["points"] for c in release if assignments.is_graded(c)]
    assert points and points == [
        c["metadata"]["nbgrader"]["points"] for c in source if assignments.is_graded(c)
    ]
    for cell in release:
        if cell["cell_type"] == "code":
            assert cell["outputs"] == [] and cell["execution_count"] is None
    nb = _read(course / "release" / assignment / f"{assignment}.ipynb")
    assert set(nb["metadata"]) <= {"kernelspec", "language_info"}, "widget state left"


@pytest.mark.parametrize("assignment", ASSIGNMENTS)
def test_gradebook_lists_the_written_answers_with_their_points(course: Path, assignment: str):
    """Every written answer (a markdown solution cell with points) is a manually graded cell
    of the gradebook, with its points, so the formgrader asks a grader for it."""
    from nbgrader.api import Gradebook

    written = {
        _grade_id(c): c["metadata"]["nbgrader"]["points"]
        for c in _cells(course, "source", assignment)
        if c["cell_type"] == "markdown" and assignments.is_solution(c)
    }
    with Gradebook(f"sqlite:///{course / 'gradebook.db'}", COURSE_ID) as gb:
        cells = gb.find_notebook(assignment, assignment).grade_cells
        manual = {c.name: c.max_score for c in cells if c.cell_type == "markdown"}
    assert manual == written


def test_notebooks_that_are_not_assignments_are_not_released(course: Path):
    released = {p.name for p in (course / "release").iterdir()}
    assert released == set(ASSIGNMENTS)


def test_a_solution_tagged_without_nbgrader_metadata_is_refused(tmp_path: Path):
    nb = _read(assignments.NOTEBOOKS / f"{ASSIGNMENTS[0]}.ipynb")
    cell = next(c for c in nb["cells"] if assignments.is_solution(c))
    del cell["metadata"]["nbgrader"]
    path = tmp_path / f"{ASSIGNMENTS[0]}.ipynb"
    path.write_text(json.dumps(nb), encoding="utf-8")
    with pytest.raises(ValueError, match="no nbgrader metadata"):
        assignments.layout(tmp_path / "course", [path])


def test_autograde_names_the_assignments_it_could_not_grade(tmp_path: Path):
    """``assignments.autograde`` fails, naming the assignment, when nbgrader could not grade
    it (here: nothing was handed in), and grades the rest."""
    shutil.copyfile(assignments.CONFIG, tmp_path / "nbgrader_config.py")
    with pytest.raises(RuntimeError, match="autograding failed for no_such_assignment$"):
        assignments.autograde(tmp_path, ["no_such_assignment"], jobs=1)


def test_a_test_cell_short_of_full_marks_fails_the_nbval_run():
    """``nbgrader validate`` (the solutions pass their tests) is not run here: nbval runs the
    same source notebooks, and the root conftest.py holds every test cell it runs to
    nbgrader's grade (``assignments.why_not_full_marks``). That grade, on a real test cell."""
    nb = _read(assignments.NOTEBOOKS / f"{ASSIGNMENTS[0]}.ipynb")
    cell = next(c for c in nb["cells"] if assignments.is_graded(c))
    points = cell["metadata"]["nbgrader"]["points"]

    def result(value: str) -> dict:
        return {"output_type": "execute_result", "data": {"text/plain": value}, "metadata": {}}

    assert assignments.why_not_full_marks(cell, []) is None
    assert assignments.why_not_full_marks(cell, [result(str(float(points)))]) is None
    partial_credit = assignments.why_not_full_marks(cell, [result(str(points / 2))])
    assert f"{points / 2} of {float(points)} points" in partial_credit
    stderr = {"output_type": "stream", "name": "stderr", "text": "UserWarning: ..."}
    assert "0 of" in assignments.why_not_full_marks(cell, [stderr])
    error = {"output_type": "error", "ename": "AssertionError", "evalue": "", "traceback": []}
    assert "AssertionError" in assignments.why_not_full_marks(cell, [error])
    solution = next(c for c in nb["cells"] if assignments.is_solution(c))
    assert assignments.why_not_full_marks(solution, [error]) is None  # not a test cell


def _waiting_for_a_grader(course: Path, student: str, assignment: str) -> set[str]:
    """The grade cells of a submission that autograde left to a grader (no auto score)."""
    from nbgrader.api import Gradebook

    with Gradebook(f"sqlite:///{course / 'gradebook.db'}", COURSE_ID) as gb:
        notebook = gb.find_submission_notebook(assignment, assignment, student)
        return {g.name for g in notebook.grades if g.auto_score is None and g.needs_manual_grade}


def _grades(course: Path, student: str, assignment: str) -> dict[str, tuple[float, float]]:
    """{grade cell: (score, max score)} of a submission, from the gradebook."""
    from nbgrader.api import Gradebook

    with Gradebook(f"sqlite:///{course / 'gradebook.db'}", COURSE_ID) as gb:
        notebook = gb.find_submission_notebook(assignment, assignment, student)
        return {g.name: (g.score, g.max_score) for g in notebook.grades}


@pytest.mark.parametrize("assignment", ASSIGNMENTS)
def test_unchanged_release_scores_zero(graded: Path, assignment: str):
    grades = _grades(graded, "bob", assignment)
    assert grades and all(high > 0 for _, high in grades.values())
    assert {name: score for name, (score, _) in grades.items()} == dict.fromkeys(grades, 0.0)
    for i, cell in enumerate(_cells(graded, "autograded", assignment, "bob")):
        if cell["cell_type"] != "code":
            continue
        errors = [o["ename"] for o in cell["outputs"] if o["output_type"] == "error"]
        if assignments.is_graded(cell):  # checks.score prints 0.0 (nbgrader's partial grade)
            results = [
                "".join(o["data"]["text/plain"])
                for o in cell["outputs"]
                if o["output_type"] == "execute_result"
            ]
            assert errors or results == ["0.0"], f"{assignment}: graded cell {i} on the stub"
        elif not assignments.is_solution(cell):
            assert not errors, f"{assignment}: cell {i} (not an exercise) raised {errors}"


@pytest.mark.parametrize("assignment", SOLVED)
def test_submission_goes_through_collect_autograde_feedback(graded: Path, assignment: str):
    for student in ("alice", "bob"):
        path = graded / "submitted" / student / assignment / f"{assignment}.ipynb"
        assert path.is_file(), f"zip_collect did not collect {path}"
    alice = _grades(graded, "alice", assignment)
    # autograded cells score full marks; written answers wait for a grader: no auto score and
    # flagged (their ``score`` reads 0.0 in nbgrader 0.9.6 until a grader gives one)
    waiting = _waiting_for_a_grader(graded, "alice", assignment)
    auto = {name: g for name, g in alice.items() if name not in waiting}
    assert auto and all(score == high > 0 for score, high in auto.values()), alice
    manual = set(alice) - set(auto)
    source = json.loads((graded / "source" / assignment / f"{assignment}.ipynb").read_text())
    written = {
        _grade_id(c) for c in source["cells"]
        if c["cell_type"] == "markdown" and assignments.is_solution(c)
    }  # fmt: skip
    assert manual == written, (manual, written)
    total = sum(high for _, high in alice.values())
    earned = sum(high for _, high in auto.values())
    for student, score in (("alice", earned), ("bob", 0.0)):
        html = graded / "feedback" / student / assignment / f"{assignment}.html"
        assert html.is_file(), f"no feedback for {student}"
        assert f"Score: {score:.1f} / {total:.1f}" in html.read_text(encoding="utf-8")
