"""Performance machinery of the coupled estimator. Not part of the method.

Nothing here changes what is estimated; it only makes an unbiased step cost the log-weight
evaluations its chains need and little else. Three pieces:

* ``ParticleStore``: every evaluated particle is stored once and named by an id (its position
  in the store). The estimator credits coefficients to ids; a particle that enters several
  terms of H_{k:m} (a fresh slot shared by X_t and Y_{t−1}, a reference kept for many steps)
  gets one merged coefficient. Number of stored particles = number of log-weight evaluations.
* ``still_needed``: which chains must keep running. A chain pair that has met and is past step
  m adds nothing more to H_{k:m}, so it leaves the batch: the batch costs the sum of its
  meeting times, not batch size × the slowest chain.
* ``GraphForLargeBatches``: which evaluations keep θ's autograd graph, so that the gradient
  surrogate can reuse them instead of evaluating the decoder a second time.

And ``padded_groups``, which lays out particles of very different counts per data point as a
few padded blocks, for per-data-point gradients (``surrogate.per_row_gradients``).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import NamedTuple

import torch
from torch import Tensor

from .targets import Target


def still_needed(met: Tensor, t: int, m: int) -> Tensor:
    """[A] rows whose chains must go on after selecting X_t: not met yet, or t ≤ m (h(X_t)
    still enters the average of H_{k:m})."""
    return ~met | (t <= m)


class StoredParticles(NamedTuple):
    """What a ``ParticleStore`` holds at the end, flat over all data points (M particles)."""

    particles: Tensor  # [M, D]
    coef: Tensor  # [M] merged coefficients
    rows: Tensor  # [M] the data point of each particle
    num_evals: Tensor  # [B] log-weight evaluations per data point
    log_weights: Tensor | None  # [M] as the target returned them (autograd graph included)
    has_graph: Tensor | None  # [M] bool: that log-weight carries an autograd graph


class ParticleStore:
    """Append-only storage of evaluated particles; ids are positions in it.

    ``keep_log_weights=True`` also keeps every log-weight exactly as the target returned it
    (with its autograd graph, if any), aligned with the particles.
    """

    def __init__(self, keep_log_weights: bool = False):
        self.keep_log_weights = keep_log_weights
        self.size = 0
        self._z: list[Tensor] = []
        self._rows: list[Tensor] = []
        self._log_w: list[Tensor] = []
        self._graph: list[Tensor] = []
        self._coef_ids: list[Tensor] = []
        self._coef_vals: list[Tensor] = []

    def add(self, z: Tensor, log_weight: Tensor, rows: Tensor) -> Tensor:
        """Store z [A, n, D] of the data points ``rows`` [A] (global indices); ids [A, n]."""
        A, n, D = z.shape
        ids = torch.arange(self.size, self.size + A * n, device=z.device).view(A, n)
        self._z.append(z.detach().reshape(A * n, D))
        self._rows.append(rows.repeat_interleave(n))
        if self.keep_log_weights:
            self._log_w.append(log_weight.reshape(A * n))
            graph = torch.full((A * n,), log_weight.requires_grad, device=z.device)
            self._graph.append(graph)
        self.size += A * n
        return ids

    def rows(self, rows: Tensor) -> StoreRows:
        """The store seen by a batch whose row i is data point ``rows[i]`` (the ``Store`` protocol
        of ``kernels``)."""
        return StoreRows(self, rows)

    def credit(self, ids: Tensor, values: Tensor) -> None:
        """Add ``values`` to the coefficients of the particles ``ids`` (same shapes)."""
        self._coef_ids.append(ids.reshape(-1))
        self._coef_vals.append(values.reshape(-1))

    def finish(self, batch_size: int, dtype: torch.dtype) -> StoredParticles:
        """Everything stored, with the credited coefficients merged per particle."""
        particles, rows = torch.cat(self._z), torch.cat(self._rows)
        coef = torch.zeros(self.size, dtype=dtype, device=particles.device)
        if self._coef_ids:
            values = torch.cat(self._coef_vals).to(dtype)
            coef.index_add_(0, torch.cat(self._coef_ids), values)
        keep = self.keep_log_weights
        return StoredParticles(
            particles,
            coef,
            rows,
            torch.bincount(rows, minlength=batch_size),
            torch.cat(self._log_w) if keep else None,
            torch.cat(self._graph) if keep else None,
        )


class StoreRows:
    """A ``ParticleStore`` seen by the current batch: local row i is data point ``rows[i]``."""

    def __init__(self, store: ParticleStore, rows: Tensor):
        self.store, self.global_rows = store, rows

    def add(self, z: Tensor, log_weight: Tensor, rows: Tensor | None = None) -> Tensor:
        owners = self.global_rows if rows is None else self.global_rows[rows]
        return self.store.add(z, log_weight, owners)

    def select(self, index: Tensor) -> StoreRows:
        return StoreRows(self.store, self.global_rows[index])


# Chain evaluations of at least this many particles keep θ's autograd graph, so the surrogate
# reuses them; smaller ones (the chains' tail) run without autograd and are evaluated again in
# one batched call. Measured in benchmarks/step_cost.py: keeping every graph makes the backward
# pass a long series of tiny calls; keeping none costs a second forward pass over everything.
GRAPH_MIN_PARTICLES = 1000


class GraphForLargeBatches:
    """A target whose log-weights carry autograd graphs only for evaluations of at least
    ``min_particles`` particles (``None``: ``GRAPH_MIN_PARTICLES``, read at call time)."""

    def __init__(self, target: Target, min_particles: int | None = None):
        self.target, self.min_particles = target, min_particles

    def sample(self, n: int, generator: torch.Generator | None = None) -> Tensor:
        return self.target.sample(n, generator)

    def log_weight(self, z: Tensor) -> Tensor:
        threshold = GRAPH_MIN_PARTICLES if self.min_particles is None else self.min_particles
        if z.shape[0] * z.shape[1] >= threshold:
            return self.target.log_weight(z)
        with torch.no_grad():
            return self.target.log_weight(z)

    def log_proposal(self, z: Tensor) -> Tensor:
        return self.target.log_proposal(z)

    def select(self, index: Tensor) -> GraphForLargeBatches:
        return GraphForLargeBatches(self.target.select(index), self.min_particles)


def padded_groups(
    particles: Tensor, coef: Tensor, rows: Tensor, budget: int = 1 << 15, piece: int = 1 << 12
) -> Iterator[tuple[Tensor, Tensor, Tensor]]:
    """The particles with c ≠ 0 as padded blocks, for computations vectorised over data points.

    Each data point's particles are cut into pieces of at most ``piece`` (a sum over particles
    is a sum over pieces); pieces of similar length are grouped, at most ``budget`` padded
    particles per group, so memory stays bounded however long a chain ran. Yields
    (owner [G], z [G, n, D], c [G, n]): the data point of each piece, its particles and their
    coefficients, zero-padded (padding has c = 0 and z = 0).
    """
    keep = coef != 0
    zf, cf, rows = particles[keep], coef[keep], rows[keep]
    if not rows.numel():
        return
    device = rows.device
    order = torch.argsort(rows, stable=True)
    zf, cf, rows = zf[order], cf[order], rows[order]
    counts = torch.bincount(rows)
    start = torch.cumsum(counts, 0) - counts
    pos = torch.arange(len(rows), device=device) - start[rows]
    # Pieces: (data point, piece number) pairs, each with at most `piece` particles.
    max_pieces = int((counts.max().item() + piece - 1) // piece)
    pieces, piece_of = torch.unique(rows * max_pieces + pos // piece, return_inverse=True)
    owner = pieces // max_pieces
    sizes = torch.bincount(piece_of, minlength=len(pieces))
    slot = torch.arange(len(rows), device=device) - (torch.cumsum(sizes, 0) - sizes)[piece_of]
    groups, current = [], []
    for p in torch.argsort(sizes).tolist():  # ascending: the newest member is the longest
        if current and (len(current) + 1) * int(sizes[p]) > budget:
            groups.append(current)
            current = []
        current.append(p)
    groups.append(current)
    for members in groups:
        group = torch.tensor(members, device=device)
        n = int(sizes[group].max())
        local = torch.full((len(pieces),), -1, dtype=torch.long, device=device)
        local[group] = torch.arange(len(group), device=device)
        mine = local[piece_of] >= 0
        z = zf.new_zeros(len(group), n, zf.shape[-1])
        c = cf.new_zeros(len(group), n)
        z[local[piece_of[mine]], slot[mine]] = zf[mine]
        c[local[piece_of[mine]], slot[mine]] = cf[mine]
        yield owner[group], z, c
