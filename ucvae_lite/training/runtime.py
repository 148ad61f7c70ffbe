"""Settings read from the environment, one rule each, for the library, the CLI and notebooks.

* ``UCVAE_FAST``: fast mode (small sample sizes and short runs, as ``make test`` and CI use).
  ``1``, ``true``, ``yes``, ``on`` turn it on; unset, empty, ``0``, ``false``, ``no``, ``off``
  leave it off (case-insensitive); any other value is an error rather than a guess.
* ``UCVAE_FIGURES``: the folder that figures are written to, instead of the repository's
  ``figures/`` (the test suite points it at a temporary folder, so tests leave the work
  tree clean).
* ``UCVAE_RUNS``: the folder for the notebooks' training runs, instead of the repository's
  ``runs/``.
"""

from __future__ import annotations

import os
from pathlib import Path

from ucvae_lite.training.config import ConfigError

FAST_ENV = "UCVAE_FAST"
FIGURES_ENV = "UCVAE_FIGURES"
RUNS_ENV = "UCVAE_RUNS"
FAST_ON = ("1", "true", "yes", "on")
FAST_OFF = ("", "0", "false", "no", "off")
_SOURCE = Path(__file__).resolve().parents[2]  # ucvae_lite/training/runtime.py
# the repository (a source checkout); installed from a wheel there is none, and figures, runs
# and the tables the notebooks read live where the notebooks were copied (the kernel's cwd)
REPO_ROOT = _SOURCE if (_SOURCE / "pyproject.toml").is_file() else Path.cwd()


def fast_mode() -> bool:
    """True when ``UCVAE_FAST`` asks for quick runs; ``ConfigError`` on a value it cannot read."""
    value = os.environ.get(FAST_ENV)
    if value is None:
        return False
    word = value.strip().lower()
    if word in FAST_ON:
        return True
    if word in FAST_OFF:
        return False
    raise ConfigError(
        f"environment variable {FAST_ENV}={value!r} is not understood: set it to 1, true, yes "
        "or on for fast mode, to 0, false, no or off for full size, or leave it empty or unset"
    )


def _folder(env: str, default: Path) -> Path:
    """The directory named by the environment variable ``env``, else ``default``; created."""
    value = os.environ.get(env, "").strip()
    path = Path(value).expanduser() if value else default
    path.mkdir(parents=True, exist_ok=True)
    return path


def figures_dir() -> Path:
    """Where figures go: ``$UCVAE_FIGURES`` if set, else the repository's ``figures/`` folder.

    The repository folder is found from the package; either folder is created if missing.
    """
    return _folder(FIGURES_ENV, REPO_ROOT / "figures")


def runs_dir() -> Path:
    """Where the notebooks' training runs go: ``$UCVAE_RUNS``, else the repository's ``runs/``."""
    return _folder(RUNS_ENV, REPO_ROOT / "runs")
