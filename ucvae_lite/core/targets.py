"""Targets: what the samplers need to know about a model, a batch of data and a proposal.

A *target* describes, for a batch of B data points x_1..x_B, the importance-sampling problem

    p(z | x_b) ∝ p(x_b, z),   proposal q(z | x_b),
    log w_b(z) = log p(x_b, z) - log q(z | x_b).

The public contract is two methods:

    sample(n, generator=None) -> Tensor      # [B, n, D], i.i.d. draws from q(z | x_b)
    log_weight(z) -> Tensor                  # [B, n, D] -> [B, n]

A target may also implement ``select(index) -> target`` (the same problem for the rows
``index`` of the batch). The coupled estimator uses it to stop spending work on chains that
have met; targets without it still work, at the cost of evaluating every row at every step.
The optional rejuvenation move also needs ``log_proposal(z) -> [B, n]`` (log q(z | x_b)).
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

import torch
from torch import Tensor


@runtime_checkable
class Target(Protocol):
    """The target contract: draws from the proposal and log importance weights."""

    def sample(self, n: int, generator: torch.Generator | None = None) -> Tensor: ...

    def log_weight(self, z: Tensor) -> Tensor: ...


class ImportanceTarget:
    """log w(z) = model.log_joint(x, z) - proposal.log_prob(z), batched over the rows of ``x``.

    ``model`` needs ``log_joint(x, z) -> [B, n]`` for x [B, ...] and z [B, n, D];
    ``proposal`` is a batched distribution from ``ucvae_lite.models.distributions`` (or anything
    with ``sample``, ``log_prob`` and ``select``).
    """

    def __init__(self, model, x: Tensor, proposal):
        if x.shape[0] != proposal.batch_size:
            raise ValueError(
                f"data has {x.shape[0]} rows but the proposal has batch size "
                f"{proposal.batch_size}; build the proposal from the same batch"
            )
        self.model, self.x, self.proposal = model, x, proposal
        self.batch_size, self.dim = proposal.batch_size, proposal.dim

    def sample(self, n: int, generator: torch.Generator | None = None) -> Tensor:
        return self.proposal.sample(n, generator)

    def log_weight(self, z: Tensor) -> Tensor:
        return self.model.log_joint(self.x, z) - self.proposal.log_prob(z)

    def log_joint(self, z: Tensor) -> Tensor:
        """log p(x_b, z) for each row b: the function whose gradient the estimators average."""
        return self.model.log_joint(self.x, z)

    def log_proposal(self, z: Tensor) -> Tensor:
        """log q(z | x_b) (used by the optional rejuvenation move, ``rejuvenation.py``)."""
        return self.proposal.log_prob(z)

    def select(self, index: Tensor) -> ImportanceTarget:
        """The same problem for rows ``index`` (a model with per-row parameters, such as a
        batched ``LinearGaussian``, is restricted by its own ``select``)."""
        model = self.model.select(index) if hasattr(self.model, "select") else self.model
        return ImportanceTarget(model, self.x[index], self.proposal.select(index))


class RowView:
    """Rows ``index`` of a target that has no ``select``: evaluates all rows, keeps some.

    Correct for any target honouring the contract, but saves no work. ``select`` composes.
    """

    def __init__(self, target: Target, index: Tensor, batch_size: int):
        self.target, self.index, self.full_batch = target, index, batch_size

    def sample(self, n: int, generator: torch.Generator | None = None) -> Tensor:
        return self.target.sample(n, generator)[self.index]

    def _full(self, z: Tensor) -> Tensor:
        full = z.new_zeros((self.full_batch, *z.shape[1:]))
        full[self.index] = z
        return full

    def log_weight(self, z: Tensor) -> Tensor:
        return self.target.log_weight(self._full(z))[self.index]

    def log_proposal(self, z: Tensor) -> Tensor:
        return self.target.log_proposal(self._full(z))[self.index]

    def select(self, index: Tensor) -> RowView:
        return RowView(self.target, self.index[index], self.full_batch)


def selectable(target: Target, batch_size: int, device: torch.device | str = "cpu") -> Target:
    """``target`` itself if it has ``select``, else a ``RowView`` of all its rows (which has).

    ``device``: where the target's tensors live (the row index is created there).
    """
    if hasattr(target, "select"):
        return target
    return RowView(target, torch.arange(batch_size, device=device), batch_size)
