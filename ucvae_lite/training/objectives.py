"""Training objectives for a VAE: ELBO, IWAE, the unbiased coupled-chain gradient (ucvae) and
its peers, SUMO (unbiased) and Markovian score climbing (biased).

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
  ``correction_prob=p`` thins the bias correction (``coupled``): still unbiased, cheaper.
* ``sumo``:  θ climbs SUMO, an unbiased estimate of log p_θ(x) by Russian roulette over IWAE
  bounds (Luo et al. 2020, ``sumo``); φ minimises its second moment.
* ``msc``:   θ follows one CIS step of a persistent chain per training example (Naesseth,
  Lindsten & Blei 2020, ``msc``): biased at any finite time, consistent as the chains age.

Reweighted wake-sleep needs no objective of its own: its θ-gradient is IWAE's and its encoder
step is the inclusive KL (``encoder="inclusive"``).

The ucvae chains select indices and meet on *detached* log-weights, and start from the encoder's
own IWAE sample set (X_0 is a fresh q^S draw either way). They do not run under
``torch.no_grad()``: their large evaluations deliberately keep θ's autograd graph, so that the
surrogate reuses them instead of evaluating the decoder again (``machinery``). A ucvae step
costs one decoder pass over X_0 (shared by θ and φ, see ``ucvae``), one over each of the
chains' new particles, and one batched call on the few tail particles evaluated again.

Every objective reports ``evals`` (log-weight evaluations per data point) and
``decoder_evals`` (particles through the decoder per data point: what a step pays for; it
exceeds ``evals`` where a particle is decoded twice, or where a pass serves only the encoder).
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field, replace

import torch
from torch import Tensor

from ucvae_lite.core.coupled import check_correction_prob, coupled_estimate
from ucvae_lite.core.estimate import Estimate
from ucvae_lite.core.iwae import effective_sample_size, iwae_bound, normalized_weights
from ucvae_lite.core.kernels import CISState
from ucvae_lite.core.machinery import GraphWhereWorthIt, decoder_work, log_joint_for_theta_and_z
from ucvae_lite.core.rejuvenation import RandomWalkMH
from ucvae_lite.core.surrogate import log_likelihood_surrogate, particle_log_joint
from ucvae_lite.core.targets import ImportanceTarget
from ucvae_lite.models.vae import VAE
from ucvae_lite.peers.msc import MSCMemory, advance, particle_sets
from ucvae_lite.peers.sumo import Roulette, log_weights_per_row, sumo_from_log_weights

OBJECTIVES = ("elbo", "iwae", "ucvae", "sumo", "msc")
ENCODER_OBJECTIVES = ("iwae", "inclusive")
ON_TIMEOUT = ("truncate", "raise")  # what ucvae does with chains unmet after max_steps


class TruncationWarning(RuntimeWarning):
    """Some coupled chains hit ``max_steps`` and were truncated: that step's gradient is
    biased for them (the training loop counts these per epoch instead of printing them)."""


@dataclass(frozen=True)
class ObjectiveConfig:
    """Settings of the objectives; ``num_samples`` is S for all three (matched comparisons).

    k, m, eps, max_steps, on_timeout, rejuvenate and correction_prob only affect ``ucvae``,
    ``sumo_*`` only ``sumo``; ``encoder`` is how ucvae and msc train φ. The ucvae estimate
    averages the
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
    rejuvenate: float | None = None  # MH move on the references, scale c × σ_φ(x) (off: None)
    correction_prob: float = 1.0  # ucvae: thinned bias correction, kept with probability p
    sumo_min_terms: int = 1  # sumo: m, the IWAE bound L_m kept whole
    sumo_cutoff: int = 80  # sumo: P(K ≥ j) = 1/j up to this j, then geometric
    sumo_ratio: float = 0.9  # sumo: the geometric tail's ratio

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
        _require(
            self.rejuvenate is None or self.rejuvenate > 0,
            f"rejuvenate must be a scale > 0 (or None for no MH move), got {self.rejuvenate}",
        )
        check_correction_prob(self.correction_prob)
        self.roulette()  # SUMO's settings: a ValueError saying what to change

    def roulette(self) -> Roulette:
        """SUMO's distribution of the number of terms (``sumo.Roulette``)."""
        return Roulette(self.sumo_min_terms, self.sumo_cutoff, self.sumo_ratio)

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
class StepContext:
    """What an objective may need besides the batch: the training examples' indices [B] and
    the objective's persistent state (``msc``'s chains). The training loop provides it."""

    index: Tensor
    memory: MSCMemory | None = None


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


