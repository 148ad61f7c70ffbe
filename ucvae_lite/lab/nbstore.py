"""How the notebooks are stored: solution cells collapsed and without outputs.

    python -m ucvae_lite.lab.nbstore notebooks/01_iwae_augmentation.ipynb ...

Run it after executing notebooks in place (``make main`` does): every solution cell (tagged
``solution``, or nbgrader metadata ``solution: true``) loses its outputs and execution count
and is marked ``jupyter.source_hidden``, so a learner who opens the stored notebook sees the
question, the collapsed answer and, in the test cell below it, whether it passes.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def is_solution(cell) -> bool:
    meta = cell.get("metadata", {})
    return "solution" in meta.get("tags", []) or bool(meta.get("nbgrader", {}).get("solution"))


def hide_solutions(nb: dict) -> int:
    """Clear the outputs of the solution cells of ``nb`` (a notebook as JSON) and collapse
    them, in place; returns how many solution cells there are."""
    count = 0
    for cell in nb["cells"]:
        if not is_solution(cell):
            continue
        count += 1
        if cell["cell_type"] == "code":
            cell["outputs"], cell["execution_count"] = [], None
        cell.setdefault("metadata", {}).setdefault("jupyter", {})["source_hidden"] = True
    return count


def read(path: Path) -> dict:
    return json.loads(Path(path).read_text(encoding="utf-8"))


def write(nb: dict, path: Path) -> None:
    """As nbformat writes notebooks (sorted keys, indent 1, UTF-8), so diffs stay small."""
    text = json.dumps(nb, sort_keys=True, indent=1, ensure_ascii=False)
    Path(path).write_text(text + "\n", encoding="utf-8")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m ucvae_lite.lab.nbstore",
        description="Collapse the solution cells of stored notebooks and clear their outputs.",
    )
    parser.add_argument("notebooks", nargs="+", type=Path, help="*.ipynb files, changed in place")
    args = parser.parse_args(argv)
    for path in args.notebooks:
        if not path.exists():
            print(f"error: {path} not found", file=sys.stderr)
            return 2
        nb = read(path)
        n = hide_solutions(nb)
        write(nb, path)
        print(f"{path}: {n} solution cell{'s' * (n != 1)} collapsed, outputs cleared")
    return 0


if __name__ == "__main__":
    sys.exit(main())
