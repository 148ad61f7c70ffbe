# ---
# jupyter:
#   jupytext:
#     formats: ipynb,py:percent
#     text_representation:
#       extension: .py
#       format_name: percent
#       format_version: '1.3'
#       jupytext_version: 1.19.6
#   kernelspec:
#     display_name: Python 3 (ipykernel)
#     language: python
#     name: python3
# ---

# %% [markdown]
# # 04 · The unbiased estimator $H_{k:m}$, and when it pays
#
# **Learning objectives.** After this notebook you can
# 1. derive why $H_{k:m}$ is unbiased: the telescoping sum, where the weights
#    $\min(1, (t-k)/(m-k+1))$ come from, and the conditions on the tail of $\tau$;
# 2. read the lag-1 timeline of a real run and assemble $H_{k:m}$ from it yourself;
# 3. measure mean squared error against a compute budget and compute the crossover budget $C^*$
#    above which the unbiased estimator beats IWAE-$S$, with its standard error;
# 4. derive what that means for stochastic gradient descent: it averages noise, not bias.
#
# **Lab, part 3 of 3** (02–04 are the 2-hour lab). **Notation:**
# [docs/notation.md](../docs/notation.md) has every symbol of the lab in one table.
#
# **Prerequisites.** Notebooks 01–03 ($h$, the CIS kernel, the coupled kernel $\bar K$, $\tau$).
#
# **Study time: about 30 minutes (28 in class, 2 after it), 37 with the optional exercises.**
# Estimated: ≈ 1,810 words at 150 a minute (12 min), $H_{k:m}$ (10 min), two predictions written
# down and a widget (6 min); the SGD section, read after class, ≈ 300 words (2 min); the
# optional weights (2 min) and $C^*$ (5 min) exercises; the cells run in about 16–23 s (fast)
# or 27 s (full), on a 2-core machine loaded by other jobs.
#
# **Fast or full.** Stored outputs: `UCVAE_FAST=1`. `UCVAE_FAST=0` for the full run; every
# asserted conclusion holds in both, and numbers printed below come from the run you see.

# %%
# %matplotlib inline
import math

import torch
from IPython.display import display

import ucvae_lite as u
from ucvae_lite.lab import checks
from ucvae_lite.lab import teaching as T
from ucvae_lite.lab import widgets as wd
from ucvae_lite.lab.plots import diagrams, viz
from ucvae_lite.studies.budget import crossover_budget, error_budget

torch.set_num_threads(1)  # small tensors: one thread is fastest, and kind to shared CPUs
FAST = T.fast_mode()
R = 2_000 if FAST else 20_000  # independent estimates per measurement
g = torch.Generator().manual_seed(4)

model = u.LinearGaussian.example(latent_dim=2, obs_dim=4, sigma=0.7, seed=0)
x = model.sample_data(3, torch.Generator().manual_seed(1))[:1]
exact = model.posterior(x)[0][0]  # E[z | x]


def replicas(n: int = R, shift: float = 0.5, scale: float = 1.5):
    """A target whose n rows are copies of the same data point: n independent estimates."""
    return model.target(x.expand(n, -1), shift=shift, scale=scale)


# %% [markdown]
# ## The estimator
# With $h(\xi) = \sum_j \bar w_j(\xi) f(z_j)$, lag-1 chains ($X_0, Y_0 \sim q^S$,
# $X_1 \sim K(X_0)$, $(X_{t+1}, Y_t) \sim \bar K((X_t, Y_{t-1}))$), the meeting time
# $\tau = \inf\{t \ge 1: X_t = Y_{t-1}\}$ and integers $0 \le k \le m$:
#
# $$H_{k:m} = \underbrace{\frac{1}{m-k+1}\sum_{t=k}^{m} h(X_t)}_{\text{MCMC average}}
#   \;+\; \underbrace{\sum_{t=k+1}^{\tau-1} \min\Big(1, \frac{t-k}{m-k+1}\Big)
#   \big(h(X_t) - h(Y_{t-1})\big)}_{\text{bias correction}}.$$
#
# The chains run until $t \ge \max(\tau, m)$. With $k = m = 0$,
# $H_{0:0} = h(X_0) + \sum_{t=1}^{\tau-1}\big(h(X_t) - h(Y_{t-1})\big)$: **IWAE's estimate plus a
# correction**.
#
# **Predict.** In the run drawn below, $S = 5$, $(k, m) = (1, 3)$ and $\tau = 5$. Which
# differences $h(X_t) - h(Y_{t-1})$ enter $H_{1:3}$, and with which weights? Answer in the cell
# below (2 points), then run the next cell.

