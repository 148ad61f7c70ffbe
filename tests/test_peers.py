"""The peers of the coupled estimator: the thinned correction, SUMO and Markovian score climbing.

Against exact answers on the linear-Gaussian model (closed-form posterior and log p(x)); each
unbiasedness check is paired with a biased method that the same test rejects.
"""

import math

import numpy as np
import pytest
import torch
from conftest import NoSelect, replicate
from scipy.stats import chisquare

import ucvae_lite as u
from ucvae_lite.core.iwae import iwae_bound
from ucvae_lite.core.kernels import CISState
from ucvae_lite.core.targets import ImportanceTarget
from ucvae_lite.lab import teaching as T
from ucvae_lite.peers.msc import MSCMemory, advance, particle_sets
from ucvae_lite.peers.sumo import Roulette, sumo_from_log_weights, sumo_log_marginal
from ucvae_lite.studies.stats import z_score, z_threshold

# --- the thinned bias correction -------------------------------------------------------------


@pytest.mark.parametrize("p,k,m", [(0.5, 0, 0), (0.2, 1, 2), (0.05, 0, 0)])
def test_thinned_correction_is_unbiased_and_cheaper(model, x, p, k, m):
    R, B, S = 6000, x.shape[0], 3
    target = model.target(replicate(x, R), shift=0.5, scale=1.5)
    est = u.coupled_estimate(
        target, S, k, m, generator=torch.Generator().manual_seed(5), correction_prob=p
    )
    exact_mean, _ = model.posterior_moments(x)
    mean = est.mean().view(B, R, 2)
    limit = z_threshold(B * 2)
    for b in range(B):
        assert z_score(mean[b], exact_mean[b]).abs().max() < limit
    # The corrected fraction is p (binomial 4 SE); the rest cost S and have τ = 0.
    frac = est.corrected.double().mean().item()
    assert abs(frac - p) < 4 * math.sqrt(p * (1 - p) / (B * R))
    assert torch.equal(
        est.num_evals[~est.corrected], torch.full_like(est.num_evals[~est.corrected], S)
    )
    assert bool((est.tau[~est.corrected] == 0).all()) and bool((est.tau[est.corrected] >= 2).all())
    full = u.coupled_estimate(target, S, k, m, generator=torch.Generator().manual_seed(6))
    assert est.num_evals.double().mean() < full.num_evals.double().mean()
    # Power: the uncorrected part alone, h(X_0) (IWAE), is rejected by the same test.
    iwae = u.iwae_estimate(target, S, torch.Generator().manual_seed(7)).mean().view(B, R, 2)
    assert max(z_score(iwae[b], exact_mean[b]).abs().max() for b in range(B)) > limit


def test_thinned_with_p_one_is_the_plain_estimate(model, x):
    target = model.target(replicate(x, 50), shift=0.5, scale=1.5)
    a = u.coupled_estimate(target, 4, 1, 2, generator=torch.Generator().manual_seed(1))
    b = u.coupled_estimate(
        target, 4, 1, 2, generator=torch.Generator().manual_seed(1), correction_prob=1.0
    )
    assert torch.equal(a.flat_coef, b.flat_coef) and torch.equal(a.tau, b.tau)


def test_thinned_coefficients_sum_to_one_and_reweight_the_correction(model, x):
    """X_0's particles carry w̄ (1 − Z/p) + (Z/p)·(their coefficient in H), the others (Z/p)·c."""
    target = model.target(replicate(x, 40), shift=0.5, scale=1.5)
    p = 0.3
    thin = u.coupled_estimate(
        target, 3, 0, 0, generator=torch.Generator().manual_seed(2), correction_prob=p
    )
    torch.testing.assert_close(thin.coef.sum(1), torch.ones(thin.batch_size, dtype=thin.coef.dtype))
    assert bool((thin.coef.abs().max(1).values > 1.0)[thin.corrected].any())  # weighted 1/p


@pytest.mark.parametrize("bad", [0.0, -0.1, 1.5, float("nan"), True])
def test_thinned_bad_probability(model, x, bad):
    with pytest.raises(ValueError, match="correction_prob must be in"):
        u.coupled_estimate(model.target(x), 3, correction_prob=bad)


# --- SUMO ----------------------------------------------------------------------------------


