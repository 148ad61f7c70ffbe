"""Checkers for the lab's exercises (notebooks 00-04).

Code exercises (the learner writes a function; the checker runs it on fixed seeds against the
library and against exact answers):

* 00  ``check_grad_b``: ∇_b log p(x, z) of the linear-Gaussian model, in closed form.
* 01  ``check_iwae_bound``: log (1/S) Σ_s w_s from log-weights, without overflow.
* 01  ``check_iwae_gradient``: IWAE's θ-gradient Σ_s w̄_s ∇_θ log p_θ(x, z_s) by autograd.
* 02  ``check_cis_step``: one conditional importance sampling step.
* 03  ``check_maximal_coupling``: a draw (i, j) from the maximal coupling of two categoricals.
* 03  ``check_coupled_step``: one coupled CIS step (coupled selection + common fresh draws).
* 04  ``check_hkm``: H_{k:m} from the recorded values h(X_t), h(Y_{t−1}) of one chain pair.
* 04  ``check_budget_crossover``: the budget above which an unbiased estimator wins in MSE.

Derivation exercises with a numeric answer: ``check_value(name, answer)`` (answers in
``ANSWERS``) and ``check_gap_prediction`` (the answer depends on the notebook's model).

Every checker prints "✓ ..." when right and raises ``CheckFailed`` (an ``AssertionError``)
with a hint when wrong. ``seed`` changes the random cases (the hidden tests use another).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor

from .. import hkm
from ..budget import ErrorBudget, crossover_budget
from ..iwae import iwae_bound, normalized_weights
from ..kernels import CISState
from ..linear_gaussian import LinearGaussian
from ..stats import z_threshold
from ._common import CheckFailed, call, expect_close, expect_shape, passed, require

__all__ = [
    "ANSWERS",
    "check_budget_crossover",
    "check_cis_step",
    "check_coupled_step",
    "check_gap_prediction",
    "check_grad_b",
    "check_hkm",
    "check_iwae_bound",
    "check_iwae_gradient",
    "check_maximal_coupling",
    "check_value",
]


def _model(seed: int, latent_dim: int = 2, obs_dim: int = 4) -> tuple[LinearGaussian, Tensor]:
    """The lab's model (seed 0) or a variant, and one data point x [1, p] from it."""
    model = LinearGaussian.example(latent_dim, obs_dim, sigma=0.7, seed=seed)
    return model, model.sample_data(1, torch.Generator().manual_seed(seed + 1))


def _frequency_z(index: Tensor, probs: Tensor) -> tuple[float, Tensor]:
    """Largest |z| of the frequencies of ``index`` [n] against ``probs`` [S], and the
    frequencies; a category of probability 0 that occurs gives z = inf. The variance is
    floored at that of probability 1/n, where the normal approximation of rare counts fails."""
    n, S = index.numel(), probs.numel()
    freq = torch.bincount(index.long().clamp(0, S - 1), minlength=S).double() / n
    p = probs.double().cpu()
    se = torch.where(p > 0, (p.clamp_min(1 / n) * (1 - p) / n).sqrt(), 0.0)
    z = torch.where(se > 0, (freq - p) / se.clamp_min(1e-300), (freq - p).abs() * math.inf)
    z = torch.nan_to_num(z, nan=0.0)
    return z.abs().max().item(), freq


def _fmt(v: Tensor) -> str:
    return "[" + ", ".join(f"{x:.2f}" for x in v.tolist()) + "]"


# --- 00: Fisher's identity ----------------------------------------------------------------


