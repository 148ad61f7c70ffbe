"""Checkers for the exercises of notebooks 05 (training) and 06 (when is it practical).

Each runs the learner's function on small VAEs with fixed seeds and compares with the
library: the losses by their *gradients* (a loss is right when its gradient is, whatever its
value), the diagnostics and formulas by value. Beyond the textbook case, the inputs include
what real images bring: float32 as well as float64, image-sized log-joints (hundreds of nats,
beyond what ``exp`` can represent), rows of very different scales in one batch, and rows whose
weights are all zero but one. A wrong answer raises ``CheckFailed`` with a hint naming the
likely mistake.

Tolerances are what rounding can explain, not a flat percentage: ``rounding`` is the
first-order error bound of the computation in the answer's own precision, so a float32 answer
is held to float32's precision and a float64 one to float64's. The exact answers of
notebook 06's first exercise are held to the precision the ✓ message prints them with.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable, Iterator
from dataclasses import replace
from functools import partial, wraps

import numpy as np
import torch
from torch import Tensor

from ucvae_lite.core.coupled import coupled_estimate
from ucvae_lite.core.diagnostics import degenerate_survival
from ucvae_lite.core.estimate import Estimate
from ucvae_lite.core.iwae import effective_sample_size, iwae_bound
from ucvae_lite.core.surrogate import log_likelihood_surrogate, particle_log_joint
from ucvae_lite.lab.checks._common import call, expect_shape, passed, prop, properties, require
from ucvae_lite.models.vae import VAE, posterior_grid
from ucvae_lite.studies import practical

__all__ = [
    "check_degenerate_tail",
    "check_grid_log_likelihood",
    "check_inclusive_encoder_loss",
    "check_is_degenerate",
    "check_iwae_encoder_loss",
    "check_ucvae_decoder_loss",
    "check_within_set_ess",
]

F64, F32 = torch.float64, torch.float32


# --- what every checker here shares -----------------------------------------------------------
def one_thread(check):
    """Run ``check`` with one torch thread (restored after): its tensors are tiny, and on
    shared cores a second thread only adds synchronisation (a 20-50× slowdown measured)."""

    @wraps(check)
    def run(*args, **kwargs):
        threads = torch.get_num_threads()
        torch.set_num_threads(1)
        try:
            return check(*args, **kwargs)
        finally:
            torch.set_num_threads(threads)

    return run


def rounding(dtype: torch.dtype, size, terms=1.0):
    """The most rounding can explain in a result computed in ``dtype`` from ``terms`` rounded
    operations on numbers of magnitude ``size``: 8 · terms · eps · size, the first-order bound
    of a sum of that many terms (Higham, *Accuracy and Stability*, §4.2: (n − 1) u Σ|x_i|,
    u = eps/2), with a factor 16 of slack for a different order of operations."""
    return 8 * torch.finfo(dtype).eps * terms * size


def _dtype_of(*values) -> torch.dtype:
    """The least precise floating dtype among ``values`` (tensors or NumPy arrays)."""
    dtypes = [torch.as_tensor(v).dtype for v in values]
    floats = [d for d in dtypes if d.is_floating_point] or [F64]
    return max(floats, key=lambda d: torch.finfo(d).eps)


def _as_number(value) -> float | None:
    """A Python, NumPy or one-element torch number as a float; None for anything else (a bool,
    a string, a vector)."""
    if isinstance(value, bool | np.bool_ | str | bytes):
        return None
    if isinstance(value, Tensor):
        if value.numel() != 1 or value.dtype == torch.bool or value.is_complex():
            return None
        value = value.detach().reshape(()).item()
    elif isinstance(value, np.ndarray):
        if value.size != 1 or value.dtype.kind not in "iuf":
            return None
        value = value.item()
    try:
        number = float(value)
    except (TypeError, ValueError, OverflowError):
        return None
    return number


def _in_precision(model: VAE, x: Tensor, dtype: torch.dtype) -> tuple[VAE, Tensor]:
    """The same model and images in ``dtype`` (a copy unless already in it)."""
    if dtype == x.dtype:
        return model, x
    return copy.deepcopy(model).to(dtype), x.to(dtype)


def small_vae(seed: int = 0, data_dim: int = 16, latent_dim: int = 2) -> tuple[VAE, Tensor]:
    """A small float64 VAE and 6 binary images: what the training checkers run on."""
    torch.manual_seed(seed)
    model = VAE(data_dim, (8,), latent_dim).double()
    g = torch.Generator().manual_seed(seed + 100)
    x = (torch.rand(6, data_dim, generator=g, dtype=torch.float64) < 0.5).double()
    return model, x


def image_vae(seed: int = 0) -> tuple[VAE, Tensor]:
    """A float64 VAE on 8 × 8 images with a confident decoder (logits about −14 ± 8) and 6
    images from blank to fully on: log p(x, z) runs from about 0 to about −900 nats within
    one batch, as on real images. exp() underflows to 0 below −745 nats in float64 (−104 in
    float32), so only log-space code gets every row right."""
    torch.manual_seed(seed)
    model = VAE(64, (8,), 2).double()
    with torch.no_grad():
        model.decoder[-1].weight.mul_(8.0)
        model.decoder[-1].bias.fill_(-14.0)
    g = torch.Generator().manual_seed(seed + 100)
    density = torch.tensor([0.0, 0.1, 0.3, 0.6, 1.0, 0.02], dtype=torch.float64)
    x = (torch.rand(6, 64, generator=g, dtype=torch.float64) < density[:, None]).double()
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
        value.numel() == 1,
        f"{what} should return one number (a scalar loss), got shape "
        f"{tuple(value.shape)}: average over the images of the batch",
    )
    require(
        value.requires_grad,
        f"{what} returned a tensor without a gradient: compute it from "
        "the model's outputs (not under torch.no_grad(), not with .detach() or .item())",
    )
    return value.reshape(())


def _agree(got: Tensor, want: Tensor, tol: float) -> bool:
    """``got`` is finite and within ``tol`` of ``want`` in every coordinate."""
    if not bool(torch.isfinite(got).all()):
        return False
    return (got.double() - want.double()).abs().max().item() <= tol


def _ratio_hint(got: Tensor, want: Tensor, tol: float, named: dict[float, str]) -> str:
    """A hint when ``got`` is a multiple of ``want`` (the sign, a named factor such as the
    batch size, or any other), else ''."""
    got, want = got.double(), want.double()
    if not want.abs().max() > 0 or not bool(torch.isfinite(got).all()):
        return ""
    c = (got @ want / (want @ want)).item()
    if not _agree(got, c * want, tol * max(1.0, abs(c))):
        return ""
    if abs(c - 1) < 1e-6:
        return ""
    for factor, hint in named.items():
        if abs(c - factor) < 1e-6 * max(1.0, abs(factor)):
            return hint
    if c < 0:
        return f"It points the wrong way: it is {c:.3g} times the gradient asked for."
    if c > 1:
        return f"It points the right way but is {c:.3g} times too large."
    return f"It points the right way but is {1 / c:.3g} times too small."


def _named_ratios(batch: int, particles: int | None = None, flat: int | None = None) -> dict:
    named = {
        -1.0: "It has the wrong sign: the optimiser minimises the loss.",
        float(batch): "It is the batch size times too large: average over images, don't sum.",
        1.0 / batch: f"It is {batch} times too small: divide by the batch size once, not twice.",
    }
    if particles:
        named[1.0 / particles] = (
            f"It is {particles} times too small: you averaged over the N = {particles} "
            "(padded) particles; the coefficients already weight them, so sum over n."
        )
    if flat and particles and abs(batch / flat - 1 / particles) < 1e-12:
        named[1.0 / particles] = (
            f"It is {particles} times too small: you averaged over the particles (N = "
            f"{particles} per image, {flat} in the flat view); the coefficients already weight "
            "them, so sum c_n log p over the particles and divide by the batch size B only."
        )
    elif flat:
        named[batch / flat] = (
            f"It is {flat / batch:.3g} times too small: you averaged over all {flat} particles "
            "of the flat view; sum c_n log p over them and divide by the batch size B."
        )
    return named


def _first_matching(got: Tensor, tol: float, candidates) -> str:
    """The hint of the first (gradient, hint) candidate that ``got`` agrees with, else ''."""
    for make, hint in candidates:
        try:
            other = make()
        except Exception:  # noqa: BLE001 - a candidate that cannot be built does not match
            continue
        if other is not None and _agree(got, other, tol):
            return hint
    return ""


UNDERFLOW = (
    "exp(log w) underflows to 0 for log-weights hundreds of nats below 0 (below about −745 "
    "nats in float64, −104 in float32) and overflows above +709: stay in log space "
    "(torch.logsumexp / torch.softmax subtract each row's own max)."
)
GLOBAL_MAX = (
    "Each row alone comes out right, the batch does not: you subtracted one max over the whole "
    "batch (a global max). Rows differ by hundreds of nats, so the rows far below it underflow: "
    "subtract each row's own max (keepdim=True along the last dimension), or use "
    "torch.logsumexp / torch.softmax along it."
)

MINUS_INF = (
    "A row with log-weights of −∞ (weights exactly 0) comes out NaN or inf: subtract a finite "
    "stabiliser, the row's max (not its mean or sum, which are −∞), and never form −∞ − (−∞)."
)


def _float32_only(got: Tensor, want: Tensor, tol, dtype: torch.dtype) -> str:
    """A hint when a float64 answer is right only to float32's precision (the same rounding
    bound with float32's eps), else ''."""
    if dtype != F64:
        return ""
    tol32 = tol * (torch.finfo(F32).eps / torch.finfo(F64).eps)
    if bool(((got.double() - want.double()).abs() <= tol32).all()):
        return (
            "It is right only to float32's precision, in a float64 case: something was rounded "
            "to float32 on the way (torch.tensor(...) and torch.linspace(...) make float32 "
            "unless told otherwise); keep x's dtype throughout."
        )
    return ""


