"""The unbiased estimator H_{k:m} from lag-1 coupled CIS chains.

With X_0, Y_0 ~ q^S, X_1 ~ K(X_0, ·), then (X_{t+1}, Y_t) ~ K̄((X_t, Y_{t−1}), ·) and the
meeting time τ = inf{t ≥ 1 : X_t = Y_{t−1}}, for integers 0 ≤ k ≤ m:

    H_{k:m} = 1/(m−k+1) Σ_{t=k}^{m} h(X_t)
              + Σ_{t=k+1}^{τ−1} min(1, (t−k)/(m−k+1)) · ( h(X_t) − h(Y_{t−1}) ),

    h(ξ) = Σ_j w̄_j(ξ) f(z_j)      (Rao-Blackwellised over the selected index),

and E[H_{k:m}] = E_{p(z|x)}[f(z)] (Jacob, O'Leary & Atchadé 2020; Ruiz et al. 2021), provided
τ is finite with a light enough tail (geometric tails suffice; ``hkm`` says where the weights
come from). With k = m = 0 it reads h(X_0) + Σ_{t=1}^{τ−1} (h(X_t) − h(Y_{t−1})): the IWAE
estimate h(X_0) plus a bias correction.

K is the CIS kernel, K̄ its coupling (``kernels``): maximally coupled index draws and common
fresh draws, so that each chain alone moves by K and the pair meets when both select the same
particle, staying met afterwards. A pair is needed while its terms are: X_t for
t ≤ max(τ − 1, m), Y_{t−1} for t ≤ τ − 1. The meeting is decided by the index selection of
the step that makes X_τ, so when τ > m that step stops there, before its fresh draws.

Two pieces:

* ``CoupledChains`` is the driver: it runs the chains with the kernels it is given (by default
  ``kernels.cis_step`` and its coupling ``kernels.coupled_cis_step``), records the meeting
  times and stops the pairs that are done (``machinery``: only the pairs still needed are
  stepped). Iterating over it gives X_0, then (X_t, Y_{t−1}) for t = 1, 2, … for the pairs
  still running.
* ``coupled_estimate`` is H_{k:m}: it credits h(X_t) and h(Y_{t−1}) with the weights of
  ``hkm_weights`` as the chains run. H is linear in f, so it is returned as particles with
  signed coefficients (an ``Estimate``), good for every f at once.

The notebooks' step-by-step runner (``teaching.lag_coupled_chains``) iterates over the same
``CoupledChains``, so it sees the same draws in the same order.
"""

from __future__ import annotations

from collections.abc import Iterator
from itertools import count
from typing import NamedTuple

import torch
from torch import Tensor

from ucvae_lite.core import kernels
from ucvae_lite.core.estimate import Estimate
from ucvae_lite.core.hkm import hkm_weights, validate_lags
from ucvae_lite.core.iwae import (
    normalized_weights,
    validate_log_weights,
    validate_num_samples,
    validate_samples,
)
from ucvae_lite.core.kernels import CISState, CoupledKernel, Move, SingleKernel
from ucvae_lite.core.machinery import ParticleStore, Running, StoredParticles, take
from ucvae_lite.core.targets import Target, selectable


class MeetingTimeoutError(RuntimeError):
    """Coupled chains did not meet within ``max_steps``; truncating them would bias the estimate."""


class ChainStep(NamedTuple):
    """The chains still running at step t: X_t, Y_{t−1} (None at t = 0), and their rows."""

    t: int
    x: CISState
    y: CISState | None
    met: Tensor  # [A] τ ≤ t
    rows: Tensor  # [A] the data points (rows of the full batch) of these chains


