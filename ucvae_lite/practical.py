"""When is the unbiased gradient practical? Measurements behind notebook 06 and the study.

Three questions, one function each, on a VAE and a few data points:

* ``weight_diagnostics``: are the importance weights degenerate at the S in use? Within-set
  ESS/S (1 = equal weights, 1/S = one particle takes all) and PSIS k̂ of ``num_khat`` draws
  (``diagnostics.psis_khat``: > 0.7 means heavy-tailed weights).
* ``gradient_variance``: for one image replicated R times, the total variance over decoder
  parameters θ of one decoder-gradient sample, its cost in log-weight evaluations, and the
  meeting times, for ucvae (H_{k:m}) or IWAE. Lower variance × cost is better: it is the
  variance per unit of compute, i.e. after averaging as many estimates as one budget buys.
* ``degenerate_regime``: the one rule (``train.py`` uses it to warn or refuse) for the degenerate
  regime, where one particle takes nearly all the weight and τ has a 1/t tail whatever S is.

The per-replicate gradient of an ``Estimate`` is g_b = Σ_{n ∈ b} c_n ∇_θ log p_θ(x_b | z_n):
the θ-gradient of the ucvae surrogate (coefficients of H_{k:m}) or of the IWAE bound
(coefficients w̄: IWAE's decoder gradient is exactly Σ_s w̄_s ∇_θ log p_θ(x | z_s)).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor
from torch.func import functional_call, grad, vmap

from .diagnostics import psis_khat, tau_summary
from .estimate import Estimate
from .estimator import coupled_estimate
from .iwae import effective_sample_size, iwae_estimate
from .vae import VAE

# The degenerate regime: median within-set ESS below this many particles (1 = one particle
# takes all the weight, the limit in which P(τ > t) → (S+1)/(S+1+(S−1)(t−1))).
DEGENERATE_ESS = 1.5
DEGENERATE_KHAT = 0.7  # median PSIS k̂ above this: heavy-tailed weights (Vehtari et al.)


@torch.no_grad()
def weight_diagnostics(
    model: VAE,
    x: Tensor,
    num_samples: int,
    eps: float = 0.0,
    num_sets: int = 50,
    num_khat: int = 1000,
    generator: torch.Generator | None = None,
) -> dict:
    """Importance-weight diagnostics of q_φ for the images x [B, P], per image.

    Returns tensors [B]: ``ess`` (mean within-set ESS in particles, over ``num_sets`` sets of
    S = ``num_samples``), ``ess_frac`` (= ess / S), ``khat`` (PSIS k̂ of ``num_khat`` draws;
    skipped when 0), and the floats ``median_ess``, ``median_ess_frac``, ``median_khat``.
    """
    target = model.target(x, eps)
    lw = target.log_weight(target.sample(num_sets * num_samples, generator))
    ess = effective_sample_size(lw.view(len(x), num_sets, num_samples)).mean(-1)
    out = {"ess": ess, "ess_frac": ess / num_samples}
    out["median_ess"] = ess.median().item()
    out["median_ess_frac"] = out["median_ess"] / num_samples
    if num_khat:
        big = target.log_weight(target.sample(num_khat, generator))
        out["khat"] = psis_khat(big).float()
        out["median_khat"] = out["khat"].median().item()
    return out


def degenerate_regime(
    median_ess: float,
    num_samples: int,
    median_khat: float | None = None,
    min_ess: float = DEGENERATE_ESS,
) -> str | None:
    """A message when the diagnostics put the estimator in the degenerate regime, else None.

    Degenerate: the median within-set ESS (Σ_s w_s)² / Σ_s w_s² of sets of S = ``num_samples``
    is below ``min_ess`` particles (ESS/S near 1/S: one particle takes nearly all the weight),
    or the median PSIS k̂ is above ``DEGENERATE_KHAT`` (heavy-tailed weights: sets of S are
    degenerate often enough to put τ on a near-1/t tail). Then CIS selection is mostly an
    argmax (in the limit, P(τ > t) = (S+1)/(S+1+(S−1)(t−1))) and the unbiased gradient's
    variance per unit of compute is tens to hundreds of times IWAE's (notebook 06;
    on MNIST with d = 10, ESS 2.0 of 10 and k̂ 0.87 already gave 50× on the median image in
    the README's variance study).
    """
    ess_bad = median_ess < min_ess
    khat_bad = median_khat is not None and median_khat > DEGENERATE_KHAT
    if not (ess_bad or khat_bad):
        return None
    khat = ""
    if median_khat is not None:
        khat = f", median PSIS k̂ {median_khat:.2f} (above {DEGENERATE_KHAT} is heavy-tailed)"
    return (
        f"importance weights are degenerate: median within-set ESS {median_ess:.2f} of S = "
        f"{num_samples} particles (ESS/S {median_ess / num_samples:.3f}; below {min_ess:g} "
        f"particles is degenerate){khat}. In this regime the meeting time has a near-1/t tail "
        "and the unbiased gradient is tens to hundreds of times noisier than IWAE's per unit "
        "of compute (notebook 06): use a smaller latent, a better encoder, or larger S"
    )


def per_row_decoder_gradients(
    model: VAE, x: Tensor, est: Estimate, budget: int = 1 << 15, piece: int = 1 << 12
) -> Tensor:
    """g_b = ∇_θ Σ_{n ∈ row b} c_n log p_θ(x_b | z_n) for every row b of x [B, P] -> [B, |θ|].

    Only particles with c_n ≠ 0 are evaluated. The sum is linear, so each row's particles are cut
    into pieces of at most ``piece``; pieces are grouped by size, padded within a group of at
    most ``budget`` padded particles (memory stays bounded however long a chain ran),
    differentiated with ``torch.func.vmap(grad(...))`` and summed back per row.
    """
    params = {k: v.detach() for k, v in model.decoder.named_parameters()}

    def surrogate(p, xb, z, c):
        logits = functional_call(model.decoder, p, (z,))
        ll = (xb * logits - torch.nn.functional.softplus(logits)).sum(-1)
        return (c * ll).sum()

    per_row = vmap(grad(surrogate), in_dims=(None, 0, 0, 0))
    B = est.batch_size
    keep = est.flat_coef != 0
    zf, cf, rows = est.flat_particles.detach()[keep], est.flat_coef.detach()[keep], est.rows[keep]
    order = torch.argsort(rows, stable=True)
    zf, cf, rows = zf[order], cf[order], rows[order]
    counts = torch.bincount(rows, minlength=B)
    start = torch.cumsum(counts, 0) - counts
    pos = torch.arange(len(rows)) - start[rows]
    # Virtual rows: (row, piece) pairs, each with at most `piece` particles.
    max_pieces = int((counts.max().item() + piece - 1) // piece) if len(rows) else 1
    vid_raw = rows * max_pieces + pos // piece
    vids, vid = torch.unique(vid_raw, return_inverse=True)
    owner = vids // max_pieces
    vcounts = torch.bincount(vid, minlength=len(vids))
    vstart = torch.cumsum(vcounts, 0) - vcounts
    vpos = torch.arange(len(rows)) - vstart[vid]
    out = torch.zeros(B, sum(v.numel() for v in params.values()), dtype=x.dtype)
    groups, current = [], []
    for v in torch.argsort(vcounts).tolist():  # ascending: the newest member is the longest
        if current and (len(current) + 1) * int(vcounts[v]) > budget:
            groups.append(current)
            current = []
        current.append(v)
    if current:
        groups.append(current)
    for members in groups:
        group = torch.tensor(members)
        n = int(vcounts[group].max())
        local = torch.full((len(vids),), -1, dtype=torch.long)
        local[group] = torch.arange(len(group))
        sel = local[vid] >= 0
        z = zf.new_zeros(len(group), n, zf.shape[-1])
        c = cf.new_zeros(len(group), n)
        z[local[vid[sel]], vpos[sel]] = zf[sel]
        c[local[vid[sel]], vpos[sel]] = cf[sel].to(c.dtype)
        g = per_row(params, x[owner[group]], z, c)
        flat = torch.cat([t.reshape(len(group), -1) for t in g.values()], 1)
        out.index_add_(0, owner[group], flat.to(out.dtype))
    return out


@dataclass
class GradientVariance:
    """One image, R replicate gradient estimates: total variance over θ and cost."""

    variance: float  # Σ_θ Var(g_θ): total variance of one gradient sample
    cost: float  # mean log-weight evaluations per sample
    tau: Tensor  # [R] meeting times (0 for IWAE)
    mean: Tensor  # [|θ|] mean gradient over the replicates
    ess_frac: float  # mean within-set ESS / S of X_0 (ucvae) or of the set (IWAE)
    truncated: int  # chains stopped at max_steps (never silently: counted here)

    @property
    def work(self) -> float:
        """Variance × cost: the variance per unit of compute (lower is better)."""
        return self.variance * self.cost


def gradient_variance(
    model: VAE,
    x: Tensor,
    method: str,
    num_samples: int,
    replicates: int = 100,
    k: int = 0,
    m: int = 0,
    eps: float = 0.0,
    max_steps: int = 20_000,
    generator: torch.Generator | None = None,
    rejuvenate: float | None = None,
) -> GradientVariance:
    """Total variance and cost of one decoder-gradient sample of ``method`` on one image.

    ``x`` is one image [P] or [1, P]; it is replicated ``replicates`` times in a batch and each
    replicate gets an independent estimate (``"ucvae"``: H_{k:m} from coupled chains; ``"iwae"``:
    IWAE-S). A chain still unmet at ``max_steps`` is truncated and *counted* in ``truncated``.
    ``rejuvenate`` (ucvae only): the random-walk scale, relative to the encoder's σ_φ(x), of the
    optional MH move on the references (``rejuvenation.py``); its evaluations count as cost.
    """
    if method not in ("ucvae", "iwae"):
        raise ValueError(f"method must be 'ucvae' or 'iwae', got {method!r}")
    if replicates < 2:
        raise ValueError(f"need replicates >= 2 to estimate a variance, got {replicates}")
    xr = x.reshape(1, -1).expand(replicates, -1).contiguous()
    with torch.no_grad():
        target = model.target(xr, eps)
        if method == "ucvae":
            scale = None
            if rejuvenate is not None:
                scale = rejuvenate * _encoder_scale(model, xr)
            est = coupled_estimate(
                target,
                num_samples,
                k,
                m,
                max_steps,
                generator,
                on_timeout="truncate",
                rejuvenate=scale,
            )
            ess = est.info["initial_ess"]
        else:
            est = iwae_estimate(target, num_samples, generator)
            ess = effective_sample_size(est.info["log_weights"])
    g = per_row_decoder_gradients(model, xr, est).double()
    return GradientVariance(
        variance=g.var(0).sum().item(),
        cost=est.num_evals.double().mean().item(),
        tau=est.tau.clone(),
        mean=g.mean(0),
        ess_frac=(ess / num_samples).mean().item(),
        truncated=int(est.truncated.sum()),
    )


def _encoder_scale(model: VAE, x: Tensor) -> Tensor:
    """σ_φ(x) [B, D]: the encoder's (base) standard deviations, a natural random-walk scale."""
    q = model.encode(x)
    base = getattr(q, "base", q)
    scale = base.scale
    return torch.diagonal(scale, dim1=-2, dim2=-1) if scale.dim() == 3 else scale


