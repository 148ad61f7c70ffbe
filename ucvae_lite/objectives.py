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
ON_TIMEOUT = ("truncate", "raise")  # what ucvae does with chains unmet after max_steps


@dataclass(frozen=True)
class ObjectiveConfig:
    """Settings of the objectives; ``num_samples`` is S for all three (matched comparisons).

    k, m, eps, encoder, max_steps, on_timeout only affect ``ucvae``: the estimate averages the
    coupled chains' steps k..m (H_{k:m}), so 0 ≤ k ≤ m, and a chain pair still unmet after
    ``max_steps`` ≥ m steps is truncated (``on_timeout="truncate"``, counted in the step's
    diagnostics) or raises (``"raise"``). The field defaults are the studied ucvae defaults
    (``UCVAE_DEFAULTS`` below). The latent size is a model setting (``vae.DEFAULT_ARCH``).
    """

    num_samples: int = 10
    k: int = 1
    m: int = 2
    eps: float = 0.0  # defensive weight ε of (1 − ε) q_φ + ε p(z); 0 = plain q_φ
    encoder: str = "iwae"  # "iwae" or "inclusive"
    max_steps: int = 1000  # coupled-chain step cap; unmet chains are truncated AND reported
    on_timeout: str = "truncate"  # "truncate" (flagged, counted) or "raise"

    def __post_init__(self):
        _require(
            _is_int(self.num_samples) and self.num_samples >= 2,
            f"num_samples (S) must be an integer >= 2, got {self.num_samples!r}",
        )
        _require(_is_int(self.k) and self.k >= 0, f"k must be an integer >= 0, got {self.k!r}")
        _require(
            _is_int(self.m) and self.m >= self.k,
            f"m must be an integer >= k = {self.k} (H_k:m averages steps k..m), got {self.m!r}",
        )
        _require(
            _is_int(self.max_steps) and self.max_steps >= max(1, self.m),
            f"max_steps must be an integer >= max(1, m) = {max(1, self.m)}, got {self.max_steps!r}",
        )
        _require(
            self.on_timeout in ON_TIMEOUT,
            f"on_timeout must be one of {ON_TIMEOUT}, got {self.on_timeout!r}",
        )
        _require(
            self.encoder in ENCODER_OBJECTIVES,
            f"encoder must be one of {ENCODER_OBJECTIVES}, got {self.encoder!r}",
        )
        _require(0.0 <= self.eps < 1.0, f"eps must be in [0, 1), got {self.eps}")

    def with_(self, **changes) -> ObjectiveConfig:
        """A copy with some fields changed (None values are ignored)."""
        return replace(self, **{k: v for k, v in changes.items() if v is not None})


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _require(ok: bool, message: str) -> None:
    """Raise ``ValueError(message)`` unless ``ok``."""
    if not ok:
        raise ValueError(message)


# The objectives' default settings: S = 10 is shared by elbo, iwae and ucvae.
DEFAULT_CONFIG = ObjectiveConfig()

# The ucvae defaults (the field defaults of ObjectiveConfig), kept after the variance study
# (benchmarks/variance_study.py; README "When is the estimator practical?"). On digits,
# d = 5: (k, m) = (1, 2) has about 2x lower variance x cost than (0, 0), is level with (2, 4)
# (within the study's noise) and better than (4, 8); S = 50 lowers ucvae's variance x cost
# relative to IWAE (5x at S = 5, 2.4x at S = 10, 1.6x at S = 50 in quick mode) but S is
# shared with the elbo/iwae comparisons; the full-covariance and flow encoders, the
# inclusive-KL encoder objective and the rejuvenation move (off by default) did not lower it.
# No setting reached parity with IWAE per unit of compute (1.6-5x in quick mode, 5-11x at
# S = 10 for longer-trained models), and MNIST d = 10/50 sit in the degenerate regime (~40x /
# ~350x on the median image), which train.py warns about.
UCVAE_DEFAULTS = ObjectiveConfig()


@dataclass
class Step:
    """One objective evaluation: ``loss`` to minimise, the tracked ``bound`` (a float, per
    data point), and ``diagnostics`` (floats)."""

    loss: Tensor
    bound: float
    diagnostics: dict = field(default_factory=dict)


def _log_weights(model: VAE, x: Tensor, q, z: Tensor, detach_decoder: bool = False) -> Tensor:
    return model.log_joint(x, z, detach_decoder) - q.log_prob(z)


def elbo(model: VAE, x: Tensor, cfg: ObjectiveConfig = DEFAULT_CONFIG, generator=None) -> Step:
    """−(1/S) Σ_s log w(z_s), reparameterised: the S-sample ELBO of a VAE."""
    q = model.proposal(x)
    log_w = _log_weights(model, x, q, q.sample(cfg.num_samples, generator))
    value = log_w.mean(-1).mean()
    return Step(-value, value.item(), {"ess": _ess(log_w)})


def iwae(model: VAE, x: Tensor, cfg: ObjectiveConfig = DEFAULT_CONFIG, generator=None) -> Step:
    """−log (1/S) Σ_s w(z_s), reparameterised: the IWAE bound, for θ and φ together."""
    q = model.proposal(x)
    log_w = _log_weights(model, x, q, q.sample(cfg.num_samples, generator))
    value = iwae_bound(log_w).mean()
    return Step(-value, value.item(), {"ess": _ess(log_w)})


