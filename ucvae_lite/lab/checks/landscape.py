"""Checkers for notebook 07 (the landscape: IWAE, MSC, coupled chains, SUMO).

As in ``training``, the inputs include what defines a correct answer beyond the formula: rows
of very different log-weight scales in one batch, rows whose first draws are hundreds of nats
below a later one, rows whose weights are all zero but the first, entries past m + K_b that
must be ignored, float32; tolerances are what rounding explains (``training.rounding``), and
a known wrong answer gets a hint that names it.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import Tensor

from ucvae_lite.lab.checks._common import (
    call,
    expect_shape,
    expect_unbiased,
    passed,
    prop,
    properties,
    require,
)
from ucvae_lite.lab.checks.training import (
    GLOBAL_MAX,
    MINUS_INF,
    UNDERFLOW,
    _as_number,
    _dtype_of,
    _finite,
    _float32_only,
    one_thread,
    rounding,
)
from ucvae_lite.peers.sumo import Roulette, sumo_from_log_weights

__all__ = ["check_expected_k", "check_sumo", "check_thinned"]

F64, F32 = torch.float64, torch.float32


def _sumo_inputs(seed: int, B: int = 64, N: int = 40):
    g = torch.Generator().manual_seed(seed)
    log_w = torch.randn(B, N, generator=g, dtype=torch.float64) * 1.5 - 3.0
    k = torch.randint(1, N - 3, (B,), generator=g)
    return log_w, k


def _sumo_cases(seed: int):
    """(name, log_w [B, N], k [B], m, cutoff, ratio, label of each row)."""
    N = 40
    for m, cutoff, ratio in ((1, 80, 0.9), (3, 10, 0.8)):
        log_w, k = _sumo_inputs(seed + m, N=N)
        labels = ["an ordinary row"] * len(k)
        g = torch.Generator().manual_seed(seed + 100 + m)
        extra = torch.randn(10, N, generator=g, dtype=F64) * 1.5 - 3.0
        extra_k = torch.randint(4, N - m - 1, (10,), generator=g)
        extra[:4] -= 1000.0  # the whole row 1000 nats lower: exp underflows (float64)
        extra[4:7, : m + 2] -= 800.0  # first draws 800 nats below later ones
        extra[7, 1:] = -math.inf  # all weights zero but the first
        extra_k[8:] = torch.tensor([3, 5])
        for r in (8, 9):  # entries past m + K_b: anything finite, ignored
            extra[r, m + int(extra_k[r]) :] = 300.0
        labels += ["a row 1000 nats below the others"] * 4
        labels += ["a row whose first draws are 800 nats below a later one"] * 3
        labels += ["a row whose weights are all zero but the first (log w = −∞)"]
        labels += ["a row whose entries past m + K_b are large (they must be ignored)"] * 2
        log_w, k = torch.cat([log_w, extra]), torch.cat([k, extra_k])
        yield f"float64, m = {m}, c = {cutoff}, ρ = {ratio}", log_w, k, m, cutoff, ratio, labels
    log_w, k = _sumo_inputs(seed + 7, B=16, N=24)
    log_w[::2] -= 600.0  # image-sized log-weights beside ordinary ones
    k = k.clamp(max=16)
    labels = ["a float32 row near −600 nats", "a float32 row near −3 nats"] * 8
    yield "float32, m = 1, c = 80, ρ = 0.9", log_w.float(), k, 1, 80, 0.9, labels


def _sumo_parts(log_w: Tensor, k: Tensor, roulette: Roulette, logmean: bool = True):
    B, N = log_w.shape
    m = roulette.min_terms
    counts = torch.arange(1, N + 1, dtype=F64)
    bounds = torch.logcumsumexp(log_w.double(), -1) - (counts.log() if logmean else 0.0)
    j = torch.arange(1, N - m + 1)
    deltas = bounds[:, m:] - bounds[:, m - 1 : N - 1]
    return bounds, j, deltas, roulette.survival(j)


def _sumo_tolerance(log_w: Tensor, k: Tensor, roulette: Roulette, dtype) -> Tensor:
    """[B] what rounding explains: each L_k is rounded relative to the size A of the row's
    log-weights and bounds, and term j's rounding error is amplified by 1/P(K ≥ j)."""
    bounds, j, _, survival = _sumo_parts(log_w, k, roulette)
    m = roulette.min_terms
    used = torch.arange(log_w.shape[1])[None] < (m + k)[:, None]
    finite = lambda t: t.masked_fill(~torch.isfinite(t) | ~used, 0.0).abs()  # noqa: E731
    size = finite(bounds).amax(-1) + finite(log_w.double()).amax(-1) + math.log(log_w.shape[1])
    amplification = 1 + 2 * torch.where(j[None] <= k[:, None], 1 / survival, 0.0).sum(-1)
    return rounding(dtype, size, amplification)


