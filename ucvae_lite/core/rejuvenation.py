"""An optional rejuvenation move for the reference: coupled random-walk Metropolis–Hastings.

When the importance weights are degenerate (one particle holds almost all the mass), a CIS
step keeps its reference and two coupled chains meet only when a fresh draw beats both
references: the 1/t tail of τ (notebook 06). A Metropolis–Hastings step on the reference,
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

``RandomWalkMH`` is a ``kernels.Move``: pass it to ``coupled_estimate(..., move=...)``.
"""

from __future__ import annotations

import torch
from torch import Tensor

from ucvae_lite.core.kernels import Particle, Store, weigh
from ucvae_lite.core.targets import Target


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


def log_target(target: Target, z: Tensor, log_w: Tensor) -> Tensor:
    """log p(x, z) = log w(z) + log q(z | x), for z [A, n, D] and its log-weights [A, n]."""
    return log_w + target.log_proposal(z).detach()


def _choose(mask: Tensor, a: Particle, b: Particle) -> Particle:
    """Row by row, ``a`` where ``mask`` [A] else ``b``."""
    ids = None if a.id is None or b.id is None else torch.where(mask, a.id, b.id)
    return Particle(
        torch.where(mask[:, None], a.z, b.z), torch.where(mask, a.log_weight, b.log_weight), ids
    )


class RandomWalkMH:
    """The MH rejuvenation move with proposal N(r, diag s²), coupled between two chains.

    ``scale`` s: a float, one scale per data point [B], or per data point and coordinate
    [B, D]. ``bind`` checks it against a batch and expands it to [B, D].
    """

    def __init__(self, scale: float | Tensor):
        self.scale = scale

    def bind(self, target: Target, batch_size: int, dim: int, like: Tensor) -> RandomWalkMH:
        """This move with its scale as a [B, D] tensor on ``like``'s device; clear errors when
        the scale or the target is unfit."""
        if not hasattr(target, "log_proposal"):
            raise ValueError(
                "the MH move needs the target's proposal density (a ``log_proposal(z)`` method, "
                "as ImportanceTarget has) to evaluate p(x, z) = w(z) q(z | x)"
            )
        s = torch.as_tensor(self.scale, dtype=like.dtype, device=like.device)
        if s.dim() == 1:
            s = s[:, None]
        try:
            s = s.expand(batch_size, dim).clone()
        except RuntimeError as err:
            raise ValueError(
                f"the MH move's scale must be a float, [B] or [B, D] = [{batch_size}, {dim}] "
                f"scales, got shape {tuple(s.shape)}"
            ) from err
        if not bool(torch.isfinite(s).all()) or not bool((s > 0).all()):
            raise ValueError("the MH move's scales must be finite and > 0")
        return type(self)(s)

    def select(self, index: Tensor) -> RandomWalkMH:
        return type(self)(self.scale[index])

    def single(
        self,
        target: Target,
        ref: Particle,
        store: Store | None = None,
        generator: torch.Generator | None = None,
    ) -> Particle:
        """One MH step of one chain's reference per row."""
        noise = torch.randn(
            ref.z.shape, generator=generator, dtype=ref.z.dtype, device=ref.z.device
        )
        prop = weigh(target, (ref.z + self.scale * noise)[:, None], store)
        log_ratio = (
            log_target(target, prop.particles, prop.log_weights)[:, 0]
            - log_target(target, ref.z[:, None], ref.log_weight[:, None])[:, 0]
        )
        u = torch.rand(
            ref.log_weight.shape, generator=generator, dtype=ref.z.dtype, device=ref.z.device
        )
        new = Particle(prop.particles[:, 0], prop.log_weights[:, 0], _first(prop.ids))
        return _choose(u.log() < log_ratio, new, ref)

    def coupled(
        self,
        target: Target,
        ref_x: Particle,
        ref_y: Particle,
        store: Store | None = None,
        generator: torch.Generator | None = None,
    ) -> tuple[Particle, Particle]:
        """One coupled MH step of both chains' references per row.

        Reflection–maximally coupled proposals and one shared acceptance uniform. A proposal
        the two chains share (always so once they have met) is evaluated once: Y's is
        evaluated only in the rows where it differs, through ``target.select``.
        """
        px, py = reflection_coupling(ref_x.z, ref_y.z, self.scale, generator)
        prop_x = weigh(target, px[:, None], store)
        lw_y, id_y = prop_x.log_weights[:, 0].clone(), _first(prop_x.ids)
        diff = (px != py).any(-1).nonzero().flatten()
        if diff.numel():
            sub = weigh(target.select(diff), py[diff][:, None], store, rows=diff)
            lw_y[diff] = sub.log_weights[:, 0]
            if id_y is not None:
                id_y = id_y.clone()
                id_y[diff] = sub.ids[:, 0]
        new_x = Particle(px, prop_x.log_weights[:, 0], _first(prop_x.ids))
        new_y = Particle(py, lw_y, id_y)
        cur = torch.stack([ref_x.z, ref_y.z], 1)
        log_ratio = log_target(
            target, torch.stack([px, py], 1), torch.stack([new_x.log_weight, lw_y], 1)
        )
        log_ratio = log_ratio - log_target(
            target, cur, torch.stack([ref_x.log_weight, ref_y.log_weight], 1)
        )
        u = torch.rand(px.shape[:1], generator=generator, dtype=px.dtype, device=px.device)
        accept = u.log()[:, None] < log_ratio
        out_x, out_y = _choose(accept[:, 0], new_x, ref_x), _choose(accept[:, 1], new_y, ref_y)
        if ref_x.id is not None and ref_y.id is not None:  # met chains stay met, exactly
            out_y = _choose(ref_x.id == ref_y.id, out_x, out_y)
        return out_x, out_y


def _first(ids: Tensor | None) -> Tensor | None:
    return None if ids is None else ids[:, 0]
