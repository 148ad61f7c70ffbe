"""A small conditional normalising flow: the third encoder family (after diagonal / full Gaussian).

q_φ(z | x) is the law of z = f_K ∘ … ∘ f_1(z_0), z_0 ~ N(μ_φ(x), diag σ_φ(x)²), where each f_i
is a conditional affine coupling layer (RealNVP, Dinh et al. 2017) that keeps the coordinates
in a mask M_i fixed and scales and shifts the others, with functions of (the fixed ones, x):

    f_i(z) = z ⊙ exp(s_i) + t_i,     (s_i, t_i) = NN_i(z ⊙ M_i, c(x)) ⊙ (1 − M_i),
    log |det ∂f_i/∂z| = Σ_d s_{i,d},

with s_i = tanh(·) bounded in (−1, 1) so every layer stays well conditioned. The inverse is
explicit, z = (f_i(z) − t_i) ⊙ exp(−s_i) (s_i and t_i depend only on the unchanged coordinates), so

    log q_φ(z | x) = log N(z_0; μ, diag σ²) − Σ_i Σ_d s_{i,d},    z_0 = f_1⁻¹ ∘ … ∘ f_K⁻¹(z),

costs one pass through the layers: the importance weights, the inclusive-KL encoder gradient
−∇_φ log q_φ(z | x) at chain particles z, and reparameterised sampling all work unchanged.
c(x) is the encoder's last hidden layer. The output layer of every NN_i starts at zero, so an
untrained flow is the identity and q_φ starts as the diagonal Gaussian.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn
from torch.func import functional_call

from ucvae_lite.models.distributions import Gaussian


class AffineCoupling(nn.Module):
    """One conditional affine coupling layer f(z; c) on R^D (see the module docstring)."""

    def __init__(self, dim: int, context_dim: int, hidden: int, mask: Tensor, activation: type):
        super().__init__()
        self.register_buffer("mask", mask.float())
        self.net = nn.Sequential(
            nn.Linear(dim + context_dim, hidden),
            activation(),
            nn.Linear(hidden, hidden),
            activation(),
            nn.Linear(hidden, 2 * dim),
        )
        nn.init.zeros_(self.net[-1].weight)  # identity at initialisation
        nn.init.zeros_(self.net[-1].bias)

    def shift_log_scale(self, z: Tensor, context: Tensor) -> tuple[Tensor, Tensor]:
        """(t, s) for the coordinates outside the mask (zero inside), from z ⊙ M and c."""
        out = self.net(torch.cat([z * self.mask, context], -1))
        shift, raw = out.chunk(2, -1)
        free = 1.0 - self.mask
        return shift * free, torch.tanh(raw) * free

    def forward(self, z: Tensor, context: Tensor) -> tuple[Tensor, Tensor]:
        """f(z) and log |det ∂f/∂z| (summed over the last dimension)."""
        shift, log_scale = self.shift_log_scale(z, context)
        return z * log_scale.exp() + shift, log_scale.sum(-1)

    def inverse(self, y: Tensor, context: Tensor) -> tuple[Tensor, Tensor]:
        """f⁻¹(y) and log |det ∂f/∂z| at z = f⁻¹(y) (the forward log-determinant)."""
        shift, log_scale = self.shift_log_scale(y, context)  # y ⊙ M = z ⊙ M
        return (y - shift) * (-log_scale).exp(), log_scale.sum(-1)


class ConditionalFlow(nn.Module):
    """f_K ∘ … ∘ f_1: ``num_layers`` coupling layers with alternating halves as masks."""

    def __init__(
        self, dim: int, context_dim: int, num_layers: int, hidden: int = 64, activation=nn.Tanh
    ):
        super().__init__()
        if num_layers < 1:
            raise ValueError(f"a flow needs num_layers >= 1, got {num_layers}")
        first_half = torch.arange(dim) < (dim + 1) // 2
        masks = [first_half if i % 2 == 0 else ~first_half for i in range(num_layers)]
        self.layers = nn.ModuleList(
            AffineCoupling(dim, context_dim, hidden, mask, activation) for mask in masks
        )
        self.dim, self.context_dim = dim, context_dim

    def forward(self, z: Tensor, context: Tensor, inverse: bool = False) -> tuple[Tensor, Tensor]:
        """f(z) (or f⁻¹(z) with ``inverse``) and the forward Σ_i log |det ∂f_i|.

        z [..., D], context [..., C]. With ``inverse=True`` the log-determinant is that of f at
        the returned point f⁻¹(z), so log q(z) = log base(f⁻¹(z)) − log_det either way.
        """
        log_det = z.new_zeros(z.shape[:-1])
        layers = reversed(self.layers) if inverse else self.layers
        for layer in layers:
            z, ld = layer.inverse(z, context) if inverse else layer(z, context)
            log_det = log_det + ld
        return z, log_det


class FlowGaussian:
    """q(z | x_b): a diagonal Gaussian base pushed through a conditional flow, per data point.

    Same batched interface as ``distributions.Gaussian`` (``sample``, ``log_prob``, ``select``,
    ``detach``). ``detach()`` cuts the base and the context from autograd and freezes a copy of
    the flow's parameters (like ``Gaussian.detach()``, it then stays the distribution of that
    moment even if the optimiser updates the flow in place).
    """

    def __init__(
        self,
        base: Gaussian,
        flow: ConditionalFlow,
        context: Tensor,
        frozen: dict[str, Tensor] | None = None,
    ):
        if base.full:
            raise ValueError("the flow's base must be a diagonal Gaussian")
        if context.shape[0] != base.batch_size:
            raise ValueError(
                f"context has {context.shape[0]} rows for a batch of {base.batch_size}"
            )
        self.base, self.flow, self.context, self.frozen = base, flow, context, frozen
        self.batch_size, self.dim = base.batch_size, base.dim
        self.dtype, self.device = base.loc.dtype, base.loc.device

    def _run(self, z: Tensor, inverse: bool) -> tuple[Tensor, Tensor]:
        ctx = self.context[:, None, :].expand(*z.shape[:2], self.context.shape[-1])
        if self.frozen is None:
            return self.flow(z, ctx, inverse)
        return functional_call(self.flow, self.frozen, (z, ctx, inverse))

    def sample(self, n: int, generator: torch.Generator | None = None) -> Tensor:
        """z = f(z0), z0 ~ base: reparameterised (differentiable in φ unless detached)."""
        return self._run(self.base.sample(n, generator), inverse=False)[0]

    def log_prob(self, z: Tensor) -> Tensor:
        """log q(z) = log base(f⁻¹(z)) − log |det ∂f| at f⁻¹(z); z [B, n, D] -> [B, n]."""
        z0, log_det = self._run(z, inverse=True)
        return self.base.log_prob(z0) - log_det

    def select(self, index: Tensor) -> FlowGaussian:
        return FlowGaussian(self.base.select(index), self.flow, self.context[index], self.frozen)

    def detach(self) -> FlowGaussian:
        frozen = self.frozen
        if frozen is None:
            frozen = {k: v.detach().clone() for k, v in self.flow.named_parameters()}
            frozen.update(self.flow.named_buffers())
        return FlowGaussian(self.base.detach(), self.flow, self.context.detach(), frozen)