def _unstable_hint(row_ok: Callable[[int], bool], rows: int) -> str:
    """Which numerical mistake a non-finite answer comes from: each row alone fine (a global
    max over the batch) or not (exp of raw log-weights)."""
    try:
        alone = all(row_ok(b) for b in range(rows))
    except Exception:  # noqa: BLE001 - an answer that fails on one row is not row-wise fine
        alone = False
    return GLOBAL_MAX if alone else "It gives NaN or inf: numerically unstable. " + UNDERFLOW


def _finite(value) -> bool:
    try:
        return bool(torch.isfinite(torch.as_tensor(value).detach()).all())
    except Exception:  # noqa: BLE001
        return False


# --- notebook 05: the losses, compared by their gradients ----------------------------------------
def _estimate(model: VAE, x: Tensor, seed: int, scale: float = 1.0) -> Estimate:
    target = practical.widened_target(model, x, scale) if scale != 1.0 else model.target(x)
    return coupled_estimate(target, 4, 1, 2, generator=torch.Generator().manual_seed(seed))


def _estimate_cases(seed: int, offset: int) -> Iterator[tuple]:
    """(name, float64 model, float64 x, model, x, estimate): the encoder's q, a wider q
    (longer chains, more negative coefficients), and the wider q in float32."""
    model, x = small_vae(seed)
    for name, scale, dtype in (
        ("float64, the encoder's q", 1.0, F64),
        ("float64, a wider q (longer chains)", 2.0, F64),
        ("float32, a wider q", 2.0, F32),
    ):
        m, xd = _in_precision(model, x, dtype)
        yield name, model, x, m, xd, _estimate(m, xd, seed + offset, scale)


def _as_float64(est: Estimate) -> Estimate:
    return replace(
        est,
        flat_particles=est.flat_particles.double(),
        flat_coef=est.flat_coef.double(),
        initial_log_weights=est.initial_log_weights.double(),
        _padded=None,
    )


def _coefficient_mistakes(est: Estimate, log_f, params: list[Tensor], which: str):
    """(gradient, hint) of typical wrong weightings of the particles, built lazily; ``log_f``
    maps particles [B, n, D] to [B, n] (log p_θ(x, z) or log q_φ(z | x)), in float64."""
    B, S = est.batch_size, est.num_samples
    c, z = est.coef, est.particles
    real = (c != 0).double()
    w0 = torch.softmax(est.initial_log_weights, -1)
    z0 = est.flat_particles[: B * S].view(B, S, -1)  # X_0 is stored first
    loss = lambda coef, zz: _grads(-(coef * log_f(zz)).sum(1).mean(), params)  # noqa: E731
    return [
        (
            lambda: loss(c.clamp_min(0), z),
            "The negative coefficients are missing (the particles of the Y chain): the terms "
            "−h(Y_{t−1}) of the bias correction enter H_{k:m} with c_n < 0.",
        ),
        (
            lambda: loss(c.abs(), z),
            "You used |c_n|: the negative coefficients (the −h(Y_{t−1}) terms of the bias "
            "correction) must keep their sign.",
        ),
        (
            lambda: loss(w0, z0),
            f"That is IWAE's {which} gradient (the weights of X_0 only, the initial sample "
            "set), which is biased: use every particle of the estimate with its coefficient c_n.",
        ),
        (
            lambda: loss(real / real.sum(1, keepdim=True), z),
            "You weighted every visited particle equally: weight each by its coefficient c_n "
            "(estimate.coef), which is signed and sums to 1 per image.",
        ),
    ]


