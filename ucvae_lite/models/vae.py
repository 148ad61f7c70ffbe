"""The MLP VAE of the IWAE paper: Gaussian encoder, Bernoulli decoder, N(0, I) prior.

    p(z) = N(0, I_d)
    p_θ(x | z) = Π_p Bernoulli(x_p; σ(f_θ(z)_p))          f_θ: MLP decoder, logits
    q_φ(z | x) = N(μ_φ(x), diag σ_φ(x)²)                   g_φ: MLP encoder -> (μ, log σ)
    (``covariance="full"``: q_φ(z | x) = N(μ_φ(x), L_φ(x) L_φ(x)ᵀ), L lower-triangular with
    diagonal σ_φ(x) and d(d−1)/2 free entries below it: same cost per sample, O(d²) outputs)
    (``flow_layers=K > 0``: the diagonal Gaussian pushed through K conditional affine coupling
    layers conditioned on the encoder's last hidden layer, ``flows.FlowGaussian``)

    log p_θ(x, z) = log p(z) + Σ_p [ x_p ℓ_p − softplus(ℓ_p) ],  ℓ = f_θ(z).

``target(x, eps)`` gives the importance-sampling target of ``targets.py`` (optionally with the
defensive proposal (1 − ε) q_φ + ε p(z), whose weights are bounded by 1/ε because a Bernoulli
likelihood is at most 1), so the coupled estimator runs on a real VAE unchanged.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch
from torch import Tensor, nn
from torch.func import functional_call

from ucvae_lite.core.targets import ImportanceTarget
from ucvae_lite.models.distributions import LOG_2PI, DefensiveMixture, Gaussian
from ucvae_lite.models.flows import ConditionalFlow, FlowGaussian

ACTIVATIONS = {"tanh": nn.Tanh, "relu": nn.ReLU, "softplus": nn.Softplus}
COVARIANCES = ("diag", "full")  # encoder families: diagonal or full-covariance Gaussian

# Default architectures (data dim -> hidden sizes, latent dim).
DEFAULT_ARCH = {
    "digits": {"hidden": (64, 64), "latent_dim": 5},  # 64-64-64-5
    "mnist": {"hidden": (200, 200), "latent_dim": 50},  # 784-200-200-50 (IWAE paper)
    "fashion-mnist": {"hidden": (200, 200), "latent_dim": 50},
}


def mlp(sizes: list[int], activation: str) -> nn.Sequential:
    """Linear layers between consecutive ``sizes``, ``activation`` between them (not last)."""
    layers: list[nn.Module] = []
    for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:], strict=True)):
        layers.append(nn.Linear(a, b))
        if i < len(sizes) - 2:
            layers.append(ACTIVATIONS[activation]())
    return nn.Sequential(*layers)


class VAE(nn.Module):
    """Encoder P-h_1-..-h_L-2d and mirror decoder d-h_L-..-h_1-P.

    Parameters θ are ``decoder.parameters()``; φ are ``encoder.parameters()`` plus, for a flow
    encoder, ``flow.parameters()``.
    """

    def __init__(
        self,
        data_dim: int,
        hidden: tuple[int, ...] = (200, 200),
        latent_dim: int = 50,
        activation: str = "tanh",
        covariance: str = "diag",
        flow_layers: int = 0,
    ):
        super().__init__()
        if activation not in ACTIVATIONS:
            raise ValueError(f"activation must be one of {sorted(ACTIVATIONS)}, got {activation!r}")
        if covariance not in COVARIANCES:
            raise ValueError(f"covariance must be one of {COVARIANCES}, got {covariance!r}")
        if not isinstance(flow_layers, int) or flow_layers < 0:
            raise ValueError(f"flow_layers must be an integer >= 0, got {flow_layers!r}")
        if flow_layers and not hidden:
            raise ValueError("a flow encoder needs at least one hidden layer (its context)")
        if flow_layers and covariance != "diag":
            raise ValueError("a flow encoder (flow_layers > 0) needs covariance='diag' as its base")
        self.data_dim, self.latent_dim = data_dim, latent_dim
        self.hidden, self.activation, self.covariance = tuple(hidden), activation, covariance
        n_off = latent_dim * (latent_dim - 1) // 2 if covariance == "full" else 0
        self.encoder = mlp([data_dim, *hidden, 2 * latent_dim + n_off], activation)
        self.decoder = mlp([latent_dim, *reversed(hidden), data_dim], activation)
        self.flow_layers = flow_layers
        self.flow = (
            ConditionalFlow(
                latent_dim, hidden[-1], flow_layers, hidden[-1], ACTIVATIONS[activation]
            )
            if flow_layers
            else None
        )

    def config(self) -> dict:
        """Plain-Python constructor arguments (saved in checkpoints)."""
        return {
            "data_dim": self.data_dim,
            "hidden": list(self.hidden),
            "latent_dim": self.latent_dim,
            "activation": self.activation,
            "covariance": self.covariance,
            "flow_layers": self.flow_layers,
        }

    # --- encoder ---------------------------------------------------------------------------
    def encode(self, x: Tensor) -> Gaussian | FlowGaussian:
        """q_φ(z | x) = N(μ, diag σ²) (or N(μ, L Lᵀ), or a flow of N(μ, diag σ²)) for x [B, P].

        log σ is clamped to [-8, 4].
        """
        d = self.latent_dim
        features = self.encoder[:-1](x)  # the last hidden layer: the flow's context
        out = self.encoder[-1](features)
        loc, log_scale = out[:, :d], out[:, d : 2 * d]
        scale = log_scale.clamp(-8.0, 4.0).exp()
        if self.flow is not None:
            return FlowGaussian(Gaussian(loc, scale), self.flow, features)
        if self.covariance == "diag":
            return Gaussian(loc, scale)
        rows, cols = torch.tril_indices(d, d, -1, device=x.device)
        lower = out.new_zeros(out.shape[0], d, d)
        lower[:, rows, cols] = out[:, 2 * d :]
        return Gaussian(loc, lower + torch.diag_embed(scale))

    def encoder_scale(self, x: Tensor) -> Tensor:
        """σ_φ(x) [B, D]: the encoder's standard deviations (of the flow's base Gaussian; the
        Cholesky diagonal for a full covariance). A natural scale for moves in latent space."""
        q = self.encode(x)
        scale = getattr(q, "base", q).scale
        return torch.diagonal(scale, dim1=-2, dim2=-1) if scale.dim() == 3 else scale

    def proposal(self, x: Tensor, eps: float = 0.0, detach: bool = False):
        """q_φ(z | x), or the defensive (1 − ε) q_φ + ε N(0, I) when ``eps > 0``."""
        q = self.encode(x)
        if detach:
            q = q.detach()
        return DefensiveMixture(q, eps) if eps > 0 else q

    # --- decoder ---------------------------------------------------------------------------
    def log_likelihood(self, x: Tensor, z: Tensor, detach_decoder: bool = False) -> Tensor:
        """log p_θ(x | z) = Σ_p x_p ℓ_p − softplus(ℓ_p); x [..., P], z [..., D] -> [...].

        ``detach_decoder=True`` evaluates it with θ held fixed (gradients still flow to z):
        what an encoder-only objective needs.
        """
        if detach_decoder:
            params = {k: v.detach() for k, v in self.decoder.named_parameters()}
            logits = functional_call(self.decoder, params, (z,))
        else:
            logits = self.decoder(z)
        return (x * logits - nn.functional.softplus(logits)).sum(-1)

    def forward(self, x: Tensor, z: Tensor) -> Tensor:
        """log p_θ(x_b, z) (``log_joint``): what ``torch.func.functional_call`` differentiates."""
        return self.log_joint(x, z)

    def log_joint(self, x: Tensor, z: Tensor, detach_decoder: bool = False) -> Tensor:
        """log p_θ(x_b, z) = log N(z; 0, I) + log p_θ(x_b | z), x [B, P], z [B, n, D] -> [B, n]."""
        log_prior = -0.5 * (self.latent_dim * LOG_2PI + z.pow(2).sum(-1))
        return log_prior + self.log_likelihood(x[:, None, :], z, detach_decoder)

    def target(self, x: Tensor, eps: float = 0.0, detach: bool = True) -> ImportanceTarget:
        """The importance-sampling target for x [B, P] (detached by default: for the chains)."""
        return ImportanceTarget(self, x, self.proposal(x, eps, detach=detach))


def build_vae(dataset: str, data_dim: int, **overrides) -> VAE:
    """The default VAE for ``dataset`` (``DEFAULT_ARCH``), with keyword overrides."""
    arch = dict(DEFAULT_ARCH.get(dataset, DEFAULT_ARCH["mnist"]))
    arch.update({k: v for k, v in overrides.items() if v is not None})
    return VAE(data_dim, **arch)


# --- a 2-D latent on a grid: the exact posterior, up to the grid -------------------------------
class LatentGrid(NamedTuple):
    """log p_θ(x_b, z_g) on the points z_g of a rectangular grid in a 2-D latent space.

    ``axes`` (the z₁ values [n₁], the z₂ values [n₂]), ``points`` [n₁ n₂, 2] (row-major: z₁
    varies slowest), ``log_joint`` [B, n₁ n₂], ``cell`` the area Δ₁Δ₂ of one cell. Then

        log p_θ(x) ≈ log Σ_g p_θ(x, z_g) Δ₁Δ₂          (``log_marginal``; rectangle rule)
        p_θ(z_g | x) Δ₁Δ₂ ≈ p_θ(x, z_g) Δ₁Δ₂ / p_θ(x)   (``posterior_weights``; they sum to 1)

    exact up to the grid: the discretisation error and the posterior mass outside the box.
    Everything stays differentiable in θ, so ``torch.autograd.grad(log_marginal, θ)`` is the
    exact gradient ∇_θ log p_θ(x), up to the grid.
    """

    axes: tuple[Tensor, Tensor]
    points: Tensor
    log_joint: Tensor
    cell: float

    @property
    def log_marginal(self) -> Tensor:
        """[B] log p_θ(x_b) by the rectangle rule on the grid."""
        return torch.logsumexp(self.log_joint, -1) + math.log(self.cell)

    @property
    def posterior_weights(self) -> Tensor:
        """[B, n₁ n₂] p_θ(z_g | x_b) Δ₁Δ₂: the posterior's mass in each cell (rows sum to 1)."""
        return torch.softmax(self.log_joint, -1)

    def expectation(self, f) -> Tensor:
        """E_{p_θ(z|x_b)}[f(z)] by the grid, f mapping [B, n₁ n₂, 2] -> [B, n₁ n₂, ...]."""
        values = f(self.points.expand(self.log_joint.shape[0], -1, -1))
        w = self.posterior_weights.to(values.dtype)
        return (w.reshape(*w.shape, *([1] * (values.dim() - 2))) * values).sum(1)

    def kl(self, log_q: Tensor) -> tuple[Tensor, Tensor]:
        """(KL(q ‖ p), KL(p ‖ q)) [B] between the grid posterior p(z | x_b) and a density q
        given by its log q(z_g) [B, n₁ n₂] at the grid points (both normalised on the grid).

        KL(q ‖ p) = log p(x) − ELBO is what a VAE's encoder minimises (exclusive, mode-seeking);
        KL(p ‖ q), the inclusive one, is large where q misses posterior mass.
        """
        log_p = torch.log_softmax(self.log_joint, -1)  # log of each cell's mass
        log_qc = torch.log_softmax(log_q, -1)
        return (
            (log_qc.exp() * (log_qc - log_p)).sum(-1),
            (log_p.exp() * (log_p - log_qc)).sum(-1),
        )


