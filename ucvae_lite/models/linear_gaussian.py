"""The linear-Gaussian latent variable model: every quantity the method needs, in closed form.

    z ~ N(0, I_d),    x | z ~ N(W z + b, σ² I_p).

Then (standard Gaussian conjugacy)

    p(x)      = N(x; b, W Wᵀ + σ² I_p)
    p(z | x)  = N(μ, Σ),  Σ = (I_d + WᵀW / σ²)⁻¹,  μ = Σ Wᵀ (x - b) / σ².

Because log p(x) is exact and differentiable in θ = (W, b, log σ), autograd of
``log_marginal`` gives the exact gradient ∇_θ log p(x) that the coupled estimator must match
on average (Fisher's identity: ∇_θ log p(x) = E_{p(z|x)}[∇_θ log p(x, z)]).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from ucvae_lite.core.targets import ImportanceTarget
from ucvae_lite.models.distributions import LOG_2PI, DefensiveMixture, Gaussian, StandardNormal


class LinearGaussian:
    """Parameters W [p, d], b [p], log_sigma [] (scalar); any may require grad.

    ``W`` may also be batched, [B, p, d] (with ``b`` [B, p] and ``log_sigma`` [B]): one copy of
    the parameters per data point, so that autograd returns per-data-point gradients.
    """

    def __init__(self, W: Tensor, b: Tensor, log_sigma: Tensor):
        self.W, self.b = W, b
        self.log_sigma = torch.as_tensor(log_sigma, dtype=W.dtype, device=W.device)
        self.obs_dim, self.latent_dim = W.shape[-2], W.shape[-1]

    @classmethod
    def example(
        cls,
        latent_dim: int = 2,
        obs_dim: int = 4,
        sigma: float = 0.7,
        seed: int = 0,
        device: torch.device | str = "cpu",
    ) -> LinearGaussian:
        """A fixed, reproducible model used by tests, notebooks and benchmarks (float64)."""
        g = torch.Generator().manual_seed(seed)
        f64 = {"dtype": torch.float64, "device": "cpu"}  # drawn on the CPU: the same everywhere
        W = torch.randn(obs_dim, latent_dim, generator=g, **f64)
        b = 0.5 * torch.randn(obs_dim, generator=g, **f64)
        log_sigma = torch.tensor(math.log(sigma), **f64)
        return cls(W.to(device), b.to(device), log_sigma.to(device))

    def select(self, index: Tensor) -> LinearGaussian:
        """The model for rows ``index``: itself when the parameters are shared, else their rows."""
        if self.W.dim() == 2:
            return self
        log_sigma = self.log_sigma[index] if self.log_sigma.dim() else self.log_sigma
        return LinearGaussian(self.W[index], self.b[index], log_sigma)

    @property
    def sigma(self) -> Tensor:
        return self.log_sigma.exp()

    def sample_data(self, n: int, generator: torch.Generator | None = None) -> Tensor:
        """n draws x ~ p(x), shape [n, p]."""
        like = {"dtype": self.W.dtype, "device": self.W.device}
        z = torch.randn(n, self.latent_dim, generator=generator, **like)
        e = torch.randn(n, self.obs_dim, generator=generator, **like)
        return z @ self.W.T + self.b + self.sigma * e

    # --- closed forms -------------------------------------------------------------------
    def log_marginal(self, x: Tensor) -> Tensor:
        """Exact log p(x) = log N(x; b, W Wᵀ + σ² I), for x [B, p] -> [B]."""
        eye = torch.eye(self.obs_dim, dtype=self.W.dtype, device=self.W.device)
        cov = self.W @ self.W.transpose(-1, -2) + self.sigma.pow(2)[..., None, None] * eye
        chol = torch.linalg.cholesky(cov)
        diff = (x - self.b)[..., None]
        u = torch.linalg.solve_triangular(chol, diff, upper=False)[..., 0]
        log_det = torch.diagonal(chol, dim1=-2, dim2=-1).log().sum(-1)
        return -0.5 * (self.obs_dim * LOG_2PI + u.pow(2).sum(-1)) - log_det

    def posterior(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """Exact posterior p(z | x) = N(mean, cov): returns mean [B, d] and cov [B, d, d]."""
        W = self.W.detach()
        s2 = self.sigma.detach().pow(2)
        eye = torch.eye(self.latent_dim, dtype=W.dtype, device=W.device)
        prec = eye + W.transpose(-1, -2) @ W / s2[..., None, None]
        cov = torch.linalg.inv(prec)
        rhs = ((x - self.b.detach())[..., None, :] @ W)[..., 0, :] / s2[..., None]
        mean = (cov @ rhs[..., None])[..., 0]
        return mean, cov.expand(x.shape[0], -1, -1)

    def posterior_moments(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """E[z | x] [B, d] and E[z zᵀ | x] [B, d, d]."""
        mean, cov = self.posterior(x)
        return mean, cov + mean[:, :, None] * mean[:, None, :]

    # --- the model as a target ----------------------------------------------------------
    def log_joint(self, x: Tensor, z: Tensor) -> Tensor:
        """log p(x_b, z) = log N(z; 0, I) + log N(x_b; W z + b, σ² I), for z [B, n, d] -> [B, n]."""
        if self.W.dim() == 3:
            mean = torch.einsum("bpd,bnd->bnp", self.W, z)
        else:
            mean = z @ self.W.T
        mean = mean + self.b.unsqueeze(-2)
        s = self.log_sigma
        if s.dim() == 1:
            s = s[:, None]
        resid = (x[:, None, :] - mean).pow(2).sum(-1)
        log_lik = -0.5 * self.obs_dim * LOG_2PI - self.obs_dim * s - 0.5 * resid / (2 * s).exp()
        log_prior = -0.5 * (self.latent_dim * LOG_2PI + z.pow(2).sum(-1))
        return log_prior + log_lik

    def proposal(self, x: Tensor, shift: float = 0.0, scale: float = 1.0, defensive: float = 0.0):
        """A Gaussian proposal built from the exact posterior: N(μ + shift·1, (scale² Σ)).

        ``scale > 1`` gives a proposal wider than the posterior (bounded weights),
        ``scale < 1`` a narrower one (unbounded weights, heavy-tailed meeting times);
        ``defensive = ε > 0`` mixes in the prior: (1-ε) q + ε p(z).
        """
        mean, cov = self.posterior(x)
        q = Gaussian(mean + shift, scale * torch.linalg.cholesky(cov))
        return DefensiveMixture(q, defensive) if defensive > 0 else q

    def prior(self, batch_size: int) -> StandardNormal:
        return StandardNormal(batch_size, self.latent_dim, dtype=self.W.dtype)

    def target(
        self, x: Tensor, shift: float = 0.0, scale: float = 1.0, defensive: float = 0.0
    ) -> ImportanceTarget:
        """The importance-sampling target for data x [B, p] with ``proposal(x, ...)``."""
        return ImportanceTarget(self, x, self.proposal(x, shift, scale, defensive))