class CoupledChains:
    """Lag-1 coupled CIS chains for a batch of data points, one chain pair per data point.

    Iterate to run them: the first item is X_0 (t = 0), then (X_t, Y_{t−1}) for t = 1, 2, …,
    for the chain pairs still running. A pair stops once it has met and is past step m;
    the run stops when no pair is left or at t = ``max_steps``. Afterwards ``tau`` [B] holds
    the meeting times (``max_steps`` + 1 where a pair had not met: see ``truncated``),
    ``x0`` the sample set X_0, and ``store`` every evaluated particle.

    ``initial`` optionally gives X_0 as (particles [B, S, D], log-weights [B, S]): it must be
    a fresh q^S draw (e.g. the sample set of an IWAE forward pass). ``move`` is an optional
    ``kernels.Move`` made after every index selection (``rejuvenation.RandomWalkMH``).
    ``correction_prob`` p < 1 runs the chains only for a random subset of the data points:
    after X_0, each pair goes on with probability p, independently (``corrected`` [B] says
    which; the others stop at t = 0, with τ = 0). ``coupled_estimate`` weights them by 1/p.
    ``single_kernel`` K and ``coupled_kernel`` K̄ (``kernels.SingleKernel``, ``CoupledKernel``)
    are the kernels the chains run: ``kernels.cis_step`` and ``kernels.coupled_cis_step``.
    """

    def __init__(
        self,
        target: Target,
        num_samples: int,
        m: int = 0,
        max_steps: int = 10_000,
        generator: torch.Generator | None = None,
        *,
        store: ParticleStore | None = None,
        initial: tuple[Tensor, Tensor] | None = None,
        move: Move | None = None,
        correction_prob: float = 1.0,
        single_kernel: SingleKernel = kernels.cis_step,
        coupled_kernel: CoupledKernel = kernels.coupled_cis_step,
    ):
        validate_num_samples(num_samples)
        validate_correction_prob(correction_prob)
        self.target, self.num_samples, self.m, self.max_steps = target, num_samples, m, max_steps
        self.generator, self.initial, self.move = generator, initial, move
        self.correction_prob = correction_prob
        self.single_kernel, self.coupled_kernel = single_kernel, coupled_kernel
        self.store = store if store is not None else ParticleStore()

    def __iter__(self) -> Iterator[ChainStep]:
        """X_0 ~ q^S; X_1 ~ K(X_0, ·), Y_0 ~ q^S; then (X_{t+1}, Y_t) ~ K̄((X_t, Y_{t−1}), ·),
        τ = inf{t ≥ 1 : X_t = Y_{t−1}}, until t ≥ max(τ, m) for every pair (or t = max_steps).

        ``run`` (``machinery.Running``) holds the pairs still stepped: a pair that has met once
        t + 1 > m is dropped by the coupled kernel (``stop_met``) before its fresh draws.
        """
        gen, p = self.generator, self.correction_prob
        x0, run = self._start()  # X_0, evaluated and stored; every pair running
        B, device = x0.log_weights.shape[0], x0.log_weights.device
        self.x0, self.tau = x0, torch.zeros(B, dtype=torch.long, device=device)
        self.truncated = torch.zeros(B, dtype=torch.bool, device=device)
        self.corrected = torch.ones(B, dtype=torch.bool, device=device)
        yield ChainStep(0, x0, None, torch.zeros_like(self.truncated), run.rows)
        if p < 1.0:  # thinning: Z ~ Bernoulli(p) per pair; only the pairs with Z = 1 go on
            self.corrected = (
                torch.rand(B, generator=gen, dtype=x0.log_weights.dtype, device=device) < p
            )
            index = self.corrected.nonzero().flatten()
            run, x0 = run.select(index), take(x0, index)
        if not run.rows.numel():
            return
        x1, _ = self.single_kernel(run.target, x0, generator=gen, store=run.store, move=run.move)
        state = kernels.lag_start(run.target, x1, run.store, gen)  # (X_1, Y_0)
        for t in count(1):
            yield ChainStep(t, state.x, state.y, state.met, run.rows)
            if t == self.max_steps:  # censored where unmet: τ > max_steps
                unmet = run.rows[~state.met]
                self.truncated[unmet], self.tau[unmet] = True, self.max_steps + 1
                return
            state, info = self.coupled_kernel(
                run.target, state, run.store, gen, run.move, stop_met=t + 1 > self.m
            )  # (X_{t+1}, Y_t) ~ K̄((X_t, Y_{t−1}), ·)
            first = info.met & (self.tau[run.rows] == 0)
            self.tau[run.rows[first]] = t + 1
            run = run.select(info.kept)
            if not run.rows.numel():
                return

    def _start(self) -> tuple[CISState, Running]:
        """X_0 ~ q^S (or ``initial``), checked, evaluated and stored; every pair running, with
        the target made row-selectable and the move bound to this batch."""
        S = self.num_samples
        if self.initial is None:
            z0 = self.target.sample(S, self.generator)
            validate_samples(z0, S)
            lw0 = self.target.log_weight(z0)
            validate_log_weights(lw0, z0)
        else:
            z0, lw0 = self.initial[0].detach(), self.initial[1]
            validate_samples(z0, S, where="initial particles")
            validate_log_weights(lw0.detach(), z0, where="initial log-weights")
        B, _, D = z0.shape
        rows = torch.arange(B, device=z0.device)
        store = self.store.rows(rows)
        x0 = CISState(z0, lw0.detach(), store.add(z0, lw0))
        move = None
        if self.move is not None:  # checked against the caller's target, not its row view
            move = self.move.bind(self.target, B, D, x0.log_weights)
        return x0, Running(rows, selectable(self.target, B, z0.device), store, move)