# %% [markdown] jupyter={"source_hidden": true} nbgrader={"grade": true, "grade_id": "predict_hkm_terms", "locked": false, "points": 2, "schema_version": 3, "solution": true, "task": false}
# <details><summary>Model answer and rubric: open it only after writing yours</summary>
#
# **Model answer.** The correction runs over $t = k+1, \dots, \tau-1 = 2, 3, 4$ with weights
# $\min(1, (t-k)/(m-k+1)) = \min(1, (t-1)/3)$: $\frac13$, $\frac23$ and $1$. From $t = \tau = 5$ on
# the chains have met, $X_t = Y_{t-1}$, and the differences are zero. The MCMC part averages
# $h(X_1), h(X_2), h(X_3)$.
#
# **Rubric (2 points).** 1: the right steps, $t = 2, 3, 4$ (neither $t = 1$ nor $t = 5$). 1: the
# right weights, $\frac13, \frac23, 1$. Weights $1, 1, 1$ (no ramp) or $\frac14, \frac24, \frac34$
# (dividing by $m - k + 2$) earn 0 for the second point.
#
# </details>

# %%
one = model.target(x, shift=0.5, scale=1.5)


def recorded(seed: int, m_run: int = 8):
    """One chain pair, run to step m_run at least (so X_τ is recorded even after meeting)."""
    return T.lag_coupled_chains(one, 5, m_run, generator=torch.Generator().manual_seed(seed))


seed = T.find_seed(lambda s: int(recorded(s).tau[0]) == 5)  # a run where every term shows
run = recorded(seed)
fig = viz.new_figure(size=(9.5, 3.4))
diagrams.lag_chains_timeline(fig.axes[0], run, 1, 3, h_x=run.h_x()[:, 0, 0], h_y=run.h_y()[:, 0, 0])
viz.save(fig, "04_hkm_timeline")
display(fig)

