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
# 2. derive that it is a two-block Gibbs sampler on $\bar\pi$, hence leaves $\bar\pi$ invariant,
#    and check that numerically;
# 3. watch a chain started at IWAE's sample forget IWAE's bias;
# 4. say what bounded weights guarantee (geometric forgetting) and what they do not (a good rate:
#    a proposal $c$ times too wide in $d$ dimensions leaves its worst reference about once in
#    $c^d/(S-1)$ steps).
#
# **Prerequisites.** Notebook 01 (the extended target $\bar\pi$, its conditional $\bar w_s$).
#
# **Study time: about 25 minutes, 30 with the optional derivations.** Estimated: ≈ 1,250 words
# at 150 a minute (8 min), the CIS step (10 min), two predictions and a widget (4 min); the two
# optional derivations (5 min); the cells run in about 9 s (fast) or 21 s (full).
#
# **Fast or full.** Stored outputs: `UCVAE_FAST=1`. `UCVAE_FAST=0` for the full run; every
# asserted conclusion holds in both.

# %%
# %matplotlib inline
import math

import torch
from IPython.display import display

import ucvae_lite as u
from ucvae_lite import checks, viz
from ucvae_lite import teaching as T
from ucvae_lite import widgets as wd

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


# %% jupyter={"source_hidden": true} nbgrader={"grade": false, "grade_id": "ex1_cis_step", "locked": false, "schema_version": 3, "solution": true, "task": false} tags=["solution"]
def cis_step(target, state, generator=None):
    """One CIS step for each row: select ∝ w̄ (reference included), then S − 1 fresh draws."""
    ### BEGIN SOLUTION
    probs = torch.softmax(state.log_weights, -1)
    ell = torch.multinomial(probs, 1, generator=generator)[:, 0]
    rows = torch.arange(len(ell))
    fresh = target.sample(state.particles.shape[1] - 1, generator)
    particles = torch.cat([state.particles[rows, ell][:, None], fresh], 1)
    log_w = torch.cat([state.log_weights[rows, ell][:, None], target.log_weight(fresh)], 1)
    return u.CISState(particles, log_w)
    ### END SOLUTION


# %% nbgrader={"grade": true, "grade_id": "ex1_cis_step_test", "locked": true, "points": 3, "schema_version": 3, "solution": false, "task": false}
checks.check_cis_step(cis_step)
### BEGIN HIDDEN TESTS
checks.check_cis_step(cis_step, seed=9)
### END HIDDEN TESTS

# %% [markdown]
# ## Why the chain targets $\bar\pi$: a two-block Gibbs sampler
# Read the step as two moves on $(s, z_{1:S})$ under
# $\bar\pi(s, z_{1:S}) = \frac1S p(z_s\mid x)\prod_{j\ne s} q(z_j)$ (notebook 01):
#
# * **Block 1** draws the index from its conditional, $s \sim \bar\pi(s \mid z_{1:S}) = \bar w_s$:
#   that is the selection.
# * **Block 2** redraws everything but the selected particle from its conditional. Given $s$ and
#   $z_s$, $\bar\pi$ is proportional to $\prod_{j\ne s} q(z_j)$: the other slots are independent
#   proposal draws. That is the refresh.
#
# A Gibbs move (draw one block from its conditional given the rest) leaves the joint law
# invariant, so each block leaves $\bar\pi$ invariant and so does their composition. Moving the
# selected particle to slot 1 only relabels the slots, and $\bar\pi$ treats all slots alike. So
# if $X_t \sim \bar\pi$ then $X_{t+1} \sim \bar\pi$, its reference is an exact posterior draw, and
# $\mathbb E\,h(X_{t+1}) = \mathbb E_p f$.
#
# **Numerical check.** Start $R$ chains *at* $\bar\pi$ (an exact posterior draw as the
# reference, proposal draws elsewhere: `T.stationary_cis_state`), take steps with the library's
# `u.cis_step`, and compare the reference's mean and second moment with the exact ones. Power
# check: chains started at $q^S$ instead fail the same test.

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
# ## The chain forgets IWAE's bias
# Started from $X_0 \sim q^S$, $h(X_0)$ is IWAE's estimate, biased; as $t$ grows the law of $X_t$
# approaches $\bar\pi$ and $\mathbb E\,h(X_t) \to \mathbb E_p[f]$. Below, $f(z) = z_1$ and $R$
# independent chains per curve (wide, shifted proposal).
#
# **Predict.** Per log-weight evaluation (a step costs $S-1$), does $S = 2$ or $S = 20$ forget
# the bias faster?

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
# many steps does a chain wait at that reference on average?
#
# **Numerical check** of the sandwich, on linear-Gaussian models with $d = 2..16$ latents:

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

# %% jupyter={"source_hidden": true} nbgrader={"grade": false, "grade_id": "ex2_sup_weight", "locked": false, "schema_version": 3, "solution": true, "task": false} tags=["solution"]
### BEGIN SOLUTION
answer_ex2 = 1.5**20
### END SOLUTION

# %% nbgrader={"grade": true, "grade_id": "ex2_sup_weight_test", "locked": true, "points": 1, "schema_version": 3, "solution": false, "task": false}
checks.check_value("02_sup_weight", answer_ex2)

# %% [markdown]
# **Exercise 3 (1 point, derivation, optional).** With $S = 10$, at least how many steps on average
# does a chain wait at that worst reference before it moves (the Jensen bound above)? Assign it to
# `answer_ex3`.

# %% jupyter={"source_hidden": true} nbgrader={"grade": false, "grade_id": "ex3_holding_time", "locked": false, "schema_version": 3, "solution": true, "task": false} tags=["solution"]
### BEGIN SOLUTION
answer_ex3 = (10 - 1 + 1.5**20) / (10 - 1)
### END SOLUTION

# %% nbgrader={"grade": true, "grade_id": "ex3_holding_time_test", "locked": true, "points": 1, "schema_version": 3, "solution": false, "task": false}
checks.check_value("02_holding_time", answer_ex3)

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
