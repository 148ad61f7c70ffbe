"""Importance-weight and meeting-time diagnostics."""

import math

import torch

from ucvae_lite import LinearGaussian, coupled_estimate
from ucvae_lite.core.diagnostics import (
    degenerate_survival,
    psis_khat,
    survival,
    tail_index,
    tau_summary,
)


def test_psis_khat_separates_light_and_heavy_weights():
    g = torch.Generator().manual_seed(0)
    light = 0.1 * torch.randn(4, 2000, generator=g, dtype=torch.float64)
    # log of Pareto(α = 1/k) samples: log w = -k log U has a GPD tail with shape k = 1.
    heavy = -1.0 * torch.rand(4, 2000, generator=g, dtype=torch.float64).log()
    assert bool((psis_khat(light) < 0.5).all())
    assert bool((psis_khat(heavy) > 0.7).all())


def test_survival_matches_counts():
    tau = torch.tensor([2, 2, 3, 5])
    t, s = survival(tau)
    assert t.tolist() == [1, 2, 3, 4, 5]
    assert s.tolist() == [1.0, 0.5, 0.25, 0.25, 0.0]


def test_degenerate_survival_law():
    t = torch.arange(1, 6)
    s = degenerate_survival(t, 5)
    assert s[0] == 1.0 and math.isclose(s[1].item(), 6 / 10)
    assert bool((s[1:] < s[:-1]).all())


def test_tail_index_recovers_pareto_exponent():
    g = torch.Generator().manual_seed(1)
    for alpha in (1.0, 3.0):
        x = torch.rand(200_000, generator=g, dtype=torch.float64).pow(-1 / alpha)
        est = tail_index(x, fraction=0.01)
        assert abs(est - alpha) < 4 * alpha / (2000**0.5)  # Hill SE ≈ α / √k


def test_exact_proposal_tau_is_light_tailed():
    model = LinearGaussian.example()
    x = model.sample_data(1, torch.Generator().manual_seed(0)).expand(5000, -1)
    est = coupled_estimate(model.target(x), 5, generator=torch.Generator().manual_seed(0))
    summary = tau_summary(est.tau)
    assert summary["median"] == 2 and summary["max"] < 15
    t, s = survival(est.tau)
    assert bool((s[1:] <= degenerate_survival(t, 5)[1:]).all())