def _sumo_mistakes(log_w: Tensor, k: Tensor, r: Roulette):
    """(estimate [B], hint) of typical wrong SUMOs."""
    m, c, rho = r.min_terms, r.cutoff, r.ratio
    bounds, j, deltas, surv = _sumo_parts(log_w, k, r)
    kept = j[None] <= k[:, None]
    base = bounds[:, m - 1]

    def total(terms, mask=kept):
        return torch.where(mask, terms, 0.0).sum(-1)

    jd = j.double()
    previous = torch.where(j > 1, r.survival((j - 1).clamp_min(1)), 1.0)
    lagged = torch.cat([deltas[:, 1:], torch.zeros_like(deltas[:, :1])], 1)
    sums, _, sum_deltas, _ = _sumo_parts(log_w, k, r, logmean=False)
    tail = "Past the cut-off c the survival is geometric: P(K ≥ j) = (1/c)·ρ^{j−c} for j > c."
    one_off_p = (
        "Off by one in P(K ≥ j): term j, Δ_{m+j−1} = L_{m+j} − L_{m+j−1}, is kept when K ≥ j, "
        "so divide it by P(K ≥ j)."
    )
    one_off_mask = "Off by one in the mask: keep exactly the first K terms, j = 1, …, K (j ≤ K)."
    return [
        (
            base + total(deltas * surv),
            "You multiplied each kept difference by P(K ≥ j): divide by it instead (each term is "
            "kept with probability P(K ≥ j), so dividing makes its mean right)",
        ),
        (total(deltas / surv), "The estimate starts from L_m, the IWAE bound of the first m draws"),
        (base + total(deltas / r.survival(j + 1)), one_off_p),
        (base + total(deltas / previous), one_off_p),
        (base + total(deltas / surv, j[None] < k[:, None]), one_off_mask),
        (base + total(deltas / surv, j[None] <= k[:, None] + 1), one_off_mask),
        (
            sums[:, m - 1] + total(sum_deltas / surv),
            "L_k is the log of the MEAN of the first k weights: subtract log k from "
            "logcumsumexp (you used the log of their sum).",
        ),
        (
            base + total(lagged / surv),
            "The differences are lagged by one: term j is L_{m+j} − L_{m+j−1} "
            "(bounds[:, m:] − bounds[:, m−1:N−1]), starting with L_{m+1} − L_m.",
        ),
        (base + total(deltas * jd), tail + " (You used 1/j all the way.)"),
        (base + total(deltas / torch.where(j <= c, 1 / jd, rho ** (jd - c))), tail),
        (base + total(deltas / torch.where(j <= c, 1 / jd, rho**jd / c)), tail),
        (
            bounds.gather(1, (m + k - 1)[:, None])[:, 0],
            "That is L_{m+K}, the IWAE bound of the first m + K draws: biased. SUMO divides "
            "each kept difference by P(K ≥ j).",
        ),
    ]


_SUMO = (
    "the SUMO estimate on ordinary rows (two roulettes)",
    "stable on rows far below the others, rows whose first draws are far below a later one, "
    "and rows all −∞ but the first",
    "ignores the entries past m + K_b",
    "float32 (rows near −600 beside rows near −3)",
)


