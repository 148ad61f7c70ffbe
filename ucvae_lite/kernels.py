"""Markov kernels on the IWAE-augmented space: the CIS (i-SIR) step and its coupling.

A chain state is a particle set ξ = (z_1 = r, z_2..z_S) whose slot 1 (index 0 here) holds the
*reference* r, with the log-weights of all S particles (method.md §3). One CIS step:

    1. ℓ ~ Categorical(w̄(ξ));  r' = z_ℓ
    2. z'_2..z'_S ~ q(· | x) i.i.d.;  ξ' = (r', z'_2..z'_S)

It leaves p(r | x) Π_{j≥2} q(z_j | x) invariant. The reference's weight is carried over, so a
step costs S - 1 new log-weight evaluations.

The *coupled* step (method.md §4) moves two chains X and Y jointly: the indices come from the
maximal coupling of Categorical(w̄(ξ^X)) and Categorical(w̄(ξ^Y)), and both chains take the
same fresh draws. Each chain alone is an exact CIS step; once both pick the same particle the
chains are equal forever after.

Style: small NamedTuple states, pure functions ``step(target, state, generator) -> (state, info)``,
everything batched over data points (the leading dimension) with no Python loop over chains.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch
from torch import Tensor

from .iwae import check_log_weights, check_samples, normalized_weights
from .targets import Target


class CISState(NamedTuple):
    """Particle sets: particles [B, S, D] (slot 0 holds the reference), log_weights [B, S]."""

    particles: Tensor
    log_weights: Tensor


class CISInfo(NamedTuple):
    index: Tensor  # [B] the selected slot ℓ (0 = the old reference was kept)


class CoupledInfo(NamedTuple):
    index_x: Tensor  # [B]
    index_y: Tensor  # [B]
    met: Tensor  # [B] bool: both chains now hold the same particle set


def sample_categorical(probs: Tensor, generator: torch.Generator | None = None) -> Tensor:
    """One draw per row from Categorical(probs / probs.sum()), probs [B, S] >= 0 -> [B].

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
    with probability α, i = j ~ ν / α; otherwise i ~ (p - ν)/(1 - α), j ~ (q - ν)/(1 - α)
    independently. Then i ~ p, j ~ q, and P(i = j) = α, the largest possible value.
    """
    if log_p.shape != log_q.shape:
        raise ValueError(f"log_p and log_q differ in shape: {log_p.shape} vs {log_q.shape}")
    return coupled_indices(normalized_weights(log_p), normalized_weights(log_q), generator)


def coupled_indices(
    p: Tensor, q: Tensor, generator: torch.Generator | None = None
) -> tuple[Tensor, Tensor]:
    """``maximal_coupling`` for normalised probabilities p, q [B, S]."""
    nu = torch.minimum(p, q)
    # One batched inverse-CDF draw from each of ν, p - ν and q - ν (all unnormalised).
    i_common, i_p, i_q = sample_categorical(
        torch.stack([nu, (p - nu).clamp_min(0), (q - nu).clamp_min(0)]), generator
    )
    u = torch.rand(nu.shape[:-1], generator=generator, dtype=nu.dtype, device=nu.device)
    common = u < nu.sum(-1)
    return torch.where(common, i_common, i_p), torch.where(common, i_common, i_q)


def gather_slot(x: Tensor, index: Tensor) -> Tensor:
    """x[b, index[b]] for x [B, S, ...] and index [B]."""
    return x[torch.arange(x.shape[0], device=x.device), index]


def fresh_draws(
    target: Target, num_fresh: int, generator: torch.Generator | None = None
) -> tuple[Tensor, Tensor]:
    """num_fresh i.i.d. draws from the proposal and their log-weights: [B, n, D], [B, n].

    Log-weights are validated with one cheap check; the detailed checks run only on failure
    (a -inf weight among fresh draws is legal: the reference may still carry mass).
    """
    z = target.sample(num_fresh, generator)
    log_w = target.log_weight(z)
    if z.dim() != 3 or z.shape[1] != num_fresh or log_w.shape != z.shape[:2]:
        check_samples(z, num_fresh)
        check_log_weights(log_w, z)
    if not bool(log_w.detach().sum() < math.inf):  # NaN or +inf somewhere (-inf is legal)
        check_log_weights(log_w, z)
    return z, log_w


def init_state(
    target: Target, num_samples: int, generator: torch.Generator | None = None
) -> CISState:
    """ξ_0 ~ q^S: S i.i.d. proposal draws (the IWAE sample set)."""
    z, log_w = fresh_draws(target, num_samples, generator)
    check_log_weights(log_w, z)
    return CISState(z, log_w)


def _with_reference(ref: Tensor, ref_log_w: Tensor, fresh: Tensor, fresh_log_w: Tensor) -> CISState:
    return CISState(
        torch.cat([ref[:, None], fresh], 1), torch.cat([ref_log_w[:, None], fresh_log_w], 1)
    )


def cis_step(
    target: Target, state: CISState, generator: torch.Generator | None = None
) -> tuple[CISState, CISInfo]:
    """One CIS step for a batch of chains (method.md §3)."""
    S = state.particles.shape[1]
    index = sample_categorical(normalized_weights(state.log_weights), generator)
    fresh, fresh_log_w = fresh_draws(target, S - 1, generator)
    ref = gather_slot(state.particles, index)
    ref_log_w = gather_slot(state.log_weights, index)
    return _with_reference(ref, ref_log_w, fresh, fresh_log_w), CISInfo(index)


def coupled_cis_step(
    target: Target,
    state_x: CISState,
    state_y: CISState,
    generator: torch.Generator | None = None,
) -> tuple[CISState, CISState, CoupledInfo]:
    """One coupled CIS step: maximally coupled indices, common fresh draws (method.md §4).

    ``met`` is True where the two new particle sets are identical; once met, the chains stay
    met (the maximal coupling of two equal distributions always picks a common index).
    """
    S = state_x.particles.shape[1]
    same = (state_x.particles == state_y.particles).flatten(1).all(-1)
    ix, iy = maximal_coupling(state_x.log_weights, state_y.log_weights, generator)
    iy = torch.where(same, ix, iy)  # faithful even if rounding makes Σ min(p, p) < 1
    fresh, fresh_log_w = fresh_draws(target, S - 1, generator)
    ref_x, ref_y = gather_slot(state_x.particles, ix), gather_slot(state_y.particles, iy)
    new_x = _with_reference(ref_x, gather_slot(state_x.log_weights, ix), fresh, fresh_log_w)
    new_y = _with_reference(ref_y, gather_slot(state_y.log_weights, iy), fresh, fresh_log_w)
    met = (ref_x == ref_y).all(-1)
    return new_x, new_y, CoupledInfo(ix, iy, met)