@dataclass
class Comparison:
    """ucvae vs IWAE on one image: the numbers of one row of the variance study."""

    ucvae: GradientVariance
    iwae_same_s: GradientVariance
    iwae_same_cost: GradientVariance
    matched_s: int

    @property
    def work_ratio(self) -> float:
        """(variance × cost of ucvae) / (that of IWAE at the same S)."""
        return self.ucvae.work / self.iwae_same_s.work

    @property
    def ratio_same_cost(self) -> float:
        """ucvae's variance / IWAE's at the S that costs as much as ucvae (S' ≈ ucvae's evals)."""
        return self.ucvae.variance / self.iwae_same_cost.variance


def compare(
    model: VAE,
    x: Tensor,
    num_samples: int,
    k: int,
    m: int,
    replicates: int = 100,
    eps: float = 0.0,
    matched_s: int | None = None,
    generator: torch.Generator | None = None,
    rejuvenate: float | None = None,
) -> Comparison:
    """ucvae (S, k, m) vs IWAE at the same S and at ``matched_s`` (default: ucvae's mean cost)."""
    uc = gradient_variance(
        model, x, "ucvae", num_samples, replicates, k, m, eps, generator=generator,
        rejuvenate=rejuvenate,
    )  # fmt: skip
    same = gradient_variance(
        model, x, "iwae", num_samples, replicates, eps=eps, generator=generator
    )
    s2 = matched_s if matched_s is not None else max(2, int(round(uc.cost)))
    matched = gradient_variance(model, x, "iwae", s2, replicates, eps=eps, generator=generator)
    return Comparison(uc, same, matched, s2)


