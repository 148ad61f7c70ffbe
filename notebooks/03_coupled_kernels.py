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
# # 03 · Coupled kernels: two chains that meet
#
# **Learning objectives.** After this notebook you can
# 1. derive the maximal coupling of two categorical distributions and why
#    $P(i = j) = 1 - \mathrm{TV}(p, q)$ is the best possible; write it;
# 2. define the coupled CIS kernel $\bar K$ and write one coupled step;
# 3. derive the meeting time's law for the exact proposal, $P(\tau = 2) = (S-1)/S$ and
#    $\mathbb E\tau = 1 + S/(S-1)$, and the $1/t$ law when one particle takes all the weight;
# 4. say what slows meeting down: degenerate weights, from a proposal too narrow *or* too wide;
# 5. derive from bounded weights, $w \le \bar W p(x)$, a per-step meeting probability
#    $\epsilon = (S-1)/(2\bar W + S - 2)$, hence a geometric tail
#    $P(\tau > t) \le (1-\epsilon)^{t-1}$.
#
# **Lab, part 2 of 3** (02–04 are the 2-hour lab). **Notation:**
# [docs/notation.md](../docs/notation.md) has every symbol of the lab in one table.
#
# **Prerequisites.** Notebook 02 (the CIS step); total variation distance
# $\mathrm{TV}(p, q) = \frac12\sum_s |p_s - q_s|$; the geometric distribution.
#
# **Study time: about 49 minutes: 44 in class, 5 after it.** Estimated: ≈ 1,890 words at 150 a
# minute (13 min), two code exercises (20 min), two short derivations (5 min), a prediction
# written down and two widgets (6 min); the last section, read after class, ≈ 710 words
# (5 min); the cells run in about 14–22 s (fast) or 27 s (full), on a 2-core machine loaded by
# other jobs.
#
# **Fast or full.** Stored outputs: `UCVAE_FAST=1`. `UCVAE_FAST=0` for the full run; every
# asserted conclusion holds in both.

# %%
# %matplotlib inline
import math

import torch
from IPython.display import display

import ucvae_lite as u
from ucvae_lite.core.diagnostics import degenerate_survival
from ucvae_lite.lab import checks
from ucvae_lite.lab import teaching as T
from ucvae_lite.lab import widgets as wd
from ucvae_lite.lab.plots import viz

torch.set_num_threads(1)  # small tensors: one thread is fastest, and kind to shared CPUs
FAST = T.fast_mode()
R = 2_000 if FAST else 20_000  # chain pairs per meeting-time distribution
g = torch.Generator().manual_seed(3)

model = u.LinearGaussian.example(latent_dim=2, obs_dim=4, sigma=0.7, seed=0)
x = model.sample_data(3, torch.Generator().manual_seed(1))[:1]

# %% [markdown]
# ## The maximal coupling of two categoricals
# Two chains must each select a slot with its own probabilities, $i \sim p$ and $j \sim q$, yet
# select the *same* slot as often as possible. Any joint law of $(i, j)$ with these marginals has
# $P(i = j = s) \le \min(p_s, q_s)$, so
#
# $$P(i = j) \le \alpha = \sum_s \min(p_s, q_s) = 1 - \tfrac12 \sum_s |p_s - q_s|
#   = 1 - \mathrm{TV}(p, q)$$
#
# (use $\min(a, b) = \frac12(a + b - |a - b|)$ and $\sum p = \sum q = 1$). The **maximal
# coupling** attains the bound. With $\nu = \min(p, q)$: with probability $\alpha$ draw one index
# $i = j \sim \nu/\alpha$; otherwise draw $i \sim (p - \nu)/(1-\alpha)$ and
# $j \sim (q - \nu)/(1-\alpha)$ independently. The marginals are right:
# $P(i = s) = \alpha\,\frac{\nu_s}{\alpha} + (1-\alpha)\frac{p_s - \nu_s}{1-\alpha} = p_s$, and the
# residuals $p-\nu$, $q-\nu$ have disjoint supports, so $i \ne j$ off the common branch.
#
# **Widget.** Move the weights of $p$ and $q$; the hatched bars are $\nu = \min(p, q)$.

# %%
wd.coupling_widget(num_slots=5, seed=0)

# %% [markdown]
# **Numerical check.** For fixed $p, q$, the fraction of joint draws with $i = j$ against the
# exact $\alpha = 1 - \mathrm{TV}$, and the marginal frequencies against $p$ and $q$:

