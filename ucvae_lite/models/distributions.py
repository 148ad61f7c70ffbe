"""Batched latent distributions: the N(0, I) prior, Gaussian proposals, defensive mixtures.

Every distribution here describes one distribution *per data point* of a batch of B points:

    sample(n, generator) -> z          # [B, n, D]
    log_prob(z)          -> log q(z)   # [B, n, D] -> [B, n]
    select(index)        -> the same distribution restricted to rows ``index`` of the batch
    detach()             -> the same distribution with parameters detached from autograd

``select`` is what lets the coupled estimator drop chains that have met (see ``targets.py``).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

LOG_2PI = math.log(2.0 * math.pi)


def _validate_z(z: Tensor, batch_size: int, dim: int) -> None:
    if z.dim() != 3 or z.shape[0] != batch_size or z.shape[2] != dim:
        raise ValueError(
            f"expected latents of shape [B={batch_size}, n, D={dim}], got {tuple(z.shape)}; "
            "pass one row of samples per data point"
        )


class StandardNormal:
    """The prior p(z) = N(0, I_D), repeated for each of ``batch_size`` data points.

    log p(z) = -D/2 log(2π) - |z|²/2.
    """

    def __init__(self, batch_size: int, dim: int, *, dtype=torch.float32, device=None):
        if batch_size < 1 or dim < 1:
            raise ValueError(f"batch_size and dim must be >= 1, got {batch_size}, {dim}")
        self.batch_size, self.dim = batch_size, dim
        self.dtype, self.device = dtype, device

    def sample(self, n: int, generator: torch.Generator | None = None) -> Tensor:
        shape = (self.batch_size, n, self.dim)
        return torch.randn(shape, generator=generator, dtype=self.dtype, device=self.device)

    def log_prob(self, z: Tensor) -> Tensor:
        _validate_z(z, self.batch_size, self.dim)
        return -0.5 * (self.dim * LOG_2PI + z.pow(2).sum(-1))

    def select(self, index: Tensor) -> StandardNormal:
        return StandardNormal(len(index), self.dim, dtype=self.dtype, device=self.device)

    def detach(self) -> StandardNormal:
        return self


class Gaussian:
    """A Gaussian proposal q(z | x_b) = N(loc_b, L_b L_bᵀ) for each data point b.

    ``loc`` is [B, D]; ``scale`` is either [B, D] (diagonal standard deviations) or
    [B, D, D] (lower-triangular Cholesky factors L_b). Sampling is z = loc + L ε, ε ~ N(0, I);
    log q(z) = -D/2 log(2π) - log|det L| - |L⁻¹(z - loc)|²/2.
    """

    def __init__(self, loc: Tensor, scale: Tensor):
        if loc.dim() != 2:
            raise ValueError(f"loc must be [B, D], got {tuple(loc.shape)}")
        full = scale.dim() == 3
        expected = (*loc.shape, loc.shape[1]) if full else tuple(loc.shape)
        if tuple(scale.shape) != expected:
            raise ValueError(
                f"scale must be [B, D] (std devs) or [B, D, D] (Cholesky), "
                f"got {tuple(scale.shape)} for loc {tuple(loc.shape)}"
            )
        diag = torch.diagonal(scale, dim1=-2, dim2=-1) if full else scale
        if not bool((diag > 0).all()):
            raise ValueError("scale must have a strictly positive diagonal")
        self.loc, self.scale, self.full = loc, scale, full
        self.batch_size, self.dim = loc.shape
        self._log_det = diag.log().sum(-1)  # [B]

    def sample(self, n: int, generator: torch.Generator | None = None) -> Tensor:
        eps = torch.randn(
            (self.batch_size, n, self.dim),
            generator=generator,
            dtype=self.loc.dtype,
            device=self.loc.device,
        )
        if self.full:
            eps = eps @ self.scale.transpose(-1, -2)
        else:
            eps = eps * self.scale[:, None, :]
        return self.loc[:, None, :] + eps

    def log_prob(self, z: Tensor) -> Tensor:
        _validate_z(z, self.batch_size, self.dim)
        diff = z - self.loc[:, None, :]
        if self.full:
            # Solve L u = diff for every sample: work on [B, D, n].
            u = torch.linalg.solve_triangular(self.scale, diff.transpose(-1, -2), upper=False)
            maha = u.pow(2).sum(-2)
        else:
            maha = (diff / self.scale[:, None, :]).pow(2).sum(-1)
        return -0.5 * (self.dim * LOG_2PI + maha) - self._log_det[:, None]

    def select(self, index: Tensor) -> Gaussian:
        """Rows ``index`` of the batch (repeated indices give repeated rows)."""
        return Gaussian(self.loc[index], self.scale[index])

    def detach(self) -> Gaussian:
        """The same distribution with its parameters cut from the autograd graph."""
        return Gaussian(self.loc.detach(), self.scale.detach())


class DefensiveMixture:
    """The defensive proposal q_ε(z) = (1 - ε) q(z) + ε p(z), with p the N(0, I) prior.

    With a likelihood bounded by L̄, the importance weights p(x, z) / q_ε(z) are bounded by
    L̄ / ε, which makes the CIS kernel uniformly ergodic: τ then has geometric tails, although
    their rate can still be slow (the bound L̄ / ε may be far above p(x)).
    """

    def __init__(self, base, eps: float):
        if not 0.0 < eps < 1.0:
            raise ValueError(f"defensive weight eps must be in (0, 1), got {eps}")
        self.base, self.eps = base, float(eps)
        self.batch_size, self.dim = base.batch_size, base.dim
        loc = getattr(base, "loc", None)  # Gaussian bases; others (flows) say dtype/device
        self._dtype = getattr(base, "dtype", loc.dtype if loc is not None else torch.float32)
        self._device = getattr(base, "device", loc.device if loc is not None else None)
        self.prior = StandardNormal(
            self.batch_size, self.dim, dtype=self._dtype, device=self._device
        )

    def sample(self, n: int, generator: torch.Generator | None = None) -> Tensor:
        z_q = self.base.sample(n, generator)
        z_p = self.prior.sample(n, generator)
        u = torch.rand(z_q.shape[:2], generator=generator, dtype=z_q.dtype, device=z_q.device)
        return torch.where((u < self.eps)[..., None], z_p, z_q)

    def log_prob(self, z: Tensor) -> Tensor:
        a = self.base.log_prob(z) + math.log1p(-self.eps)
        b = self.prior.log_prob(z) + math.log(self.eps)
        return torch.logaddexp(a, b)

    def select(self, index: Tensor) -> DefensiveMixture:
        return DefensiveMixture(self.base.select(index), self.eps)

    def detach(self) -> DefensiveMixture:
        return DefensiveMixture(self.base.detach(), self.eps)
