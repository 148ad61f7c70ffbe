"""An optional rejuvenation move for the reference: coupled random-walk Metropolis–Hastings.

When the importance weights are degenerate (one particle holds almost all the mass), a CIS
step keeps its reference and two coupled chains meet only when a fresh draw beats both
references: the 1/t tail of τ (method.md §6). A Metropolis–Hastings step on the reference,
run after each index selection, moves the reference even when no fresh draw is accepted:

    r' = r + s ⊙ ξ,  ξ ~ N(0, I);  accept with probability min(1, p(x, r') / p(x, r)),
    p(x, z) = w(z) q(z | x)   (so log p(x, z) = log w(z) + log q(z | x)).

It leaves p(r | x) invariant, and the fresh slots are independent of the reference, so the
CIS kernel followed by it leaves the extended target invariant: H_{k:m} stays unbiased.

Coupled, the two chains' proposals come from the reflection–maximal coupling of
N(r^X, diag s²) and N(r^Y, diag s²) and share the acceptance uniform. The chains can then meet
by both accepting the *same* proposal, and chains that have met stay met (equal references
give equal proposals and equal decisions). Each coupled move costs two log-weight
evaluations per pair (one per chain; one where the two proposals coincide, as they always do
once the chains have met); q(z | x) itself is needed too (``log_proposal``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import torch
from torch import Tensor

from .targets import Target


class MoveResult(NamedTuple):
    """A (coupled) MH move: proposals [A, n, D], their raw log-weights, accepted [A, n].

    For the coupled move (n = 2), where ``same_proposal`` the two proposals are one point,
    evaluated once: Y's log-weight is X's.
    """

    proposals: Tensor
    log_weights_raw: Tensor  # as ``target.log_weight`` returned them (graph included)
    accepted: Tensor
    same_proposal: Tensor  # [A] both chains proposed the same point (always where met)


def check_rejuvenate(target: Target, scale, batch_size: int, dim: int, like: Tensor) -> Tensor:
    """The random-walk scale as a [B, D] tensor; a clear error when it or the target is unfit."""
    if not hasattr(target, "log_proposal"):
        raise ValueError(
            "rejuvenation needs the target's proposal density (a ``log_proposal(z)`` method, "
            "as ImportanceTarget has) to evaluate p(x, z) = w(z) q(z | x)"
        )
    s = torch.as_tensor(scale, dtype=like.dtype, device=like.device)
    if s.dim() == 1:
        s = s[:, None]
    try:
        s = s.expand(batch_size, dim).clone()
    except RuntimeError as err:
        raise ValueError(
            f"rejuvenate must be a float, [B] or [B, D] = [{batch_size}, {dim}] scales, "
            f"got shape {tuple(s.shape)}"
        ) from err
    if not bool(torch.isfinite(s).all()) or not bool((s > 0).all()):
        raise ValueError("rejuvenate scales must be finite and > 0")
    return s


def reflection_coupling(
    mu_x: Tensor, mu_y: Tensor, scale: Tensor, generator: torch.Generator | None = None
) -> tuple[Tensor, Tensor]:
    """A draw from the reflection–maximal coupling of N(μ_x, diag s²) and N(μ_y, diag s²).

    ξ ~ N(0, I), X' = μ_x + s ⊙ ξ, Δ = (μ_x − μ_y) / s. With probability min(1, φ(ξ + Δ)/φ(ξ))
    Y' = X'; otherwise Y' = μ_y + s ⊙ (ξ − 2 (e·ξ) e), e = Δ / |Δ| (Jacob, O'Leary & Atchadé
    2020, §4.1). Both marginals are exact and P(X' = Y') = 2 Φ(−|Δ| / 2), the largest possible.
    All tensors are [A, D].
    """
    xi = torch.randn(mu_x.shape, generator=generator, dtype=mu_x.dtype, device=mu_x.device)
    delta = (mu_x - mu_y) / scale
    log_ratio = -0.5 * ((xi + delta).pow(2).sum(-1) - xi.pow(2).sum(-1))
    u = torch.rand(mu_x.shape[:-1], generator=generator, dtype=mu_x.dtype, device=mu_x.device)
    same = u.log() <= log_ratio
    norm = delta.norm(dim=-1, keepdim=True)
    e = delta / norm.clamp_min(torch.finfo(delta.dtype).tiny)
    reflected = xi - 2.0 * (e * xi).sum(-1, keepdim=True) * e
    x_new = mu_x + scale * xi
    y_new = torch.where(same[:, None], x_new, mu_y + scale * reflected)
    return x_new, y_new


def _log_target(target: Target, z: Tensor, log_w: Tensor) -> Tensor:
    """log p(x, z) = log w(z) + log q(z | x), for z [A, n, D] and its log-weights [A, n]."""
    return log_w + target.log_proposal(z).detach()


def mh_move(
    target: Target,
    z: Tensor,
    log_w: Tensor,
    scale: Tensor,
    generator: torch.Generator | None = None,
) -> MoveResult:
    """One random-walk MH proposal-and-decision for one chain per row: z [A, D], log_w [A]."""
    prop = z + scale * torch.randn(z.shape, generator=generator, dtype=z.dtype, device=z.device)
    prop = prop[:, None]
    lw_raw = target.log_weight(prop)
    lw = lw_raw.detach()
    log_ratio = _log_target(target, prop, lw) - _log_target(target, z[:, None], log_w[:, None])
    u = torch.rand(z.shape[:1], generator=generator, dtype=z.dtype, device=z.device)
    accepted = u.log()[:, None] < log_ratio
    same = torch.ones(z.shape[0], dtype=torch.bool, device=z.device)
    return MoveResult(prop, lw_raw, accepted, same)


def coupled_mh_move(
    target: Target,
    zx: Tensor,
    lwx: Tensor,
    zy: Tensor,
    lwy: Tensor,
    scale: Tensor,
    generator: torch.Generator | None = None,
    subset: Callable[[Tensor], Target] | None = None,
) -> MoveResult:
    """The coupled move for two chains per row: proposals [A, 2, D] (X's, then Y's).

    Reflection–maximally coupled proposals, one shared acceptance uniform. A proposal the two
    chains share (always so once they have met) is evaluated once: Y's log-weights are computed
    only for the rows where it differs, with ``subset(rows)``, the target restricted to those
    rows (default: ``target.select``).
    """
    px, py = reflection_coupling(zx, zy, scale, generator)
    same = (px == py).all(-1)
    lw_raw = target.log_weight(px[:, None])[:, 0]
    lw_raw_y = lw_raw
    diff = (~same).nonzero().flatten()
    if diff.numel():
        sub = subset(diff) if subset is not None else target.select(diff)
        lw_raw_y = lw_raw.index_put((diff,), sub.log_weight(py[diff][:, None])[:, 0])
    prop = torch.stack([px, py], 1)
    lw_raw = torch.stack([lw_raw, lw_raw_y], 1)
    lw = lw_raw.detach()
    cur = torch.stack([zx, zy], 1)
    log_ratio = _log_target(target, prop, lw) - _log_target(target, cur, torch.stack([lwx, lwy], 1))
    u = torch.rand(zx.shape[:1], generator=generator, dtype=zx.dtype, device=zx.device)
    accepted = u.log()[:, None] < log_ratio
    return MoveResult(prop, lw_raw, accepted, same)
