"""The unbiased estimator H_{k:m} from lag-1 coupled CIS chains.

With X_0, Y_0 ~ q^S, X_1 ~ K(X_0, ·), then (X_{t+1}, Y_t) ~ K̄((X_t, Y_{t−1}), ·) and the
meeting time τ = inf{t ≥ 1 : X_t = Y_{t−1}}, for integers 0 ≤ k ≤ m:

    H_{k:m} = 1/(m−k+1) Σ_{t=k}^{m} h(X_t)
              + Σ_{t=k+1}^{τ−1} min(1, (t−k)/(m−k+1)) · ( h(X_t) − h(Y_{t−1}) ),

    h(ξ) = Σ_j w̄_j(ξ) f(z_j)      (Rao-Blackwellised over the selected index),

and E[H_{k:m}] = E_{p(z|x)}[f(z)] (Jacob, O'Leary & Atchadé 2020; Ruiz et al. 2021), provided
τ is finite with a light enough tail (geometric tails suffice; ``hkm`` says where the weights
come from). With k = m = 0 it reads h(X_0) + Σ_{t=1}^{τ−1} (h(X_t) − h(Y_{t−1})): the IWAE
estimate h(X_0) plus a bias correction. Run until t ≥ max(τ, m).

Two pieces:

* ``CoupledChains`` runs the chains (``kernels.init``, then ``select``, optional ``Move``,
  ``refresh``), records meeting times, and drops chains that have finished. Iterating over it
  gives X_0, then (X_t, Y_{t−1}) for t = 1, 2, … for the chains still running.
* ``coupled_estimate`` is H_{k:m}: it credits h(X_t) and h(Y_{t−1}) with the weights of
  ``hkm_weights`` as the chains run. H is linear in f, so it is returned as particles with
  signed coefficients (an ``Estimate``), good for every f at once.

The notebooks' step-by-step runner (``teaching.lag_coupled_chains``) iterates over the same
``CoupledChains``, so it sees the same draws in the same order.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import NamedTuple

import torch
from torch import Tensor

from ucvae_lite.core import kernels
from ucvae_lite.core.estimate import Estimate
from ucvae_lite.core.hkm import hkm_weights
from ucvae_lite.core.iwae import (
    check_log_weights,
    check_num_samples,
    check_samples,
    normalized_weights,
)
from ucvae_lite.core.kernels import CISState, Move, Particle
from ucvae_lite.core.machinery import ParticleStore, StoreRows, still_needed
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


@dataclass
class _Running:
    """The chains still running: their data points and everything indexed by them."""

    rows: Tensor
    target: Target
    store: StoreRows
    move: Move | None

    def select(self, index: Tensor) -> _Running:
        move = self.move.select(index) if self.move is not None else None
        return _Running(self.rows[index], self.target.select(index), self.store.select(index), move)


def _rows(p: Particle, index: Tensor) -> Particle:
    return Particle(*(v[index] for v in p))


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
    ):
        check_num_samples(num_samples)
        check_correction_prob(correction_prob)
        self.target, self.num_samples, self.m, self.max_steps = target, num_samples, m, max_steps
        self.generator, self.initial, self.move = generator, initial, move
        self.correction_prob = correction_prob
        self.store = store if store is not None else ParticleStore()

    def _start(self) -> tuple[CISState, _Running]:
        """X_0 ~ q^S (or ``initial``), evaluated and stored; every chain pair running."""
        S = self.num_samples
        if self.initial is None:
            z0 = self.target.sample(S, self.generator)
            check_samples(z0, S)
            lw0 = self.target.log_weight(z0)
            check_log_weights(lw0, z0)
        else:
            z0, lw0 = self.initial[0].detach(), self.initial[1]
            check_samples(z0, S, where="initial particles")
            check_log_weights(lw0.detach(), z0, where="initial log-weights")
        B, _, D = z0.shape
        rows = torch.arange(B, device=z0.device)
        store = self.store.rows(rows)
        x0 = CISState(z0, lw0.detach(), store.add(z0, lw0))
        target = selectable(self.target, B, z0.device)
        move = None
        if self.move is not None:  # checked against the caller's target, not its row view
            move = self.move.bind(self.target, B, D, x0.log_weights)
        return x0, _Running(rows, target, store, move)

    def _record_meetings(
        self, t: int, run: _Running, ref_x: Particle, ref_y: Particle
    ) -> tuple[_Running, Particle, Particle]:
        """τ = t where the new references are one particle; drop the pairs that are done."""
        met = kernels.met(ref_x, ref_y)
        first = met & (self.tau[run.rows] == 0)
        self.tau[run.rows[first]] = t
        keep = still_needed(met, t, self.m)
        if bool(keep.all()):
            return run, ref_x, ref_y
        index = keep.nonzero().flatten()
        if not index.numel():  # all done: nothing left to restrict (or to evaluate)
            return replace(run, rows=run.rows[:0]), ref_x, ref_y
        return run.select(index), _rows(ref_x, index), _rows(ref_y, index)

    def __iter__(self):
        x0, run = self._start()
        B, device, gen = x0.particles.shape[0], x0.particles.device, self.generator
        self.x0 = x0
        self.tau = torch.zeros(B, dtype=torch.long, device=device)
        self.truncated = torch.zeros(B, dtype=torch.bool, device=device)
        yield ChainStep(0, x0, None, torch.zeros(B, dtype=torch.bool, device=device), run.rows)
        self.corrected = torch.ones(B, dtype=torch.bool, device=device)
        if self.correction_prob < 1.0:  # thinning: only some pairs go on (Z ~ Bernoulli(p))
            u = torch.rand(B, generator=gen, dtype=x0.log_weights.dtype, device=device)
            self.corrected = u < self.correction_prob
            index = self.corrected.nonzero().flatten()
            if not index.numel():
                return
            run, x0 = run.select(index), CISState(*(v[index] for v in x0))
        state = kernels.init(run.target, x0, run.store, gen, run.move)  # (X_1, Y_0)
        t = 1
        while True:
            yield ChainStep(t, state.x, state.y, state.met, run.rows)
            if t == self.max_steps:
                unmet = run.rows[~state.met]
                self.truncated[unmet] = True
                self.tau[unmet] = self.max_steps + 1  # censored: τ > max_steps
                return
            ref_x, ref_y = kernels.select(state, gen)
            t += 1
            run, ref_x, ref_y = self._record_meetings(t, run, ref_x, ref_y)
            if run.move is not None and run.rows.numel():
                ref_x, ref_y = run.move.coupled(run.target, ref_x, ref_y, run.store, gen)
                run, ref_x, ref_y = self._record_meetings(t, run, ref_x, ref_y)
            if not run.rows.numel():
                return
            state = kernels.refresh(run.target, ref_x, ref_y, self.num_samples - 1, run.store, gen)


def check_correction_prob(p: float) -> None:
    """ValueError unless 0 < p ≤ 1."""
    if not isinstance(p, int | float) or isinstance(p, bool) or not 0.0 < p <= 1.0:
        raise ValueError(
            f"correction_prob must be in (0, 1] (the probability that a data point's bias "
            f"correction is computed), got {p!r}; 1 computes it for every data point"
        )


def _check_args(num_samples: int, k: int, m: int, max_steps: int, on_timeout: str) -> None:
    check_num_samples(num_samples)
    if not isinstance(k, int) or not isinstance(m, int) or k < 0:
        raise ValueError(f"k must be an integer >= 0, got k={k!r}")
    if k > m:
        raise ValueError(f"need k <= m (average h(X_t) over t = k..m), got k={k}, m={m}")
    if not isinstance(max_steps, int) or max_steps < 1:
        raise ValueError(f"max_steps must be an integer >= 1, got {max_steps!r}")
    if max_steps < m:
        raise ValueError(f"max_steps={max_steps} is below m={m}: the chains must run m steps")
    if on_timeout not in ("raise", "truncate"):
        raise ValueError(f"on_timeout must be 'raise' or 'truncate', got {on_timeout!r}")


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
) -> Estimate:
    """Unbiased estimate H_{k:m} of E_{p(z|x_b)}[f(z)] for every data point b, for all f at once.

    Parameters
    ----------
    target : an object with ``sample(n, generator)`` and ``log_weight(z)`` (see ``targets``).
    num_samples : S, particles per set (S ≥ 2).
    k, m : 0 ≤ k ≤ m; larger values lower the variance and cost more.
    max_steps : the largest t a chain may reach. Chains still unmet then raise
        ``MeetingTimeoutError`` (default) or, with ``on_timeout="truncate"``, are cut off and
        flagged in ``truncated``: that estimate is *biased*.
    initial : optionally X_0 as (particles [B, S, D], log-weights [B, S]), e.g. the sample set of
        an IWAE forward pass. It must be a fresh q^S draw.
    keep_log_weights : keep every evaluated log-weight exactly as ``target.log_weight``
        returned it (autograd graph included) in ``flat_log_weights`` (see ``Estimate``), so a
        gradient surrogate can reuse them. The chains themselves only use detached weights.
    move : an optional ``kernels.Move`` made on the references after every index selection,
        e.g. ``rejuvenation.RandomWalkMH(scale)``. Still unbiased; its evaluations are counted.
    correction_prob : p in (0, 1], the thinned bias correction. Write H = h(X_0) + C, with
        h(X_0) IWAE's estimate and C = H_{k:m} − h(X_0) the correction. With Z ~ Bernoulli(p)
        independently per data point, H^p = h(X_0) + (Z/p)·C has E[H^p] = E[H] (still
        unbiased) and Var(H^p) = Var(H) + (1/p − 1) E[C²]; the chains run only where Z = 1,
        so a data point costs S + Z·(the chains' evaluations). ``corrected`` says where Z = 1.

    Returns an ``Estimate``: ``tau`` (τ ≥ 2 where the chains ran; 0 where the thinned
    correction skipped them; max_steps + 1 where truncated), ``num_evals`` (log-weight
    evaluations per data point: S for X_0, S for (X_1, Y_0), S − 1 per further step that needs
    new particles, plus the move's) and ``expectation(f)``.
    """
    _check_args(num_samples, k, m, max_steps, on_timeout)
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
    )
    scale = 1.0 / correction_prob  # Z/p for the pairs that run past X_0 (all, when p = 1)
    x0 = None
    for step in chains:  # credit h(X_t) and h(Y_{t−1}) with their weights in H_{k:m}
        if step.t == 0:
            x0 = step.x
        if step.t < k:
            continue
        a, b = hkm_weights(step.t, k, m, unmet=~step.met, dtype=step.x.log_weights.dtype)
        if step.t > 0:
            a, b = scale * a, scale * b
        store.credit(step.x.ids, a[:, None] * normalized_weights(step.x.log_weights))
        if step.y is not None:
            store.credit(step.y.ids, b[:, None] * normalized_weights(step.y.log_weights))
    if correction_prob < 1.0:  # h(X_0) + (Z/p)(H − h(X_0)): X_0's own term becomes
        z_over_p = chains.corrected.to(x0.log_weights.dtype) * scale  # (1 − Z/p) + (Z/p)·a_0
        a0 = hkm_weights(0, k, m, unmet=~chains.corrected, dtype=x0.log_weights.dtype)[0]
        own = 1.0 - z_over_p + (z_over_p - 1.0) * a0  # minus the a_0 credited above
        store.credit(x0.ids, own[:, None] * normalized_weights(x0.log_weights))
    B = chains.tau.shape[0]
    if bool(chains.truncated.any()) and on_timeout == "raise":
        raise MeetingTimeoutError(
            f"{int(chains.truncated.sum())} of {B} coupled chains had not met after "
            f"max_steps={max_steps} steps (S={num_samples}, k={k}, m={m}). Stopping them would "
            "bias the estimate. Raise max_steps, use a better or defensive proposal, or pass "
            "on_timeout='truncate' to get a flagged, biased estimate."
        )
    stored = store.finish(B, chains.x0.log_weights.dtype)
    return Estimate(
        flat_particles=stored.particles,
        flat_coef=stored.coef,
        rows=stored.rows,
        batch_size=B,
        num_samples=num_samples,
        tau=chains.tau,
        num_evals=stored.num_evals,
        truncated=chains.truncated,
        initial_log_weights=chains.x0.log_weights,
        k=k,
        m=m,
        flat_log_weights=stored.log_weights,
        flat_has_graph=stored.has_graph,
        corrected=chains.corrected,
        correction_prob=correction_prob,
    )
