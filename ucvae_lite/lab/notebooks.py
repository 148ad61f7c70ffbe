"""The course notebooks, copied out of the package: ``python -m ucvae_lite notebooks DEST``.

A wheel carries the stored notebooks ``notebooks/NN_name.ipynb`` as package data in
``ucvae_lite/lab/_notebooks/``, and the committed tables that notebooks read while they run
(``TABLES``, from ``figures/``) in ``ucvae_lite/lab/_tables/``: pyproject.toml maps these two
data-only packages onto the repository's folders, which stay where they are. In a source
checkout (an editable install, or the repository on ``sys.path``) the package has neither
folder, and the repository's ``notebooks/`` and ``figures/`` are read instead.

``copy_notebooks(DEST)`` writes ``DEST/NN_name.ipynb`` and ``DEST/figures/TABLE``: the layout
of the repository, so a kernel started in DEST (JupyterLab starts it in the notebook's folder)
finds the tables under ``figures/``. Nothing already in DEST is replaced unless asked.
"""

from __future__ import annotations

import argparse
import shutil
from pathlib import Path

PATTERN = "[0-9][0-9]_*.ipynb"  # the course's notebooks, as pyproject.toml ships them
# Committed tables the notebooks read at run time (06: the variance study's ratios; 07: the
# exact-gradient studies' tables, shown when present); pyproject.toml ships exactly these.
TABLES = (
    "variance_study.csv",
    "variance_study_quick.csv",
    "gradient_error_quick.md",
    "exact_study.md",
    "exact_study_quick.md",
)
_HERE = Path(__file__).resolve().parent
_SHIPPED = (_HERE / "_notebooks", _HERE / "_tables")  # in an installed wheel
_CHECKOUT = (_HERE.parents[1] / "notebooks", _HERE.parents[1] / "figures")  # in the repository


def sources() -> list[tuple[Path, Path]]:
    """(file to copy, its path relative to DEST) for every notebook and table.

    Reads the wheel's copies when the package has them, else the repository's folders;
    ``FileNotFoundError`` when there is no notebook or a table is missing (nothing copied)."""
    notebooks, tables = _SHIPPED if _SHIPPED[0].is_dir() else _CHECKOUT
    found = sorted(notebooks.glob(PATTERN))
    if not found:
        raise FileNotFoundError(
            f"no notebooks ({PATTERN}) in {notebooks}: the package was installed without its "
            "notebooks; reinstall it from the wheel or the repository (pip install .)"
        )
    missing = [name for name in TABLES if not (tables / name).is_file()]
    if missing:
        raise FileNotFoundError(f"the notebooks' tables {missing} are missing from {tables}")
    pairs = [(path, Path(path.name)) for path in found]
    return pairs + [(tables / name, Path("figures") / name) for name in TABLES]


def conflicts(dest: Path) -> list[Path]:
    """The files ``copy_notebooks(dest)`` would replace (empty when DEST is new or unrelated).

    ``NotADirectoryError`` when DEST exists and is not a folder."""
    dest = Path(dest)
    if dest.exists() and not dest.is_dir():
        raise NotADirectoryError(f"{dest} is a file; name a folder to copy the notebooks to")
    return [dest / rel for _, rel in sources() if (dest / rel).exists()]


def _refusal(dest: Path, clash: list[Path], option: str) -> str:
    """Why nothing is copied: the files DEST already holds, and what to do (``option``)."""
    names = ", ".join(str(p.relative_to(dest)) for p in clash[:3])
    more = f" and {len(clash) - 3} more" if len(clash) > 3 else ""
    return (
        f"{dest} already holds {names}{more}; pass {option} to replace them, which loses any "
        "edits made there, or name another folder"
    )


def copy_notebooks(dest: Path, overwrite: bool = False) -> list[Path]:
    """Copy every notebook to ``dest/`` and the tables they read to ``dest/figures/``.

    Creates the folders as needed and returns the written paths, notebooks first. A file
    already there is replaced only with ``overwrite=True`` (a learner's edited notebook is
    otherwise never lost): without it, ``FileExistsError`` names the files and nothing is
    written."""
    dest = Path(dest)
    clash = conflicts(dest)
    if clash and not overwrite:
        raise FileExistsError(_refusal(dest, clash, "overwrite=True"))
    written = []
    for source, rel in sources():
        target = dest / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(source, target)
        written.append(target)
    return written


def _check(args: argparse.Namespace) -> None:
    """Refuse bad input before anything is written, as ``ConfigError``: ``cli.main`` answers
    it with one ``error:`` line and exit status 2."""
    from ucvae_lite.training.config import ConfigError

    try:
        clash = conflicts(args.dest)
    except NotADirectoryError as e:
        raise ConfigError(str(e)) from e
    if clash and not args.overwrite:
        raise ConfigError(_refusal(args.dest, clash, "--overwrite"))


def _run(args: argparse.Namespace) -> None:
    written = copy_notebooks(args.dest, overwrite=args.overwrite)
    notebooks = [p for p in written if p.suffix == ".ipynb"]
    print(f"copied {len(notebooks)} notebooks and {len(written) - len(notebooks)} tables to "
          f"{args.dest}")  # fmt: skip
    print(f"open them with: jupyter lab {args.dest}")


def add_command(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Register ``notebooks DEST [--overwrite]`` on the CLI's subparsers; returns its parser.

    Sets ``func`` and ``check`` as ``ucvae_lite.cli.main`` expects of every command."""
    p = sub.add_parser(
        "notebooks",
        help="copy the course notebooks into a folder, to open with jupyter lab",
        description="Copy the course notebooks (NN_name.ipynb) into DEST and the tables they "
        "read into DEST/figures/, then open them with: jupyter lab DEST.",
    )
    p.add_argument(
        "dest", type=Path, metavar="DEST", help="folder to copy into (created if missing)"
    )
    p.add_argument(
        "--overwrite",
        action="store_true",
        help="replace files already in DEST (edits made in those notebooks are lost)",
    )
    p.set_defaults(func=_run, check=_check)
    return p
