"""SUMO: unbiased estimates of log p(x) by Russian roulette over IWAE bounds (Luo et al. 2020).

With an i.i.d. stream z_1, z_2, … ~ q(z | x) and w_j = p(x, z_j) / q(z_j | x), the IWAE bounds

    L_k = log (1/k) Σ_{j≤k} w_j

increase in expectation to log p(x) (E L_k ↑ log p(x), the gap shrinking like O(1/k)). Write
log p(x) = E L_m + Σ_{k≥m} E Δ_k with Δ_k = L_{k+1} − L_k: a telescoping series. Russian roulette
keeps a random number K ≥ 1 of its terms, independent of the z's, and reweights each kept term
by the probability that it is kept:

    SUMO = L_m + Σ_{j=1}^{K} Δ_{m+j−1} / P(K ≥ j),        E[SUMO] = log p(x),

because E[Σ_j 1{K ≥ j} Δ_{m+j−1} / P(K ≥ j)] = Σ_j E[Δ_{m+j−1}] (swap sum and expectation:
the terms must be summable). Divide by P(K ≥ j), never multiply: multiplying gives
Σ_j P(K ≥ j)² E Δ, which is biased. The tail used here (the SUMO paper's): P(K ≥ j) = 1/j for
j ≤ c (the cut-off), then (1/c)·ρ^{j−c}: E[K] = H_c + ρ/(c(1 − ρ)) (≈ 5.1 for c = 80, ρ = 0.9).
A draw costs m + K log-weight evaluations. Its variance is Σ_k E[Δ_k²]/P(K ≥ k) plus cross
terms: finite only if E[Δ_k²] falls faster than P(K ≥ k). With E[Δ_k²] = O(1/k²) the 1/k part
is borderline and past the cut-off 1/P(K ≥ k) grows exponentially, so the variance is
infinite: most draws are close to log p(x), and now and then one is enormous (notebook 07;
``benchmarks/gradient_error.py`` measures what it does to a gradient). The mean is right.

Training with SUMO: θ follows ∇_θ SUMO (an unbiased gradient of log p_θ(x)); the encoder φ
minimises the estimator's second moment E[SUMO²] (its variance, since E[SUMO] does not depend
on φ), by reparameterisation (``objectives.sumo``).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor

from ucvae_lite.core.iwae import validate_log_weights
from ucvae_lite.core.targets import Target


@dataclass(frozen=True)
class Roulette:
    """The distribution of K: P(K ≥ j) = 1/j for j ≤ ``cutoff``, then (1/c)·``ratio``^{j−c};
    ``min_terms`` m is the first bound kept whole (L_m)."""

    min_terms: int = 1
    cutoff: int = 80
    ratio: float = 0.9

    def __post_init__(self):
        for name in ("min_terms", "cutoff"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"SUMO's {name} must be an integer >= 1, got {value!r}")
        if not 0.0 < self.ratio < 1.0:
            raise ValueError(f"SUMO's geometric tail ratio must be in (0, 1), got {self.ratio}")

    def survival(self, j: Tensor) -> Tensor:
        """P(K ≥ j) for integers j ≥ 1."""
        j = j.double()
        c = self.cutoff
        return torch.where(j <= c, 1.0 / j, (1.0 / c) * self.ratio ** (j - c))

    def expected_k(self) -> float:
        """E[K] = Σ_{j≥1} P(K ≥ j) = H_c + ρ / (c (1 − ρ))."""
        c, r = self.cutoff, self.ratio
        return sum(1.0 / j for j in range(1, c + 1)) + r / (c * (1.0 - r))

    def sample(self, n: int, generator=None, device=None) -> Tensor:
        """n draws of K, [n] (long): K = max{j : P(K ≥ j) ≥ u}, u ~ U(0, 1]."""
        u = 1.0 - torch.rand(n, generator=generator, dtype=torch.float64, device=device)
        c = self.cutoff
        head = torch.floor(1.0 / u)  # u ≥ 1/c: the largest j with 1/j ≥ u
        tail = c + torch.floor(torch.log(u * c) / math.log(self.ratio))
        return torch.where(u >= 1.0 / c, head, tail).long().clamp_min(1)


def sumo_from_log_weights(log_w: Tensor, k: Tensor, roulette: Roulette) -> Tensor:
    """SUMO per row from log-weights [B, N] of the first m + K_b draws of each row (entries past
    m + K_b are ignored and may hold anything finite) and K [B]. Differentiable in log_w."""
    B, N = log_w.shape
    m = roulette.min_terms
    counts = torch.arange(1, N + 1, device=log_w.device, dtype=log_w.dtype)
    bounds = torch.logcumsumexp(log_w, -1) - counts.log()  # L_1 .. L_N
    j = torch.arange(1, N - m + 1, device=log_w.device)  # term j: Δ_{m+j−1} = L_{m+j} − L_{m+j−1}
    deltas = bounds[:, m:] - bounds[:, m - 1 : N - 1]
    weights = 1.0 / roulette.survival(j).to(log_w.dtype)
    kept = j[None, :] <= k[:, None]
    return bounds[:, m - 1] + torch.where(kept, deltas * weights, 0.0).sum(-1)


def draw_rows(counts: Tensor) -> Tensor:
    """[Σ_b counts_b] the data point of each draw: b repeated counts_b times (in row order)."""
    return torch.repeat_interleave(torch.arange(counts.shape[0], device=counts.device), counts)


def pad_by_row(values: Tensor, counts: Tensor) -> Tensor:
    """Flat per-draw values [Σ_b counts_b] (in ``draw_rows`` order) as [B, max_b counts_b],
    zero-padded (finite, as ``sumo_from_log_weights`` allows). Differentiable in ``values``."""
    rows = draw_rows(counts)
    start = torch.cumsum(counts, 0) - counts
    pos = torch.arange(rows.shape[0], device=rows.device) - start[rows]
    out = values.new_zeros(counts.shape[0], max(int(counts.max()), 1))
    return out.index_put((rows, pos), values)


def log_weights_per_row(
    first: tuple[Tensor, ...], extra: Tensor, weigh: Callable[[Tensor], tuple[Tensor, ...]]
) -> tuple[Tensor, ...]:
    """Log-weights of exactly m + K_b draws per row, none wasted.

    ``first`` holds the m + 1 draws every row needs (tensors [B, m + 1]: one or several, e.g.
    the two views of one decoder pass); ``extra`` [B] = K_b − 1 more per row, made in one call
    ``weigh(rows)``: one fresh draw for each entry of ``rows`` (a data point repeated as often
    as it needs draws), returning the same tensors flat [len(rows)]. Returns them [B, N].
    """
    if not bool((extra > 0).any()):
        return first
    more = weigh(draw_rows(extra))
    return tuple(torch.cat([f, pad_by_row(v, extra)], 1) for f, v in zip(first, more, strict=True))


def sumo_log_marginal(
    target: Target,
    generator: torch.Generator | None = None,
    *,
    min_terms: int = 1,
    cutoff: int = 80,
    ratio: float = 0.9,
    return_cost: bool = False,
) -> Tensor | tuple[Tensor, Tensor]:
    """[B] unbiased estimates of log p(x_b), one SUMO draw per data point of ``target``.

    ``min_terms`` m ≥ 1, ``cutoff`` c ≥ 1 and ``ratio`` ρ in (0, 1) set the roulette (module
    docstring). Each data point gets exactly m + K_b draws: m + 1 for all, then K_b − 1 more
    in one call (``target.select`` with each row repeated as often as it needs draws).
    ``return_cost=True`` also returns the log-weight evaluations per data point [B], m + K_b.
    A target without ``select`` cannot draw a different number per row: every row then gets
    the largest m + K_b, and the cost returned counts it.
    """
    roulette = Roulette(min_terms, cutoff, ratio)

    def weigh(tgt: Target, n: int) -> Tensor:
        z = tgt.sample(n, generator)
        log_w = tgt.log_weight(z)
        validate_log_weights(log_w.detach(), z)
        return log_w

    first = weigh(target, roulette.min_terms + 1)  # every row needs m + K ≥ m + 1 draws
    B, device = first.shape[0], first.device
    k = roulette.sample(B, generator, device)
    extra = k - 1
    if hasattr(target, "select"):
        (log_w,) = log_weights_per_row(
            (first,), extra, lambda rows: (weigh(target.select(rows), 1)[:, 0],)
        )
        made = roulette.min_terms + k
    else:
        n = int(extra.max())
        log_w = torch.cat([first, weigh(target, n)], 1) if n else first
        made = torch.full_like(k, log_w.shape[1])
    est = sumo_from_log_weights(log_w, k, roulette)
    return (est, made) if return_cost else est