# %%
res = T.coupling_draws([0.9, 0.5, 0.1, 0.3, 0.2], [0.2, 0.6, 0.5, 0.1, 0.4], n=20_000, seed=1)
tv = 0.5 * (res.p - res.q).abs().sum().item()
se = math.sqrt(res.alpha * (1 - res.alpha) / res.n)
print(f"α = Σ min(p, q) = {res.alpha:.4f};  1 − TV = {1 - tv:.4f};  "
      f"P(i = j) in {res.n} draws = {res.frac_equal:.4f} ± {se:.4f}")  # fmt: skip
assert abs(res.alpha - (1 - tv)) < 1e-12
assert abs(res.frac_equal - res.alpha) < 4 * se, "P(i = j) must equal α"
fig = viz.new_figure(size=(5.6, 3.4))
viz.categorical_coupling(fig.axes[0], res.p, res.q, res.draw)
viz.save(fig, "03_maximal_coupling")
display(fig)

# %% [markdown]
# **Exercise 1 (3 points).** Write `maximal_coupling(p, q, generator)`: for probabilities
# p, q [B, S] (rows sum to 1) return index tensors (i, j), each [B], one joint draw per row. Use
# `torch.minimum`, `torch.rand(B, generator=generator, dtype=p.dtype)`,
# `torch.multinomial(weights, 1, generator=generator)` (it accepts unnormalised weights, but not
# a row of zeros: add `1e-300`), and `torch.where`.
#
# **Expected output.** Worked examples to try first: with `p` equal to `q`, `i` equals `j` in
# every row ($\alpha = 1$); with $p = (1, 0)$, $q = (0, 1)$, always $i = 0$, $j = 1$ ($\alpha = 0$);
# with $p = (\frac12, \frac12)$, $q = (1, 0)$, $i = j = 0$ in about half the rows and
# $(i, j) = (1, 0)$ in the rest. The checker below prints a line starting with ✓.


# %% jupyter={"source_hidden": true} nbgrader={"grade": false, "grade_id": "ex1_maximal_coupling", "locked": false, "schema_version": 3, "solution": true, "task": false} tags=["solution"]
def maximal_coupling(p, q, generator=None):
    """(i, j) with i ~ p, j ~ q and P(i = j) = Σ min(p, q), per row of p, q [B, S].

    p, q [B, S], rows summing to 1. Returns i, j: integer tensors [B] with values in 0..S−1.
    """
    # nu = ...                  # min(p, q): [B, S]; its row sums are α [B]
    # common = ...              # True with probability α in each row: [B]
    # i_common, i_p, i_q = ...  # one draw per row from ν, from p − ν and from q − ν: [B] each
    # return ...                # i = i_common where common, else i_p; j likewise with i_q
    ### BEGIN SOLUTION
    nu = torch.minimum(p, q)
    common = torch.rand(p.shape[0], generator=generator, dtype=p.dtype) < nu.sum(-1)

    def draw(weights):
        return torch.multinomial(weights + 1e-300, 1, generator=generator)[:, 0]

    i_common, i_p, i_q = draw(nu), draw(p - nu), draw(q - nu)
    return torch.where(common, i_common, i_p), torch.where(common, i_common, i_q)
    ### END SOLUTION


# %% nbgrader={"grade": true, "grade_id": "ex1_maximal_coupling_test", "locked": true, "points": 3, "schema_version": 3, "solution": false, "task": false}
checks.score(checks.check_maximal_coupling, maximal_coupling, points=3)
### BEGIN HIDDEN TESTS
checks.score(checks.check_maximal_coupling, maximal_coupling, points=3, runs=[{"seed": 5}])
### END HIDDEN TESTS

# %% [markdown]
# ## The coupled kernel $\bar K$
# Let $K$ be the CIS kernel of notebook 02. The coupled kernel moves two particle sets
# $(\xi^X, \xi^Y)$ at once:
#
# 1. draw $(\ell_X, \ell_Y)$ from the maximal coupling of $\bar w(\xi^X)$ and $\bar w(\xi^Y)$;
# 2. draw **common** fresh particles $z'_2, \dots, z'_S \sim q$ once;
# 3. $\xi^{X\prime} = (z^X_{\ell_X}, z'_2, \dots, z'_S)$ and
#    $\xi^{Y\prime} = (z^Y_{\ell_Y}, z'_2, \dots, z'_S)$.
#
# Each set alone makes an exact CIS step (its selection has the right marginal, its fresh draws
# are fresh), so $\bar K$ is a *coupling* of $K$ with itself. After one step the two sets share
# slots $2..S$ and differ only in their references. If both then select the same shared slot
# $j \ge 2$, the new sets are identical, and from then on they stay identical (the coupling of two
# equal distributions always selects the same slot). Selecting slot 1 in both does *not* meet:
# slot 1 holds each chain's own reference.
#
# **Lag 1.** Notebook 04's estimator runs $X$ one step ahead of $Y$: $X_0, Y_0 \sim q^S$,
# $X_1 \sim K(X_0)$, then $(X_{t+1}, Y_t) \sim \bar K\big((X_t, Y_{t-1})\big)$, and the meeting
# time is $\tau = \inf\{t \ge 1: X_t = Y_{t-1}\}$. $Y_0$ takes $X_1$'s fresh draws (only its law,
# $q^S$, matters), so the first coupled step can already meet: $\tau \ge 2$.
#
# **Widget.** Step two chains (left: $X_t$ blue, $Y_{t-1}$ orange, shared fresh draws grey; right:
# both selection probabilities, their overlap $\alpha$, and the slots the coupling selects). The
# text says why they met, or why not. Move the proposal's shift and width.