def validate_correction_prob(p: float) -> None:
    """ValueError unless 0 < p ≤ 1."""
    if not isinstance(p, int | float) or isinstance(p, bool) or not 0.0 < p <= 1.0:
        raise ValueError(
            f"correction_prob must be in (0, 1] (the probability that a data point's bias "
            f"correction is computed), got {p!r}; 1 computes it for every data point"
        )


def _validate_args(num_samples: int, k: int, m: int, max_steps: int, on_timeout: str) -> None:
    validate_num_samples(num_samples)
    validate_lags(k, m)
    if not isinstance(max_steps, int) or max_steps < 1:
        raise ValueError(f"max_steps must be an integer >= 1, got {max_steps!r}")
    if max_steps < m:
        raise ValueError(f"max_steps={max_steps} is below m={m}: the chains must run m steps")
    if on_timeout not in ("raise", "truncate"):
        raise ValueError(f"on_timeout must be 'raise' or 'truncate', got {on_timeout!r}")


def credit_hkm(store: ParticleStore, step: ChainStep, k: int, m: int) -> None:
    """Credit step t's terms of H_{k:m} = Σ_t a_t h(X_t) + b_t h(Y_{t−1}) (``hkm_weights``),
    h(ξ) = Σ_j w̄_j(ξ) f(z_j): a_t w̄_j(X_t) to X_t's particles, b_t w̄_j(Y_{t−1}) to Y_{t−1}'s.
    Nothing before t = k (a_t = b_t = 0 there)."""
    if step.t < k:
        return
    a, b = hkm_weights(step.t, k, m, unmet=~step.met, dtype=step.x.log_weights.dtype)
    store.credit(step.x.ids, a[:, None] * normalized_weights(step.x.log_weights))
    if step.y is not None:
        store.credit(step.y.ids, b[:, None] * normalized_weights(step.y.log_weights))