def check_grad_b(fn: Callable, seed: int = 0) -> None:
    """``fn(model, x, z)`` must return ∇_b log p(x, z) [n, p] for latents z [n, d]."""
    for latent, obs in ((2, 4), (3, 5)):
        model, x = _model(seed, latent, obs)
        z = torch.randn(6, latent, generator=torch.Generator().manual_seed(seed), dtype=x.dtype)
        got = call(fn, model, x, z, what="your grad_b")
        b = model.b.detach().clone().requires_grad_(True)
        own = LinearGaussian(model.W, b, model.log_sigma)
        rows = [torch.autograd.grad(own.log_joint(x, zi[None, None])[0, 0], b)[0] for zi in z]
        expected = torch.stack(rows)
        got = expect_shape(got, tuple(expected.shape), "grad_b(model, x, z)")
        sigma = model.sigma.item()
        hint = "∇_b log N(x; Wz + b, σ²I) = (x − Wz − b) / σ²."
        if torch.allclose(got.double(), -expected, atol=1e-8):
            hint = "The sign is flipped: the residual is x − Wz − b. " + hint
        elif torch.allclose(got.double(), expected * sigma, atol=1e-8):
            hint = "Divide by σ² (the variance), not by σ. " + hint
        elif torch.allclose(got.double(), expected * sigma**2, atol=1e-8):
            hint = "Divide the residual by σ². " + hint
        expect_close(got, expected, "grad_b(model, x, z)", hint)
    passed("grad_b matches autograd of log p(x, z) for two models")


# --- 01: IWAE -------------------------------------------------------------------------------


def check_iwae_bound(fn: Callable, seed: int = 0) -> None:
    """``fn(log_w)`` must return log (1/S) Σ_s exp(log_w[..., s]) for log-weights [B, S]."""
    g = torch.Generator().manual_seed(seed)
    cases = {
        "moderate log-weights": torch.randn(7, 5, generator=g, dtype=torch.float64),
        "log-weights near −1000 (a 784-pixel image)": -1000
        + 3 * torch.randn(4, 10, generator=g, dtype=torch.float64),
        "log-weights near +700": 700 + 3 * torch.randn(4, 3, generator=g, dtype=torch.float64),
    }
    for what, log_w in cases.items():
        got = call(fn, log_w, what="your iwae_bound")
        expected = iwae_bound(log_w)
        got = expect_shape(got, tuple(expected.shape), "iwae_bound(log_w) (one value per row)")
        hint = "L = log (1/S) Σ_s w_s: average the weights, then take the log."
        if not bool(torch.isfinite(got).all()):
            hint = (
                "Some values are inf or NaN: exp(log w) over/underflows. Subtract the row's "
                "maximum first (log Σ exp(a_s) = a_max + log Σ exp(a_s − a_max)), or use "
                "torch.logsumexp."
            )
        elif torch.allclose(got.double(), log_w.double().mean(-1), atol=1e-6):
            hint = "You averaged log w: that is the ELBO (S = 1 bound). " + hint
        elif torch.allclose(got.double(), expected + math.log(log_w.shape[-1]), atol=1e-6):
            hint = "You forgot the 1/S (subtract log S). " + hint
        expect_close(got, expected, f"iwae_bound on {what}", hint, atol=1e-6)
    passed("iwae_bound is right, and stable for log-weights of any size")


def _iwae_case(seed: int, S: int):
    model, x = _model(seed)
    q = model.proposal(x, shift=0.5, scale=1.5)
    z = q.sample(S, torch.Generator().manual_seed(seed + 7))
    return model, x, z, q.log_prob(z)


def check_iwae_gradient(fn: Callable, seed: int = 0) -> None:
    """``fn(model, x, z, log_q)`` must return ∇_θ log (1/S) Σ_s w_s [P], θ = (W, b, log σ),
    for proposal draws z [1, S, d] with log-densities log_q [1, S] (constants in θ)."""
    from ..teaching import joint_gradients

    for S in (3, 6):
        model, x, z, log_q = _iwae_case(seed, S)
        got = call(fn, model, x, z, log_q, what="your iwae_gradient")
        per_particle = joint_gradients(model, x, z[0])  # [S, P]: ∇_θ log p(x, z_s)
        wbar = normalized_weights(model.log_joint(x, z).detach() - log_q)[0]
        expected = wbar @ per_particle
        got = expect_shape(got, tuple(expected.shape), "iwae_gradient (flattened W, b, log σ)")
        hint = (
            "∇_θ log (1/S) Σ w_s = Σ_s w̄_s ∇_θ log p_θ(x, z_s): build log w = log p_θ(x, z) − "
            "log q with θ requiring grad, take logsumexp − log S, and backpropagate."
        )
        if torch.allclose(got.double(), per_particle.mean(0), atol=1e-8):
            hint = "You weighted every particle by 1/S: that is the ELBO's gradient. " + hint
        elif torch.allclose(got.double(), per_particle.sum(0), atol=1e-8):
            hint = "You summed the particles' gradients: weight them by w̄_s. " + hint
        expect_close(got, expected, "iwae_gradient", hint)
    passed("iwae_gradient equals Σ_s w̄_s ∇_θ log p_θ(x, z_s)")


