"""From an estimate of posterior expectations to an unbiased log-likelihood gradient.

Fisher's identity: ∇_θ log p_θ(x) = E_{p_θ(z|x)}[∇_θ log p_θ(x, z)]. An estimate
Σ_n c_n f(z_n) of E_p[f] that is unbiased for every f (``coupled_estimate``) is, with
f = ∇_θ log p_θ(x, ·), an unbiased gradient estimate. Holding the particles z_n and the
coefficients c_n fixed (detached), the scalar

    L(θ) = Σ_b Σ_n c_{b,n} log p_θ(x_b, z_{b,n})

has ∇_θ L = Σ_b Σ_n c_{b,n} ∇_θ log p_θ(x_b, z_{b,n}): exactly that estimate, in one backward
pass. The chains themselves need no gradients. Its *value* is not log p(x): only its gradient
means something. With an ``iwae_estimate`` (c = w̄) the same L gives IWAE's decoder gradient,
which is biased.

This is the package's one gradient surrogate: the training objective (``objectives.ucvae``),
the notebooks (``teaching.per_replicate_gradients``) and the variance study
(``per_row_gradients``) all go through it.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor, nn
from torch.func import functional_call, grad, vmap

from ucvae_lite.core.estimate import Estimate
from ucvae_lite.core.machinery import padded_groups

LogJoint = Callable[[Tensor, Tensor], Tensor]
"""(rows [M], z [M, D]) -> log p_θ(x_{rows_i}, z_i) [M]: the model's log joint, particle by
particle; ``rows`` says which data point of the batch each particle belongs to."""


def particle_log_joint(model, x: Tensor) -> LogJoint:
    """The ``LogJoint`` of a model with ``log_joint(x [B, P], z [B, n, D]) -> [B, n]`` on data x.

    A model with one set of parameters per data point (a batched ``LinearGaussian``,
    ``landscape.RowCopies``) has ``select(rows)``: each particle then uses its row's own θ."""

    def log_joint(rows: Tensor, z: Tensor) -> Tensor:
        own = model.select(rows) if hasattr(model, "select") else model
        return own.log_joint(x[rows], z[:, None, :])[:, 0]

    return log_joint


def log_likelihood_surrogate(
    estimate: Estimate,
    log_joint: LogJoint,
    reduction: str = "sum",
    *,
    reuse_log_weights: bool = False,
) -> Tensor:
    """L(θ) = Σ_b Σ_n c_{b,n} log p_θ(x_b, z_{b,n}): its θ-gradient estimates ∇_θ Σ_b log p_θ(x_b).

    ``reduction``: "sum" over data points, "mean", or "none" ([B], one term per data point).
    Only particles with c_n ≠ 0 are evaluated, as one flat batch (``log_joint(rows, z)``).

    ``reuse_log_weights=True`` (performance, for training): where the estimate kept a
    log-weight with its autograd graph (``coupled_estimate(..., keep_log_weights=True)``), use
    it instead of evaluating log p_θ again. log w = log p_θ(x, z) − log q(z | x) with q held
    fixed has the same θ-gradient; the value then differs by Σ c log q, a constant in θ.
    """
    if reduction not in ("sum", "mean", "none"):
        raise ValueError(f"reduction must be 'sum', 'mean' or 'none', got {reduction!r}")
    coef, rows = estimate.flat_coef.detach(), estimate.rows
    todo = coef != 0
    reused = torch.zeros_like(todo)
    if reuse_log_weights:
        if estimate.flat_log_weights is None:
            raise ValueError("reuse_log_weights needs coupled_estimate(..., keep_log_weights=True)")
        reused = todo & estimate.flat_has_graph
        todo = todo & ~estimate.flat_has_graph
    per_point = torch.zeros(estimate.batch_size, dtype=coef.dtype, device=coef.device)
    index = todo.nonzero().flatten()
    if index.numel():
        values = log_joint(rows[index], estimate.flat_particles[index].detach())
        if values.shape != index.shape:
            raise ValueError(
                f"log_joint must map {index.numel()} particles to {index.numel()} values, "
                f"got shape {tuple(values.shape)}"
            )
        per_point = per_point.to(values.dtype).index_add(0, rows[index], coef[index] * values)
    if reuse_log_weights:
        lw = estimate.flat_log_weights[reused]
        per_point = per_point.index_add(0, rows[reused], coef[reused] * lw)
    if reduction == "none":
        return per_point
    return per_point.sum() if reduction == "sum" else per_point.mean()


def per_row_gradients(
    model: nn.Module,
    x: Tensor,
    estimate: Estimate,
    params: dict[str, Tensor] | None = None,
    budget: int = 1 << 15,
    piece: int = 1 << 12,
) -> Tensor:
    """∇_θ of the surrogate's term for each data point, g_b = Σ_{n ∈ b} c_n ∇_θ log p_θ(x_b, z_n).

    ``model(x [B, P], z [B, n, D]) -> [B, n]`` must be its log joint (``VAE.forward`` is);
    ``params`` (default: the decoder's, as named in ``model``) are the θ differentiated.
    Returns [B, |θ|]. Each data point's gradient is the gradient of its own surrogate term,
    computed for all data points at once with ``torch.func.vmap(grad(...))`` over padded groups
    of particles (``machinery.padded_groups``: memory stays bounded however long a chain ran).
    """
    if params is None:
        params = {f"decoder.{k}": v for k, v in model.decoder.named_parameters()}
    params = {k: v.detach() for k, v in params.items()}

    def one_point(p: dict[str, Tensor], xb: Tensor, z: Tensor, c: Tensor) -> Tensor:
        # The surrogate term of one data point: Σ_n c_n log p_θ(x_b, z_n).
        return (c * functional_call(model, p, (xb[None], z[None]))[0]).sum()

    per_point = vmap(grad(one_point), in_dims=(None, 0, 0, 0))
    size = sum(v.numel() for v in params.values())
    out = torch.zeros(estimate.batch_size, size, dtype=x.dtype, device=x.device)
    coef = estimate.flat_coef.detach()
    for owner, z, c in padded_groups(estimate.flat_particles.detach(), coef, estimate.rows,
                                     budget, piece):  # fmt: skip
        g = per_point(params, x[owner], z, c.to(x.dtype))
        flat = torch.cat([t.reshape(len(owner), -1) for t in g.values()], 1)
        out.index_add_(0, owner, flat.to(out.dtype))
    return out
