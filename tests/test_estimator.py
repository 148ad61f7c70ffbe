"""The coupled estimator is unbiased against closed-form answers; IWAE is not.

Every statistical check uses a fixed seed and a tolerance of 4 standard errors of the
replicate mean (two-sided P ≈ 6e-5 per comparison for a correct estimator), raised by
``stats.z_threshold`` where one test makes several comparisons, so that a correct estimator
fails a test with probability below 6e-5 whatever the number of coordinates; each
unbiasedness check is paired with IWAE, which the same threshold must reject.
"""

import pytest
import torch
from conftest import replicate

import ucvae_lite as u
from ucvae_lite.lab import teaching as T
from ucvae_lite.studies.stats import z_score, z_threshold

R = 3000  # replicates per data point


def _moments(est, B, r):
    d = est.particles.shape[-1]
    mean = est.mean().view(B, r, d)
    second = est.second_moment().view(B, r, d, d)
    return mean, second


@pytest.mark.parametrize("S,k,m", [(2, 0, 0), (5, 1, 4), (20, 0, 0), (3, 2, 2)])
def test_coupled_moments_unbiased_iwae_biased(model, x, S, k, m):
    g = torch.Generator().manual_seed(100 + 10 * S + k + m)
    B = x.shape[0]
    target = model.target(replicate(x, R), shift=0.5, scale=1.5)
    exact_mean, exact_second = model.posterior_moments(x)

    est = u.coupled_estimate(target, S, k, m, generator=g)
    mean, second = _moments(est, B, R)
    d = mean.shape[-1]
    limit = z_threshold(B * (d + d * d))  # every coordinate of both moments, all data points
    for b in range(B):
        assert z_score(mean[b], exact_mean[b]).abs().max() < limit
        assert z_score(second[b], exact_second[b]).abs().max() < limit
    assert bool((est.tau >= 2).all()) and not bool(est.truncated.any())

    iw_mean, _ = _moments(u.iwae_estimate(target, S, generator=g), B, R)
    # IWAE's self-normalised estimate is biased: rejected at the same level.
    for b in range(B):
        assert z_score(iw_mean[b], exact_mean[b]).abs().max() > limit


def test_gradient_surrogate_unbiased(model, x):
    """Mean of the surrogate's gradient = exact ∇_{W,b,log σ} log p(x), within 4 SE."""
    S, r = 5, 4000
    xb = x[:1]
    exact = T.exact_gradient(model, xb)
    target = model.target(xb.expand(r, -1), shift=0.5, scale=1.5)
    g = torch.Generator().manual_seed(7)
    coupled = T.per_replicate_gradients(model, xb, u.coupled_estimate(target, S, 1, 3, generator=g))
    iwae = T.per_replicate_gradients(model, xb, u.iwae_estimate(target, S, generator=g))
    limit = z_threshold(exact.numel())  # several coordinates: Bonferroni
    assert z_score(coupled, exact).abs().max() < limit
    assert z_score(iwae, exact).abs().max() > limit


def test_exact_proposal_meets_with_probability_s_minus_1_over_s(model, x):
    # q = posterior: all weights equal, the common index is uniform, meeting needs a fresh slot.
    S, n = 4, 20000
    target = model.target(x[:1].expand(n, -1), shift=0.0, scale=1.0)
    est = u.coupled_estimate(target, S, generator=torch.Generator().manual_seed(3))
    met_first = (est.tau == 2).double()
    p = (S - 1) / S
    se = (p * (1 - p) / n) ** 0.5
    assert abs(met_first.mean().item() - p) < 4 * se
    # τ - 1 is geometric: E[τ] = 1 + S / (S - 1).
    tau = est.tau.double()
    assert abs(tau.mean().item() - (1 + S / (S - 1))) < 4 * tau.std().item() / n**0.5


@pytest.mark.parametrize("S,k,m", [(3, 0, 0), (4, 1, 5), (6, 3, 3)])
def test_cost_accounting(model, x, S, k, m):
    target = model.target(replicate(x, 200), shift=0.5, scale=1.5)
    est = u.coupled_estimate(target, S, k, m, generator=torch.Generator().manual_seed(0))
    # X_0: S; (X_1, Y_0): S; then S - 1 for every step t = 2..max(τ - 1, m).
    steps = torch.clamp(torch.maximum(est.tau - 1, torch.tensor(m)) - 1, min=0)
    assert torch.equal(est.num_evals, 2 * S + (S - 1) * steps)
    # One stored particle per evaluation: merged coefficients, nothing evaluated twice.
    assert est.rows.numel() == int(est.num_evals.sum())
    assert torch.equal(torch.bincount(est.rows, minlength=est.batch_size), est.num_evals)
    # Coefficients sum to one for every data point (f = 1 is estimated exactly).
    torch.testing.assert_close(est.coef.sum(1), torch.ones(est.batch_size, dtype=est.coef.dtype))


def test_targets_without_select_still_unbiased(model, x):
    class Plain:  # only the two methods of the contract
        def __init__(self, t):
            self.t = t

        def sample(self, n, generator=None):
            return self.t.sample(n, generator)

        def log_weight(self, z):
            return self.t.log_weight(z)

    r = 3000
    target = Plain(model.target(x[:1].expand(r, -1), shift=0.5, scale=1.5))
    est = u.coupled_estimate(target, 4, generator=torch.Generator().manual_seed(5))
    assert z_score(est.mean(), model.posterior(x[:1])[0][0]).abs().max() < 4