# %%
wd.coupled_chains_widget(model, x, num_samples=5, shift=0.5, scale=1.5, seed=5)

# %%
# The same pair, drawn once per step until it meets (m = 20 keeps it running past τ).
run = T.lag_coupled_chains(
    model.target(x, shift=0.5, scale=1.5), 5, m=20, generator=torch.Generator().manual_seed(5)
)
tau = int(run.tau[0])
post = tuple(v[0] for v in model.posterior(x))
fig = viz.new_figure(ncols=tau, size=(3.2, 3.2))
viz.coupled_chains_panels(fig.axes, run, post, (-0.8, 2.2, -0.8, 2.5))
viz.save(fig, "03_coupled_chains")
display(fig)
assert torch.equal(run.xs[tau].particles, run.ys[tau - 1].particles), "met: identical sets"

# %% [markdown]
# **Exercise 2 (3 points).** Write `coupled_step(target, x, y, generator)`: from states
# $X_t$, $Y_{t-1}$ (each a `u.CISState`, references in slot 0) return the pair
# $(X_{t+1}, Y_t)$. Select with a maximal coupling of the two chains' $\bar w$ (yours from
# Exercise 1 or the library's `u.core.kernels.coupled_indices(p, q, generator)`), draw the $S - 1$
# fresh particles **once**, and put them into both sets.
#
# **Expected output.** Two checks to run first: `new_x.particles[:, 1:]` equals
# `new_y.particles[:, 1:]` in every row (shared fresh draws, and their log-weights too), and if
# `x` and `y` hold the same set the two new states are identical. The checker below prints a
# line starting with ✓ and the probability $\sum_{s \ge 2}\min(\bar w^X_s, \bar w^Y_s)$ that its
# test pair meets; a wrong step raises an error that names the likely mistake.


# %% jupyter={"source_hidden": true} nbgrader={"grade": false, "grade_id": "ex2_coupled_step", "locked": false, "schema_version": 3, "solution": true, "task": false} tags=["solution"]
def coupled_step(target, x, y, generator=None):
    """(X_{t+1}, Y_t) from (X_t, Y_{t−1}): coupled selection, common fresh draws.

    x, y: u.CISState with particles [B, S, D] and log_weights [B, S], references in slot 0.
    Returns two u.CISState of the same shapes, whose slots 1..S−1 are the same fresh draws.
    """
    B, S, D = x.particles.shape
    rows = torch.arange(B)
    # ix, iy = ...       # coupled selections [B] each, from softmax(x.log_weights), softmax(y...)
    # fresh = ...        # S − 1 proposal draws, ONCE: [B, S − 1, D]; fresh_lw: [B, S − 1]
    # return ..., ...    # each set: its selected particle and log-weight in slot 0, then fresh
    ### BEGIN SOLUTION
    ix, iy = u.core.kernels.coupled_indices(
        torch.softmax(x.log_weights, -1), torch.softmax(y.log_weights, -1), generator
    )
    fresh = target.sample(S - 1, generator)
    fresh_lw = target.log_weight(fresh)

    def new_set(state, index):
        particles = torch.cat([state.particles[rows, index][:, None], fresh], 1)
        log_w = torch.cat([state.log_weights[rows, index][:, None], fresh_lw], 1)
        return u.CISState(particles, log_w)

    return new_set(x, ix), new_set(y, iy)
    ### END SOLUTION


