"""The package's layers: imports point down only, training loads nothing from studies or lab,
and the paths of the flat 0.1 layout still import (the same modules) with one warning."""

from __future__ import annotations

import ast
import importlib
import subprocess
import sys
import warnings
from pathlib import Path

import pytest

import ucvae_lite
from ucvae_lite import _moved

PACKAGE = Path(ucvae_lite.__file__).parent
# each layer may import the layers before it in this list, never one after it
LAYERS = ["core", "models", "peers", "training", "studies", "lab"]


def _layer(module: str) -> int:
    """The layer's rank of ``ucvae_lite.<layer>...``; the root modules (cli, __init__) rank
    above every layer, ``_moved`` below them all (it imports nothing of the package)."""
    parts = module.split(".")
    if len(parts) > 1 and parts[1] in LAYERS:
        return LAYERS.index(parts[1])
    return -1 if module == "ucvae_lite._moved" else len(LAYERS)


def _imports(path: Path) -> list[tuple[str, int]]:
    """(imported ucvae_lite module, line) of every import in the file, functions' included."""
    out = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
            out += [(n, node.lineno) for n in names if n.startswith("ucvae_lite")]
        elif isinstance(node, ast.Import):
            out += [(a.name, node.lineno) for a in node.names if a.name.startswith("ucvae_lite")]
        if isinstance(node, ast.ImportFrom) and node.level:
            out.append(("relative import", node.lineno))
    return out


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def test_imports_point_down():
    wrong = []
    for path in sorted(PACKAGE.rglob("*.py")):
        here = _module_name(path)
        for imported, line in _imports(path):
            if imported == "relative import":
                wrong.append(f"{here}:{line} uses a relative import")
                continue
            if imported.split(".")[:2] == here.split(".")[:2]:
                continue  # within one layer
            if _layer(imported) > _layer(here) and not imported.startswith("ucvae_lite._moved"):
                wrong.append(f"{here}:{line} imports {imported} from a layer above it")
    assert not wrong, "\n".join(wrong)


def test_the_layer_check_sees_an_upward_import(tmp_path):
    """The check above can fail: a core module that imported the lab would be named."""
    fake = tmp_path / "ucvae_lite" / "core" / "bad.py"
    fake.parent.mkdir(parents=True)
    fake.write_text("from ucvae_lite.lab import teaching\n")
    imported, _ = _imports(fake)[0]
    assert _layer(imported) > _layer("ucvae_lite.core.bad")


def test_training_loads_nothing_from_studies_or_lab():
    code = (
        "import sys, ucvae_lite.training.train, ucvae_lite.training.objectives;"
        "print(' '.join(m for m in sys.modules if m.startswith('ucvae_lite.')))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    loaded = out.stdout.split()
    assert "ucvae_lite.training.train" in loaded
    assert not [m for m in loaded if m.split(".")[1] in ("studies", "lab")], loaded


@pytest.mark.parametrize("old", sorted(_moved.MOVED))
def test_old_paths_import_the_same_module_with_a_warning(old):
    new = importlib.import_module(f"ucvae_lite.{_moved.MOVED[old]}")
    sys.modules.pop(f"ucvae_lite.{old}", None)
    with pytest.warns(_moved.MovedModuleWarning, match=f"ucvae_lite.{_moved.MOVED[old]}"):
        got = importlib.import_module(f"ucvae_lite.{old}")
    assert got is new
    assert new.__spec__.name == new.__name__  # the alias leaves the module's own spec


def test_old_from_imports_and_submodules_still_work():
    sys.modules.pop("ucvae_lite.checks", None)
    sys.modules.pop("ucvae_lite.checks.lab", None)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        from ucvae_lite.checks.lab import check_cis_step
        from ucvae_lite.widgets import cis_chain_widget  # noqa: F401

        from ucvae_lite import checks  # noqa: F401  (handed-out notebooks' form)
    from ucvae_lite.lab.checks import lab

    assert check_cis_step is lab.check_cis_step
    assert sys.modules["ucvae_lite.checks.lab"] is lab  # not loaded a second time
    assert {type(w.message) for w in caught} == {_moved.MovedModuleWarning}
    assert all(w.filename == __file__ for w in caught), [w.filename for w in caught]


def test_the_root_exports_the_method_and_training_names():
    for name in ucvae_lite.__all__:
        assert getattr(ucvae_lite, name) is not None
    from ucvae_lite.training.train import TrainConfig

    assert ucvae_lite.TrainConfig is TrainConfig
    with pytest.raises(AttributeError, match="no attribute 'nonexistent'"):
        ucvae_lite.nonexistent  # noqa: B018


# argparse tables: one line per flag, read as a table rather than as logic
LONG_ALLOWED = {"ucvae_lite.cli.build_parser"}


def test_no_function_is_longer_than_60_lines():
    """Every function of the package fits in 60 lines of code (its docstring not counted),
    except the argparse tables in ``LONG_ALLOWED``."""
    long = []
    for path in sorted(PACKAGE.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if not isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                continue
            lines = node.end_lineno - node.lineno + 1
            doc = node.body[0]
            if isinstance(doc, ast.Expr) and isinstance(doc.value, ast.Constant):
                lines -= doc.end_lineno - doc.lineno + 1
            name = f"{_module_name(path)}.{node.name}"
            if lines > 60 and name not in LONG_ALLOWED:
                long.append(f"{name}: {lines} lines")
    assert not long, "\n".join(long)