# %% [markdown]
# The shaded steps $t = 1..3$ are averaged. The corrections are the differences at
# $t = k+1..\tau-1 = 2, 3, 4$, weighted $1/3, 2/3, 1$; at $t \ge \tau$ the two chains hold the
# same set and the differences vanish. The next section says why.
#
# ## Why $H_{k:m}$ is unbiased
# **One start, $k = m$.** Let $H_k = h(X_k) + \sum_{t=k+1}^{\tau-1}\big(h(X_t) - h(Y_{t-1})\big)$.
# For $t \ge \tau$ the chains have met, $X_t = Y_{t-1}$, so the sum may run to infinity. $Y$ is a
# CIS chain started from $q^S$, like $X$, one step behind: $Y_{t-1}$ has the law of $X_{t-1}$.
# Cut the sum at a finite $T > k$: its expectation **telescopes**, with no assumption beyond
# finite means,
#
# $$\mathbb E\Big[h(X_k) + \sum_{t=k+1}^{T}\big(h(X_t) - h(Y_{t-1})\big)\Big]
#   = \mathbb E h(X_k) + \sum_{t=k+1}^{T} \big(\mathbb E h(X_t) - \mathbb E h(X_{t-1})\big)
#   = \mathbb E h(X_T).$$
#
# Now let $T \to \infty$. The left side becomes $\mathbb E H_k$ only if the expectation may be
# taken through the limit (the truncated sums equal $H_k$ once $T \ge \tau$; the conditions
# below). The right side needs an assumption of its own, used here and nowhere else:
#
# **(A) the chain's marginals converge:** $\mathbb E\,h(X_T) \to \mathbb E_{\bar\pi}[h]$ as
# $T \to \infty$.
#
# It holds when the law of $X_T$ converges to $\bar\pi$ (in total variation: notebook 02's
# bounded weights give a distance at most $(1-\epsilon)^T$) and $h$ is bounded, or more generally
# uniformly integrable along the chain. With both,
#
# $$\mathbb E H_k = \lim_{T\to\infty} \mathbb E h(X_T) \overset{(A)}{=} \mathbb E_{\bar\pi}[h]
#   = \mathbb E_{p(z\mid x)}[f].$$
#
# Without (A) the telescoping still ends at $\lim_T \mathbb E h(X_T)$, whatever that is: the
# coupling makes the estimator as good as the chain's limit, no better.
#
# **The weights.** $H_{k:m}$ is the average of $H_k, H_{k+1}, \dots, H_m$, each unbiased. The
# difference at step $t$ appears in $H_l$ for $l = k, \dots, \min(m, t-1)$: in
# $\min(m-k+1,\ t-k)$ of the $m-k+1$ estimators. Its weight in the average is therefore
# $\min\big(1, (t-k)/(m-k+1)\big)$, and the $h(X_l)$ terms make the MCMC average.
#
# **The conditions.** Exchanging $\mathbb E$ and $\sum_t$ needs the sum to converge absolutely,
# $\sum_t \mathbb E\big[|h(X_t) - h(Y_{t-1})|\,\mathbf 1\{\tau > t\}\big] < \infty$. Jacob,
# O'Leary & Atchadé (2020) show it when $\tau$ has **geometric tails**,
# $P(\tau > t) \le C\delta^t$ with $\delta < 1$, and $h(X_t)$ has a bounded moment of order
# $2 + \eta$; Middleton, Deligiannidis, Doucet & Jacob (2020) allow **polynomial tails**
# $P(\tau > t) \le C t^{-\alpha}$ if $\alpha$ is large enough for the moments of $h$. The tail
# index $\alpha$ says what you pay:
#
# * $\alpha \le 1$: $\mathbb E\tau = \sum_t P(\tau > t) = \infty$, the expected cost is infinite.
#   The $1/t$ law of degenerate weights (notebook 03) is $\alpha = 1$, the borderline.
# * $1 < \alpha \le 2$: finite expected cost but $\mathrm{Var}\,\tau = \infty$; the correction sum
#   has about $\tau$ terms, so the estimator's variance is typically infinite too.
#
# So "unbiased for any $f$" holds only with these conditions: meeting fast enough for the $f$ at
# hand.
#
# **Numerical checks against exact answers.**
# (1) the weights: on a recorded run, the average of the single-start $H_l$ equals $H_{k:m}$
# from its formula, and both equal the library's `u.coupled_estimate` with the same seed;
# (2) the telescoping: the mean correction of $H_{0:0}$ is $\mathbb E_p f - \mathbb E h(X_0)$,
# minus IWAE's bias; (3) $H$ is unbiased, and IWAE at the same $S$ is rejected by the same test;
# (4) assumption (A) on this model: the bias $\mathbb E h(X_T) - \mathbb E_p f$ of one chain
# shrinks with $T$, from IWAE's at $T = 0$ to nothing measurable by $T = 40$.

# %%
S = 5
for k, m in [(0, 0), (1, 3), (2, 6)]:
    rec = T.lag_coupled_chains(one, S, m, generator=torch.Generator().manual_seed(seed))
    lib = u.coupled_estimate(one, S, k, m, generator=torch.Generator().manual_seed(seed))
    by_formula = T.h_km_terms(rec, k, m).total
    torch.testing.assert_close(T.single_start_average(rec, k, m), by_formula)
    torch.testing.assert_close(by_formula, lib.mean())
print("(1) average of single-start H_l = H_{k:m} from its formula = u.coupled_estimate: exact")

est = u.coupled_estimate(replicas(), S, 0, 0, generator=g)
iw = u.iwae_estimate(replicas(), S, generator=g)
h_mean, iw_mean = est.mean(), iw.mean()
terms = T.h_km_terms(T.lag_coupled_chains(replicas(), S, 0, generator=g), 0, 0)
correction = terms.correction.sum(0)  # Σ_{t=1}^{τ−1} (h(X_t) − h(Y_{t−1})) per replicate
iwae_big = u.iwae_estimate(replicas(50 * R), S, generator=g).mean()  # E h(X_0), precisely
z_tele = T.z_score(correction, exact - iwae_big.mean(0))
print(f"(2) mean correction {correction.mean(0).numpy().round(4)} vs exact − E h(X_0) = "
      f"{(exact - iwae_big.mean(0)).numpy().round(4)}: |z| ≤ {z_tele.abs().max():.1f}")  # fmt: skip
z_h, z_iw = T.z_score(h_mean, exact), T.z_score(iw_mean, exact)
print(f"(3) H_0:0 vs E[z | x]: largest |z| {z_h.abs().max():.1f};  "
      f"IWAE-{S}: {z_iw.abs().max():.1f} (rejected)")  # fmt: skip
