"""The optional MH move (``rejuvenation.RandomWalkMH``): exact coupling, invariant MH step,
still-unbiased H_{k:m}, per-row scales, evaluation count.

Statistical checks use fixed seeds and 4 standard errors (``stats.z_threshold`` where a test
makes several comparisons), as in test_estimator.py.
"""

import math

import pytest
import torch
from conftest import NoSelect, replicate

import ucvae_lite as u
from ucvae_lite.core.kernels import Particle
from ucvae_lite.core.machinery import ParticleStore
from ucvae_lite.core.rejuvenation import RandomWalkMH, reflection_coupling
from ucvae_lite.studies.stats import z_score, z_threshold


def test_reflection_coupling_has_exact_marginals_and_maximal_meeting():
    n, d = 200_000, 3
    g = torch.Generator().manual_seed(0)
    mu_x = torch.tensor([0.0, 0.5, -0.2], dtype=torch.float64).expand(n, d)
    mu_y = torch.tensor([0.6, 0.1, 0.3], dtype=torch.float64).expand(n, d)
    scale = torch.tensor([0.5, 1.0, 2.0], dtype=torch.float64).expand(n, d)
    x, y = reflection_coupling(mu_x, mu_y, scale, g)
    limit = z_threshold(2 * 2 * d)
    for sample, mu in [(x, mu_x[0]), (y, mu_y[0])]:
        std = (sample - mu) / scale[0]
        assert z_score(std, torch.zeros(d, dtype=torch.float64)).abs().max() < limit
        assert z_score(std.pow(2), torch.ones(d, dtype=torch.float64)).abs().max() < limit
    same = (x == y).all(-1).double()
    gap = ((mu_x[0] - mu_y[0]) / scale[0]).norm().item()
    p = 2 * 0.5 * math.erfc(gap / 2 / math.sqrt(2))  # 2 Φ(−|Δ|/2) = 1 − TV
    assert abs(same.mean().item() - p) < 4 * math.sqrt(p * (1 - p) / n)
    x2, y2 = reflection_coupling(mu_x[:5], mu_x[:5], scale[:5], g)
    assert torch.equal(x2, y2)  # equal means: always the same point


def _posterior_draws(model, x, n, g):
    mean, cov = model.posterior(x[:1])
    eps = torch.randn(n, 2, generator=g, dtype=torch.float64)
    return mean + eps @ torch.linalg.cholesky(cov[0]).T, mean, cov


def test_mh_move_keeps_the_posterior(model, x):
    # Start from exact posterior draws; after one MH step the moments are still exact.
    n = 40_000
    target = model.target(replicate(x[:1], n), scale=1.5)
    g = torch.Generator().manual_seed(1)
    z, mean, cov = _posterior_draws(model, x, n, g)
    ref = Particle(z, target.log_weight(z[:, None])[:, 0], None)
    step = torch.diagonal(cov[0]).sqrt().expand(n, 2)  # one posterior sd per coordinate
    move = RandomWalkMH(step).bind(target, n, 2, ref.log_weight)
    new = move.single(target, ref, None, g)
    moved = (new.z != z).any(-1).double().mean().item()
    assert 0.2 < moved < 0.9  # the move does move
    limit = z_threshold(2 + 4)
    assert z_score(new.z, mean[0]).abs().max() < limit
    second = new.z[:, :, None] * new.z[:, None, :]
    exact_second = cov[0] + mean[0][:, None] * mean[0][None, :]
    assert z_score(second, exact_second).abs().max() < limit


def test_mh_move_power_check(model, x):
    """The same test rejects a move that forgets the proposal density in its ratio."""
    n = 40_000
    target = model.target(replicate(x[:1], n), shift=0.5, scale=1.5)
    g = torch.Generator().manual_seed(1)
    z, mean, _ = _posterior_draws(model, x, n, g)
    lw = target.log_weight(z[:, None])[:, 0]
    prop = z + 0.5 * torch.randn(z.shape, generator=g, dtype=z.dtype)
    wrong_ratio = target.log_weight(prop[:, None])[:, 0] - lw  # log w, not log p(x, z)
    accept = torch.rand(n, generator=g, dtype=z.dtype).log() < wrong_ratio
    wrong = torch.where(accept[:, None], prop, z)
    assert z_score(wrong, mean[0]).abs().max() > z_threshold(6)


@pytest.mark.parametrize(
    "S,k,m,prop_scale,rw",
    [(3, 1, 2, 0.6, 0.5), (2, 0, 0, 1.5, "per-row"), (5, 0, 3, 0.6, 1.0)],
)
def test_moved_estimate_is_unbiased(model, x, S, k, m, prop_scale, rw):
    R = 3000
    B = x.shape[0]
    g = torch.Generator().manual_seed(11 + S + k + m)
    target = model.target(replicate(x, R), shift=0.3, scale=prop_scale)
    if rw == "per-row":  # [B·R, D] scales: 0.2–1 × the posterior's sd, different for every row
        _, cov = model.posterior(x)
        sd = replicate(torch.diagonal(cov, dim1=-2, dim2=-1).sqrt(), R)
        rw = sd * (0.2 + 0.8 * torch.rand(sd.shape, generator=g, dtype=sd.dtype))
    est = u.coupled_estimate(target, S, k, m, generator=g, move=RandomWalkMH(rw))
    exact_mean, exact_second = model.posterior_moments(x)
    mean = est.mean().view(B, R, 2)
    second = est.second_moment().view(B, R, 2, 2)
    limit = z_threshold(B * (2 + 4))
    for b in range(B):
        assert z_score(mean[b], exact_mean[b]).abs().max() < limit
        assert z_score(second[b], exact_second[b]).abs().max() < limit
    assert est.flat_particles.shape[0] == int(est.num_evals.sum())  # one particle per eval