def test_timeout_raises_or_flags(model, x):
    target = model.target(replicate(x, 50), shift=1.0, scale=0.3)
    with pytest.raises(u.MeetingTimeoutError, match=r"max_steps=3.*truncate"):
        u.coupled_estimate(target, 2, max_steps=3, generator=torch.Generator().manual_seed(0))
    est = u.coupled_estimate(
        target, 2, max_steps=3, on_timeout="truncate", generator=torch.Generator().manual_seed(0)
    )
    assert bool(est.truncated.any())
    assert bool((est.tau[est.truncated] == 4).all())
    assert bool((est.tau[~est.truncated] <= 3).all())


def test_inputs_not_modified(model, x):
    target = model.target(x, shift=0.5, scale=1.5)
    z0 = target.sample(4)
    lw0 = target.log_weight(z0)
    z_copy, lw_copy = z0.clone(), lw0.clone()
    u.coupled_estimate(target, 4, 1, 2, initial=(z0, lw0))
    assert torch.equal(z0, z_copy) and torch.equal(lw0, lw_copy)


class _Broken:
    def __init__(self, t, mode):
        self.t, self.mode = t, mode

    def sample(self, n, generator=None):
        z = self.t.sample(n, generator)
        return z[:, :-1] if self.mode == "short" else z

    def log_weight(self, z):
        lw = self.t.log_weight(z)
        if self.mode == "nan":
            lw[0, 0] = float("nan")
        if self.mode == "dead":
            lw[1] = float("-inf")
        if self.mode == "shape":
            lw = lw[:, :1]
        return lw


@pytest.mark.parametrize(
    "kwargs,match",
    [
        ({"num_samples": 1}, "num_samples"),
        ({"num_samples": 2.5}, "num_samples"),
        ({"k": -1}, "k must be"),
        ({"k": 2, "m": 1}, "k <= m"),
        ({"max_steps": 0}, "max_steps"),
        ({"m": 5, "max_steps": 3}, "below m"),
        ({"on_timeout": "ignore"}, "on_timeout"),
    ],
)
def test_bad_arguments(model, x, kwargs, match):
    args = {"num_samples": 3, **kwargs}
    with pytest.raises(ValueError, match=match):
        u.coupled_estimate(model.target(x), **args)


@pytest.mark.parametrize(
    "mode,match",
    [("nan", "NaN"), ("dead", "-inf"), ("shape", "log-weights of shape"), ("short", "must return")],
)
@pytest.mark.parametrize("estimator", ["coupled", "iwae"])
def test_bad_targets(model, x, mode, match, estimator):
    target = _Broken(model.target(x), mode)
    fn = u.coupled_estimate if estimator == "coupled" else u.iwae_estimate
    with pytest.raises(ValueError, match=match):
        fn(target, 3)


def test_iwae_bad_num_samples(model, x):
    with pytest.raises(ValueError, match="num_samples"):
        u.iwae_estimate(model.target(x), 1)


def test_a_bad_log_weight_after_the_start_is_caught(model, x):
    """Not only X_0: a NaN in a later evaluation (here the first fresh draws) raises too,
    instead of turning the selection probabilities into NaN."""

    class LateNaN(_Broken):
        calls = 0

        def log_weight(self, z):
            LateNaN.calls += 1
            lw = self.t.log_weight(z)
            if LateNaN.calls == 3:  # X_0, Y_0's reference, then the fresh slots
                lw[0, 0] = float("nan")
            return lw

    with pytest.raises(ValueError, match="NaN"):
        u.coupled_estimate(LateNaN(model.target(x), None), 3)


def test_thinned_is_h_x0_plus_z_over_p_times_the_correction(model, x):
    """``Estimate.thinned``: H^p = h(X_0) + (Z/p)·C, C = H − h(X_0); exactly h(X_0) where Z = 0
    (then ``correction`` is exactly zero)."""
    B, S, p = 3 * 20, 3, 0.4
    est = u.coupled_estimate(
        model.target(replicate(x, 20), shift=0.5, scale=1.5), S, 1, 2,
        generator=torch.Generator().manual_seed(2),
    )  # fmt: skip
    z = torch.rand(B, generator=torch.Generator().manual_seed(3), dtype=torch.float64) < p
    x0 = est.flat_particles[: B * S].view(B, S, -1)  # X_0 is stored first, S per row
    h0 = (torch.softmax(est.initial_log_weights, -1)[..., None] * x0).sum(1)
    thin = est.thinned(z, p)
    expected = h0 + (z.double() / p)[:, None] * (est.mean() - h0)
    torch.testing.assert_close(thin.mean(), expected, rtol=0, atol=1e-12)
    torch.testing.assert_close(est.correction().mean(), est.mean() - h0, rtol=0, atol=1e-12)
    assert bool((thin.correction().flat_coef[~z[thin.rows]] == 0).all())
    assert thin.correction_prob == p and torch.equal(thin.corrected, z)