def check_gap_prediction(
    answer: float,
    model: LinearGaussian,
    x: Tensor,
    shift: float,
    scale: float,
    num_samples: int,
    rtol: float = 0.1,
) -> None:
    """``answer`` should be V / (2S), the leading term of log p(x) − L_S, V = Var_q[w/p(x)]
    (exact here; an estimate from 10⁵ draws is within ``rtol``)."""
    from ..teaching import relative_weight_variance

    V = relative_weight_variance(model, x, shift, scale)
    expected = V / (2 * num_samples)
    require(isinstance(answer, int | float), f"give a number, got {type(answer).__name__}")
    hint = "The delta method gives log p(x) − L_S ≈ Var_q[w / p(x)] / (2S)."
    if abs(answer - V / num_samples) <= rtol * V / num_samples:
        hint = "You are off by a factor 2: the second-order term of log(1 + ε) is −ε²/2. " + hint
    elif abs(answer - V / 2) <= rtol * V / 2:
        hint = "You forgot to divide by S: the mean of S weights has variance V / S. " + hint
    require(
        abs(answer - expected) <= rtol * expected,
        f"the predicted gap is {answer:.4g}, but V/(2S) = {expected:.4g}. {hint}",
    )
    passed(f"predicted gap V/(2S) = {expected:.4f} (V = {V:.3f} exactly)")


# --- 02: one CIS step -----------------------------------------------------------------------


def _as_state(result, what: str) -> CISState:
    if isinstance(result, tuple) and len(result) == 2 and isinstance(result[0], CISState):
        result = result[0]  # (state, info), as kernels.cis_step returns
    require(
        isinstance(result, CISState),
        f"{what} should return a CISState(particles, log_weights), got {type(result).__name__}",
    )
    return result


def _slot_of(ref: Tensor, old: Tensor) -> Tensor:
    """Which slot of ``old`` [n, S, D] holds ``ref`` [n, D] (−1 where none)."""
    hit = (old == ref[:, None, :]).all(-1)
    return torch.where(hit.any(1), hit.double().argmax(1), -1)


def _fresh_ok(new: CISState, old: CISState, target, what: str) -> None:
    """Slots 2..S: new particles (none of the old ones), their log-weights, drawn from q."""
    fresh = new.particles[:, 1:]
    stale = (fresh[:, :, None, :] == old.particles[:, None, :, :]).all(-1).any()
    require(
        not bool(stale),
        f"{what}: slots 2..S must be fresh proposal draws (target.sample), but some are old "
        "particles of the set. Keep only the selected particle; draw S − 1 new ones.",
    )
    lw = target.log_weight(fresh)
    expect_close(
        new.log_weights[:, 1:],
        lw.detach(),
        f"{what}: the log-weights of slots 2..S",
        "Evaluate target.log_weight on the fresh draws.",
        atol=1e-8,
    )
    mean = target.proposal.loc[0]
    z = (fresh.reshape(-1, fresh.shape[-1]).mean(0) - mean) / (
        fresh.reshape(-1, fresh.shape[-1]).std(0) / math.sqrt(fresh.shape[0] * fresh.shape[1])
    )
    require(
        z.abs().max().item() < z_threshold(z.numel()),
        f"{what}: the fresh draws do not have the proposal's mean (|z| = "
        f"{z.abs().max().item():.1f}); draw them with target.sample(S − 1, generator).",
    )


