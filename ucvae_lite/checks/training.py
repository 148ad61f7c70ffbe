"""Checkers for the exercises of notebooks 05 (training) and 06 (when is it practical).

Each runs the learner's function on a small VAE (16 pixels, 2 latents) with fixed seeds and
compares with the library: the losses by their *gradients* (a loss is right when its gradient
is, whatever its value), the diagnostics and formulas by value. A wrong answer raises
``CheckFailed`` with a hint naming the likely mistake.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from .. import practical
from ..coupled import coupled_estimate
from ..diagnostics import degenerate_survival
from ..estimate import Estimate
from ..iwae import effective_sample_size, iwae_bound
from ..surrogate import log_likelihood_surrogate, particle_log_joint
from ..vae import VAE, posterior_grid
from ._common import call, expect_close, expect_shape, passed, require

__all__ = [
    "check_degenerate_tail",
    "check_grid_log_likelihood",
    "check_inclusive_encoder_loss",
    "check_is_degenerate",
    "check_iwae_encoder_loss",
    "check_ucvae_decoder_loss",
    "check_within_set_ess",
]


def small_vae(seed: int = 0, data_dim: int = 16, latent_dim: int = 2) -> tuple[VAE, Tensor]:
    """A small float64 VAE and 6 binary images: what the training checkers run on."""
    torch.manual_seed(seed)
    model = VAE(data_dim, (8,), latent_dim).double()
    g = torch.Generator().manual_seed(seed + 100)
    x = (torch.rand(6, data_dim, generator=g, dtype=torch.float64) < 0.5).double()
    return model, x


def _grads(loss: Tensor, params: list[Tensor]) -> Tensor:
    """The flattened gradient of ``loss`` (zeros where it does not depend on a parameter)."""
    grads = torch.autograd.grad(loss, params, allow_unused=True, retain_graph=True)
    return torch.cat(
        [
            (torch.zeros_like(p) if g is None else g).reshape(-1)
            for g, p in zip(grads, params, strict=True)
        ]
    )


def _loss(value, what: str) -> Tensor:
    require(isinstance(value, Tensor), f"{what} should return a torch.Tensor, got {type(value)}")
    require(
        value.dim() == 0,
        f"{what} should return one number (a scalar loss), got shape "
        f"{tuple(value.shape)}: average over the images of the batch",
    )
    require(
        value.requires_grad,
        f"{what} returned a tensor without a gradient: compute it from "
        "the model's outputs (not under torch.no_grad(), not with .detach() or .item())",
    )
    return value


def _close(a: Tensor, b: Tensor, rtol: float = 1e-6) -> bool:
    return bool(torch.allclose(a, b, rtol=rtol, atol=1e-9 * (1 + b.abs().max().item())))


def _ratio_hint(got: Tensor, want: Tensor, batch: int) -> str:
    """A hint when ``got`` is a multiple of ``want`` (sign or batch size), else ''."""
    if not want.abs().max() > 0:
        return ""
    c = (got @ want / (want @ want)).item()
    if _close(got, c * want, 1e-5):
        if abs(c + 1) < 1e-6:
            return "It has the wrong sign: the optimiser minimises the loss."
        if abs(c - batch) < 1e-6:
            return "It is the batch size times too large: average over images, don't sum."
        if abs(c - 1 / batch) < 1e-6:
            return f"It is {batch} times too small: divide by the batch size once, not twice."
        if c < 0:
            return f"It points the wrong way: it is {c:.3g} times the gradient asked for."
        if c > 1:
            return f"It points the right way but is {c:.3g} times too large."
        return f"It points the right way but is {1 / c:.3g} times too small."
    return ""


# --- notebook 05 ------------------------------------------------------------------------------
def _estimate(model: VAE, x: Tensor, seed: int, scale: float = 1.0) -> Estimate:
    target = practical.widened_target(model, x, scale) if scale != 1.0 else model.target(x)
    return coupled_estimate(target, 4, 1, 2, generator=torch.Generator().manual_seed(seed))


def check_ucvae_decoder_loss(fn, seed: int = 0) -> None:
    """``fn(model, x, estimate)`` must be a loss whose θ-gradient is
    −(1/B) Σ_b Σ_n c_{b,n} ∇_θ log p_θ(x_b, z_{b,n}) (``log_likelihood_surrogate``, mean)."""
    model, x = small_vae(seed)
    for scale in (1.0, 2.0):  # the encoder's q, and a wider one (longer chains)
        est = _estimate(model, x, seed + 1, scale)
        theta, phi = list(model.decoder.parameters()), list(model.encoder.parameters())
        want = _grads(-log_likelihood_surrogate(est, particle_log_joint(model, x), "mean"), theta)
        loss = _loss(call(fn, model, x, est, what="your decoder loss"), "your decoder loss")
        got = _grads(loss, theta)
        require(
            got.abs().max() > 0,
            "Your loss does not depend on θ (the decoder): evaluate "
            "model.log_joint(x, z) at the estimate's particles.",
        )
        require(
            _grads(loss, phi).abs().max() == 0,
            "Your loss moves the encoder φ: the "
            "decoder's loss uses the particles as fixed numbers (they are detached).",
        )
        if _close(got, want):
            continue
        hint = _ratio_hint(got, want, len(x))
        B, S = len(x), est.num_samples
        w0 = torch.softmax(est.initial_log_weights, -1)
        z0 = est.flat_particles[: B * S].view(B, S, -1)  # X_0 is stored first
        iwae = -(w0 * model.log_joint(x, z0)).sum(1).mean()
        if not hint and _close(got, _grads(iwae, theta)):
            hint = (
                "That is IWAE's decoder gradient (the weights of X_0 only), which is biased: "
                "use every particle of the estimate with its coefficient c_n."
            )
        pos = -(est.coef.clamp_min(0) * model.log_joint(x, est.particles)).sum(1).mean()
        if not hint and _close(got, _grads(pos, theta)):
            hint = (
                "The negative coefficients are missing: the terms −h(Y_{t−1}) of the bias "
                "correction enter H_{k:m} with c_n < 0."
            )
        require(
            False,
            "Your loss's θ-gradient differs from −(1/B) Σ_b Σ_n c_n ∇_θ log p_θ(x_b, "
            f"z_n). {hint or 'Use estimate.particles [B, N, D] and estimate.coef [B, N].'}",
        )
    passed("your decoder loss has exactly the θ-gradient of ucvae's surrogate (−H_{k:m}).")


def check_iwae_encoder_loss(fn, num_samples: int = 5, seed: int = 0) -> None:
    """``fn(model, x, num_samples, generator)``: −(1/B) Σ_b log (1/S) Σ_s w_s with z_s drawn
    by ``model.encode(x).sample(S, generator)`` (reparameterised) and θ held fixed."""
    model, x = small_vae(seed)
    theta, phi = list(model.decoder.parameters()), list(model.encoder.parameters())
    q = model.encode(x)
    z = q.sample(num_samples, torch.Generator().manual_seed(seed))
    log_w = model.log_joint(x, z, detach_decoder=True) - q.log_prob(z)
    want = _grads(-iwae_bound(log_w).mean(), phi)
    gen = torch.Generator().manual_seed(seed)
    loss = _loss(
        call(fn, model, x, num_samples, gen, what="your encoder loss"), "your encoder loss"
    )
    require(
        _grads(loss, theta).abs().max() == 0,
        "Your loss moves the decoder θ: hold θ fixed "
        "in the encoder's loss (model.log_joint(x, z, detach_decoder=True)).",
    )
    got = _grads(loss, phi)
    if _close(got, want):
        passed("your encoder loss has the φ-gradient of the IWAE bound with θ held fixed.")
        return
    hint = _ratio_hint(got, want, len(x))
    elbo = -log_w.mean(-1).mean()
    if not hint and _close(got, _grads(elbo, phi)):
        hint = (
            "That is the ELBO's gradient (the mean of log w): IWAE takes the log of the mean of w."
        )
    lw_fixed = model.log_joint(x, z.detach(), detach_decoder=True) - q.log_prob(z.detach())
    if not hint and _close(got, _grads(-iwae_bound(lw_fixed).mean(), phi)):
        hint = (
            "The path through z is missing: keep z = q.sample(S, generator) attached (it is "
            "reparameterised, z = μ + σ ε), don't detach it."
        )
    require(
        False,
        "Your loss's φ-gradient differs from that of −mean_b log (1/S) Σ_s w_s. "
        + (hint or "Draw z = model.encode(x).sample(S, generator) once, first."),
    )


def check_inclusive_encoder_loss(fn, seed: int = 0) -> None:
    """``fn(model, x, estimate)``: −(1/B) Σ_b Σ_n c_{b,n} log q_φ(z_{b,n} | x_b), whose
    φ-gradient estimates ∇_φ KL(p ‖ q_φ) without bias (the inclusive KL)."""
    model, x = small_vae(seed)
    est = _estimate(model, x, seed + 2)
    theta, phi = list(model.decoder.parameters()), list(model.encoder.parameters())
    q = model.encode(x)
    log_q = lambda rows, z: q.select(rows).log_prob(z[:, None])[:, 0]  # noqa: E731
    want = _grads(-log_likelihood_surrogate(est, log_q, "mean"), phi)
    loss = _loss(call(fn, model, x, est, what="your inclusive-KL loss"), "your inclusive-KL loss")
    require(
        _grads(loss, theta).abs().max() == 0,
        "Your loss moves the decoder θ: the inclusive "
        "KL's gradient needs only log q_φ(z | x) at the particles, not log p_θ(x, z).",
    )
    got = _grads(loss, phi)
    require(
        got.abs().max() > 0,
        "Your loss does not depend on φ: evaluate the encoder's "
        "log-density model.encode(x).log_prob(z) at the estimate's particles.",
    )
    if _close(got, want):
        passed("your inclusive-KL loss has the φ-gradient −(1/B) Σ_b Σ_n c_n ∇_φ log q_φ(z_n|x_b).")
        return
    hint = _ratio_hint(got, want, len(x))
    require(
        False,
        "Your loss's φ-gradient differs from −(1/B) Σ_b Σ_n c_n ∇_φ log q_φ(z_n | x_b). "
        + (
            hint
            or "The same particles and coefficients as the decoder's loss, with "
            "log q_φ in place of log p_θ."
        ),
    )


def check_grid_log_likelihood(fn, seed: int = 0) -> None:
    """``fn(model, x, limit, n)`` -> [B]: log p_θ(x_b) = log Σ_g p_θ(x_b, z_g) Δ² on the n × n
    grid ``torch.linspace(-limit, limit, n)`` in each coordinate (``vae.posterior_grid``)."""
    model, x = small_vae(seed)
    for limit, n in ((4.0, 81), (5.0, 120)):
        want = posterior_grid(model, x, limit, n).log_marginal.detach()
        got = call(fn, model, x, limit, n, what="your grid log-likelihood")
        got = expect_shape(torch.as_tensor(got).detach(), tuple(want.shape), "your answer")
        log_cell = 2 * math.log(2 * limit / (n - 1))
        off = (got.double() - want).mean().item()
        hint = ""
        if abs(off + log_cell) < 1e-4:
            hint = "It misses the cell area: Σ_g p(x, z_g) Δ² needs + log Δ² (Δ = grid spacing)."
        elif abs(off - 2 * math.log(n)) < 1e-4 or abs(off + 2 * math.log(n)) < 1e-4:
            hint = "It is off by log n²: a sum over cells times Δ², not a mean over points."
        expect_close(
            got,
            want,
            "your log p(x)",
            hint
            or "log p(x) = logsumexp_g log p(x, z_g) "
            "+ log Δ², with log p(x, z) = model.log_joint(x, z).",
            atol=1e-6,
        )
    passed("your log p(x) matches the grid's (exact up to the grid).")


# --- notebook 06 ------------------------------------------------------------------------------
def check_degenerate_tail(p_tail: float, t_99: int, S: int = 10, t: int = 20) -> None:
    """The degenerate-weights law at S = 10: ``p_tail`` = P(τ > 20) and ``t_99`` = the smallest
    t with P(τ > t) < 0.01."""
    law = lambda u: degenerate_survival(torch.tensor([float(u)]), S).item()  # noqa: E731
    want_p = law(t)
    want_t = next(u for u in range(1, 10**6) if law(u) < 0.01)
    off_by_one = abs(p_tail - law(t + 1)) < 1e-4 or abs(p_tail - law(t - 1)) < 1e-4
    require(
        abs(p_tail - want_p) < 1e-4,
        f"P(τ > {t}) is not {p_tail:.4g}. "
        + (
            "Off by one step: by step t the chains have seen t − 1 fresh sets of S − 1 draws "
            "beyond the S + 1 starting candidates."
            if off_by_one
            else "Count the candidates: the S + 1 starting ones, then S − 1 fresh draws per step; "
            "the largest is equally likely to be any of them."
        ),
    )
    require(
        int(t_99) == want_t,
        f"P(τ > t) first drops below 1% at t = {want_t}, not {t_99}: "
        "solve (S+1)/(S+1+(S−1)(t−1)) < 0.01 for the smallest integer t.",
    )
    # the median: the smallest t with P(τ > t) ≤ 1/2 (τ ≥ 2, so t ≥ 2)
    median = next(u for u in range(2, want_t + 1) if (S + 1) / (S + 1 + (S - 1) * (u - 1)) <= 0.5)
    passed(
        f"P(τ > {t}) = {want_p:.4f} and the 99th percentile of τ is {want_t} at S = {S}: "
        f"a median of {median} steps, yet one chain in a hundred runs past step "
        f"{want_t - 1}."
    )


def _log_weight_cases(seed: int) -> list[Tensor]:
    g = torch.Generator().manual_seed(seed)
    return [
        torch.randn(7, 10, generator=g, dtype=torch.float64),  # healthy
        3.0 * torch.randn(4, 6, 10, generator=g, dtype=torch.float64),  # spread, batched
        torch.randn(5, 10, generator=g, dtype=torch.float64) - 800.0,  # tiny weights
        torch.randn(5, 10, generator=g, dtype=torch.float64) * 50 + 800.0,  # huge, degenerate
    ]


def check_within_set_ess(fn, seed: int = 0) -> None:
    """``fn(log_w)`` for log-weights [..., S] -> [...]: Kish's ESS (Σ_s w_s)² / Σ_s w_s²."""
    for i, lw in enumerate(_log_weight_cases(seed)):
        want = effective_sample_size(lw)
        got = call(fn, lw.clone(), what="your within_set_ess")
        got = expect_shape(torch.as_tensor(got), tuple(want.shape), "your ESS")
        hint = ""
        if not torch.isfinite(got).all():
            hint = (
                "It overflows or underflows (NaN or inf) for log-weights near ±800: "
                "normalise first, w̄ = softmax(log_w), then ESS = 1 / Σ w̄²."
            )
        elif torch.allclose(got.double(), want / lw.shape[-1]):
            hint = "That is ESS / S; the exercise asks for the ESS in particles (1 to S)."
        expect_close(got, want, f"your ESS (case {i + 1})", hint, atol=1e-6)
    passed("your within-set ESS matches iwae.effective_sample_size, even for extreme weights.")


