"""Student copies of the notebooks: the same notebooks with their solutions taken out.

    python -m ucvae_lite.student OUTDIR [--source notebooks/] [--keep-outputs] [--no-py]

Convention the notebook authors follow: each exercise is a markdown question followed by a
code cell tagged ``solution`` (cell metadata ``tags``), and no cell outside the exercises
depends on a solution cell. In the student copy

* every code cell tagged ``solution`` becomes a stub, tagged ``exercise`` and
  ``raises-exception`` (so nbval and nbclient run past it), with its outputs cleared::

      # YOUR CODE HERE
      raise NotImplementedError("Exercise: <first line of the question above>")

  In nbgrader's format only the regions between ``### BEGIN SOLUTION`` and
  ``### END SOLUTION`` are replaced by those two lines (indented as the region was), so a
  scaffold such as the function's signature stays;
* an nbgrader test cell (metadata ``nbgrader.grade`` true, not a solution) loses its
  ``### BEGIN HIDDEN TESTS`` … ``### END HIDDEN TESTS`` region and is tagged
  ``raises-exception``: it fails until the exercise is done;

* markdown or raw cells tagged ``solution`` (written-out answers) are dropped;
* all outputs and execution counts are cleared (``--keep-outputs`` keeps those of the cells
  that are not solutions), so learners start from a clean notebook;
* a paired ``py:percent`` file is written next to each ``.ipynb`` (unless ``--no-py``).
"""

from __future__ import annotations

import argparse
import copy
import json
import re
import sys
from pathlib import Path

import nbformat

SOLUTION_TAG = "solution"
STUB_TAGS = ("exercise", "raises-exception")
STUB_TEMPLATE = "# YOUR CODE HERE\nraise NotImplementedError({message})"
DEFAULT_SOURCE = Path(__file__).resolve().parents[1] / "notebooks"


def tags(cell) -> list[str]:
    return list(cell.get("metadata", {}).get("tags", []))


def is_solution(cell) -> bool:
    return SOLUTION_TAG in tags(cell)


def is_stub(cell) -> bool:
    return cell.cell_type == "code" and all(t in tags(cell) for t in STUB_TAGS)


def is_test(cell) -> bool:
    """An nbgrader autograded test cell: ``nbgrader.grade`` true and not a solution."""
    meta = cell.get("metadata", {}).get("nbgrader", {})
    return cell.cell_type == "code" and bool(meta.get("grade")) and not is_solution(cell)


SOLUTION_REGION = re.compile(
    r"^([ \t]*)### BEGIN SOLUTION[^\n]*\n.*?^[ \t]*### END SOLUTION[^\n]*$", re.M | re.S
)
HIDDEN_TESTS = re.compile(
    r"^[ \t]*### BEGIN HIDDEN TESTS[^\n]*\n.*?^[ \t]*### END HIDDEN TESTS[^\n]*(\n|$)", re.M | re.S
)


def solution_regions(source: str) -> list[str]:
    """The text of each ``### BEGIN SOLUTION`` … ``### END SOLUTION`` region of a cell."""
    return [m.group(0) for m in SOLUTION_REGION.finditer(source)]


def strip_hidden_tests(source: str) -> str:
    """A test cell's source without its hidden tests."""
    return HIDDEN_TESTS.sub("", source).rstrip()


def _title(markdown: str | None, number: int) -> str:
    """A one-line name for exercise ``number`` from the question that precedes it."""
    for line in (markdown or "").splitlines():
        line = re.sub(r"^[#>\s*_-]+|[*_\s]+$", "", line.replace("**", "")).strip()
        if line:
            return line if len(line) <= 80 else line[:77] + "..."
    return f"exercise {number}"


