"""Checkers for notebook 07 (the landscape: IWAE, MSC, coupled chains, SUMO)."""

from __future__ import annotations

import torch

from ..sumo import Roulette, sumo_from_log_weights
from ._common import call, expect_close, expect_unbiased, passed, require

__all__ = ["check_expected_k", "check_sumo", "check_thinned"]


def _sumo_inputs(seed: int, B: int = 64, N: int = 40):
    g = torch.Generator().manual_seed(seed)
    log_w = torch.randn(B, N, generator=g, dtype=torch.float64) * 1.5 - 3.0
    k = torch.randint(1, N - 3, (B,), generator=g)
    return log_w, k


def check_sumo(sumo, seed: int = 0) -> None:
    """``sumo(log_w, k, min_terms, cutoff, ratio)`` -> [B]: the SUMO estimate from the
    log-weights [B, N] of each row's first m + K_b draws and K [B]."""
    for m, cutoff, ratio in ((1, 80, 0.9), (3, 10, 0.8)):
        log_w, k = _sumo_inputs(seed + m, N=40)
        r = Roulette(m, cutoff, ratio)
        mine = call(sumo, log_w, k, m, cutoff, ratio, what="your sumo")
        right = sumo_from_log_weights(log_w, k, r)
        if isinstance(mine, torch.Tensor) and mine.shape == right.shape:
            j = torch.arange(1, 40 - m + 1)
            counts = torch.arange(1, 41, dtype=log_w.dtype)
            bounds = torch.logcumsumexp(log_w, -1) - counts.log()
            deltas = bounds[:, m:] - bounds[:, m - 1 : 39]
            kept = j[None] <= k[:, None]
            multiplied = bounds[:, m - 1] + torch.where(kept, deltas * r.survival(j), 0.0).sum(-1)
            require(
                not torch.allclose(mine.double(), multiplied, atol=1e-8),
                "you multiplied each kept difference by P(K ≥ j): divide by it instead (each "
                "term is kept with probability P(K ≥ j), so dividing makes its mean right)",
            )
            without_base = right - bounds[:, m - 1]
            require(
                not torch.allclose(mine.double(), without_base, atol=1e-8),
                "the estimate starts from L_m, the IWAE bound of the first m draws",
            )
        expect_close(
            mine, right, f"your sumo (m={m}, c={cutoff}, ρ={ratio})",
            "L_k = log (1/k) Σ_{j≤k} w_j (logcumsumexp − log k); SUMO = L_m + Σ_{j=1}^{K} "
            "(L_{m+j} − L_{m+j−1}) / P(K ≥ j), with P(K ≥ j) = 1/j up to the cut-off, then "
            "(1/c)·ρ^{j−c}.", atol=1e-5,
        )  # fmt: skip
    passed("your SUMO matches the library's on 128 rows, for two roulettes")


def check_thinned(thinned, seed: int = 0) -> None:
    """``thinned(h0, h, z, p)`` -> H^p = h0 + (z / p)(h − h0), row by row; it must be an
    unbiased estimate of E[h] whatever p is."""
    g = torch.Generator().manual_seed(seed)
    h0, h = (
        torch.randn(5, 3, generator=g, dtype=torch.float64),
        torch.randn(5, 3, generator=g, dtype=torch.float64),
    )
    z = torch.tensor([1.0, 0.0, 1.0, 0.0, 1.0], dtype=torch.float64)
    mine = call(thinned, h0, h, z, 0.4, what="your thinned estimate")
    expect_close(
        mine, h0 + (z / 0.4)[:, None] * (h - h0), "your thinned estimate",
        "H^p = h(X_0) + (Z / p)·(H − h(X_0)): the correction, not the whole of H, is kept "
        "with probability p and then divided by p", atol=1e-10,
    )  # fmt: skip
    n, p = 200_000, 0.3
    base = torch.randn(n, generator=g, dtype=torch.float64) + 2.0  # a biased "IWAE" part
    full = base + torch.randn(n, generator=g, dtype=torch.float64) - 1.0  # E[full] = 1
    keep = (torch.rand(n, generator=g, dtype=torch.float64) < p).double()
    mine = call(thinned, base[:, None], full[:, None], keep, p, what="your thinned estimate")
    expect_unbiased(mine[:, 0], 1.0, "your thinned estimate", "E[H^p] must equal E[H]")
    passed("your thinned correction is exact on fixed inputs and unbiased in a simulation")


def _as_number(value) -> float | None:
    """A Python, NumPy or 0-d torch number as a float; None for anything else (a bool or a
    string too)."""
    if isinstance(value, bool | str):
        return None
    if isinstance(value, torch.Tensor):
        return float(value) if value.numel() == 1 else None
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


def check_expected_k(value: float) -> None:
    """E[K] for the roulette with c = 80, ρ = 0.9: Σ_j P(K ≥ j)."""
    right = Roulette(1, 80, 0.9).expected_k()
    number = _as_number(value)
    require(
        number is not None and abs(number - right) < 1e-3,
        f"E[K] = Σ_{{j≥1}} P(K ≥ j): the harmonic sum H_80 plus the geometric tail "
        f"(1/80) Σ_{{i≥1}} 0.9^i; got {value!r}",
    )
    passed(f"E[K] = {right:.3f}: a SUMO draw costs m + E[K] evaluations on average")
