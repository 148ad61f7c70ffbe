"""The course directory that nbgrader works in, made from the notebooks (``make assignments``).

    python -m classroom.assignments [COURSE]        # default: build/assignments

nbgrader does the work: ``nbgrader generate_assignment`` replaces each ``### BEGIN SOLUTION``
… ``### END SOLUTION`` region by ``# YOUR CODE HERE`` + ``raise NotImplementedError()``,
removes the hidden tests, clears the outputs, locks the test cells, records checksums and
points in ``COURSE/gradebook.db`` and writes ``COURSE/release/NN_name/NN_name.ipynb``. This
module only lays out nbgrader's course directory and runs it:

* ``COURSE/nbgrader_config.py``: a copy of ``classroom/nbgrader_config.py``;
* ``COURSE/source/NN_name/NN_name.ipynb``: each stored notebook ``notebooks/NN_name.ipynb``
  that has autograded test cells, one assignment per notebook.

A notebook with no nbgrader cells is not an assignment: it is skipped, and the reason
printed. A notebook with nbgrader cells that also tags a cell ``solution`` without nbgrader's
``solution`` metadata is refused (``ValueError``): nbgrader would hand that answer out.
Grades, submissions and feedback already in COURSE are left alone.
"""

from __future__ import annotations

import argparse
import ast
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = ROOT / "notebooks"
CONFIG = Path(__file__).resolve().parent / "nbgrader_config.py"
DEFAULT_COURSE = ROOT / "build" / "assignments"
PATTERN = "[0-9][0-9]_*.ipynb"


def _nbgrader_meta(cell: dict) -> dict:
    return cell.get("metadata", {}).get("nbgrader", {})


def is_graded(cell: dict) -> bool:
    """An autograded test cell: nbgrader ``grade`` true on a code cell."""
    return cell["cell_type"] == "code" and bool(_nbgrader_meta(cell).get("grade"))


def is_solution(cell: dict) -> bool:
    """A cell the learner fills: nbgrader ``solution`` true."""
    return bool(_nbgrader_meta(cell).get("solution"))


def scored_points(source: str) -> float | None:
    """The points of ``checks.score(..., points=N)`` when it is the cell's last statement
    (nbgrader reads that value as the partial grade), else None."""
    last = ast.parse(source).body[-1]
    if not (isinstance(last, ast.Expr) and isinstance(last.value, ast.Call)):
        return None
    if ast.unparse(last.value.func) != "checks.score":
        return None
    points = [k.value for k in last.value.keywords if k.arg == "points"]
    return ast.literal_eval(points[0]) if points else None


def why_not_full_marks(cell: dict, outputs: list[dict]) -> str | None:
    """None when nbgrader's autograder gives the test cell ``cell`` all its points had it
    produced ``outputs``, else why not; None too for a cell that is not an autograded test.

    nbgrader's rule (``nbgrader.utils.determine_grade``): an error, or anything on stderr,
    scores 0; a number as the cell's value (``checks.score(..., points=N)``) is its partial
    credit; anything else, full points. The nbval run of the stored notebooks applies it to
    every test cell (the root conftest.py): what ``nbgrader validate`` checks, without running
    the notebooks again. ``ImportError`` without nbgrader (``make instructor``)."""
    if not is_graded(cell) or is_solution(cell):
        return None
    import nbformat
    from nbgrader.utils import determine_grade

    score, points = determine_grade(nbformat.from_dict({**cell, "outputs": outputs}))
    if score == points:
        return None
    shown = [
        o.get("ename") or o.get("text") or o.get("data", {}).get("text/plain") for o in outputs
    ]
    return f"nbgrader gives this test cell {score} of {points} points; its outputs: {shown}"


def unmarked_solutions(nb: dict) -> list[int]:
    """Indices of cells tagged ``solution`` that nbgrader does not know as solutions."""
    return [
        i
        for i, cell in enumerate(nb["cells"])
        if "solution" in cell.get("metadata", {}).get("tags", []) and not is_solution(cell)
    ]