_DECODER = (
    "the θ-gradient is −(1/B) Σ_b Σ_n c_n ∇_θ log p_θ(x_b, z_n) (float64, the encoder's q)",
    "the encoder φ gets no gradient (the particles are fixed numbers)",
    "a wider q (longer chains, more negative coefficients)",
    "float32",
)


@properties(*_DECODER)
@one_thread
def check_ucvae_decoder_loss(fn, seed: int = 0) -> None:
    """``fn(model, x, estimate)`` must be a loss whose θ-gradient is
    −(1/B) Σ_b Σ_n c_{b,n} ∇_θ log p_θ(x_b, z_{b,n}) (``log_likelihood_surrogate``, mean), in
    float64 and float32."""
    what = "your decoder loss"
    for i, (case, model64, x64, model, x, est) in enumerate(_estimate_cases(seed, 1)):
        with prop((None, *_DECODER[2:])[i]):
            _decoder_case(fn, what, case, model64, x64, model, x, est)
    passed("your decoder loss has exactly the θ-gradient of ucvae's surrogate (−H_{k:m}).")


def _decoder_case(fn, what, case, model64, x64, model, x, est) -> None:
    theta, phi = list(model.decoder.parameters()), list(model.encoder.parameters())
    theta64 = list(model64.decoder.parameters())
    est64 = _as_float64(est)
    log_p = particle_log_joint(model64, x64)
    want = _grads(-log_likelihood_surrogate(est64, log_p, "mean"), theta64)
    size_est = replace(est64, flat_coef=est64.flat_coef.abs())
    size = max(
        want.abs().max().item(),
        _grads(-log_likelihood_surrogate(size_est, log_p, "mean"), theta64).abs().max().item(),
    )
    tol = rounding(x.dtype, size, est.flat_coef.numel() * x.shape[1])
    loss = _loss(call(fn, model, x, est, what=f"{what} ({case})"), what)
    with prop(_DECODER[0]):
        got = _grads(loss, theta)
        require(
            got.abs().max() > 0,
            "Your loss does not depend on θ (the decoder): evaluate "
            "model.log_joint(x, z) at the estimate's particles.",
        )
    with prop(_DECODER[1]):
        require(
            _grads(loss, phi).abs().max() == 0,
            "Your loss moves the encoder φ: the "
            "decoder's loss uses the particles as fixed numbers (they are detached).",
        )
    with prop(_DECODER[0]):
        if _agree(got, want, tol):
            return
        if not _finite(loss) or not _finite(got):
            hint = "It gives NaN or inf. " + UNDERFLOW
        else:
            B = len(x)
            named = _named_ratios(B, est.coef.shape[1], est.flat_coef.numel())
            hint = (
                _ratio_hint(got, want, tol, named)
                or _first_matching(
                    got,
                    tol,
                    _coefficient_mistakes(
                        est64, partial(model64.log_joint, x64), theta64, "decoder"
                    ),
                )
                or _float32_only(got, want, tol, x.dtype)
            )
        require(
            False,
            f"Your loss's θ-gradient ({case}) differs from −(1/B) Σ_b Σ_n c_n ∇_θ log p_θ(x_b, "
            f"z_n). {hint or 'Use estimate.particles [B, N, D] and estimate.coef [B, N].'}",
        )


def _iwae_cases(seed: int):
    small, x = small_vae(seed)
    image, xi = image_vae(seed)
    yield "float64", small, x, small, x
    yield "float64, image-sized log-weights (0 to about −900 nats)", image, xi, image, xi
    yield ("float32, image-sized log-weights", image, xi, *_in_precision(image, xi, F32))


_ENCODER = (
    "θ is held fixed (no gradient to the decoder)",
    "the φ-gradient of the IWAE bound (float64, small log-weights)",
    "stable on image-sized log-weights (0 to about −900 nats)",
    "float32",
)


@properties(*_ENCODER)
@one_thread
def check_iwae_encoder_loss(fn, num_samples: int = 5, seed: int = 0) -> None:
    """``fn(model, x, num_samples, generator)``: −(1/B) Σ_b log (1/S) Σ_s w_s with z_s drawn
    by ``model.encode(x).sample(S, generator)`` (reparameterised) and θ held fixed; on small
    and image-sized log-weights, in float64 and float32."""
    what, S = "your encoder loss", num_samples
    for i, (case, model64, x64, model, x) in enumerate(_iwae_cases(seed)):
        with prop((None, *_ENCODER[2:])[i]):
            _encoder_case(fn, what, S, seed, case, model64, x64, model, x)
    passed("your encoder loss has the φ-gradient of the IWAE bound with θ held fixed.")


def _encoder_case(fn, what, S, seed, case, model64, x64, model, x) -> None:
    B = len(x)
    theta, phi = list(model.decoder.parameters()), list(model.encoder.parameters())
    phi64 = list(model64.encoder.parameters())
    q = model64.encode(x64)
    if x.dtype == F64:
        z = q.sample(S, torch.Generator().manual_seed(seed))
    else:  # the learner's float32 draw, as a function of the float64 φ: z = μ + σ ε
        with torch.no_grad():
            zd = model.encode(x).sample(S, torch.Generator().manual_seed(seed))
        eps = ((zd.double() - q.loc[:, None]) / q.scale[:, None]).detach()
        z = q.loc[:, None] + eps * q.scale[:, None]
    log_w = model64.log_joint(x64, z, detach_decoder=True) - q.log_prob(z)
    want = _grads(-iwae_bound(log_w).mean(), phi64)
    elbo = _grads(-log_w.mean(-1).mean(), phi64)
    size = max(want.abs().max().item(), elbo.abs().max().item())
    tol = rounding(x.dtype, size, B * S * x.shape[1] + log_w.abs().max().item())
    gen = torch.Generator().manual_seed(seed)
    loss = _loss(call(fn, model, x, S, gen, what=f"{what} ({case})"), what)
    with prop(_ENCODER[0]):
        require(
            _grads(loss, theta).abs().max() == 0,
            "Your loss moves the decoder θ: hold θ fixed "
            "in the encoder's loss (model.log_joint(x, z, detach_decoder=True)).",
        )
    with prop(_ENCODER[1]):
        got = _grads(loss, phi)
        if _agree(got, want, tol):
            return
        if not _finite(loss) or not _finite(got):

            def row_ok(b: int, model=model, x=x, phi=phi) -> bool:
                g = torch.Generator().manual_seed(seed)
                one = fn(model, x[b : b + 1], S, g)
                return _finite(one) and _finite(_grads(one.reshape(()), phi))

            hint = _unstable_hint(row_ok, B)
        elif x.dtype != F64:
            hint = "It is right in float64 but not in float32: keep every tensor in x's dtype."
        else:
            hint = (
                _ratio_hint(got, want, tol, _named_ratios(B))
                or _first_matching(
                    got, tol, _iwae_mistakes(model64, x64, S, seed, z, q, log_w, phi64)
                )
                or _float32_only(got, want, tol, x.dtype)
            )
        require(
            False,
            f"Your loss's φ-gradient ({case}) differs from that of −mean_b log (1/S) Σ_s w_s. "
            + (hint or "Draw z = model.encode(x).sample(S, generator) once, first."),
        )


