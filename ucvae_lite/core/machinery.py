"""Performance machinery of the coupled estimator. Not part of the method.

Nothing here changes what is estimated; it only makes an unbiased step cost the log-weight
evaluations its chains need and little else. The pieces, each labelled below:

* only stepping the pairs still needed (``Running``, ``take``): a chain pair that has met and
  is past step m adds nothing more to H_{k:m}, so it leaves the batch (the driver asks the
  coupled kernel for that with ``stop_met``): the batch costs the sum of its meeting times, not
  batch size × the slowest chain;
* storing (``ParticleStore``): every evaluated particle is stored once and named by an id (its
  position in the store). The estimator credits coefficients to ids; a particle that enters
  several terms of H_{k:m} (a fresh slot shared by X_t and Y_{t−1}, a reference kept for many
  steps) gets one merged coefficient. Number of stored particles = number of log-weight
  evaluations;
* graphs (``GraphWhereWorthIt``): which evaluations keep θ's autograd graph, so that the
  gradient surrogate can reuse them instead of evaluating the decoder a second time;
* one decoder pass (``log_joint_for_theta_and_z``), whose output θ and the encoder (through a
  reparameterised z) read with different weights, so that a particle both need is decoded once;
* padding (``padded_groups``): particles of very different counts per data point laid out as a
  few padded blocks, for per-data-point gradients (``surrogate.per_row_gradients``).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, NamedTuple

import torch
from torch import Tensor
from torch.func import functional_call

from ucvae_lite.core.targets import Target

# --- only stepping the pairs still needed ----------------------------------------------------


class Running(NamedTuple):
    """The chain pairs still being stepped, and everything indexed by them.

    ``rows`` [A]: which pairs these are (data points for the driver, positions in the batch for
    a kernel); ``target``, ``store`` (a ``kernels.Store``) and the optional ``move`` (a
    ``kernels.Move``), each restricted to those rows.
    """

    rows: Tensor
    target: Target
    store: Any
    move: Any | None = None

    def select(self, index: Tensor) -> Running:
        """The pairs ``index`` [A'] (distinct positions in ``rows``, in order, e.g. from
        ``nonzero``): ``self`` when that is all of them; nothing is restricted when it is none
        of them (nothing is left to evaluate)."""
        if index.numel() == self.rows.numel():
            return self
        if not index.numel():
            return self._replace(rows=self.rows[:0])
        move = self.move.select(index) if self.move is not None else None
        return Running(self.rows[index], self.target.select(index), self.store.select(index), move)


def take(state: Any, index: Tensor) -> Any:
    """Rows ``index`` of a tensor or of a NamedTuple of them (``kernels.Particle``,
    ``CISState``, ``CoupledState``), nested; None stays None."""
    if state is None or isinstance(state, Tensor):
        return None if state is None else state[index]
    return type(state)(*(take(v, index) for v in state))


# --- storing ----------------------------------------------------------------------------------


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


# --- graphs ---------------------------------------------------------------------------------

# Which chain evaluations keep θ's autograd graph. Keeping it lets the surrogate reuse the
# evaluation (each particle decoded once) but gives the backward pass one more call of its
# own, and autograd's bookkeeping on every small tensor operation of it; dropping it costs a
# second forward pass over its particles, all such particles together in one batched call. A
# graph is kept when the forward work it saves, particles × (multiply-adds per particle, about
# the decoder's parameter count), reaches GRAPH_MIN_WORK: on the digits decoder (8,704
# parameters) 115 particles, so the first m steps (every pair runs until t = m) keep their
# graphs and the tail's tiny evaluations are decoded again; on the MNIST decoder (207,984) all
# but the smallest keep theirs. Measured on 2 CPU cores with the same random numbers for every
# rule (benchmarks/step_cost.py --graph-rule, docs/performance.md): on digits the rules that
# keep the first steps' graphs tie within noise (3.3-3.4x IWAE's step) and keeping none is
# slower (3.55x, at 1.6x the decoder evaluations); on MNIST two runs disagreed on the order of
# the rules that keep graphs, and keeping none was the slowest in the paired run (7.2x against
# 6.9x). The rule keeps the decoder work at its minimum.
GRAPH_MIN_WORK = 1_000_000


class GraphWhereWorthIt:
    """A target whose log-weights carry autograd graphs only for evaluations whose decoder
    work, particles × ``work_per_particle``, reaches ``min_work`` (``None``:
    ``GRAPH_MIN_WORK``, read at call time); smaller ones run under ``torch.no_grad()``."""

    def __init__(self, target: Target, work_per_particle: int, min_work: float | None = None):
        self.target, self.work_per_particle, self.min_work = target, work_per_particle, min_work

    def sample(self, n: int, generator: torch.Generator | None = None) -> Tensor:
        return self.target.sample(n, generator)

    def log_weight(self, z: Tensor) -> Tensor:
        threshold = GRAPH_MIN_WORK if self.min_work is None else self.min_work
        if z.shape[0] * z.shape[1] * self.work_per_particle >= threshold:
            return self.target.log_weight(z)
        with torch.no_grad():
            return self.target.log_weight(z)

    def log_proposal(self, z: Tensor) -> Tensor:
        return self.target.log_proposal(z)

    def select(self, index: Tensor) -> GraphWhereWorthIt:
        return GraphWhereWorthIt(self.target.select(index), self.work_per_particle, self.min_work)


def decoder_work(model) -> int:
    """Multiply-adds per particle through ``model.decoder``: about its parameter count."""
    return sum(p.numel() for p in model.decoder.parameters())


# --- padding --------------------------------------------------------------------------------


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


# --- one decoder pass, two gradients ------------------------------------------------------


class _TwoViews(torch.autograd.Function):
    """f(z, θ) evaluated once, returned twice: gradients reaching the first copy go to θ only,
    those reaching the second go to z only. Backward runs one vector-Jacobian product per
    copy on the same forward graph (θ's needs no gradient with respect to z, z's none with
    respect to θ), so nothing is evaluated twice."""

    @staticmethod
    def forward(ctx, fn, z, *params):
        with torch.enable_grad():
            z_in = z.detach().requires_grad_(z.requires_grad)
            p_in = [p.detach().requires_grad_(p.requires_grad) for p in params]
            out = fn(z_in, p_in)
        ctx.graph = (out, z_in, p_in)
        ctx.set_materialize_grads(False)
        return out.detach(), out.detach().clone()

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_theta, grad_z):
        out, z_in, p_in = ctx.graph
        wanted = [p for p in p_in if p.requires_grad]
        grads = {}
        if grad_theta is not None and wanted:
            found = torch.autograd.grad(out, wanted, grad_theta, retain_graph=True)
            grads = {id(p): g for p, g in zip(wanted, found, strict=True)}
        dz = None
        if grad_z is not None and z_in.requires_grad:
            (dz,) = torch.autograd.grad(out, z_in, grad_z, retain_graph=True)
        return (None, dz, *(grads.get(id(p)) for p in p_in))


def log_joint_for_theta_and_z(model, x: Tensor, z: Tensor) -> tuple[Tensor, Tensor]:
    """log p_θ(x_b, z) [B, n] from ONE decoder pass, as two tensors of equal value:

    * the first differentiates to θ only (z held fixed): ``model.log_joint(x, z.detach())``;
    * the second to z only (θ held fixed): ``model.log_joint(x, z, detach_decoder=True)``.

    An objective whose θ-term and φ-term (through a reparameterised z) need the same
    particles, weighted differently (ucvae's X_0: H's coefficients for θ, IWAE's weights for
    φ; SUMO: −SUMO for θ, SUMO² for φ), pays for one decoder pass instead of two. θ is
    ``model.decoder``'s parameters; ``model(x, z)`` must be the log joint (``VAE.forward``).
    """
    names, params = zip(*model.decoder.named_parameters(), strict=True)

    def log_joint(z_in: Tensor, p_in: list[Tensor]) -> Tensor:
        decoder = {f"decoder.{n}": p for n, p in zip(names, p_in, strict=True)}
        return functional_call(model, decoder, (x, z_in))

    return _TwoViews.apply(log_joint, z, *params)
