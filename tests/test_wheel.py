"""A learner's install without make: the wheel carries the notebooks, and they copy out.

Offline, as ``docs/install.md`` tells a learner (slow: a build, a venv, three interpreters):

* ``pip wheel --no-deps --no-build-isolation . -w DIST`` builds the wheel from a copy of the
  sources the build reads (setuptools writes ``build/`` and ``*.egg-info`` into the folder it
  builds, and a stale ``build/lib`` would slip into the wheel); it holds every course notebook
  and the tables they read (``ucvae_lite.lab.notebooks``), byte for byte, and the pretrained
  ``.pt`` files;
* installed with ``--no-deps`` into a fresh venv made with ``--system-site-packages`` (this
  environment's packages reach it through a ``.pth`` file: a venv's "system" is the base
  interpreter's, which lacks torch), ``python -m ucvae_lite notebooks DEST``, run outside the
  repository, copies the notebooks to DEST and the tables to DEST/figures/, from the
  installed package;
* a kernel started in DEST (the notebook's folder) finds those tables where notebook 06 reads
  them (``runtime.REPO_ROOT / "figures"``), and writes figures and runs under DEST, not into
  site-packages.
"""

from __future__ import annotations

import os
import shutil
import site
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from ucvae_lite.lab import notebooks

ROOT = Path(__file__).resolve().parents[1]
# what the build reads: pyproject.toml (and the README it names), the package, and the two
# folders that pyproject.toml maps onto data-only packages
BUILD_INPUTS = ("pyproject.toml", "README.md", "ucvae_lite", "notebooks", "figures")
NOTEBOOKS = sorted((ROOT / "notebooks").glob(notebooks.PATTERN))
PRETRAINED = sorted((ROOT / "ucvae_lite" / "lab" / "pretrained").glob("*.pt"))


def _run(cmd: list, cwd: Path, env: dict | None = None) -> subprocess.CompletedProcess:
    result = subprocess.run(
        [str(c) for c in cmd], cwd=cwd, env=env, capture_output=True, text=True, timeout=600
    )
    assert result.returncode == 0, f"{cmd} exited {result.returncode}:\n{result.stderr[-3000:]}"
    return result


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    src = tmp_path_factory.mktemp("src")
    for name in BUILD_INPUTS:
        if (ROOT / name).is_dir():
            ignore = shutil.ignore_patterns("__pycache__", "*.egg-info", ".ipynb_checkpoints")
            shutil.copytree(ROOT / name, src / name, ignore=ignore)
        else:
            shutil.copyfile(ROOT / name, src / name)
    dist = tmp_path_factory.mktemp("dist")
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check"]
    _run([*pip, "wheel", "--no-deps", "--no-build-isolation", "--no-index", ".", "-w", dist], src)
    (built,) = dist.glob("ucvae_lite-*.whl")
    return built


@pytest.fixture(scope="module")
def venv_python(wheel: Path, tmp_path_factory) -> Path:
    """A fresh venv with only the wheel installed; the test environment's packages on its path."""
    venv = tmp_path_factory.mktemp("venv")
    _run([sys.executable, "-m", "venv", "--system-site-packages", "--without-pip", venv], venv)
    python = venv / ("Scripts/python.exe" if os.name == "nt" else "bin/python")
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "--python", python]
    _run([*pip, "install", "--no-deps", "--no-index", wheel], venv)
    purelib = _run([python, "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"], venv)
    # appended after the venv's own site-packages, and their .pth files (this checkout's
    # editable install) are not processed: ucvae_lite comes from the wheel
    here = "\n".join(site.getsitepackages())
    (Path(purelib.stdout.strip()) / "test_environment.pth").write_text(here + "\n")
    return python


def _outside_env() -> dict:
    """The environment without this checkout on the path and without the test session's
    figures and runs folders (the root conftest.py sets them)."""
    drop = {"PYTHONPATH", "UCVAE_FIGURES", "UCVAE_RUNS"}
    return {k: v for k, v in os.environ.items() if k not in drop}


def test_wheel_holds_the_notebooks_their_tables_and_the_pretrained_models(wheel: Path):
    assert NOTEBOOKS and PRETRAINED
    shipped = {
        "ucvae_lite/lab/_notebooks/": NOTEBOOKS,
        "ucvae_lite/lab/_tables/": [ROOT / "figures" / name for name in notebooks.TABLES],
        "ucvae_lite/lab/pretrained/": PRETRAINED,
    }
    with zipfile.ZipFile(wheel) as z:
        names = set(z.namelist())
        for folder, files in shipped.items():
            for path in files:
                assert folder + path.name in names, f"{path.name} missing from {wheel.name}"
                assert z.read(folder + path.name) == path.read_bytes(), f"{path.name} differs"
        in_wheel = {n for n in names if n.startswith("ucvae_lite/lab/_notebooks/")}
        assert {n for n in in_wheel if n.endswith(".ipynb")} == {
            "ucvae_lite/lab/_notebooks/" + p.name for p in NOTEBOOKS
        }


def test_installed_wheel_copies_the_notebooks_out(venv_python: Path, tmp_path: Path):
    where = _run([venv_python, "-c", "import ucvae_lite; print(ucvae_lite.__file__)"], tmp_path)
    assert Path(where.stdout.strip()).is_relative_to(venv_python.parents[1]), where.stdout
    dest = tmp_path / "course"
    out = _run([venv_python, "-m", "ucvae_lite", "notebooks", dest], tmp_path, _outside_env())
    assert f"jupyter lab {dest}" in out.stdout
    for path in NOTEBOOKS:
        assert (dest / path.name).read_bytes() == path.read_bytes()
    for name in notebooks.TABLES:
        assert (dest / "figures" / name).read_bytes() == (ROOT / "figures" / name).read_bytes()
    assert sorted(p.name for p in dest.glob("*.ipynb")) == [p.name for p in NOTEBOOKS]


def test_installed_notebooks_read_and_write_beside_themselves(venv_python: Path, tmp_path: Path):
    """From DEST the installed package reads notebook 06's tables in DEST/figures/ and puts
    figures and runs under DEST (``training.runtime``), never into site-packages."""
    dest = tmp_path / "course"
    _run([venv_python, "-m", "ucvae_lite", "notebooks", dest], tmp_path, _outside_env())
    probe = (
        "from ucvae_lite.training import runtime as r; "
        "print(r.REPO_ROOT); print(r.figures_dir()); print(r.runs_dir())"
    )
    out = _run([venv_python, "-c", probe], dest, _outside_env()).stdout.split("\n")
    root, figures, runs = (Path(line).resolve() for line in out[:3])
    assert root == dest.resolve()
    assert (figures, runs) == (dest.resolve() / "figures", dest.resolve() / "runs")
    for name in notebooks.TABLES:
        assert (root / "figures" / name).is_file()
