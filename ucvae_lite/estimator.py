"""The unbiased estimator H_{k:m} from lag-1 coupled CIS chains (method.md §5).

With X_0, Y_0 ~ q^S, X_1 ~ K(X_0, ·), then (X_{t+1}, Y_t) ~ K̄((X_t, Y_{t-1}), ·) and
τ = inf{t ≥ 1 : X_t = Y_{t-1}}, for integers 0 ≤ k ≤ m:

    H_{k:m} = 1/(m-k+1) Σ_{t=k}^{m} h(X_t)
              + Σ_{t=k+1}^{τ-1} min(1, (t-k)/(m-k+1)) · ( h(X_t) - h(Y_{t-1}) ),

    h(ξ) = Σ_j w̄_j(ξ) f(z_j)      (Rao-Blackwellised over the selected index),

and E[H_{k:m}] = E_{p(z|x)}[f(z)] exactly (Jacob, O'Leary & Atchadé 2020; Ruiz et al. 2021).
With k = m = 0 it reads h(X_0) + Σ_{t=1}^{τ-1} (h(X_t) - h(Y_{t-1})): the IWAE estimate plus
a bias correction.

Implementation
--------------
* Y_0 takes X_1's fresh slots (its reference an independent q-draw), so the chains can meet
  at the first coupled step; τ ≥ 2.
* Every particle whose weight is evaluated gets one id; a chain state holds ids. The chains
  meet when they hold the same id, which the index selection decides (or, with the optional
  rejuvenation move, both chains accepting one common proposal), so the step that only
  confirms a meeting costs no evaluations.
* H is linear in f, so it is returned as particles with signed coefficients; coefficients of
  a particle used by several terms (the shared fresh slots, a reference kept for many steps)
  are merged. Number of particles = number of log-weight evaluations.
* All chains run as one tensor computation; a chain that has met (and passed m) leaves the
  active set, so the batch costs the sum of its meeting times, not B × the slowest chain.
"""

from __future__ import annotations

import torch
from torch import Tensor

from .estimate import Estimate
from .iwae import (
    check_log_weights,
    check_num_samples,
    check_samples,
    effective_sample_size,
    normalized_weights,
)
from .kernels import coupled_indices, fresh_draws, gather_slot, sample_categorical
from .rejuvenation import check_rejuvenate, coupled_mh_move, mh_move
from .targets import Target, restrict


class MeetingTimeoutError(RuntimeError):
    """Coupled chains did not meet within ``max_steps``; truncating them would bias the estimate."""


class _ParticleStore:
    """Append-only flat storage of evaluated particles; ids are positions in it."""

    def __init__(self):
        self.blocks: list[Tensor] = []
        self.log_weights: list[Tensor] = []
        self.has_graph: list[Tensor] = []
        self.rows: list[Tensor] = []
        self.size = 0
        self.coef_ids: list[Tensor] = []
        self.coef_vals: list[Tensor] = []

    def add(self, z: Tensor, rows: Tensor, log_w: Tensor | None = None) -> Tensor:
        """Store z [A, n, D] (and optionally log_w [A, n]) for data points rows [A]; ids [A, n]."""
        A, n, D = z.shape
        ids = torch.arange(self.size, self.size + A * n, device=z.device).view(A, n)
        self.blocks.append(z.reshape(A * n, D))
        if log_w is not None:
            self.log_weights.append(log_w.reshape(A * n))
            self.has_graph.append(torch.full((A * n,), log_w.requires_grad, device=z.device))
        self.rows.append(rows.repeat_interleave(n))
        self.size += A * n
        return ids

    def credit(self, ids: Tensor, values: Tensor) -> None:
        """Add values to the coefficients of particles ids (same shapes)."""
        self.coef_ids.append(ids.reshape(-1))
        self.coef_vals.append(values.reshape(-1))

    def finish(self, dtype: torch.dtype) -> tuple[Tensor, Tensor, Tensor]:
        particles, rows = torch.cat(self.blocks), torch.cat(self.rows)
        coef = torch.zeros(self.size, dtype=dtype, device=particles.device)
        if self.coef_ids:
            coef.index_add_(0, torch.cat(self.coef_ids), torch.cat(self.coef_vals).to(dtype))
        return particles, coef, rows


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


def _col(mask: Tensor, like: Tensor) -> Tensor:
    """mask [A] shaped to broadcast against like [A, ...]."""
    return mask.view(-1, *([1] * (like.dim() - 1)))


def _subset(target: Target, tgt: Target, active: Tensor, batch_size: int):
    """rows -> the active target ``tgt`` restricted to its ``rows`` (local positions)."""
    if hasattr(target, "select"):
        return lambda rows: restrict(tgt, rows, len(active))
    return lambda rows: restrict(target, active[rows], batch_size)


