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
# # 02 · The CIS kernel: one Markov chain on the extended target
#
# **Learning objectives.** After this notebook you can
# 1. define the conditional importance sampling (CIS) step and write it yourself;
# 2. derive, from the joint law of one step, that it leaves $\bar\pi$ invariant (with its index
#    in slot 1), read it as a two-block Gibbs sampler, and check both numerically;
# 3. watch a chain started at IWAE's sample forget IWAE's bias;
# 4. say what bounded weights guarantee (geometric forgetting) and what they do not (a good rate:
#    a proposal $c$ times too wide in $d$ dimensions leaves its worst reference about once in
#    $c^d/(S-1)$ steps).
#
# **Lab, part 1 of 3** (02–04 are the 2-hour lab; 00–01 are its pre-lab reading). **Notation:**
# [docs/notation.md](../docs/notation.md) has every symbol of the lab in one table.
#
# **Prerequisites.** Notebook 01 (the extended target $\bar\pi$, its conditional $\bar w_s$).
#
# **Study time: about 28 minutes, 32 with the optional derivations.** Estimated: ≈ 1,780 words
# at 150 a minute (12 min), the CIS step (10 min), two predictions written down and a widget
# (6 min); the two optional derivations (4 min); the cells run in about 12–16 s (fast) or
# 30 s (full), on a 2-core machine loaded by other jobs.
#
# **Fast or full.** Stored outputs: `UCVAE_FAST=1`. `UCVAE_FAST=0` for the full run; every
# asserted conclusion holds in both.

# %%
# %matplotlib inline
import math

import torch
from IPython.display import display

import ucvae_lite as u
from ucvae_lite.lab import checks
from ucvae_lite.lab import teaching as T
from ucvae_lite.lab import widgets as wd
from ucvae_lite.lab.plots import viz

torch.set_num_threads(1)  # small tensors: one thread is fastest, and kind to shared CPUs
FAST = T.fast_mode()
R = 1_000 if FAST else 20_000  # independent chains per curve
R_CHECK = 20_000 if FAST else 100_000  # chains for the invariance check
STEPS = 40
g = torch.Generator().manual_seed(2)

model = u.LinearGaussian.example(latent_dim=2, obs_dim=4, sigma=0.7, seed=0)
x = model.sample_data(3, torch.Generator().manual_seed(1))[:1]
exact = model.posterior(x)[0][0]  # E[z | x]

# %% [markdown]
# ## One CIS step
# A chain state is a particle set $\xi = (z_1, z_2, \dots, z_S)$ whose slot 1 holds the
# **reference** $r = z_1$. One step $\xi \to \xi'$ (conditional importance sampling; Andrieu, Lee
# & Vihola call it i-SIR):
#
# 1. select $\ell \sim \mathrm{Categorical}(\bar w_1, \dots, \bar w_S)$, $\bar w_s = w_s/\sum_j w_j$
#    (the reference is a candidate too); the new reference is $r' = z_\ell$;
# 2. draw fresh $z'_2, \dots, z'_S \sim q$ independently; $\xi' = (r', z'_2, \dots, z'_S)$.
#
# The reference's log-weight is carried over, so a step costs $S - 1$ new log-weight evaluations.
# Started from $X_0 \sim q^S$, $h(X_0) = \sum_j \bar w_j f(z_j)$ is exactly IWAE's estimate.
#
# **Widget.** Step through one chain: the set (marker area ∝ $\bar w$), the selection
# probabilities, the slot selected (green), and $h(X_t)$ along the way. Change S and the proposal.

# %%
wd.cis_chain_widget(model, x, num_samples=5, shift=0.5, scale=1.5, seed=0)

# %% [markdown]
# **Exercise 1 (3 points).** Write `cis_step(target, state, generator)` for a batch of chains:
# `state` is a `u.CISState(particles [B, S, D], log_weights [B, S])` with the reference in slot 0
# (Python counts from 0); return the next `u.CISState`. Use `torch.softmax`,
# `torch.multinomial(probs, 1, generator=generator)`, `target.sample(n, generator)` [B, n, D]
# and `target.log_weight(z)` [B, n].
#
# **Expected output.** A worked example to try first: if a row's log-weights are
# $(-\infty, -\infty, 0)$, only slot 3 (index 2) can be selected, so the new state has that
# row's old `particles[b, 2]` in slot 0 with log-weight `0.0`, then two fresh draws with their
# own log-weights. The checker below prints a line starting with ✓; a wrong answer raises an
# error that names the likely mistake (uniform selection, argmax, stale weights, …).