def _sumo_owner(label: str) -> str:
    if label == "an ordinary row":
        return _SUMO[0]
    return _SUMO[2] if "past m + K_b" in label else _SUMO[1]


@properties(*_SUMO)
@one_thread
def check_sumo(sumo, seed: int = 0) -> None:
    """``sumo(log_w, k, min_terms, cutoff, ratio)`` -> [B]: the SUMO estimate from the
    log-weights [B, N] of each row's first m + K_b draws and K [B]; on ordinary rows, rows
    far below the others, rows whose first draws are far below a later one, rows all −∞ but
    the first, rows with large entries past m + K_b, and float32."""
    rows = 0
    for case, log_w, k, m, cutoff, ratio, labels in _sumo_cases(seed):
        with prop(_SUMO[3] if log_w.dtype == F32 else None):
            rows += _sumo_case(sumo, case, log_w, k, m, cutoff, ratio, labels)
    passed(f"your SUMO matches the library's on {rows} rows, for two roulettes and float32")


def _sumo_case(sumo, case, log_w, k, m, cutoff, ratio, labels) -> int:
    """Check one case; the rows' failures go to their properties (the row that normal use
    reports first goes first). Returns the number of rows."""
    r = Roulette(m, cutoff, ratio)
    right = sumo_from_log_weights(log_w.double(), k, r)
    mine = call(sumo, log_w.clone(), k.clone(), m, cutoff, ratio, what=f"your sumo ({case})")
    if isinstance(mine, Tensor | np.ndarray) and tuple(mine.shape) != tuple(right.shape):
        require(
            False,
            f"your sumo should return one estimate per row, shape {tuple(right.shape)}, got "
            f"{tuple(mine.shape)}: sum the kept terms over j (the last dimension) only.",
        )
    mine = expect_shape(torch.as_tensor(mine), tuple(right.shape), "your sumo").detach()
    tol = _sumo_tolerance(log_w, k, r, _dtype_of(log_w, mine))
    err = (mine.double() - right).abs()
    ok = torch.isfinite(mine) & (err <= tol)
    owners = [_sumo_owner(label) for label in labels]
    if bool(ok.all()):
        for owner in dict.fromkeys(owners):
            with prop(owner):
                pass
        return len(k)
    finite = torch.isfinite(mine)
    first = {}  # each property's reported row: its first non-finite row, else its first bad one
    for b in [*(~finite).nonzero()[:, 0].tolist(), *(~ok).nonzero()[:, 0].tolist()]:
        first.setdefault(owners[b], b)
    order = sorted(first, key=lambda o: (bool(finite[first[o]]), first[o]))
    for owner in dict.fromkeys(owners):  # the rows' properties that pass
        if owner not in first:
            with prop(owner):
                pass
    for owner in order:
        with prop(owner):
            _sumo_row_fails(sumo, case, log_w, k, m, cutoff, ratio, labels, r, right, mine,
                            tol, err, first[owner])  # fmt: skip
    return len(k)


def _sumo_row_fails(sumo, case, log_w, k, m, cutoff, ratio, labels, r, right, mine, tol, err, b):
    """Raise the hint for row ``b`` of a wrong SUMO."""
    hint = ""
    if not bool(torch.isfinite(mine[b])):
        try:
            alone = sumo(log_w[b : b + 1].clone(), k[b : b + 1].clone(), m, cutoff, ratio)
            alone = torch.as_tensor(alone).detach().double().reshape(-1)
            fine = _finite(alone) and bool((alone - right[b]).abs().max() <= tol[b])
        except Exception:  # noqa: BLE001 - an answer that fails on one row is not fine
            fine = False
        hint = (
            GLOBAL_MAX
            if fine
            else "It gives NaN or inf. Use torch.logcumsumexp: a cumulative sum of exp "
            "underflows when the first draws are far below a later one, even after "
            "subtracting the row's max. " + UNDERFLOW
        )
        if bool(torch.isneginf(log_w[b, : m + int(k[b])]).any()):
            hint = MINUS_INF + " " + hint
    elif log_w.dtype == F64:
        for other, h in _sumo_mistakes(log_w, k, r):
            if bool(((mine.double() - other).abs() <= tol + 1e-9 * other.abs()).all()):
                hint = h
                break
        hint = hint or _float32_only(mine, right, tol, mine.dtype)
    require(
        False,
        f"your sumo ({case}) is off by {err[b].item():.3g} on row {b}, {labels[b]} "
        f"(rounding explains {tol[b].item():.1g}). "
        + (
            hint
            or "L_k = log (1/k) Σ_{j≤k} w_j (logcumsumexp − log k); SUMO = L_m + "
            "Σ_{j=1}^{K} (L_{m+j} − L_{m+j−1}) / P(K ≥ j), with P(K ≥ j) = 1/j up to the "
            "cut-off, then (1/c)·ρ^{j−c}."
        ),
    )