def _accept(ref: tuple, move, ids: Tensor, j: int) -> tuple[Tensor, Tensor, Tensor]:
    """The reference (z, log w, id) after chain j's MH decision in ``move``."""
    acc = move.accepted[:, j]
    new = (move.proposals[:, j], move.log_weights_raw[:, j].detach(), ids[:, j])
    return tuple(torch.where(_col(acc, v), n, v) for n, v in zip(new, ref, strict=True))


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
    rejuvenate: float | Tensor | None = None,
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
    keep_log_weights : return every evaluated log-weight, exactly as ``target.log_weight``
        returned it (autograd graph included), in ``info["flat_log_weights"]`` aligned with
        ``flat_particles``. Then Σ_n c_n log w(z_n) is the gradient surrogate without a second
        forward pass (the chains themselves only ever use detached weights).
        ``info["flat_has_graph"]`` marks the entries that carry an autograd graph (a target
        may evaluate small batches without one).
    rejuvenate : off by default. A random-walk scale s (a float, or [B] / [B, D] per data
        point) turns on the rejuvenation move of ``rejuvenation.py``: after every index
        selection the reference takes one Metropolis–Hastings step with proposal
        N(r, diag s²) targeting p(z | x), coupled between the chains (reflection–maximal
        proposals, shared acceptance uniform). Still unbiased; costs one more log-weight
        evaluation per chain and step. The target must have ``log_proposal``. A 1-D tensor is
        read as one scale per data point [B].

    Returns an ``Estimate`` with ``tau`` (τ ≥ 2), ``num_evals`` (log-weight evaluations per data
    point: S for X_0, S for (X_1, Y_0), S - 1 per further step that needs new particles; with
    ``rejuvenate``, 1 more at t = 1 and 2 more per coupled step, 1 where the two chains
    propose the same point) and ``expectation(f)``.
    """
    _check_args(num_samples, k, m, max_steps, on_timeout)
    S = num_samples
    if initial is None:
        z0, lw0_raw = fresh_draws(target, S, generator)
        check_log_weights(lw0_raw, z0)
    else:
        z0, lw0_raw = initial[0].detach(), initial[1]
        check_samples(z0, S, where="initial particles")
        check_log_weights(lw0_raw.detach(), z0, where="initial log-weights")
    lw0 = lw0_raw.detach()
    kept = (lambda lw: lw) if keep_log_weights else (lambda lw: None)
    B, _, D = z0.shape
    device, dtype = z0.device, lw0.dtype
    span = m - k + 1

    def alpha_beta(t: int, unmet: Tensor) -> tuple[Tensor, Tensor]:
        """Coefficients of h(X_t) and h(Y_{t-1}) in H_{k:m}; unmet means τ > t."""
        base = (1.0 / span) if k <= t <= m else 0.0
        corr = min(1.0, (t - k) / span) if t >= k + 1 else 0.0
        c = unmet.to(dtype) * corr
        return base + c, -c

    store = _ParticleStore()
    rows = torch.arange(B, device=device)
    ids0 = store.add(z0, rows, kept(lw0_raw))
    num_evals = torch.full((B,), S, dtype=torch.long, device=device)
    if k == 0:
        store.credit(ids0, normalized_weights(lw0) / span)

    # t = 1: X_1 ~ K(X_0); Y_0 = (independent q-draw, X_1's fresh slots).
    lx = sample_categorical(normalized_weights(lw0), generator)
    y_ref, y_ref_lw_raw = fresh_draws(target, 1, generator)
    fresh, fresh_lw_raw = fresh_draws(target, S - 1, generator)
    y_ref_lw, fresh_lw = y_ref_lw_raw.detach(), fresh_lw_raw.detach()
    num_evals += S
    # Chain states, for the active rows only: reference (z, log w, id) + shared fresh slots.
    rx = (gather_slot(z0, lx), gather_slot(lw0, lx), gather_slot(ids0, lx))
    scale = None
    if rejuvenate is not None:
        scale = check_rejuvenate(target, rejuvenate, B, D, lw0)
        move = mh_move(target, rx[0], rx[1], scale, generator)
        ids = store.add(move.proposals, rows, kept(move.log_weights_raw))
        rx = _accept(rx, move, ids, 0)
        num_evals += 1
    ry = (y_ref[:, 0], y_ref_lw[:, 0], store.add(y_ref, rows, kept(y_ref_lw_raw))[:, 0])
    fz, flw, fid = fresh, fresh_lw, store.add(fresh, rows, kept(fresh_lw_raw))
    tau = torch.zeros(B, dtype=torch.long, device=device)
    met = torch.zeros(B, dtype=torch.bool, device=device)  # τ ≤ t, for active rows
    active = rows
    tgt = restrict(target, rows, B) if hasattr(target, "select") else target

    t = 1
    while True:
        # Particle sets X_t = (rx, fresh) and Y_{t-1} = (ry, fresh), for the active rows.
        lwx = torch.cat([rx[1][:, None], flw], 1)
        lwy = torch.cat([ry[1][:, None], flw], 1)
        wx, wy = normalized_weights(lwx), normalized_weights(lwy)
        if t >= k:  # credit h(X_t) and h(Y_{t-1}); coefficients of shared fresh slots merge
            a, b = alpha_beta(t, ~met)
            store.credit(rx[2], a * wx[:, 0])
            store.credit(ry[2], b * wy[:, 0])
            store.credit(fid, a[:, None] * wx[:, 1:] + b[:, None] * wy[:, 1:])
        t += 1
        if t > max_steps:
            break
        # Coupled index selection for (X_t, Y_{t-1}) from (X_{t-1}, Y_{t-2}).
        ix, iy = coupled_indices(wx, wy, generator)
        iy = torch.where(met, ix, iy)  # met chains are identical: keep them so
        zx, zy = torch.cat([rx[0][:, None], fz], 1), torch.cat([ry[0][:, None], fz], 1)
        idx_x, idx_y = torch.cat([rx[2][:, None], fid], 1), torch.cat([ry[2][:, None], fid], 1)
        rx = (gather_slot(zx, ix), gather_slot(lwx, ix), gather_slot(idx_x, ix))
        ry = (gather_slot(zy, iy), gather_slot(lwy, iy), gather_slot(idx_y, iy))
        # Record meetings and drop rows that need no more work: after the selection, and
        # (with rejuvenation) again after the MH move, so no move is paid for a finished row.
        for phase in ("select", "move") if scale is not None else ("select",):
            if phase == "move":  # coupled MH move of both references
                subset = _subset(target, tgt, active, B)
                move = coupled_mh_move(
                    tgt, rx[0], rx[1], ry[0], ry[1], scale, generator, subset=subset
                )
                # One stored particle per evaluation: X's proposals, then Y's where different.
                lw_raw = move.log_weights_raw
                ids = store.add(move.proposals[:, :1], active, kept(lw_raw[:, :1])).repeat(1, 2)
                diff = (~move.same_proposal).nonzero().flatten()
                if diff.numel():
                    y_new = move.proposals[diff, 1:]
                    ids[diff, 1] = store.add(y_new, active[diff], kept(lw_raw[diff, 1:]))[:, 0]
                rx, ry = _accept(rx, move, ids, 0), _accept(ry, move, ids, 1)
                ry = tuple(torch.where(_col(met, v), a, v) for a, v in zip(rx, ry, strict=True))
                num_evals[active] += 1
                num_evals[active[diff]] += 1
            new_met = (rx[2] == ry[2]) & ~met
            tau[active[new_met]] = t
            met = met | new_met
            # Rows still needed: unmet, or met but h(X_t) still enters the average (t ≤ m).
            keep = ~met | (t <= m)
            if not bool(keep.any()):
                active = active[:0]
                break
            if not bool(keep.all()):
                local = keep.nonzero().flatten()
                active, met = active[local], met[local]
                rx = tuple(v[local] for v in rx)
                ry = tuple(v[local] for v in ry)
                scale = scale[local] if scale is not None else None
                if hasattr(target, "select"):
                    tgt = restrict(tgt, local, len(keep))
                else:
                    tgt = restrict(target, active, B)
        if not active.numel():
            break
        fz, flw_raw = fresh_draws(tgt, S - 1, generator)
        flw = flw_raw.detach()
        fid = store.add(fz, active, kept(flw_raw))
        num_evals[active] += S - 1

    unmet = active[~met] if active.numel() else active
    truncated = torch.zeros(B, dtype=torch.bool, device=device)
    if unmet.numel():
        if on_timeout == "raise":
            raise MeetingTimeoutError(
                f"{unmet.numel()} of {B} coupled chains had not met after max_steps={max_steps} "
                f"steps (S={S}, k={k}, m={m}). Stopping them would bias the estimate. Raise "
                "max_steps, use a better or defensive proposal, or pass on_timeout='truncate' "
                "to get a flagged, biased estimate."
            )
        truncated[unmet] = True
        tau[unmet] = max_steps + 1  # censored: τ > max_steps
    particles, coef, flat_rows = store.finish(dtype)
    return Estimate(
        flat_particles=particles,
        flat_coef=coef,
        rows=flat_rows,
        batch_size=B,
        num_samples=S,
        tau=tau,
        num_evals=num_evals,
        truncated=truncated,
        k=k,
        m=m,
        info={
            "initial_log_weights": lw0,
            "initial_ess": effective_sample_size(lw0),
            "flat_log_weights": torch.cat(store.log_weights) if keep_log_weights else None,
            "flat_has_graph": torch.cat(store.has_graph) if keep_log_weights else None,
        },
    )
