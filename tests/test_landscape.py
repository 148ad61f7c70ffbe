"""Bias and noise at equal compute (``landscape``): per-replicate gradients and error budgets."""

import math

import pytest
import torch

import ucvae_lite as u
from ucvae_lite import landscape as L
from ucvae_lite import teaching as T
from ucvae_lite.stats import z_score, z_threshold
from ucvae_lite.surrogate import per_row_gradients
from ucvae_lite.vae import VAE


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
        b = L.error_budget("x", samples, reference)
        est.append(b.bias2)
        ses.append(b.bias2_se)
    est_t = torch.tensor(est, dtype=torch.float64)
    assert abs(est_t.mean().item() - truth) < 4 * est_t.std().item() / math.sqrt(len(est))
    ratio = est_t.std().item() / (sum(ses) / len(ses))
    assert 0.6 < ratio < 1.6, ratio  # the SE describes the estimate's real spread
    zero, reference = _synthetic(torch.zeros(20, dtype=torch.float64), 1.0, 6, 200, 99)
    b0 = L.error_budget("unbiased", zero, reference)
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