# %% jupyter={"source_hidden": true} nbgrader={"grade": false, "grade_id": "ex1_cis_step", "locked": false, "schema_version": 3, "solution": true, "task": false} tags=["solution"]
def cis_step(target, state, generator=None):
    """One CIS step for each row: select ∝ w̄ (reference included), then S − 1 fresh draws.

    state.particles [B, S, D], state.log_weights [B, S]; the reference is in slot 0.
    Returns u.CISState(particles [B, S, D], log_weights [B, S]): the selected particle and its
    log-weight in slot 0, then S − 1 fresh draws and their log-weights.
    """
    B, S, D = state.particles.shape
    rows = torch.arange(B)  # state.particles[rows, ell] picks slot ell[b] of each row b: [B, D]
    # probs = ...      # w̄ of each row: [B, S]
    # ell = ...        # one selected slot per row: [B]
    # fresh = ...      # S − 1 new proposal draws: [B, S − 1, D], and their log-weights [B, S − 1]
    # return u.CISState(...)  # concatenate along dim 1: the selected particle first
    ### BEGIN SOLUTION
    probs = torch.softmax(state.log_weights, -1)
    ell = torch.multinomial(probs, 1, generator=generator)[:, 0]
    fresh = target.sample(S - 1, generator)
    particles = torch.cat([state.particles[rows, ell][:, None], fresh], 1)
    log_w = torch.cat([state.log_weights[rows, ell][:, None], target.log_weight(fresh)], 1)
    return u.CISState(particles, log_w)
    ### END SOLUTION


# %% nbgrader={"grade": true, "grade_id": "ex1_cis_step_test", "locked": true, "points": 3, "schema_version": 3, "solution": false, "task": false}
checks.score(checks.check_cis_step, cis_step, points=3)
### BEGIN HIDDEN TESTS
checks.score(checks.check_cis_step, cis_step, points=3, runs=[{"seed": 9}])
### END HIDDEN TESTS