def _cis_case(seed: int, n: int, S: int = 5):
    """A fixed particle set (one data point), copied into n rows, and the matching target."""
    model, x = _model(seed)
    target = model.target(x.expand(n, -1), shift=0.5, scale=1.5)
    one = model.target(x, shift=0.5, scale=1.5)
    for s in range(200):  # a set whose reference and two other slots all have some weight
        z = one.sample(S, torch.Generator().manual_seed(1000 * seed + s))
        w = normalized_weights(one.log_weight(z))[0]
        if 0.15 < w[0] < 0.5 and w.max() < 0.6 and int((w > 0.08).sum()) >= 3:
            break
    state = CISState(z.expand(n, -1, -1).clone(), one.log_weight(z).detach().expand(n, -1).clone())
    return target, state


def check_cis_step(fn: Callable, seed: int = 0, n: int = 4000) -> None:
    """``fn(target, state, generator)`` must return the next CISState of one CIS step."""
    target, state = _cis_case(seed, n)
    S = state.particles.shape[1]
    g = torch.Generator().manual_seed(seed)
    new = _as_state(call(fn, target, state, g, what="your cis_step"), "cis_step")
    expect_shape(new.particles, tuple(state.particles.shape), "the new particles")
    expect_shape(new.log_weights, tuple(state.log_weights.shape), "the new log_weights")
    slot = _slot_of(new.particles[:, 0], state.particles)
    require(
        bool((slot >= 0).all()),
        "slot 1 of the new set must hold the selected particle of the old set (the new "
        "reference), unchanged.",
    )
    carried = state.log_weights[torch.arange(n), slot]
    expect_close(
        new.log_weights[:, 0],
        carried,
        "the reference's log-weight",
        "Carry the selected particle's log-weight over (no need to evaluate it again).",
    )
    wbar = normalized_weights(state.log_weights[0])
    worst, freq = _frequency_z(slot, wbar)
    hint = f"select slot s with probability w̄_s = {_fmt(wbar)}; you selected {_fmt(freq)}."
    if bool((freq.max() > 0.999) & (wbar.max() < 0.99)):
        hint = "Draw at random (torch.multinomial), do not take the largest weight. " + hint
    elif freq[0] == 0 and wbar[0] > 0.01:
        hint = "The reference (slot 1) must be a candidate too. " + hint
    elif bool(((freq - 1 / S).abs() < 0.03).all()):
        hint = "Slots must be selected ∝ their weights, not uniformly. " + hint
    require(worst < z_threshold(S), f"In {n} steps from one set: {hint}")
    _fresh_ok(new, state, target, "cis_step")
    passed("one CIS step: selection ∝ w̄ (reference included), S − 1 fresh draws from q")


# --- 03: the maximal coupling and the coupled step -----------------------------------------

_COUPLING_CASES = [
    ([0.5, 0.3, 0.2, 0.0], [0.2, 0.3, 0.3, 0.2]),
    ([0.7, 0.1, 0.1, 0.1], [0.7, 0.1, 0.1, 0.1]),  # equal: always i = j
    ([0.5, 0.5, 0.0, 0.0], [0.0, 0.0, 0.5, 0.5]),  # disjoint: never i = j
    ([0.05, 0.9, 0.05, 0.0], [0.3, 0.3, 0.2, 0.2]),
]


def check_maximal_coupling(fn: Callable, seed: int = 0, n: int = 20_000) -> None:
    """``fn(p, q, generator)`` for probabilities p, q [B, S] must return indices (i, j), each
    [B], with i ~ p, j ~ q and P(i = j) = Σ_s min(p_s, q_s), the largest possible."""
    g = torch.Generator().manual_seed(seed)
    limit = z_threshold(3 * 4 * len(_COUPLING_CASES))
    for pw, qw in _COUPLING_CASES:
        p = torch.tensor(pw, dtype=torch.float64)
        q = torch.tensor(qw, dtype=torch.float64)
        out = call(fn, p.expand(n, -1), q.expand(n, -1), g, what="your maximal_coupling")
        require(
            isinstance(out, tuple | list) and len(out) == 2,
            "maximal_coupling should return a pair (i, j) of index tensors",
        )
        i, j = (expect_shape(v, (n,), "each of i, j (one index per row)") for v in out)
        alpha = torch.minimum(p, q).sum().item()
        zi, fi = _frequency_z(i, p)
        zj, fj = _frequency_z(j, q)
        common = "with probability α draw one index from min(p, q)/α for both; otherwise draw "
        common += "i from (p − min(p, q))/(1 − α) and j from (q − min(p, q))/(1 − α)."
        require(
            zi < limit and zj < limit,
            f"for p = {_fmt(p)}, q = {_fmt(q)} the marginals are off: i has frequencies "
            f"{_fmt(fi)}, j has {_fmt(fj)}. Each of i and j must keep its own distribution: "
            + common,
        )
        same = (i == j).double().mean().item()
        se = math.sqrt(max(alpha * (1 - alpha), 1 / n) / n)
        hint = common
        indep = (p * q).sum().item()
        if abs(same - indep) < abs(same - alpha):
            hint = f"Independent draws give Σ p q = {indep:.3f}. " + hint
        require(
            abs(same - alpha) < limit * se,
            f"for p = {_fmt(p)}, q = {_fmt(q)}: P(i = j) is {same:.3f} but the overlap "
            f"α = Σ min(p, q) is {alpha:.3f}. {hint}",
        )
    passed("maximal coupling: i ~ p, j ~ q, and P(i = j) = Σ min(p, q) = 1 − TV(p, q)")