def posterior_grid(
    model: VAE,
    x: Tensor,
    limit: float = 4.0,
    n: int = 201,
    box: tuple[float, float, float, float] | None = None,
) -> LatentGrid:
    """log p_θ(x_b, z) on an n × n grid for a 2-D latent (x [B, P]): over [−limit, limit]², or
    over ``box`` = (z₁ low, z₁ high, z₂ low, z₂ high) when given (``zoomed_posterior_grid``).

    Under the N(0, I) prior the square [−4, 4]² holds all but 1.3e-4 of the prior's mass; a
    posterior sits inside it unless the data pull it far into the prior's tails.
    """
    if model.latent_dim != 2:
        raise ValueError(f"a grid needs a 2-D latent, got latent_dim={model.latent_dim}")
    lo1, hi1, lo2, hi2 = box if box is not None else (-limit, limit, -limit, limit)
    if n < 2 or not (lo1 < hi1 and lo2 < hi2):
        raise ValueError(f"need n >= 2 grid points and a non-empty box, got n={n}, box={box}")
    a1 = torch.linspace(lo1, hi1, n, dtype=x.dtype, device=x.device)
    a2 = torch.linspace(lo2, hi2, n, dtype=x.dtype, device=x.device)
    points = torch.cartesian_prod(a1, a2)
    log_joint = model.log_joint(x, points.expand(x.shape[0], -1, -1))
    cell = float(a1[1] - a1[0]) * float(a2[1] - a2[0])
    return LatentGrid((a1, a2), points, log_joint, cell)