# %% [markdown]
# ## Why the chain targets $\bar\pi$: the step, exactly
# A chain's state is a set with its reference in slot 1, not a pair $(s, z_{1:S})$, so first say
# which law of the set is invariant: $\bar\pi$ with its index put in slot 1,
#
# $$\rho(z_{1:S}) = \bar\pi(z_{1:S} \mid s = 1) = p(z_1 \mid x)\prod_{j\ge2} q(z_j)
#   = q^S(z_{1:S})\,\frac{w_1}{p(x)},$$
#
# using $p(z_1 \mid x)/q(z_1) = w_1/p(x)$. Shuffle the slots of a draw from $\rho$ by a uniformly
# random permutation and you get a draw $(s, z_{1:S})$ of $\bar\pi$, with $s$ the slot the
# reference went to; so $\rho$ is $\bar\pi$ up to the labels of the slots.
#
# **The joint law of one step.** Let $X_t = z_{1:S} \sim \rho$: a reference $z_1$ and old fresh
# draws $z_{2:S}$. The step draws the selection $\ell$ given the set, and new fresh draws
# $z'_{2:S}$ independently of both. The joint density of (old set, selection, new draws) is
#
# $$\rho(z_{1:S})\;\bar w_\ell(z_{1:S})\;\prod_{j\ge2} q(z'_j),$$
#
# and the new state is $X_{t+1} = (z_\ell, z'_2, \dots, z'_S)$. Its fresh part is independent
# of $z_\ell$ with law $\prod_j q(z'_j)$, so $X_{t+1} \sim \rho$ exactly when the selected
# particle $z_\ell$ has law $p(\cdot \mid x)$. For any test function $g$,
#
# $$\mathbb E\,g(z_\ell) = \sum_{\ell=1}^{S}\int q^S(z_{1:S})\,\frac{w_1}{p(x)}\,
#   \frac{w_\ell}{\sum_j w_j}\,g(z_\ell)\,dz_{1:S}.$$
#
# For $\ell \ne 1$, rename slot 1 as $\ell$ and slot $\ell$ as 1 inside the integral. Neither
# $q^S$ nor $\sum_j w_j$ changes, and $w_1 w_\ell$ is symmetric, so that term equals the same
# integral with $g(z_1)$ in place of $g(z_\ell)$: $\mathbb E_\rho[\bar w_\ell\,g(z_\ell)] =
# \mathbb E_\rho[\bar w_\ell\,g(z_1)]$. Summing over $\ell$ then uses $\sum_\ell \bar w_\ell = 1$:
#
# $$\mathbb E\,g(z_\ell) = \int q^S(z_{1:S})\,\frac{w_1}{p(x)}\,g(z_1)\,dz_{1:S}
#   = \int q(z_1)\,\frac{p(z_1\mid x)}{q(z_1)}\,g(z_1)\,dz_1 = \mathbb E_{p(z\mid x)}[g].$$
#
# So $X_t \sim \rho$ gives $X_{t+1} \sim \rho$: every reference is an exact posterior draw and,
# by notebook 01 ($h$ does not depend on the order of the slots),
# $\mathbb E\,h(X_{t+1}) = \mathbb E_p f$.
#
# **The same step read as Gibbs.** The selection draws the index from its conditional,
# $\bar\pi(s \mid z_{1:S}) = \bar w_s$; the refresh redraws the other slots from theirs,
# $\bar\pi(z_{-s} \mid s, z_s) = \prod_{j \ne s} q(z_j)$. Each block leaves $\bar\pi$
# invariant; moving the selected particle to slot 1 maps $\bar\pi$ onto $\rho$, which is the
# renaming of slots in the computation above.
#
# **Numerical check.** Start $R$ chains *at* $\bar\pi$, that is at $\rho$ (an exact posterior
# draw as the reference, proposal draws elsewhere: `T.stationary_cis_state`), take steps with
# the library's `u.cis_step`, and compare the reference's mean and second moment with the exact
# ones. Power check: chains started at $q^S$ instead fail the same test.

# %%
many = model.target(x.expand(R_CHECK, -1), shift=0.5, scale=1.5)
start = T.stationary_cis_state(model, x, many, 5, g)
at_pi = T.record_cis_chain(many, 5, 3, g, initial=start)
at_q = T.record_cis_chain(many, 5, 1, g)
second = model.posterior_moments(x)[1][0].diagonal()


def reference_z(state):
    """|z| of the reference's mean and second moment against the exact ones, per coordinate."""
    ref = state.particles[:, 0]
    return torch.cat([T.z_score(ref, exact), T.z_score(ref**2, second)]).abs().max().item()


for t, state in enumerate(at_pi.states):
    print(f"started at π̄, step {t}: largest |z| = {reference_z(state):.1f}")
print(f"started at q^S, step 1: largest |z| = {reference_z(at_q.states[1]):.1f} (rejected)")
assert all(reference_z(s) < T.z_threshold(4) for s in at_pi.states), "π̄ is invariant"
assert reference_z(at_q.states[1]) > T.z_threshold(4), "power: a q^S start is not at π̄"

# %% [markdown]
# **Numerical check of the two steps of the derivation**, on the same $R$ states drawn from
# $\rho$, without sampling $\ell$ (each selection's probabilities $\bar w_\ell$ are used as
# weights): (a) the renaming, $\mathbb E_\rho[\bar w_\ell\,(z_\ell - z_1)] = 0$ for each
# $\ell = 2..S$; (b) the result, $\mathbb E\,g(z_\ell) = \mathbb E_\rho\big[\sum_\ell \bar w_\ell\,
# g(z_\ell)\big] = \mathbb E_p g$ for $g(z) = z$ and $z^2$. Power: both fail at IWAE's start
# $q^S$, where the renaming step does not hold (there is no factor $w_1$).


