"""The result of an estimator: visited particles with signed coefficients.

Both the IWAE self-normalised estimate and the coupled-chain estimate H_{k:m} are linear in f:

    Ĥ(f) = Σ_n c_n f(z_n)

over particles z_n visited for a data point, with coefficients c_n (for IWAE c = w̄ ≥ 0; for
H_{k:m} some c_n are negative). Storing (z_n, c_n) once serves every f, including the
gradient surrogate Σ_n c_n log p_θ(x, z_n).

Internally the particles are stored *flat* (``rows[i]`` says which data point particle i
belongs to), because coupled chains have very different lengths; ``particles`` and ``coef``
give the padded [B, N, ...] view.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field, replace

import torch
from torch import Tensor


@dataclass
class Estimate:
    """Particles and coefficients of an estimator, for a batch of ``batch_size`` data points.

    Attributes
    ----------
    flat_particles : [M, D] every particle whose log-weight was evaluated, once each.
    flat_coef : [M] its coefficient (merged over all the terms it appears in).
    rows : [M] the data point each particle belongs to.
    tau : [B] meeting times (τ ≥ 2 for coupled chains; 0 for the IWAE estimate, which has none).
    num_evals : [B] log-weight evaluations spent on each data point.
    truncated : [B] True where a chain was stopped at ``max_steps`` before meeting (biased).
    initial_log_weights : [B, S] detached log-weights of the IWAE sample set (X_0 of the
        coupled chains, the whole sample set of the IWAE estimate).
    k, m : the estimator's k and m (0, 0 for IWAE).
    flat_log_weights : [M] or None. With ``coupled_estimate(..., keep_log_weights=True)``, each
        particle's log-weight exactly as the target returned it (autograd graph included where
        ``flat_has_graph``), so a gradient surrogate can reuse it without evaluating again.
    flat_has_graph : [M] bool or None: which entries of ``flat_log_weights`` carry a graph.
    corrected : [B] bool or None. With ``coupled_estimate(..., correction_prob=p)``, where the
        bias correction was computed (Z = 1); elsewhere the estimate is h(X_0) and τ = 0.
    correction_prob : the p of the thinned correction (1: every data point corrected).
    """

    flat_particles: Tensor
    flat_coef: Tensor
    rows: Tensor
    batch_size: int
    num_samples: int
    tau: Tensor
    num_evals: Tensor
    truncated: Tensor
    initial_log_weights: Tensor
    k: int = 0
    m: int = 0
    flat_log_weights: Tensor | None = None
    flat_has_graph: Tensor | None = None
    corrected: Tensor | None = None
    correction_prob: float = 1.0
    _padded: tuple[Tensor, Tensor] | None = field(default=None, repr=False)

    @property
    def initial_ess(self) -> Tensor:
        """[B] Kish's effective sample size 1 / Σ_s w̄_s² of the IWAE sample set (1 to S)."""
        return 1.0 / torch.softmax(self.initial_log_weights, -1).pow(2).sum(-1)

    @property
    def bound(self) -> Tensor:
        """[B] log (1/S) Σ_s w_s of the IWAE sample set: one draw of the IWAE bound."""
        S = self.initial_log_weights.shape[-1]
        return torch.logsumexp(self.initial_log_weights, -1) - math.log(S)

    def _initial_coef(self) -> Tensor:
        """[M] the coefficients of h(X_0) = Σ_s w̄_s f(z_s), IWAE's self-normalised estimate on
        the sample set X_0: w̄ on X_0's particles, 0 on the others. X_0 must be stored first, S
        particles per data point in row order, as ``coupled_estimate`` stores it."""
        B, S = self.initial_log_weights.shape
        coef = self.flat_coef.new_zeros(self.flat_coef.shape)
        coef[: B * S] = torch.softmax(self.initial_log_weights.detach(), -1).reshape(B * S)
        return coef

    def correction(self) -> Estimate:
        """The bias correction alone, C = H − h(X_0): this estimate minus IWAE's estimate
        h(X_0) on its own sample set X_0 (see ``_initial_coef``). Where the thinned correction
        skipped a data point the result is zero (no particle of it needs evaluating)."""
        coef = self.flat_coef - self._initial_coef()
        if self.corrected is not None:  # exactly 0 where Z = 0, not a rounding residual
            coef = torch.where(self.corrected[self.rows], coef, coef.new_zeros(()))
        return replace(self, flat_coef=coef, _padded=None)

    def thinned(self, corrected: Tensor, p: float) -> Estimate:
        """The thinned estimate H^p = h(X_0) + (Z/p)·C of this H = h(X_0) + C.

        ``corrected`` [B] is Z ~ Bernoulli(p), drawn independently of everything else for each
        data point: E[H^p] = E[H] (still unbiased) and Var(H^p) = Var(H) + (1/p − 1)·E[C²].
        Where Z = 0 the estimate is h(X_0) and C need not be computed at all (τ = 0 there).
        """
        initial = self._initial_coef()
        z_over_p = corrected.to(self.flat_coef.dtype) / p
        coef = initial + z_over_p[self.rows] * (self.flat_coef - initial)
        return replace(self, flat_coef=coef, corrected=corrected, correction_prob=p, _padded=None)

    # --- padded view ----------------------------------------------------------------------
    def _pad(self) -> tuple[Tensor, Tensor]:
        if self._padded is None:
            B, M = self.batch_size, self.rows.numel()
            counts = torch.bincount(self.rows, minlength=B)
            order = torch.argsort(self.rows, stable=True)
            rows = self.rows[order]
            start = torch.cumsum(counts, 0) - counts
            pos = torch.arange(M, device=rows.device) - start[rows]
            N = int(counts.max()) if M else 0
            D = self.flat_particles.shape[-1]
            # Pad with a copy of each row's first particle, so f(padding) is finite.
            first = self.flat_particles[order][start.clamp(max=max(M - 1, 0))]
            particles = first[:, None, :].expand(B, N, D).clone()
            coef = self.flat_coef.new_zeros(B, N)
            particles[rows, pos] = self.flat_particles[order]
            coef[rows, pos] = self.flat_coef[order]
            self._padded = (particles, coef)
        return self._padded

    @property
    def particles(self) -> Tensor:
        """[B, N, D] visited particles, padded (with a copy of a real particle) to equal length."""
        return self._pad()[0]

    @property
    def coef(self) -> Tensor:
        """[B, N] signed coefficients; zero on padding."""
        return self._pad()[1]

    # --- estimates ------------------------------------------------------------------------
    def expectation(self, f: Callable[[Tensor], Tensor]) -> Tensor:
        """Σ_n c_n f(z_n) per data point, with f mapping [B, N, D] -> [B, N, ...]."""
        values = f(self.particles)
        coef = self.coef.to(values.dtype)
        coef = coef.reshape(*coef.shape, *([1] * (values.dim() - 2)))
        return (coef * values).sum(1)

    def mean(self) -> Tensor:
        """Estimate of E[z | x_b], [B, D]."""
        return self.expectation(lambda z: z)

    def second_moment(self) -> Tensor:
        """Estimate of E[z zᵀ | x_b], [B, D, D]."""
        return self.expectation(lambda z: z[..., :, None] * z[..., None, :])
