"""Importance weighting: log-weights, the IWAE bound, self-normalised estimates.

With w_s = p(x, z_s) / q(z_s | x) for z_1..z_S ~ q i.i.d.,

    L_S = E log( (1/S) Σ_s w_s ) ≤ log p(x)         (the IWAE bound; the gap is O(1/S))
    w̄_s = w_s / Σ_j w_j                              (self-normalised weights)
    Σ_s w̄_s f(z_s) ≈ E_{p(z|x)} f(z)                  (biased for finite S)

The *extended target* is π̄(s, z_{1:S}) = (1/S) p(z_s | x) Π_{j≠s} q(z_j | x): its slot s is
exactly posterior-distributed, and π̄(s | z_{1:S}) = w̄_s (``kernels`` derives both). Its
marginal on z_{1:S} is q^S reweighted by p̂/p(x), p̂ = (1/S) Σ_s w_s, so

    KL(q^S ‖ π̄) = E_{q^S}[log (p(x) / p̂)] = log p(x) − L_S:

the IWAE bound's gap is exactly how far the IWAE sample set is from the extended target.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import Tensor

from ucvae_lite.core.estimate import Estimate
from ucvae_lite.core.targets import Target


def validate_num_samples(num_samples: int) -> None:
    if not isinstance(num_samples, int) or num_samples < 2:
        raise ValueError(
            f"num_samples must be an integer >= 2 (S particles per set), got {num_samples!r}"
        )


def validate_samples(z: Tensor, n: int, where: str = "target.sample") -> None:
    if z.dim() != 3 or z.shape[1] != n:
        raise ValueError(
            f"{where}({n}) must return a [B, {n}, D] tensor, got shape {tuple(z.shape)}"
        )


def validate_log_weights(log_w: Tensor, z: Tensor, where: str = "target.log_weight") -> None:
    """Raise ValueError unless log_w is [B, n] for z [B, n, D], without NaN or all -inf rows."""
    if tuple(log_w.shape) != tuple(z.shape[:2]):
        raise ValueError(
            f"{where} must map z of shape {tuple(z.shape)} to log-weights of shape "
            f"{tuple(z.shape[:2])}, got {tuple(log_w.shape)}"
        )
    if bool(torch.isnan(log_w).any()):
        rows = torch.isnan(log_w).any(-1).nonzero().flatten().tolist()
        raise ValueError(
            f"{where} returned NaN for data points {rows[:10]}; check the model and the "
            "proposal at those inputs (NaN usually means an invalid parameter or overflow)"
        )
    if bool(torch.isposinf(log_w).any()):
        raise ValueError(f"{where} returned +inf: the proposal density is zero where p(x,z) > 0")
    dead = torch.isneginf(log_w).all(-1)
    if bool(dead.any()):
        raise ValueError(
            f"every log-weight is -inf for data points {dead.nonzero().flatten().tolist()[:10]}: "
            "the proposal puts no mass where p(x, z) > 0; use a wider or defensive proposal"
        )


def normalized_weights(log_w: Tensor) -> Tensor:
    """Self-normalised weights w̄ (softmax of the log-weights), along the last dimension."""
    return torch.softmax(log_w, -1)


def iwae_bound(log_w: Tensor) -> Tensor:
    """log (1/S) Σ_s w_s for log-weights [..., S] -> [...]; its mean is the IWAE bound L_S."""
    return torch.logsumexp(log_w, -1) - math.log(log_w.shape[-1])


def effective_sample_size(log_w: Tensor) -> Tensor:
    """Kish's ESS = 1 / Σ_s w̄_s², between 1 (degenerate) and S (equal weights)."""
    return 1.0 / normalized_weights(log_w).pow(2).sum(-1)


def iwae_estimate(
    target: Target, num_samples: int, generator: torch.Generator | None = None
) -> Estimate:
    """The IWAE self-normalised estimate Σ_s w̄_s f(z_s), z_s ~ q i.i.d., as an ``Estimate``.

    It is what the IWAE gradient averages: biased for every finite S.
    """
    validate_num_samples(num_samples)
    z = target.sample(num_samples, generator)
    validate_samples(z, num_samples)
    log_w = target.log_weight(z)
    validate_log_weights(log_w, z)
    B, S, D = z.shape
    rows = torch.arange(B, device=z.device).repeat_interleave(S)
    return Estimate(
        flat_particles=z.reshape(B * S, D),
        flat_coef=normalized_weights(log_w.detach()).reshape(B * S),
        rows=rows,
        batch_size=B,
        num_samples=S,
        tau=torch.zeros(B, dtype=torch.long, device=z.device),
        num_evals=torch.full((B,), S, dtype=torch.long, device=z.device),
        truncated=torch.zeros(B, dtype=torch.bool, device=z.device),
        initial_log_weights=log_w.detach(),
    )


def sample_extended_target(
    target: Target,
    num_samples: int,
    posterior_sample: Callable[[torch.Generator | None], Tensor],
    generator: torch.Generator | None = None,
) -> tuple[Tensor, Tensor]:
    """Exact draws from π̄(s, z_{1:S}) = (1/S) p(z_s | x) Π_{j≠s} q(z_j | x).

    ``posterior_sample(generator)`` must return one exact posterior draw per data point, [B, D]
    (available for the linear-Gaussian model). Returns (s [B], z [B, S, D]).
    """
    validate_num_samples(num_samples)
    z = target.sample(num_samples, generator).clone()
    B = z.shape[0]
    s = torch.randint(num_samples, (B,), generator=generator, device=z.device)
    z[torch.arange(B, device=z.device), s] = posterior_sample(generator).to(z.dtype)
    return s, z