def _ess(log_w: Tensor) -> float:
    """Mean within-set ESS / S: 1 for equal weights, 1/S when one particle takes all."""
    return (effective_sample_size(log_w.detach()) / log_w.shape[-1]).mean().item()


# Chain evaluations of at least this many particles keep θ's autograd graph, so the surrogate
# reuses them; smaller ones (the chains' tail) run without autograd and are re-evaluated in one
# batched call. Measured in benchmarks/step_cost.py: keeping every graph makes the backward
# pass a long series of tiny calls; keeping none costs a second forward pass over everything.
GRAPH_MIN_PARTICLES = 1000


class _GraphForLargeBatches:
    """A target whose log-weights carry autograd graphs only for large evaluations."""

    def __init__(self, target: ImportanceTarget, min_particles: int):
        self.target, self.min_particles = target, min_particles

    def sample(self, n: int, generator=None) -> Tensor:
        return self.target.sample(n, generator)

    def log_weight(self, z: Tensor) -> Tensor:
        if z.shape[0] * z.shape[1] >= self.min_particles:
            return self.target.log_weight(z)
        with torch.no_grad():
            return self.target.log_weight(z)

    def log_proposal(self, z: Tensor) -> Tensor:
        return self.target.log_proposal(z)

    def select(self, index: Tensor) -> _GraphForLargeBatches:
        return _GraphForLargeBatches(self.target.select(index), self.min_particles)


def ucvae(model: VAE, x: Tensor, cfg: ObjectiveConfig = DEFAULT_CONFIG, generator=None) -> Step:
    """Unbiased θ-gradient from coupled CIS chains (k, m, S of ``cfg``); φ by ``cfg.encoder``.

    The loss's θ-gradient is −(1/B) Σ_b H_{k:m}[∇_θ log p_θ(x_b, ·)]; its value is not a bound
    (the tracked ``bound`` is the IWAE-S bound of X_0, computed anyway).

    Cost: X_0 is one q^S draw shared by the encoder's IWAE pass (θ held fixed) and the chains.
    The chains select and meet on detached weights; the log-weights of their large
    evaluations keep θ's graph, so Σ_n c_n log w(z_n) back-propagates through them without a
    second forward pass; the few particles of small (tail) evaluations with c_n ≠ 0 are
    re-evaluated in one batched decoder call.
    """
    B, S = x.shape[0], cfg.num_samples
    q = model.proposal(x, cfg.eps)
    q_fixed = q.detach()
    z = q.sample(S, generator)
    z0 = z.detach()
    enc_loss = x.new_zeros(())
    if cfg.encoder == "iwae":  # φ-only objective: the decoder is held fixed in it
        enc_loss = -iwae_bound(_log_weights(model, x, q, z, detach_decoder=True)).mean()
    log_w0 = model.log_joint(x, z0) - q_fixed.log_prob(z0)  # θ-graph, X_0's surrogate terms
    target = _GraphForLargeBatches(ImportanceTarget(model, x, q_fixed), GRAPH_MIN_PARTICLES)
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
    coef, log_w = est.flat_coef, est.info["flat_log_weights"]
    graph = est.info["flat_has_graph"]
    redo = ~graph & (coef != 0)
    zr, cr, rr = est.flat_particles[redo], coef[redo], est.rows[redo]
    theta_loss = -(
        (coef[graph] * log_w[graph]).sum() + (cr * model.log_likelihood(x[rr], zr)).sum()
    )
    theta_loss = theta_loss / B
    if cfg.encoder == "inclusive":
        nz = coef != 0
        log_q = q.select(est.rows[nz]).log_prob(est.flat_particles[nz][:, None, :])[:, 0]
        enc_loss = -(coef[nz] * log_q).sum() / B
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
    diagnostics = {
        "tau_mean": met.mean().item() if met.numel() else float("nan"),
        "tau_max": est.tau.max().item(),
        "evals": chain_evals / B,
        "evals_vs_iwae": chain_evals / (B * S),
        "ess": (est.info["initial_ess"] / S).mean().item(),
        "particles": int((coef != 0).sum()),
        # decoder evaluations in this step: encoder pass + chains + tail re-evaluations
        "decoder_evals": (B * S if cfg.encoder == "iwae" else 0) + chain_evals + int(redo.sum()),
        "truncated": truncated,
    }
    return Step(theta_loss + enc_loss, iwae_bound(log_w0.detach()).mean().item(), diagnostics)


def objective(name: str):
    """The objective function called ``name`` (one of OBJECTIVES)."""
    fns = {"elbo": elbo, "iwae": iwae, "ucvae": ucvae}
    if name not in fns:
        raise ValueError(f"objective must be one of {OBJECTIVES}, got {name!r}")
    return fns[name]


def decoder_gradient(
    model: VAE, x: Tensor, name: str, cfg: ObjectiveConfig = DEFAULT_CONFIG, generator=None
) -> Tensor:
    """The flattened θ (decoder) gradient of ``name``'s loss on x: one gradient sample.

    Its expectation is −∇_θ (1/B) Σ_b log p_θ(x_b) for ucvae; the bound's gradient otherwise.
    """
    step = objective(name)(model, x, cfg, generator)
    params = list(model.decoder.parameters())
    grads = torch.autograd.grad(step.loss, params)
    return torch.cat([g.reshape(-1) for g in grads])