def elbo(
    model: VAE, x: Tensor, cfg: ObjectiveConfig = DEFAULT_CONFIG, generator=None, context=None
) -> Step:
    """−(1/S) Σ_s log w(z_s), reparameterised: the S-sample ELBO of a VAE."""
    q = model.proposal(x)
    log_w = _log_weights(model, x, q, q.sample(cfg.num_samples, generator))
    value = log_w.mean(-1).mean()
    return Step(-value, value.item(), _plain_diagnostics(log_w))


def iwae(
    model: VAE, x: Tensor, cfg: ObjectiveConfig = DEFAULT_CONFIG, generator=None, context=None
) -> Step:
    """−log (1/S) Σ_s w(z_s), reparameterised: the IWAE bound, for θ and φ together."""
    q = model.proposal(x)
    log_w = _log_weights(model, x, q, q.sample(cfg.num_samples, generator))
    value = iwae_bound(log_w).mean()
    return Step(-value, value.item(), _plain_diagnostics(log_w))


def _plain_diagnostics(log_w: Tensor) -> dict:
    """ELBO's and IWAE's: S log-weight evaluations, S decoder evaluations per data point."""
    S = float(log_w.shape[-1])
    return {"ess": _ess(log_w), "evals": S, "decoder_evals": S}


def _ess(log_w: Tensor) -> float:
    """Mean within-set ESS / S: 1 for equal weights, 1/S when one particle takes all."""
    return (effective_sample_size(log_w.detach()) / log_w.shape[-1]).mean().item()


def ucvae(
    model: VAE, x: Tensor, cfg: ObjectiveConfig = DEFAULT_CONFIG, generator=None, context=None
) -> Step:
    """Unbiased θ-gradient from coupled CIS chains (k, m, S of ``cfg``); φ by ``cfg.encoder``.

    The loss's θ-gradient is −(1/B) Σ_b H_{k:m}[∇_θ log p_θ(x_b, ·)]; its value is not a bound
    (the tracked ``bound`` is the IWAE-S bound of X_0, computed anyway). ``Step.estimate`` is
    the coupled estimate the step used.

    X_0 is the encoder's reparameterised IWAE sample set. With ``encoder="iwae"`` one decoder
    pass over it serves both parameters (performance): φ reads it through the IWAE bound, θ
    through H's coefficients on X_0's particles (``machinery.log_joint_for_theta_and_z``: two
    backward sweeps, one per reader); with k = m = 0, where H = h(X_0) + C, θ reads it through
    the IWAE bound too (one sweep) and the surrogate adds the correction C, decoding again the
    few X_0 particles C involves. Each particle of the step is otherwise decoded once with θ's
    graph, except the chains' small tail evaluations (``machinery.GraphWhereWorthIt``),
    decoded again in one batched call.
    """
    B, S = x.shape[0], cfg.num_samples
    q = model.proposal(x, cfg.eps)
    q_fixed = q.detach()
    z = q.sample(S, generator)  # reparameterised: the encoder's IWAE bound uses it
    z0 = z.detach()
    enc_loss = x.new_zeros(())
    # With k = m = 0, H = h(X_0) + C: −IWAE on X_0 gives θ exactly h(X_0)'s gradient, so one
    # ordinary backward sweep serves θ and φ and the surrogate adds only the correction C
    # (``Estimate.correction``: zero on X_0 but for the references the chains took from it)
    fused = cfg.encoder == "iwae" and cfg.k == cfg.m == 0
    if fused:
        log_w0 = _log_weights(model, x, q, z)
        enc_loss = -iwae_bound(log_w0).mean()
        log_w0 = log_w0.detach()
    elif cfg.encoder == "iwae":  # one pass: θ's view for H, z's view for −IWAE (φ)
        for_theta, for_z = log_joint_for_theta_and_z(model, x, z)
        enc_loss = -iwae_bound(for_z - q.log_prob(z)).mean()
        log_w0 = for_theta - q_fixed.log_prob(z0)
    else:  # θ's graph only: the surrogate reuses it
        log_w0 = model.log_joint(x, z0) - q_fixed.log_prob(z0)
    target = GraphWhereWorthIt(ImportanceTarget(model, x, q_fixed), decoder_work(model))
    move = None
    if cfg.rejuvenate is not None:  # the optional MH move, scale c × σ_φ(x)
        with torch.no_grad():
            move = RandomWalkMH(cfg.rejuvenate * model.encoder_scale(x))
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
        move=move,
        correction_prob=cfg.correction_prob,
    )
    log_joint = particle_log_joint(model, x)
    rest = est.correction() if fused else est  # what the surrogate still has to supply
    theta_loss = -log_likelihood_surrogate(rest, log_joint, "mean", reuse_log_weights=True)
    if cfg.encoder == "inclusive":  # −(1/B) Σ_b Σ_n c_n log q_φ(z_n | x_b)
        log_q = lambda rows, zs: q.select(rows).log_prob(zs[:, None])[:, 0]  # noqa: E731
        enc_loss = -log_likelihood_surrogate(est, log_q, "mean")
    truncated = int(est.truncated.sum())
    if truncated:
        warnings.warn(
            f"{truncated} of {B} coupled chains hit max_steps={cfg.max_steps} and were "
            "truncated: this step's gradient is biased for them",
            TruncationWarning,
            stacklevel=2,
        )
    met = est.tau[est.corrected & ~est.truncated].double()  # pairs that ran and met
    chain_evals = int(est.num_evals.sum())  # X_0 included
    again = (rest.flat_coef != 0) & ~rest.flat_has_graph  # the surrogate evaluates these again
    diagnostics = {
        "tau_mean": met.mean().item() if met.numel() else float("nan"),
        "tau_max": est.tau.max().item(),
        "evals": chain_evals / B,
        "evals_vs_iwae": chain_evals / (B * S),
        "ess": (est.initial_ess / S).mean().item(),
        "particles": int((est.flat_coef != 0).sum()),
        # decoder evaluations per data point: X_0's pass, the chains' new particles, and the
        # surrogate's second look at the particles it has no graph for
        "decoder_evals": (chain_evals + int(again.sum())) / B,
        "truncated": truncated,
        "corrected": est.corrected.double().mean().item(),
    }
    return Step(theta_loss + enc_loss, est.bound.mean().item(), diagnostics, est)