def coupled_estimate(
    target: Target,
    num_samples: int,
    k: int = 0,
    m: int = 0,
    max_steps: int = 10_000,
    generator: torch.Generator | None = None,
    *,
    on_timeout: str = "raise",
    initial: tuple[Tensor, Tensor] | None = None,
    keep_log_weights: bool = False,
    move: Move | None = None,
    correction_prob: float = 1.0,
    single_kernel: SingleKernel = kernels.cis_step,
    coupled_kernel: CoupledKernel = kernels.coupled_cis_step,
) -> Estimate:
    """Unbiased estimate H_{k:m} of E_{p(z|x_b)}[f(z)] for every data point b, for all f at once.

    Parameters
    ----------
    target : an object with ``sample(n, generator)`` and ``log_weight(z)`` (see ``targets``).
    num_samples : S, particles per set (S ≥ 2).
    k, m : 0 ≤ k ≤ m; larger values lower the variance and cost more.
    max_steps : the largest t a chain may reach. Chains unmet then raise ``MeetingTimeoutError``
        or, with ``on_timeout="truncate"``, are cut off and flagged (``truncated``; *biased*).
    initial : optionally X_0 as (particles [B, S, D], log-weights [B, S]): a fresh q^S draw.
    keep_log_weights : keep every log-weight as ``target.log_weight`` returned it (graph
        included) in ``flat_log_weights``, for a gradient surrogate to reuse; the chains use
        detached weights.
    move : an optional ``kernels.Move`` made on the references after every index selection,
        e.g. ``rejuvenation.RandomWalkMH(scale)``. Still unbiased; its evaluations are counted.
    correction_prob : p in (0, 1], the thinned correction H^p = h(X_0) + (Z/p)·(H − h(X_0))
        (``Estimate.thinned``): the chains run only where Z ~ Bernoulli(p) is 1 (``corrected``).
    single_kernel, coupled_kernel : the kernels K and K̄ the chains run (``CoupledChains``).

    Returns an ``Estimate``: ``tau`` (τ ≥ 2 where the chains ran, 0 where thinning skipped
    them, max_steps + 1 where truncated), ``num_evals`` (S for X_0, S for (X_1, Y_0), S − 1
    per further step that needs new particles, plus the move's) and ``expectation(f)``.
    """
    _validate_args(num_samples, k, m, max_steps, on_timeout)
    store = ParticleStore(keep_log_weights)
    chains = CoupledChains(
        target,
        num_samples,
        m,
        max_steps,
        generator,
        store=store,
        initial=initial,
        move=move,
        correction_prob=correction_prob,
        single_kernel=single_kernel,
        coupled_kernel=coupled_kernel,
    )
    for step in chains:
        credit_hkm(store, step, k, m)
    if on_timeout == "raise":
        _raise_if_truncated(chains, k, m)
    est = _estimate(store.finish(len(chains.tau), chains.x0.log_weights.dtype), chains, k, m)
    return est.thinned(chains.corrected, correction_prob) if correction_prob < 1.0 else est


def _raise_if_truncated(chains: CoupledChains, k: int, m: int) -> None:
    """``MeetingTimeoutError`` if some pair was stopped at ``max_steps`` before meeting."""
    if bool(chains.truncated.any()):
        raise MeetingTimeoutError(
            f"{int(chains.truncated.sum())} of {len(chains.tau)} coupled chains had not met "
            f"after max_steps={chains.max_steps} steps (S={chains.num_samples}, k={k}, m={m}). "
            "Stopping them would bias the estimate. Raise max_steps, use a better or defensive "
            "proposal, or pass on_timeout='truncate' to get a flagged, biased estimate."
        )


def _estimate(stored: StoredParticles, chains: CoupledChains, k: int, m: int) -> Estimate:
    """The ``Estimate`` of H_{k:m} from the store's particles and the chains' record."""
    return Estimate(
        flat_particles=stored.particles,
        flat_coef=stored.coef,
        rows=stored.rows,
        batch_size=chains.tau.shape[0],
        num_samples=chains.num_samples,
        tau=chains.tau,
        num_evals=stored.num_evals,
        truncated=chains.truncated,
        initial_log_weights=chains.x0.log_weights,
        k=k,
        m=m,
        flat_log_weights=stored.log_weights,
        flat_has_graph=stored.has_graph,
        corrected=chains.corrected,
        correction_prob=1.0,
    )