def _iwae_mistakes(model, x, S, seed, z, q, log_w, phi):
    def detached_z():
        lw = model.log_joint(x, z.detach(), detach_decoder=True) - q.log_prob(z.detach())
        return _grads(-iwae_bound(lw).mean(), phi)

    def stl():
        lw = model.log_joint(x, z, detach_decoder=True) - q.detach().log_prob(z)
        return _grads(-iwae_bound(lw).mean(), phi)

    def drawn_twice():
        g = torch.Generator().manual_seed(seed)
        model.encode(x).sample(S, g)
        q2 = model.encode(x)
        z2 = q2.sample(S, g)
        lw = model.log_joint(x, z2, detach_decoder=True) - q2.log_prob(z2)
        return _grads(-iwae_bound(lw).mean(), phi)

    return [
        (
            lambda: _grads(-log_w.mean(-1).mean(), phi),
            "That is the ELBO's gradient (the mean of log w): IWAE takes the log of the mean of w.",
        ),
        (
            detached_z,
            "The path through z is missing: keep z = q.sample(S, generator) attached (it is "
            "reparameterised, z = μ + σ ε), don't detach it.",
        ),
        (
            stl,
            "log q_φ(z | x) lost its own dependence on φ (q's parameters detached, as in "
            "'sticking the landing'): that is a different gradient; keep q attached.",
        ),
        (
            lambda: _grads(-(torch.softmax(log_w, -1) * log_w).sum(-1).mean(), phi),
            "In the surrogate Σ_s w̄_s log w_s the normalised weights w̄ must be detached "
            "(w̄.detach()): otherwise their own gradient is added.",
        ),
        (
            drawn_twice,
            "You drew z more than once (or drew something else from the generator first): the "
            "z your loss uses is not the first draw; draw z = q.sample(S, generator) once, first.",
        ),
        (
            lambda: _grads(-(torch.logsumexp(log_w, 0) - math.log(len(x))).mean(), phi),
            "You took logsumexp over the batch (dim 0): the mean of w is over the S samples of "
            "each image, the last dimension.",
        ),
    ]


_INCLUSIVE = (
    "the φ-gradient is −(1/B) Σ_b Σ_n c_n ∇_φ log q_φ(z_n | x_b) (float64, the encoder's q)",
    "the decoder θ gets no gradient",
    "a wider q (longer chains, more negative coefficients)",
    "float32",
)


@properties(*_INCLUSIVE)
@one_thread
def check_inclusive_encoder_loss(fn, seed: int = 0) -> None:
    """``fn(model, x, estimate)``: −(1/B) Σ_b Σ_n c_{b,n} log q_φ(z_{b,n} | x_b), whose
    φ-gradient estimates ∇_φ KL(p ‖ q_φ) without bias (the inclusive KL); float64 and float32."""
    what = "your inclusive-KL loss"
    for i, (case, model64, x64, model, x, est) in enumerate(_estimate_cases(seed, 2)):
        with prop((None, *_INCLUSIVE[2:])[i]):
            _inclusive_case(fn, what, case, model64, x64, model, x, est)
    passed("your inclusive-KL loss has the φ-gradient −(1/B) Σ_b Σ_n c_n ∇_φ log q_φ(z_n|x_b).")


def _inclusive_case(fn, what, case, model64, x64, model, x, est) -> None:
    theta, phi = list(model.decoder.parameters()), list(model.encoder.parameters())
    phi64 = list(model64.encoder.parameters())
    est64 = _as_float64(est)
    q = model64.encode(x64)
    log_q = lambda rows, z, q=q: q.select(rows).log_prob(z[:, None])[:, 0]  # noqa: E731
    want = _grads(-log_likelihood_surrogate(est64, log_q, "mean"), phi64)
    size_est = replace(est64, flat_coef=est64.flat_coef.abs())
    size = max(
        want.abs().max().item(),
        _grads(-log_likelihood_surrogate(size_est, log_q, "mean"), phi64).abs().max().item(),
    )
    tol = rounding(x.dtype, size, est.flat_coef.numel() * x.shape[1])
    loss = _loss(call(fn, model, x, est, what=f"{what} ({case})"), what)
    with prop(_INCLUSIVE[1]):
        require(
            _grads(loss, theta).abs().max() == 0,
            "Your loss moves the decoder θ: the inclusive "
            "KL's gradient needs only log q_φ(z | x) at the particles, not log p_θ(x, z).",
        )
    with prop(_INCLUSIVE[0]):
        got = _grads(loss, phi)
        require(
            got.abs().max() > 0,
            "Your loss does not depend on φ: evaluate the encoder's "
            "log-density model.encode(x).log_prob(z) at the estimate's particles "
            "(without detaching q).",
        )
        if _agree(got, want, tol):
            return
        if not _finite(loss) or not _finite(got):
            hint = "It gives NaN or inf. " + UNDERFLOW
        else:
            named = _named_ratios(len(x), est.coef.shape[1], est.flat_coef.numel())
            hint = (
                _ratio_hint(got, want, tol, named)
                or _first_matching(
                    got, tol, _coefficient_mistakes(est64, q.log_prob, phi64, "encoder")
                )
                or _float32_only(got, want, tol, x.dtype)
            )
        require(
            False,
            f"Your loss's φ-gradient ({case}) differs from −(1/B) Σ_b Σ_n c_n ∇_φ log "
            "q_φ(z_n | x_b). "
            + (
                hint
                or "The same particles and coefficients as the decoder's loss, with "
                "log q_φ in place of log p_θ."
            ),
        )


def _grid_cases(seed: int):
    small, x = small_vae(seed)
    image, xi = image_vae(seed)
    yield "float64", small, x, small, x, 4.0, 81
    yield "float64", small, x, small, x, 5.0, 120
    yield "float64, image-sized log-joints (0 to about −900 nats)", image, xi, image, xi, 4.0, 41
    yield ("float32, image-sized log-joints", image, xi, *_in_precision(image, xi, F32), 4.0, 41)


