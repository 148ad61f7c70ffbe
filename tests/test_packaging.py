"""pyproject.toml declares what the package imports: ``pip install .`` can train.

Every third-party module imported by ``ucvae_lite/*.py`` (found with ``ast``, including
imports inside functions) must be a declared distribution. Modules imported only by the
widget modules (``lab/widgets/``) belong to the ``notebooks`` extra; all others are core
``dependencies``, and the core list holds nothing else (scipy, used only by the tests, is in
the ``test`` extra).

The wheel's contents: every package of the library, and the course notebooks and the tables
they read as package data (what ``python -m ucvae_lite notebooks DEST`` copies out; the wheel
itself is built and installed in tests/test_wheel.py, a slow test).
"""

from __future__ import annotations

import ast
import re
import sys
import tomllib
from pathlib import Path

from ucvae_lite.lab import notebooks

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "ucvae_lite"
# import name -> distribution name, where they differ
DISTRIBUTION = {"sklearn": "scikit-learn"}


def _normalize(requirement: str) -> str:
    """``"torch>=2.2"`` -> ``"torch"``; names compared as PEP 503 does (case, - _ .)."""
    name = re.match(r"[A-Za-z0-9._-]+", requirement.strip()).group(0)
    return re.sub(r"[-_.]+", "-", name).lower()


def third_party_imports() -> dict[str, set[str]]:
    """Distribution name -> the files of ucvae_lite that import it (absolute imports only)."""
    found: dict[str, set[str]] = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            else:
                continue
            for name in names:
                top = name.split(".")[0]
                if top in sys.stdlib_module_names or top == "ucvae_lite" or top == "__future__":
                    continue
                found.setdefault(_normalize(DISTRIBUTION.get(top, top)), set()).add(
                    path.relative_to(PACKAGE).as_posix()
                )
    return found


def project() -> dict:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]


def test_every_imported_module_is_declared():
    meta = project()
    declared = {_normalize(r) for r in meta["dependencies"]}
    for extra in meta["optional-dependencies"].values():
        declared |= {_normalize(r) for r in extra}
    missing = {d: sorted(f) for d, f in third_party_imports().items() if d not in declared}
    assert not missing, f"imported but not declared in pyproject.toml: {missing}"


def test_core_dependencies_are_exactly_the_runtime_imports():
    meta = project()
    core = {_normalize(r) for r in meta["dependencies"]}
    notebooks = {_normalize(r) for r in meta["optional-dependencies"]["notebooks"]}
    runtime = {
        d
        for d, files in third_party_imports().items()
        if {f for f in files if not f.startswith("lab/widgets/")}
    }
    notebook_only = set(third_party_imports()) - runtime
    assert runtime <= core, f"imported at run time, not in dependencies: {sorted(runtime - core)}"
    assert core <= runtime, f"in dependencies, never imported: {sorted(core - runtime)}"
    assert notebook_only <= notebooks, f"notebook helpers need: {sorted(notebook_only)}"
    assert {"arviz", "scikit-learn"} <= core  # the default training path (digits, PSIS k-hat)


def test_scipy_is_a_test_dependency_not_a_core_one():
    meta = project()
    assert "scipy" not in {_normalize(r) for r in meta["dependencies"]}
    assert "scipy" in {_normalize(r) for r in meta["optional-dependencies"]["test"]}


def test_declared_lower_bounds_admit_the_pinned_versions():
    """A bound in pyproject.toml (``name>=x``) must not exclude requirements.txt's pin."""
    pins = {}
    for line in (ROOT / "requirements.txt").read_text().splitlines():
        if "==" in line and not line.lstrip().startswith("#"):
            name, version = line.split("#")[0].strip().split("==")
            pins[_normalize(name)] = tuple(int(p) for p in re.findall(r"\d+", version)[:3])
    meta = project()
    requirements = list(meta["dependencies"])
    for extra in meta["optional-dependencies"].values():
        requirements += extra
    for req in requirements:
        match = re.fullmatch(r"\s*([A-Za-z0-9._-]+)\s*>=\s*([0-9.]+)\s*", req)
        if match and _normalize(match.group(1)) in pins:
            low = tuple(int(p) for p in match.group(2).split("."))
            assert pins[_normalize(match.group(1))] >= low, req


def _setuptools() -> dict:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]


def test_the_wheel_lists_every_package_and_maps_the_course_folders():
    """``packages`` is an explicit list (a mapped package cannot be found by ``find``): every
    folder of ucvae_lite with an ``__init__.py``, plus the two data-only packages mapped onto
    the repository's notebooks/ and figures/."""
    config = _setuptools()
    code = {
        ".".join(p.parent.relative_to(ROOT).parts) for p in PACKAGE.rglob("__init__.py")
    }  # fmt: skip
    data = {"ucvae_lite.lab._notebooks": "notebooks", "ucvae_lite.lab._tables": "figures"}
    assert sorted(config["packages"]) == sorted(code | set(data))
    assert config["package-dir"] == data


def test_the_notebooks_and_the_tables_they_read_are_package_data():
    """What ``python -m ucvae_lite notebooks`` copies out is what the wheel ships: the
    notebooks, and every committed table in figures/ that a notebook's source names."""
    data = _setuptools()["package-data"]
    assert data["ucvae_lite.lab._notebooks"] == [notebooks.PATTERN]
    assert data["ucvae_lite.lab._tables"] == list(notebooks.TABLES)
    figures = ROOT / "figures"
    assert all((figures / name).is_file() for name in notebooks.TABLES)
    named = {
        name
        for path in (ROOT / "notebooks").glob("[0-9][0-9]_*.py")
        for name in re.findall(r"[\"']([\w.-]+\.(?:csv|md))[\"']", path.read_text())
        if (figures / name).is_file()
    }
    assert named and named <= set(notebooks.TABLES), sorted(named - set(notebooks.TABLES))