assert z_tele.abs().max() < T.z_threshold(2), "the correction removes IWAE's bias on average"
assert z_h.abs().max() < T.z_threshold(2), "the coupled estimate must be unbiased"
assert z_iw.abs().max() > T.z_threshold(2), "IWAE's estimate must be rejected as biased"
assert not bool(est.truncated.any())
h_chain = T.run_cis_chain(replicas(), S, 40, generator=torch.Generator().manual_seed(40))
z_by_T = {T_: T.z_score(h_chain[T_], exact).abs().max().item() for T_ in (0, 5, 10, 20, 40)}
bias_by_T = {T_: (h_chain[T_].mean(0) - exact).norm().item() for T_ in z_by_T}
print("(4) ‖E h(X_T) − E[z | x]‖ (largest |z|): " + ",  ".join(
    f"T = {T_}: {bias_by_T[T_]:.3f} ({z_:.1f})" for T_, z_ in z_by_T.items()))  # fmt: skip
assert z_by_T[0] > T.z_threshold(2) and z_by_T[40] < T.z_threshold(2), "(A) on this model"
assert bias_by_T[10] < bias_by_T[0] / 2, "the marginal bias shrinks with T"

fig = viz.new_figure(ncols=2, size=(4.2, 3.3))
viz.running_mean(fig.axes[0], h_mean[:, 0], exact[0].item(), "coupled H_0:0", viz.COLORS["x"])
viz.running_mean(fig.axes[0], iw_mean[:, 0], exact[0].item(), f"IWAE, S = {S}", viz.COLORS["iwae"])
fig.axes[0].set_ylabel("running mean of E[z₁ | x] estimates")
fig.axes[0].legend(fontsize=7)
viz.histogram_vs_exact(
    fig.axes[1], {"coupled H_0:0": h_mean[:, 0], f"IWAE S={S}": iw_mean[:, 0]}, exact[0].item()
)
fig.axes[1].set_xlabel("one estimate of E[z₁ | x]")
fig.axes[1].set_ylabel("density")
viz.save(fig, "04_unbiasedness")
display(fig)

# %% [markdown]
# The running mean of $H$ settles on the exact value; IWAE's settles elsewhere, however many
# estimates are averaged. $H$ pays with a wider spread (right).
#
# **Exercise 1 (1 point, derivation, optional).** For $(k, m) = (2, 5)$, give the weights of
# $h(X_t) - h(Y_{t-1})$ for $t = 3, 4, 5, 6, 7$ (assuming $\tau > 7$), as a list `answer_ex1`.
#
# **Expected output.** A list of five numbers. A worked example: for $(k, m) = (1, 3)$ and
# $t = 2, 3, 4, 5$ the list is `[1/3, 2/3, 1, 1]`. The checker prints ✓ and your values.

# %% jupyter={"source_hidden": true} nbgrader={"grade": false, "grade_id": "ex1_weights", "locked": false, "schema_version": 3, "solution": true, "task": false} tags=["solution"]
# answer_ex1 = [...]  # min(1, (t − k)/(m − k + 1)) for t = 3, ..., 7
### BEGIN SOLUTION
answer_ex1 = [min(1, (t - 2) / (5 - 2 + 1)) for t in range(3, 8)]
### END SOLUTION

# %% nbgrader={"grade": true, "grade_id": "ex1_weights_test", "locked": true, "points": 1, "schema_version": 3, "solution": false, "task": false}
checks.score(checks.check_value, "04_correction_weights", answer_ex1, points=1)

# %% [markdown]
# **Exercise 2 (3 points).** Write `h_km(h_x, h_y, tau, k, m)` for one chain pair: `h_x` holds
# $h(X_0), \dots, h(X_T)$ and `h_y` holds $h(Y_0), \dots, h(Y_{T-1})$ (1-D tensors, $f$ one
# coordinate), with $T \ge \max(\tau, m)$; return $H_{k:m}$ as a number. The checker compares
# it with the library on recorded runs, for several $(k, m)$.
#
# **Expected output.** A worked example to try first: with
# `h_x = torch.tensor([1.0, 2.0, 3.0, 4.0])`, `h_y = torch.tensor([0.0, 2.0, 4.0])` and
# $\tau = 3$, $H_{0:0} = 1 + (2 - 0) + (3 - 2) = 4$ and
# $H_{0:1} = \frac{1 + 2}{2} + \frac12(2 - 0) + 1\cdot(3 - 2) = 3.5$. The checker below prints
# a line starting with ✓; a wrong answer raises an error that names the likely mistake.


