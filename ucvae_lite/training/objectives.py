"""Training objectives for a VAE: ELBO, IWAE, the unbiased coupled-chain gradient (ucvae) and
its peers, SUMO (unbiased) and Markovian score climbing (biased).

Each step function returns a ``Step``: a scalar ``loss`` to *minimise* (its gradient is the
update), the value of the bound being tracked, what the step cost and typed records of its
own (ucvae's ``ChainDiagnostics``). Per data point, averaged over the batch:

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

Every step reports ``log_weight_evals`` (log-weight evaluations per data point) and
``decoder_evals`` (particles through the decoder per data point: what a step pays for; it
exceeds ``log_weight_evals`` where a particle is decoded twice, or where a pass serves only
the encoder).

``objective(name)`` wraps a step function in an ``Objective``: the trainer's only view of an
objective, which owns the state kept between steps (msc's chains: ``MSCObjective``). The
settings are ``config.ObjectiveConfig`` (defaults: ``DEFAULT_CONFIG``).
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable
from dataclasses import asdict, dataclass

import torch
from torch import Tensor

from ucvae_lite.core.coupled import coupled_estimate
from ucvae_lite.core.estimate import Estimate
from ucvae_lite.core.iwae import effective_sample_size, iwae_bound, normalized_weights
from ucvae_lite.core.kernels import CISState
from ucvae_lite.core.machinery import GraphWhereWorthIt, decoder_work, log_joint_for_theta_and_z
from ucvae_lite.core.rejuvenation import RandomWalkMH
from ucvae_lite.core.surrogate import log_likelihood_surrogate, particle_log_joint
from ucvae_lite.core.targets import ImportanceTarget
from ucvae_lite.models.vae import VAE
from ucvae_lite.peers.msc import MSCMemory, advance, particle_sets
from ucvae_lite.peers.sumo import log_weights_per_row, sumo_from_log_weights
from ucvae_lite.training.config import DEFAULT_CONFIG, OBJECTIVES, ConfigError, ObjectiveConfig

UCVAE_DEFAULTS = DEFAULT_CONFIG  # the same object, by the name notebook 05 and the docs use


class TruncationWarning(RuntimeWarning):
    """Some coupled chains hit ``max_steps`` and were truncated: that step's gradient is
    biased for them (the training loop counts these per epoch instead of printing them)."""


@dataclass
class StepContext:
    """What an objective may need besides the batch: the training examples' indices [B] and
    the objective's persistent state (``msc``'s chains). ``Objective.train_step`` provides it."""

    index: Tensor
    memory: MSCMemory | None = None


@dataclass(frozen=True)
class ChainDiagnostics:
    """What ucvae's coupled chains did in one step, over the batch."""

    tau_mean: float  # mean meeting time of the pairs that ran and met (NaN: none did)
    tau_max: int  # the largest τ (max_steps + 1 where a pair was truncated)
    truncated: int  # pairs stopped unmet at max_steps: the gradient is biased for them
    corrected: float  # fraction of data points whose bias correction ran (correction_prob)
    particles: int  # particles with a nonzero coefficient in H_{k:m}
    evals_vs_iwae: float  # the chains' log-weight evaluations over IWAE-S's


@dataclass(frozen=True)
class SumoDiagnostics:
    """SUMO's roulette in one step: the number of terms K and the estimates' spread."""

    k_mean: float
    k_max: int
    sumo_sd: float  # standard deviation of the batch's SUMO estimates (NaN for B = 1)


@dataclass(frozen=True)
class MSCDiagnostics:
    """MSC's persistent chains in one step."""

    age_mean: float  # mean visits of the batch's chains, this one included