def stub_source(question: str | None, number: int, source: str | None = None) -> str:
    """The stub for a solution cell: the whole cell, or only its solution regions."""
    title = _title(question, number)
    message = title if title.lower().startswith("exercise") else f"Exercise: {title}"
    stub = STUB_TEMPLATE.format(message=json.dumps(message, ensure_ascii=False))
    if source is None or not solution_regions(source):
        return stub
    return SOLUTION_REGION.sub(
        lambda m: "\n".join(m.group(1) + line for line in stub.splitlines()), source
    )


def student_notebook(nb, keep_outputs: bool = False):
    """A copy of ``nb`` with each solution cell replaced by a stub; returns (copy, n_stubs)."""
    nb = copy.deepcopy(nb)
    cells, question, n_stubs = [], None, 0
    for cell in nb.cells:
        if is_solution(cell):
            if cell.cell_type != "code":
                continue  # a written-out answer: not in the student copy
            n_stubs += 1
            meta = {k: v for k, v in cell.metadata.items() if k not in ("jupyter", "collapsed")}
            meta["tags"] = [t for t in tags(cell) if t != SOLUTION_TAG] + [
                t for t in STUB_TAGS if t not in tags(cell)
            ]
            source = stub_source(question, n_stubs, cell.source)
            stub = nbformat.v4.new_code_cell(source, metadata=meta)
            if "id" in cell:
                stub["id"] = cell["id"]
            cells.append(stub)
            continue
        if cell.cell_type == "markdown":
            question = cell.source
        if is_test(cell):
            cell.source = strip_hidden_tests(cell.source)
            if "raises-exception" not in tags(cell):
                cell.metadata["tags"] = tags(cell) + ["raises-exception"]
            cell.outputs, cell.execution_count = [], None
        if cell.cell_type == "code" and not keep_outputs:
            cell.outputs, cell.execution_count = [], None
        cells.append(cell)
    nb.cells = cells
    if not keep_outputs:
        nb.metadata.pop("widgets", None)  # saved widget state belongs with the outputs
    nb.metadata.setdefault("jupytext", {})["formats"] = "ipynb,py:percent"
    return nb, n_stubs


def write_student_copies(
    outdir: Path, source: Path = DEFAULT_SOURCE, keep_outputs: bool = False, py: bool = True
) -> dict[Path, int]:
    """Write the student copy of every ``source/*.ipynb`` into ``outdir``; {path: n_stubs}."""
    notebooks = sorted(Path(source).glob("*.ipynb"))
    if not notebooks:
        raise FileNotFoundError(f"no notebooks (*.ipynb) in {source}")
    outdir = Path(outdir)
    if outdir.resolve() == Path(source).resolve():
        raise ValueError("OUTDIR must differ from the source folder (it would overwrite it)")
    outdir.mkdir(parents=True, exist_ok=True)
    written = {}
    for path in notebooks:
        nb, n_stubs = student_notebook(nbformat.read(path, as_version=4), keep_outputs)
        target = outdir / path.name
        nbformat.write(nb, target)
        if py:
            import jupytext

            jupytext.write(nb, target.with_suffix(".py"), fmt="py:percent")
        written[target] = n_stubs
    return written


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m ucvae_lite.student",
        description="Write each notebook without its solutions (cells tagged 'solution' "
        "become stubs that raise NotImplementedError), to hand out to a class.",
    )
    parser.add_argument("outdir", type=Path, help="folder for the student copies")
    parser.add_argument(
        "--source", type=Path, default=DEFAULT_SOURCE, help="folder of *.ipynb (the notebooks)"
    )
    parser.add_argument(
        "--keep-outputs", action="store_true", help="keep outputs of non-solution cells"
    )
    parser.add_argument("--no-py", action="store_true", help="skip the paired py:percent files")
    args = parser.parse_args(argv)
    try:
        written = write_student_copies(args.outdir, args.source, args.keep_outputs, not args.no_py)
    except (FileNotFoundError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    for path, n in written.items():
        print(f"{path}: {n} exercise{'s' * (n != 1)}" + ("" if n else " (no 'solution' cells)"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
