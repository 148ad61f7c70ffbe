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

The per-replicate gradient of an ``Estimate`` is g_b = Σ_{n ∈ b} c_n ∇_θ log p_θ(x_b, z_n):
the θ-gradient of the surrogate's term for data point b, with the coefficients of H_{k:m}
(ucvae) or w̄ (IWAE's decoder gradient is exactly Σ_s w̄_s ∇_θ log p_θ(x, z_s)).
"""

from __future__ import annotations

import statistics
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor

from ucvae_lite.core.diagnostics import (
    DEGENERATE_ESS,
    DEGENERATE_KHAT,
    degenerate_regime,
    tau_summary,
)
from ucvae_lite.core.estimate import Estimate
from ucvae_lite.core.rejuvenation import RandomWalkMH
from ucvae_lite.core.surrogate import per_row_gradients
from ucvae_lite.models.vae import VAE, widened_target, zoomed_posterior_grid
from ucvae_lite.studies.landscape import (
    ErrorBudget,
    GradientSamples,
    Method,
    minibatch_error_budget,
    posterior_estimate,
)
from ucvae_lite.studies.stats import VarianceCost, variance_and_cost
from ucvae_lite.training.evaluate import weight_diagnostics

__all__ = [
    "DEGENERATE_ESS",
    "DEGENERATE_KHAT",
    "degenerate_regime",
    "weight_diagnostics",
    "widened_target",
]  # noqa: E501  (moved down a layer; kept here for notebook 06)


def study_method(name: str, num_samples: int, k: int = 0, m: int = 0) -> Method:
    """The two estimators this study compares, by name: "ucvae" (H_{k:m} from coupled chains
    with S = ``num_samples``) or "iwae" (IWAE-S), as a ``landscape.Method``."""
    if name not in ("ucvae", "iwae"):
        raise ValueError(f"method must be 'ucvae' or 'iwae', got {name!r}")
    return Method(name, name, num_samples, k, m, unbiased=name == "ucvae")


@dataclass
class GradientVariance(VarianceCost):
    """One image, R replicate decoder-gradient estimates: variance per θ coordinate
    (``variance``; ``total`` sums it), cost, ``work`` = total × cost (see ``stats``), and:"""

    tau: Tensor = None  # [R] meeting times (0 for IWAE)
    mean: Tensor = None  # [|θ|] mean gradient over the replicates
    ess_frac: float = 0.0  # mean within-set ESS / S of X_0 (ucvae) or of the set (IWAE)
    truncated: int = 0  # chains stopped at max_steps (never silently: counted here)


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
    optional MH move on the references (``rejuvenation.RandomWalkMH``); its evaluations count
    as cost. Each replicate's gradient is the gradient of its own term of the surrogate
    (``surrogate.per_row_gradients``).
    """
    chosen = study_method(method, num_samples, k, m)
    if replicates < 2:
        raise ValueError(f"need replicates >= 2 to estimate a variance, got {replicates}")
    xr = x.reshape(1, -1).expand(replicates, -1).contiguous()
    with torch.no_grad():
        move = None
        if method == "ucvae" and rejuvenate is not None:
            move = RandomWalkMH(rejuvenate * model.encoder_scale(xr))
        target = model.target(xr, eps)
        est = posterior_estimate(chosen, target, generator, max_steps=max_steps, move=move)
    g = per_row_gradients(model, xr, est).double()
    vc = variance_and_cost(g, est.num_evals.double().mean().item(), est.tau.double().mean().item())
    return GradientVariance(
        vc.variance,
        vc.variance_se,
        vc.cost,
        vc.mean_tau,
        tau=est.tau.clone(),
        mean=g.mean(0),
        ess_frac=(est.initial_ess / num_samples).mean().item(),
        truncated=int(est.truncated.sum()),
    )


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
        return self.ucvae.total / self.iwae_same_cost.total


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
    med = lambda xs: float(statistics.median_low(xs))  # noqa: E731
    uc = [c.ucvae for c in comparisons]
    out |= {
        "ess_frac": mean([u.ess_frac for u in uc]),
        "evals_ucvae": mean([u.cost for u in uc]),
        "matched_s": int(round(mean([c.matched_s for c in comparisons]))),
        "var_ucvae": mean([u.total for u in uc]),
        "var_iwae": mean([c.iwae_same_s.total for c in comparisons]),
        "var_iwae_matched": mean([c.iwae_same_cost.total for c in comparisons]),
        "truncated": sum(u.truncated for u in uc),
    }
    s = comparisons[0].iwae_same_s.cost
    out["work_ratio"] = out["var_ucvae"] * out["evals_ucvae"] / (out["var_iwae"] * s)
    out["work_ratio_median_image"] = med([c.work_ratio for c in comparisons])
    out["ratio_same_cost"] = out["var_ucvae"] / out["var_iwae_matched"]
    out["ratio_same_cost_median_image"] = med([c.ratio_same_cost for c in comparisons])
    return out


# --- bias and noise at equal compute (notebook 06 §3 and its widget) --------------------------
def output_bias_score(model: VAE, x: Tensor) -> Callable[[Tensor, Tensor], Tensor]:
    """f(rows, z) = ∇_b log p_θ(x_rows, z) = x_rows − σ(f_θ(z)): the gradient of the log joint
    with respect to the decoder's output biases b (one per pixel), for the Bernoulli decoder.

    Fisher's identity makes E_{p(z|x)}[f] = ∇_b log p_θ(x), and any estimate Σ_n c_n f(z_n) of
    posterior expectations is an estimate of that gradient block (P numbers, closed form: no
    backward pass needed). ``rows`` [M] say which image of x each particle z [M, D] belongs to.
    """

    def score(rows: Tensor, z: Tensor) -> Tensor:
        logits, xr = model.decoder(z), x[rows]
        # x − σ(ℓ) = x σ(−ℓ) − (1 − x) σ(ℓ): no cancellation where x = 1 and σ(ℓ) ≈ 1
        return xr * torch.sigmoid(-logits) - (1 - xr) * torch.sigmoid(logits)

    return score


@torch.no_grad()
def per_row_expectation(
    estimate: Estimate, f: Callable[[Tensor, Tensor], Tensor], chunk: int = 1 << 15
) -> Tensor:
    """Σ_{n ∈ b} c_n f(rows_n, z_n) for every data point b, over the flat particles: [B, ...].

    Unlike ``Estimate.expectation`` it never pads, so a few long chains cost their own
    particles, not batch size × the longest chain.
    """
    out = None
    for start in range(0, estimate.rows.numel(), chunk):
        rows = estimate.rows[start : start + chunk]
        values = f(rows, estimate.flat_particles[start : start + chunk])
        coef = estimate.flat_coef[start : start + chunk].to(values.dtype)
        if out is None:
            out = values.new_zeros(estimate.batch_size, *values.shape[1:])
        out.index_add_(0, rows, coef.reshape(-1, *([1] * (values.dim() - 1))) * values)
    return out


IGNORED_VARIANCE = 1e-6  # coordinates with less (relative) variance are left out of z-tests


def estimator_samples(
    model: VAE,
    x: Tensor,
    method: str,
    num_samples: int,
    replicates: int,
    k: int = 0,
    m: int = 0,
    factor: float = 1.0,
    generator: torch.Generator | None = None,
    max_steps: int = 20_000,
) -> tuple[list[GradientSamples], Tensor]:
    """R estimates of ∇_b log p_θ(x_i) (the decoder's output biases) for each image x_i [N, P].

    ``method`` "ucvae" (H_{k:m} from coupled chains; a chain unmet at ``max_steps`` is
    truncated, with τ = max_steps + 1) or "iwae" (IWAE-S), with the proposal q_φ widened by
    ``factor``. Returns one ``landscape.GradientSamples`` per image (``grads`` [R, P], ``cost``
    its mean log-weight evaluations per estimate), ready for
    ``landscape.minibatch_error_budget``, and the meeting times τ [N·R] (zeros for IWAE).
    """
    chosen = study_method(method, num_samples, k, m)
    N = x.shape[0]
    xr = x.repeat_interleave(replicates, 0)
    with torch.no_grad():
        target = widened_target(model, xr, factor)
        est = posterior_estimate(chosen, target, generator, max_steps=max_steps)
        g = per_row_expectation(est, output_bias_score(model, xr)).view(N, replicates, -1)
    cost = est.num_evals.double().view(N, replicates).mean(1)
    samples = [GradientSamples(g[i], cost[i].item()) for i in range(N)]
    return samples, est.tau.clone()


def max_z(samples: list[GradientSamples], exact: Tensor) -> tuple[float, int]:
    """The largest |z-score| of the replicate means against the exact gradients [N, P], and
    over how many coordinates: those whose variance is at least ``IGNORED_VARIANCE`` of the
    largest in their image (a pixel the decoder is sure of, σ ≈ 0 or 1, has a gradient of
    ~1e-10 whose heavy-tailed noise leaves no usable standard error). An unbiased estimator
    stays below ``stats.z_threshold`` of that many coordinates."""
    worst, count = 0.0, 0
    for s, g in zip(samples, exact.double(), strict=True):
        grads = s.grads.double()
        var = grads.var(0)
        keep = var >= IGNORED_VARIANCE * var.max()
        z = (grads.mean(0) - g)[keep] / (var[keep] / grads.shape[0]).sqrt()
        worst, count = max(worst, z.abs().max().item()), count + int(keep.sum())
    return worst, count


def output_bias_budgets(
    model: VAE,
    x: Tensor,
    exact: Tensor,
    sizes: tuple[int, ...] = (2, 5, 10, 50),
    num_samples: int = 10,
    k: int = 1,
    m: int = 2,
    replicates: int = 1000,
    factor: float = 1.0,
    generator: torch.Generator | None = None,
) -> tuple[list[ErrorBudget], dict]:
    """``landscape.ErrorBudget``s of the output-bias gradient on the images x [N, P] against
    the exact gradients [N, P]: ucvae (S = ``num_samples``, k, m) and IWAE-S for S in
    ``sizes``. Also returns {name: (max |z|, coordinates)} from ``max_z`` and "tau": ucvae's τ.
    """
    budgets, z_tests = [], {}
    runs = [("ucvae", "ucvae", num_samples)] + [(f"IWAE-{S}", "iwae", S) for S in sizes]
    for name, method, S in runs:
        samples, tau = estimator_samples(model, x, method, S, replicates, k, m, factor, generator)
        budgets.append(minibatch_error_budget(name, samples, exact, unbiased=method == "ucvae"))
        z_tests[name] = max_z(samples, exact)
        if method == "ucvae":
            z_tests["tau"] = tau
    return budgets, z_tests


@dataclass
class OutputBiasComparison:
    """ucvae (S, k, m) against IWAE-S and IWAE-S' (S' = ucvae's mean cost, rounded: equal
    compute) on one image, for the output-bias gradient (notebook 06's widget): ``budgets``
    keyed "ucvae", "IWAE-S", "IWAE-S'" (one entry when S' = S), ucvae's meeting times ``tau``
    [R], S' (``matched_s``), and, against an exact gradient, ``z_test`` = ucvae's (max |z|,
    coordinates) from ``max_z`` (None without one: the budgets are then centred on ucvae's
    mean, so their biases say nothing)."""

    budgets: dict[str, ErrorBudget]
    tau: Tensor
    num_samples: int
    matched_s: int
    z_test: tuple[float, int] | None

    @property
    def against_exact(self) -> bool:
        """Whether the budgets were measured against the exact gradient (their biases mean
        something)."""
        return self.z_test is not None

    @property
    def ucvae(self) -> ErrorBudget:
        return self.budgets["ucvae"]

    @property
    def iwae_same_s(self) -> ErrorBudget:
        return self.budgets[f"IWAE-{self.num_samples}"]

    @property
    def iwae_same_cost(self) -> ErrorBudget:
        return self.budgets[f"IWAE-{self.matched_s}"]


def output_bias_comparison(
    model: VAE,
    x: Tensor,
    num_samples: int,
    k: int,
    m: int,
    replicates: int,
    factor: float = 1.0,
    exact: Tensor | None = None,
    generator: torch.Generator | None = None,
    max_steps: int = 20_000,
) -> OutputBiasComparison:
    """``replicates`` estimates of ∇_b log p_θ(x) for one image x [1, P] from ucvae (S, k, m),
    IWAE-S and IWAE-S' (``estimator_samples``, q_φ widened by ``factor``), and their
    ``landscape.minibatch_error_budget``s against ``exact`` [1, P] (None: against ucvae's
    mean)."""
    uc, tau = estimator_samples(model, x, "ucvae", num_samples, replicates, k, m, factor,
                                generator, max_steps)  # fmt: skip
    s2 = max(2, round(uc[0].cost))
    same, _ = estimator_samples(model, x, "iwae", num_samples, replicates, factor=factor,
                                generator=generator)  # fmt: skip
    matched, _ = estimator_samples(model, x, "iwae", s2, replicates, factor=factor,
                                   generator=generator)  # fmt: skip
    reference = uc[0].grads.mean(0, keepdim=True) if exact is None else exact
    names = ("ucvae", f"IWAE-{num_samples}", f"IWAE-{s2}")
    budgets = {
        name: minibatch_error_budget(name, samples, reference, unbiased=name == "ucvae")
        for name, samples in zip(names, (uc, same, matched), strict=True)
    }
    z_test = None if exact is None else max_z(uc, exact)
    return OutputBiasComparison(budgets, tau, num_samples, s2, z_test)


def exact_output_bias_gradient(model: VAE, x: Tensor, n: int = 201, limit: float = 4.0) -> Tensor:
    """∇_b log p_θ(x_i) [N, P] for a 2-D latent, by the posterior on an n × n grid zoomed on
    each image's posterior (``vae.zoomed_posterior_grid``: exact up to the grid); one image at
    a time, to bound memory. ∇_b log p_θ(x) = E_{p(z|x)}[x − σ(f_θ(z))] (Fisher's identity)."""
    out = []
    with torch.no_grad():
        for xi in x.split(1):
            grid = zoomed_posterior_grid(model, xi, n, limit)
            rows = torch.zeros(len(grid.points), dtype=torch.long, device=x.device)
            f = output_bias_score(model, xi)(rows, grid.points)  # [n², P]
            out.append((grid.posterior_weights[0, :, None] * f).sum(0, keepdim=True))
    return torch.cat(out)


def uncovered_mass(model: VAE, x: Tensor, radius: float = 4.0, n: int = 201) -> Tensor:
    """[N] the posterior mass (on a zoomed grid, 2-D latent) farther than ``radius`` encoder
    standard deviations from the encoder's mean: |(z − μ_φ(x)) / σ_φ(x)| > radius.

    q_φ puts about e^{−radius²/2} of its own mass there, so posterior mass well above that sits
    where q rarely proposes: a second mode, or a tail the Gaussian encoder cannot follow. Every
    importance-sampling estimator (IWAE and the coupled one alike) then sees that mass only in
    rare draws with very large weights.
    """
    out = []
    with torch.no_grad():
        for xi in x.split(1):
            grid = zoomed_posterior_grid(model, xi, n)
            q = model.encode(xi)
            dist = ((grid.points - q.loc[0]) / q.scale[0]).norm(dim=-1)
            out.append(grid.posterior_weights[0][dist > radius].sum())
    return torch.stack(out)