def _thinned_cases(seed: int):
    g = torch.Generator().manual_seed(seed)
    randn = lambda *shape: torch.randn(*shape, generator=g, dtype=F64)  # noqa: E731
    yield "[5, 3]", randn(5, 3), randn(5, 3), torch.tensor([1.0, 0, 1, 0, 1], dtype=F64), 0.4
    yield "[3, 3]", randn(3, 3), randn(3, 3), torch.tensor([1.0, 0, 1], dtype=F64), 0.25
    h0, h = randn(4, 2).float() * 100, randn(4, 2).float() * 100
    yield "[4, 2] float32", h0, h, torch.tensor([0.0, 1, 1, 0]), 0.7


def _thinned_mistakes(h0, h, z, p):
    c = z[:, None]
    return [
        (h0 + c * (h - h0), "The kept correction must be divided by p: H^p = h(X_0) + "
         "(Z/p)(H − h(X_0))."),
        ((c / p) * h, "Only the correction H − h(X_0), not the whole of H, is kept with "
         "probability p: add h(X_0) back."),
        (h0 + c * p * (h - h0), "You multiplied by p: divide the kept correction by p."),
        (h0 + ((1 - c) / p) * (h - h0), "Z = 1 means the correction was computed (kept): use "
         "z, not 1 − z."),
        (h0 + (c / p) * (h0 - h), "The correction is H − h(X_0), not h(X_0) − H (sign)."),
        (h + (c / p) * (h0 - h), "Start from IWAE's part h(X_0), and add the thinned "
         "correction (Z/p)(H − h(X_0))."),
        (h0 + (c / (1 - p)) * (h - h0), "Divide by P(Z = 1) = p, not by 1 − p."),
        (h0 + (z[None, :] / p) * (h - h0) if h.shape[0] == h.shape[1] else None,
         "z [B] scales the ROWS: use (z / p)[:, None]; z / p against [B, P] broadcasts along "
         "the columns."),
    ]  # fmt: skip


_THINNED = (
    "exact on fixed inputs (float64)",
    "a square case: z scales the rows",
    "float32",
    "unbiased in a simulation (E[H^p] = E[H])",
)


@properties(*_THINNED)
@one_thread
def check_thinned(thinned, seed: int = 0) -> None:
    """``thinned(h0, h, z, p)`` -> H^p = h0 + (z / p)(h − h0), row by row (in float64 and
    float32, a square case too); it must be an unbiased estimate of E[h] whatever p is."""
    what = "your thinned estimate"
    for owner, (case, h0, h, z, p) in zip(_THINNED[:3], _thinned_cases(seed), strict=True):
        with prop(owner):
            _thinned_case(thinned, what, case, h0, h, z, p)
    with prop(_THINNED[3]):
        g = torch.Generator().manual_seed(seed + 1)
        n, p = 200_000, 0.3
        base = torch.randn(n, generator=g, dtype=torch.float64) + 2.0  # a biased "IWAE" part
        full = base + torch.randn(n, generator=g, dtype=torch.float64) - 1.0  # E[full] = 1
        keep = (torch.rand(n, generator=g, dtype=torch.float64) < p).double()
        mine = call(thinned, base[:, None], full[:, None], keep, p, what=what)
        mine = expect_shape(torch.as_tensor(mine), (n, 1), what).detach()
        expect_unbiased(mine[:, 0], 1.0, what, "E[H^p] must equal E[H]")
    passed("your thinned correction is exact on fixed inputs and unbiased in a simulation")