def _grid_tolerance(grid, limit: float, n: int, dtype) -> Tensor:
    """[B] what rounding explains in log p(x) on the grid: of log p(x, z) itself (|log p|), of
    the grid points (limit × the steepest slope of log p between neighbouring points) and of
    the cell's log-area and the log n² scale of the sum."""
    lj = grid.log_joint.reshape(-1, n, n)
    delta = 2 * limit / (n - 1)
    slope = torch.maximum(
        (lj[:, 1:] - lj[:, :-1]).abs().flatten(1).amax(-1),
        (lj[:, :, 1:] - lj[:, :, :-1]).abs().flatten(1).amax(-1),
    )
    size = lj.abs().flatten(1).amax(-1) + 2 * limit * slope / delta
    cell = abs(2 * math.log(delta)) + 2 * math.log(n)
    return rounding(dtype, size + cell, 4.0)


_GRID = (
    "the grid sum log Σ_g p(x, z_g) Δ² (float64, two grids)",
    "stable on image-sized log-joints (0 to about −900 nats)",
    "float32",
)


@properties(*_GRID)
@one_thread
def check_grid_log_likelihood(fn, seed: int = 0) -> None:
    """``fn(model, x, limit, n)`` -> [B]: log p_θ(x_b) = log Σ_g p_θ(x_b, z_g) Δ² on the n × n
    grid ``torch.linspace(-limit, limit, n)`` in each coordinate (``vae.posterior_grid``); on
    small and image-sized log-joints, in float64 and float32."""
    owners = (_GRID[0], _GRID[0], _GRID[1], _GRID[2])
    for owner, args in zip(owners, _grid_cases(seed), strict=True):
        with prop(owner):
            _grid_case(fn, *args)
    passed("your log p(x) matches the grid's (exact up to the grid).")


def _grid_case(fn, case, model64, x64, model, x, limit, n) -> None:
    with torch.no_grad():
        grid = posterior_grid(model64, x64, limit, n)
    want, tol = grid.log_marginal, _grid_tolerance(grid, limit, n, x.dtype)
    got = call(fn, model, x, limit, n, what=f"your grid log-likelihood ({case})")
    if isinstance(got, Tensor | np.ndarray) and tuple(got.shape) != tuple(want.shape):
        require(
            False,
            f"your log p(x) should have shape {tuple(want.shape)} (one number per image), "
            f"got {tuple(got.shape)}: logsumexp over the n² grid points, the last dimension.",
        )
    got = expect_shape(torch.as_tensor(got).detach(), tuple(want.shape), "your log p(x)")
    err = (got.double() - want).abs()
    if bool(torch.isfinite(got).all()) and bool((err <= tol).all()):
        return
    if not bool(torch.isfinite(got).all()):

        def row_ok(b: int, model=model, x=x, limit=limit, n=n, want=want, tol=tol) -> bool:
            one = torch.as_tensor(fn(model, x[b : b + 1], limit, n)).detach()
            return _finite(one) and bool(((one.double() - want[b]).abs() <= tol[b]).all())

        hint = _unstable_hint(row_ok, len(x))
    else:
        hint = _grid_hint(got.double() - want, tol, model64, x64, limit, n, want) or _float32_only(
            got, want, tol, x.dtype
        )
    b = int((err / tol).nan_to_num(float("inf")).argmax())
    require(
        False,
        f"your log p(x) ({case}, limit {limit:g}, n = {n}) is off by {err[b].item():.3g} "
        f"for image {b} (rounding explains {tol[b].item():.1g}). "
        + (
            hint
            or "log p(x) = logsumexp_g log p(x, z_g) + log Δ², with log p(x, z) = "
            "model.log_joint(x, z)."
        ),
    )


def _grid_hint(off: Tensor, tol: Tensor, model, x, limit, n, want) -> str:
    """The mistake behind a finite wrong grid log-likelihood, from its offset ``off`` [B]
    (a candidate matches within rounding, or 1e-10 for a candidate computed another way)."""
    tol = tol.clamp_min(1e-10)
    delta = 2 * limit / (n - 1)
    constant = (off - off.mean()).abs().max().item() <= tol.max().item()
    c = off.mean().item()
    constants = [
        (-2 * math.log(delta), "It misses the cell area: Σ_g p(x, z_g) Δ² needs + log Δ² (Δ = "
         "grid spacing)."),
        (-2 * math.log(n), "It is off by log n²: a sum over cells times Δ², not a mean over "
         "points."),
        (2 * math.log(n), "It is off by log n²: a sum over cells times Δ², not a mean over "
         "points."),
        (-math.log(delta), "The cell of a 2-D grid has area Δ², not Δ: add 2 log Δ."),
        (-4 * math.log(delta), "The cell area enters with the wrong sign: + log Δ², not − log Δ²."),
        (2 * math.log((n - 1) / n), "The spacing is off by one: n points make n − 1 gaps, "
         "Δ = 2·limit/(n − 1), not 2·limit/n."),
        (2 * math.log((n - 1) / (n + 1)), "The spacing is off by one: n points make n − 1 "
         "gaps, Δ = 2·limit/(n − 1), not 2·limit/(n + 1)."),
    ]  # fmt: skip
    if constant:
        for value, hint in constants:
            if abs(c - value) <= tol.max().item():
                return hint
    with torch.no_grad():
        for m in (n - 1, n + 1):
            other = posterior_grid(model, x, limit, m).log_marginal
            if bool(((want + off - other).abs() <= tol).all()):
                return (
                    f"That is the grid with {m} points per axis: torch.linspace(-limit, limit, n) "
                    "has exactly n points, off by one otherwise."
                )
        axis = torch.linspace(-limit, limit, n, dtype=x.dtype)
        z = torch.cartesian_prod(axis, axis).expand(len(x), -1, -1)
        no_prior = torch.logsumexp(model.log_likelihood(x[:, None], z), -1) + 2 * math.log(delta)
        if bool(((want + off - no_prior).abs() <= tol).all()):
            return (
                "The prior is missing: log p(x, z) = log N(z; 0, I) + log p(x | z), which "
                "model.log_joint(x, z) gives (model.log_likelihood is only the second part)."
            )
    return ""


# --- notebook 06 ------------------------------------------------------------------------------
def _survival(t: float, S: int) -> float:
    return degenerate_survival(torch.tensor([float(t)]), S).item()


def _digits_tolerance(value: float, decimals: int) -> float:
    """One unit in the last of ``decimals`` decimal places: an exact answer rounded or
    truncated to the precision it is printed with."""
    return 10.0**-decimals


_TAIL = ("P(τ > 20), the exact law at S = 10", "t_99, the 99th percentile of τ")