# %% nbgrader={"grade": true, "grade_id": "ex2_coupled_step_test", "locked": true, "points": 3, "schema_version": 3, "solution": false, "task": false}
checks.score(checks.check_coupled_step, coupled_step, points=3)
### BEGIN HIDDEN TESTS
checks.score(checks.check_coupled_step, coupled_step, points=3, runs=[{"seed": 4}])
### END HIDDEN TESTS

# %% [markdown]
# ## Meeting times for the exact proposal
# Take $q = p(z \mid x)$. Then every weight equals $p(x)$, both chains' $\bar w$ are uniform,
# $\alpha = 1$, and the coupling selects one common slot, uniform on $1..S$. The first coupled
# step (from $X_1$, $Y_0$, which share slots $2..S$) meets unless that slot is slot 1:
#
# $$P(\tau = 2) = \frac{S-1}{S}.$$
#
# If it selects slot 1, the chains keep their different references, take common fresh draws, and
# face the same situation again, independently of the past.
#
# **Exercise 3 (1 point, derivation, + 1 point for the written argument).** Complete the
# argument: what is the law of $\tau - 1$, and $\mathbb E[\tau]$? Write the argument in the answer
# cell below, and give $\mathbb E[\tau]$ for $S = 4$ as `answer_ex3` in the code cell after it.
#
# **Expected output.** One number (a Python float). A reminder, not the answer: a geometric law
# on $\{1, 2, \dots\}$ with success probability $\frac12$ has mean 2. The checker prints ✓ and
# your value.

# %% [markdown] jupyter={"source_hidden": true} nbgrader={"grade": true, "grade_id": "ex3_argument", "locked": false, "points": 1, "schema_version": 3, "solution": true, "task": false}
# <details><summary>Model answer and rubric: open it only after writing yours</summary>
#
# **Exercise 3, the argument: model answer.** Each coupled step, from $t = 1$ on, meets with
# probability $(S-1)/S$ whatever happened before: the selected slot is uniform and independent of
# the past, and the situation after a miss (two different references, shared fresh slots) is the
# same as before it. So the number of coupled steps until meeting, $\tau - 1$, is geometric on
# $\{1, 2, \dots\}$ with success probability $(S-1)/S$: $P(\tau - 1 = n) = S^{-(n-1)}(S-1)/S$,
# $\mathbb E[\tau - 1] = S/(S-1)$ and $\mathbb E\tau = 1 + S/(S-1)$ ($7/3$ at $S = 4$).
#
# **Rubric (1 point).** ½: geometric, with success probability $(S-1)/S$ and the reason (the
# same situation recurs independently). ½: $\mathbb E\tau = 1 + S/(S-1)$, the $+1$ for the
# first step, which only moves $X$. A geometric law with the inverted probability $1/S$ gets 0.
#
# </details>

# %% jupyter={"source_hidden": true} nbgrader={"grade": false, "grade_id": "ex3_expected_tau", "locked": false, "schema_version": 3, "solution": true, "task": false} tags=["solution"]
# answer_ex3 = ...  # E[τ] at S = 4
### BEGIN SOLUTION
# τ − 1 is geometric on {1, 2, ...} with success probability (S − 1)/S: E[τ] = 1 + S/(S−1).
answer_ex3 = 1 + 4 / 3
### END SOLUTION

# %% nbgrader={"grade": true, "grade_id": "ex3_expected_tau_test", "locked": true, "points": 1, "schema_version": 3, "solution": false, "task": false}
checks.score(checks.check_value, "03_expected_tau_S4", answer_ex3, points=1)


# %% [markdown]
# **Numerical check** ($S = 5$, exact proposal): $P(\tau = 2) = 4/5$ and
# $\mathbb E\tau = 1 + 5/4$.


# %%
def meeting_times(S, shift, scale, max_steps=2_000):
    """τ of R lag-1 chain pairs (on_timeout="truncate": unmet pairs count as max_steps + 1)."""
    target = model.target(x.expand(R, -1), shift=shift, scale=scale)
    est = u.coupled_estimate(target, S, max_steps=max_steps, generator=g, on_timeout="truncate")
    return est.tau.double(), int(est.truncated.sum())


tau_exact, _ = meeting_times(5, 0.0, 1.0)
p2, mean_tau = (tau_exact == 2).double(), tau_exact
print(f"P(τ = 2) = {p2.mean():.4f} ± {p2.std() / math.sqrt(R):.4f}   (exact 0.8)")
print(f"E[τ]     = {mean_tau.mean():.4f} ± {mean_tau.std() / math.sqrt(R):.4f}   (exact 2.25)")
assert T.z_score(p2, 0.8).abs() < 4 and T.z_score(mean_tau, 2.25).abs() < 4

