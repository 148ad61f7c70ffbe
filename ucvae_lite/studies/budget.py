"""Error against compute: bias², variance and cost of an estimator, and when unbiasedness pays.

Average n independent runs of an estimator with bias b (a vector), per-run covariance Σ
(total variance V = tr Σ) and mean cost c log-weight evaluations per run. A compute budget of
C evaluations buys n = C / c runs, and the average has mean squared error

    MSE(C) = |b|² + c V / C.

The noise term falls like 1/C; the bias term does not fall at all. An unbiased estimator u
(b = 0) therefore beats a biased one i once

    C > C* = (c_u V_u − c_i V_i) / |b_i|²,

the *crossover budget*. Stochastic gradient descent averages its gradient noise over steps, in
the same way: the bias of every step stays in the average.

Every quantity is measured from replicates against an exact answer, so each comes with a
standard error: ``error_budget`` measures one estimator, ``crossover_budget`` compares two.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from ucvae_lite.studies.stats import mean_and_se


@dataclass
class ErrorBudget:
    """Squared bias, total variance and cost of one estimator, each with its standard error.

    ``bias2`` = |b|² (an unbiased estimate: it can come out slightly negative when b ≈ 0),
    ``variance`` = V = tr Σ of one run, ``cost`` = c, mean log-weight evaluations per run.
    For minibatch gradients (``landscape``): ``data_variance`` = tr Σ_data, the between-data-
    point variance every method pays (each at its own cost), and ``correction2`` = E|C|², the
    size of ucvae's bias correction (for the thinned correction's p*). ``unbiased``: the method
    is proven unbiased, so its MSE takes b = 0 (its measured ``bias2`` is reported beside).
    """

    name: str
    bias2: float
    bias2_se: float
    variance: float
    variance_se: float
    cost: float
    cost_se: float = 0.0
    data_variance: float = 0.0
    unbiased: bool = False
    correction2: float | None = None

    @property
    def noise(self) -> float:
        """c (V + tr Σ_data): the variance of the average over a budget of C evaluations is
        this divided by C."""
        return self.cost * (self.variance + self.data_variance)

    def bias_term(self, unbiased: bool | None = None) -> float:
        """|b|² as the MSE uses it: 0 if ``unbiased`` (default: ``self.unbiased``), else the
        estimate clipped at 0 (|b|² ≥ 0; a negative estimate is noise)."""
        unbiased = self.unbiased if unbiased is None else unbiased
        return 0.0 if unbiased else max(self.bias2, 0.0)

    def mse(self, budget, unbiased: bool | None = None) -> np.ndarray:
        """|b|² + c V / C at each budget C (``unbiased``: take b = 0, as theory says)."""
        c = np.asarray(budget, dtype=float)
        return self.bias_term(unbiased) + self.noise / c

    def mse_se(self, budget, unbiased: bool | None = None) -> np.ndarray:
        """Standard error of ``mse(budget)`` (delta method, the three inputs independent)."""
        c = np.asarray(budget, dtype=float)
        noise = self.noise / c
        v_total = self.variance + self.data_variance
        rel = math.hypot(self.variance_se / v_total, self.cost_se / self.cost)
        bias_unbiased = self.unbiased if unbiased is None else unbiased
        return np.sqrt((0.0 if bias_unbiased else self.bias2_se**2) + (noise * rel) ** 2)

    def crossover(self, biased: ErrorBudget) -> float:
        """The budget C* past which this (unbiased) method's MSE is below ``biased``'s: inf if
        never, 0 if always (``crossover_budget`` gives C* with its standard error)."""
        gap = biased.bias_term(False) - self.bias_term()
        excess = self.noise - biased.noise
        if gap <= 0:
            return math.inf if excess > 0 else 0.0
        return max(0.0, excess / gap)

    def optimal_correction_prob(self, num_samples: int) -> float | None:
        """p* = min(1, √(S·E / (c·A))) for the thinned correction, with E = E|C|², c the chains'
        evaluations beyond X_0 and A = V + tr Σ_data − E (the variance that does not scale
        with 1/p): it minimises (S + p c)(A + E/p), the work per unit of gradient precision."""
        if self.correction2 is None:
            return None
        c = self.cost - num_samples
        a = self.variance + self.data_variance - self.correction2
        if c <= 0 or a <= 0:
            return 1.0
        return min(1.0, math.sqrt(num_samples * self.correction2 / (c * a)))


def error_budget(
    samples: Tensor,
    exact: Tensor | float,
    cost: Tensor | float,
    name: str = "",
    unbiased: bool = False,
) -> ErrorBudget:
    """Measure |b|², V and c from n replicate estimates ``samples`` [n, P] of ``exact`` [P].

    ``cost``: the evaluations each replicate spent, [n] (e.g. ``Estimate.num_evals``), or one
    number when every run costs the same. With m the replicate mean and Σ̂ their covariance,
    |m − exact|² − tr Σ̂ / n is unbiased for |b|², with standard error
    √(4 b̂ᵀ Σ̂ b̂ / n + 2 tr(Σ̂²) / n²) (exact for Gaussian means).
    """
    x = samples.detach().double().reshape(samples.shape[0], -1)
    n = x.shape[0]
    if n < 2:
        raise ValueError(f"need at least 2 replicates, got {n}")
    exact = torch.as_tensor(exact, dtype=torch.float64, device=x.device).reshape(-1)
    mean = x.mean(0)
    centred = x - mean
    cov = centred.T @ centred / (n - 1)
    b = mean - exact
    bias2 = (b.pow(2).sum() - cov.trace() / n).item()
    bias2_se = math.sqrt(max((4 * b @ cov @ b / n + 2 * (cov @ cov).trace() / n**2).item(), 0.0))
    sq = centred.pow(2).sum(1)  # tr Σ̂ is the mean of these (times n / (n − 1))
    variance = cov.trace().item()
    _, variance_se = mean_and_se(sq)
    costs = torch.as_tensor(cost, dtype=torch.float64, device=x.device).flatten()
    if costs.numel() == 1:
        c, c_se = costs.item(), 0.0
    elif costs.numel() == n:
        c, c_se = mean_and_se(costs)
    else:
        raise ValueError(f"cost must be one number or one per replicate ({n}), got {costs.numel()}")
    if c <= 0:
        raise ValueError(f"the cost per run must be positive, got {c}")
    return ErrorBudget(name, bias2, bias2_se, variance, variance_se, c, c_se, unbiased=unbiased)


def crossover_budget(unbiased: ErrorBudget, biased: ErrorBudget) -> tuple[float, float]:
    """C* = (c_u V_u − c_i V_i) / |b_i|² and its standard error (delta method); with minibatch
    noise, each V includes tr Σ_data.

    Above C* evaluations the unbiased estimator's MSE, c_u V_u / C, is below the biased one's,
    |b_i|² + c_i V_i / C. C* ≤ 0 means the unbiased one is better at every budget.
    """
    if biased.bias2 <= 0:
        raise ValueError(
            f"{biased.name or 'the biased estimator'} has no measurable bias (|b|² = "
            f"{biased.bias2:.3g} ± {biased.bias2_se:.2g}): C* is not defined; use more replicates"
        )
    a = unbiased.noise - biased.noise
    a_var = (
        (unbiased.cost * unbiased.variance_se) ** 2
        + ((unbiased.variance + unbiased.data_variance) * unbiased.cost_se) ** 2
        + (biased.cost * biased.variance_se) ** 2
        + ((biased.variance + biased.data_variance) * biased.cost_se) ** 2
    )
    c_star = a / biased.bias2
    se = math.sqrt(a_var / biased.bias2**2 + (c_star * biased.bias2_se / biased.bias2) ** 2)
    return c_star, se
