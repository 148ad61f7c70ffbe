"""Bias and noise at equal compute (``landscape``): per-replicate gradients and error budgets."""

import math

import pytest
import torch

import ucvae_lite as u
from ucvae_lite.core.surrogate import per_row_gradients
from ucvae_lite.lab import teaching as T
from ucvae_lite.models.vae import VAE
from ucvae_lite.studies import landscape as L
from ucvae_lite.studies.stats import z_score, z_threshold


def test_row_copies_of_a_vae_match_the_vae_and_the_vmap_gradients():
    torch.manual_seed(0)
    model = VAE(10, (8,), 3).double()
    x = (torch.rand(5, 10, generator=torch.Generator().manual_seed(1)) < 0.5).double()
    copies = L.RowCopies(model, 5)
    z = torch.randn(5, 4, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    torch.testing.assert_close(copies.log_joint(x, z), model.log_joint(x, z))
    est = u.coupled_estimate(model.target(x), 3, 1, 2, generator=torch.Generator().manual_seed(3))
    u.log_likelihood_surrogate(est, u.particle_log_joint(copies, x)).backward()
    torch.testing.assert_close(copies.gradients(), per_row_gradients(model, x, est))


@pytest.mark.parametrize("kind", ["iwae", "ucvae", "sumo", "msc"])
def test_gradient_samples_shapes_and_costs(model, x, kind):
    method = L.Method(kind, kind, num_samples=4, age=3)
    s = L.gradient_samples(method, model, x[:1], model.proposal(x[:1].expand(30, -1)), 30,
                           torch.Generator().manual_seed(0))  # fmt: skip
    assert s.grads.shape == (30, model.W.numel() + model.b.numel() + 1)
    assert bool(torch.isfinite(s.grads).all()) and s.cost >= (2 if kind == "sumo" else 4)
    assert (s.correction is not None) == (kind == "ucvae")
    # decoder evaluations a training step pays: MSC's encoder set and chain set share S − 1
    assert s.decoder == s.cost + (1 if kind == "msc" else 0)


def test_measure_counts_cost_in_the_unit_asked_for(model, x):
    methods = [L.Method("msc", "msc", 4, age=2, unbiased=False), L.Method("iwae", "iwae", 4)]
    ref = torch.stack([T.exact_gradient(model, x[i : i + 1]) for i in range(2)])

    def proposal(xi, R):
        return model.proposal(xi.expand(R, -1))

    costs = {}
    for unit in L.COST_UNITS:
        budgets = L.measure(methods, model, x[:2], proposal, 20, ref, seed=0, unit=unit)
        costs[unit] = [b.cost for b in budgets]
    assert costs["log-weight"] == [4.0, 4.0] and costs["decoder"] == [5.0, 4.0]
    with pytest.raises(ValueError, match="unit"):
        L.measure(methods, model, x[:2], proposal, 20, ref, unit="seconds")


def test_ucvae_gradient_samples_unbiased_and_iwae_not(model, x):
    exact = T.exact_gradient(model, x[:1])
    q = model.proposal(x[:1].expand(3000, -1), shift=0.5, scale=1.5)
    g = torch.Generator().manual_seed(4)
    uc = L.gradient_samples(L.Method("u", "ucvae", 4, 1, 2), model, x[:1], q, 3000, g)
    iw = L.gradient_samples(L.Method("i", "iwae", 4), model, x[:1], q, 3000, g)
    limit = z_threshold(exact.numel())
    assert z_score(uc.grads, exact).abs().max() < limit < z_score(iw.grads, exact).abs().max()


def _synthetic(bias: torch.Tensor, sd: float, n_points: int, R: int, seed: int):
    """Correlated gradient samples around reference + bias: every coordinate shares one factor."""
    g = torch.Generator().manual_seed(seed)
    P = bias.numel()
    reference = torch.randn(n_points, P, generator=g, dtype=torch.float64)
    samples = []
    for i in range(n_points):
        common = torch.randn(R, 1, generator=g, dtype=torch.float64)
        own = torch.randn(R, P, generator=g, dtype=torch.float64)
        samples.append(L.GradientSamples(reference[i] + bias + sd * (common + 0.3 * own), 7.0))
    return samples, reference


def test_error_budget_recovers_a_known_bias_with_an_honest_standard_error():
    """Over many synthetic replications the U-statistic is unbiased for |b̄|² and its jackknife
    SE matches its spread (the coordinates are strongly correlated, as a network's are)."""
    bias = torch.full((20,), 0.05, dtype=torch.float64)
    truth = bias.pow(2).sum().item()
    est, ses = [], []
    for seed in range(40):
        samples, reference = _synthetic(bias, 1.0, 6, 200, seed)
        b = L.minibatch_error_budget("x", samples, reference)
        est.append(b.bias2)
        ses.append(b.bias2_se)
    est_t = torch.tensor(est, dtype=torch.float64)
    assert abs(est_t.mean().item() - truth) < 4 * est_t.std().item() / math.sqrt(len(est))
    ratio = est_t.std().item() / (sum(ses) / len(ses))
    assert 0.6 < ratio < 1.6, ratio  # the SE describes the estimate's real spread
    zero, reference = _synthetic(torch.zeros(20, dtype=torch.float64), 1.0, 6, 200, 99)
    b0 = L.minibatch_error_budget("unbiased", zero, reference)
    assert abs(b0.bias2) < 4 * b0.bias2_se


def test_crossover_and_optimal_thinning_formulas():
    iwae = L.ErrorBudget("i", 0.5, 0.0, variance=2.0, variance_se=0.0, cost=10.0, data_variance=8.0)
    uc = L.ErrorBudget("u", 0.0, 0.0, 6.0, 0.0, 30.0, data_variance=8.0, unbiased=True,
                       correction2=4.0)  # fmt: skip
    c_star = uc.crossover(iwae)
    assert c_star == pytest.approx((30 * 14 - 10 * 10) / 0.5)
    assert uc.mse(c_star) == pytest.approx(iwae.mse(c_star))
    assert uc.mse(2 * c_star) < iwae.mse(2 * c_star) and uc.mse(c_star / 2) > iwae.mse(c_star / 2)
    p = uc.optimal_correction_prob(10)
    A, E, c = 14.0 - 4.0, 4.0, 20.0
    assert p == pytest.approx(min(1.0, math.sqrt(10 * E / (c * A))))
    work = lambda q: (10 + q * c) * (A + E / q)  # noqa: E731
    assert work(p) <= min(work(p * 0.9), work(min(1.0, p * 1.1)))
    cheaper = L.ErrorBudget("b", 0.0, 0, 1, 0, 1, unbiased=True)
    assert cheaper.crossover(L.ErrorBudget("c", 0.0, 0, 1, 0, 2)) == 0.0  # no bias: always wins


def test_row_copies_of_a_linear_gaussian_give_each_row_its_own_exact_gradient(model, x):
    """Row b's gradient of Σ_b log p_θ(x_b) lands in row b's copy of θ: against ∇_θ log p(x_b)
    computed for each data point alone, with one shared θ."""
    copies = L.RowCopies(model, 3)
    copies.log_marginal(x[:3]).sum().backward()
    for b in range(3):
        theta = [p.detach().clone().requires_grad_(True) for p in L.theta(model)]
        u.LinearGaussian(*theta).log_marginal(x[b : b + 1]).sum().backward()
        torch.testing.assert_close(
            copies.gradients()[b], torch.cat([t.grad.flatten() for t in theta])
        )
    with pytest.raises(TypeError, match="LinearGaussian"):
        L.RowCopies(VAE(4, (3,), 2), 2).log_marginal(x[:2])


def test_posterior_estimate_dispatches_on_the_method_kind(model, x):
    """The estimate each kind names, with the library's own estimators and the same seed."""
    target = model.target(x[:1].expand(20, -1), shift=0.5, scale=1.5)

    def g():
        return torch.Generator().manual_seed(7)

    iw = L.posterior_estimate(L.Method("i", "iwae", 4), target, g())
    torch.testing.assert_close(iw.coef, u.iwae_estimate(target, 4, g()).coef)
    uc = L.posterior_estimate(L.Method("u", "ucvae", 4, 1, 3), target, g(), max_steps=50)
    ref = u.coupled_estimate(target, 4, 1, 3, 50, g(), on_timeout="truncate")
    torch.testing.assert_close(uc.mean(), ref.mean())
    assert torch.equal(uc.tau, ref.tau)
    msc = L.posterior_estimate(L.Method("m", "msc", 4, age=2), target, g())
    assert msc.batch_size == 20 and (msc.num_evals == 4).all()
    with pytest.raises(ValueError, match="unknown method kind"):
        L.posterior_estimate(L.Method("s", "sumo"), target, g())


def test_ucvae_correction_is_the_estimate_minus_iwae_on_its_own_x0(model, x):
    """``correction`` = H − h(X_0): subtracted from the gradients it leaves IWAE's gradient on the
    same X_0 (both estimators draw X_0 first, so the same seed gives the same X_0)."""
    q = model.proposal(x[:1].expand(50, -1), shift=0.5, scale=1.5)
    uc = L.gradient_samples(L.Method("u", "ucvae", 4, 1, 2), model, x[:1], q, 50,
                            torch.Generator().manual_seed(4))  # fmt: skip
    iw = L.gradient_samples(L.Method("i", "iwae", 4), model, x[:1], q, 50,
                            torch.Generator().manual_seed(4))  # fmt: skip
    torch.testing.assert_close(uc.grads - uc.correction, iw.grads)
    assert uc.correction.abs().max() > 0.1  # the chains did correct something


def test_msc_gradient_samples_follow_the_chain_age(model, x):
    """Age 1 is IWAE (biased, rejected); at age 20 the bias is below this test's resolution."""
    R, S = 2000, 5
    exact = T.exact_gradient(model, x[:1])
    q = model.proposal(x[:1].expand(R, -1), shift=0.5, scale=1.5)
    limit = z_threshold(exact.numel())
    zs = []
    for age in (1, 20):
        s = L.gradient_samples(L.Method("m", "msc", S, age=age), model, x[:1], q, R,
                               torch.Generator().manual_seed(age))  # fmt: skip
        zs.append(z_score(s.grads, exact).abs().max().item())
    assert zs[0] > limit > zs[1], zs


def _independent(true: torch.Tensor, bias: float, R: int, g: torch.Generator):
    """R samples per data point around true[i] + bias, independent N(0, 1) coordinates."""
    return [
        L.GradientSamples(t + bias + torch.randn(R, t.numel(), generator=g, dtype=t.dtype), 5.0)
        for t in true
    ]


def test_error_budget_bias_is_unbiased_at_zero_and_the_naive_square_is_not():
    """The U-statistic leaves out the pairs g = h: with no bias its mean over replications is
    0, while |mean b̂|², which keeps them, is pushed up by the noise (power check)."""
    bias2, naive = [], []
    for seed in range(40):
        g = torch.Generator().manual_seed(seed)
        true = torch.randn(3, 20, generator=g, dtype=torch.float64)
        samples = _independent(true, 0.0, 20, g)
        bias2.append(L.minibatch_error_budget("x", samples, true).bias2)
        means = torch.stack([s.grads.mean(0) for s in samples])
        naive.append((means - true).mean(0).pow(2).sum().item())
    limit = z_threshold(2)
    for values, biased in ((bias2, False), (naive, True)):
        v = torch.tensor(values, dtype=torch.float64)
        z = v.mean().item() / (v.std().item() / math.sqrt(len(v)))
        assert (abs(z) > limit) == biased, (z, biased)


def test_error_budget_with_an_estimated_reference():
    """A reference with its own noise (variance ``reference_var``): |b̄|² and tr Σ_data stay
    unbiased; ignoring that noise would shift both (power checks)."""
    N, P, v, truth = 6, 20, 0.2, 20 * 0.05**2
    bias2, data, shifted_bias2, shifted_data = [], [], [], []
    for seed in range(40):
        g = torch.Generator().manual_seed(seed)
        true = torch.randn(N, P, generator=g, dtype=torch.float64)
        samples = _independent(true, 0.05, 20, g)
        reference = true + v**0.5 * torch.randn(N, P, generator=g, dtype=torch.float64)
        b = L.minibatch_error_budget(
            "x", samples, reference, torch.full((N, P), v, dtype=torch.float64)
        )
        naive = L.minibatch_error_budget("x", samples, reference)  # the reference's noise ignored
        exact_data = true.var(0).sum().item()
        bias2.append(b.bias2 - truth)
        data.append(b.data_variance - exact_data)
        shifted_bias2.append(naive.bias2 - truth)
        shifted_data.append(naive.data_variance - exact_data)
    limit = z_threshold(4)
    for values, biased in ((bias2, False), (data, False), (shifted_bias2, True),
                           (shifted_data, True)):  # fmt: skip
        d = torch.tensor(values, dtype=torch.float64)
        z = d.mean().item() / (d.std().item() / math.sqrt(len(d)))
        assert (abs(z) > limit) == biased, (z, biased)


def test_error_budget_variances_cost_and_correction_size():
    """tr Σ_est (mean over data points, summed over coordinates), tr Σ_data (of the reference
    gradients), the mean cost and E|C|² against known values."""
    N, R, P = 5, 400, 8
    g = torch.Generator().manual_seed(0)
    true = torch.randn(N, P, generator=g, dtype=torch.float64)
    sd = torch.linspace(0.5, 2.0, P, dtype=torch.float64)  # tr Σ_est = Σ sd²
    samples = []
    for i in range(N):
        grads = true[i] + sd * torch.randn(R, P, generator=g, dtype=torch.float64)
        correction = 0.3 + torch.randn(R, P, generator=g, dtype=torch.float64)  # E|C|² = P·1.09
        samples.append(L.GradientSamples(grads, 4.0 + i, correction))
    b = L.minibatch_error_budget("x", samples, true)
    assert (
        L.minibatch_error_budget("x", samples, true, unit="decoder").cost == b.cost
    )  # None: the same
    assert abs(b.variance - sd.pow(2).sum().item()) < 4 * b.variance_se
    assert b.data_variance == pytest.approx(true.var(0).sum().item())
    assert b.cost == pytest.approx(6.0)
    sq = torch.cat([s.correction.pow(2).sum(1) for s in samples])
    assert abs(b.correction2 - P * 1.09) < 4 * sq.std().item() / math.sqrt(len(sq))


def test_error_budget_splits_into_the_groups_asked_for():
    """R = 12 replicates into G = 10 groups (sizes 2 and 1): the U-statistic and its jackknife
    are over those 10 groups."""
    g = torch.Generator().manual_seed(5)
    true = torch.randn(2, 3, generator=g, dtype=torch.float64)
    samples = _independent(true, 0.2, 12, g)
    per_point = [torch.stack([c.mean(0) for c in s.grads.tensor_split(10)]) for s in samples]
    groups = (torch.stack(per_point) - true[:, None, :]).mean(0)  # b̂_g, [10, P]

    def u_stat(b):
        n = b.shape[0]
        return ((b.sum(0).pow(2).sum() - b.pow(2).sum()) / (n * (n - 1))).item()

    loo = torch.tensor([u_stat(torch.cat([groups[:i], groups[i + 1 :]])) for i in range(10)])
    budget = L.minibatch_error_budget("x", samples, true, groups=10)
    assert budget.bias2 == pytest.approx(u_stat(groups))
    assert budget.bias2_se == pytest.approx(math.sqrt(0.9 * (loo - loo.mean()).pow(2).sum().item()))
