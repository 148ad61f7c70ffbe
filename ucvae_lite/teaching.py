"""Teaching computations behind notebooks 00-04: small, transparent, tested.

Everything here is built from the library's kernels and estimators; nothing re-derives them.
The functions answer the questions the notebooks ask:

* how far is the IWAE bound (and IWAE's gradient) from the exact answer, as a function of S?
* what does one CIS chain do, step by step (``run_cis_chain``)?
* what do two lag-1 coupled chains do, step by step, and how is H_{k:m} assembled from them
  (``lag_coupled_chains``, ``h_km_terms``)?
* what do variance and cost look like as functions of (k, m, S) (``variance_cost``)?

Fast mode: ``fast_mode()`` (from ``runtime``) is True when the environment variable
``UCVAE_FAST`` is ``1`` (or true / yes / on); notebooks then use fewer replicates (CI sets it
through ``make test``).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor

from .coupled import CoupledChains, coupled_estimate
from .estimate import Estimate
from .iwae import iwae_bound, iwae_estimate, normalized_weights
from .kernels import CISState, Move, cis_step, draw, maximal_coupling
from .linear_gaussian import LinearGaussian
from .runtime import fast_mode, figures_dir  # noqa: F401 (notebooks import them from here)
from .stats import VarianceCost, variance_and_cost, z_score
from .surrogate import log_likelihood_surrogate, particle_log_joint
from .targets import Target

F = Callable[[Tensor], Tensor]


def identity(z: Tensor) -> Tensor:
    """f(z) = z: its posterior expectation is E[z | x]."""
    return z


def h_values(state: CISState, f: F = identity) -> Tensor:
    """h(ξ) = Σ_j w̄_j(ξ) f(z_j): the Rao-Blackwellised value of a particle set, [B, ...].

    Rows holding NaN (a chain that was no longer running, in a ``CoupledRun``) give NaN.
    """
    values = f(state.particles)
    w = normalized_weights(state.log_weights).to(values.dtype)
    return (w.reshape(*w.shape, *([1] * (values.dim() - 2))) * values).sum(1)


# --- notebook 01: the IWAE bound and the bias of IWAE's gradient --------------------------


def iwae_bound_samples(target: Target, num_samples: int, replicates: int, generator=None) -> Tensor:
    """``replicates`` draws of log (1/S) Σ_s w_s per data point, [replicates, B].

    Their mean estimates the IWAE bound L_S ≤ log p(x).
    """
    draws = [
        iwae_bound(target.log_weight(target.sample(num_samples, generator)))
        for _ in range(replicates)
    ]
    return torch.stack(draws)


def exact_gradient(model: LinearGaussian, x: Tensor) -> Tensor:
    """∇_{W, b, log σ} log p(x) for one data point x [1, p], flattened: the exact answer."""
    params = [p.detach().clone().requires_grad_(True) for p in (model.W, model.b, model.log_sigma)]
    LinearGaussian(*params).log_marginal(x).sum().backward()
    return torch.cat([p.grad.flatten() for p in params])


def per_replicate_gradients(model: LinearGaussian, x: Tensor, estimate: Estimate) -> Tensor:
    """Gradient estimates Σ_n c_n ∇_θ log p_θ(x, z_n), one row per replicate, [R, P].

    ``estimate`` must cover R replicates of one data point x [1, p]. One copy of the
    parameters per replicate makes a single backward pass of the gradient surrogate
    (``surrogate.log_likelihood_surrogate``) return every replicate's gradient.
    """
    r = estimate.batch_size
    per = [
        p.detach().expand(r, *p.shape).clone().requires_grad_(True)
        for p in (model.W, model.b, model.log_sigma)
    ]
    copies = LinearGaussian(*per)  # replicate r has its own θ copy (``select`` picks rows)
    log_likelihood_surrogate(estimate, particle_log_joint(copies, x.expand(r, -1))).backward()
    return torch.cat([p.grad.reshape(r, -1) for p in per], 1)


def joint_gradients(model: LinearGaussian, x: Tensor, z: Tensor) -> Tensor:
    """∇_θ log p_θ(x, z_r) for each latent z_r, z [R, D] -> [R, P] (one data point x [1, p]).

    By Fisher's identity their mean under exact posterior draws z_r ~ p(z | x) is ∇_θ log p(x).
    """
    r = z.shape[0]
    per = [
        p.detach().expand(r, *p.shape).clone().requires_grad_(True)
        for p in (model.W, model.b, model.log_sigma)
    ]
    LinearGaussian(*per).log_joint(x.expand(r, -1), z[:, None, :]).sum().backward()
    return torch.cat([p.grad.reshape(r, -1) for p in per], 1)


def posterior_draws(model: LinearGaussian, x: Tensor, n: int, generator=None) -> Tensor:
    """n exact draws from p(z | x) for one data point x [1, p]: [n, D]."""
    mean, cov = model.posterior(x)
    eps = torch.randn(
        n, model.latent_dim, generator=generator, dtype=mean.dtype, device=mean.device
    )
    return mean[0] + eps @ torch.linalg.cholesky(cov[0]).T


@dataclass
class GradientBias:
    """IWAE gradient bias versus S: |mean − exact| (Euclidean norm) and its standard error."""

    num_samples: list[int]
    bias_norm: list[float]
    max_z: list[float]  # largest |z-score| over gradient coordinates


def iwae_gradient_bias(
    model: LinearGaussian,
    x: Tensor,
    num_samples: list[int],
    replicates: int,
    shift: float = 0.5,
    scale: float = 1.5,
    generator=None,
) -> GradientBias:
    """Measure E[IWAE gradient] − ∇ log p(x) for each S, by ``replicates`` independent runs."""
    exact = exact_gradient(model, x)
    target = model.target(x.expand(replicates, -1), shift=shift, scale=scale)
    out = GradientBias([], [], [])
    for S in num_samples:
        grads = per_replicate_gradients(model, x, iwae_estimate(target, S, generator))
        out.num_samples.append(S)
        out.bias_norm.append((grads.mean(0) - exact).norm().item())
        out.max_z.append(z_score(grads, exact).abs().max().item())
    return out


# --- notebook 02: one CIS chain -------------------------------------------------------------


def run_cis_chain(
    target: Target, num_samples: int, steps: int, f: F = identity, generator=None
) -> Tensor:
    """h(X_t) for t = 0..steps of a CIS chain started at X_0 ~ q^S, [steps + 1, B, ...].

    h(X_0) is IWAE's self-normalised estimate; E h(X_t) → E_p[f] as t grows (notebook 02).
    """
    state = draw(target, num_samples, generator)
    values = [h_values(state, f)]
    for _ in range(steps):
        state, _ = cis_step(target, state, generator)
        values.append(h_values(state, f))
    return torch.stack(values)


def max_log_weight_vs_n(target: Target, sizes: list[int], generator=None) -> list[float]:
    """max over n proposal draws of log w(z), for each n in ``sizes`` (first data point).

    Bounded weights plateau as n grows; unbounded ones keep growing.
    """
    out = []
    for n in sizes:
        z = target.sample(n, generator)
        out.append(target.log_weight(z)[0].max().item())
    return out


# --- notebooks 03-04: lag-1 coupled chains, recorded step by step ---------------------------


@dataclass
class CoupledRun:
    """A record of lag-1 coupled CIS chains, for B chain pairs (one per data point).

    ``xs[t]`` is X_t (t = 0..T) and ``ys[t]`` is Y_t (t = 0..T−1), as ``CISState``s with
    particle ids. A chain pair stops once it has met and is past step m (its later steps add
    nothing to H_{k:m}); from then on its rows hold NaN (``running[t]`` [B] says which rows
    ran at step t). ``tau`` [B] is τ = inf{t ≥ 1 : X_t = Y_{t−1}}, or max_steps + 1 where a
    pair had not met (``truncated``).
    """

    xs: list[CISState]
    ys: list[CISState]
    running: list[Tensor]
    tau: Tensor
    truncated: Tensor
    num_samples: int

    @property
    def steps(self) -> int:
        return len(self.xs) - 1

    def h_x(self, f: F = identity) -> Tensor:
        """h(X_t), t = 0..T: [T + 1, B, ...] (NaN where a pair had stopped)."""
        return torch.stack([h_values(s, f) for s in self.xs])

    def h_y(self, f: F = identity) -> Tensor:
        """h(Y_t), t = 0..T−1: [T, B, ...] (NaN where a pair had stopped)."""
        return torch.stack([h_values(s, f) for s in self.ys])


def _scatter(state: CISState, rows: Tensor, batch_size: int) -> CISState:
    """The particle sets of the running ``rows`` in a full batch; other rows NaN (ids −1)."""
    z, lw = state.particles, state.log_weights
    full_z = z.new_full((batch_size, *z.shape[1:]), math.nan)
    full_lw = lw.new_full((batch_size, *lw.shape[1:]), math.nan)
    full_ids = state.ids.new_full((batch_size, *state.ids.shape[1:]), -1)
    full_z[rows], full_lw[rows], full_ids[rows] = z, lw, state.ids
    return CISState(full_z, full_lw, full_ids)


def lag_coupled_chains(
    target: Target,
    num_samples: int,
    m: int = 0,
    max_steps: int = 1000,
    generator=None,
    *,
    initial: tuple[Tensor, Tensor] | None = None,
    move: Move | None = None,
) -> CoupledRun:
    """Run lag-1 coupled CIS chains and record every step (``coupled.CoupledChains``).

    X_0 ~ q^S; X_1 ~ K(X_0); Y_0 = (an independent q-draw, X_1's fresh slots), so Y_0 ~ q^S
    and the chains can meet at the first coupled step; then (X_t, Y_{t−1}) ~ K̄((X_{t−1},
    Y_{t−2})) until every pair has met and t ≥ m (or t = max_steps). These are the chains of
    ``coupled_estimate`` itself: with the same seed and arguments, H_{k:m} assembled from this
    record (``h_km_terms``) equals that estimate.
    """
    chains = CoupledChains(target, num_samples, m, max_steps, generator, initial=initial, move=move)
    xs, ys, running = [], [], []
    for step in chains:
        B = chains.tau.shape[0]
        xs.append(_scatter(step.x, step.rows, B))
        mask = torch.zeros(B, dtype=torch.bool, device=step.rows.device)
        mask[step.rows] = True
        running.append(mask)
        if step.y is not None:
            ys.append(_scatter(step.y, step.rows, B))
    return CoupledRun(xs, ys, running, chains.tau, chains.truncated, num_samples)


@dataclass
class HTerms:
    """H_{k:m} = mcmc_average + Σ_t correction[t], for each chain pair.

    ``mcmc_average`` [B, ...] = 1/(m−k+1) Σ_{t=k}^m h(X_t);
    ``correction`` [T+1, B, ...]: entry t is min(1, (t−k)/(m−k+1)) (h(X_t) − h(Y_{t−1})) for
    k+1 ≤ t ≤ τ−1 and zero otherwise (row 0 is always zero).
    """

    mcmc_average: Tensor
    correction: Tensor

    @property
    def total(self) -> Tensor:
        return self.mcmc_average + self.correction.sum(0)


def h_km_terms(run: CoupledRun, k: int, m: int, f: F = identity) -> HTerms:
    """Assemble H_{k:m} term by term, straight from its definition, from a recorded run."""
    if not 0 <= k <= m:
        raise ValueError(f"need 0 <= k <= m, got k={k}, m={m}")
    if run.steps < m:
        raise ValueError(f"the run has {run.steps} steps; H_{{k:m}} needs at least m={m}")
    hx, hy = run.h_x(f), run.h_y(f)
    mcmc = hx[k : m + 1].mean(0)
    corr = torch.zeros_like(hx)
    for t in range(k + 1, run.steps + 1):
        weight = min(1.0, (t - k) / (m - k + 1))
        live = (t < run.tau).reshape(-1, *([1] * (hx.dim() - 2)))
        corr[t] = torch.where(live, weight * (hx[t] - hy[t - 1]), 0.0)
    return HTerms(mcmc, corr)


# --- notebook 04: variance and cost ---------------------------------------------------------


def variance_cost(
    target: Target,
    num_samples: int,
    k: int | None = None,
    m: int | None = None,
    generator=None,
    max_steps: int = 10_000,
) -> VarianceCost:
    """Variance and cost of the posterior-mean estimate over the rows of ``target``.

    The rows must be replicates of one data point. ``k = m = None`` measures IWAE at S.
    """
    if k is None and m is None:
        est = iwae_estimate(target, num_samples, generator)
        return variance_and_cost(est.mean(), est.num_evals.double().mean().item())
    est = coupled_estimate(target, num_samples, k or 0, m or 0, max_steps, generator)
    return variance_and_cost(
        est.mean(), est.num_evals.double().mean().item(), est.tau.double().mean().item()
    )


def variance_cost_table(
    make_target: Callable[[], Target],
    settings: list[tuple[int, int, int]],
    seed: int = 0,
) -> list[dict]:
    """Rows {S, k, m, variance, cost, work, work_vs_iwae} for each (S, k, m) in ``settings``.

    ``work_vs_iwae`` compares variance × cost with IWAE at the same S (< 1 would beat IWAE;
    IWAE's error is dominated by its bias, which this ratio does not show).
    """
    g = torch.Generator().manual_seed(seed)
    rows = []
    for S, k, m in settings:
        vc = variance_cost(make_target(), S, k, m, g)
        iw = variance_cost(make_target(), S, generator=g)
        rows.append(
            {
                "S": S,
                "k": k,
                "m": m,
                "variance": vc.total,
                "cost": vc.cost,
                "mean_tau": vc.mean_tau,
                "work": vc.work,
                "work_vs_iwae": vc.work / iw.work,
            }
        )
    return rows


# --- notebook 03: the maximal coupling of two categoricals ----------------------------------


@dataclass
class CouplingDraws:
    """Two categoricals p, q (normalised), their overlap α = Σ min(p, q), one joint draw (i, j)
    from the maximal coupling and the fraction of ``n`` joint draws with i = j (≈ α)."""

    p: Tensor
    q: Tensor
    alpha: float
    draw: tuple[int, int]
    frac_equal: float
    n: int


def coupling_draws(p_weights, q_weights, n: int = 2000, seed: int = 0) -> CouplingDraws:
    """Normalise two non-negative weight vectors and draw from their maximal coupling."""
    p = torch.as_tensor(p_weights, dtype=torch.float64, device="cpu")  # a widget's numbers
    q = torch.as_tensor(q_weights, dtype=torch.float64, device="cpu")
    if p.shape != q.shape or p.dim() != 1:
        raise ValueError(f"need two weight vectors of equal length, got {p.shape}, {q.shape}")
    if bool((p < 0).any() or (q < 0).any()) or p.sum() <= 0 or q.sum() <= 0:
        raise ValueError("weights must be non-negative with a positive sum")
    p, q = p / p.sum(), q / q.sum()
    g = torch.Generator().manual_seed(seed)
    i, j = maximal_coupling(p.log().expand(n, -1), q.log().expand(n, -1), g)
    alpha = torch.minimum(p, q).sum().item()
    return CouplingDraws(p, q, alpha, (int(i[0]), int(j[0])), (i == j).double().mean().item(), n)
