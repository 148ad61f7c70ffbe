"""Markov kernels on the IWAE-augmented space: the CIS (i-SIR) step and its coupling.

This module is the only place where the conditional importance sampling (CIS) step and the
coupled CIS step are written. The notebooks' step-by-step runner and the fast estimator both
call these functions, so they make the same random draws in the same order by construction.

The extended target
-------------------
For one data point x, with proposal q(z | x) and weights w(z) = p(x, z) / q(z | x), the IWAE
sample set z_1..z_S ~ q i.i.d. is augmented with an index s:

    π̄(s, z_{1:S}) = (1/S) p(z_s | x) Π_{j≠s} q(z_j | x).

Summing over s gives π̄(z_{1:S}) = [(1/S) Σ_j w(z_j) / p(x)] Π_j q(z_j | x), and dividing gives
π̄(s | z_{1:S}) = w̄_s = w_s / Σ_j w_j. So slot s of a draw from π̄ is an exact posterior draw,
and h(ξ) = Σ_j w̄_j f(z_j) has E_π̄[h] = E_{p(z|x)}[f] for every f.

One CIS step
------------
A chain state is a particle set ξ = (z_1 = r, z_2..z_S); slot 1 (index 0 here) holds the
*reference* r. One step ξ → ξ':

    1. ℓ ~ Categorical(w̄(ξ));  r' = z_ℓ                 (``select_reference``)
    2. z'_2..z'_S ~ q(· | x) i.i.d.;  ξ' = (r', z'_{2:S})  (``draw`` + ``with_fresh``)

It is a two-block Gibbs sampler on π̄: step 1 draws the index from π̄(s | z_{1:S}); step 2,
given s and z_s, redraws the other slots from their conditional Π_{j≠s} q. Each block leaves π̄
invariant, so the step does (Andrieu, Lee & Vihola 2018). The reference's weight is carried
over: a step costs S - 1 new log-weight evaluations.

The coupled step
----------------
Two chains X and Y move jointly (``coupled_cis_step``):

    1. (ℓ_X, ℓ_Y) from the *maximal coupling* of Categorical(w̄(ξ^X)) and Categorical(w̄(ξ^Y));
    2. both chains take the *same* fresh draws z'_2..z'_S (common random numbers).

Each chain alone makes an exact CIS step. After one coupled step the two sets differ only in
slot 1, and the chains *meet* as soon as both select the same particle; from then on they are
identical. Particles carry ids, so "the same particle" is an id comparison.

The two kernels
---------------
``cis_step`` (a ``SingleKernel``) and ``coupled_cis_step`` (a ``CoupledKernel``) are the
defaults of the driver ``coupled.CoupledChains``, which runs exactly these functions: X_1 =
``cis_step``(X_0), then ``lag_start`` gives (X_1, Y_0), then ``coupled_cis_step`` at every step.
An optional ``Move`` of the reference runs inside both, between steps 1 and 2.

Style: small NamedTuple states; pure functions of (target, state, store, generator), blackjax
style; everything batched over data points (the leading dimension), with no Python loop over
chains.
"""

from __future__ import annotations

import math
from typing import NamedTuple, Protocol

import torch
from torch import Tensor

from ucvae_lite.core.iwae import normalized_weights, validate_log_weights, validate_samples
from ucvae_lite.core.machinery import Running, take
from ucvae_lite.core.targets import Target


class Particle(NamedTuple):
    """One particle per chain: z [B, D], its detached log-weight [B], its id [B] (or None)."""

    z: Tensor
    log_weight: Tensor
    id: Tensor | None


class CISState(NamedTuple):
    """A particle set per chain: particles [B, S, D], detached log_weights [B, S], ids [B, S].

    As a chain state, slot 0 holds the reference. ``ids`` (integers, or None when untracked)
    name each evaluated particle, so that two chains holding "the same particle" can be told
    apart from two that hold different particles at the same place.
    """

    particles: Tensor
    log_weights: Tensor
    ids: Tensor | None = None


class CoupledState(NamedTuple):
    """Lag-1 coupled chains: X_t, Y_{t−1} (sharing slots 1..S−1), ``met`` [B]: X_t = Y_{t−1}."""

    x: CISState
    y: CISState
    met: Tensor


class CISInfo(NamedTuple):
    index: Tensor  # [B] the selected slot ℓ (0 = the reference was kept)


class CoupledInfo(NamedTuple):
    index_x: Tensor  # [B] the slot X selected
    index_y: Tensor  # [B] the slot Y selected
    met: Tensor  # [B] both chains now hold the same reference (the same particle set)
    kept: Tensor  # [A] the pairs (positions in the input) the new state holds: all, or the unmet