# %% [markdown]
# ## Degenerate weights: the $1/t$ law
# Now the opposite extreme: within every set one particle takes essentially all the weight
# (effective sample size ≈ 1), so each selection is an **argmax** of the weights. Think of each
# particle's weight as a random rank; all particles drawn are exchangeable.
#
# * $X_1$'s reference is the best of the $S$ particles of $X_0$; $Y_0$'s reference is one draw.
# * Each chain's reference is the best particle it has seen; each coupled step adds $S-1$ common
#   fresh draws. The chains meet as soon as the best particle seen so far is a common fresh draw.
# * So $\tau > t$ exactly when the best of the $N_t = (S + 1) + (S-1)(t-1)$ particles drawn by
#   step $t$ is one of the $S + 1$ initial ones. By exchangeability every particle is equally
#   likely to be the best:
#
# $$P(\tau > t) = \frac{S+1}{S+1 + (S-1)(t-1)} \qquad (t \ge 1).$$
#
# For large $t$ this is $\approx \frac{S+1}{S-1}\cdot\frac1t$: a tail of index 1, so
# $\mathbb E\tau = \sum_t P(\tau > t) = \infty$ for every $S$.
#
# **Exercise 4 (1 point, derivation).** With $S = 10$, what is $P(\tau > 10)$? Assign it to
# `answer_ex4`.
#
# **Expected output.** One probability (a Python float). A worked example of the same law: at
# $S = 5$ and $t = 3$ it gives $6/(6 + 4 \cdot 2) = 0.4286$. The checker prints ✓ and your value.

# %% jupyter={"source_hidden": true} nbgrader={"grade": false, "grade_id": "ex4_degenerate_tail", "locked": false, "schema_version": 3, "solution": true, "task": false} tags=["solution"]
# answer_ex4 = ...  # (S + 1) / (S + 1 + (S − 1)(t − 1)) at S = 10, t = 10
### BEGIN SOLUTION
answer_ex4 = (10 + 1) / (10 + 1 + (10 - 1) * (10 - 1))
### END SOLUTION

# %% nbgrader={"grade": true, "grade_id": "ex4_degenerate_tail_test", "locked": true, "points": 1, "schema_version": 3, "solution": false, "task": false}
checks.score(checks.check_value, "03_degenerate_tail_S10_t10", answer_ex4, points=1)

# %% [markdown]
# **Numerical check.** A proposal 1000 times wider than the posterior scatters its draws so
# widely that within a set one weight dwarfs the rest: the law above should hold. The same test
# rejects the 1.5× wide proposal ($S = 10$ for both).

# %%
t_check = torch.tensor([2.0, 3.0, 5.0, 10.0, 20.0, 50.0])
law = degenerate_survival(t_check, 10)
tau_deg, _ = meeting_times(10, 0.0, 1000.0)
tau_wide10, _ = meeting_times(10, 0.5, 1.5)
emp_deg, z_deg = T.survival_test(tau_deg, t_check, law)
emp_wide, z_wide = T.survival_test(tau_wide10, t_check, law)
print("t                 ", t_check.int().tolist())
print("1/t law  P(τ > t) ", [round(v, 3) for v in law.tolist()])
print("q ×1000  P(τ > t) ", [round(v, 3) for v in emp_deg.tolist()])
print("q ×1.5   P(τ > t) ", [round(v, 3) for v in emp_wide.tolist()])
print(f"largest |z| against the law: ×1000 {z_deg.abs().max():.1f}; ×1.5 {z_wide.abs().max():.1f}")
assert z_deg.abs().max() < T.z_threshold(len(t_check)), "the 1/t law holds for degenerate weights"
assert z_wide.abs().max() > T.z_threshold(len(t_check)), "power: a healthy proposal is far below"

# %% [markdown]
# ## What slows meeting down
# **Predict.** At $S = 5$, rank these proposals by the tail of $\tau$ (heaviest first): exact;
# 1.5× wide and shifted; 0.7× narrow and shifted (unbounded weights); 10× wide (bounded weights,
# $\sup w/p(x) = 10^2$); 1000× wide. Write your ranking, with a reason for each place, in the
# cell below (2 points), then run the next cell.