@dataclass
class Step:
    """One objective evaluation, per data point and averaged over the batch: ``loss`` to
    minimise, ``log_p``, the batch's tracked estimate of log p(x) (a float: a lower bound for
    elbo and iwae, the IWAE bound of the step's own draws for ucvae and msc, and for sumo an
    unbiased estimate, not a bound), what it cost (``log_weight_evals``,
    ``decoder_evals``), the mean within-set ESS / S where the objective measures one, and
    records of its own: ``chains`` (ucvae's coupled chains; None for every other objective),
    ``details`` (sumo's, msc's) and ``estimate`` (ucvae's coupled estimate)."""

    loss: Tensor
    log_p: float
    log_weight_evals: float
    decoder_evals: float
    ess: float = math.nan
    chains: ChainDiagnostics | None = None
    details: SumoDiagnostics | MSCDiagnostics | None = None
    estimate: Estimate | None = None  # ucvae: the coupled estimate behind the θ-gradient

    @property
    def diagnostics(self) -> dict[str, float]:
        """Every number of the step by name, for tables and scripts: ``evals`` (the
        log-weight evaluations), ``decoder_evals``, ``ess`` and the fields of ``chains`` and
        ``details``."""
        out = {"evals": self.log_weight_evals, "decoder_evals": self.decoder_evals}
        out["ess"] = self.ess
        for record in (self.chains, self.details):
            if record is not None:
                out |= asdict(record)
        return out


def _log_weights(model: VAE, x: Tensor, q, z: Tensor, detach_decoder: bool = False) -> Tensor:
    return model.log_joint(x, z, detach_decoder) - q.log_prob(z)


def elbo(
    model: VAE, x: Tensor, cfg: ObjectiveConfig = DEFAULT_CONFIG, generator=None, context=None
) -> Step:
    """−(1/S) Σ_s log w(z_s), reparameterised: the S-sample ELBO of a VAE."""
    q = model.proposal(x)
    log_w = _log_weights(model, x, q, q.sample(cfg.num_samples, generator))
    value = log_w.mean(-1).mean()
    return _plain_step(-value, value.item(), log_w)


def iwae(
    model: VAE, x: Tensor, cfg: ObjectiveConfig = DEFAULT_CONFIG, generator=None, context=None
) -> Step:
    """−log (1/S) Σ_s w(z_s), reparameterised: the IWAE bound, for θ and φ together."""
    q = model.proposal(x)
    log_w = _log_weights(model, x, q, q.sample(cfg.num_samples, generator))
    value = iwae_bound(log_w).mean()
    return _plain_step(-value, value.item(), log_w)


def _plain_step(loss: Tensor, bound: float, log_w: Tensor) -> Step:
    """ELBO's and IWAE's step: S log-weight evaluations, S decoder evaluations per data point."""
    S = float(log_w.shape[-1])
    return Step(loss, bound, log_weight_evals=S, decoder_evals=S, ess=_ess(log_w))


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
    return _coupled_step(theta_loss + enc_loss, est, rest)


def _coupled_step(loss: Tensor, est: Estimate, rest: Estimate) -> Step:
    """ucvae's step record: the bound of X_0, the cost (the chains' log-weight evaluations, X_0
    included; decoder passes: X_0's, the chains' new particles' and the surrogate's second look
    at the particles of ``rest`` it has no graph for) and the chains' diagnostics."""
    B, S = est.batch_size, est.num_samples
    met = est.tau[est.corrected & ~est.truncated].double()  # pairs that ran and met
    chain_evals = int(est.num_evals.sum())
    again = (rest.flat_coef != 0) & ~rest.flat_has_graph  # the surrogate evaluates these again
    chains = ChainDiagnostics(
        tau_mean=met.mean().item() if met.numel() else math.nan,
        tau_max=int(est.tau.max()),
        truncated=int(est.truncated.sum()),
        corrected=est.corrected.double().mean().item(),
        particles=int((est.flat_coef != 0).sum()),
        evals_vs_iwae=chain_evals / (B * S),
    )
    return Step(
        loss,
        est.bound.mean().item(),
        log_weight_evals=chain_evals / B,
        decoder_evals=(chain_evals + int(again.sum())) / B,
        ess=(est.initial_ess / S).mean().item(),
        chains=chains,
        estimate=est,
    )


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
    details = SumoDiagnostics(
        k_mean=k.double().mean().item(),
        k_max=int(k.max()),
        sumo_sd=est_theta.detach().std().item() if B > 1 else math.nan,
    )
    bound = est_theta.detach().mean().item()
    return Step(loss, bound, log_weight_evals=evals, decoder_evals=evals, details=details)


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
    return Step(
        theta_loss + enc_loss,
        iwae_bound(log_w.detach()).mean().item(),
        log_weight_evals=float(S),
        decoder_evals=float(decoder_evals),
        ess=_ess(log_w),
        details=MSCDiagnostics(context.memory.visits[context.index].double().mean().item()),
    )