# %%
def derivation_z(state):
    """Largest |z| of (a) E[w̄_ℓ (z_ℓ − z_1)] = 0, ℓ = 2..S, and (b) E[Σ_ℓ w̄_ℓ g(z_ℓ)] = E_p g."""
    z, wbar = state.particles, torch.softmax(state.log_weights, -1)
    swap = (wbar[:, 1:, None] * (z[:, 1:] - z[:, :1])).flatten(1)  # [R, (S − 1) · 2]
    za = T.z_score(swap, torch.zeros(swap.shape[1])).abs().max().item()
    sel = [T.z_score((wbar[..., None] * z**k).sum(1), e) for k, e in ((1, exact), (2, second))]
    return za, torch.cat(sel).abs().max().item()


(za_pi, zb_pi), (za_q, zb_q) = derivation_z(start), derivation_z(at_q.states[0])
print(f"from ρ:   (a) renaming, largest |z| = {za_pi:.1f};  (b) E g(z_ℓ) = E_p g: {zb_pi:.1f}")
print(f"from q^S: (a) {za_q:.1f};  (b) {zb_q:.1f} (both rejected)")
assert za_pi < T.z_threshold(8) and zb_pi < T.z_threshold(4), "the two steps hold at ρ"
assert za_q > T.z_threshold(8) and zb_q > T.z_threshold(4), "power: they fail at q^S"

# %% [markdown]
# ## The chain forgets IWAE's bias
# Started from $X_0 \sim q^S$, $h(X_0)$ is IWAE's estimate, biased; as $t$ grows the law of $X_t$
# approaches $\bar\pi$ and $\mathbb E\,h(X_t) \to \mathbb E_p[f]$. Below, $f(z) = z_1$ and $R$
# independent chains per curve (wide, shifted proposal).
#
# **Predict.** Per log-weight evaluation (a step costs $S-1$), does $S = 2$ or $S = 20$ forget
# the bias faster? And per step? Answer in the cell below (2 points), then run the next cell.

# %% [markdown] jupyter={"source_hidden": true} nbgrader={"grade": true, "grade_id": "predict_S_per_evaluation", "locked": false, "points": 2, "schema_version": 3, "solution": true, "task": false}
# <details><summary>Model answer and rubric: open it only after writing yours</summary>
#
# **Model answer.** Per step, $S = 20$ forgets faster: each selection compares the reference
# with 19 fresh draws instead of one, so the chain leaves a poor reference sooner. Per
# log-weight evaluation the advantage disappears: one step of $S = 20$ costs 19 evaluations, as
# much as 19 steps of $S = 2$, and here $S = 20$ is no better at equal cost (one step, 39
# evaluations, against 38 steps of $S = 2$, 40 evaluations: the asserted comparison). Larger $S$
# buys faster forgetting per step, not per unit of compute.
#
# **Rubric (2 points).** 1: per step, $S = 20$ is faster, with the reason (more fresh candidates
# per selection). 1: per evaluation, no clear winner (or "not better"), with the cost argument
# ($S - 1$ evaluations a step). Answering "S = 20 per evaluation too" earns at most 1 point.
#
# </details>

# %%
chains = model.target(x.expand(R, -1), shift=0.5, scale=1.5)
by_S = {S: T.run_cis_chain(chains, S, STEPS, generator=g) for S in (2, 5, 20)}
t = torch.arange(STEPS + 1)
curves = {f"S = {S}": ((h[..., 0].mean(1) - exact[0]).abs(), h[..., 0].std(1) / math.sqrt(R))
          for S, h in by_S.items()}  # fmt: skip
evals = {f"S = {S}": S + t * (S - 1) for S in by_S}
fig = viz.new_figure(ncols=2, size=(4.2, 3.3))
viz.bias_curves(fig.axes[0], t, curves, "step t", "|E h(X_t) − E[z₁ | x]|")
viz.bias_curves(fig.axes[1], evals, curves, "log-weight evaluations S + t(S − 1)",
                "|E h(X_t) − E[z₁ | x]|")  # fmt: skip
fig.axes[1].set_xscale("log")
fig.axes[0].set_title("the chain forgets IWAE's bias", fontsize=9)
fig.axes[1].set_title("the same, per evaluation", fontsize=9)
viz.save(fig, "02_cis_convergence")
display(fig)