# %% [markdown] jupyter={"source_hidden": true} nbgrader={"grade": true, "grade_id": "predict_tail_ranking", "locked": false, "points": 2, "schema_version": 3, "solution": true, "task": false}
# <details><summary>Model answer and rubric: open it only after writing yours</summary>
#
# **Model answer.** Heaviest first: 1000× wide (its weights are degenerate, so it follows the
# $1/t$ law, with an infinite mean); then the 10× wide and the 0.7× narrow proposals, close to
# each other (the 10× one is heavier at $t = 10$, the narrow one has the longer far tail, since a
# reference from the posterior's tail can hold its chain for hundreds of steps); then 1.5× wide
# and shifted; lightest, the exact proposal ($\tau - 1$ geometric with success probability
# $4/5$). The point: bounded weights (10×) do not mean a light tail; what matters is how
# degenerate the weights are at this $S$, and too wide is as bad as too narrow.
#
# **Rubric (2 points).** 1: exact lightest and 1000× heaviest. 1: the 10× wide proposal placed
# among the heavy tails, above 1.5×, with the reason (degenerate weights although bounded).
# Either order of 10× and 0.7× earns full marks when the reason is given.
#
# </details>

# %%
S = 5
taus, censored = {}, {}
for name, (shift, scale) in {
    "exact q": (0.0, 1.0),
    "×1.5 wide, shifted": (0.5, 1.5),
    "×0.7 narrow, shifted": (0.5, 0.7),
    "×10 wide (bounded)": (0.0, 10.0),
    "×1000 wide": (0.0, 1000.0),
}.items():
    taus[name], censored[name] = meeting_times(S, shift, scale)
taus_by_S = {f"S = {s}": meeting_times(s, 0.5, 1.5)[0] for s in (2, 5, 20)}
for name, t in {**taus, **{f"×1.5 wide, shifted, {k}": v for k, v in taus_by_S.items()}}.items():
    print(f"{name:28s} mean τ {t.mean():6.2f}  median {t.median():3.0f}  "
          f"P(τ > 10) {(t > 10).double().mean():.3f}  max {t.max():5.0f}")  # fmt: skip
print(f"pairs not met by t = 2000 (counted as 2001): {censored}")
fig = viz.new_figure(ncols=2, size=(4.6, 3.6))
viz.survival_vs_degenerate(fig.axes[0], taus, S, f"P(τ > t) at S = {S}: bounded ≠ fast")
viz.tau_histogram(fig.axes[1], taus_by_S, max_t=20)
fig.axes[1].set_title("×1.5 wide, shifted: τ against S", fontsize=9)
viz.save(fig, "03_meeting_times")
display(fig)


def tail(name, t):
    v = (taus[name] > t).double()
    return v.mean().item(), v.var().item() / R


def heavier(a, b, t):
    """P(τ > t) under proposal a exceeds that under b by more than 4 standard errors."""
    (pa, va), (pb, vb) = tail(a, t), tail(b, t)
    return pa - pb > 4 * math.sqrt(va + vb)


assert heavier("×0.7 narrow, shifted", "×1.5 wide, shifted", 20), "narrow: heavier than ×1.5"
assert heavier("×10 wide (bounded)", "×0.7 narrow, shifted", 10), "bounded yet heavier"
a, b = taus_by_S["S = 2"], taus_by_S["S = 20"]
assert a.mean() - b.mean() > 4 * math.sqrt(a.var() / R + b.var() / R), "τ falls with S"