class Store(Protocol):
    """Where newly evaluated particles go; it names them with ids.

    ``add(z, log_weight, rows)`` records particles z [A, n, D] with their log-weights [A, n]
    (exactly as the target returned them) for the rows ``rows`` of the current batch (local
    positions; None = every row) and returns their ids [A, n]. ``select(index)`` gives the
    store for the rows ``index`` of the current batch. ``machinery.ParticleStore`` is one.
    """

    def add(self, z: Tensor, log_weight: Tensor, rows: Tensor | None = None) -> Tensor: ...

    def select(self, index: Tensor) -> Store: ...


class Move(Protocol):
    """An optional extra move of the references, made after every index selection.

    It must leave the posterior p(z | x) invariant (then CIS followed by it leaves the extended
    target invariant, and the estimator stays unbiased). ``single`` moves one chain's
    reference (X's first step); ``coupled`` moves both chains' references jointly, keeping
    chains that have met together; ``select(index)`` restricts per-row settings to some rows.
    ``rejuvenation.RandomWalkMH`` is one.
    """

    def single(self, target: Target, ref: Particle, store: Store, generator) -> Particle: ...

    def coupled(
        self, target: Target, ref_x: Particle, ref_y: Particle, store: Store, generator
    ) -> tuple[Particle, Particle]: ...

    def select(self, index: Tensor) -> Move: ...


class SingleKernel(Protocol):
    """X_{t+1} ~ K(X_t, ·) for a batch of chains, with ``move`` (optional) made on the new
    reference: returns (new state, info). ``cis_step`` is one."""

    def __call__(
        self,
        target: Target,
        state: CISState,
        generator: torch.Generator | None = None,
        store: Store | None = None,
        move: Move | None = None,
    ) -> tuple[CISState, object]: ...


class CoupledKernel(Protocol):
    """(X_{t+1}, Y_t) ~ K̄((X_t, Y_{t−1}), ·) for a batch of chain pairs, each chain alone a
    step of the single kernel: returns (new state, ``CoupledInfo``). With ``stop_met`` the
    pairs that have met are left out of the new state (``CoupledInfo.kept`` says which pairs
    it holds). ``coupled_cis_step`` is one."""

    def __call__(
        self,
        target: Target,
        state: CoupledState,
        store: Store,
        generator: torch.Generator | None = None,
        move: Move | None = None,
        *,
        stop_met: bool = False,
    ) -> tuple[CoupledState, CoupledInfo]: ...


# --- drawing ------------------------------------------------------------------------------


def sample_categorical(probs: Tensor, generator: torch.Generator | None = None) -> Tensor:
    """One draw per row from Categorical(probs / probs.sum()), probs [..., S] >= 0 -> [...].

    Inverse-CDF sampling: a category of zero mass is never drawn.
    """
    cdf = torch.cumsum(probs, -1)
    u = torch.rand(probs.shape[:-1], generator=generator, dtype=probs.dtype, device=probs.device)
    idx = torch.searchsorted(cdf, (u * cdf[..., -1])[..., None], right=True)[..., 0]
    return idx.clamp(max=probs.shape[-1] - 1)


def maximal_coupling(
    log_p: Tensor, log_q: Tensor, generator: torch.Generator | None = None
) -> tuple[Tensor, Tensor]:
    """A draw (i, j) from the maximal coupling of Categorical(p) and Categorical(q).

    p and q are given by (unnormalised) log-weights [B, S]. With ν = min(p, q) and α = Σ ν:
    with probability α, i = j ~ ν / α; otherwise i ~ (p − ν)/(1 − α), j ~ (q − ν)/(1 − α)
    independently. Then i ~ p, j ~ q, and P(i = j) = α = 1 − TV(p, q), the largest possible
    value for any coupling (Lindvall 1992).
    """
    if log_p.shape != log_q.shape:
        raise ValueError(f"log_p and log_q differ in shape: {log_p.shape} vs {log_q.shape}")
    return coupled_indices(normalized_weights(log_p), normalized_weights(log_q), generator)