def _coupled_case(seed: int, n: int, S: int = 5) -> tuple:
    """X_1 and Y_0 of a real lag-1 run (shared fresh slots, different references) in n rows."""
    from ..teaching import lag_coupled_chains

    model, x = _model(seed)
    one = model.target(x, shift=0.5, scale=1.5)
    for s in range(100):  # a pair whose selection probabilities overlap, but not fully
        run = lag_coupled_chains(one, S, 3, generator=torch.Generator().manual_seed(seed + s))
        wx, wy = (normalized_weights(v.log_weights[0]) for v in (run.xs[1], run.ys[0]))
        alpha = torch.minimum(wx, wy).sum().item()
        if 0.25 < alpha < 0.9 and torch.minimum(wx, wy)[1:].sum() > 0.15:
            break

    def rows(st: CISState) -> CISState:
        return CISState(
            st.particles.expand(n, -1, -1).clone(), st.log_weights.expand(n, -1).clone()
        )

    target = model.target(x.expand(n, -1), shift=0.5, scale=1.5)
    return target, rows(run.xs[1]), rows(run.ys[0])


def check_coupled_step(fn: Callable, seed: int = 0, n: int = 4000) -> None:
    """``fn(target, x, y, generator)`` for chain states X_t, Y_{t−1} must return (X_{t+1}, Y_t):
    indices from the maximal coupling of w̄(X_t) and w̄(Y_{t−1}), then the same S − 1 fresh
    draws in both sets."""
    target, xs, ys = _coupled_case(seed, n)
    g = torch.Generator().manual_seed(seed)
    out = call(fn, target, xs, ys, g, what="your coupled_step")
    require(
        isinstance(out, tuple | list) and len(out) == 2,
        "coupled_step should return the pair of new states (X_{t+1}, Y_t)",
    )
    nx, ny = (_as_state(v, "coupled_step") for v in out)
    for st, who in ((nx, "X"), (ny, "Y")):
        expect_shape(st.particles, tuple(xs.particles.shape), f"the particles of {who}")
    require(
        bool((nx.particles[:, 1:] == ny.particles[:, 1:]).all()),
        "the two chains must take the SAME fresh draws in slots 2..S (common random numbers): "
        "draw them once and put them into both sets. With separate draws the chains can "
        "never select a common particle, so they never meet.",
    )
    ix, iy = _slot_of(nx.particles[:, 0], xs.particles), _slot_of(ny.particles[:, 0], ys.particles)
    require(
        bool((ix >= 0).all() and (iy >= 0).all()),
        "slot 1 of each new set must hold the particle that chain selected from its own old "
        "set (X from X_t, Y from Y_{t−1}).",
    )
    wx, wy = normalized_weights(xs.log_weights[0]), normalized_weights(ys.log_weights[0])
    limit = z_threshold(2 * len(wx) + 1)
    for idx, w, who in ((ix, wx, "X"), (iy, wy, "Y")):
        worst, freq = _frequency_z(idx, w)
        require(
            worst < limit,
            f"chain {who} must select slot s with probability w̄_s = {_fmt(w)}; it selected "
            f"{_fmt(freq)}. Each chain alone must make an exact CIS step.",
        )
    alpha = torch.minimum(wx, wy).sum().item()
    same = (ix == iy).double().mean().item()
    se = math.sqrt(alpha * (1 - alpha) / n)
    indep = (wx * wy).sum().item()
    hint = "Draw (ℓ_X, ℓ_Y) from the maximal coupling of w̄(X_t) and w̄(Y_{t−1})."
    if abs(same - indep) < abs(same - alpha):
        hint = "The selections look independent. " + hint
    require(
        abs(same - alpha) < limit * se,
        f"P(ℓ_X = ℓ_Y) is {same:.3f}, but the overlap α = Σ min(w̄^X, w̄^Y) is {alpha:.3f}. " + hint,
    )
    _fresh_ok(nx, xs, target, "coupled_step")
    passed(
        "coupled step: each chain an exact CIS step, P(same slot) = α, shared fresh draws "
        f"(here P(meet) = Σ_(s≥2) min(w̄^X, w̄^Y) = {torch.minimum(wx, wy)[1:].sum():.3f})"
    )


