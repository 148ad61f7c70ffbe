"""Test-session settings shared by ``tests/`` and ``notebooks/``.

This file sits at the repository root so that pytest loads it for every run, including
``pytest notebooks/00_overview.ipynb`` (``tests/conftest.py`` is only loaded for tests under
``tests/``). At import time, before any notebook kernel starts, it points ``UCVAE_FIGURES``
and ``UCVAE_RUNS`` at a temporary folder (unless they are already set), so the figures the
notebooks save and the runs they train do not rewrite tracked files: nbval's kernels inherit
``os.environ``. The folder is removed when the session ends.
"""

from __future__ import annotations

import os
import shutil
import tempfile

import pytest

_SESSION_DIR = tempfile.mkdtemp(prefix="ucvae-tests-")
os.environ.setdefault("UCVAE_FIGURES", os.path.join(_SESSION_DIR, "figures"))
os.environ.setdefault("UCVAE_RUNS", os.path.join(_SESSION_DIR, "runs"))


def pytest_unconfigure(config: pytest.Config) -> None:
    """Remove the session's temporary figures and runs."""
    shutil.rmtree(_SESSION_DIR, ignore_errors=True)
