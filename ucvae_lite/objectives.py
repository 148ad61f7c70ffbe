"""Training objectives for a VAE: ELBO, IWAE and the unbiased coupled-chain gradient (ucvae).

Each returns a ``Step``: a scalar ``loss`` to *minimise* (its gradient is the update), the
value of the bound being tracked, and diagnostics. Per data point, averaged over the batch:

* ``elbo``:  −(1/S) Σ_s log w_s,  z_s = μ + σ ε_s   (S-sample VAE, reparameterised)
* ``iwae``:  −log (1/S) Σ_s w_s                        (Burda et al. 2016)
* ``ucvae``: θ (decoder) follows the unbiased estimate of ∇_θ log p_θ(x) of method.md §5:

      ∇_θ log p_θ(x) ≈ Σ_n c_n ∇_θ log p_θ(x, z_n)     (coupled CIS chains, E[·] exact)

  via the surrogate −Σ_n c_n log p_θ(x | z_n) with particles and coefficients detached (the
  prior has no θ). φ (encoder) follows either the IWAE bound (``encoder="iwae"``, θ held fixed
  in it) or the inclusive KL, ∇_φ KL(p‖q_φ) = −E_p[∇_φ log q_φ(z|x)], estimated unbiasedly
  by the same particles and coefficients (``encoder="inclusive"``).

The chains run under ``torch.no_grad()`` and start from the IWAE forward pass's own sample
set (X_0 is a fresh q^S draw either way), so ucvae costs one IWAE step, the chains, and one
batched decoder call on the particles with non-zero coefficients.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field, replace

import torch
from torch import Tensor

from .estimator import coupled_estimate
from .iwae import effective_sample_size, iwae_bound
from .targets import ImportanceTarget
from .vae import VAE

OBJECTIVES = ("elbo", "iwae", "ucvae")
ENCODER_OBJECTIVES = ("iwae", "inclusive")


@dataclass(frozen=True)
class ObjectiveConfig:
    """Settings of the objectives; ``num_samples`` is S for all three (matched comparisons).

    k, m, eps, encoder, max_steps, on_timeout only affect ``ucvae``. ``latent_dim`` is the
    latent size used on the digits data (MNIST keeps the IWAE paper's 50).
    """

    num_samples: int = 10
    k: int = 1
    m: int = 2
    eps: float = 0.0  # defensive weight ε of (1 − ε) q_φ + ε p(z); 0 = plain q_φ
    encoder: str = "iwae"  # "iwae" or "inclusive"
    latent_dim: int = 5
    max_steps: int = 1000  # coupled-chain step cap; unmet chains are truncated AND reported
    on_timeout: str = "truncate"  # "truncate" (flagged, counted) or "raise"

    def __post_init__(self):
        if self.encoder not in ENCODER_OBJECTIVES:
            raise ValueError(f"encoder must be one of {ENCODER_OBJECTIVES}, got {self.encoder!r}")
        if not 0.0 <= self.eps < 1.0:
            raise ValueError(f"eps must be in [0, 1), got {self.eps}")

    def with_(self, **changes) -> ObjectiveConfig:
        """A copy with some fields changed (None values are ignored)."""
        return replace(self, **{k: v for k, v in changes.items() if v is not None})


# The ucvae defaults, in one place: method.md §6, "a good teaching default for digits".
UCVAE_DEFAULTS = ObjectiveConfig(num_samples=10, k=1, m=2, eps=0.0, encoder="iwae", latent_dim=5)


@dataclass
class Step:
    """One objective evaluation: ``loss`` to minimise, the tracked ``bound`` (a float, per
    data point), and ``diagnostics`` (floats)."""

    loss: Tensor
    bound: float
    diagnostics: dict = field(default_factory=dict)


def _log_weights(model: VAE, x: Tensor, q, z: Tensor, detach_decoder: bool = False) -> Tensor:
    return model.log_joint(x, z, detach_decoder) - q.log_prob(z)


def elbo(model: VAE, x: Tensor, cfg: ObjectiveConfig = UCVAE_DEFAULTS, generator=None) -> Step:
    """−(1/S) Σ_s log w(z_s), reparameterised: the S-sample ELBO of a VAE."""
    q = model.proposal(x)
    log_w = _log_weights(model, x, q, q.sample(cfg.num_samples, generator))
    value = log_w.mean(-1).mean()
    return Step(-value, value.item(), {"ess": _ess(log_w)})


def iwae(model: VAE, x: Tensor, cfg: ObjectiveConfig = UCVAE_DEFAULTS, generator=None) -> Step:
    """−log (1/S) Σ_s w(z_s), reparameterised: the IWAE bound, for θ and φ together."""
    q = model.proposal(x)
    log_w = _log_weights(model, x, q, q.sample(cfg.num_samples, generator))
    value = iwae_bound(log_w).mean()
    return Step(-value, value.item(), {"ess": _ess(log_w)})


def _ess(log_w: Tensor) -> float:
    """Mean within-set ESS / S: 1 for equal weights, 1/S when one particle takes all."""
    return (effective_sample_size(log_w.detach()) / log_w.shape[-1]).mean().item()


def ucvae(model: VAE, x: Tensor, cfg: ObjectiveConfig = UCVAE_DEFAULTS, generator=None) -> Step:
    """Unbiased θ-gradient from coupled CIS chains (k, m, S of ``cfg``); φ by ``cfg.encoder``.

    The loss's θ-gradient is −(1/B) Σ_b H_{k:m}[∇_θ log p_θ(x_b, ·)]; its value is not a bound
    (the tracked ``bound`` is the IWAE-S bound of X_0, computed anyway).
    """
    B, S = x.shape[0], cfg.num_samples
    q = model.proposal(x, cfg.eps)
    if cfg.encoder == "iwae":
        z = q.sample(S, generator)
        log_w = _log_weights(model, x, q, z, detach_decoder=True)  # φ-only objective
        enc_loss = -iwae_bound(log_w).mean()
    else:
        with torch.no_grad():
            z = q.sample(S, generator)
            log_w = _log_weights(model, x, q, z)
    with torch.no_grad():
        target = ImportanceTarget(model, x, q.detach())
        est = coupled_estimate(
            target,
            S,
            cfg.k,
            cfg.m,
            max_steps=cfg.max_steps,
            generator=generator,
            on_timeout=cfg.on_timeout,
            initial=(z.detach(), log_w.detach()),
        )
    keep = est.flat_coef != 0
    zf, cf, rf = est.flat_particles[keep], est.flat_coef[keep], est.rows[keep]
    theta_loss = -(cf * model.log_likelihood(x[rf], zf)).sum() / B
    if cfg.encoder == "inclusive":
        log_q = q.select(rf).log_prob(zf[:, None, :])[:, 0]
        enc_loss = -(cf * log_q).sum() / B
    truncated = int(est.truncated.sum())
    if truncated:
        warnings.warn(
            f"{truncated} of {B} coupled chains hit max_steps={cfg.max_steps} and were "
            "truncated: this step's gradient is biased for them",
            RuntimeWarning,
            stacklevel=2,
        )
    met = est.tau[~est.truncated].double()
    diagnostics = {
        "tau_mean": met.mean().item() if met.numel() else float("nan"),
        "tau_max": est.tau.max().item(),
        "evals": est.num_evals.double().mean().item(),
        "evals_vs_iwae": est.num_evals.double().mean().item() / S,
        "ess": (est.info["initial_ess"] / S).mean().item(),
        "particles": int(keep.sum()),
        "truncated": truncated,
    }
    return Step(theta_loss + enc_loss, iwae_bound(log_w.detach()).mean().item(), diagnostics)


def objective(name: str):
    """The objective function called ``name`` (one of OBJECTIVES)."""
    fns = {"elbo": elbo, "iwae": iwae, "ucvae": ucvae}
    if name not in fns:
        raise ValueError(f"objective must be one of {OBJECTIVES}, got {name!r}")
    return fns[name]


def decoder_gradient(
    model: VAE, x: Tensor, name: str, cfg: ObjectiveConfig = UCVAE_DEFAULTS, generator=None
) -> Tensor:
    """The flattened θ (decoder) gradient of ``name``'s loss on x: one gradient sample.

    Its expectation is −∇_θ (1/B) Σ_b log p_θ(x_b) for ucvae; the bound's gradient otherwise.
    """
    step = objective(name)(model, x, cfg, generator)
    params = list(model.decoder.parameters())
    grads = torch.autograd.grad(step.loss, params)
    return torch.cat([g.reshape(-1) for g in grads])
