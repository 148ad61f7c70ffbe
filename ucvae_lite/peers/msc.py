"""Markovian score climbing (MSC; Naesseth, Lindsten & Blei 2020): one persistent CIS chain
per training example, advanced one step at every visit. BIASED, but consistent.

Notebook 02's single CIS chain, used for learning: each training example i keeps a reference
latent r_i between visits. On a visit, with the current θ and φ,

    X = (r_i, z_2..z_S),   z_j ~ q_φ(· | x_i) fresh       (the reference's weight re-evaluated)
    θ-gradient:  h(X) = Σ_j w̄_j(X) ∇_θ log p_θ(x_i, z_j)
    r_i ← z_ℓ,   ℓ ~ Categorical(w̄(X))                   (one CIS step: ``kernels``)

On the first visit r_i is itself a q-draw, so X ~ q^S and h(X) is IWAE's gradient. A visit
costs S log-weight evaluations, as IWAE-S. At fixed θ the reference's law tends to the
posterior as the chain ages, so the gradient's bias shrinks with the number of visits; but
it is never exactly zero, and θ moves between visits (the chain targets a moving posterior).
The coupled estimator removes exactly this bias by running two such chains to their meeting
at every step. ``benchmarks/gradient_error.py`` measures MSC's bias against chain age.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from ucvae_lite.core import kernels
from ucvae_lite.core.kernels import CISState


@dataclass
class MSCMemory:
    """The persistent chains: a reference latent per training example and how often it moved.

    ``reference`` [N, D], ``visits`` [N] (0: never visited; its reference is not used),
    ``dataset`` names the data the indices refer to (checked when a run resumes).
    """

    reference: Tensor
    visits: Tensor
    dataset: str

    @classmethod
    def empty(cls, num_examples: int, latent_dim: int, dataset: str, device=None) -> MSCMemory:
        return cls(
            torch.zeros(num_examples, latent_dim, device=device),
            torch.zeros(num_examples, dtype=torch.long, device=device),
            dataset,
        )

    def state_dict(self) -> dict:
        """Tensors and plain values only (a checkpoint loads with weights_only=True)."""
        return {
            "reference": self.reference.cpu(),
            "visits": self.visits.cpu(),
            "dataset": self.dataset,
        }

    def load_state_dict(self, state: dict) -> None:
        """Continue from ``state_dict()``; a ValueError if it belongs to other data."""
        saved = (state["dataset"], tuple(state["reference"].shape))
        mine = (self.dataset, tuple(self.reference.shape))
        if saved != mine:
            raise ValueError(
                f"the checkpoint's MSC chains belong to dataset {saved[0]!r} with "
                f"{saved[1][0]} training examples of latent size {saved[1][1]}, but this run has "
                f"{mine[0]!r} with {mine[1][0]} examples of latent size {mine[1][1]}: resume "
                "with the same --dataset, subset and --latent-dim, or start a fresh run "
                "(another --out, without --resume)"
            )
        self.reference.copy_(state["reference"])
        self.visits.copy_(state["visits"])


def particle_sets(memory: MSCMemory, index: Tensor, fresh: Tensor) -> Tensor:
    """X's particles for the training examples ``index`` [B]: [B, S, D].

    ``fresh`` [B, S, D] are proposal draws. Slots 1..S−1 of X are fresh; slot 0 holds the
    stored reference, or, on a first visit, the fresh draw ``fresh[:, 0]`` (then X ~ q^S).
    """
    seen = (memory.visits[index] > 0)[:, None]
    z = fresh.detach().clone()
    z[:, 0] = torch.where(seen, memory.reference[index].to(z.dtype), z[:, 0])
    return z


def advance(
    memory: MSCMemory, index: Tensor, state: CISState, generator: torch.Generator | None = None
) -> None:
    """The CIS selection from X = ``state`` (log-weights under the current θ, φ): each
    example's new reference z_ℓ, ℓ ~ Categorical(w̄(X)), is stored (``kernels``)."""
    new = kernels.select_reference(state, generator)
    memory.reference[index] = new.z.to(memory.reference.dtype)
    memory.visits[index] += 1