def sumo(
    model: VAE, x: Tensor, cfg: ObjectiveConfig = DEFAULT_CONFIG, generator=None, context=None
) -> Step:
    """SUMO (``sumo``): θ climbs an unbiased estimate of log p_θ(x); φ minimises its second
    moment E[SUMO²] (the estimator's variance), by reparameterisation.

    The same draws give both, from one decoder pass (``machinery.log_joint_for_theta_and_z``):
    log-weights with θ's graph (z and q held fixed) for −(1/B) Σ_b SUMO_b, and with φ's graph
    (θ held fixed) for (1/B) Σ_b SUMO_b². K is drawn first and each data point gets exactly
    m + K_b draws (``sumo.log_weights_per_row``); the tracked ``bound`` is the mean SUMO
    estimate (an unbiased estimate of log p(x), not a bound).
    """
    roulette = cfg.roulette()
    q = model.proposal(x, cfg.eps)
    q_fixed = q.detach()

    def weigh(rows: Tensor | None, n: int) -> tuple[Tensor, Tensor]:
        """θ's and φ's views of the log-weights of n draws of each data point ``rows``."""
        qr, qr_fixed, xr = (q, q_fixed, x) if rows is None else (
            q.select(rows), q_fixed.select(rows), x[rows]
        )  # fmt: skip
        z = qr.sample(n, generator)  # reparameterised
        for_theta, for_z = log_joint_for_theta_and_z(model, xr, z)
        return for_theta - qr_fixed.log_prob(z.detach()), for_z - qr.log_prob(z)

    B = x.shape[0]
    first = weigh(None, roulette.min_terms + 1)  # every row needs m + K ≥ m + 1 draws
    k = roulette.sample(B, generator, x.device)
    flat = lambda rows: tuple(v[:, 0] for v in weigh(rows, 1))  # noqa: E731
    lw_theta, lw_phi = log_weights_per_row(first, k - 1, flat)
    est_theta = sumo_from_log_weights(lw_theta, k, roulette)
    est_phi = sumo_from_log_weights(lw_phi, k, roulette)
    loss = -est_theta.mean() + est_phi.pow(2).mean()
    evals = (roulette.min_terms + k).double().mean().item()
    diagnostics = {
        "evals": evals,
        "decoder_evals": evals,  # one pass serves θ and φ
        "k_mean": k.double().mean().item(),
        "k_max": int(k.max()),
        "sumo_sd": est_theta.detach().std().item() if B > 1 else float("nan"),
    }
    return Step(loss, est_theta.detach().mean().item(), diagnostics)


