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


@dataclass
class ErrorBudget:
    """Squared bias, total variance and cost of one estimator, each with its standard error.

    ``bias2`` = |b|² (an unbiased estimate: it can come out slightly negative when b ≈ 0),
    ``variance`` = V = tr Σ of one run, ``cost`` = c, mean log-weight evaluations per run.
    """

    name: str
    bias2: float
    bias2_se: float
    variance: float
    variance_se: float
    cost: float
    cost_se: float = 0.0

    def mse(self, budget, unbiased: bool = False) -> np.ndarray:
        """|b|² + c V / C at each budget C (``unbiased``: take b = 0, as theory says)."""
        c = np.asarray(budget, dtype=float)
        return (0.0 if unbiased else self.bias2) + self.cost * self.variance / c

    def mse_se(self, budget, unbiased: bool = False) -> np.ndarray:
        """Standard error of ``mse(budget)`` (delta method, the three inputs independent)."""
        c = np.asarray(budget, dtype=float)
        noise = self.cost * self.variance / c
        rel = math.hypot(self.variance_se / self.variance, self.cost_se / self.cost)
        return np.sqrt((0.0 if unbiased else self.bias2_se**2) + (noise * rel) ** 2)


def error_budget(
    samples: Tensor, exact: Tensor | float, cost: Tensor | float, name: str = ""
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
    variance_se = (sq.std() / math.sqrt(n)).item()
    costs = torch.as_tensor(cost, dtype=torch.float64, device=x.device).flatten()
    if costs.numel() == 1:
        c, c_se = costs.item(), 0.0
    elif costs.numel() == n:
        c, c_se = costs.mean().item(), (costs.std() / math.sqrt(n)).item()
    else:
        raise ValueError(f"cost must be one number or one per replicate ({n}), got {costs.numel()}")
    if c <= 0:
        raise ValueError(f"the cost per run must be positive, got {c}")
    return ErrorBudget(name, bias2, bias2_se, variance, variance_se, c, c_se)


def crossover_budget(unbiased: ErrorBudget, biased: ErrorBudget) -> tuple[float, float]:
    """C* = (c_u V_u − c_i V_i) / |b_i|² and its standard error (delta method).

    Above C* evaluations the unbiased estimator's MSE, c_u V_u / C, is below the biased one's,
    |b_i|² + c_i V_i / C. C* ≤ 0 means the unbiased one is better at every budget.
    """
    if biased.bias2 <= 0:
        raise ValueError(
            f"{biased.name or 'the biased estimator'} has no measurable bias (|b|² = "
            f"{biased.bias2:.3g} ± {biased.bias2_se:.2g}): C* is not defined; use more replicates"
        )
    a = unbiased.cost * unbiased.variance - biased.cost * biased.variance
    a_var = (
        (unbiased.cost * unbiased.variance_se) ** 2
        + (unbiased.variance * unbiased.cost_se) ** 2
        + (biased.cost * biased.variance_se) ** 2
        + (biased.variance * biased.cost_se) ** 2
    )
    c_star = a / biased.bias2
    se = math.sqrt(a_var / biased.bias2**2 + (c_star * biased.bias2_se / biased.bias2) ** 2)
    return c_star, se