def test_move_shortens_the_tail_of_a_narrow_proposal(model, x):
    # A proposal narrower than the posterior has unbounded weights: τ has a heavy tail.
    # Moving the reference lets the chains meet without a fresh draw beating both.
    n, t0 = 12_000, 10
    target = model.target(replicate(x[:1], n), scale=0.5)
    plain = u.coupled_estimate(target, 3, generator=torch.Generator().manual_seed(2))
    moved = u.coupled_estimate(
        target, 3, generator=torch.Generator().manual_seed(2), move=RandomWalkMH(0.5)
    )
    p_plain = (plain.tau > t0).double().mean().item()
    p_moved = (moved.tau > t0).double().mean().item()
    se = math.sqrt(p_plain * (1 - p_plain) / n + p_moved * (1 - p_moved) / n)
    assert (p_plain - p_moved) / se > 4, (p_plain, p_moved, se)


def test_move_bad_inputs(model, x):
    target = model.target(x)
    with pytest.raises(ValueError, match="> 0"):
        u.coupled_estimate(target, 3, move=RandomWalkMH(0.0))
    with pytest.raises(ValueError, match="scale must be"):
        u.coupled_estimate(target, 3, move=RandomWalkMH(torch.ones(5, 2)))

    class NoProposal:
        def sample(self, n, generator=None):
            return target.sample(n, generator)

        def log_weight(self, z):
            return target.log_weight(z)

    with pytest.raises(ValueError, match="log_proposal"):
        u.coupled_estimate(NoProposal(), 3, move=RandomWalkMH(0.5))


def test_move_on_a_target_without_select_is_unbiased(model, x):
    # The fallback row view must pass log_proposal through with the right rows.
    R, B = 2000, x.shape[0]
    target = NoSelect(model.target(replicate(x, R), shift=0.3, scale=0.6))
    g = torch.Generator().manual_seed(21)
    est = u.coupled_estimate(target, 3, 1, 2, generator=g, move=RandomWalkMH(0.5))
    exact_mean, _ = model.posterior_moments(x)
    mean = est.mean().view(B, R, 2)
    for b in range(B):
        assert z_score(mean[b], exact_mean[b]).abs().max() < z_threshold(B * 2)
    assert est.flat_particles.shape[0] == int(est.num_evals.sum())


@pytest.mark.parametrize("select", [True, False])
def test_each_row_keeps_its_own_scale_as_chains_drop_out(model, select):
    # 60 distinct data points, each with its own scale; every coupled move must receive, for
    # each running row, that row's scale (rows leave the batch as their chains meet).
    n = 60
    xs = model.sample_data(n, torch.Generator().manual_seed(5))
    scales = (0.1 + 0.01 * torch.arange(n, dtype=xs.dtype))[:, None].expand(n, 2)
    key = {tuple(row.tolist()): i for i, row in enumerate(xs)}
    seen = []

    class Spy(RandomWalkMH):
        def coupled(self, target, ref_x, ref_y, store=None, generator=None):
            rows = target.index if not select else [key[tuple(r.tolist())] for r in target.x]
            seen.append((torch.as_tensor(rows), self.scale.clone()))
            return super().coupled(target, ref_x, ref_y, store, generator)

    inner = model.target(xs, scale=0.5)
    target = inner if select else NoSelect(inner)
    est = u.coupled_estimate(target, 3, 0, 0, generator=torch.Generator(), move=Spy(scales))
    assert len(seen) >= 3 and len(seen[-1][0]) < n  # rows did drop out
    for rows, scale in seen:
        torch.testing.assert_close(scale, scales[rows])
    assert bool((est.tau >= 2).all())


def test_a_shared_proposal_is_evaluated_once(model, x):
    calls = []

    class Counting(NoSelect):
        def log_weight(self, z):
            calls.append(z.shape[0] * z.shape[1])
            return self.inner.log_weight(z)

        def select(self, index):
            return Counting(self.inner.select(index))

    target = Counting(model.target(x))
    z = target.sample(1)[:, 0]
    ref = Particle(z, target.log_weight(z[:, None])[:, 0], torch.arange(x.shape[0]))
    calls.clear()
    store = ParticleStore()
    move = RandomWalkMH(0.3).bind(target, x.shape[0], 2, ref.log_weight)
    new_x, new_y = move.coupled(target, ref, ref, store.rows(torch.arange(3)), torch.Generator())
    assert calls == [x.shape[0]] and store.size == x.shape[0]  # one evaluation per row
    assert torch.equal(new_x.z, new_y.z) and torch.equal(new_x.id, new_y.id)