def test_roulette_has_the_stated_tail():
    r = Roulette(min_terms=1, cutoff=5, ratio=0.5)
    j = torch.arange(1, 12)
    expect = [1 / v if v <= 5 else (1 / 5) * 0.5 ** (v - 5) for v in range(1, 12)]
    torch.testing.assert_close(r.survival(j), torch.tensor(expect, dtype=torch.float64))
    n = 200_000
    k = r.sample(n, torch.Generator().manual_seed(0))
    assert int(k.min()) >= 1
    counts = np.bincount(k.numpy(), minlength=12)[1:12]
    surv = np.array(expect + [expect[-1] * 0.5])
    probs = surv[:-1] - surv[1:]
    assert chisquare(counts, n * probs / probs.sum() * (counts.sum() / n)).pvalue > 1e-4
    kk = k.double()
    assert abs(kk.mean().item() - r.expected_k()) < 4 * kk.std().item() / math.sqrt(n)


@pytest.mark.parametrize(
    "kwargs,match",
    [({"min_terms": 0}, "min_terms"), ({"cutoff": 0}, "cutoff"), ({"ratio": 1.0}, "ratio")],
)
def test_sumo_bad_settings(model, x, kwargs, match):
    with pytest.raises(ValueError, match=match):
        sumo_log_marginal(model.target(x), **kwargs)


def _sumo_draws(model, x, R, seed, **kw):
    target = model.target(x.expand(R, -1), shift=0.5, scale=1.5)
    return sumo_log_marginal(target, torch.Generator().manual_seed(seed), return_cost=True, **kw)


@pytest.mark.parametrize("min_terms", [1, 3])
def test_sumo_is_unbiased_for_log_p_and_iwae_is_not(model, x, min_terms):
    R = 20_000
    exact = model.log_marginal(x[:1]).item()
    est, made = _sumo_draws(model, x[:1], R, 11 + min_terms, min_terms=min_terms)
    assert abs(z_score(est, exact).item()) < 4
    # No draw is wasted: the cost is m + K, whose mean is m + E[K] (doubling rounds, which
    # over-draw by about 30%, sit far outside 4 SE here)
    k_needed = made.double().mean().item()
    se = made.double().std().item() / math.sqrt(R)
    assert abs(k_needed - (min_terms + Roulette().expected_k())) < 4 * se
    # Power: IWAE's bound at the same mean cost is a biased estimate of log p(x).
    S = max(2, round(k_needed))
    target = model.target(x[:1].expand(R, -1), shift=0.5, scale=1.5)
    bound = iwae_bound(target.log_weight(target.sample(S, torch.Generator().manual_seed(3))))
    assert abs(z_score(bound, exact).item()) > 4


def test_sumo_power_check_dividing_not_multiplying(model, x):
    """The widely copied mistake (multiplying the kept differences by P(K ≥ j)) is biased."""
    R, r = 20_000, Roulette()
    target = model.target(x[:1].expand(R, -1), shift=0.5, scale=1.5)
    g = torch.Generator().manual_seed(4)
    k = r.sample(R, g)
    N = int(k.max()) + 1
    lw = target.log_weight(target.sample(N, g))
    right = sumo_from_log_weights(lw, k, r)
    inverted = Roulette(1, r.cutoff, r.ratio)
    bounds = torch.logcumsumexp(lw, -1) - torch.arange(1, N + 1, dtype=lw.dtype).log()
    j = torch.arange(1, N)
    wrong = bounds[:, 0] + torch.where(
        j[None] <= k[:, None], (bounds[:, 1:] - bounds[:, :-1]) * inverted.survival(j), 0.0
    ).sum(-1)
    exact = model.log_marginal(x[:1]).item()
    assert abs(z_score(right, exact).item()) < 4
    assert abs(z_score(wrong, exact).item()) > 4


def test_sumo_gradient_is_unbiased(model, x):
    """∇_θ SUMO averages to the exact ∇_θ log p(x) (one parameter copy per replicate)."""
    R = 20_000
    xr = x[:1].expand(R, -1)
    q = model.proposal(xr, shift=0.5, scale=1.5)
    per = [
        p.detach().expand(R, *p.shape).clone().requires_grad_(True)
        for p in (model.W, model.b, model.log_sigma)
    ]
    target = ImportanceTarget(u.LinearGaussian(*per), xr, q)
    sumo_log_marginal(target, torch.Generator().manual_seed(8)).sum().backward()
    grads = torch.cat([p.grad.reshape(R, -1) for p in per], 1)
    exact = T.exact_gradient(model, x[:1])
    assert z_score(grads, exact).abs().max() < z_threshold(exact.numel())