# %% jupyter={"source_hidden": true} nbgrader={"grade": false, "grade_id": "ex2_h_km", "locked": false, "schema_version": 3, "solution": true, "task": false} tags=["solution"]
def h_km(h_x, h_y, tau, k, m):
    """H_{k:m} from h(X_0..X_T), h(Y_0..Y_{T−1}) and the meeting time τ.

    h_x [T + 1] and h_y [T]: 1-D tensors, T ≥ max(τ, m); tau, k, m: Python ints, 0 ≤ k ≤ m.
    Returns a Python float.
    """
    # total = ...                  # the MCMC average: the mean of h(X_k), ..., h(X_m)
    # for t in range(k + 1, tau):  # the bias correction, t = k + 1, ..., τ − 1
    #     total = total + ...      # its weight times h(X_t) − h(Y_{t−1})
    # return float(total)
    ### BEGIN SOLUTION
    total = h_x[k : m + 1].mean()
    for t in range(k + 1, tau):
        total = total + min(1, (t - k) / (m - k + 1)) * (h_x[t] - h_y[t - 1])
    return float(total)
    ### END SOLUTION


# %% nbgrader={"grade": true, "grade_id": "ex2_h_km_test", "locked": true, "points": 3, "schema_version": 3, "solution": false, "task": false}
checks.score(checks.check_hkm, h_km, points=3)
### BEGIN HIDDEN TESTS
checks.score(checks.check_hkm, h_km, points=3, runs=[{"seed": 6}])
### END HIDDEN TESTS

# %% [markdown]
# ## Variance and cost
# $H_{k:m}$ costs $S$ evaluations for $X_0$, $S$ for $(X_1, Y_0)$, and $S - 1$ for each further
# step the chains need, $\max(\tau, m)$ steps in all. Larger $k$ and $m$ average more of the chain
# and shrink the correction's weights (lower variance) but cost more steps; larger $S$ meets
# sooner. **Widget:** move $k$, $m$, $S$ and the proposal; it shows the noise per unit of compute
# ($c\cdot V$), IWAE's squared bias next to $H$'s, and the mean squared error at each budget
# (next section).

# %%
wd.variance_widget(model, x, num_samples=5, k=0, m=0, seed=0)

# %% [markdown]
# ## Error against budget: when does unbiasedness pay?
# Average $n$ independent runs of an estimator with bias $b$, per-run variance $V$ (summed over
# coordinates) and mean cost $c$ log-weight evaluations. A budget of $C$ evaluations buys
# $n = C/c$ runs, and the average's mean squared error is
#
# $$\mathrm{MSE}(C) = |b|^2 + \frac{c\,V}{C}.$$
#
# The unbiased estimator ($b = 0$) beats IWAE-$S$ once $c_u V_u / C < |b_i|^2 + c_i V_i / C$:
#
# $$C > C^* = \frac{c_u V_u - c_i V_i}{|b_i|^2}.$$
#
# Below we measure $|b|^2$ (with its standard error), $V$ and $c$ for $f(z) = z$ and compute $C^*$
# for $H_{1:2}$ at $S = 10$ against IWAE-5, IWAE-20 and IWAE-100.
#
# **Predict.** With a budget of $10^4$ evaluations, which has the smaller error: the average of
# IWAE-100 estimates, or the average of unbiased estimates? Answer in the cell below (1 point),
# then run the next cell.

# %% [markdown] jupyter={"source_hidden": true} nbgrader={"grade": true, "grade_id": "predict_budget_1e4", "locked": false, "points": 1, "schema_version": 3, "solution": true, "task": false}
# <details><summary>Model answer and rubric: open it only after writing yours</summary>
#
# **Model answer.** The average of IWAE-100 estimates. Its bias is small (squared, a few times
# $10^{-4}$) and its noise per unit of compute, $c\,V$, is far below the unbiased estimator's, so
# its crossover budget $C^*$ is several times $10^4$: at $10^4$ evaluations the unbiased
# average is still the noisier, and its error the larger.
#
# **Rubric (1 point).** 1: IWAE-100, with the reason (below $C^*$ the noise term $cV/C$
# dominates, and the unbiased estimator's is the larger; IWAE-100's bias is small). ½: IWAE-100
# without a reason. 0: "the unbiased one, because it has no bias".
#
# </details>