for S, h in by_S.items():
    z0, zT = T.z_score(h[0], exact).abs().max(), T.z_score(h[-1], exact).abs().max()
    print(f"S = {S:2d}: largest |z| at t = 0: {z0:6.1f};  at t = {STEPS}: {zT:4.1f}")
    assert z0 > T.z_threshold(2), "h(X_0) is IWAE's estimate: biased"
for S in (5, 20):
    assert T.z_score(by_S[S][-1], exact).abs().max() < T.z_threshold(2), f"S = {S} has converged"
(b2, se2), (b20, se20) = curves["S = 2"], curves["S = 20"]
assert b20[1] < b2[1] - 4 * math.hypot(se2[1], se20[1]), "per step, S = 20 forgets faster"
# per evaluation it is no better: S = 20 after 1 step (39 evaluations) vs S = 2 after 38 (40)
assert b20[1] > b2[38] - 4 * math.hypot(se2[38], se20[1]), "per evaluation, no better"

# %% [markdown]
# Every chain starts at IWAE's bias. Per step, larger $S$ forgets faster (each selection sees
# more fresh draws). Per evaluation, $S = 20$ is no better than $S = 2$ here (right panel;
# asserted at about 40 evaluations). Either way a single chain removes the bias only as
# $t \to \infty$, never exactly in finite time: that is what notebook 03's second chain is for.
#
# ## What bounded weights buy, and what they do not
# With $q = \mathcal N(\mu + \delta, c^2\Sigma)$ and the Gaussian posterior,
# $w(z)/p(x) = p(z\mid x)/q(z)$. A **narrow** proposal ($c < 1$) has unbounded weights: far out
# the posterior's tail dominates. A **wide** one ($c > 1$) has bounded weights; centred
# ($\delta = 0$) their largest value is at the mode, $\sup_z w/p(x) = c^d$. The defensive mixture
# $(1-\varepsilon)q + \varepsilon\,p(z)$ bounds any proposal's weights by
# $\sup_z p(x\mid z)/\varepsilon$. Watch the largest of $n$ log-weights as $n$ grows:

# %%
sizes = [10, 100, 1_000, 10_000, 100_000] if FAST else [10, 100, 1_000, 10_000, 100_000, 1_000_000]
log_px = model.log_marginal(x).item()
log_lbar = -0.5 * model.obs_dim * math.log(2 * math.pi) - model.obs_dim * model.log_sigma.item()
eps = 0.2
proposals = {
    "wide (×1.5), centred": (0.0, 1.5, 0.0),
    "narrow (×0.5)": (0.0, 0.5, 0.0),
    f"narrow, defensive ε = {eps}": (0.0, 0.5, eps),
}
max_lw = {
    name: [lw - log_px for lw in T.max_log_weight_vs_n(model.target(x, s, c, e), sizes, g)]
    for name, (s, c, e) in proposals.items()
}
sup = {"wide (×1.5), centred": 2 * math.log(1.5),
       f"narrow, defensive ε = {eps}": log_lbar - math.log(eps) - log_px}  # fmt: skip
fig = viz.new_figure(size=(4.6, 3.4))
viz.max_weight_vs_n(fig.axes[0], sizes, max_lw, sup)
fig.axes[0].set_title("unbounded weights keep growing", fontsize=9)
viz.save(fig, "02_weights")
display(fig)
assert max_lw["narrow (×0.5)"][-1] - max_lw["narrow (×0.5)"][1] > 1.0, "unbounded: keeps growing"
for name, bound in sup.items():
    assert max(max_lw[name]) <= bound + 1e-9, f"{name}: above its supremum"