def check_is_degenerate(fn, min_ess: float = practical.DEGENERATE_ESS, seed: int = 0) -> None:
    """``fn(log_w, min_ess)`` for log-weights [N images, sets, S] -> bool: is the median over
    images of the mean within-set ESS below ``min_ess`` (``practical.degenerate_regime``)?"""
    g = torch.Generator().manual_seed(seed)
    healthy = torch.randn(9, 20, 10, generator=g, dtype=torch.float64) * 0.5
    degenerate = torch.randn(9, 20, 10, generator=g, dtype=torch.float64) * 40
    few_bad = healthy.clone()
    few_bad[:3] = degenerate[:3]  # a third of the images degenerate: the median is healthy
    most_bad = degenerate.clone()
    most_bad[:3] = healthy[:3]  # two thirds degenerate: the mean ESS is above min_ess
    one_per_set = torch.full((9, 20, 10), -50.0, dtype=torch.float64)
    one_per_set[..., 0] = torch.randn(9, 20, generator=g, dtype=torch.float64)  # each set: one
    for name, lw in [
        ("healthy", healthy),
        ("degenerate", degenerate),
        ("a few bad images", few_bad),
        ("most images bad", most_bad),
        ("one dominant particle per set", one_per_set),
    ]:
        ess = effective_sample_size(lw).mean(-1)
        want = practical.degenerate_regime(ess.median().item(), lw.shape[-1], min_ess=min_ess)
        want = want is not None
        got = call(fn, lw.clone(), min_ess, what="your is_degenerate")
        require(
            isinstance(got, bool | torch.Tensor) and torch.as_tensor(got).numel() == 1,
            f"is_degenerate should return one bool, got {got!r}",
        )
        require(
            bool(got) == want,
            f"For the case '{name}' the answer is {want}, you said "
            f"{bool(got)}. The rule: ESS within each set of S, averaged over an image's "
            "sets, then the MEDIAN over images, compared with min_ess (a few bad images "
            "must not decide, nor may the ESS of all draws pooled).",
        )
    passed("your rule agrees with practical.degenerate_regime on all five cases.")