@properties(*_TAIL)
@one_thread
def check_degenerate_tail(p_tail: float, t_99: int, S: int = 10, t: int = 20) -> None:
    """The degenerate-weights law at S = 10: ``p_tail`` = P(τ > 20) and ``t_99`` = the smallest
    t with P(τ > t) < 0.01. Either may be a Python, NumPy or 0-d torch number; ``p_tail`` is
    accepted to 4 decimals (as the ✓ message prints it), rounded or truncated."""
    law = lambda u: _survival(u, S)  # noqa: E731
    want_p = law(t)
    want_t = next(u for u in range(1, 10**6) if law(u) < 0.01)
    fresh = lambda u, n0, k: n0 / (n0 + k * (u - 1))  # noqa: E731
    mistakes = [
        (law(t + 1), "Off by one step: by step t the chains have seen t − 1 fresh sets of S − 1 "
         "draws beyond the S + 1 starting candidates (you counted t)."),
        (law(t - 1), "Off by one step: by step t the chains have seen t − 1 fresh sets of S − 1 "
         "draws beyond the S + 1 starting candidates (you counted t − 2)."),
        (fresh(t, S, S - 1), "Off by one candidate at the start: there are S + 1 starting "
         "candidates (X_0's S draws and Y_0's reference), not S."),
        (fresh(t, S + 1, S), "Each coupled step adds S − 1 fresh draws shared by both chains "
         "(the reference keeps one of the S slots), not S."),
        (1 - want_p, "That is P(τ ≤ t): the question asks for the tail P(τ > t)."),
        (1 / t, "That is the 1/t law's large-t approximation: use the exact "
         "(S+1)/(S+1+(S−1)(t−1))."),
        (100 * want_p, "That is a percentage: give the probability, between 0 and 1."),
    ]  # fmt: skip
    _check_tail_probability(p_tail, want_p, mistakes, t)
    _check_t_99(t_99, want_t, law)
    # the median: the smallest t with P(τ > t) ≤ 1/2 (τ ≥ 2, so t ≥ 2)
    median = next(u for u in range(2, want_t + 1) if law(u) <= 0.5)
    passed(
        f"P(τ > {t}) = {want_p:.4f} and the 99th percentile of τ is {want_t} at S = {S}: "
        f"a median of {median} steps, yet one chain in a hundred runs past step "
        f"{want_t - 1}."
    )


def _check_tail_probability(p_tail, want_p: float, mistakes: list, t: int) -> None:
    """check_degenerate_tail's first property: P(τ > t) to 4 decimals, or the mistake it
    matches."""
    with prop(_TAIL[0]):
        p = _as_number(p_tail)
        require(p is not None, f"p_tail should be a number (a probability), got {p_tail!r}")
        tol = _digits_tolerance(want_p, 4)
        near = lambda v: abs(p - v) < tol  # noqa: E731
        if not near(want_p):
            hint = next((h for v, h in mistakes if near(v)), "")
            require(
                False,
                f"P(τ > {t}) is not {p:.4g}. "
                + (
                    hint
                    or "Count the candidates: the S + 1 starting ones, then S − 1 fresh draws per "
                    "step; the largest is equally likely to be any of them."
                ),
            )


def _check_t_99(t_99, want_t: int, law) -> None:
    """check_degenerate_tail's second property: the smallest integer t with
    P(τ > t) < 0.01, or the slip it matches."""
    with prop(_TAIL[1]):
        step = _as_number(t_99)
        require(step is not None, f"t_99 should be a number (a step count), got {t_99!r}")
        if step != int(step):
            require(
                False,
                f"t_99 = {step:g} is not a whole number of steps: t_99 is the smallest INTEGER t "
                "with P(τ > t) < 0.01; round the solution of the inequality up.",
            )
        step = int(step)
        if step != want_t:
            one_over_t = (
                "That is the 1/t approximation P(τ > t) ≈ 1/t: solve the exact law "
                "(S+1)/(S+1+(S−1)(t−1)) < 0.01."
            )
            hints = {
                100: one_over_t,
                101: one_over_t,
                want_t - 1: f"At t = {want_t - 1}, P(τ > t) = {law(want_t - 1):.4g} is not below "
                "0.01"
                + (" ('below' is strict)" if abs(law(want_t - 1) - 0.01) < 1e-12 else "")
                + ": one more step.",
                want_t + 1: f"Off by one: already at t = {want_t}, P(τ > t) = {law(want_t):.4g} "
                "< 0.01.",
            }
            require(
                False,
                f"P(τ > t) first drops below 1% at t = {want_t}, not {step}: "
                + hints.get(
                    step, "solve (S+1)/(S+1+(S−1)(t−1)) < 0.01 for the smallest integer t."
                ),
            )


def _log_weight_cases(seed: int) -> list[tuple[str, Tensor]]:
    """Log-weights [..., S]: ordinary, batched, tiny, huge, rows of very different scales in
    one batch, rows all −∞ but one or two, and float32 at image scale."""
    g = torch.Generator().manual_seed(seed)
    randn = lambda *shape: torch.randn(*shape, generator=g, dtype=F64)  # noqa: E731
    mixed = randn(6, 10) * 2 + torch.tensor([0.0, -400.0, -900.0, 700.0, -30.0, 300.0])[:, None]
    sparse = torch.full((4, 10), -math.inf, dtype=F64)
    sparse[0, 3] = 5.0  # all −∞ but one: ESS 1
    sparse[1, [0, 7]] = -600.0  # two equal weights: ESS 2
    sparse[2, :5] = randn(5) - 800.0
    sparse[3] = randn(10)
    image32 = (
        randn(5, 10) * 20 + torch.tensor([-600.0, -50.0, -1200.0, 0.0, -90.0])[:, None]
    ).float()
    image32[4, 1:] = -math.inf
    return [
        ("ordinary", randn(7, 10)),
        ("spread, batched [4, 6, 10]", 3.0 * randn(4, 6, 10)),
        ("tiny weights, log w ≈ −800", randn(5, 10) - 800.0),
        ("huge, degenerate weights, log w ≈ 800 ± 50", randn(5, 10) * 50 + 800.0),
        ("rows of very different scales in one batch (0, −400, −900, +700 …)", mixed),
        ("rows all −∞ but one or two", sparse),
        ("float32 at image scale (−1200 to 0), one row all −∞ but one", image32),
    ]