# %% [markdown]
# **Bounded weights give geometric forgetting.** If $w/p(x) \le \bar W$, the CIS kernel
# satisfies $K(r, \cdot) \ge \epsilon\,p(\cdot\mid x)$ for every reference $r$, with
# $\epsilon = (S-1)/(2\bar W + S - 2)$ (Andrieu, Lee & Vihola 2018), so after $t$ steps the
# chain's law is within $(1-\epsilon)^t$ of the target in total variation, from any start.
#
# **But the rate can be terrible.** $\bar W = c^d$ grows exponentially with the dimension. From
# the worst reference (the mode, weight $c^d$ in units of $p(x)$), the chain moves only if a
# fresh draw is selected:
# $P(\text{move}) = \mathbb E\big[\Sigma/(c^d + \Sigma)\big]$ with $\Sigma$ the fresh draws'
# total weight, $\mathbb E\Sigma = S - 1$. As $x \mapsto x/(a+x)$ is concave, Jensen gives
#
# $$\epsilon \;\le\; P(\text{move} \mid r = \text{mode}) \;\le\; \frac{S-1}{S-1+c^d}.$$
#
# **Predict.** With a proposal only 1.5× too wide in each of $d = 16$ dimensions, $S = 10$, how
# many steps does a chain wait at that reference on average? Answer in the cell below
# (2 points), then run the numerical check.

# %% [markdown] jupyter={"source_hidden": true} nbgrader={"grade": true, "grade_id": "predict_holding_time_d16", "locked": false, "points": 2, "schema_version": 3, "solution": true, "task": false}
# <details><summary>Model answer and rubric: open it only after writing yours</summary>
#
# **Model answer.** The mode's weight is $c^d = 1.5^{16} \approx 657$ times $p(x)$, and the nine
# fresh draws have total weight about 9, so the chain moves with probability at most
# $9/(9 + 657) \approx 0.0135$ a step (the Jensen bound) and waits on average at least
# $1/0.0135 \approx 74$ steps: tens of steps for a proposal that is only 1.5× too wide. The
# simulation below prints a mean wait of the same size (its $P(\text{move})$ agrees with the
# bound within its standard error).
#
# **Rubric (2 points).** 1: the mode's relative weight $c^d = 1.5^{16} \approx 657$. 1: the
# waiting time as $1/P(\text{move})$ with $P(\text{move}) \approx (S-1)/(S-1+c^d)$, giving about 70
# steps (any value from 60 to 80 with that reasoning). "About 1 step because the weights are
# bounded" earns 0.
#
# **Numerical check** of the sandwich, on linear-Gaussian models with $d = 2..16$ latents:
#
# </details>

# %%
dims, S_dim, c = [2, 4, 8, 16], 10, 1.5
R_DIM = 4_000 if FAST else 40_000
rows = {"from the mode (worst)": ([], []), "from π̄ (typical)": ([], [])}
for d in dims:
    m_d = u.LinearGaussian.example(latent_dim=d, obs_dim=2 * d, sigma=0.7, seed=0)
    x_d = m_d.sample_data(1, torch.Generator().manual_seed(1))
    tgt = m_d.target(x_d.expand(R_DIM, -1), scale=c)
    z = tgt.sample(S_dim, g)
    z[:, 0] = m_d.posterior(x_d)[0][0]  # the reference at the mode, where w/p(x) = c^d
    worst = u.CISState(z, tgt.log_weight(z))
    for (p_list, se_list), state in zip(
        rows.values(), (worst, T.stationary_cis_state(m_d, x_d, tgt, S_dim, g)), strict=True
    ):
        p, se = T.move_probability(tgt, state, generator=g)
        p_list.append(p)
        se_list.append(se)
eps_bound = [(S_dim - 1) / (2 * c**d + S_dim - 2) for d in dims]
jensen = [(S_dim - 1) / (S_dim - 1 + c**d) for d in dims]
for d, p, se, lo, hi in zip(dims, *rows["from the mode (worst)"], eps_bound, jensen, strict=True):
    print(f"d = {d:2d}: sup w/p(x) = {c**d:6.1f}; ε = {lo:.4f}, P(move | mode) = {p:.4f} ± "
          f"{se:.4f}, Jensen bound {hi:.4f}; mean wait 1/P = {1 / p:5.1f} steps")  # fmt: skip
    assert lo - 4 * se <= p <= hi + 4 * se, "the sandwich holds (within 4 SE)"
fig = viz.new_figure(size=(4.6, 3.4))
viz.move_probability_vs_dim(fig.axes[0], dims, rows, eps_bound)
fig.axes[0].plot(dims, jensen, "k:", lw=1, label="(S−1)/(S−1+c^d)")
fig.axes[0].legend(fontsize=7)
fig.axes[0].set_title(f"bounded weights (q {c}× wide), S = {S_dim}", fontsize=9)
viz.save(fig, "02_bounded_weights")
display(fig)