# %%
R_U = 5_000 if FAST else 40_000  # coupled estimates
R_I = 50_000 if FAST else 200_000  # IWAE estimates (cheap; their small bias needs many)
coupled = u.coupled_estimate(replicas(R_U), 10, 1, 2, generator=g)
budgets = {
    "H_{1:2}, S = 10": error_budget(
        coupled.mean(), exact, coupled.num_evals, "H_{1:2}, S = 10", unbiased=True
    )
}
for S_i in (5, 20, 100):
    means = torch.cat([u.iwae_estimate(replicas(10_000), S_i, generator=g).mean()
                       for _ in range(R_I // 10_000)])  # fmt: skip
    budgets[f"IWAE-{S_i}"] = error_budget(means, exact, S_i, f"IWAE-{S_i}")
for eb in budgets.values():
    print(f"{eb.name:16s} |bias|² = {eb.bias2:10.2e} ± {eb.bias2_se:.1e}   V = {eb.variance:.4f}"
          f"   cost c = {eb.cost:6.1f}   c·V = {eb.cost * eb.variance:7.3f}")  # fmt: skip
unbiased = budgets["H_{1:2}, S = 10"]
crossings = {
    name: crossover_budget(unbiased, eb) for name, eb in budgets.items() if eb is not unbiased
}
for name, (c_star, se) in crossings.items():
    print(
        f"H_{{1:2}} beats {name:9s} in MSE once the budget exceeds C* = {c_star:9,.0f} ± {se:,.0f}"
    )
fig = viz.new_figure(size=(6.0, 4.0))
viz.mse_vs_budget(fig.axes[0], torch.logspace(0, 6, 80).numpy(), list(budgets.values()), crossings)
fig.axes[0].set_title("error of the average against compute (posterior mean)", fontsize=9)
viz.save(fig, "04_error_budget")
display(fig)

assert abs(unbiased.bias2) < 4 * unbiased.bias2_se + 1e-12, "H: no bias to detect"
for name, (c_star, se) in crossings.items():
    eb = budgets[name]
    assert eb.bias2 > 4 * eb.bias2_se, f"{name}'s bias is resolved"
    assert c_star > 4 * se, f"C* for {name} is positive and resolved"
    for factor, u_wins in ((4.0, True), (0.25, False)):
        C = factor * c_star
        gap = eb.mse(C) - unbiased.mse(C, unbiased=True)
        sd = math.hypot(eb.mse_se(C), unbiased.mse_se(C, unbiased=True))
        assert (gap > 4 * sd) if u_wins else (gap < -4 * sd), f"{name} at {factor} C*"
at_1e4 = {name: c_star - 4 * se > 1e4 for name, (c_star, se) in crossings.items()}
assert at_1e4 == {"IWAE-5": False, "IWAE-20": False, "IWAE-100": True}
assert all(c_star + 4 * se < 1e4 for c_star, se in list(crossings.values())[:2])

# %% [markdown]
# Each IWAE line flattens at its squared bias: more compute averages its noise away, never its
# bias. The unbiased line keeps falling like $1/C$ and crosses each IWAE line at its $C^*$
# (grey bands: ± 2 SE; the numbers are printed above). Below $C^*$, IWAE's smaller noise wins;
# above it, its bias is all that is left. The larger IWAE's $S$, the smaller its bias and the
# later the crossing: at $10^4$ evaluations IWAE-100 still has the smaller error (asserted),
# while IWAE-5 and IWAE-20 have long been overtaken. The same measurement for the θ-gradient:

# %%
S_g, k_g, m_g = 5, 1, 2
exact_grad = T.exact_gradient(model, x)
est_g = u.coupled_estimate(replicas(), S_g, k_g, m_g, generator=g)
grads = {
    f"coupled S={S_g} ({k_g},{m_g})": (T.per_replicate_gradients(model, x, est_g), est_g.num_evals),
    "IWAE-5": (T.per_replicate_gradients(model, x, u.iwae_estimate(replicas(), 5, g)), 5),
    "IWAE-20": (T.per_replicate_gradients(model, x, u.iwae_estimate(replicas(), 20, g)), 20),
}
grad_budgets = {name: error_budget(gr, exact_grad, c, name) for name, (gr, c) in grads.items()}
ub = grad_budgets[f"coupled S={S_g} ({k_g},{m_g})"]
for name, eb in grad_budgets.items():
    zmax = T.z_score(grads[name][0], exact_grad).abs().max().item()
    c_star = "" if eb is ub else "  C* = {:,.0f} ± {:,.0f}".format(*crossover_budget(ub, eb))
    print(f"{name:20s} max |z| {zmax:5.1f}  |bias|² {eb.bias2:8.3f} ± {eb.bias2_se:.3f}  "
          f"c·V {eb.cost * eb.variance:8.1f}{c_star}")  # fmt: skip
fig = viz.new_figure(size=(6.5, 3.4))
viz.gradient_bias_bars(fig.axes[0], {n: gr for n, (gr, _) in grads.items()}, exact_grad)
fig.axes[0].set_title("gradient bias per coordinate: coupled vs IWAE", fontsize=9)
viz.save(fig, "04_gradient")
display(fig)
assert T.z_score(
    grads[f"coupled S={S_g} ({k_g},{m_g})"][0], exact_grad
).abs().max() < T.z_threshold(13)
assert T.z_score(grads["IWAE-5"][0], exact_grad).abs().max() > T.z_threshold(13)
assert crossover_budget(ub, grad_budgets["IWAE-5"])[0] > 0

# %% [markdown]
# ## What this means for SGD: it averages noise, not bias
# *After class: read this section with the homework.*
#
# Take the simplest case: a quadratic loss $\frac\lambda2(\theta - \theta^*)^2$ and SGD with a
# constant learning rate $\eta$, fed gradient estimates with bias $b$ and independent noise
# $\xi_n$ of variance $\sigma^2$. The error $e_n = \theta_n - \theta^*$ obeys
#
# $$e_{n+1} = (1 - \eta\lambda)\,e_n - \eta\,(b + \xi_n), \qquad\text{so}\qquad
#   e_n \approx -\eta\sum_{j \ge 0}(1 - \eta\lambda)^j\,(b + \xi_{n-1-j})$$
#
# once the start is forgotten: the iterate is an exponentially weighted average of the past
# estimates, over a window of about $1/(\eta\lambda)$ steps (the curvature sets the unit, not
# $1/\eta$ alone). Its mean and variance settle at
#
# $$\mathbb E\,e_n \to -\frac{b}{\lambda}, \qquad
#   \mathrm{Var}\,e_n \to \frac{\eta^2\sigma^2}{1 - (1-\eta\lambda)^2}
#   = \frac{\sigma^2}{\lambda^2\,n_{\text{eff}}}, \qquad
#   n_{\text{eff}} = \frac{2 - \eta\lambda}{\eta\lambda},$$
#
# so $\lambda^2\,\mathbb E e_n^2 \to b^2 + \sigma^2/n_{\text{eff}}$: exactly the mean squared
# error of an average of $n_{\text{eff}} \approx 2/(\eta\lambda)$ independent estimates. A smaller
# learning rate averages the noise over more steps; the bias is not averaged at all. The budget
# comparison above applies with $C = c\,n_{\text{eff}}$: the unbiased gradient pays when that
# exceeds $C^*$, before counting the other noise SGD pays anyway (the minibatch: notebooks 06
# and 07).
#
# **Numerical check**: SGD on this quadratic ($\lambda = 0.5$, $b = 0.1$, $\sigma = 1$), many
# independent runs, against the two limits; power: a window of $1/\eta$ steps (ignoring $\lambda$)
# predicts another variance and is rejected.

# %%
runs, lam, b_sgd, sigma_sgd = 20_000, 0.5, 0.1, 1.0
g_sgd = torch.Generator().manual_seed(41)
for eta in (0.1, 0.02):
    e = torch.zeros(runs, dtype=torch.float64)
    for _ in range(int(20 / (eta * lam))):  # 20 windows: the start is forgotten
        noise = sigma_sgd * torch.randn(runs, generator=g_sgd, dtype=torch.float64)
        e = (1 - eta * lam) * e - eta * (b_sgd + noise)
    n_eff = (2 - eta * lam) / (eta * lam)
    var_pred, var_naive = sigma_sgd**2 / (lam**2 * n_eff), eta * sigma_sgd**2 / lam**2
    var_se = e.var().item() * math.sqrt(2 / (runs - 1))
    print(f"η = {eta}: mean {e.mean():+.4f} (−b/λ = {-b_sgd / lam:+.4f}),  variance "
          f"{e.var():.5f} ± {var_se:.5f} (σ²/(λ² n_eff) = {var_pred:.5f}, n_eff = {n_eff:.0f}; "
          f"a 1/η window: {var_naive:.5f})")  # fmt: skip
    assert T.z_score(e, torch.tensor(-b_sgd / lam)).abs() < T.z_threshold(4), "mean: −b/λ"
    assert abs(e.var().item() - var_pred) < 4 * var_se, "variance: σ²/(λ² n_eff)"
    assert abs(e.var().item() - var_naive) > 4 * var_se, "power: a 1/η window is rejected"

# %% [markdown]
# **Exercise 3 (2 points, optional).** Write `crossover(unbiased, biased)`: given two `ErrorBudget`s
# (fields `bias2`, `variance`, `cost`), return $C^*$ in log-weight evaluations.
#
# **Expected output.** A worked example to try first: with
# `unbiased = SimpleNamespace(bias2=0.0, variance=2.0, cost=10.0)` and
# `biased = SimpleNamespace(bias2=0.01, variance=1.0, cost=5.0)` (from `types`),
# $C^* = (20 - 5)/0.01 = 1500$. The checker below prints a line starting with ✓.


# %% jupyter={"source_hidden": true} nbgrader={"grade": false, "grade_id": "ex3_crossover", "locked": false, "schema_version": 3, "solution": true, "task": false} tags=["solution"]
def crossover(unbiased, biased):
    """The budget above which the unbiased estimator has the smaller MSE.

    unbiased, biased: ErrorBudget, fields bias2 (|b|²), variance (V), cost (c): floats.
    Returns C* as a float, in log-weight evaluations.
    """
    # return ...  # from c_u V_u, c_i V_i and the biased estimator's |b_i|²
    ### BEGIN SOLUTION
    return (unbiased.cost * unbiased.variance - biased.cost * biased.variance) / biased.bias2
    ### END SOLUTION


# %% nbgrader={"grade": true, "grade_id": "ex3_crossover_test", "locked": true, "points": 2, "schema_version": 3, "solution": false, "task": false}
checks.score(checks.check_budget_crossover, crossover, points=2)
### BEGIN HIDDEN TESTS
checks.score(checks.check_budget_crossover, crossover, points=2, runs=[{"seed": 2}])
### END HIDDEN TESTS

# %% [markdown]
# ## Summary
# * $H_{k:m}$ = an MCMC average over $t = k..m$ + a bias correction over $t = k+1..\tau-1$ with
#   weights $\min(1, (t-k)/(m-k+1))$: the average of the single-start estimators $H_k..H_m$, each
#   unbiased because its correction telescopes.
# * Unbiased *when* the chain's marginals converge, $\mathbb E h(X_T) \to \mathbb E_{\bar\pi} h$
#   (assumption (A)), and the sum may be exchanged with the expectation: geometric tails of $\tau$
#   (or polynomial ones of large enough index) and moments of $h$. A tail index $\alpha \le 1$ (the
#   $1/t$ law) means infinite expected cost; $\alpha \le 2$ infinite variance of $\tau$.
# * At a compute budget $C$, $\mathrm{MSE} = |b|^2 + cV/C$: IWAE's noise averages away, its bias
#   does not, so the unbiased estimator wins above $C^* = (c_uV_u - c_iV_i)/|b_i|^2$, and later
#   the larger IWAE's $S$.
# * SGD with learning rate $\eta$ on a loss of curvature $\lambda$ averages the noise of about
#   $2/(\eta\lambda)$ steps and none of the bias. Notebook 05 trains VAEs with this gradient; 06
#   shows where the weights are too degenerate for it to be practical.
#
# ## References
# * P. E. Jacob, J. O'Leary, Y. F. Atchadé (2020). Unbiased Markov chain Monte Carlo methods with
#   couplings. *J. R. Stat. Soc. B* 82(3): 543–600 ($H_{k:m}$, its weights and conditions).
# * L. Middleton, G. Deligiannidis, A. Doucet, P. E. Jacob (2020). Unbiased Markov chain Monte
#   Carlo for intractable target distributions. *Electron. J. Stat.* 14(2): 2842–2891 (polynomial
#   tails of the meeting time).
# * F. Ruiz, M. Titsias, T. Cemgil, A. Doucet (2021). Unbiased gradient estimation for variational
#   auto-encoders using coupled Markov chains. UAI, PMLR 161:707–717.
# * Y. Burda, R. Grosse, R. Salakhutdinov (2016). Importance weighted autoencoders. ICLR.
# * C. Andrieu, A. Lee, M. Vihola (2018). Uniform ergodicity of the iterated conditional SMC and
#   geometric ergodicity of particle Gibbs samplers. *Bernoulli* 24(2): 842–872.