# %% [markdown]
# The exact proposal meets almost at once. Both ways of getting the proposal's width wrong make
# the weights **degenerate** and the tail heavy. The 0.7× narrow proposal has unbounded weights:
# a reference from the posterior's tail, where $q$ is tiny, holds its chain until a fresh draw
# beats it. The 10× wide proposal has *bounded* weights, yet at $t = 10$ its tail is heavier
# still: bounded weights promise a geometric tail in the end, not a fast one. Widen $q$ further
# and the curve approaches the $1/t$ law (dashed), which the 1000× proposal follows (as checked
# above for $S = 10$). Larger $S$ shortens $\tau$ (right).
#
# ## Bounded weights give a geometric tail: a bound on the meeting probability
# *After class: read this section with the homework.*
#
# Notebook 02 bounded one chain's forgetting by $\epsilon = (S-1)/(2\bar W + S - 2)$ when
# $w \le \bar W\,p(x)$. The same number bounds the coupled kernel's chance to meet at each step.
#
# **One coupled step.** Take the pair $(X_t, Y_{t-1})$, $t \ge 1$, not yet met. The two sets
# share slots $2..S$, the common fresh draws of the previous step (at $t = 1$, $Y_0$ took $X_1$'s).
# Write $u_j = w(z_j)/p(x)$ for the shared particles, $U = \sum_{j \ge 2} u_j$, and $a$, $b$ for
# the relative weights of the two references. Then $\bar w^X_j = u_j/(a + U)$ and
# $\bar w^Y_j = u_j/(b + U)$ for $j \ge 2$. The chains meet exactly when the coupling selects
# the same *shared* slot in both: its residual branch never selects equal slots, and equal slot
# 1 means two different references. So, given the two sets,
#
# $$P(\text{meet}) = \sum_{j \ge 2}\min(\bar w^X_j, \bar w^Y_j)
#   = \sum_{j\ge2}\frac{u_j}{\max(a, b) + U}
#   \;\ge\; \sum_{j \ge 2}\frac{u_j}{\bar W + u_j + U_{-j}}, \qquad U_{-j} = U - u_j,$$
#
# since both references are particles, so $a, b \le \bar W$.
#
# **Average over the fresh draws.** The shared particles were drawn from $q$ *after* the two
# references were selected, independently of everything before, so given the past they are
# independent with $\mathbb E u_j = \int q\,w/p(x) = 1$. Fix $u_j$: $1/(\bar W + u_j + U_{-j})$ is
# convex in $U_{-j}$, whose mean is $S - 2$, so Jensen's inequality and $u_j \le \bar W$ give
#
# $$\mathbb E\Big[\frac{u_j}{\bar W + u_j + U_{-j}}\Big]
#   \ge \mathbb E\Big[\frac{u_j}{\bar W + u_j + S - 2}\Big]
#   \ge \frac{\mathbb E u_j}{2\bar W + S - 2},$$
#
# and summing over the $S - 1$ shared slots,
#
# $$P(\tau = t + 1 \mid \tau > t,\ \text{the past})
#   \;\ge\; \frac{S-1}{2\bar W + S - 2} = \epsilon.$$
#
# **The tail.** $\tau \ge 2$, so $P(\tau > 1) = 1$, and each later step meets with probability at
# least $\epsilon$ whatever happened before: $P(\tau > t) \le (1-\epsilon)^{t-1}$ for $t \ge 1$, and
# $\mathbb E\tau = \sum_{t \ge 0} P(\tau > t) \le 1 + 1/\epsilon$. For the exact proposal
# ($\bar W = 1$) $\epsilon = (S-1)/S$ and every inequality is an equality: the bound *is* the law
# derived above. A centred proposal $c$ times too wide has $\bar W = c^d$; a shifted one
# $\bar W = c^d\exp\big(|\delta|^2/(2(c^2 - 1))\big)$, with $\delta$ the shift in the posterior's
# whitened coordinates (maximise the log-ratio of the two Gaussians). A narrow proposal has no
# $\bar W$: no bound.
#
# **Numerical check** on the meeting times above ($S = 5$, $R$ pairs each; a centred 3× wide
# proposal added): the observed $P(\tau > t)$ must stay below $(1-\epsilon)^{t-1}$ at every
# $t = 2..40$ (within 4 standard errors), and $\epsilon$ below the meeting probability from the
# worst pair of references ($a = b = \bar W$), $\mathbb E[U/(\bar W + U)]$, estimated from fresh
# draws.


# %%
def sup_relative_weight(shift: float, scale: float) -> float:
    """sup_z w(z)/p(x) for q = N(μ + shift·1, scale² Σ), scale ≥ 1 (infinite when narrower)."""
    delta2 = (T.whitened_shift(model, x, shift) ** 2).sum().item()
    if scale == 1.0:
        return 1.0 if delta2 == 0 else math.inf
    return scale**model.latent_dim * math.exp(delta2 / (2 * (scale**2 - 1)))


taus["×3 wide, centred"] = meeting_times(S, 0.0, 3.0)[0]
bounded = {"exact q": (0.0, 1.0), "×1.5 wide, shifted": (0.5, 1.5),
           "×3 wide, centred": (0.0, 3.0), "×10 wide (bounded)": (0.0, 10.0)}  # fmt: skip
