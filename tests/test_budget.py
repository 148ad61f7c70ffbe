"""Error against budget (``ucvae_lite.studies.budget``): each measured quantity is right within its
standard error, and the crossover budget is where the two MSE curves cross."""

import math

import numpy as np
import pytest
import torch

from ucvae_lite.studies.budget import ErrorBudget, crossover_budget, error_budget


def _samples(n, bias, sd, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.tensor(bias) + torch.tensor(sd) * torch.randn(n, len(bias), generator=g)


def test_error_budget_measures_bias_variance_and_cost():
    bias, sd = [0.3, -0.1], [1.0, 2.0]
    cost = torch.randint(5, 15, (20_000,), generator=torch.Generator().manual_seed(1))
    eb = error_budget(_samples(20_000, bias, sd), torch.zeros(2), cost, "x")
    assert abs(eb.bias2 - 0.1) < 4 * eb.bias2_se
    assert abs(eb.variance - 5.0) < 4 * eb.variance_se
    assert abs(eb.cost - 9.5) < 4 * eb.cost_se
    assert eb.name == "x"


def test_squared_bias_estimate_is_unbiased_at_zero_bias():
    """|mean − exact|² alone would be biased upwards by tr Σ / n; the estimate subtracts it."""
    values = [error_budget(_samples(50, [0.0, 0.0], [1.0, 1.0], s), [0.0, 0.0], 1).bias2
              for s in range(400)]  # fmt: skip
    v = torch.tensor(values)
    assert abs(v.mean().item()) < 4 * v.std().item() / math.sqrt(len(v))
    naive = v + 2 / 50  # what |mean|² would give
    assert naive.mean().item() > 4 * naive.std().item() / math.sqrt(len(v))


def test_mse_formula_matches_averages_of_runs():
    """The MSE of averages of n = C / c independent runs is |b|² + c V / C."""
    runs = _samples(40_000, [0.2], [1.5], seed=3)
    eb = error_budget(runs, [0.0], 4.0)
    n = 50  # budget 200 evaluations at cost 4
    block_err = (runs[:, 0].reshape(-1, n).mean(1)).pow(2)
    se = block_err.std().item() / math.sqrt(len(block_err))
    assert abs(block_err.mean().item() - eb.mse(200.0)) < 4 * se + 2 * eb.mse_se(200.0)


def test_crossover_is_where_the_curves_cross():
    u = ErrorBudget("u", 0.0, 0.0, 4.0, 0.1, 20.0, 0.5)
    i = ErrorBudget("i", 0.05, 0.001, 0.5, 0.01, 5.0)
    c_star, se = crossover_budget(u, i)
    assert c_star == pytest.approx((20 * 4 - 5 * 0.5) / 0.05)
    assert u.mse(c_star, unbiased=True) == pytest.approx(i.mse(c_star))
    assert u.mse(2 * c_star, unbiased=True) < i.mse(2 * c_star)
    assert u.mse(c_star / 2, unbiased=True) > i.mse(c_star / 2)
    assert 0 < se < c_star
    assert np.all(u.mse_se([10.0, 100.0], True) > 0)


def test_bad_input():
    with pytest.raises(ValueError, match="2 replicates"):
        error_budget(torch.zeros(1, 2), [0.0, 0.0], 1)
    with pytest.raises(ValueError, match="one per replicate"):
        error_budget(torch.zeros(5, 2), [0.0, 0.0], torch.ones(3))
    with pytest.raises(ValueError, match="positive"):
        error_budget(torch.randn(5, 2), [0.0, 0.0], 0)
    u = ErrorBudget("u", 0.0, 0.0, 1.0, 0.1, 1.0)
    with pytest.raises(ValueError, match="no measurable bias"):
        crossover_budget(u, ErrorBudget("i", -1e-4, 1e-3, 1.0, 0.1, 1.0))


def test_crossover_counts_the_minibatch_noise_both_methods_pay():
    """With minibatch noise tr Σ_data, each method pays it at its own cost: C* uses the noise
    c (V + tr Σ_data) of both, and the two MSE curves cross there."""
    u = ErrorBudget("u", 0.0, 0.0, 4.0, 0.1, 20.0, 0.5, data_variance=3.0, unbiased=True)
    i = ErrorBudget("i", 0.05, 0.001, 0.5, 0.01, 5.0, data_variance=3.0)
    c_star, se = crossover_budget(u, i)
    assert c_star == pytest.approx((20 * (4 + 3) - 5 * (0.5 + 3)) / 0.05)
    assert c_star == pytest.approx(u.crossover(i))
    assert u.mse(c_star) == pytest.approx(i.mse(c_star))
    assert u.mse(2 * c_star) < i.mse(2 * c_star) and u.mse(c_star / 2) > i.mse(c_star / 2)
    assert 0 < se < c_star


def test_squared_bias_estimate_is_unbiased_with_three_replicates():
    """With n = 3 the correction tr Σ̂ / n matters most: still mean 0 at zero bias, while
    tr Σ̂ / (n − 1), an easy off-by-one, is rejected (power check)."""
    values, off_by_one = [], []
    for s in range(2000):
        x = _samples(3, [0.0, 0.0], [1.0, 1.0], s)
        values.append(error_budget(x, [0.0, 0.0], 1).bias2)
        off_by_one.append((x.mean(0).pow(2).sum() - x.var(0).sum() / 2).item())
    for v, biased in ((values, False), (off_by_one, True)):
        v = torch.tensor(v, dtype=torch.float64)
        z = v.mean().item() / (v.std().item() / math.sqrt(len(v)))
        assert (abs(z) > 4) == biased, (z, biased)


def test_negative_bias_estimates_and_a_cheaper_unbiased_method():
    """A negative |b|² estimate is noise: the MSE clips it at 0 (never below the noise term),
    and then no budget makes the unbiased method win. An unbiased method that is also less
    noisy per evaluation wins at every budget: C* = 0."""
    noisy_zero = ErrorBudget("i", -0.01, 0.005, 1.0, 0.1, 2.0)
    assert noisy_zero.mse(100.0) == pytest.approx(2.0 / 100.0)
    u = ErrorBudget("u", 0.0, 0.0, 4.0, 0.1, 20.0, unbiased=True)
    assert u.crossover(noisy_zero) == math.inf
    cheap = ErrorBudget("u", 0.0, 0.0, 0.5, 0.1, 2.0, unbiased=True)
    biased = ErrorBudget("i", 0.05, 0.001, 4.0, 0.1, 5.0)
    assert cheap.crossover(biased) == 0.0
    assert np.all(cheap.mse([1.0, 1e3, 1e6]) < biased.mse([1.0, 1e3, 1e6]))