def _thinned_case(thinned, what, case, h0, h, z, p) -> None:
    want = h0.double() + (z.double() / p)[:, None] * (h.double() - h0.double())
    mine = call(thinned, h0.clone(), h.clone(), z.clone(), p, what=f"{what} ({case})")
    mine = expect_shape(torch.as_tensor(mine), tuple(want.shape), f"{what} ({case})").detach()
    size = h0.double().abs() + (z.double() / p)[:, None] * (h.double().abs() + h0.double().abs())
    tol = rounding(_dtype_of(h0, mine), size, 4.0)
    if bool(torch.isfinite(mine).all()) and bool(((mine.double() - want).abs() <= tol).all()):
        return
    hint = next(
        (
            hint
            for other, hint in _thinned_mistakes(h0.double(), h.double(), z.double(), p)
            if other is not None and bool(((mine.double() - other).abs() <= tol).all())
        ),
        "H^p = h(X_0) + (Z / p)·(H − h(X_0)): the correction, not the whole of H, is kept "
        "with probability p and then divided by p",
    )
    err = (mine.double() - want).abs().max().item()
    require(False, f"{what} ({case}) is off by up to {err:.3g}. {hint}")


def _expected_k_mistakes(c: int = 80, rho: float = 0.9) -> list[tuple[float, str]]:
    harmonic = sum(1.0 / j for j in range(1, c + 1))
    tail = rho / (c * (1 - rho))
    return [
        (harmonic, "The geometric tail is missing: add (1/c) Σ_{i≥1} ρ^i = ρ / (c (1 − ρ))."),
        (harmonic + rho / (1 - rho), "The tail P(K ≥ c + i) = (1/c)·ρ^i has the factor 1/c."),
        (harmonic + 1 / (c * (1 - rho)), "The tail starts at j = c + 1 (i ≥ 1): P(K ≥ c) = 1/c "
         "is already in the harmonic sum H_c."),
        (harmonic - 1 / c + tail, "Off by one at the cut-off: the harmonic part runs j = 1..c "
         "(H_80 includes 1/80)."),
        (1 + harmonic + tail, "That is the cost m + E[K] (m = 1): the question asks for E[K]."),
        (math.log(c) + 0.5772156649 + tail, "H_80 ≈ ln 80 + γ is 1/(2·80) short: sum 1/j "
         "exactly."),
        (1 / (1 - rho), "That is the mean of a geometric variable: E[K] = Σ_j P(K ≥ j), the "
         "harmonic sum H_80 plus the geometric tail."),
    ]  # fmt: skip


@one_thread
def check_expected_k(value: float) -> None:
    """E[K] for the roulette with c = 80, ρ = 0.9: Σ_j P(K ≥ j). A Python, NumPy or 0-d torch
    number, accepted to 3 decimals (as the ✓ message prints it), rounded or truncated."""
    right = Roulette(1, 80, 0.9).expected_k()
    number = _as_number(value)
    require(
        number is not None,
        f"E[K] should be one number (a Python float, a NumPy number or a 0-d tensor), got "
        f"{value!r}",
    )
    tol = 1e-3  # one unit in the 3rd decimal
    if abs(number - right) >= tol:
        hint = next((h for v, h in _expected_k_mistakes() if abs(number - v) < tol), "")
        require(
            False,
            f"E[K] is not {number:.4g}. "
            + (
                hint
                or "E[K] = Σ_{j≥1} P(K ≥ j): the harmonic sum H_80 plus the geometric tail "
                "(1/80) Σ_{i≥1} 0.9^i."
            ),
        )
    passed(f"E[K] = {right:.3f}: a SUMO draw costs m + E[K] evaluations on average")
