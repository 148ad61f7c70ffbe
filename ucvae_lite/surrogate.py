"""From an estimate of posterior expectations to an unbiased log-likelihood gradient.

Fisher's identity: ∇_θ log p_θ(x) = E_{p_θ(z|x)}[∇_θ log p_θ(x, z)]. An estimate
Σ_n c_n f(z_n) of E_p[f] that is unbiased for every f (``coupled_estimate``) is, with
f = ∇_θ log p_θ(x, ·), an unbiased gradient estimate. Holding the particles z_n and the
coefficients c_n fixed (detached), the scalar

    L(θ) = Σ_b Σ_n c_{b,n} log p_θ(x_b, z_{b,n})

has ∇_θ L = Σ_b Σ_n c_{b,n} ∇_θ log p_θ(x_b, z_{b,n}): exactly that estimate, in one backward
pass. The chains themselves need no gradients.
"""

from __future__ import annotations

from collections.abc import Callable

from torch import Tensor

from .estimate import Estimate


def log_likelihood_surrogate(
    estimate: Estimate,
    log_joint: Callable[[Tensor], Tensor],
    reduction: str = "sum",
) -> Tensor:
    """A scalar whose θ-gradient estimates ∇_θ Σ_b log p_θ(x_b) (or its mean over b).

    ``log_joint`` maps particles [B, N, D] to log p_θ(x_b, z) [B, N], differentiably in θ.
    Unbiased when ``estimate`` comes from ``coupled_estimate``; the same call with an
    ``iwae_estimate`` gives the (biased) IWAE gradient of the decoder. Its *value* is not
    log p(x): only its gradient is meaningful.
    """
    if reduction not in ("sum", "mean", "none"):
        raise ValueError(f"reduction must be 'sum', 'mean' or 'none', got {reduction!r}")
    particles = estimate.particles.detach()
    values = log_joint(particles)
    if values.shape != particles.shape[:2]:
        raise ValueError(
            f"log_joint must map {tuple(particles.shape)} to {tuple(particles.shape[:2])}, "
            f"got {tuple(values.shape)}"
        )
    per_point = (estimate.coef.detach().to(values.dtype) * values).sum(1)
    if reduction == "none":
        return per_point
    return per_point.sum() if reduction == "sum" else per_point.mean()
