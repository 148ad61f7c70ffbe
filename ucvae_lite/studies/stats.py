"""The few statistics the package reports: z-scores, variances with standard errors, and
variance × cost. Tests, notebooks and benchmarks use these, so each has one meaning.

* ``z_score``: (mean − exact) / SE of the mean, per coordinate, over replicates along dim 0.
  A correct (unbiased) estimator gives |z| < 4 with probability ≈ 1 − 6e-5 per coordinate.
* ``z_threshold``: the |z| cut-off that keeps the chance of *any* false alarm among n
  comparisons at ``alpha`` (Bonferroni: each one at alpha / n, two-sided).
* ``variance_and_cost``: per-coordinate variances with standard errors, the mean cost of one
  estimate, and ``work`` = total variance (summed over coordinates) × cost. Averaging as many
  independent estimates as a compute budget C buys leaves total variance work / C: lower work
  is better at equal compute. Bias is not in this number.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from statistics import NormalDist

from torch import Tensor


def z_score(samples: Tensor, exact: Tensor | float) -> Tensor:
    """(mean − exact) / (std / √n) for replicates along dim 0 of ``samples`` [n, ...]."""
    n = samples.shape[0]
    return (samples.mean(0) - exact) / (samples.std(0) / math.sqrt(n))


def z_threshold(num_comparisons: int, alpha: float = 6.3e-5) -> float:
    """|z| above which to reject, so that n two-sided comparisons of a correct estimator raise
    a false alarm with probability at most ``alpha`` (Bonferroni). n = 1 gives 4.0."""
    if num_comparisons < 1:
        raise ValueError(f"need at least one comparison, got {num_comparisons}")
    return NormalDist().inv_cdf(1.0 - alpha / (2 * num_comparisons))


@dataclass
class VarianceCost:
    """Variance of an estimator per coordinate, with standard errors, and its cost.

    ``variance`` [P] over replicates, ``variance_se`` [P] its standard error
    (√((μ₄ − s⁴)/n) from the fourth central moment), ``cost`` the mean number of log-weight
    evaluations per estimate, ``mean_tau`` the mean meeting time (0 for IWAE).
    """

    variance: Tensor
    variance_se: Tensor
    cost: float
    mean_tau: float = 0.0

    @property
    def total(self) -> float:
        """Σ_p Var_p: the total variance of one estimate."""
        return self.variance.sum().item()

    @property
    def work(self) -> float:
        """Total variance × cost: the variance left per unit of compute (lower is better)."""
        return self.total * self.cost


def variance_and_cost(samples: Tensor, cost: float, mean_tau: float = 0.0) -> VarianceCost:
    """Per-coordinate variance (and its SE) of replicate estimates ``samples`` [n, P]."""
    n = samples.shape[0]
    if n < 2:
        raise ValueError(f"need at least 2 replicates to estimate a variance, got {n}")
    samples = samples.reshape(n, -1)
    centred = samples - samples.mean(0)
    var = centred.pow(2).mean(0) * n / (n - 1)
    m4 = centred.pow(4).mean(0)
    se = ((m4 - var.pow(2)).clamp_min(0) / n).sqrt()
    return VarianceCost(var, se, float(cost), float(mean_tau))


def mean_and_se(values: Tensor) -> tuple[float, float]:
    """Mean of ``values`` [n] and its standard error std / √n."""
    v = values.detach().double().flatten()
    return v.mean().item(), (v.std() / math.sqrt(v.numel())).item()
