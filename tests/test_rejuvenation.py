"""The optional rejuvenation move: exact coupling, invariant MH step, still-unbiased H_{k:m}.

Statistical checks use fixed seeds and 4 standard errors, as in test_estimator.py.
"""

import math

import pytest
import torch
from conftest import replicate, z_scores

import ucvae_lite as u
from ucvae_lite.rejuvenation import mh_move, reflection_coupling


def test_reflection_coupling_has_exact_marginals_and_maximal_meeting():
    n, d = 200_000, 3
    g = torch.Generator().manual_seed(0)
    mu_x = torch.tensor([0.0, 0.5, -0.2], dtype=torch.float64).expand(n, d)
    mu_y = torch.tensor([0.6, 0.1, 0.3], dtype=torch.float64).expand(n, d)
    scale = torch.tensor([0.5, 1.0, 2.0], dtype=torch.float64).expand(n, d)
    x, y = reflection_coupling(mu_x, mu_y, scale, g)
    for sample, mu in [(x, mu_x[0]), (y, mu_y[0])]:
        std = (sample - mu) / scale[0]
        assert z_scores(std, torch.zeros(d, dtype=torch.float64)).abs().max() < 4
        assert z_scores(std.pow(2), torch.ones(d, dtype=torch.float64)).abs().max() < 4
    same = (x == y).all(-1).double()
    gap = ((mu_x[0] - mu_y[0]) / scale[0]).norm().item()
    p = 2 * 0.5 * math.erfc(gap / 2 / math.sqrt(2))  # 2 Φ(−|Δ|/2) = 1 − TV
    assert abs(same.mean().item() - p) < 4 * math.sqrt(p * (1 - p) / n)
    x2, y2 = reflection_coupling(mu_x[:5], mu_x[:5], scale[:5], g)
    assert torch.equal(x2, y2)  # equal means: always the same point


def test_mh_move_keeps_the_posterior(model, x):
    # Start from exact posterior draws; after one MH step the moments are still exact.
    n = 40_000
    target = model.target(replicate(x[:1], n), scale=1.5)
    mean, cov = model.posterior(x[:1])
    g = torch.Generator().manual_seed(1)
    z = mean + torch.randn(n, 2, generator=g, dtype=torch.float64) @ torch.linalg.cholesky(cov[0]).T
    log_w = target.log_weight(z[:, None])[:, 0]
    step = torch.diagonal(cov[0]).sqrt().expand(n, 2)  # one posterior sd per coordinate
    move = mh_move(target, z, log_w, step, g)
    acc = move.accepted[:, 0]
    assert 0.2 < acc.double().mean().item() < 0.9  # the move does move
    new = torch.where(acc[:, None], move.proposals[:, 0], z)
    assert z_scores(new, mean[0]).abs().max() < 4
    second = new[:, :, None] * new[:, None, :]
    exact_second = cov[0] + mean[0][:, None] * mean[0][None, :]
    assert z_scores(second, exact_second).abs().max() < 4


@pytest.mark.parametrize(
    "S,k,m,prop_scale,rw",
    [(3, 1, 2, 0.6, 0.5), (2, 0, 0, 1.5, "per-row"), (5, 0, 3, 0.6, 1.0)],
)
def test_rejuvenated_estimate_is_unbiased(model, x, S, k, m, prop_scale, rw):
    R = 3000
    B = x.shape[0]
    g = torch.Generator().manual_seed(11 + S + k + m)
    target = model.target(replicate(x, R), shift=0.3, scale=prop_scale)
    if rw == "per-row":  # [B·R, D] scales: 0.7 × the posterior's standard deviations
        _, cov = model.posterior(x)
        rw = replicate(0.7 * torch.diagonal(cov, dim1=-2, dim2=-1).sqrt(), R)
    est = u.coupled_estimate(target, S, k, m, generator=g, rejuvenate=rw)
    exact_mean, exact_second = model.posterior_moments(x)
    mean = est.mean().view(B, R, 2)
    second = est.second_moment().view(B, R, 2, 2)
    for b in range(B):
        assert z_scores(mean[b], exact_mean[b]).abs().max() < 4
        assert z_scores(second[b], exact_second[b]).abs().max() < 4
    assert est.flat_particles.shape[0] == int(est.num_evals.sum())  # one particle per eval


def test_rejuvenation_shortens_the_tail_of_a_narrow_proposal(model, x):
    # A proposal narrower than the posterior has unbounded weights: τ has a heavy tail.
    # Moving the reference lets the chains meet without a fresh draw beating both.
    n = 4000
    target = model.target(replicate(x[:1], n), scale=0.5)
    plain = u.coupled_estimate(target, 3, generator=torch.Generator().manual_seed(2))
    moved = u.coupled_estimate(
        target, 3, generator=torch.Generator().manual_seed(2), rejuvenate=0.5
    )
    p99 = lambda e: e.tau.double().quantile(0.99).item()  # noqa: E731
    assert p99(moved) < p99(plain)
    assert moved.tau.max() < plain.tau.max()


def test_rejuvenation_bad_inputs(model, x):
    target = model.target(x)
    with pytest.raises(ValueError, match="> 0"):
        u.coupled_estimate(target, 3, rejuvenate=0.0)
    with pytest.raises(ValueError, match="rejuvenate must be"):
        u.coupled_estimate(target, 3, rejuvenate=torch.ones(5, 2))

    class NoProposal:
        def sample(self, n, generator=None):
            return target.sample(n, generator)

        def log_weight(self, z):
            return target.log_weight(z)

    with pytest.raises(ValueError, match="log_proposal"):
        u.coupled_estimate(NoProposal(), 3, rejuvenate=0.5)


def test_rejuvenation_on_a_target_without_select(model, x):
    # The fallback row view must pass log_proposal through (rows drop out as chains meet).
    inner = model.target(replicate(x, 50), scale=0.6)

    class NoSelect:
        def sample(self, n, generator=None):
            return inner.sample(n, generator)

        def log_weight(self, z):
            return inner.log_weight(z)

        def log_proposal(self, z):
            return inner.log_proposal(z)

    est = u.coupled_estimate(NoSelect(), 3, 1, 2, generator=torch.Generator(), rejuvenate=0.3)
    assert bool((est.tau >= 2).all()) and est.flat_particles.shape[0] == int(est.num_evals.sum())