def _ess_mistakes(lw: Tensor, want: Tensor):
    S = lw.shape[-1]
    w_bar = torch.softmax(lw.double(), -1)
    shifted = (lw.double() - lw.double().amax(-1, keepdim=True)).exp()
    return [
        (want / S, "That is ESS / S; the exercise asks for the ESS in particles (1 to S)."),
        (1 / w_bar.sum(-1), "The square is missing: ESS = 1 / Σ_s w̄_s² (with w̄ normalised, "
         "1 / Σ w̄ is always 1)."),
        (w_bar.pow(2).sum(-1), "That is Σ_s w̄_s² = 1 / ESS: take its reciprocal."),
        (1 / shifted.pow(2).sum(-1), "The weights are not normalised: after subtracting the "
         "max, w̄ = w / Σ_s w (softmax), then 1 / Σ w̄²; or (Σ w)² / Σ w²."),
        (lw.double().sum(-1).pow(2) / lw.double().pow(2).sum(-1), "You used the log-weights as "
         "weights: the weights are w = exp(log w) (normalised: softmax(log_w))."),
    ]  # fmt: skip


_ESS = (
    "Kish's ESS on ordinary and batched sets",
    "stable for tiny, huge and mixed-scale log-weights (−800, +800, rows 0 to −900 and +700)",
    "rows with −∞ log-weights (all −∞ but one or two)",
    "float32 at image scale",
)
_ESS_OWNERS = (0, 0, 1, 1, 1, 2, 3)  # the property of each of _log_weight_cases' cases


@properties(*_ESS)
@one_thread
def check_within_set_ess(fn, seed: int = 0) -> None:
    """``fn(log_w)`` for log-weights [..., S] -> [...]: Kish's ESS (Σ_s w_s)² / Σ_s w_s², on
    rows of any scale (within one batch too), with −∞ entries, in float64 and float32."""
    for i, (name, lw) in enumerate(_log_weight_cases(seed)):
        with prop(_ESS[_ESS_OWNERS[i]]):
            _ess_case(fn, i, name, lw)
    passed("your within-set ESS matches iwae.effective_sample_size, even for extreme weights.")


def _ess_case(fn, i: int, name: str, lw: Tensor) -> None:
    want = effective_sample_size(lw.double())
    got = call(fn, lw.clone(), what=f"your within_set_ess (case '{name}')")
    if isinstance(got, Tensor | np.ndarray) and tuple(got.shape) != tuple(want.shape):
        require(
            False,
            f"your ESS (case '{name}') should have shape {tuple(want.shape)}, got "
            f"{tuple(got.shape)}: one ESS per set, reducing over the last dimension (the S "
            "particles of a set) only.",
        )
    got = expect_shape(torch.as_tensor(got), tuple(want.shape), f"your ESS (case '{name}')")
    got = got.detach()
    S = lw.shape[-1]
    finite_lw = lw.double().masked_fill(~torch.isfinite(lw), 0.0).abs().amax(-1)
    tol = rounding(_dtype_of(lw, got), want, finite_lw + S)
    err = (got.double() - want).abs()
    if bool(torch.isfinite(got).all()) and bool((err <= tol).all()):
        return
    if not bool(torch.isfinite(got).all()):
        rows, flat_want = lw.reshape(-1, S), want.reshape(-1)

        def row_ok(r: int, rows=rows, want=flat_want) -> bool:
            one = torch.as_tensor(fn(rows[r : r + 1].clone())).detach().double()
            return _finite(one) and bool(((one - want[r]).abs() <= 1e-3 * want[r]).all())

        hint = _unstable_hint(row_ok, rows.shape[0])
        r = int((~torch.isfinite(got.reshape(-1))).nonzero()[0])
        if bool(torch.isneginf(rows[r]).any()):
            hint = MINUS_INF + " " + hint
    else:
        hint = next(
            (
                h
                for other, h in _ess_mistakes(lw, want)
                if other.shape == want.shape
                and bool(((got.double() - other).abs() <= tol + 1e-9 * other.abs()).all())
            ),
            "",
        ) or _float32_only(got, want, tol, _dtype_of(lw, got))
    require(
        False,
        f"your ESS (case {i + 1}: {name}) is off by up to {err.max().item():.3g} "
        f"(rounding explains {tol.max().item():.1g}). "
        + (hint or "ESS = (Σ_s w_s)² / Σ_s w_s² = 1 / Σ_s w̄_s², w̄ = softmax(log_w, -1)."),
    )


def _sets_with_ess(ess: Tensor, S: int) -> Tensor:
    """Log-weights [..., S] of sets whose Kish ESS is exactly-ish ``ess`` [...] (in [1, S]):
    one weight 1 and S − 1 weights a, a found by bisection."""
    lo, hi = torch.zeros_like(ess), torch.ones_like(ess)
    k = S - 1
    for _ in range(60):
        a = (lo + hi) / 2
        value = (1 + k * a) ** 2 / (1 + k * a**2)
        lo, hi = torch.where(value < ess, a, lo), torch.where(value < ess, hi, a)
    a = (lo + hi) / 2
    lw = a.clamp_min(1e-300).log()[..., None].expand(*ess.shape, S).clone()
    lw[..., 0] = 0.0
    return lw


def _degenerate_cases(min_ess: float, seed: int) -> list[tuple[str, Tensor]]:
    g = torch.Generator().manual_seed(seed)
    randn = lambda *shape: torch.randn(*shape, generator=g, dtype=F64)  # noqa: E731
    healthy = randn(9, 20, 10) * 0.5
    degenerate = randn(9, 20, 10) * 40
    few_bad = healthy.clone()
    few_bad[:3] = degenerate[:3]  # a third of the images degenerate: the median is healthy
    most_bad = degenerate.clone()
    most_bad[:3] = healthy[:3]  # two thirds degenerate: the mean ESS is above min_ess
    one_per_set = torch.full((9, 20, 10), -50.0, dtype=F64)
    one_per_set[..., 0] = randn(9, 20)  # each set: one
    cases = [
        ("healthy", healthy),
        ("degenerate", degenerate),
        ("a few bad images", few_bad),
        ("most images bad", most_bad),
        ("one dominant particle per set", one_per_set),
    ]
    images, sets, S = 9, 20, 10
    if 1.0 < min_ess < S - 1:
        # Mixed images: within each image some sets are degenerate (ESS ≈ 1) and the rest not,
        # so the mean over an image's sets and their median disagree. ``start`` places each
        # image's run of degenerate sets: the same sets in every image, or shifted from image
        # to image (then most images are degenerate at every set position).
        def mixed(n_bad: int, good_ess: float, shifted: bool, all_bad: int = 0) -> Tensor:
            ess = torch.full((images, sets), good_ess, dtype=F64)
            for i in range(images):
                start = (i * sets) // images if shifted else 0
                ess[i, (start + torch.arange(n_bad)) % sets] = 1.0 + 1e-6
            ess[:all_bad] = 1.0 + 1e-6
            lw = _sets_with_ess(ess, S)
            perm = torch.argsort(torch.rand(images, sets, S, generator=g), -1)
            return torch.gather(lw, -1, perm) + randn(images, 1, 1) * 100  # any scale per image

        good = min_ess + 0.25 * (min_ess - 1.0)  # the mean of 40% at 1 and 60% at good < min_ess
        cases += [
            (
                "mixed images: 60% of each image's sets degenerate, at shifted positions",
                mixed(12, S - 0.5, True),
            ),
            (
                "mixed images: 60% of each image's sets degenerate, the same sets in each",
                mixed(12, S - 0.5, False),
            ),
            (
                f"mixed images: 40% of each image's sets degenerate, the rest at ESS {good:.3g}",
                mixed(8, good, True),
            ),
            (
                "mixed images: 4 images degenerate, 5 with 40% of their sets degenerate",
                mixed(8, S - 0.5, False, all_bad=4),
            ),
        ]
    for k in range(1, S + 1):  # an ESS of exactly min_ess: not below it
        lw = torch.full((images, sets, S), -math.inf, dtype=F64)
        lw[..., :k] = 0.0
        if effective_sample_size(lw).mean(-1).median().item() == min_ess:
            cases.append((f"every set's ESS exactly {min_ess:g}", lw))
    return cases