def coupled_indices(
    p: Tensor, q: Tensor, generator: torch.Generator | None = None
) -> tuple[Tensor, Tensor]:
    """``maximal_coupling`` for normalised probabilities p, q [B, S]."""
    nu = torch.minimum(p, q)
    # One batched inverse-CDF draw from each of ν, p − ν and q − ν (all unnormalised).
    i_common, i_p, i_q = sample_categorical(
        torch.stack([nu, (p - nu).clamp_min(0), (q - nu).clamp_min(0)]), generator
    )
    u = torch.rand(nu.shape[:-1], generator=generator, dtype=nu.dtype, device=nu.device)
    common = u < nu.sum(-1)
    return torch.where(common, i_common, i_p), torch.where(common, i_common, i_q)


def weigh(
    target: Target, z: Tensor, store: Store | None = None, rows: Tensor | None = None
) -> CISState:
    """Log-weights of particles z [A, n, D] (the rows ``rows`` of the batch), recorded in ``store``.

    Validated with one cheap reduction; the detailed checks run only on failure (a −inf
    weight is legal: another particle of the set may carry the mass).
    """
    log_w = target.log_weight(z)
    if z.dim() != 3 or log_w.shape != z.shape[:2]:
        validate_samples(z, z.shape[1] if z.dim() == 3 else -1)
        validate_log_weights(log_w, z)
    if not bool(log_w.detach().sum() < math.inf):  # NaN or +inf somewhere
        validate_log_weights(log_w, z)
    ids = store.add(z, log_w, rows) if store is not None else None
    return CISState(z, log_w.detach(), ids)


def draw(
    target: Target, n: int, generator: torch.Generator | None = None, store: Store | None = None
) -> CISState:
    """n i.i.d. draws from the proposal, evaluated: particles [B, n, D] with log-weights [B, n]."""
    z = target.sample(n, generator)
    if z.dim() != 3 or z.shape[1] != n:
        validate_samples(z, n)
    return weigh(target, z, store)


# --- the CIS step ---------------------------------------------------------------------------


def _gather(x: Tensor | None, index: Tensor) -> Tensor | None:
    """x[b, index[b]] for x [B, S, ...] and index [B] (None stays None)."""
    if x is None:
        return None
    return x[torch.arange(x.shape[0], device=x.device), index]


def reference(state: CISState, index: Tensor) -> Particle:
    """The particle in slot ``index`` [B] of each set: a new reference."""
    return Particle(
        _gather(state.particles, index),
        _gather(state.log_weights, index),
        _gather(state.ids, index),
    )


def select_reference(state: CISState, generator: torch.Generator | None = None) -> Particle:
    """Step 1 of CIS: ℓ ~ Categorical(w̄(ξ)), the new reference r' = z_ℓ."""
    index = sample_categorical(normalized_weights(state.log_weights), generator)
    return reference(state, index)


def with_fresh(ref: Particle, fresh: CISState) -> CISState:
    """The particle set (r, z_2..z_S): the reference in slot 0, then the fresh draws."""
    ids = (
        None if ref.id is None or fresh.ids is None else torch.cat([ref.id[:, None], fresh.ids], 1)
    )
    return CISState(
        torch.cat([ref.z[:, None], fresh.particles], 1),
        torch.cat([ref.log_weight[:, None], fresh.log_weights], 1),
        ids,
    )


def cis_step(
    target: Target,
    state: CISState,
    generator: torch.Generator | None = None,
    store: Store | None = None,
    move: Move | None = None,
) -> tuple[CISState, CISInfo]:
    """One CIS step ξ' ~ K(ξ, ·) for a batch of chains (the ``SingleKernel``):

    1. ℓ ~ Categorical(w̄(ξ)), the new reference r' = z_ℓ (then ``move.single``, if given);
    2. z'_2..z'_S ~ q i.i.d.;  ξ' = (r', z'_{2:S}).
    """
    index = sample_categorical(normalized_weights(state.log_weights), generator)
    ref = reference(state, index)
    if move is not None:
        ref = move.single(target, ref, store, generator)
    fresh = draw(target, state.particles.shape[1] - 1, generator, store)
    return with_fresh(ref, fresh), CISInfo(index)


# --- the coupled step -----------------------------------------------------------------------


def lag_start(
    target: Target,
    x1: CISState,
    store: Store,
    generator: torch.Generator | None = None,
) -> CoupledState:
    """(X_1, Y_0) for lag-1 coupled chains, from X_1 ~ K(X_0, ·) of a CIS step (its slots
    1..S−1 are fresh proposal draws): Y_0 = (y, X_1's fresh slots) with a new y ~ q.

    Y_0 ~ q^S like X_0 (only the marginal laws of X_0 and Y_0 matter for H_{k:m}), and since
    the two sets share S − 1 particles the chains can meet at the first coupled step (τ ≥ 2).
    """
    ref_y = _slot0(draw(target, 1, generator, store))
    fresh = CISState(*(None if v is None else v[:, 1:] for v in x1))
    return CoupledState(x1, with_fresh(ref_y, fresh), met(_slot0(x1), ref_y))