# %% [markdown]
# The worst reference holds the chain longer and longer as $d$ grows, although the weights are
# bounded in every case; a typical reference (drawn from $\bar\pi$) is far less sticky. So
# "bounded weights" is a guarantee of *geometric* convergence, not of *fast* convergence.
# Notebook 03 shows what sticky references do to coupled chains.
#
# **Exercise 2 (1 point, derivation, optional).** For a centred proposal 1.5× as wide as the
# posterior in $d = 20$ dimensions, what is $\sup_z w(z)/p(x)$? Assign it to `answer_ex2`.
#
# **Expected output.** One number (a Python float). A worked example of the same kind: a
# proposal 2× too wide in $d = 3$ dimensions gives $2^3 = 8$. The checker prints ✓ and your value.

# %% jupyter={"source_hidden": true} nbgrader={"grade": false, "grade_id": "ex2_sup_weight", "locked": false, "schema_version": 3, "solution": true, "task": false} tags=["solution"]
# answer_ex2 = ...  # c^d, at the posterior's mode
### BEGIN SOLUTION
answer_ex2 = 1.5**20
### END SOLUTION

# %% nbgrader={"grade": true, "grade_id": "ex2_sup_weight_test", "locked": true, "points": 1, "schema_version": 3, "solution": false, "task": false}
checks.score(checks.check_value, "02_sup_weight", answer_ex2, points=1)

# %% [markdown]
# **Exercise 3 (1 point, derivation, optional).** With $S = 10$, at least how many steps on average
# does a chain wait at that worst reference before it moves (the Jensen bound above)? Assign it to
# `answer_ex3`.
#
# **Expected output.** One number of steps (a Python float). A worked example: with
# $\sup w/p(x) = 8$ and $S = 5$, $P(\text{move}) \le 4/12$, so the wait is at least 3 steps.

# %% jupyter={"source_hidden": true} nbgrader={"grade": false, "grade_id": "ex3_holding_time", "locked": false, "schema_version": 3, "solution": true, "task": false} tags=["solution"]
# answer_ex3 = ...  # 1 / P(move), with P(move) at most (S − 1)/(S − 1 + c^d)
### BEGIN SOLUTION
answer_ex3 = (10 - 1 + 1.5**20) / (10 - 1)
### END SOLUTION

# %% nbgrader={"grade": true, "grade_id": "ex3_holding_time_test", "locked": true, "points": 1, "schema_version": 3, "solution": false, "task": false}
checks.score(checks.check_value, "02_holding_time", answer_ex3, points=1)

# %% [markdown]
# ## Summary
# * One CIS step: select $\ell \propto \bar w$ (reference included), keep $z_\ell$ as the new
#   reference, draw $S-1$ fresh particles. It costs $S - 1$ evaluations.
# * It is a two-block Gibbs sampler on $\bar\pi$, so $\bar\pi$ is invariant: a chain started
#   there stays exact, checked above; a chain started at IWAE's $q^S$ forgets its bias as $t$ grows.
# * Bounded weights ($\le \bar W\,p(x)$) give geometric forgetting at rate
#   $\epsilon = (S-1)/(2\bar W + S - 2)$; with $\bar W = c^d$ that rate can be astronomically slow.
#   Narrow proposals have unbounded weights and no such guarantee.
#
# ## References
# * C. Andrieu, A. Lee, M. Vihola (2018). Uniform ergodicity of the iterated conditional SMC and
#   geometric ergodicity of particle Gibbs samplers. *Bernoulli* 24(2): 842–872 (the CIS/i-SIR
#   kernel, its invariance and the constant $\epsilon$).
# * Y. Burda, R. Grosse, R. Salakhutdinov (2016). Importance weighted autoencoders. ICLR.
# * F. Ruiz, M. Titsias, T. Cemgil, A. Doucet (2021). Unbiased gradient estimation for variational
#   auto-encoders using coupled Markov chains. UAI, PMLR 161:707–717.
# * C. A. Naesseth, F. Lindsten, D. Blei (2020). Markovian score climbing: variational inference
#   with KL(p‖q). NeurIPS (this single chain, used for learning).
