"""When does unbiasedness pay? Bias and noise of θ-gradient estimators at equal compute.

At a fixed θ, let g* = (1/N) Σ_i ∇_θ log p_θ(x_i), the full-data gradient. A minibatch gradient
from an estimator (batch B, c log-weight evaluations per data point) has expectation g* + b̄
(b̄ = 0 for an unbiased method) and covariance (Σ_data + Σ_est)/B, where Σ_data is the
between-image covariance of the exact per-image gradients (the minibatch noise SGD pays
anyway) and Σ_est the mean within-image covariance of the estimator. Averaging T independent
steps, at a compute budget C = T·B·c log-weight evaluations,

    MSE(C) = |b̄|² + c · tr(Σ_data + Σ_est) / C.

Over many steps the noise averages away and the bias does not. An unbiased method u beats a
biased one i once C > C* = (c_u tr(Σ_data + Σ_u) − c_i tr(Σ_data + Σ_i)) / |b̄_i|²; SGD with a
small step size averages over roughly 1/(learning rate) steps, so C* against that horizon's
compute says whether the bias or the noise matters more.

``posterior_estimate`` is the one place a method's name chooses its estimator (IWAE-S, ucvae,
thinned ucvae, MSC at a given chain age; SUMO estimates log p(x) itself). ``gradient_samples``
draws R independent gradient estimates per data point with it, with one copy of θ per
replicate so that a single backward pass gives every replicate's gradient (``RowCopies``, the
package's one per-replicate copy of θ). ``minibatch_error_budget`` turns them, with a
reference gradient per data point, into the numbers above with standard errors: a
``budget.ErrorBudget`` whose ``variance`` is tr Σ_est and ``data_variance`` tr Σ_data.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from ucvae_lite.core.coupled import coupled_estimate
from ucvae_lite.core.estimate import Estimate
from ucvae_lite.core.iwae import iwae_estimate, normalized_weights
from ucvae_lite.core.kernels import CISState, Move
from ucvae_lite.core.surrogate import log_likelihood_surrogate, particle_log_joint
from ucvae_lite.core.targets import ImportanceTarget
from ucvae_lite.models.linear_gaussian import LinearGaussian
from ucvae_lite.models.vae import VAE
from ucvae_lite.peers.msc import MSCMemory, advance, particle_sets
from ucvae_lite.peers.sumo import sumo_log_marginal
from ucvae_lite.studies.budget import ErrorBudget
from ucvae_lite.studies.stats import mean_and_se

# --- one copy of θ per replicate ---------------------------------------------------------------


class RowCopies:
    """A model with one copy of θ per row of a batch: ``log_joint(x, z)`` for rows that each use
    their own copy, ``select(index)`` for some rows, and ``gradients()`` [R, |θ|] after one
    backward pass. Built from a ``LinearGaussian`` (θ = W, b, log σ) or a ``VAE`` (θ = the
    decoder's parameters; its own ``log_likelihood`` is used, whatever it is)."""

    def __init__(self, model: LinearGaussian | VAE, rows: int, params: list[Tensor] | None = None):
        self.model, self.rows = model, rows
        if params is None:
            params = [
                p.detach().expand(rows, *p.shape).clone().requires_grad_(True) for p in theta(model)
            ]
        self.params = params
        self.latent_dim = model.latent_dim

    def select(self, index: Tensor) -> RowCopies:
        """The copies of rows ``index`` (a view: gradients still land in this object's copies)."""
        return RowCopies(self.model, len(index), [p[index] for p in self.params])

    def log_joint(self, x: Tensor, z: Tensor) -> Tensor:
        """log p_θ(x_b, z) [B, n] with θ the copy of row b (z [B, n, D])."""
        if isinstance(self.model, LinearGaussian):
            return LinearGaussian(*self.params).log_joint(x, z)
        return type(self.model).log_joint(_BatchedDecoderVAE(self), x, z)

    def log_marginal(self, x: Tensor) -> Tensor:
        """Exact log p_θ(x_b) [B] with θ the copy of row b (a ``LinearGaussian`` only)."""
        if not isinstance(self.model, LinearGaussian):
            raise TypeError("log p(x) in closed form needs a LinearGaussian")
        return LinearGaussian(*self.params).log_marginal(x)

    def gradients(self) -> Tensor:
        """[R, |θ|]: each row's gradient, after a backward pass (zeros where none flowed)."""
        flat = [
            (p.grad if p.grad is not None else torch.zeros_like(p)).reshape(self.rows, -1)
            for p in self.params
        ]
        return torch.cat(flat, 1)


def theta(model: LinearGaussian | VAE) -> list[Tensor]:
    """The parameters θ a gradient is taken in: (W, b, log σ) of a ``LinearGaussian``, the
    decoder's parameters of a ``VAE`` (the flattened gradient's columns follow this order)."""
    if isinstance(model, LinearGaussian):
        return [model.W, model.b, model.log_sigma]
    return list(model.decoder.parameters())


class _BatchedDecoderVAE:
    """Stands in for a VAE in ``VAE.log_joint``: its decoder applies row b's copy of θ to row b."""

    def __init__(self, copies: RowCopies):
        self.copies, self.latent_dim = copies, copies.latent_dim
        self.model = copies.model

    def decoder(self, z: Tensor) -> Tensor:
        h, params = z, iter(self.copies.params)
        for layer in self.model.decoder:
            if isinstance(layer, nn.Linear):
                weight, bias = next(params), next(params)
                h = torch.baddbmm(bias[:, None, :], h, weight.transpose(1, 2))
            else:
                h = layer(h)
        return h

    def log_likelihood(self, x: Tensor, z: Tensor, detach_decoder: bool = False) -> Tensor:
        return type(self.model).log_likelihood(self, x, z, detach_decoder)


# --- gradient estimators -------------------------------------------------------------------------


@dataclass(frozen=True)
class Method:
    """A θ-gradient estimator: ``kind`` in iwae, ucvae, sumo, msc; S; ucvae's k, m and
    correction_prob; msc's chain age (visits at the fixed θ, the last one included)."""

    name: str
    kind: str
    num_samples: int = 10
    k: int = 1
    m: int = 2
    correction_prob: float = 1.0
    age: int = 1
    unbiased: bool = True


def default_methods(p_thin: float = 0.25) -> list[Method]:
    """IWAE-S (S = 5, 10, 50), ucvae (defaults), ucvae thinned, SUMO, MSC at ages 1, 10, 100."""
    return [
        Method("IWAE-5", "iwae", 5, unbiased=False),
        Method("IWAE-10", "iwae", 10, unbiased=False),
        Method("IWAE-50", "iwae", 50, unbiased=False),
        Method("ucvae", "ucvae", 10, 1, 2),
        Method(f"ucvae p={p_thin:g}", "ucvae", 10, 1, 2, correction_prob=p_thin),
        Method("SUMO", "sumo"),
        Method("MSC age 1", "msc", 10, age=1, unbiased=False),
        Method("MSC age 10", "msc", 10, age=10, unbiased=False),
        Method("MSC age 100", "msc", 10, age=100, unbiased=False),
    ]


COST_UNITS = ("log-weight", "decoder")


@dataclass
class GradientSamples:
    """R gradient estimates of one data point: ``grads`` [R, |θ|], mean ``cost`` (log-weight
    evaluations per estimate), mean ``decoder_cost`` (decoder evaluations a training step
    with this method pays per data point: the log-weight evaluations, plus MSC's extra
    particle, since its encoder's IWAE set and its chain share all but one; ucvae's few tail
    re-evaluations, 1–5% in ``benchmarks/step_cost.py``, are not counted) and, for ucvae,
    ``correction`` [R, |θ|] = H − h(X_0)."""

    grads: Tensor
    cost: float
    correction: Tensor | None = None
    decoder_cost: float | None = None  # None: the same as cost

    @property
    def decoder(self) -> float:
        """Decoder evaluations per estimate (``decoder_cost``, or ``cost`` when not set)."""
        return self.cost if self.decoder_cost is None else self.decoder_cost


def posterior_estimate(
    method: Method,
    target,
    generator: torch.Generator | None = None,
    *,
    max_steps: int = 100_000,
    move: Move | None = None,
) -> Estimate:
    """The estimate Σ_n c_n f(z_n) of E_{p(z|x_b)}[f] that ``method`` makes for every row b of
    ``target`` (θ held fixed: no gradients flow through the chains).

    "iwae": c = w̄ of S proposal draws (IWAE-S, biased); "ucvae": H_{k:m} from coupled chains
    (unbiased; ``correction_prob`` thins the correction; a chain still unmet at ``max_steps``
    is truncated and counted in ``truncated``; ``move`` an optional MH move on the
    references); "msc": h(X) of MSC's chain after ``age`` visits (``_msc_estimate``). SUMO
    makes no such estimate (it estimates log p(x) itself: ``gradient_samples``).
    """
    with torch.no_grad():
        if method.kind == "iwae":
            return iwae_estimate(target, method.num_samples, generator)
        if method.kind == "ucvae":
            return coupled_estimate(
                target, method.num_samples, method.k, method.m, max_steps, generator,
                on_timeout="truncate", move=move, correction_prob=method.correction_prob,
            )  # fmt: skip
        if method.kind == "msc":
            return _msc_estimate(target, method, generator)
    raise ValueError(f"unknown method kind {method.kind!r} (iwae, ucvae or msc)")


def gradient_samples(
    method: Method,
    model: LinearGaussian | VAE,
    x: Tensor,
    proposal,
    replicates: int,
    generator: torch.Generator | None = None,
) -> GradientSamples:
    """``replicates`` independent θ-gradient estimates of log p_θ(x) for one data point x [1, P].

    ``proposal`` is q(z | x) for the replicated batch (``replicates`` rows; detached). Each
    replicate's gradient is Σ_n c_n ∇_θ log p_θ(x, z_n) with the coefficients of
    ``posterior_estimate`` (or SUMO's ∇_θ of its log p(x) estimate), in its own copy of θ."""
    R = replicates
    xr = x.reshape(1, -1).expand(R, -1)
    copies = RowCopies(model, R)
    if method.kind == "sumo":
        est, made = sumo_log_marginal(
            ImportanceTarget(copies, xr, proposal), generator, return_cost=True
        )
        est.sum().backward()
        return GradientSamples(copies.gradients(), made.double().mean().item())
    est = posterior_estimate(method, ImportanceTarget(model, xr, proposal), generator)
    log_likelihood_surrogate(est, particle_log_joint(copies, xr)).backward()
    grads, cost = copies.gradients(), est.num_evals.double().mean().item()
    correction = None
    if method.kind == "ucvae" and method.correction_prob == 1.0:  # C = H − h(X_0), for p*
        first = RowCopies(model, R)
        log_likelihood_surrogate(_x0_part(est), particle_log_joint(first, xr)).backward()
        correction = grads - first.gradients()
    decoder_cost = cost + 1.0 if method.kind == "msc" else None
    return GradientSamples(grads, cost, correction, decoder_cost)


def _x0_part(est: Estimate) -> Estimate:
    """IWAE's estimate h(X_0) on the coupled estimate's own X_0 (stored first, S per row)."""
    B, S = est.initial_log_weights.shape
    return Estimate(
        flat_particles=est.flat_particles[: B * S],
        flat_coef=normalized_weights(est.initial_log_weights).reshape(B * S),
        rows=est.rows[: B * S],
        batch_size=B,
        num_samples=S,
        tau=torch.zeros_like(est.tau),
        num_evals=torch.full_like(est.num_evals, S),
        truncated=torch.zeros_like(est.truncated),
        initial_log_weights=est.initial_log_weights,
    )


def _msc_estimate(target, method: Method, generator) -> Estimate:
    """h(X) of MSC chains (one per row of ``target``) after ``method.age`` visits at the fixed
    θ, as an Estimate."""
    S = method.num_samples
    z_probe = target.sample(1, generator)
    R = z_probe.shape[0]
    memory = MSCMemory.empty(R, z_probe.shape[-1], "fixed", device=z_probe.device)
    memory.reference = memory.reference.to(z_probe.dtype)
    index = torch.arange(R, device=z_probe.device)
    with torch.no_grad():
        for _ in range(method.age):
            z = particle_sets(memory, index, target.sample(S, generator))
            state = CISState(z, target.log_weight(z))
            advance(memory, index, state, generator)
    D = z.shape[-1]
    return Estimate(
        flat_particles=z.reshape(R * S, D),
        flat_coef=normalized_weights(state.log_weights).reshape(R * S),
        rows=index.repeat_interleave(S),
        batch_size=R,
        num_samples=S,
        tau=torch.zeros(R, dtype=torch.long, device=z.device),
        num_evals=torch.full((R,), S, device=z.device),
        truncated=torch.zeros(R, dtype=torch.bool, device=z.device),
        initial_log_weights=state.log_weights,
    )


# --- bias and noise at equal compute --------------------------------------------------------------


def minibatch_error_budget(
    name: str,
    samples: Sequence[GradientSamples],
    reference: Tensor,
    reference_var: Tensor | None = None,
    unbiased: bool = True,
    groups: int = 10,
    unit: str = "log-weight",
) -> ErrorBudget:
    """The budget of one method's minibatch gradients from its samples for N data points and
    the reference gradients ``reference`` [N, |θ|] (exact, or estimated: ``reference_var``
    [N, |θ|] is then the per-coordinate variance of each estimated reference).

    |b̄|² and its SE: ``_squared_bias``. tr Σ_est is the mean over data points of the
    replicates' total variance, tr Σ_data the variance of the reference gradients over data
    points (less the reference's own noise), the cost the mean over data points (``unit``:
    log-weight or decoder evaluations), each with the standard error of a mean over the N
    points; ``correction2`` = E|C|² when every sample carries ucvae's correction C.
    """
    N = len(samples)
    ref = reference.double()
    bias2, bias2_se = _squared_bias(samples, ref, reference_var, groups)
    per_point = torch.stack([s.grads.double().var(0).sum() for s in samples])  # tr Σ_est,i
    var_data = ref.var(0).sum().item() if N > 1 else 0.0
    if reference_var is not None:  # an estimated reference: its own noise is not Σ_data
        var_data -= reference_var.double().sum(1).mean().item()
    per = [s.cost if unit == "log-weight" else s.decoder for s in samples]
    costs = torch.tensor(per, dtype=torch.float64, device=ref.device)
    correction2 = None
    if all(s.correction is not None for s in samples):
        correction2 = (
            torch.stack([s.correction.double().pow(2).sum(1).mean() for s in samples]).mean().item()
        )
    variance, variance_se = _over_points(per_point)
    cost, cost_se = _over_points(costs)
    return ErrorBudget(
        name, bias2, bias2_se, variance, variance_se, cost, cost_se,
        data_variance=var_data, unbiased=unbiased, correction2=correction2,
    )  # fmt: skip


def _over_points(values: Tensor) -> tuple[float, float]:
    """Mean over the data points and its standard error (0 for a single data point)."""
    if values.numel() < 2:
        return values.double().mean().item(), 0.0
    return mean_and_se(values)


def _squared_bias(
    samples: Sequence[GradientSamples],
    reference: Tensor,
    reference_var: Tensor | None,
    groups: int,
) -> tuple[float, float]:
    """|b̄|², estimated without the noise's own contribution, and its standard error.

    The replicates of every data point are split into G groups, b̂_g = mean_i(ĝ_{i,g} − g*_i)
    per group, and U = Σ_{g≠h} b̂_g·b̂_h / (G(G−1)) has E[U] = |b̄|² + tr Var(e) (e: the
    reference's error, common to all groups), whose trace needs only per-coordinate variances;
    its standard error is the jackknife over groups (gradient coordinates are correlated, so
    per-coordinate variances alone would understate it). With a heavy-tailed estimator (SUMO)
    a few replicates can dominate any such estimate: read its SE as a lower bound.
    """
    N = len(samples)
    G = max(2, min(groups, min(s.grads.shape[0] for s in samples)))
    per_group = torch.stack(  # [G, |θ|]: b̂_g
        [
            torch.stack([chunk.double().mean(0) for chunk in s.grads.tensor_split(G)])
            - reference[i]
            for i, s in enumerate(samples)
        ]
    ).mean(0)
    ref_noise = reference_var.double().sum().item() / N**2 if reference_var is not None else 0.0

    def u_stat(b: Tensor) -> float:
        g = b.shape[0]
        return ((b.sum(0).pow(2).sum() - b.pow(2).sum()) / (g * (g - 1))).item() - ref_noise

    leave_one_out = [u_stat(torch.cat([per_group[:g], per_group[g + 1 :]])) for g in range(G)]
    mean_loo = sum(leave_one_out) / G
    jackknife_se = math.sqrt((G - 1) / G * sum((v - mean_loo) ** 2 for v in leave_one_out))
    return u_stat(per_group), jackknife_se


def measure(
    methods: Sequence[Method],
    model: LinearGaussian | VAE,
    xs: Tensor,
    proposal_for: Callable[[Tensor, int], object],
    replicates: int,
    reference: Tensor,
    reference_var: Tensor | None = None,
    seed: int = 0,
    progress: Callable | None = None,
    unit: str = "log-weight",
) -> list[ErrorBudget]:
    """Error budgets of ``methods`` over the data points ``xs`` [N, P]; ``proposal_for(x, R)`` is
    q(· | x) for one data point replicated R times (detached). ``unit``: what a budget's cost
    counts, "log-weight" evaluations or "decoder" evaluations (``GradientSamples``)."""
    if unit not in COST_UNITS:
        raise ValueError(f"unit must be one of {COST_UNITS}, got {unit!r}")
    g = torch.Generator(device=xs.device).manual_seed(seed)
    out = []
    for method in methods:
        rows = range(len(xs)) if progress is None else progress(range(len(xs)), desc=method.name)
        samples = [
            gradient_samples(
                method, model, xs[i : i + 1], proposal_for(xs[i : i + 1], replicates), replicates, g
            )
            for i in rows
        ]
        out.append(
            minibatch_error_budget(
                method.name, samples, reference, reference_var, method.unbiased, unit=unit
            )
        )
    return out


def budget_table(
    budgets: Sequence[ErrorBudget], compute: Sequence[float] = (1e3, 1e4, 1e5, 1e6)
) -> str:
    """A markdown table: cost, |b̄|² ± SE, tr Σ_est, tr Σ_data and MSE at a few budgets."""
    head = (
        "| method | evals c | abs bias² ± SE | tr Σ_est | tr Σ_data | "
        + " | ".join(f"MSE at C = {c:.0e}" for c in compute)
        + " |"
    )
    lines = [head, "|" + "---|" * (5 + len(compute))]
    for b in budgets:
        mses = " | ".join(f"{b.mse(c):.3g}" for c in compute)
        lines.append(
            f"| {b.name} | {b.cost:.1f} | {b.bias2:.3g} ± {b.bias2_se:.2g} | {b.variance:.3g} | "
            f"{b.data_variance:.3g} | {mses} |"
        )
    return "\n".join(lines)