def why_not_an_assignment(path: Path) -> str | None:
    """None when ``path`` is released as an assignment, else why it is skipped.

    Raises ``ValueError`` for a notebook that is an assignment but would leak an answer."""
    nb = json.loads(Path(path).read_text(encoding="utf-8"))
    unmarked = unmarked_solutions(nb)
    if not any(is_graded(cell) for cell in nb["cells"]):
        if unmarked:
            return (
                f"no autograded test cells; its cells {unmarked} tagged 'solution' are not in "
                "nbgrader's format yet, so releasing it would hand out their answers"
            )
        return "no autograded test cells"
    if unmarked:
        raise ValueError(
            f"{path.name}: cells {unmarked} are tagged 'solution' but have no nbgrader "
            "metadata, so nbgrader would release them with the answer: give each the nbgrader "
            'metadata {"solution": true, "grade_id": ...} and ### BEGIN/END SOLUTION markers'
        )
    return None


def nbgrader(course: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    """Run ``nbgrader ARGS`` in the course directory, with this interpreter.

    Its folder goes first on PATH: nbgrader runs the ``alembic`` command installed beside it
    when it creates the gradebook."""
    return _run(course, ["-m", "nbgrader", *args], check)


def autograde(course: Path, assignments: list[str], jobs: int = 2) -> None:
    """``nbgrader autograde A --force`` for each of ``assignments``, ``jobs`` at once, in the
    order given (``classroom.autograde``: nbgrader is imported once, not once per
    assignment). The students must be in the gradebook already."""
    _run(course, ["-m", "classroom.autograde", "--jobs", str(jobs), *assignments], True)


def _run(course: Path, args: list[str], check: bool) -> subprocess.CompletedProcess:
    env = dict(os.environ)
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    cmd = [sys.executable, *args]
    result = subprocess.run(cmd, cwd=course, env=env, capture_output=True, text=True)
    if check and result.returncode != 0:
        raise RuntimeError(
            f"`{' '.join(args[1:])}` in {course} exited with {result.returncode}:\n"
            f"{result.stdout[-3000:]}{result.stderr[-3000:]}"
        )
    return result


def layout(course: Path, notebooks: list[Path]) -> tuple[list[str], dict[str, str]]:
    """Copy the config and each assignment's notebook into ``course``.

    Returns the assignment ids and {skipped notebook: why}."""
    if not notebooks:
        raise FileNotFoundError(f"no notebooks ({PATTERN}) to release")
    reasons = {path.stem: why_not_an_assignment(path) for path in notebooks}  # may raise
    course.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(CONFIG, course / "nbgrader_config.py")
    shutil.rmtree(course / "source", ignore_errors=True)  # a copy of notebooks/: made anew
    ids = []
    for path in notebooks:
        if reasons[path.stem] is None:
            source = course / "source" / path.stem
            source.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(path, source / path.name)
            ids.append(path.stem)
    return ids, {name: why for name, why in reasons.items() if why is not None}


def build(course: Path = DEFAULT_COURSE, notebooks: list[Path] | None = None) -> list[str]:
    """Lay out ``course`` and generate the release of every assignment; returns their ids."""
    course = Path(course).resolve()
    found = sorted(NOTEBOOKS.glob(PATTERN)) if notebooks is None else list(notebooks)
    ids, skipped = layout(course, found)
    for name, why in skipped.items():
        print(f"skipped {name}: {why}")
    if ids:
        nbgrader(course, "generate_assignment", "*", "--force")  # every folder of source/
    for assignment in ids:
        print(f"released {course / 'release' / assignment}")
    return ids


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m classroom.assignments",
        description="Release every notebook with autograded tests as an nbgrader assignment "
        "(solutions and hidden tests removed) in the course directory COURSE/release/.",
    )
    parser.add_argument(
        "course", nargs="?", type=Path, default=DEFAULT_COURSE, help="nbgrader course directory"
    )
    args = parser.parse_args(argv)
    try:
        build(args.course)
    except (FileNotFoundError, ValueError, RuntimeError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2 if not isinstance(e, RuntimeError) else 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