# --- Markovian score climbing ----------------------------------------------------------------


def _msc_gradients(model, x, R, visits, seed, S=3):
    """θ-gradients h(X) of one MSC chain per replicate after ``visits`` − 1 earlier visits at
    a fixed θ (the chain's age), one row per replicate."""
    xr = x[:1].expand(R, -1)
    target = model.target(xr, shift=0.5, scale=1.5)
    memory = MSCMemory.empty(R, 2, "exact", device="cpu")
    memory.reference = memory.reference.double()
    g = torch.Generator().manual_seed(seed)
    index = torch.arange(R)
    for _ in range(visits):
        z = particle_sets(memory, index, target.sample(S, g))
        state = CISState(z, target.log_weight(z))
        advance(memory, index, state, g)
    est = u.Estimate(
        flat_particles=z.reshape(R * S, 2),
        flat_coef=torch.softmax(state.log_weights, -1).reshape(R * S),
        rows=torch.arange(R).repeat_interleave(S),
        batch_size=R,
        num_samples=S,
        tau=torch.zeros(R, dtype=torch.long),
        num_evals=torch.full((R,), S),
        truncated=torch.zeros(R, dtype=torch.bool),
        initial_log_weights=state.log_weights,
    )
    return T.per_replicate_gradients(model, x[:1], est)


def test_msc_is_biased_young_and_consistent_old(model, x):
    """At a fixed θ: the first visit is IWAE (biased); an old chain's gradient is unbiased
    within the test's resolution; its bias shrinks with age."""
    R = 8000
    exact = T.exact_gradient(model, x[:1])
    limit = z_threshold(exact.numel())
    young, middle, old = (
        z_score(_msc_gradients(model, x, R, age, seed), exact).abs().max().item()
        for age, seed in ((1, 1), (10, 2), (100, 3))
    )
    assert young > middle > limit > old, (young, middle, old)


def test_msc_memory_round_trip_and_wrong_data(model):
    m = MSCMemory.empty(5, 2, "digits")
    m.reference += 1.5
    m.visits += 2
    state = m.state_dict()
    fresh = MSCMemory.empty(5, 2, "digits")
    fresh.load_state_dict(state)
    assert torch.equal(fresh.reference, m.reference) and torch.equal(fresh.visits, m.visits)
    with pytest.raises(ValueError, match="same --dataset"):
        MSCMemory.empty(5, 2, "mnist").load_state_dict(state)
    with pytest.raises(ValueError, match="same --dataset"):
        MSCMemory.empty(6, 2, "digits").load_state_dict(state)


def test_sumo_cost_counts_every_evaluation(model, x):
    """``return_cost``: per data point, the log-weights actually evaluated, which are exactly
    the m + K_b the estimate uses (a row repeated in ``select`` is counted once per repeat)."""
    counts = torch.zeros(500, dtype=torch.long)

    class Counting:
        def __init__(self, inner, rows):
            self.inner, self.rows = inner, rows

        def sample(self, n, generator=None):
            return self.inner.sample(n, generator)

        def log_weight(self, z):
            counts.index_add_(0, self.rows, torch.full_like(self.rows, z.shape[1]))
            return self.inner.log_weight(z)

        def select(self, index):
            return Counting(self.inner.select(index), self.rows[index])

    target = Counting(model.target(x[:1].expand(500, -1), shift=0.5, scale=1.5), torch.arange(500))
    _, made = sumo_log_marginal(target, torch.Generator().manual_seed(0), return_cost=True)
    assert torch.equal(made, counts)
    assert int(made.min()) >= 2 and int(made.max()) > 4  # rows need different numbers of draws


def test_sumo_without_select_pays_for_the_longest_row(model, x):
    """A target without ``select`` gives every row the largest m + K_b draws, and says so."""
    target = NoSelect(model.target(x[:1].expand(200, -1), shift=0.5, scale=1.5))
    est, made = sumo_log_marginal(target, torch.Generator().manual_seed(0), return_cost=True)
    assert est.shape == (200,) and bool(est.isfinite().all())
    assert int(made.min()) == int(made.max()) > 4