# --- 04: H_{k:m} and the crossover budget ---------------------------------------------------


def _hkm_reference(h_x: Tensor, h_y: Tensor, tau: int, k: int, m: int) -> float:
    """H_{k:m} from the library's weights (``hkm.hkm_weights``), term by term."""
    total = 0.0
    for t in range(len(h_x)):
        a, b = hkm.hkm_weights(t, k, m, torch.tensor([t < tau]), torch.float64)
        total += a.item() * h_x[t].item() + (b.item() * h_y[t - 1].item() if t >= 1 else 0.0)
    return total


def _hkm_variants(h_x: Tensor, h_y: Tensor, tau: int, k: int, m: int) -> dict[str, float]:
    """Typical mistakes, to name the one a wrong answer matches."""
    avg = h_x[k : m + 1].mean().item()
    n = m - k + 1

    def corr(weight, lag: int = 1) -> float:
        return sum(
            weight(t) * (h_x[t].item() - h_y[t - lag].item())
            for t in range(k + 1, tau)
            if 0 <= t - lag < len(h_y)
        )

    return {
        "the weights must be capped at 1: min(1, (t−k)/(m−k+1))": avg + corr(lambda t: (t - k) / n),
        "every correction needs its weight min(1, (t−k)/(m−k+1)), not 1": avg + corr(lambda t: 1.0),
        "pair h(X_t) with h(Y_{t−1}) (the lag), not with h(Y_t)": avg
        + corr(lambda t: min(1, (t - k) / n), lag=0),
        "the average runs over t = k..m inclusive (m − k + 1 terms)": h_x[k:m].mean().item()
        + corr(lambda t: min(1, (t - k) / n))
        if m > k
        else math.nan,
        "the corrections stop at t = τ − 1 and start at t = k + 1": avg,
    }