def msc(
    model: VAE, x: Tensor, cfg: ObjectiveConfig = DEFAULT_CONFIG, generator=None, context=None
) -> Step:
    """Markovian score climbing (``msc``): one CIS step of each example's persistent chain;
    θ follows h(X) = Σ_j w̄_j ∇_θ log p_θ(x, z_j), which is BIASED (consistent only as the
    chains age); φ by ``cfg.encoder`` (the IWAE bound on the step's S fresh draws, θ held
    fixed, or the inclusive KL −Σ_j w̄_j log q_φ(z_j | x)). Needs ``context`` with the examples'
    indices and an ``msc.MSCMemory`` (``train`` provides both).

    X = (reference, fresh_2..S) and the encoder's IWAE set fresh_1..S share S − 1 draws: one
    decoder pass over the S + 1 distinct particles serves both (``machinery
    .log_joint_for_theta_and_z``), S + 1 decoder evaluations per data point; with the
    inclusive encoder, S, as IWAE.
    """
    if context is None or context.memory is None:
        raise ValueError(
            "msc keeps one chain per training example: it needs context=StepContext(index, "
            "memory) with the batch's example indices and an msc.MSCMemory (train() provides "
            "them)"
        )
    S = cfg.num_samples
    q = model.proposal(x, cfg.eps)
    q_fixed = q.detach()
    fresh = q.sample(S, generator)  # reparameterised: the encoder's IWAE bound uses it
    z = particle_sets(context.memory, context.index, fresh)  # (r, fresh_2..S), detached
    enc_loss = x.new_zeros(())
    if cfg.encoder == "iwae":  # one pass over (r, fresh_1..S): θ reads X, φ reads fresh_1..S
        both = torch.cat([z[:, :1], fresh], 1)
        for_theta, for_z = log_joint_for_theta_and_z(model, x, both)
        enc_loss = -iwae_bound(for_z[:, 1:] - q.log_prob(fresh)).mean()
        log_p = torch.cat([for_theta[:, :1], for_theta[:, 2:]], 1)
        decoder_evals = S + 1
    else:
        log_p = model.log_joint(x, z)
        decoder_evals = S
    log_w = log_p - q_fixed.log_prob(z)  # θ's graph; the reference re-weighted
    w = normalized_weights(log_w.detach())
    theta_loss = -(w * log_w).sum(-1).mean()  # θ-gradient: −(1/B) Σ_b Σ_j w̄_j ∇_θ log p
    if cfg.encoder == "inclusive":
        enc_loss = -(w * q.log_prob(z)).sum(-1).mean()
    advance(context.memory, context.index, CISState(z, log_w.detach()), generator)
    diagnostics = {
        "ess": _ess(log_w),
        "evals": float(S),
        "decoder_evals": float(decoder_evals),
        "age_mean": context.memory.visits[context.index].double().mean().item(),
    }
    return Step(theta_loss + enc_loss, iwae_bound(log_w.detach()).mean().item(), diagnostics)


def objective(name: str):
    """The objective function called ``name`` (one of OBJECTIVES)."""
    fns = {"elbo": elbo, "iwae": iwae, "ucvae": ucvae, "sumo": sumo, "msc": msc}
    if name not in fns:
        raise ValueError(f"objective must be one of {OBJECTIVES}, got {name!r}")
    return fns[name]


def decoder_gradient(
    model: VAE,
    x: Tensor,
    name: str,
    cfg: ObjectiveConfig = DEFAULT_CONFIG,
    generator=None,
    context: StepContext | None = None,
) -> Tensor:
    """The flattened θ (decoder) gradient of ``name``'s loss on x: one gradient sample.

    Its expectation is −∇_θ (1/B) Σ_b log p_θ(x_b) for ucvae and sumo; the bound's gradient
    for elbo and iwae; for msc, a biased estimate of it (the bias shrinks as the chains age).
    """
    step = objective(name)(model, x, cfg, generator, context)
    params = list(model.decoder.parameters())
    grads = torch.autograd.grad(step.loss, params)
    return torch.cat([g.reshape(-1) for g in grads])