def _slot0(state: CISState) -> Particle:
    """The particle in slot 0 of each set."""
    return Particle(*(None if v is None else v[:, 0] for v in state))


def select_indices(
    state: CoupledState, generator: torch.Generator | None = None
) -> tuple[Tensor, Tensor]:
    """Maximally coupled index draws (ℓ_X, ℓ_Y) [B] for the sets X_t and Y_{t−1}.

    Chains that have met hold identical sets, so both take the same index (the coupling of two
    equal distributions does this anyway; forcing it guards against rounding in Σ min(p, p)).
    """
    wx, wy = normalized_weights(state.x.log_weights), normalized_weights(state.y.log_weights)
    ix, iy = coupled_indices(wx, wy, generator)
    return ix, torch.where(state.met, ix, iy)


def refresh(
    target: Target,
    ref_x: Particle,
    ref_y: Particle,
    num_fresh: int,
    store: Store,
    generator: torch.Generator | None = None,
) -> CoupledState:
    """Step 2 of the coupled step: common fresh draws for both chains; met = same reference."""
    fresh = draw(target, num_fresh, generator, store)
    return CoupledState(with_fresh(ref_x, fresh), with_fresh(ref_y, fresh), met(ref_x, ref_y))


def met(ref_x: Particle, ref_y: Particle) -> Tensor:
    """[B] True where both chains hold the same particle (equal ids)."""
    if ref_x.id is None or ref_y.id is None:
        raise ValueError("coupled chains need particle ids: evaluate with a store")
    return ref_x.id == ref_y.id


def coupled_cis_step(
    target: Target,
    state: CoupledState,
    store: Store,
    generator: torch.Generator | None = None,
    move: Move | None = None,
    *,
    stop_met: bool = False,
) -> tuple[CoupledState, CoupledInfo]:
    """(X_{t+1}, Y_t) ~ K̄((X_t, Y_{t−1}), ·): one coupled CIS step for a batch of chain pairs.

        1. (ℓ_X, ℓ_Y) from the maximal coupling of Categorical(w̄(X_t)) and
           Categorical(w̄(Y_{t−1})): the new references r^X = X_t[ℓ_X], r^Y = Y_{t−1}[ℓ_Y]
           (then ``move.coupled`` of both, if given);
        2. common fresh draws z'_2..z'_S ~ q:  X_{t+1} = (r^X, z'),  Y_t = (r^Y, z').

    Each chain alone makes a ``cis_step``. The pair has met (``info.met``) when r^X = r^Y, that
    is X_{t+1} = Y_t, and stays met. ``stop_met`` (machinery: only stepping the pairs still
    needed) leaves the pairs that have met after the selection, or after the move, out of
    step 2 and of the result, which then holds the pairs ``info.kept`` only (``target`` needs
    ``select``): the estimator sets it once X_{t+1} of a met pair no longer enters H_{k:m}.
    """
    ix, iy = select_indices(state, generator)
    ref_x, ref_y = reference(state.x, ix), reference(state.y, iy)
    now_met = met(ref_x, ref_y)
    run = Running(torch.arange(ix.shape[0], device=ix.device), target, store, move)
    if stop_met:
        run, ref_x, ref_y = _unmet_only(run, now_met, ref_x, ref_y)
    if move is not None and run.rows.numel():
        ref_x, ref_y = run.move.coupled(run.target, ref_x, ref_y, run.store, generator)
        now_met[run.rows] = met(ref_x, ref_y)
        if stop_met:
            run, ref_x, ref_y = _unmet_only(run, now_met[run.rows], ref_x, ref_y)
    info = CoupledInfo(ix, iy, now_met, run.rows)
    if not run.rows.numel():  # every pair stopped: nothing to draw
        return take(state, run.rows), info
    num_fresh = state.x.particles.shape[1] - 1
    return refresh(run.target, ref_x, ref_y, num_fresh, run.store, generator), info


def _unmet_only(
    run: Running, met_now: Tensor, ref_x: Particle, ref_y: Particle
) -> tuple[Running, Particle, Particle]:
    """The pairs of ``run`` whose references differ (``met_now`` [A] False), with theirs."""
    if not bool(met_now.any()):
        return run, ref_x, ref_y
    index = (~met_now).nonzero().flatten()
    return run.select(index), take(ref_x, index), take(ref_y, index)
