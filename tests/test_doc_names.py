"""Every ``ucvae_lite.<name>`` that the README, the docs, the notebooks' sources or the
benchmarks name exists, at its current path (not an old one kept by ``ucvae_lite._moved``)."""

from __future__ import annotations

import importlib
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SOURCES = [
    ROOT / "README.md",
    *sorted((ROOT / "docs").glob("*.md")),
    *sorted((ROOT / "notebooks").glob("[0-9]*.py")),
    *sorted((ROOT / "benchmarks").glob("*.py")),
    *sorted((ROOT / "classroom").glob("*.html")),
]
DOTTED = re.compile(r"\bucvae_lite((?:\.[A-Za-z_]\w*)+)")
FROM = re.compile(r"^\s*from (ucvae_lite[\w.]*) import \(?([\w, ]+)", re.M)


def named() -> dict[str, str]:
    """Dotted name → a file that names it."""
    found: dict[str, str] = {}
    for path in SOURCES:
        for m in DOTTED.finditer(path.read_text()):
            found.setdefault("ucvae_lite" + m.group(1), path.relative_to(ROOT).as_posix())
        for m in FROM.finditer(path.read_text()):
            for name in filter(None, (n.strip().split(" as ")[0] for n in m.group(2).split(","))):
                found.setdefault(f"{m.group(1)}.{name}", path.relative_to(ROOT).as_posix())
    return found


def resolve(name: str) -> object:
    """The object a dotted name means: the longest importable module, then attributes."""
    parts = name.split(".")
    for cut in range(len(parts), 0, -1):
        module = ".".join(parts[:cut])
        try:
            obj = importlib.import_module(module)
        except ModuleNotFoundError:
            continue
        for attr in parts[cut:]:
            obj = getattr(obj, attr)
        return obj
    raise ModuleNotFoundError(name)


NAMES = named()


def test_the_sources_name_the_package():
    assert len(NAMES) > 60 and "ucvae_lite.sumo_log_marginal" in NAMES


@pytest.mark.parametrize("name", sorted(NAMES))
def test_named_object_exists_at_its_current_path(name):
    # pytest's filterwarnings turns MovedModuleWarning into an error: old paths fail here
    try:
        resolve(name)
    except (ImportError, AttributeError) as e:
        pytest.fail(f"{NAMES[name]} names {name}, which does not exist: {e}")