@torch.no_grad()
def posterior_box(
    model: VAE, x: Tensor, limit: float = 4.0, coarse: int = 101, tail: float = 20.0
) -> tuple[float, float, float, float]:
    """The box around the posterior mass of the rows of x: the cells of a coarse grid over
    [−limit, limit]² whose log p(x, z) is within ``tail`` nats of the largest (e^{−20}: nothing
    outside matters), widened by two coarse cells on each side and clipped to the square."""
    grid = posterior_grid(model, x, limit, coarse)
    keep = (grid.log_joint >= grid.log_joint.max(-1, keepdim=True).values - tail).any(0)
    z = grid.points[keep]
    step = 2 * (2 * limit / (coarse - 1))
    lo, hi = (z.min(0).values - step).clamp(min=-limit), (z.max(0).values + step).clamp(max=limit)
    return (lo[0].item(), hi[0].item(), lo[1].item(), hi[1].item())


def zoomed_posterior_grid(model: VAE, x: Tensor, n: int = 201, limit: float = 4.0) -> LatentGrid:
    """``posterior_grid`` with n × n points on ``posterior_box``: the same cost as a grid over
    the whole square, with its points where the posterior is (fine enough for sharp ones)."""
    return posterior_grid(model, x, n=n, box=posterior_box(model, x, limit))


def widened_target(model: VAE, x: Tensor, factor: float = 1.0) -> ImportanceTarget:
    """The importance target of ``model`` on x with q_φ's standard deviations × ``factor``.

    Same mean as the encoder: ``factor > 1`` proposes too widely (the weights grow degenerate,
    τ's tail heavier), ``factor < 1`` too narrowly. Diagonal Gaussian encoders only.
    """
    if not factor > 0:
        raise ValueError(f"the widening factor must be > 0, got {factor}")
    q = model.proposal(x, detach=True)
    if not isinstance(q, Gaussian) or q.full:
        raise ValueError("widened_target needs a diagonal Gaussian encoder (covariance='diag')")
    return ImportanceTarget(model, x, Gaussian(q.loc, q.scale * factor))