def summarise(comparisons: list[Comparison]) -> dict:
    """The study's row for one setting: τ over all chains, variances averaged over images."""
    tau = torch.cat([c.ucvae.tau for c in comparisons])
    out = {f"tau_{k}": v for k, v in tau_summary(tau).items()}
    mean = lambda xs: float(sum(xs) / len(xs))  # noqa: E731
    med = lambda xs: float(torch.tensor(xs).median())  # noqa: E731
    uc = [c.ucvae for c in comparisons]
    out |= {
        "ess_frac": mean([u.ess_frac for u in uc]),
        "evals_ucvae": mean([u.cost for u in uc]),
        "matched_s": int(round(mean([c.matched_s for c in comparisons]))),
        "var_ucvae": mean([u.variance for u in uc]),
        "var_iwae": mean([c.iwae_same_s.variance for c in comparisons]),
        "var_iwae_matched": mean([c.iwae_same_cost.variance for c in comparisons]),
        "truncated": sum(u.truncated for u in uc),
    }
    s = comparisons[0].iwae_same_s.cost
    out["work_ratio"] = out["var_ucvae"] * out["evals_ucvae"] / (out["var_iwae"] * s)
    out["work_ratio_median_image"] = med([c.work_ratio for c in comparisons])
    out["ratio_same_cost"] = out["var_ucvae"] / out["var_iwae_matched"]
    out["ratio_same_cost_median_image"] = med([c.ratio_same_cost for c in comparisons])
    return out


def survival_vs_degenerate(tau: Tensor, num_samples: int, t: float) -> float:
    """Empirical P(τ > t) divided by the degenerate-weights law at t (1 = on the 1/t law)."""
    emp = (tau.double() > t).double().mean().item()
    S = num_samples
    law = (S + 1) / (S + 1 + (S - 1) * (t - 1)) if t >= 1 else 1.0
    return emp / law if law > 0 else math.nan
