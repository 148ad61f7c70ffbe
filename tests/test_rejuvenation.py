"""The optional rejuvenation move: exact coupling, invariant MH step, still-unbiased H_{k:m}.

Statistical checks use fixed seeds and 4 standard errors, as in test_estimator.py.
"""

import math

import pytest
import torch
from conftest import replicate, z_scores

import ucvae_lite as u
from ucvae_lite.rejuvenation import coupled_mh_move, mh_move, reflection_coupling


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
    if rw == "per-row":  # [B·R, D] scales: 0.2–1 × the posterior's sd, different for every row
        _, cov = model.posterior(x)
        sd = replicate(torch.diagonal(cov, dim1=-2, dim2=-1).sqrt(), R)
        rw = sd * (0.2 + 0.8 * torch.rand(sd.shape, generator=g, dtype=sd.dtype))
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


class _NoSelect:
    """A target without ``select``: the estimator falls back to its row view."""

    def __init__(self, inner):
        self.inner = inner

    def sample(self, n, generator=None):
        return self.inner.sample(n, generator)

    def log_weight(self, z):
        return self.inner.log_weight(z)

    def log_proposal(self, z):
        return self.inner.log_proposal(z)


def test_rejuvenation_on_a_target_without_select_is_unbiased(model, x):
    # The fallback row view must pass log_proposal through with the right rows.
    R, B = 2000, x.shape[0]
    target = _NoSelect(model.target(replicate(x, R), shift=0.3, scale=0.6))
    g = torch.Generator().manual_seed(21)
    est = u.coupled_estimate(target, 3, 1, 2, generator=g, rejuvenate=0.5)
    exact_mean, _ = model.posterior_moments(x)
    mean = est.mean().view(B, R, 2)
    for b in range(B):
        assert z_scores(mean[b], exact_mean[b]).abs().max() < 4
    assert est.flat_particles.shape[0] == int(est.num_evals.sum())


@pytest.mark.parametrize("select", [True, False])
def test_each_row_keeps_its_own_scale_as_chains_drop_out(model, select, monkeypatch):
    # 60 distinct data points, each with its own scale; every coupled move must receive, for
    # each active row, that row's scale (rows leave the active set as their chains meet).
    import ucvae_lite.estimator as E

    n = 60
    xs = model.sample_data(n, torch.Generator().manual_seed(5))
    scales = (0.1 + 0.01 * torch.arange(n, dtype=xs.dtype))[:, None].expand(n, 2)
    key = {tuple(row.tolist()): i for i, row in enumerate(xs)}
    seen = []

    def spy(tgt, zx, lwx, zy, lwy, scale, generator=None, subset=None):
        rows = tgt.index if not select else [key[tuple(r.tolist())] for r in tgt.x]
        seen.append((torch.as_tensor(rows), scale.clone()))
        return coupled_mh(tgt, zx, lwx, zy, lwy, scale, generator, subset)

    coupled_mh = E.coupled_mh_move
    monkeypatch.setattr(E, "coupled_mh_move", spy)
    inner = model.target(xs, scale=0.5)
    target = inner if select else _NoSelect(inner)
    est = u.coupled_estimate(target, 3, 0, 0, generator=torch.Generator(), rejuvenate=scales)
    assert len(seen) >= 3 and len(seen[-1][0]) < n  # rows did drop out
    for rows, scale in seen:
        torch.testing.assert_close(scale, scales[rows])
    assert bool((est.tau >= 2).all())


def test_a_shared_proposal_is_evaluated_once(model, x):
    calls = []

    class Counting(_NoSelect):
        def log_weight(self, z):
            calls.append(z.shape[0] * z.shape[1])
            return self.inner.log_weight(z)

        def select(self, index):
            return Counting(self.inner.select(index))

    target = Counting(model.target(x))
    z = target.sample(1)[:, 0]
    lw = target.log_weight(z[:, None])[:, 0]
    calls.clear()
    scale = torch.full_like(z, 0.3)
    move = coupled_mh_move(target, z, lw, z, lw, scale, torch.Generator())
    assert calls == [x.shape[0]] and bool(move.same_proposal.all())
    assert torch.equal(move.accepted[:, 0], move.accepted[:, 1])
