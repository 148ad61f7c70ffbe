"""Teaching computations behind notebooks 00-04: small, transparent, tested.

Everything here is built from the library's kernels and estimators; nothing re-derives them.
The functions answer the questions the notebooks ask:

* how far is the IWAE bound (and IWAE's gradient) from the exact answer, as a function of S?
* what does one CIS chain do, step by step (``run_cis_chain``)?
* what do two lag-1 coupled chains do, step by step, and how is H_{k:m} assembled from them
  (``lag_coupled_chains``, ``h_km_terms``; one step explained: ``coupled_step``)?
* at equal compute, when does H_{k:m} beat IWAE (``variance_comparison``)?

Gradients in θ = (W, b, log σ) use ``landscape.RowCopies``, one copy of θ per replicate (or
per block of replicates), so that one backward pass gives every replicate's gradient.

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

from ucvae_lite.core.coupled import CoupledChains, coupled_estimate
from ucvae_lite.core.estimate import Estimate
from ucvae_lite.core.hkm import validate_lags
from ucvae_lite.core.iwae import (
    iwae_bound,
    iwae_estimate,
    normalized_weights,
    sample_extended_target,
)
from ucvae_lite.core.kernels import CISState, Move, cis_step, draw, maximal_coupling
from ucvae_lite.core.surrogate import log_likelihood_surrogate, particle_log_joint
from ucvae_lite.core.targets import Target
from ucvae_lite.models.linear_gaussian import LinearGaussian
from ucvae_lite.studies.budget import ErrorBudget, crossover_budget, error_budget
from ucvae_lite.studies.landscape import RowCopies
from ucvae_lite.studies.stats import (
    VarianceCost,
    mean_and_se,
    variance_and_cost,
    z_score,
    z_threshold,  # noqa: F401 (notebooks import it from here)
)
from ucvae_lite.training.runtime import fast_mode, figures_dir  # noqa: F401 (notebooks import them from here)

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
    """``replicates`` independent draws of log (1/S) Σ_s w_s per data point, [replicates, B].

    Their mean estimates the IWAE bound L_S ≤ log p(x). Drawn in one batch: replicates × S
    proposal draws per data point, cut into consecutive sets of S.
    """
    log_w = target.log_weight(target.sample(replicates * num_samples, generator))
    return iwae_bound(log_w.reshape(log_w.shape[0], replicates, num_samples)).T


def exact_gradient(model: LinearGaussian, x: Tensor) -> Tensor:
    """∇_{W, b, log σ} log p(x) for one data point x [1, p], flattened: the exact answer."""
    copies = RowCopies(model, 1)
    copies.log_marginal(x).sum().backward()
    return copies.gradients()[0]


def per_replicate_gradients(model: LinearGaussian, x: Tensor, estimate: Estimate) -> Tensor:
    """Gradient estimates Σ_n c_n ∇_θ log p_θ(x, z_n), one row per replicate, [R, P].

    ``estimate`` must cover R replicates of one data point x [1, p]. One copy of θ per
    replicate (``RowCopies``) makes a single backward pass of the gradient surrogate
    (``surrogate.log_likelihood_surrogate``) return every replicate's gradient.
    """
    copies = RowCopies(model, estimate.batch_size)
    xr = x.expand(estimate.batch_size, -1)
    log_likelihood_surrogate(estimate, particle_log_joint(copies, xr)).backward()
    return copies.gradients()


def joint_gradients(model: LinearGaussian, x: Tensor, z: Tensor) -> Tensor:
    """∇_θ log p_θ(x, z_r) for each latent z_r, z [R, D] -> [R, P] (one data point x [1, p]).

    By Fisher's identity their mean under exact posterior draws z_r ~ p(z | x) is ∇_θ log p(x).
    """
    copies = RowCopies(model, z.shape[0])
    copies.log_joint(x.expand(z.shape[0], -1), z[:, None, :]).sum().backward()
    return copies.gradients()


def posterior_draws(model: LinearGaussian, x: Tensor, n: int, generator=None) -> Tensor:
    """n exact draws from p(z | x) for one data point x [1, p]: [n, D]."""
    mean, cov = model.posterior(x)
    eps = torch.randn(
        n, model.latent_dim, generator=generator, dtype=mean.dtype, device=mean.device
    )
    return mean[0] + eps @ torch.linalg.cholesky(cov[0]).T


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
    validate_lags(k, m)
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


# --- notebook 04: H_{k:m} against IWAE at equal compute --------------------------------------


@dataclass
class VarianceComparison:
    """H_{k:m} against IWAE-S for the posterior mean E[z | x] of one data point: both
    ``ErrorBudget``s (|bias|², V, cost, each ± SE), the ``variance_cost`` of H_{k:m}
    (per-coordinate variances, cost, mean τ) and the ``crossover`` budget C* ± SE past which
    H_{k:m}'s MSE is lower (None where IWAE's bias is not resolved: |b|² ≤ 4 SE)."""

    coupled: ErrorBudget
    iwae: ErrorBudget
    variance_cost: VarianceCost
    crossover: tuple[float, float] | None


def variance_comparison(
    model: LinearGaussian,
    x: Tensor,
    num_samples: int,
    k: int,
    m: int,
    shift: float = 0.5,
    scale: float = 1.5,
    replicates: int = 500,
    iwae_replicates: int = 20_000,
    generator=None,
) -> VarianceComparison:
    """``replicates`` runs of H_{k:m} and ``iwae_replicates`` of IWAE-S (cheap: enough to
    resolve its bias) on x [1, p] with the proposal (shift, scale), measured against the exact
    posterior mean (``budget.error_budget``; C*: ``budget.crossover_budget``)."""
    x = x[:1]
    exact = model.posterior(x)[0][0]
    coupled_target = model.target(x.expand(replicates, -1), shift=shift, scale=scale)
    iwae_target = model.target(x.expand(iwae_replicates, -1), shift=shift, scale=scale)
    est = coupled_estimate(coupled_target, num_samples, k, m, generator=generator)
    iw = iwae_estimate(iwae_target, num_samples, generator)
    coupled = error_budget(est.mean(), exact, est.num_evals, "H_{k:m}", unbiased=True)
    iwae = error_budget(iw.mean(), exact, num_samples, f"IWAE-{num_samples}")
    vc = variance_and_cost(
        est.mean(), est.num_evals.double().mean().item(), est.tau.double().mean().item()
    )
    resolved = iwae.bias2 > 4 * iwae.bias2_se
    return VarianceComparison(
        coupled, iwae, vc, crossover_budget(coupled, iwae) if resolved else None
    )


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


# --- notebooks 00-04, the lab: exact answers and step-by-step records ---------------------


def whitened_shift(model: LinearGaussian, x: Tensor, shift: float) -> Tensor:
    """δ = L⁻¹ (shift·1) for the posterior covariance Σ = L Lᵀ of one data point x [1, p]: [D].

    The proposal N(μ + shift·1, c² Σ) is N(δ, c² I) against the posterior N(0, I) once z is
    whitened by the posterior (z ↦ L⁻¹(z − μ)); ratios of densities are unchanged by that map.
    """
    _, cov = model.posterior(x[:1])
    chol = torch.linalg.cholesky(cov[0])
    ones = torch.full((model.latent_dim, 1), float(shift), dtype=cov.dtype, device=cov.device)
    return torch.linalg.solve_triangular(chol, ones, upper=False)[:, 0]


def weight_moment(
    model: LinearGaussian, x: Tensor, order: int, shift: float = 0.0, scale: float = 1.0
) -> float:
    """E_q[(w / p(x))ⁿ] = ∫ p(z | x)ⁿ q(z)^{1−n} dz, exactly, for ``model.proposal(x, ...)``.

    With w / p(x) = p(z | x) / q(z), q = N(μ + shift·1, c² Σ) and the posterior N(μ, Σ), the
    integral factorises over the whitened coordinates (``whitened_shift``): per coordinate with
    shift δ and a = (n − (n − 1)/c²)/2 > 0 it is

        c^{n−1} / √(2a) · exp( (n−1) δ² / (2c²) + (n−1)² δ² / (4 a c⁴) ).

    Infinite when a ≤ 0 (c² ≤ (n−1)/n: the proposal is too narrow for that moment to exist).
    n = 2 gives 1 + Var_q[w / p(x)].
    """
    if order < 1:
        raise ValueError(f"order must be a positive integer, got {order}")
    c, n = float(scale), order
    a = (n - (n - 1) / c**2) / 2
    if a <= 0:
        return math.inf
    log_m = 0.0
    for d in whitened_shift(model, x, shift).tolist():
        log_m += (n - 1) * math.log(c) - 0.5 * math.log(2 * a)
        log_m += (n - 1) * d**2 / (2 * c**2) + (n - 1) ** 2 * d**2 / (4 * a * c**4)
    return math.exp(log_m)


def relative_weight_variance(
    model: LinearGaussian, x: Tensor, shift: float = 0.0, scale: float = 1.0
) -> float:
    """Var_q[w / p(x)] in closed form: the constant of IWAE's gap log p(x) − L_S ≈ V / (2S)."""
    return weight_moment(model, x, 2, shift, scale) - 1.0