def check_hkm(fn: Callable, seed: int = 0) -> None:
    """``fn(h_x, h_y, tau, k, m)`` must return H_{k:m} (a number) for one chain pair, given
    h_x [T+1] = h(X_0..X_T), h_y [T] = h(Y_0..Y_{T−1}) with T ≥ max(τ, m), and τ."""
    from ..teaching import lag_coupled_chains

    model, x = _model(seed)
    target = model.target(x.expand(40, -1), shift=0.5, scale=1.5)
    settings = [(0, 0), (1, 3), (2, 2), (0, 4), (2, 6)]
    # m = 40: each pair keeps running to step 40 (past τ), so h(X_τ) = h(Y_{τ−1}) is there too
    run = lag_coupled_chains(target, 3, 40, generator=torch.Generator().manual_seed(seed))
    hx, hy = run.h_x()[..., 0], run.h_y()[..., 0]
    checked = 0
    for pair in range(hx.shape[1]):
        tau = int(run.tau[pair])
        if tau >= 40:
            continue
        T = max(tau, 10)
        h_x, h_y = hx[: T + 1, pair].clone(), hy[:T, pair].clone()
        for k, m in settings:
            got = call(fn, h_x, h_y, tau, k, m, what="your h_km")
            require(
                isinstance(got, int | float) or (isinstance(got, Tensor) and got.numel() == 1),
                f"h_km should return one number, got {type(got).__name__}",
            )
            got = float(got)
            expected = _hkm_reference(h_x, h_y, tau, k, m)
            if abs(got - expected) > 1e-9 * max(1.0, abs(expected)):
                named = [
                    why
                    for why, v in _hkm_variants(h_x, h_y, tau, k, m).items()
                    if abs(v - got) < 1e-9 * max(1.0, abs(v))
                ]
                raise CheckFailed(
                    f"for (k, m) = ({k}, {m}) and τ = {tau} you returned {got:.6f}, expected "
                    f"{expected:.6f}. "
                    + (f"Hint: {named[0]}." if named else "Check the average (t = k..m), the ")
                    + (
                        ""
                        if named
                        else "correction range (t = k+1..τ−1), its pairing h(X_t) − h(Y_{t−1}) "
                        "and its weight min(1, (t−k)/(m−k+1))."
                    )
                )
            checked += 1
    passed(f"H_{{k:m}} right in all {checked} cases (recorded chain pairs × (k, m) settings)")


def check_budget_crossover(fn: Callable, seed: int = 0, data_noise: bool = False) -> None:
    """``fn(unbiased, biased)`` for two ``budget.ErrorBudget``s must return the crossover
    budget C* = (c_u V_u − c_i V_i) / |b_i|² (log-weight evaluations). ``data_noise``: the
    budgets carry minibatch noise ``data_variance`` (tr Σ_data), which each V includes."""
    g = torch.Generator().manual_seed(seed)
    for _ in range(8):
        r = torch.rand(6, generator=g, dtype=torch.float64).tolist()
        data = 5 + 50 * r[5] if data_noise else 0.0
        u = ErrorBudget("u", 0.0, 1e-4, 1 + 5 * r[0], 0.01, 10 + 30 * r[1], data_variance=data,
                        unbiased=True)  # fmt: skip
        b = ErrorBudget("i", 0.01 + 0.1 * r[2], 1e-4, 0.1 + r[3], 0.001, float(2 + int(20 * r[4])),
                        data_variance=data)  # fmt: skip
        got = call(fn, u, b, what="your crossover")
        require(isinstance(got, int | float | Tensor), "crossover should return a number")
        expected = crossover_budget(u, b)[0]
        hint = "MSE(C) = |b|² + c V / C; set the two equal and solve for C."
        if abs(float(got) - (u.variance - b.variance) / b.bias2) < 1e-6 * abs(expected):
            hint = (
                "The budget buys C / c runs, so the noise term is c·V / C: multiply each "
                "variance by its cost. " + hint
            )
        no_data = (u.cost * u.variance - b.cost * b.variance) / b.bias2
        if data_noise and abs(float(got) - no_data) < 1e-6 * abs(no_data):
            hint = (
                "You left out the minibatch noise tr Σ_data (``data_variance``): every method "
                "pays it, each at its own cost c. " + hint
            )
        require(
            abs(float(got) - expected) <= 1e-6 * abs(expected),
            f"C* should be {expected:.4g} for c_u = {u.cost:.3g}, V_u = {u.variance:.3g}, "
            f"c_i = {b.cost:.3g}, V_i = {b.variance:.3g}, |b_i|² = {b.bias2:.3g}"
            + (f", tr Σ_data = {data:.3g}" if data_noise else "")
            + f"; you returned {float(got):.4g}. {hint}",
        )
    extra = " with V = tr Σ_est + tr Σ_data" if data_noise else ""
    passed(f"C* = (c_u V_u − c_i V_i) / |b_i|²{extra}")


# --- numeric answers to derivation exercises ------------------------------------------------


@dataclass(frozen=True)
class Answer:
    """The right value, an absolute tolerance, and what a wrong answer may mean."""

    value: float | tuple[float, ...]
    tol: float
    hint: str
    mistakes: tuple[tuple[float | tuple[float, ...], str], ...] = ()