def _as_bool(value) -> bool | None:
    """A Python, NumPy or one-element torch bool as a bool; None for anything else."""
    if isinstance(value, bool | np.bool_):
        return bool(value)
    if isinstance(value, Tensor) and value.dtype == torch.bool and value.numel() == 1:
        return bool(value)
    if isinstance(value, np.ndarray) and value.dtype == bool and value.size == 1:
        return bool(value.item())
    return None


def _wrong_rules(min_ess: float):
    ess = effective_sample_size
    return [
        (lambda lw: ess(lw).mean().item() < min_ess, "You averaged over all images (the MEAN): "
         "the rule takes the MEDIAN over images, so a few bad images do not decide."),
        (lambda lw: ess(lw.flatten(1)).median().item() < min_ess, "That is the ESS of all of an "
         "image's draws pooled: compute it within each set of S, then average over the sets."),
        (lambda lw: ess(lw).median(-1).values.median().item() < min_ess, "You took the median "
         "over an image's sets: AVERAGE the within-set ESS over an image's sets (mean), then the "
         "median over images."),
        (lambda lw: ess(lw).median().item() < min_ess, "You took one median over all sets of all "
         "images: first average each image's sets (mean over sets), then the median over images."),
        (lambda lw: ess(lw).median(0).values.mean().item() < min_ess, "The order is swapped: the "
         "mean over an image's sets first, then the median over images (not the median over "
         "images of each set, then the mean)."),
        (lambda lw: ess(lw).mean(-1).median().item() <= min_ess, "'Below' is strict: an ESS of "
         "exactly min_ess is not degenerate (<, not ≤)."),
        (lambda lw: ess(lw).mean(-1).median().item() > min_ess, "The comparison is reversed: "
         "degenerate means a SMALL ESS (below min_ess)."),
        (lambda lw: ess(lw).mean(-1).median().item() / lw.shape[-1] < min_ess, "You compared "
         "ESS / S with min_ess: min_ess is in particles, compare the ESS itself."),
    ]  # fmt: skip


_RULE = (
    "the rule on uniform images (healthy, degenerate, one dominant particle per set, an ESS of "
    "exactly min_ess: 'below' is strict)",
    "the median over images (a few bad images do not decide)",
    "the mean over an image's sets (mixed images)",
)


def _rule_owner(name: str) -> str:
    if name.startswith("mixed"):
        return _RULE[2]
    return _RULE[1] if name.endswith(("images", "images bad")) else _RULE[0]


@properties(*_RULE)
@one_thread
def check_is_degenerate(fn, min_ess: float = practical.DEGENERATE_ESS, seed: int = 0) -> None:
    """``fn(log_w, min_ess)`` for log-weights [N images, sets, S] -> bool: is the median over
    images of the mean within-set ESS below ``min_ess`` (``practical.degenerate_regime``)?
    The cases include mixed images (some of each image's sets degenerate, some not), where
    the mean over an image's sets and their median disagree."""
    cases = _degenerate_cases(min_ess, seed)
    answers, truths = _degenerate_answers(fn, cases, min_ess)
    wrong = [i for i, (a, t) in enumerate(zip(answers, truths, strict=True)) if a != t]
    hint = _matching_rule_hint(cases, answers, min_ess) if wrong else ""
    # each property's first wrong case; the property with the earliest one first (normal use
    # raises on the first wrong case, as it always did)
    first = {}
    for i in wrong:
        first.setdefault(_rule_owner(cases[i][0]), i)
    for owner in sorted(_RULE, key=lambda o: first.get(o, len(cases))):
        with prop(owner):
            # a property without cases here (no mixed images unless 1 < min_ess < S − 1)
            # passes only if the function answered every case
            require(
                any(_rule_owner(name) == owner for name, _ in cases) or None not in answers,
                "is_degenerate did not answer every case.",
            )
            if owner in first:
                i = first[owner]
                require(
                    False,
                    f"For the case '{cases[i][0]}' the answer is {truths[i]}, you said "
                    f"{answers[i]}. "
                    + (
                        hint
                        or "The rule: ESS within each set of S, averaged over an image's sets, "
                        "then the MEDIAN over images, compared with min_ess (a few bad images "
                        "must not decide, nor may the ESS of all draws pooled)."
                    ),
                )
    passed(
        f"your rule agrees with practical.degenerate_regime on all {len(cases)} cases, mixed "
        "images included."
    )


def _degenerate_answers(fn, cases: list, min_ess: float) -> tuple[list, list]:
    """fn's answer (None where it gave none) and the true answer for each case."""
    answers, truths = [], []
    for name, lw in cases:
        ess = effective_sample_size(lw).mean(-1)
        want = practical.degenerate_regime(ess.median().item(), lw.shape[-1], min_ess=min_ess)
        truths.append(want is not None)
        answers.append(None)
        with prop(_rule_owner(name)):
            got = call(fn, lw.clone(), min_ess, what="your is_degenerate")
            value = _as_bool(got)
            require(
                value is not None,
                f"is_degenerate should return one bool (Python, NumPy or a one-element torch "
                f"bool), got {got!r}",
            )
            answers[-1] = value
    return answers, truths


def _matching_rule_hint(cases: list, answers: list, min_ess: float) -> str:
    """The hint of the first typical wrong rule that gives exactly these answers, or ""."""
    for rule, rule_hint in _wrong_rules(min_ess):
        try:
            if [rule(lw) for _, lw in cases] == answers:
                return rule_hint
        except Exception:  # noqa: BLE001 - a rule that cannot be evaluated does not match
            continue
    return ""