def group_mean_gradients(
    model: LinearGaussian, x: Tensor, estimate: Estimate, groups: int = 20
) -> Tensor:
    """Mean gradient estimate over each of ``groups`` equal blocks of replicates, [G, P].

    Like ``per_replicate_gradients`` (the same surrogate), but with one parameter copy per
    block of R / G replicates instead of one per replicate: much cheaper when only the mean
    gradient and its standard error are needed (the G block means are independent).
    """
    r = estimate.batch_size
    if r % groups:
        raise ValueError(f"{r} replicates do not split into {groups} equal groups")
    size = r // groups
    copies = RowCopies(model, groups)  # replicate i uses the copy of its block, i // size
    xr = x.expand(r, -1)

    def log_joint(rows: Tensor, z: Tensor) -> Tensor:
        return copies.select(rows // size).log_joint(xr[rows], z[:, None, :])[:, 0]

    log_likelihood_surrogate(estimate, log_joint).backward()
    return copies.gradients() / size


@dataclass
class IWAECurve:
    """IWAE against S for one data point and proposal, measured from ``replicates`` runs.

    ``gap[i]`` = log p(x) − L_S (± ``gap_se``); ``predicted_gap[i]`` = V / (2S) with V the exact
    Var_q[w / p(x)]; ``grad_bias[i]`` = |E[IWAE gradient] − ∇_θ log p(x)| measured, and
    ``grad_floor[i]`` = √(tr Cov / R), the size the measured bias has even when the true bias
    is zero (bias norms near it are not resolved). Entries for S = 1 have no gradient (NaN).
    """

    num_samples: list[int]
    log_px: float
    bound: list[float]
    gap: list[float]
    gap_se: list[float]
    predicted_gap: list[float]
    grad_bias: list[float]
    grad_floor: list[float]
    grad_max_z: list[float]
    variance: float


def iwae_curve(
    model: LinearGaussian,
    x: Tensor,
    num_samples: list[int],
    replicates: int,
    shift: float = 0.5,
    scale: float = 1.5,
    generator=None,
    gradients: bool = True,
    groups: int = 20,
    bound_replicates: int | None = None,
) -> IWAECurve:
    """The IWAE bound's gap and IWAE's gradient bias at each S, against the exact answers.

    The gradient's mean and standard error come from ``groups`` block means
    (``group_mean_gradients``) of ``replicates`` runs (a multiple of ``groups``); the bound
    from ``bound_replicates`` runs (default: ``replicates``; bound draws are cheaper).
    """
    x = x[:1]
    log_px = model.log_marginal(x).item()
    V = relative_weight_variance(model, x, shift, scale)
    nb = bound_replicates or replicates
    one = model.target(x, shift=shift, scale=scale)
    target = model.target(x.expand(replicates, -1), shift=shift, scale=scale)
    exact = exact_gradient(model, x) if gradients else None
    out = IWAECurve([], log_px, [], [], [], [], [], [], [], V)
    nan = math.nan
    for S in num_samples:
        bound, bound_se = mean_and_se(iwae_bound_samples(one, S, nb, generator))
        out.num_samples.append(S)
        out.bound.append(bound)
        out.gap.append(log_px - bound)
        out.gap_se.append(bound_se)
        out.predicted_gap.append(V / (2 * S))
        if exact is None or S < 2:
            out.grad_bias.append(nan)
            out.grad_floor.append(nan)
            out.grad_max_z.append(nan)
            continue
        blocks = group_mean_gradients(model, x, iwae_estimate(target, S, generator), groups)
        out.grad_bias.append((blocks.mean(0) - exact).norm().item())
        out.grad_floor.append(math.sqrt(blocks.var(0).sum().item() / groups))
        out.grad_max_z.append(z_score(blocks, exact).abs().max().item())
    return out


def extended_target_draws(
    model: LinearGaussian, x: Tensor, target: Target, num_samples: int, generator=None
) -> dict[str, Tensor]:
    """Draws from π̄(s, z_{1:S}) and the quantities whose exact means notebook 01 tests.

    ``target``'s rows are replicates of one data point x [1, p]. Returns s [R], z [R, S, D],
    w̄ [R, S] (normalised weights of the set) and ``slot0`` [R, D] = z_1 (the first slot).
    """
    R = target.sample(1, generator).shape[0]
    s, z = sample_extended_target(
        target, num_samples, lambda gen: posterior_draws(model, x, R, gen), generator
    )
    wbar = normalized_weights(target.log_weight(z))
    return {"s": s, "z": z, "wbar": wbar, "slot0": z[:, 0]}


extended_target_checks = extended_target_draws  # the old name, in notebook 01's stored .ipynb


def stationary_cis_state(
    model: LinearGaussian, x: Tensor, target: Target, num_samples: int, generator=None
) -> CISState:
    """A chain state drawn from π̄: an exact posterior draw as the reference, the rest from q.

    ``target``'s rows are replicates of the data point x [1, p]. (π̄ with the index s moved to
    slot 0, where the CIS step keeps its reference.)
    """
    z = target.sample(num_samples, generator).clone()
    z[:, 0] = posterior_draws(model, x, z.shape[0], generator).to(z.dtype)
    return CISState(z, target.log_weight(z).detach())


@dataclass
class CISRecord:
    """One CIS chain per row, recorded: ``states[t]`` = X_t (t = 0..T) and ``indices[t]`` [B],
    the slot ℓ selected in the step X_t → X_{t+1} (0 = the reference was kept)."""

    states: list[CISState]
    indices: list[Tensor]

    @property
    def steps(self) -> int:
        return len(self.states) - 1

    def h(self, f: F = identity) -> Tensor:
        """h(X_t), t = 0..T: [T + 1, B, ...]."""
        return torch.stack([h_values(s, f) for s in self.states])


def record_cis_chain(
    target: Target, num_samples: int, steps: int, generator=None, initial: CISState | None = None
) -> CISRecord:
    """Run ``steps`` CIS steps (``kernels.cis_step``) from X_0 ~ q^S (or ``initial``), recording."""
    state = initial if initial is not None else draw(target, num_samples, generator)
    states, indices = [state], []
    for _ in range(steps):
        state, info = cis_step(target, state, generator)
        states.append(state)
        indices.append(info.index)
    return CISRecord(states, indices)


@dataclass
class CISStepView:
    """Step t → t+1 of the chain in row ``row`` of a ``CISRecord``: the set X_t (``state``, all
    rows), its ``weights`` w̄ [S] (the selection probabilities), the ``selected`` slot ℓ (0 =
    the reference kept), the references X_0..X_t as a ``trail`` [t + 1, D], and ``moves``, how
    many of the t steps before this one left their reference."""

    t: int
    row: int
    state: CISState
    weights: Tensor
    selected: int
    trail: Tensor
    moves: int


def cis_step_view(record: CISRecord, t: int, row: int = 0) -> CISStepView:
    """What notebook 02's widget shows of step t → t+1 of a recorded CIS chain (``row``)."""
    if not 0 <= t < record.steps:
        raise ValueError(
            f"t must be in 0..{record.steps - 1} (the record has {record.steps} steps)"
        )
    weights = normalized_weights(record.states[t].log_weights[row])
    trail = torch.stack([s.particles[row, 0] for s in record.states[: t + 1]])
    moves = sum(int(i[row]) != 0 for i in record.indices[:t])
    selected = int(record.indices[t][row])
    return CISStepView(t, row, record.states[t], weights, selected, trail, moves)


def move_probability(
    target: Target, state: CISState, steps: int = 1, generator=None
) -> tuple[float, float]:
    """P(the chain leaves its reference) in one CIS step from ``state``, over its rows: (p, SE).

    ``steps`` > 1 repeats the step from the same state with fresh randomness (more draws).
    """
    moved = torch.cat([cis_step(target, state, generator)[1].index != 0 for _ in range(steps)])
    p = moved.double().mean().item()
    return p, math.sqrt(max(p * (1 - p), 1e-300) / moved.numel())


def selected_slots(run: CoupledRun, t: int) -> tuple[Tensor, Tensor]:
    """The slots (ℓ_X, ℓ_Y) [B] selected in the coupled step (X_t, Y_{t−1}) → (X_{t+1}, Y_t).

    Read off the particle ids: X_{t+1}'s reference is the particle of X_t in slot ℓ_X. −1 where
    a pair was not running at step t + 1; at t = 0 only X moves (ℓ_Y = −1).
    """
    if not 0 <= t < run.steps:
        raise ValueError(f"t must be in 0..{run.steps - 1} (the run has {run.steps} steps)")

    def slot(before: CISState, after: CISState) -> Tensor:
        hit = before.ids == after.ids[:, :1]
        found = hit.any(1) & (after.ids[:, 0] >= 0)
        return torch.where(found, hit.double().argmax(1), -1)

    ix = slot(run.xs[t], run.xs[t + 1])
    if t == 0:
        return ix, torch.full_like(ix, -1)
    return ix, slot(run.ys[t - 1], run.ys[t])


@dataclass
class CoupledStep:
    """The coupled step (X_t, Y_{t−1}) → (X_{t+1}, Y_t) of one recorded chain pair: meeting time
    ``tau``, ``met`` (t ≥ τ: X_t = Y_{t−1}), the selection probabilities w̄^X of X_t and w̄^Y of
    Y_{t−1} [S], and the slots (ℓ_X, ℓ_Y) the maximal coupling selected (0 = own reference)."""

    t: int
    tau: int
    met: bool
    wx: Tensor
    wy: Tensor
    slots: tuple[int, int]

    @property
    def alpha(self) -> float:
        """Σ_j min(w̄^X_j, w̄^Y_j): the probability that the coupling selects one slot in both."""
        return torch.minimum(self.wx, self.wy).sum().item()

    @property
    def outcome(self) -> str:
        """What this step does: "met" (already met), "meet" (both select one shared fresh
        draw: X_{t+1} = Y_t), "own references" (both select slot 0, two different particles)
        or "different" (different slots: not met)."""
        ix, iy = self.slots
        if self.met:
            return "met"
        if ix == iy:
            return "meet" if ix > 0 else "own references"
        return "different"


def coupled_step(run: CoupledRun, t: int, pair: int = 0) -> CoupledStep:
    """What notebook 03's widget shows of the coupled step at t ≥ 1 of chain pair ``pair``."""
    if not 1 <= t < run.steps:
        raise ValueError(f"t must be in 1..{run.steps - 1} (the run has {run.steps} steps)")
    ix, iy = (int(i[pair]) for i in selected_slots(run, t))
    tau = int(run.tau[pair])
    wx = normalized_weights(run.xs[t].log_weights[pair])
    wy = normalized_weights(run.ys[t - 1].log_weights[pair])
    return CoupledStep(t, tau, t >= tau, wx, wy, (ix, iy))


def single_start_average(run: CoupledRun, k: int, m: int, f: F = identity) -> Tensor:
    """(1/(m−k+1)) Σ_{l=k}^{m} H_l, with H_l = h(X_l) + Σ_{t=l+1}^{τ−1} (h(X_t) − h(Y_{t−1})).

    Equal to H_{k:m} (``h_km_terms``): that is where the weights min(1, (t−k)/(m−k+1)) come from.
    """
    return torch.stack([h_km_terms(run, l, l, f).total for l in range(k, m + 1)]).mean(0)


def find_seed(condition: Callable[[int], bool], start: int = 0, tries: int = 1000) -> int:
    """The first seed ≥ ``start`` for which ``condition(seed)`` holds (e.g. a run with τ = 5, to
    draw a diagram in which every kind of term appears)."""
    for seed in range(start, start + tries):
        if condition(seed):
            return seed
    raise ValueError(f"no seed in {start}..{start + tries - 1} satisfies the condition")


def survival_test(tau: Tensor, t: Tensor, law: Tensor) -> tuple[Tensor, Tensor]:
    """Empirical P(τ > t) at each t [K] of meeting times ``tau`` [n], and its z-scores against
    the probabilities ``law`` [K], with the binomial standard error √(law (1 − law) / n) of the
    null hypothesis (so that an empirical frequency of exactly 0 or 1 is still tested)."""
    tau = tau.double().flatten()
    emp = (tau[None, :] > t.double()[:, None]).double().mean(1)
    law = law.double()
    return emp, (emp - law) / (law * (1 - law) / tau.numel()).sqrt()