def _deg(S: int, t: int) -> float:
    return (S + 1) / (S + 1 + (S - 1) * (t - 1))


ANSWERS: dict[str, Answer] = {
    "02_sup_weight": Answer(
        1.5**20,
        1.0,
        "For centred Gaussians the ratio p(z|x)/q(z) is largest at the mode: it is c^d.",
        ((1.5**10, "that is c^(d/2): the ratio of densities carries det(c²Σ)^(1/2) = c^d"),),
    ),
    "02_holding_time": Answer(
        (9 + 1.5**20) / 9,
        0.1 * (9 + 1.5**20) / 9,
        "From a reference at the mode, P(move) = E[Σ_fresh / (c^d + Σ_fresh)] with Σ_fresh the "
        "fresh weights in units of p(x), mean S − 1; x/(a + x) is concave, so by Jensen "
        "P(move) ≤ (S − 1)/(c^d + S − 1), and the expected wait 1/P(move) is at least the inverse.",
        ((9 / (9 + 1.5**20), "that is P(move); the expected number of steps is its inverse"),),
    ),
    "03_expected_tau_S4": Answer(
        1 + 4 / 3,
        1e-3,
        "τ ≥ 2, and from step 2 on each coupled step meets with probability (S−1)/S, "
        "independently: τ − 1 is geometric with mean S/(S−1).",
        (
            (4 / 3, "that is E[τ − 1]: add the first step"),
            (1 + 3 / 4, "the mean of a geometric variable is 1/p, with p = (S−1)/S"),
        ),
    ),
    "03_degenerate_tail_S10_t10": Answer(
        _deg(10, 10),
        1e-4,
        "τ > t iff the largest of the S + 1 + (S−1)(t−1) weights drawn so far is one of the "
        "S + 1 in X_0 and Y_0's reference: every draw is equally likely to be the largest.",
        (
            (11 / (11 + 9 * 10), "count the fresh draws: t − 1 coupled steps, S − 1 each"),
            (0.1, "1/t is only the shape of the tail; the constants come from counting draws"),
        ),
    ),
    "04_correction_weights": Answer(
        (0.25, 0.5, 0.75, 1.0, 1.0),
        1e-6,
        "h(X_t) − h(Y_{t−1}) appears in H_l for l = k..min(m, t−1): in min(m−k+1, t−k) of the "
        "m−k+1 estimators that H_{k:m} averages.",
        (
            ((1 / 3, 2 / 3, 1.0, 1.0, 1.0), "there are m − k + 1 = 4 estimators, not m − k"),
            ((0.25, 0.5, 0.75, 1.0, 1.25), "a weight cannot exceed 1: cap it (min)"),
        ),
    ),
}


def check_value(name: str, answer) -> None:
    """Check a numeric answer to the derivation exercise ``name`` (a key of ``ANSWERS``)."""
    if name not in ANSWERS:
        raise KeyError(f"no exercise {name!r}; known: {sorted(ANSWERS)}")
    ans = ANSWERS[name]
    require(answer is not None, "assign your answer first")
    try:
        got = tuple(float(v) for v in answer) if isinstance(ans.value, tuple) else float(answer)
    except (TypeError, ValueError) as e:
        raise CheckFailed(f"{name}: give a number (or a list of numbers), got {answer!r}") from e

    def close(a, b, tol) -> bool:
        if isinstance(b, tuple):
            return (
                isinstance(a, tuple)
                and len(a) == len(b)
                and all(abs(x - y) <= tol for x, y in zip(a, b, strict=True))
            )
        return abs(a - b) <= tol

    if close(got, ans.value, ans.tol):
        shown = ", ".join(f"{v:.4g}" for v in got) if isinstance(got, tuple) else f"{got:.4g}"
        passed(f"{name}: {shown} is right")
        return
    for wrong, why in ans.mistakes:
        size = max(abs(v) for v in wrong) if isinstance(wrong, tuple) else abs(wrong)
        if close(got, wrong, min(ans.tol, 0.01 * size) + 1e-12):
            raise CheckFailed(f"{name}: not quite: {why}. {ans.hint}")
    raise CheckFailed(f"{name}: {answer!r} is not right. {ans.hint}")