StepFunction = Callable[..., Step]  # (model, x, cfg, generator, context) -> Step


class Objective:
    """A training objective: its step function, and the state it keeps between steps.

    Calling it calls the step function: ``objective("iwae")(model, x, cfg, generator)``. The
    trainer knows an objective only through ``init_state``, ``train_step``, ``state_dict``,
    ``load_state_dict`` and ``coupled_chains`` (whether its steps run coupled chains, whose
    meeting times degenerate importance weights make heavy-tailed). Here they describe an
    objective without state; ``MSCObjective`` keeps one.
    """

    def __init__(self, name: str, fn: StepFunction, coupled_chains: bool = False):
        self.name, self.fn, self.coupled_chains = name, fn, coupled_chains

    def __call__(
        self, model: VAE, x: Tensor, cfg: ObjectiveConfig = DEFAULT_CONFIG, generator=None,
        context: StepContext | None = None,
    ) -> Step:  # fmt: skip
        return self.fn(model, x, cfg, generator, context)

    def init_state(self, model: VAE, num_examples: int, dataset: str) -> None:
        """Before the first step: make the state for ``num_examples`` training examples."""

    def train_step(
        self, model: VAE, x: Tensor, index: Tensor, cfg: ObjectiveConfig, generator
    ) -> Step:
        """The step on the training examples ``index`` [B] (images ``x``)."""
        return self(model, x, cfg, generator, StepContext(index))

    def state_dict(self) -> dict | None:
        """The state to checkpoint (tensors and plain values), or None."""
        return None

    def load_state_dict(self, state: dict | None) -> None:
        """Continue from ``state_dict()``."""


class MSCObjective(Objective):
    """``msc`` with its state: one persistent chain per training example (``msc.MSCMemory``),
    made by ``init_state``, advanced by every step and kept in checkpoints."""

    def __init__(self):
        super().__init__("msc", msc)
        self.memory: MSCMemory | None = None

    def init_state(self, model: VAE, num_examples: int, dataset: str) -> None:
        device = next(model.parameters()).device
        self.memory = MSCMemory.empty(num_examples, model.latent_dim, dataset, device)

    def train_step(
        self, model: VAE, x: Tensor, index: Tensor, cfg: ObjectiveConfig, generator
    ) -> Step:
        return self(model, x, cfg, generator, StepContext(index, self.memory))

    def state_dict(self) -> dict | None:
        return self.memory.state_dict()

    def load_state_dict(self, state: dict | None) -> None:
        """The chains of a checkpoint of the same data (``ConfigError`` otherwise)."""
        if state is None:
            raise ConfigError("cannot resume msc: the checkpoint holds no MSC chains")
        try:
            self.memory.load_state_dict(state)
        except ValueError as e:  # chains of other data: the resume's input is wrong
            raise ConfigError(str(e)) from e


def objective(name: str) -> Objective:
    """A new objective called ``name`` (one of ``OBJECTIVES``), with a state of its own."""
    makers: dict[str, Callable[[], Objective]] = {
        "elbo": lambda: Objective("elbo", elbo),
        "iwae": lambda: Objective("iwae", iwae),
        "ucvae": lambda: Objective("ucvae", ucvae, coupled_chains=True),
        "sumo": lambda: Objective("sumo", sumo),
        "msc": MSCObjective,
    }
    if name not in makers:
        raise ConfigError(f"objective must be one of {OBJECTIVES}, got {name!r}")
    return makers[name]()
