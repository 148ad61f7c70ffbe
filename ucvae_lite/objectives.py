"""Training objectives for a VAE: ELBO, IWAE and the unbiased coupled-chain gradient (ucvae).

Each returns a ``Step``: a scalar ``loss`` to *minimise* (its gradient is the update), the
value of the bound being tracked, and diagnostics. Per data point, averaged over the batch:

* ``elbo``:  −(1/S) Σ_s log w_s,  z_s = μ + σ ε_s   (S-sample VAE, reparameterised)
* ``iwae``:  −log (1/S) Σ_s w_s                        (Burda et al. 2016)
* ``ucvae``: θ (decoder) follows the unbiased estimate H_{k:m} of ∇_θ log p_θ(x) from
  coupled CIS chains (``coupled``):

      ∇_θ log p_θ(x) ≈ Σ_n c_n ∇_θ log p_θ(x, z_n)     (E[·] exact)

  via the surrogate −Σ_n c_n log p_θ(x, z_n) with particles and coefficients detached
  (``surrogate``). φ (encoder) follows either the IWAE bound (``encoder="iwae"``, θ held
  fixed in it) or the inclusive KL, ∇_φ KL(p‖q_φ) = −E_p[∇_φ log q_φ(z|x)], estimated
  unbiasedly by the same particles and coefficients (``encoder="inclusive"``).

The chains select indices and meet on *detached* log-weights, and start from the encoder's
own IWAE sample set (X_0 is a fresh q^S draw either way). They do not run under
``torch.no_grad()``: their large evaluations deliberately keep θ's autograd graph, so that the
surrogate reuses them instead of evaluating the decoder again (``machinery``). A ucvae step
costs one IWAE pass, the chains, and one batched decoder call on the few tail particles.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field, replace

import torch
from torch import Tensor

from .coupled import coupled_estimate
from .estimate import Estimate
from .iwae import effective_sample_size, iwae_bound
from .machinery import GraphForLargeBatches
from .surrogate import log_likelihood_surrogate, particle_log_joint
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


# The ucvae defaults, in one place: method.md §6, "a good teaching default for digits", kept
# after the variance study (benchmarks/variance_study.py --quick; README "When is the estimator
# practical?"). On digits d = 5: (k, m) = (1, 2) has 2.1x lower variance x cost than (0, 0)
# and is level with (2, 4) (within the study's noise) and better than (4, 8); S = 50 lowers
# ucvae's variance x cost by ~1.5x but S is shared with the elbo/iwae comparisons; the
# full-covariance and flow encoders, the inclusive-KL encoder objective and the rejuvenation
# move (off by default) did not lower it. No setting reached parity with IWAE per unit of
# compute (1.6-5x), and MNIST d = 10/50 sit in the degenerate regime (~40x / ~350x on the
# median image), which train.py warns about.
UCVAE_DEFAULTS = ObjectiveConfig(num_samples=10, k=1, m=2, eps=0.0, encoder="iwae", latent_dim=5)


@dataclass
class Step:
    """One objective evaluation: ``loss`` to minimise, the tracked ``bound`` (a float, per
    data point), ``diagnostics`` (floats) and, for ucvae, the ``estimate``."""

    loss: Tensor
    bound: float
    diagnostics: dict = field(default_factory=dict)
    estimate: Estimate | None = None  # ucvae: the coupled estimate behind the θ-gradient


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
    (the tracked ``bound`` is the IWAE-S bound of X_0, computed anyway). ``Step.estimate`` is
    the coupled estimate the step used.
    """
    B, S = x.shape[0], cfg.num_samples
    q = model.proposal(x, cfg.eps)
    q_fixed = q.detach()
    z = q.sample(S, generator)  # reparameterised: the encoder's IWAE bound uses it
    z0 = z.detach()
    enc_loss = x.new_zeros(())
    if cfg.encoder == "iwae":  # φ-only objective: the decoder is held fixed in it
        enc_loss = -iwae_bound(_log_weights(model, x, q, z, detach_decoder=True)).mean()
    log_w0 = model.log_joint(x, z0) - q_fixed.log_prob(z0)  # with θ's graph: reused below
    target = GraphForLargeBatches(ImportanceTarget(model, x, q_fixed))
    est = coupled_estimate(
        target,
        S,
        cfg.k,
        cfg.m,
        max_steps=cfg.max_steps,
        generator=generator,
        on_timeout=cfg.on_timeout,
        initial=(z0, log_w0),
        keep_log_weights=True,
    )
    log_joint = particle_log_joint(model, x)
    theta_loss = -log_likelihood_surrogate(est, log_joint, "mean", reuse_log_weights=True)
    if cfg.encoder == "inclusive":  # −(1/B) Σ_b Σ_n c_n log q_φ(z_n | x_b)
        log_q = lambda rows, zs: q.select(rows).log_prob(zs[:, None])[:, 0]  # noqa: E731
        enc_loss = -log_likelihood_surrogate(est, log_q, "mean")
    truncated = int(est.truncated.sum())
    if truncated:
        warnings.warn(
            f"{truncated} of {B} coupled chains hit max_steps={cfg.max_steps} and were "
            "truncated: this step's gradient is biased for them",
            RuntimeWarning,
            stacklevel=2,
        )
    met = est.tau[~est.truncated].double()
    chain_evals = int(est.num_evals.sum())
    live = est.flat_coef != 0
    diagnostics = {
        "tau_mean": met.mean().item() if met.numel() else float("nan"),
        "tau_max": est.tau.max().item(),
        "evals": chain_evals / B,
        "evals_vs_iwae": chain_evals / (B * S),
        "ess": (est.initial_ess / S).mean().item(),
        "particles": int(live.sum()),
        # decoder evaluations in this step: encoder pass + chains + tail re-evaluations
        "decoder_evals": (B * S if cfg.encoder == "iwae" else 0)
        + chain_evals
        + int((live & ~est.flat_has_graph).sum()),
        "truncated": truncated,
    }
    return Step(theta_loss + enc_loss, est.bound.mean().item(), diagnostics, est)


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