t_grid = torch.arange(2, 41).double()
log_px = model.log_marginal(x)[0]
g_worst = torch.Generator().manual_seed(30)
print(f"S = {S}; observed against bound: P(τ > t) at t = 10 and 20, E τ against 1 + 1/ε")
for name, (shift, scale) in bounded.items():
    w_bar = sup_relative_weight(shift, scale)
    eps_c = (S - 1) / (2 * w_bar + S - 2)
    bound = (1 - eps_c) ** (t_grid - 1)
    emp = (taus[name][None, :] > t_grid[:, None]).double().mean(1)
    assert (emp <= bound + 4 * (bound * (1 - bound) / R).sqrt() + 1e-12).all(), name
    wide = model.target(x.expand(50_000, -1), shift=shift, scale=scale)
    u_rel = (wide.log_weight(wide.sample(S - 1, g_worst)) - log_px).exp()
    assert u_rel.max() <= w_bar * (1 + 1e-9), "no weight above the supremum"
    worst = u_rel.sum(1) / (w_bar + u_rel.sum(1))
    assert eps_c <= worst.mean() + 4 * worst.std() / math.sqrt(len(worst)), name
    print(f"{name:20s} W̄ = {w_bar:6.2f}  ε = {eps_c:.4f}  worst pair {worst.mean():.4f}  "
          f"P(τ = 2) {(taus[name] == 2).double().mean():.3f}   P(τ > 10) {emp[8]:.3f} ≤ "
          f"{bound[8]:.3f}   P(τ > 20) {emp[18]:.3f} ≤ {bound[18]:.3f}   "
          f"E τ {taus[name].mean():5.2f} ≤ {1 + 1 / eps_c:6.2f}")  # fmt: skip
exact_law = T.survival_test(taus["exact q"], t_grid[:4], (1 / S) ** (t_grid[:4] - 1))[1]
assert exact_law.abs().max() < T.z_threshold(4), "exact proposal: the bound is the law itself"

# %% [markdown]
# The bound holds at every $t$, and for the exact proposal it is the law itself: $\epsilon = 0.8$
# is $P(\tau = 2)$, and $\mathbb E\tau = 2.26$ against $1 + 1/\epsilon = 2.25$. For the wide
# proposals it is true but loose, and the printout says where the slack is. Per step, $\epsilon$ is
# within a factor 1.3–1.6 of the meeting probability of the *worst* pair of references (0.0197
# against 0.0275 at 10×): that much is lost to Jensen's inequality and to $u_j \le \bar W$.
# Most of the slack comes from assuming the worst pair at every step: typical references weigh
# far less than $\bar W$, and the first coupled step meets with probability about 0.4–0.5, 3 to 20
# times $\epsilon$. So the tail bound overstates $P(\tau > 20)$ about 11-fold at 10× (0.062
# observed against 0.685) and about 40-fold for 1.5× shifted (0.007 against 0.298), and
# $\mathbb E\tau$ by a factor of 2–7. At 1000× wide $\bar W = 10^6$ and
# $\epsilon \approx 2\cdot10^{-6}$: a geometric tail that sets in only after about
# $1/\epsilon = 500{,}000$ steps, so within any budget one sees the $1/t$ law instead. Bounded
# weights guarantee *a* geometric tail; its rate can be too slow to matter.
#
# ## Summary
# * The maximal coupling selects a common index with probability $\alpha = 1 - \mathrm{TV}$, the
#   most any coupling can, and keeps both marginals exact.
# * $\bar K$: coupled selection plus common fresh draws; each chain alone is an exact CIS chain,
#   and once they hold the same set they stay together. With lag 1,
#   $\tau = \inf\{t \ge 1: X_t = Y_{t-1}\} \ge 2$.
# * Exact proposal: $\tau - 1 \sim \mathrm{Geometric}((S-1)/S)$, $\mathbb E\tau = 1 + S/(S-1)$.
#   Degenerate weights: $P(\tau > t) = (S+1)/(S+1+(S-1)(t-1))$, tail index 1,
#   $\mathbb E\tau=\infty$.
# * Bounded weights, $w \le \bar W p(x)$, give each coupled step a meeting probability of at least
#   $\epsilon = (S-1)/(2\bar W + S - 2)$, so $P(\tau > t) \le (1-\epsilon)^{t-1}$: exact for the
#   exact proposal, loose by an order of magnitude for wide ones here.
# * Bounded weights do not mean fast meeting: what matters is how degenerate the weights are
#   at the $S$ in use, and a proposal that is too wide is as bad as one that is too narrow.
#
# ## References
# * T. Lindvall (1992). *Lectures on the Coupling Method.* Wiley (maximal couplings).
# * C. Andrieu, A. Lee, M. Vihola (2018). Uniform ergodicity of the iterated conditional SMC and
#   geometric ergodicity of particle Gibbs samplers. *Bernoulli* 24(2): 842–872.
# * P. E. Jacob, J. O'Leary, Y. F. Atchadé (2020). Unbiased Markov chain Monte Carlo methods with
#   couplings. *J. R. Stat. Soc. B* 82(3): 543–600 (lag-1 coupled chains, meeting times).
# * F. Ruiz, M. Titsias, T. Cemgil, A. Doucet (2021). Unbiased gradient estimation for variational
#   auto-encoders using coupled Markov chains. UAI, PMLR 161:707–717.
