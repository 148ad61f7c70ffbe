"""``python -m ucvae_lite notebooks DEST`` (``ucvae_lite.lab.notebooks``): every course
notebook is copied to DEST and the tables they read to DEST/figures/, byte for byte; a file
already in DEST (a learner's edited notebook) is never replaced unless asked, and then nothing
at all is written. Here from the checkout; tests/test_wheel.py does it from an installed wheel.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest

from ucvae_lite.lab import notebooks
from ucvae_lite.training.config import ConfigError

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((ROOT / "notebooks").glob(notebooks.PATTERN))


def _expected(dest: Path) -> list[Path]:
    tables = [dest / "figures" / name for name in notebooks.TABLES]
    return [dest / p.name for p in NOTEBOOKS] + tables


def test_copies_every_notebook_and_table_byte_for_byte(tmp_path: Path):
    dest = tmp_path / "new" / "course"  # folders are created
    written = notebooks.copy_notebooks(dest)
    assert NOTEBOOKS and written == _expected(dest)
    for path in NOTEBOOKS:
        assert (dest / path.name).read_bytes() == path.read_bytes()
    for name in notebooks.TABLES:
        assert (dest / "figures" / name).read_bytes() == (ROOT / "figures" / name).read_bytes()


def test_an_edited_notebook_is_kept_unless_overwrite(tmp_path: Path):
    notebooks.copy_notebooks(tmp_path)
    edited = tmp_path / NOTEBOOKS[0].name
    edited.write_text("my answers")
    (tmp_path / NOTEBOOKS[1].name).unlink()  # nothing is written either: not even this one
    with pytest.raises(FileExistsError, match="overwrite=True"):
        notebooks.copy_notebooks(tmp_path)
    assert edited.read_text() == "my answers"
    assert not (tmp_path / NOTEBOOKS[1].name).exists()
    notebooks.copy_notebooks(tmp_path, overwrite=True)
    assert edited.read_bytes() == NOTEBOOKS[0].read_bytes()


def test_a_file_as_destination_is_refused(tmp_path: Path):
    target = tmp_path / "notes.txt"
    target.write_text("")
    with pytest.raises(NotADirectoryError, match="is a file"):
        notebooks.copy_notebooks(target)


def test_command_checks_before_it_copies(tmp_path: Path, capsys):
    """As ``ucvae_lite.cli.main`` runs every command: ``args.check(args)`` (a ConfigError is
    its one ``error:`` line), then ``args.func(args)``."""
    parser = argparse.ArgumentParser()
    notebooks.add_command(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["notebooks", str(tmp_path)])
    args.check(args)
    args.func(args)
    assert f"jupyter lab {tmp_path}" in capsys.readouterr().out
    assert sorted(tmp_path.glob("*.ipynb")) == [tmp_path / p.name for p in NOTEBOOKS]
    with pytest.raises(ConfigError, match="--overwrite"):
        args.check(args)
    args = parser.parse_args(["notebooks", str(tmp_path), "--overwrite"])
    args.check(args)
    args = parser.parse_args(["notebooks", str(tmp_path / NOTEBOOKS[0].name)])
    with pytest.raises(ConfigError, match="is a file"):
        args.check(args)
