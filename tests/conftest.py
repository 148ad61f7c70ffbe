import os
from pathlib import Path

import pytest
import torch

import ucvae_lite as u

# Browser tests (test_browser.py, test_site.py, test_slides.py): Debian's Chromium, driven by
# Playwright. The flags keep it from reaching for the network by itself (this machine has none
# to give).
CHROMIUM = Path(os.environ.get("UCVAE_CHROMIUM", "/usr/bin/chromium"))
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
# in CI a test that cannot run fails instead of skipping
IN_CI = os.environ.get("CI", "").strip().lower() in {"1", "true", "yes"}


@pytest.fixture(autouse=True)
def _one_thread():
    """Small tensors: one thread avoids oversubscription on shared CI cores."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="session")
def model() -> u.LinearGaussian:
    return u.LinearGaussian.example(latent_dim=2, obs_dim=4, sigma=0.7, seed=0)


@pytest.fixture(scope="session")
def x(model) -> torch.Tensor:
    """Three data points from the model."""
    return model.sample_data(3, torch.Generator().manual_seed(1))


def replicate(x: torch.Tensor, r: int) -> torch.Tensor:
    """Each row of x repeated r times (rows [i*r, (i+1)*r) are copies of x[i])."""
    return x.repeat_interleave(r, 0)


class NoSelect:
    """A target with only the contract's methods (``sample``, ``log_weight``, and
    ``log_proposal`` for the MH move), no ``select``: the estimator falls back to its row view."""

    def __init__(self, inner):
        self.inner = inner

    def sample(self, n, generator=None):
        return self.inner.sample(n, generator)

    def log_weight(self, z):
        return self.inner.log_weight(z)

    def log_proposal(self, z):
        return self.inner.log_proposal(z)
