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

What a checker tests is what *defines* a right answer, on inputs that a right answer must
survive: rows of very different scales in one batch, log-weights the size of an image's
(hundreds of nats), float32, and rows whose log-weights are all −∞ but one. Deterministic
answers are compared to rounding (``_tol``: 1e-8 relative in float64, 1e-5 in float32);
random ones (selection frequencies, fresh draws' means) by z-scores against the family-wise
threshold ``stats.z_threshold`` for all the comparisons one checker makes, so a right
answer fails with probability below 6.3e-5. A number may be given in any form (a Python or
NumPy number, a 0-d tensor or array).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from ucvae_lite.core import hkm
from ucvae_lite.core.iwae import iwae_bound, normalized_weights
from ucvae_lite.core.kernels import CISState
from ucvae_lite.lab.checks._common import (
    CheckFailed,
    as_number,
    call,
    expect_close,
    expect_shape,
    passed,
    prop,
    properties,
    require,
)
from ucvae_lite.models.linear_gaussian import LinearGaussian
from ucvae_lite.studies.budget import ErrorBudget, crossover_budget
from ucvae_lite.studies.stats import z_score, z_threshold

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

_F64 = torch.float64
_IMAGE = -800.0  # the log-joint of a 784-pixel image is of this size: exp() underflows to 0


def _model(seed: int, latent_dim: int = 2, obs_dim: int = 4) -> tuple[LinearGaussian, Tensor]:
    """The lab's model (seed 0) or a variant, and one data point x [1, p] from it."""
    model = LinearGaussian.example(latent_dim, obs_dim, sigma=0.7, seed=seed)
    return model, model.sample_data(1, torch.Generator().manual_seed(seed + 1))


def _cast(model: LinearGaussian, dtype: torch.dtype) -> LinearGaussian:
    return LinearGaussian(model.W.to(dtype), model.b.to(dtype), model.log_sigma.to(dtype))


def _tol(dtype: torch.dtype, scale: float = 1.0) -> float:
    """Rounding tolerance of a deterministic answer whose terms are of size ``scale``: 1e-8
    relative in float64 (rounding is ~1e-15 there; the margin admits any order of summation),
    1e-5 in float32 (about 100 units in the last place: sums of hundreds of terms)."""
    return (1e-8 if dtype == _F64 else 1e-5) * max(1.0, scale)


def _scale(t: Tensor) -> float:
    """The largest finite |entry| of ``t`` (0 if none)."""
    t = t.detach().double()
    finite = t[torch.isfinite(t)]
    return finite.abs().max().item() if finite.numel() else 0.0


def _wide(value) -> bool:
    """Whether a returned number carries float64 precision (Python numbers do); a float32 (or
    narrower) tensor or NumPy value is judged to its own rounding."""
    dtype = getattr(value, "dtype", None)
    if dtype is None:
        return True
    if isinstance(dtype, torch.dtype):
        return not dtype.is_floating_point or torch.finfo(dtype).eps <= torch.finfo(_F64).eps
    return np.dtype(dtype).kind != "f" or np.finfo(dtype).eps <= np.finfo(np.float64).eps


def _matches(got: Tensor, candidate: Tensor, tol: float) -> bool:
    """``got`` equals ``candidate`` to ``tol``, infinities and NaNs at the same places (used to
    name the mistake a wrong answer makes)."""
    if not isinstance(got, Tensor) or tuple(got.shape) != tuple(candidate.shape):
        return False
    a, b = got.detach().double().cpu(), candidate.detach().double().cpu()
    same = (a == b) | (a.isnan() & b.isnan())
    return bool(torch.where(same, 0.0, (a - b).abs()).le(tol).all())


def _named(got: Tensor, mistakes: dict[str, Tensor], tol: float) -> str:
    """The hint of the first mistake whose value ``got`` equals, else ""."""
    return next((why + " " for why, value in mistakes.items() if _matches(got, value, tol)), "")


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


class _Stressed:
    """A target whose log-weights (and log-joints) are ``inner``'s plus a constant per row
    (``offset`` [B]: an image's log-joint is hundreds of nats), and −∞ where z[..., 0] > ``cut``
    [B] (a model whose support ends there). Neither changes w̄ or the law of a CIS step, so a
    right answer makes the same choices as on ``inner``. It has the target contract
    (``sample``, ``log_weight``) and ``log_joint``, ``log_proposal``, ``proposal``."""

    def __init__(self, inner, offset: Tensor, cut: Tensor):
        self.inner, self.offset, self.cut = inner, offset, cut
        self.proposal, self.batch_size, self.dim = inner.proposal, inner.batch_size, inner.dim

    def sample(self, n: int, generator: torch.Generator | None = None) -> Tensor:
        return self.inner.sample(n, generator)

    def _adjust(self, value: Tensor, z: Tensor) -> Tensor:
        value = value + self.offset[:, None]
        return value.masked_fill(z[..., 0] > self.cut[:, None], -math.inf)

    def log_weight(self, z: Tensor) -> Tensor:
        return self._adjust(self.inner.log_weight(z), z)

    def log_joint(self, z: Tensor) -> Tensor:
        return self._adjust(self.inner.log_joint(z), z)

    def log_proposal(self, z: Tensor) -> Tensor:
        return self.inner.log_proposal(z)


# --- 00: Fisher's identity ----------------------------------------------------------------


_GRAD_B = (
    "matches autograd of log p(x, z) on two float64 models",
    "float32, on a 784-pixel image",
)


@properties(*_GRAD_B)
def check_grad_b(fn: Callable, seed: int = 0) -> None:
    """``fn(model, x, z)`` must return ∇_b log p(x, z) [n, p] for latents z [n, d] (also in
    float32, for an image-sized x, and for rows of z of very different sizes)."""
    small, other = _model(seed, 2, 4), _model(seed, 3, 5)
    image, x_image = _model(seed, 2, 784)
    cases = [("", *small), ("", *other), (" (float32, 784 pixels)", _cast(image, torch.float32),
             x_image.float())]  # fmt: skip
    for where, model, x in cases:
        with prop(_GRAD_B[1] if where else _GRAD_B[0]):
            _grad_b_case(fn, model, x, where, seed)
    passed("grad_b matches autograd of log p(x, z) for three models (one float32, 784 pixels)")


def _grad_b_case(fn: Callable, model: LinearGaussian, x: Tensor, where: str, seed: int) -> None:
    g = torch.Generator().manual_seed(seed)
    sizes = torch.tensor([1.0, 0.1, 3.0, 1.0, 10.0, 0.5], dtype=_F64)[:, None]
    z = (torch.randn(6, model.latent_dim, generator=g, dtype=_F64) * sizes).to(x.dtype)
    got = call(fn, model, x, z, what="your grad_b")
    exact = _cast(model, _F64)
    b = exact.b.detach().clone().requires_grad_(True)
    own = LinearGaussian(exact.W, b, exact.log_sigma)
    rows = [
        torch.autograd.grad(own.log_joint(x.double(), zi[None, None])[0, 0], b)[0]
        for zi in z.double()
    ]
    expected = torch.stack(rows)
    got = expect_shape(got, tuple(expected.shape), f"grad_b(model, x, z){where}")
    sigma = exact.sigma.item()
    tol = _tol(x.dtype, _scale(expected))
    hint = _named(
        got,
        {
            "The sign is flipped: the residual is x − Wz − b.": -expected,
            "Divide by σ² (the variance), not by σ.": expected * sigma,
            "Divide the residual by σ².": expected * sigma**2,
            "The 2 of 2σ² cancels against the derivative of the square: divide by σ², "
            "not 2σ².": expected / 2,
            "The residual is x − Wz − b: you left out b.": expected + exact.b / sigma**2,
        },
        tol,
    )
    hint += "∇_b log N(x; Wz + b, σ²I) = (x − Wz − b) / σ²."
    expect_close(got, expected, f"grad_b(model, x, z){where}", hint, atol=tol)


# --- 01: IWAE -------------------------------------------------------------------------------


def _bound_cases(seed: int) -> dict[str, Tensor]:
    g = torch.Generator().manual_seed(seed)

    def draw(rows: int, cols: int) -> Tensor:
        return torch.randn(rows, cols, generator=g, dtype=_F64)

    levels = torch.tensor([-5.0, -600.0, 700.0, -5.0, -600.0, 700.0, -5.0], dtype=_F64)
    mixed = levels[:, None] + 3 * draw(7, 6)
    mixed[6] = -math.inf
    mixed[6, 2] = -4.0  # a row whose weights are all 0 but one
    return {
        "moderate log-weights": draw(7, 5),
        "log-weights near −1000 (a 784-pixel image)": -1000 + 3 * draw(4, 10),
        "log-weights near +700": 700 + 3 * draw(4, 3),
        # float32, an image's size, and a wide spread within each row (a poor proposal)
        "float32 log-weights near −600, spread over ±150 in each row": (
            -600 + 60 * draw(5, 8)
        ).float(),
        "one batch of rows near −5, −600 and +700, and a row that is −∞ but for one entry": mixed,
    }


_BOUND = (
    "the textbook case (moderate log-weights)",
    "stable on image-sized and mixed-scale rows (near −1000, near +700, rows near −5, −600 and "
    "+700 in one batch, a row of −∞ but one)",
    "float32 (log-weights near −600, spread widely)",
)


def _bound_owner(what: str) -> str:
    if what.startswith("moderate"):
        return _BOUND[0]
    return _BOUND[2] if "float32" in what else _BOUND[1]


@properties(*_BOUND)
def check_iwae_bound(fn: Callable, seed: int = 0) -> None:
    """``fn(log_w)`` must return log (1/S) Σ_s exp(log_w[..., s]) for log-weights [B, S]:
    for log-weights of any size, in float32, for a batch whose rows differ by hundreds of
    nats, and for a row that is −∞ but for one entry."""
    for what, log_w in _bound_cases(seed).items():
        with prop(_bound_owner(what)):
            _bound_case(fn, what, log_w)
    passed(
        "iwae_bound is right, and stable: log-weights of any size, float32, rows of different "
        "scales in one batch, a row of −∞ but one"
    )


def _bound_case(fn: Callable, what: str, log_w: Tensor) -> None:
    got = call(fn, log_w.clone(), what="your iwae_bound")
    lw = log_w.double()
    expected = iwae_bound(lw)
    got = expect_shape(got, tuple(expected.shape), "iwae_bound(log_w) (one value per row)")
    B, S = lw.shape
    lse, top = torch.logsumexp(lw, -1), lw.max(-1).values
    # the shifts that are not each row's maximum, in the input's dtype (float32 overflows
    # above 88): what they give is what a learner who made them gets
    whole, mean = log_w.max(), log_w.mean(-1, keepdim=True)
    tol = _tol(log_w.dtype, _scale(lw))
    hint = _named(
        got,
        {
            "You subtracted one maximum for the whole batch: rows far below it come out −∞. "
            "Take each row's own maximum, log_w.max(-1, keepdim=True).": whole
            + (log_w - whole).exp().mean(-1).log(),
            "You subtracted the row's mean: exp(log w − mean) overflows when a row's "
            "log-weights spread widely (by more than 88 in float32), and on a row with −∞ "
            "entries −∞ − (−∞) = NaN. Subtract the row's maximum (finite as soon as one "
            "weight is positive).": mean[:, 0] + (log_w - mean).exp().mean(-1).log(),
            "You averaged log w: that is the ELBO (S = 1 bound).": lw.mean(-1),
            "You forgot the 1/S (subtract log S).": lse,
            "S is the number of particles, log_w.shape[-1], not the number of rows.": lse
            - math.log(B),
            "You divided by S twice (subtract log S once).": lse - 2 * math.log(S),
            "Add the maximum back: log Σ_s exp(a_s) = a_max + log Σ_s exp(a_s − a_max).": lse
            - math.log(S)
            - top,
        },
        tol,
    )
    if not hint and not bool(torch.isfinite(got).all()):
        hint = (
            "Some values are inf or NaN: exp(log w) over/underflows. Subtract the row's "
            "maximum first (log Σ exp(a_s) = a_max + log Σ exp(a_s − a_max)), or use "
            "torch.logsumexp. "
        )
    hint += "L = log (1/S) Σ_s w_s: average the weights, then take the log."
    expect_close(got, expected, f"iwae_bound on {what}", hint, atol=tol)


def _iwae_case(seed: int, S: int, obs_dim: int = 4, dtype: torch.dtype = _F64):
    model, x = _model(seed, 2, obs_dim)
    q = model.proposal(x, shift=0.5, scale=1.5)
    z = q.sample(S, torch.Generator().manual_seed(seed + 7))
    log_q = q.log_prob(z)
    return _cast(model, dtype), x.to(dtype), z.to(dtype), log_q.to(dtype)


_GRADIENT = (
    "the textbook case (S = 3 and 6)",
    "stable for a 784-pixel x (log-joints near −800)",
    "float32",
)


@properties(*_GRADIENT)
def check_iwae_gradient(fn: Callable, seed: int = 0) -> None:
    """``fn(model, x, z, log_q)`` must return ∇_θ log (1/S) Σ_s w_s [P], θ = (W, b, log σ),
    for proposal draws z [1, S, d] with log-densities log_q [1, S] (constants in θ); also for
    a 784-pixel x (log-joints near −800, where exp underflows) and a float32 model."""
    cases = [
        ("", _iwae_case(seed, 3)),
        ("", _iwae_case(seed, 6)),
        (" for a 784-pixel x (log-joints near −800)", _iwae_case(seed, 4, 784)),
        (" in float32", _iwae_case(seed, 5, 4, torch.float32)),
    ]
    owners = [_GRADIENT[0], _GRADIENT[0], _GRADIENT[1], _GRADIENT[2]]
    for owner, (where, (model, x, z, log_q)) in zip(owners, cases, strict=True):
        with prop(owner):
            _gradient_case(fn, where, model, x, z, log_q)
    passed("iwae_gradient equals Σ_s w̄_s ∇_θ log p_θ(x, z_s) (also for 784 pixels and in float32)")


def _gradient_case(
    fn: Callable, where: str, model: LinearGaussian, x: Tensor, z: Tensor, log_q: Tensor
) -> None:
    from ucvae_lite.lab.teaching import joint_gradients

    got = call(fn, model, x, z, log_q, what="your iwae_gradient")
    exact, x64, z64 = _cast(model, _F64), x.double(), z.double()
    per_particle = joint_gradients(exact, x64, z64[0])  # [S, P]: ∇_θ log p(x, z_s)
    log_joint = exact.log_joint(x64, z64).detach()[0]
    log_w = log_joint - log_q.double()[0]
    wbar = normalized_weights(log_w)
    expected = wbar @ per_particle
    got = expect_shape(got, tuple(expected.shape), "iwae_gradient (flattened W, b, log σ)")
    tol = _tol(x.dtype, _scale(per_particle))
    p_hat = (torch.logsumexp(log_w, -1) - math.log(len(log_w))).exp()
    last = torch.ones_like(expected)
    last[-1] = 1 / exact.sigma.item()
    hint = _named(
        got,
        {
            "You weighted every particle by 1/S: that is the ELBO's gradient.": (
                per_particle.mean(0)
            ),
            "You summed the particles' gradients: weight them by w̄_s (a softmax over the "
            "particles, dim −1).": per_particle.sum(0),
            "The sign is flipped: return the gradient of the bound, not of −bound.": -expected,
            "The weights are w = p(x, z)/q(z): subtract log q before normalising.": (
                normalized_weights(log_joint) @ per_particle
            ),
            "The log-weights are log p(x, z) − log q(z), not log q − log p.": (
                normalized_weights(-log_w) @ per_particle
            ),
            "You differentiated p̂ = (1/S) Σ_s w_s, not log p̂: divide by p̂ (normalise "
            "the weights).": p_hat * expected,
            "The weights are constants in the surrogate Σ_s w̄_s log p(x, z_s): detach w̄ "
            "(or backpropagate torch.logsumexp directly).": expected
            + (wbar * log_joint) @ (per_particle - expected),
            "The last coordinate is ∂/∂ log σ = σ ∂/∂σ: differentiate with respect to "
            "log σ.": expected * last,
        },
        tol,
    )
    if not hint and not bool(torch.isfinite(got).all()):
        hint = (
            "Some values are inf or NaN: exp(log w) underflows to 0 for log-joints near "
            "−800, and 0/0 is NaN. Normalise with torch.softmax(log_w, −1), or "
            "backpropagate torch.logsumexp(log_w, −1) − log S. "
        )
    hint += (
        "∇_θ log (1/S) Σ w_s = Σ_s w̄_s ∇_θ log p_θ(x, z_s): build log w = log p_θ(x, z) − "
        "log q with θ requiring grad, take logsumexp − log S, and backpropagate."
    )
    expect_close(got, expected, f"iwae_gradient{where}", hint, atol=tol)


def _log_weight_variance(model: LinearGaussian, x: Tensor, shift: float, scale: float) -> float:
    """Var_q[log w] exactly: in the posterior's whitened coordinates log w/p(x) is, per
    coordinate, −δ²/2 − c δ v + (1 − c²) v²/2 + log c with v ~ N(0, 1), whose variance is
    c²δ² + (1 − c²)²/2."""
    from ucvae_lite.lab.teaching import whitened_shift

    c = float(scale)
    return sum(c**2 * d**2 + (1 - c**2) ** 2 / 2 for d in whitened_shift(model, x, shift).tolist())


def check_gap_prediction(
    answer: float,
    model: LinearGaussian,
    x: Tensor,
    shift: float,
    scale: float,
    num_samples: int,
    rtol: float | None = None,
    num_draws: int = 100_000,
) -> None:
    """``answer`` (a number in any form) should be V / (2S), the leading term of
    log p(x) − L_S, V = Var_q[w/p(x)]. V may be estimated from ``num_draws`` proposal draws:
    the tolerance is z_threshold(1) = 4 standard errors of that estimate, computed exactly from
    the moments E_q[(w/p(x))ⁿ], n ≤ 4 (``rtol``, if given, replaces it by a relative one)."""
    from ucvae_lite.lab.teaching import weight_moment

    answer = as_number(answer, "the predicted gap")
    m2, m3, m4 = (weight_moment(model, x, k, shift, scale) for k in (2, 3, 4))
    V, S, n = m2 - 1, num_samples, num_draws
    mu4 = m4 - 4 * m3 + 6 * m2 - 3  # E[(r − 1)⁴], r = w/p(x), E r = 1
    expected = V / (2 * S)
    if rtol is not None:
        tol = rtol * expected
    elif math.isfinite(mu4):  # Var of the sample variance of n draws
        tol = z_threshold(1) * math.sqrt(mu4 / n - V**2 * (n - 3) / (n * (n - 1))) / (2 * S)
    else:  # no fourth moment: the estimate has no standard error; allow 10%
        tol = 0.1 * expected
    rel = max(tol / expected, 0.05)
    log_px = model.log_marginal(x[:1]).item()
    mistakes = {
        "You are off by a factor 2: the second-order term of log(1 + ε) is −ε²/2.": V / S,
        "You forgot to divide by S: the mean of S weights has variance V / S.": V / 2,
        "You left out the 1/(2S) altogether.": V,
        "V is the variance: subtract the squared mean, E[w/p(x)]² = 1, from E[(w/p(x))²].": (
            (V + 1) / (2 * S)
        ),
        "The sign is flipped: log p(x) − L_S > 0 (L_S is a lower bound).": -expected,
        "V is the variance, not the standard deviation.": math.sqrt(V) / (2 * S),
        "Take the variance of w/p(x), not of w: subtract log p(x) from the log-weights.": (
            V * math.exp(2 * log_px) / (2 * S)
        ),
        "Take the variance of the weights w/p(x), not of their logs.": (
            _log_weight_variance(model, x, shift, scale) / (2 * S)
        ),
    }
    # every mistake the answer fits (two can give nearly the same number)
    named = " Or: ".join(why for why, v in mistakes.items() if abs(answer - v) <= rel * abs(v))
    named += " " if named else ""
    require(
        abs(answer - expected) <= tol,
        f"the predicted gap is {answer:.4g}, but V/(2S) = {expected:.4g} (allowed: ± {tol:.2g}). "
        f"{named}The delta method gives log p(x) − L_S ≈ Var_q[w / p(x)] / (2S).",
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


@dataclass
class _Case:
    """One input of a kernel checker: chain states (n rows each) and their target. The rows of
    each group share one particle set (so one w̄): their selections are counted together.
    ``label`` and ``hint`` (empty for the plain case) say what the case stresses and what
    usually goes wrong there; they frame any failure on it."""

    label: str
    hint: str
    target: object
    states: tuple[CISState, ...]
    groups: list[tuple[str, Tensor]]


def _repeat(state: CISState, n: int) -> CISState:
    return CISState(
        state.particles.expand(n, -1, -1).clone(), state.log_weights.expand(n, -1).clone()
    )


_UNDERFLOW = (
    "exp(log_w) underflows to 0 below about −745 (in float64), so every weight of such a row "
    "is 0: subtract the row's maximum first, or use torch.softmax(log_w, -1)."
)
_PER_ROW = (
    "Each row needs its own maximum: one maximum (or one shift) for the whole batch leaves the "
    "rows far below it at exp(−1100) = 0, and exp(log_w) overflows above 709. "
    "torch.softmax(log_w, -1) normalises each row stably."
)
_FLOAT32 = (
    "In float32 exp(log_w) underflows below −104 and overflows above 88: normalise stably "
    "(torch.softmax(log_w, -1)), and keep the state's dtype."
)
_ONE_LEFT = (
    "A log-weight of −∞ (weight 0) is legal. The row's maximum is finite, but −∞ − (−∞) is NaN "
    "(subtracting the row's mean, for one); torch.softmax(log_w, -1) handles such rows."
)


def _kernel_cases(
    model: LinearGaussian,
    x: Tensor,
    ones: tuple[CISState, ...],
    n: int,
    single: list[tuple[str, int]],
) -> list[_Case]:
    """The inputs of the CIS and coupled-step checkers, built from one-row chain states
    ``ones`` (X, or X_t and Y_{t−1}) of the data point x [1, p]: the plain case (n rows), then

    * every row's log-weights near −800 (a 784-pixel image's log-joint);
    * one batch mixing rows near 0, −800 and +300;
    * float32, rows near 0 and −600;
    * rows whose log-weights are all −∞ but one slot (``single``: (name, slot) per group),
      made by moving every other particle out of the target's support.
    """
    f32 = torch.float32
    return [
        _Case("", "", _case_target(model, x, n), tuple(_repeat(s, n) for s in ones),
              [("", torch.arange(n))]),  # fmt: skip
        _shifted_case(model, x, ones, [_IMAGE], [""], n // 4,
                      "On rows whose log-weights are near −800 (a 784-pixel image's log-joint)",
                      _UNDERFLOW, _F64),
        _shifted_case(model, x, ones, [0.0, _IMAGE, 300.0], [" (rows near 0)",
                      " (rows near −800)", " (rows near +300)"], n // 8,
                      "On one batch mixing rows whose log-weights are near 0, −800 and +300",
                      _PER_ROW, _F64),
        _shifted_case(_cast(model, f32), x.float(), ones, [0.0, -600.0], [" (rows near 0)",
                      " (rows near −600)"], n // 8, "In float32 (rows near 0 and −600)",
                      _FLOAT32, f32),
        _one_left_case(model, x, ones, n, single),
    ]  # fmt: skip


def _case_target(mdl: LinearGaussian, xx: Tensor, rows: int):
    """The checkers' target: x repeated ``rows`` times, a shifted and widened proposal."""
    return mdl.target(xx.expand(rows, -1), shift=0.5, scale=1.5)


def _shifted_case(mdl, xx, ones, levels, names, rows_each, label, hint, dtype) -> _Case:
    """Rows in groups whose log-weights are shifted by ``levels`` (one group per level)."""
    k = len(levels)
    m = k * rows_each
    offset = torch.tensor(levels, dtype=dtype)[torch.arange(m) % k]
    tgt = _Stressed(_case_target(mdl, xx, m), offset, torch.full((m,), math.inf, dtype=dtype))
    states = []
    for one in ones:
        z = one.particles.to(dtype).expand(m, -1, -1).clone()
        states.append(CISState(z, tgt.log_weight(z)))
    groups = [(names[i], torch.arange(i, m, k)) for i in range(k)]
    return _Case(label, hint, tgt, tuple(states), groups)


def _one_left_case(model, x, ones, n: int, single: list[tuple[str, int]]) -> _Case:
    """Rows whose log-weights are −∞ in every slot but ``slot`` (one group per (name, slot)):
    every other particle is moved far out of the support z[0] ≤ cut."""
    rows_each = max(n // 40, 10)
    k = len(single)
    m = k * rows_each
    group = torch.arange(m) % k
    sets, cuts = [], []
    for _, slot in single:
        moved = []
        for one in ones:
            z = one.particles[0].clone()
            out = torch.arange(z.shape[0]) != slot
            z[out, 0] += 50.0
            moved.append(z)
        sets.append(moved)
        cuts.append(max(one.particles[0, slot, 0].item() for one in ones) + 1.0)
    cut = torch.tensor(cuts, dtype=_F64)[group]
    tgt = _Stressed(_case_target(model, x, m), torch.zeros(m, dtype=_F64), cut)
    states = []
    for i in range(len(ones)):
        z = torch.stack([sets[j][i] for j in range(k)])[group]
        states.append(CISState(z, tgt.log_weight(z)))
    groups = [(single[j][0], torch.arange(j, m, k)) for j in range(k)]
    label = "On rows whose log-weights are all −∞ but one"
    return _Case(label, _ONE_LEFT, tgt, tuple(states), groups)


def _framed(case: _Case, check: Callable[[], None]) -> None:
    """Run ``check``; a failure on a stress case says which case and what usually goes wrong."""
    try:
        check()
    except CheckFailed as e:
        if not case.label:
            raise
        raise CheckFailed(f"{case.label}: {e} {case.hint}") from e


def _no_nan(state: CISState, who: str) -> None:
    require(
        not bool(state.particles.isnan().any() or state.log_weights.isnan().any()),
        f"{who} has NaN entries: a selection probability was NaN (0/0, or −∞ − (−∞)).",
    )


def _selection_hint(freq: Tensor, probs: Tensor) -> str:
    S = probs.numel()
    hint = f"select slot s with probability w̄_s = {_fmt(probs)}; you selected {_fmt(freq)}."
    if probs.max() > 0.999:
        return (
            f"only slot {int(probs.argmax()) + 1} has a positive weight, so it must be selected "
            f"every time; you selected {_fmt(freq)}."
        )
    if bool((freq.max() > 0.999) & (probs.max() < 0.99)):
        hint = "Draw at random (torch.multinomial), do not take the largest weight. " + hint
    elif freq[0] == 0 and probs[0] > 0.01:
        hint = "The reference (slot 1) must be a candidate too. " + hint
    elif bool(((freq - 1 / S).abs() < 0.03).all()):
        hint = (
            "Slots must be selected ∝ their weights, not uniformly (normalise over the "
            "particles, dim −1, not over the batch). " + hint
        )
    return hint


def _fresh_ok(
    new: CISState,
    old: CISState,
    target,
    what: str,
    limit: float,
    draws: str | None = None,
    weights: str | None = None,
) -> None:
    """Slots 2..S: new particles (none of the old ones), their log-weights, drawn from q (checks
    of the properties ``draws``, ``weights``, then ``draws`` again)."""
    fresh = new.particles[:, 1:]
    with prop(draws):
        stale = (fresh[:, :, None, :] == old.particles[:, None, :, :]).all(-1).any()
        require(
            not bool(stale),
            f"{what}: slots 2..S must be fresh proposal draws (target.sample), but some are old "
            "particles of the set. Keep only the selected particle; draw S − 1 new ones.",
        )
    with prop(weights):
        lw = target.log_weight(fresh).detach()
        got = new.log_weights[:, 1:]
        hint = "Evaluate target.log_weight on the fresh draws."
        if _matches(got, torch.zeros_like(lw), 0.0):
            hint = "The fresh log-weights are all 0. " + hint
        elif _matches(got, old.log_weights[:, 1:], 0.0):
            hint = "These are the old slots' log-weights (stale). " + hint
        tol = _tol(lw.dtype, _scale(lw))
        expect_close(got, lw, f"{what}: the log-weights of slots 2..S", hint, atol=tol)
    with prop(draws):
        flat = fresh.reshape(-1, fresh.shape[-1]).double()
        mean = target.proposal.loc[0].double()
        z = z_score(flat, mean)
        require(
            z.abs().max().item() < limit,
            f"{what}: the fresh draws do not have the proposal's mean (|z| = "
            f"{z.abs().max().item():.1f}); draw them with target.sample(S − 1, generator).",
        )


def _cis_set(seed: int, S: int = 5) -> tuple[LinearGaussian, Tensor, CISState]:
    """A fixed particle set for one data point whose reference and two other slots all have
    some weight, with the model and the data point."""
    model, x = _model(seed)
    one = model.target(x, shift=0.5, scale=1.5)
    for s in range(200):
        z = one.sample(S, torch.Generator().manual_seed(1000 * seed + s))
        w = normalized_weights(one.log_weight(z))[0]
        if 0.15 < w[0] < 0.5 and w.max() < 0.6 and int((w > 0.08).sum()) >= 3:
            break
    return model, x, CISState(z, one.log_weight(z).detach())


_STABLE = "numerically stable (image-sized, mixed-scale, float32 and all-but-one −∞ log-weights)"
_CIS = (
    "selects the new reference ∝ w̄, the reference included",
    "carries the selected particle's log-weight",
    "draws S − 1 fresh particles from q, with their log-weights",
    _STABLE,
)


def _check_cis(new: CISState, state: CISState, target, groups, limit: float) -> None:
    n, S = state.particles.shape[:2]
    if isinstance(new.particles, Tensor) and new.particles.dim() == 3:
        k = new.particles.shape[1]
        require(
            k == S,
            f"the new set has {k} slots, not S = {S}: slot 1 keeps the selected particle and "
            "S − 1 fresh draws fill the rest (target.sample(S − 1, generator)).",
        )
    expect_shape(new.particles, tuple(state.particles.shape), "the new particles")
    expect_shape(new.log_weights, tuple(state.log_weights.shape), "the new log_weights")
    require(
        not torch.equal(new.particles, state.particles),
        "cis_step returned the old set unchanged: select the new reference ∝ w̄ (into slot 1) "
        "and draw S − 1 fresh particles.",
    )
    _no_nan(new, "the new state")
    slot = _slot_of(new.particles[:, 0], state.particles)
    require(
        bool((slot >= 0).all()),
        "slot 1 of the new set must hold the selected particle of the old set (the new "
        "reference), unchanged.",
    )
    with prop(_CIS[1]):
        carried = state.log_weights[torch.arange(n), slot]
        tol = _tol(state.log_weights.dtype, _scale(state.log_weights))
        hint = "Carry the selected particle's log-weight over (no need to evaluate it again)."
        moved = slot != 0
        old = state.log_weights[moved, 0]
        if bool(moved.any()) and _matches(new.log_weights[moved, 0], old, tol):
            hint = (
                "The reference's log-weight is still the old slot 1's: take the selected "
                "slot's, state.log_weights[rows, ℓ]. " + hint
            )
        expect_close(new.log_weights[:, 0], carried, "the reference's log-weight", hint, atol=tol)
    with prop(_CIS[0]):
        for name, rows in groups:
            probs = normalized_weights(state.log_weights[rows[0]].double())
            worst, freq = _frequency_z(slot[rows], probs)
            require(
                worst < limit,
                f"In {len(rows)} steps from one set{name}: {_selection_hint(freq, probs)}",
            )
    _fresh_ok(new, state, target, "cis_step", limit, _CIS[2], _CIS[2])


@properties(*_CIS)
def check_cis_step(fn: Callable, seed: int = 0, n: int = 4000) -> None:
    """``fn(target, state, generator)`` must return the next CISState of one CIS step: on a
    plain batch, and on image-sized, mixed-scale, float32 and all-but-one −∞ log-weights."""
    model, x, one = _cis_set(seed)
    S, D = one.particles.shape[1:]
    single = [(" (only slot 1 has weight)", 0), (" (only slot 3 has weight)", 2)]
    cases = _kernel_cases(model, x, (one,), n, single)
    limit = z_threshold(S * sum(len(c.groups) for c in cases) + D * len(cases))
    for i, case in enumerate(cases):
        g = torch.Generator().manual_seed(seed + 1000 * i)
        (state,) = case.states

        def check(case=case, state=state, g=g) -> None:
            new = _as_state(call(fn, case.target, state, g, what="your cis_step"), "cis_step")
            _check_cis(new, state, case.target, case.groups, limit)

        with prop(_STABLE if case.label else None):
            _framed(case, check)
    passed(
        "one CIS step: selection ∝ w̄ (reference included, its log-weight carried), S − 1 fresh "
        "draws from q; stable for image-sized, mixed-scale, float32 and −∞ log-weights"
    )


# --- 03: the maximal coupling and the coupled step -----------------------------------------

_COUPLING_CASES = [
    ([0.5, 0.3, 0.2, 0.0], [0.2, 0.3, 0.3, 0.2]),
    ([0.7, 0.1, 0.1, 0.1], [0.7, 0.1, 0.1, 0.1]),  # equal: always i = j
    ([0.5, 0.5, 0.0, 0.0], [0.0, 0.0, 0.5, 0.5]),  # disjoint: never i = j
    ([0.05, 0.9, 0.05, 0.0], [0.3, 0.3, 0.2, 0.2]),
]
# one float32 batch of different (p, q) rows; none equal or disjoint, where a float32 residual
# or overlap is a row of exact zeros (1e-300 is 0 in float32)
_MIXED_COUPLING = [
    _COUPLING_CASES[0],
    _COUPLING_CASES[3],
    ([0.25, 0.25, 0.25, 0.25], [0.1, 0.2, 0.3, 0.4]),
]
_ZERO_ROW = (
    "A row of weights is all 0 here (p − ν when p = q; ν when p and q are disjoint): "
    "torch.multinomial needs a positive sum, so add 1e-300 to the weights (or draw by "
    "inverse CDF)."
)
_COUPLING_ADVICE = (
    ("sum of probabilities", _ZERO_ROW),
    ("inf, nan or element < 0", "Dividing by α = 0 (disjoint p, q) or by 1 − α = 0 (p = q) "
     "gives NaN; torch.multinomial takes unnormalised weights: do not divide."),
)  # fmt: skip


def _coupling_batch(cases: list, n: int, dtype: torch.dtype) -> tuple[Tensor, Tensor, list]:
    """Rows cycling through ``cases`` (n per case): p, q [k n, S] and the rows of each case."""
    k = len(cases)
    p = torch.tensor([c[0] for c in cases], dtype=dtype)[torch.arange(k * n) % k]
    q = torch.tensor([c[1] for c in cases], dtype=dtype)[torch.arange(k * n) % k]
    return p, q, [torch.arange(i, k * n, k) for i in range(k)]


_COUPLING = (
    "i ~ p and j ~ q (each index keeps its own distribution)",
    "P(i = j) = Σ min(p, q), the largest possible",
    "the edge cases p = q (always i = j) and disjoint p, q (never)",
    "float32, one batch of rows with different (p, q)",
)


@properties(*_COUPLING)
def check_maximal_coupling(fn: Callable, seed: int = 0, n: int = 20_000) -> None:
    """``fn(p, q, generator)`` for probabilities p, q [B, S] must return indices (i, j), each
    [B], with i ~ p, j ~ q and P(i = j) = Σ_s min(p_s, q_s), the largest possible; also for a
    float32 batch whose rows are different pairs (p, q)."""
    g = torch.Generator().manual_seed(seed)
    batches = [_coupling_batch([c], n, _F64) for c in _COUPLING_CASES]
    batches.append(_coupling_batch(_MIXED_COUPLING, n // 4, torch.float32))
    limit = z_threshold(3 * 4 * (len(_COUPLING_CASES) + len(_MIXED_COUPLING)))
    owners = [None, _COUPLING[2], _COUPLING[2], None, _COUPLING[3]]
    for owner, (p_all, q_all, groups) in zip(owners, batches, strict=True):
        with prop(owner):
            _coupling_batch_ok(fn, p_all, q_all, groups, g, limit)
    passed("maximal coupling: i ~ p, j ~ q, and P(i = j) = Σ min(p, q) = 1 − TV(p, q)")


def _coupling_batch_ok(
    fn: Callable, p_all: Tensor, q_all: Tensor, groups: list, g: torch.Generator, limit: float
) -> None:
    where = " (float32, rows of different (p, q) in one batch)" if len(groups) > 1 else ""
    out = call(fn, p_all, q_all, g, what="your maximal_coupling", advice=_COUPLING_ADVICE)
    require(
        isinstance(out, tuple | list) and len(out) == 2,
        "maximal_coupling should return a pair (i, j) of index tensors",
    )
    B = p_all.shape[0]
    i_all, j_all = (expect_shape(v, (B,), "each of i, j (one index per row)") for v in out)
    for rows in groups:
        p, q = p_all[rows[0]].double(), q_all[rows[0]].double()
        try:
            _coupling_ok(p, q, i_all[rows], j_all[rows], limit, where)
        except CheckFailed as e:
            if not where:
                raise
            raise CheckFailed(
                f"{e} Each row has its own α = Σ_s min(p_s, q_s) (nu.sum(-1), one per row) "
                "and its own draws; keep the weights' dtype (float32 here)."
            ) from e


def _coupling_ok(p: Tensor, q: Tensor, i: Tensor, j: Tensor, limit: float, where: str) -> None:
    n = i.numel()
    nu = torch.minimum(p, q)
    alpha = nu.sum().item()
    zi, fi = _frequency_z(i, p)
    zj, fj = _frequency_z(j, q)
    common = "with probability α draw one index from min(p, q)/α for both; otherwise draw "
    common += "i from (p − min(p, q))/(1 − α) and j from (q − min(p, q))/(1 − α)."
    with prop(_COUPLING[0]):
        if zi >= limit or zj >= limit:
            hint = ""
            if 0 < alpha < 1:
                flipped_p = (1 - alpha) * nu / alpha + alpha * (p - nu) / (1 - alpha)
                if _frequency_z(i, q)[0] < limit and _frequency_z(j, p)[0] < limit:
                    hint = "You returned (j, i): i must follow p and j must follow q. "
                elif _frequency_z(i, flipped_p)[0] < limit:
                    hint = "The common draw happens with probability α: test u < α, not u > α. "
                elif _frequency_z(j, alpha * p + (q - nu))[0] < limit:
                    hint = "The common index must be drawn from ν = min(p, q), not from p. "
            if not hint and bool((i == j).all()) and alpha < 1:
                hint = (
                    "i = j in every row: only with probability α = Σ min(p, q) per row "
                    "(nu.sum(-1)); otherwise draw from the residuals. "
                )
            raise CheckFailed(
                f"for p = {_fmt(p)}, q = {_fmt(q)}{where} the marginals are off: i has frequencies "
                f"{_fmt(fi)}, j has {_fmt(fj)}. {hint}Each of i and j must keep its own "
                "distribution: " + common
            )
    with prop(_COUPLING[1]):
        same = (i == j).double().mean().item()
        se = math.sqrt(max(alpha * (1 - alpha), 1 / n) / n)
        hint = common
        indep = (p * q).sum().item()
        if abs(same - indep) < abs(same - alpha):
            hint = f"Independent draws give Σ p q = {indep:.3f}. " + hint
        require(
            abs(same - alpha) < limit * se,
            f"for p = {_fmt(p)}, q = {_fmt(q)}{where}: P(i = j) is {same:.3f} but the overlap "
            f"α = Σ min(p, q) is {alpha:.3f}. {hint}",
        )


def _coupled_pair(seed: int, S: int = 5) -> tuple[LinearGaussian, Tensor, CISState, CISState]:
    """X_1 and Y_0 of a real lag-1 run (shared fresh slots, different references), one row."""
    from ucvae_lite.lab.teaching import lag_coupled_chains

    model, x = _model(seed)
    one = model.target(x, shift=0.5, scale=1.5)
    for s in range(100):  # a pair whose selection probabilities overlap, but not fully, and
        # whose coupling differs from independent selections (P(same) = Σ w̄^X w̄^Y) by ≥ 0.08
        run = lag_coupled_chains(one, S, 3, generator=torch.Generator().manual_seed(seed + s))
        wx, wy = (normalized_weights(v.log_weights[0]) for v in (run.xs[1], run.ys[0]))
        alpha = torch.minimum(wx, wy).sum().item()
        overlap = torch.minimum(wx, wy)[1:].sum().item()
        if 0.25 < alpha < 0.9 and overlap > 0.15 and alpha - (wx * wy).sum().item() > 0.08:
            break
    x1, y0 = run.xs[1], run.ys[0]
    return model, x, CISState(x1.particles, x1.log_weights), CISState(y0.particles, y0.log_weights)


_COUPLED = (
    "each chain alone makes a CIS step (selection ∝ its own w̄, fresh draws from q)",
    "the chains share their fresh draws",
    "the selections are maximally coupled (P(same slot) = α)",
    "both chains' log-weights are right (references carried, fresh ones shared)",
    _STABLE,
)


def _check_coupled(nx, ny, xs, ys, target, groups, limit: float) -> None:
    n = xs.particles.shape[0]
    _both_stepped(nx, ny, xs, ys)
    _no_nan(nx, "X_{t+1}")
    _no_nan(ny, "Y_t")
    with prop(_COUPLED[1]):
        require(
            bool((nx.particles[:, 1:] == ny.particles[:, 1:]).all()),
            "the two chains must take the SAME fresh draws in slots 2..S (common random "
            "numbers): draw them once and put them into both sets. With separate draws the "
            "chains can never select a common particle, so they never meet.",
        )
    ix, iy = _slot_of(nx.particles[:, 0], xs.particles), _slot_of(ny.particles[:, 0], ys.particles)
    require(
        bool((ix >= 0).all() and (iy >= 0).all()),
        "slot 1 of each new set must hold the particle that chain selected from its own old "
        "set (X from X_t, Y from Y_{t−1}).",
    )
    for name, rows in groups:
        wx = normalized_weights(xs.log_weights[rows[0]].double())
        wy = normalized_weights(ys.log_weights[rows[0]].double())
        with prop(_COUPLED[0]):
            _selections_ok(ix, iy, wx, wy, rows, name, limit)
        with prop(_COUPLED[2]):
            _meeting_rate_ok(ix, iy, wx, wy, rows, name, limit)
    rows = torch.arange(n)
    tol = _tol(xs.log_weights.dtype, _scale(xs.log_weights))
    with prop(_COUPLED[3]):
        for new, old, idx, other, who in ((nx, xs, ix, ys, "X"), (ny, ys, iy, xs, "Y")):
            _reference_ok(new, old, idx, other, who, rows, tol)
    _fresh_ok(nx, xs, target, "coupled_step", limit, _COUPLED[0], _COUPLED[3])
    with prop(_COUPLED[3]):
        got = ny.log_weights[:, 1:]
        hint = "Y takes X's fresh draws, so it takes their log-weights too (the same fresh_lw)."
        if _matches(got, torch.zeros_like(got), 0.0):
            hint = "Y's fresh log-weights are 0. " + hint
        elif _matches(got, ys.log_weights[:, 1:], 0.0):
            hint = "Y's fresh log-weights are stale: they are Y_{t−1}'s. " + hint
        what = "coupled_step: Y's log-weights of slots 2..S"
        expect_close(got, nx.log_weights[:, 1:], what, hint, atol=tol)


def _both_stepped(nx, ny, xs, ys) -> None:
    """Shapes kept, and each chain made its own step (Y from Y_{t−1}, not a copy of X_t)."""
    for st, who in ((nx, "X"), (ny, "Y")):
        expect_shape(st.particles, tuple(xs.particles.shape), f"the particles of {who}")
        expect_shape(st.log_weights, tuple(xs.log_weights.shape), f"the log-weights of {who}")
    require(
        not torch.equal(nx.particles, xs.particles),
        "X_{t+1} is X_t unchanged: both chains must make a step.",
    )
    require(
        not torch.equal(ny.particles, ys.particles),
        "Y_t is Y_{t−1} unchanged: Y must make a step too, with the same fresh draws as X.",
    )
    require(
        not torch.equal(ny.particles, xs.particles),
        "You returned X_t as Y_t: Y_t is one step from Y_{t−1} (the lag is already in the "
        "inputs: X_t is one step ahead).",
    )


def _meeting_rate_ok(ix, iy, wx, wy, rows, name: str, limit: float) -> None:
    """P(ℓ_X = ℓ_Y) over ``rows`` matches the maximal coupling's α = Σ min(w̄^X, w̄^Y)."""
    alpha = torch.minimum(wx, wy).sum().item()
    same = (ix[rows] == iy[rows]).double().mean().item()
    se = math.sqrt(max(alpha * (1 - alpha), 1 / len(rows)) / len(rows))
    indep = (wx * wy).sum().item()
    hint = "Draw (ℓ_X, ℓ_Y) from the maximal coupling of w̄(X_t) and w̄(Y_{t−1})."
    if abs(same - indep) < abs(same - alpha):
        hint = "The selections look independent. " + hint
    require(
        abs(same - alpha) < limit * se,
        f"P(ℓ_X = ℓ_Y){name} is {same:.3f}, but the overlap α = Σ min(w̄^X, w̄^Y) is "
        f"{alpha:.3f}. " + hint,
    )


def _selections_ok(ix, iy, wx, wy, rows, name: str, limit: float) -> None:
    """Each chain selects slot s with its own w̄_s."""
    for idx, w, who in ((ix, wx, "X"), (iy, wy, "Y")):
        worst, freq = _frequency_z(idx[rows], w)
        if worst < limit:
            continue
        hint = ""
        if who == "Y" and _frequency_z(idx[rows], wx)[0] < limit:
            hint = (
                "Y selected with X's probabilities w̄(X_t): couple w̄(X_t) with w̄(Y_{t−1}) "
                "and give Y the coupling's second index. "
            )
        raise CheckFailed(
            f"chain {who}{name} must select slot s with probability w̄_s = {_fmt(w)}; it "
            f"selected {_fmt(freq)}. {hint}Each chain alone must make an exact CIS step."
        )


def _reference_ok(new, old, idx, other, who: str, rows, tol: float) -> None:
    """A chain's new reference carries the log-weight of the particle it selected."""
    got, carried, moved = new.log_weights[:, 0], old.log_weights[rows, idx], idx != 0
    hint = (
        f"Carry over the log-weight of the particle {who} selected, "
        f"{who.lower()}.log_weights[rows, ℓ_{who}]."
    )
    if bool(moved.any()) and _matches(got[moved], old.log_weights[moved, 0], tol):
        hint = (
            f"{who}'s new reference keeps the old slot 1's log-weight, but it holds the "
            f"particle of slot ℓ_{who} now. " + hint
        )
    elif _matches(got, other.log_weights[rows, idx], tol):
        hint = f"{who}'s reference log-weight comes from the other chain's set. " + hint
    expect_close(got, carried, f"coupled_step: the log-weight of {who}'s reference", hint, atol=tol)


@properties(*_COUPLED)
def check_coupled_step(fn: Callable, seed: int = 0, n: int = 4000) -> None:
    """``fn(target, x, y, generator)`` for chain states X_t, Y_{t−1} must return (X_{t+1}, Y_t):
    indices from the maximal coupling of w̄(X_t) and w̄(Y_{t−1}), then the same S − 1 fresh
    draws in both sets; each reference keeps its own log-weight, and both sets carry the
    fresh draws' log-weights. Also on image-sized, mixed-scale, float32 and −∞ log-weights."""
    model, x, x1, y0 = _coupled_pair(seed)
    S, D = x1.particles.shape[1:]
    single = [(" (only each chain's reference has weight)", 0),
              (" (only the shared slot 3 has weight: they must meet)", 2)]  # fmt: skip
    cases = _kernel_cases(model, x, (x1, y0), n, single)
    limit = z_threshold((2 * S + 1) * sum(len(c.groups) for c in cases) + D * len(cases))
    for i, case in enumerate(cases):
        g = torch.Generator().manual_seed(seed + 1000 * i)
        xs, ys = case.states

        def check(case=case, xs=xs, ys=ys, g=g) -> None:
            out = call(fn, case.target, xs, ys, g, what="your coupled_step")
            require(
                isinstance(out, tuple | list) and len(out) == 2,
                "coupled_step should return the pair of new states (X_{t+1}, Y_t)",
            )
            nx, ny = (_as_state(v, "coupled_step") for v in out)
            _check_coupled(nx, ny, xs, ys, case.target, case.groups, limit)

        with prop(_STABLE if case.label else None):
            _framed(case, check)
    wx, wy = normalized_weights(x1.log_weights[0]), normalized_weights(y0.log_weights[0])
    passed(
        "coupled step: each chain an exact CIS step (its reference's log-weight carried), "
        "P(same slot) = α, shared fresh draws and their log-weights in both sets "
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
    h_x, h_y = h_x.double(), h_y.double()
    avg = h_x[k : m + 1].mean().item()
    n = m - k + 1

    def corr(weight, lag: int = 1, stop: int = tau, sign: float = 1.0) -> float:
        return sign * sum(
            weight(t) * (h_x[t].item() - h_y[t - lag].item())
            for t in range(k + 1, stop)
            if 0 <= t - lag < len(h_y)
        )

    def right(t: int) -> float:
        return min(1, (t - k) / n)

    return {
        "the weights must be capped at 1: min(1, (t−k)/(m−k+1))": avg + corr(lambda t: (t - k) / n),
        "every correction needs its weight min(1, (t−k)/(m−k+1)), not 1": avg + corr(lambda t: 1.0),
        "pair h(X_t) with h(Y_{t−1}) (the lag), not with h(Y_t)": avg + corr(right, lag=0),
        "the average runs over t = k..m inclusive (m − k + 1 terms)": h_x[k:m].mean().item()
        + corr(right)
        if m > k
        else math.nan,
        "the corrections stop at t = τ − 1 and start at t = k + 1": avg,
        "the correction is h(X_t) − h(Y_{t−1}), not h(Y_{t−1}) − h(X_t) (sign)": avg
        + corr(right, sign=-1.0),
        "the weight at t is min(1, (t−k)/(m−k+1)): (t − k), not (t − k + 1) (off by one)": avg
        + corr(lambda t: min(1, (t - k + 1) / n)),
        "the corrections run up to t = τ − 1, the last step before the chains meet": avg
        + corr(right, stop=tau - 1),
        "average h(X_t), the chain that is one step ahead, not h(Y_t)": h_y[k : m + 1].mean().item()
        + corr(right),
        "there are m − k + 1 estimators H_k..H_m: divide by m − k + 1, not m − k": avg
        + corr(lambda t: min(1, (t - k) / (m - k)))
        if m > k
        else math.nan,
    }


_HKM = (
    "H_k (k = m): the average and the bias correction",
    "H_{k:m} for k < m: the weights min(1, (t − k)/(m − k + 1))",
    "float32 h",
)


@properties(*_HKM)
def check_hkm(fn: Callable, seed: int = 0) -> None:
    """``fn(h_x, h_y, tau, k, m)`` must return H_{k:m} (a number, in any form) for one chain
    pair, given h_x [T+1] = h(X_0..X_T), h_y [T] = h(Y_0..Y_{T−1}) with T ≥ max(τ, m), and τ;
    also for float32 h_x, h_y."""
    from ucvae_lite.lab.teaching import lag_coupled_chains

    model, x = _model(seed)
    target = model.target(x.expand(40, -1), shift=0.5, scale=1.5)
    settings = [(0, 0), (1, 3), (2, 2), (0, 4), (2, 6)]
    # m = 40: each pair keeps running to step 40 (past τ), so h(X_τ) = h(Y_{τ−1}) is there too
    run = lag_coupled_chains(target, 3, 40, generator=torch.Generator().manual_seed(seed))
    hx, hy = run.h_x()[..., 0], run.h_y()[..., 0]
    checked, float32 = 0, False
    for pair in range(hx.shape[1]):
        tau = int(run.tau[pair])
        if tau >= 40:
            continue
        T = max(tau, 10)
        h_x, h_y = hx[: T + 1, pair].clone(), hy[:T, pair].clone()
        scale = (h_x.abs().max().item() + 1) * (tau + 1)  # the size of the sum's terms
        dtypes = [_F64] if float32 or tau < 4 else [_F64, torch.float32]
        float32 = float32 or len(dtypes) == 2
        for dtype, (k, m) in ((d, s) for d in dtypes for s in settings):
            owner = _HKM[2] if dtype != _F64 else _HKM[0] if k == m else _HKM[1]
            hx_in, hy_in = h_x.to(dtype), h_y.to(dtype)
            with prop(owner):
                _hkm_case(fn, hx_in, hy_in, tau, k, m, dtype, scale)
                checked += 1
    passed(f"H_{{k:m}} right in all {checked} cases (recorded chain pairs × (k, m) settings)")


def _hkm_case(fn, hx_in: Tensor, hy_in: Tensor, tau: int, k: int, m: int, dtype, scale) -> None:
    got = call(fn, hx_in.clone(), hy_in.clone(), tau, k, m, what="your h_km")
    # a float32 result (or float32 input) is right to float32 rounding
    tol = 0.1 * _tol(_F64 if _wide(got) and dtype == _F64 else torch.float32, scale)
    got = as_number(got, "h_km's result")
    expected = _hkm_reference(hx_in.double(), hy_in.double(), tau, k, m)
    if abs(got - expected) > tol:
        named = [
            why for why, v in _hkm_variants(hx_in, hy_in, tau, k, m).items() if abs(v - got) <= tol
        ]
        raise CheckFailed(
            f"for (k, m) = ({k}, {m}) and τ = {tau}"
            + (" (float32 h)" if dtype != _F64 else "")
            + f" you returned {got:.6f}, expected {expected:.6f}. "
            + (f"Hint: {named[0]}." if named else "Check the average (t = k..m), the ")
            + (
                ""
                if named
                else "correction range (t = k+1..τ−1), its pairing h(X_t) − h(Y_{t−1}) "
                "and its weight min(1, (t−k)/(m−k+1))."
            )
        )


def check_budget_crossover(fn: Callable, seed: int = 0, data_noise: bool = False) -> None:
    """``fn(unbiased, biased)`` for two ``budget.ErrorBudget``s must return the crossover
    budget C* = (c_u V_u − c_i V_i) / |b_i|² (log-weight evaluations), a number in any form.
    ``data_noise``: the budgets carry minibatch noise ``data_variance`` (tr Σ_data), which
    each V includes."""
    g = torch.Generator().manual_seed(seed)
    advice = (("ZeroDivision", "The unbiased estimator has no bias (|b_u|² = 0): divide by the "
              "biased one's |b_i|²."),)  # fmt: skip
    for _ in range(8):
        r = torch.rand(6, generator=g, dtype=torch.float64).tolist()
        data = 5 + 50 * r[5] if data_noise else 0.0
        u = ErrorBudget("u", 0.0, 1e-4, 1 + 5 * r[0], 0.01, 10 + 30 * r[1], data_variance=data,
                        unbiased=True)  # fmt: skip
        b = ErrorBudget("i", 0.01 + 0.1 * r[2], 1e-4, 0.1 + r[3], 0.001, float(2 + int(20 * r[4])),
                        data_variance=data)  # fmt: skip
        got = call(fn, u, b, what="your crossover", advice=advice)
        require(
            not isinstance(got, complex),
            f"crossover returned the complex number {got}: C* is negative here "
            "(c_u V_u < c_i V_i), and you took its square root. The MSE is linear in 1/C: C* "
            "is the ratio itself.",
        )
        got = as_number(got, "crossover's result")
        expected = crossover_budget(u, b)[0]
        vu, vb = u.variance + u.data_variance, b.variance + b.data_variance
        mistakes = {
            "The budget buys C / c runs, so the noise term is c·V / C: multiply each variance "
            "by its cost.": (u.variance - b.variance) / b.bias2,
            "You left out the minibatch noise tr Σ_data (``data_variance``): every method pays "
            "it, each at its own cost c.": (u.cost * u.variance - b.cost * b.variance) / b.bias2,
            "The sign is flipped: C* = (c_u V_u − c_i V_i)/|b_i|², the unbiased estimator's "
            "noise first.": -expected,
            "Divide by the squared bias |b_i|², not by |b_i|.": expected * math.sqrt(b.bias2),
            "Subtract the biased estimator's noise c_i V_i: it pays noise too.": u.noise / b.bias2,
            "Each variance goes with its own estimator's cost (c_u with V_u, c_i with V_i).": (
                b.cost * vu - u.cost * vb
            )
            / b.bias2,
            "You took a square root: the MSE is linear in 1/C, so C* is the ratio itself.": (
                math.sqrt(abs(expected))
            ),
        }
        if not data_noise:
            del mistakes[next(k for k in mistakes if "minibatch" in k)]
        named = next(
            (why + " " for why, v in mistakes.items() if abs(got - v) <= 1e-6 * abs(v)), ""
        )
        if not named and not math.isfinite(got):
            named = "C* came out inf or NaN: divide by the biased estimator's |b_i|² (> 0). "
        require(
            abs(got - expected) <= 1e-6 * abs(expected),
            f"C* should be {expected:.4g} for c_u = {u.cost:.3g}, V_u = {u.variance:.3g}, "
            f"c_i = {b.cost:.3g}, V_i = {b.variance:.3g}, |b_i|² = {b.bias2:.3g}"
            + (f", tr Σ_data = {data:.3g}" if data_noise else "")
            + f"; you returned {got:.4g}. {named}MSE(C) = |b|² + c V / C; set the two equal "
            "and solve for C.",
        )
    extra = " with V = tr Σ_est + tr Σ_data" if data_noise else ""
    passed(f"C* = (c_u V_u − c_i V_i) / |b_i|²{extra}")


# --- numeric answers to derivation exercises ------------------------------------------------


@dataclass(frozen=True)
class Answer:
    """The right value, an absolute tolerance, and what a wrong answer may mean.

    The values are exact (derived, not estimated), so the tolerance is the rounding a learner
    may apply to the number the question asks for, and it is narrower than the distance to
    every listed mistake."""

    value: float | tuple[float, ...]
    tol: float
    hint: str
    mistakes: tuple[tuple[float | tuple[float, ...], str], ...] = ()


def _deg(S: int, t: int) -> float:
    return (S + 1) / (S + 1 + (S - 1) * (t - 1))


_C, _D, _S = 1.5, 20, 10  # 02: the proposal's width, the dimension, the number of particles

ANSWERS: dict[str, Answer] = {
    "02_sup_weight": Answer(
        _C**_D,
        1.0,
        "For centred Gaussians the ratio p(z|x)/q(z) is largest at the mode: it is c^d.",
        (
            (
                _C ** (_D / 2),
                "that is c^(d/2): the ratio of densities carries det(c²Σ)^(1/2) = c^d",
            ),
            (
                _C ** (2 * _D),
                "that is c^(2d): the ratio carries det(c²Σ)^(1/2) = c^d, not det(c²Σ)",
            ),
            (
                _C ** (-_D),
                "that is c^(−d), the ratio turned over: q is wider, so p/q is large at the mode",
            ),
            (
                _D * math.log(_C),
                "that is log sup w/p(x) = d log c; the question asks for the ratio itself",
            ),
            (_C * _D, "the densities multiply over the d independent coordinates: c^d, not c·d"),
            (_C**16, "that is d = 16 (the Predict question); here d = 20"),
        ),
    ),  # fmt: skip
    "02_holding_time": Answer(
        (_S - 1 + _C**_D) / (_S - 1),
        # exact, not an estimate: a whole number of steps either way (370 or 371) is accepted,
        # the S/(S−1) slip (333.5, 10% off) and the dropped 1 (369.5) are not
        0.6,
        "From a reference at the mode, P(move) = E[Σ_fresh / (c^d + Σ_fresh)] with Σ_fresh the "
        "fresh weights in units of p(x), mean S − 1; x/(a + x) is concave, so by Jensen "
        "P(move) ≤ (S − 1)/(c^d + S − 1), and the expected wait 1/P(move) is at least the inverse.",
        (
            (
                (_S - 1) / (_S - 1 + _C**_D),
                "that is P(move); the expected number of steps is its inverse",
            ),
            (
                (_S + _C**_D) / _S,
                "there are S − 1 fresh draws (slot 1 holds the reference), so "
                "E Σ_fresh = S − 1, not S",
            ),
            (
                _C**_D / (_S - 1),
                "1/P(move) = (S − 1 + c^d)/(S − 1) = 1 + c^d/(S − 1): you dropped the 1",
            ),
            (
                (2 * _C**_D + _S - 2) / (_S - 1),
                "that is 1/ε, from the minorisation constant: a bound the other way (P(move) ≥ ε)",
            ),
            ((_S - 1 + _C**16) / (_S - 1), "that is d = 16 (the Predict question); here d = 20"),
            ((_S - 1 + _C ** (_D / 2)) / (_S - 1), "sup w/p(x) is c^d, not c^(d/2)"),
        ),
    ),  # fmt: skip
    "03_expected_tau_S4": Answer(
        1 + 4 / 3,
        1e-3,
        "τ ≥ 2, and from step 2 on each coupled step meets with probability (S−1)/S, "
        "independently: τ − 1 is geometric with mean S/(S−1).",
        (
            (4 / 3, "that is E[τ − 1]: add the first step"),
            (1 + 3 / 4, "the mean of a geometric variable is 1/p, with p = (S−1)/S"),
            (2.0, "that is the smallest τ, not its mean: add the expected extra steps"),
            (1 + 4.0, "each coupled step meets with probability (S − 1)/S, not 1/S"),
            (
                2 + 4 / 3,
                "the first step is counted twice: τ − 1 is geometric on 1, 2, ..., so "
                "E[τ] = 1 + S/(S − 1)",
            ),
        ),
    ),  # fmt: skip
    "03_degenerate_tail_S10_t10": Answer(
        _deg(10, 10),
        1e-4,
        "τ > t iff the largest of the S + 1 + (S−1)(t−1) weights drawn so far is one of the "
        "S + 1 in X_0 and Y_0's reference: every draw is equally likely to be the largest.",
        (
            (11 / (11 + 9 * 10), "count the fresh draws: t − 1 coupled steps, S − 1 each"),
            (0.1, "1/t is only the shape of the tail; the constants come from counting draws"),
            (
                10 / (10 + 9 * 9),
                "the largest may also be Y_0's reference: S + 1 draws at the start, not S",
            ),
            (1 - _deg(10, 10), "that is P(τ ≤ t); the question asks for P(τ > t)"),
            (11 / (9 * 9), "the denominator counts every draw, the S + 1 at the start included"),
            (11 / (11 + 9 * 8), "by time t there are t − 1 coupled steps, not t − 2"),
        ),
    ),  # fmt: skip
    "04_correction_weights": Answer(
        (0.25, 0.5, 0.75, 1.0, 1.0),
        1e-6,
        "h(X_t) − h(Y_{t−1}) appears in H_l for l = k..min(m, t−1): in min(m−k+1, t−k) of the "
        "m−k+1 estimators that H_{k:m} averages.",
        (
            ((1 / 3, 2 / 3, 1.0, 1.0, 1.0), "there are m − k + 1 = 4 estimators, not m − k"),
            ((0.25, 0.5, 0.75, 1.0, 1.25), "a weight cannot exceed 1: cap it (min)"),
            (
                (0.5, 0.75, 1.0, 1.0, 1.0),
                "the correction at t enters H_l for l ≤ t − 1: "
                "(t − k), not (t − k + 1) of them (off by one)",
            ),
            (
                (0.0, 0.25, 0.5, 0.75, 1.0),
                "the correction at t enters t − k estimators, not t − k − 1 (off by one)",
            ),
            (
                (1.0, 1.0, 1.0, 1.0, 1.0),
                "not every estimator contains every correction: only "
                "min(m − k + 1, t − k) of the m − k + 1 do",
            ),
            (
                (0.75, 0.5, 0.25, 0.0, 0.0),
                "that is 1 minus the weight: the fraction of the "
                "estimators that contain the correction is min(1, (t − k)/(m − k + 1))",
            ),
        ),
    ),  # fmt: skip
}


def _numbers(name: str, answer, size: int | None) -> float | tuple[float, ...]:
    """``answer`` as a float (``size`` None) or a tuple of ``size`` floats: a number, tensor or
    array in any form, or a list of them; text is not a number."""
    if isinstance(answer, str | bytes):
        raise CheckFailed(f"{name}: give a number, not the text {answer!r}")
    if size is None:
        return as_number(answer, f"{name}: your answer")
    if isinstance(answer, Tensor | np.ndarray) and answer.ndim == 1:
        answer = list(answer)
    try:
        items = list(answer)
    except TypeError as e:
        raise CheckFailed(f"{name}: give a list of {size} numbers, got {answer!r}") from e
    return tuple(as_number(v, f"{name}: each entry") for v in items)


def check_value(name: str, answer) -> None:
    """Check a numeric answer to the derivation exercise ``name`` (a key of ``ANSWERS``)."""
    if name not in ANSWERS:
        raise KeyError(f"no exercise {name!r}; known: {sorted(ANSWERS)}")
    ans = ANSWERS[name]
    require(answer is not None, "assign your answer first")
    size = len(ans.value) if isinstance(ans.value, tuple) else None
    try:
        got = _numbers(name, answer, size)
    except CheckFailed as e:
        raise CheckFailed(f"{name}: give a number (or a list of numbers). {e}") from None

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
