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
# Two CIS chains $X$ and $Y$ take one step each, **jointly**:
#
# 1. their selection indices come from the **maximal coupling** of
#    $\mathrm{Categorical}(\bar w(\xi^X))$ and $\mathrm{Categorical}(\bar w(\xi^Y))$: with
#    $\nu = \min(\bar w^X, \bar w^Y)$ and $\alpha = \sum\nu$, a common index from $\nu/\alpha$ with
#    probability $\alpha$, otherwise independent indices from the residuals;
# 2. both chains take the **same** fresh draws $z'_2..z'_S$ (common random numbers).
#
# Each chain alone still makes an exact CIS step. After one coupled step the two sets differ
# only in slot 1, and the chains **meet** as soon as both select the same fresh slot; from then
# on they are identical.

# %%
# %matplotlib inline
import torch
from IPython.display import display

import ucvae_lite as u
from ucvae_lite import teaching as T
from ucvae_lite import viz
from ucvae_lite import widgets as wd

FAST = T.fast_mode()
R = 2_000 if FAST else 20_000  # chain pairs per meeting-time distribution
g = torch.Generator().manual_seed(3)

model = u.LinearGaussian.example(latent_dim=2, obs_dim=4, sigma=0.7, seed=0)
x = model.sample_data(3, torch.Generator().manual_seed(1))[:1]

# %% [markdown]
# ## The maximal coupling of two categoricals
# Move the sliders (unnormalised weights of $p$ and $q$). The hatched bars are
# $\min(p, q)$; their total $\alpha$ is the largest possible $P(i = j)$ for any pair $(i, j)$
# with $i \sim p$, $j \sim q$ — and the maximal coupling attains it.

# %%
coupling = wd.coupling_widget(num_slots=5, seed=0)
display(coupling)

# %%
res = T.coupling_draws([0.9, 0.5, 0.1, 0.3, 0.2], [0.2, 0.6, 0.5, 0.1, 0.4], n=20_000, seed=1)
se = (res.alpha * (1 - res.alpha) / res.n) ** 0.5
print(f"α = {res.alpha:.4f}; fraction of joint draws with i = j: {res.frac_equal:.4f} ± {se:.4f}")
assert abs(res.frac_equal - res.alpha) < 4 * se, "P(i = j) must equal the overlap α"
fig = viz.new_figure(size=(6.0, 3.4))
viz.categorical_coupling(fig.axes[0], res.p, res.q, res.draw)
viz.save(fig, "03_maximal_coupling")
display(fig)

# %% [markdown]
# ## Two coupled chains on the 2-D latent
# The estimator of notebook 04 runs the chains with a lag: $X_1 \sim K(X_0)$, then
# $(X_{t+1}, Y_t) \sim \bar K((X_t, Y_{t-1}))$, and $\tau = \inf\{t \ge 1: X_t = Y_{t-1}\}$.
# $Y_0$ shares $X_1$'s fresh draws, so the chains can meet at the first coupled step ($\tau \ge 2$).
# The widget shows $X_t$ (blue reference) and $Y_{t-1}$ (orange square) with their shared fresh
# draws (grey, sized by weight); the dashed ellipse is the posterior. Change S, the proposal
# width or the seed, and step through t until they meet.

# %%
chains = wd.coupled_chains_widget(model, x, num_samples=5, shift=0.5, scale=1.5, seed=5)
display(chains)

# %%
# m = 20: the pair keeps running up to step 20 even after it meets, so X_τ is drawn too.
run = T.lag_coupled_chains(
    model.target(x, shift=0.5, scale=1.5), 5, m=20, generator=torch.Generator().manual_seed(5)
)
tau = int(run.tau[0])
post = tuple(v[0] for v in model.posterior(x))
shown = list(range(1, tau + 1))
fig = viz.new_figure(ncols=len(shown), size=(3.3, 3.2))
for ax, t in zip(fig.axes, shown, strict=True):
    viz.coupled_chains_step(ax, run.xs[t], run.ys[t - 1], t, t >= tau, post, (-0.8, 2.2, -0.8, 2.5))
    if t > 1:
        ax.get_legend().remove()
viz.save(fig, "03_coupled_chains")
display(fig)
assert torch.equal(run.xs[tau].particles, run.ys[tau - 1].particles), "met means identical sets"


# %% [markdown]
# ## Meeting times versus S and proposal quality
# `u.coupled_estimate` returns τ for every chain pair. With the exact posterior as proposal all
# weights are equal, the common index is uniform, and the chains meet at each coupled step with
# probability $(S-1)/S$: $P(\tau = 2) = (S-1)/S$. A good proposal meets fast; larger S meets
# faster. A proposal **narrower** than the posterior (unbounded weights; here 0.7× as wide and
# shifted, like a typical encoder) gives a heavy tail: a
# chain holding a reference of huge weight stays put until a fresh set beats it.


# %%
def meeting_times(S, shift, scale, max_steps=10_000):
    target = model.target(x.expand(R, -1), shift=shift, scale=scale)
    est = u.coupled_estimate(target, S, max_steps=max_steps, generator=g, on_timeout="truncate")
    return est.tau.double(), int(est.truncated.sum())


cap = 500 if FAST else 5_000  # censoring point for the narrow proposal (reported, never silent)
taus = {}
for S in (2, 5, 20):
    taus[f"wide ×1.5, shifted, S = {S}"], _ = meeting_times(S, 0.5, 1.5)
taus["exact proposal, S = 5"], _ = meeting_times(5, 0.0, 1.0)
taus["narrow ×0.7, shifted, S = 5"], censored = meeting_times(5, 0.5, 0.7, cap)
for name, t in taus.items():
    print(
        f"{name:28s} mean τ {t.mean():6.2f}  median {t.median():3.0f}  "
        f"p99 {t.quantile(0.99):5.0f}  max {t.max():5.0f}"
    )
print(f"narrow proposal: {censored} of {R} chain pairs had not met by t = {cap} (censored)")

fig = viz.new_figure(ncols=2)
for name, t in taus.items():
    viz.survival(fig.axes[0], t, name)
tt = torch.arange(2, 1000, dtype=torch.float64)
for S in (5,):
    fig.axes[0].plot(
        tt,
        (S + 1) / (S + 1 + (S - 1) * (tt - 1)),
        "k:",
        lw=1,
        label=f"degenerate-weights limit, S = {S}",
    )
fig.axes[0].legend(fontsize=6)
fig.axes[0].set_title("P(τ > t): heavy tail for a narrow proposal")
ax = fig.axes[1]
for S in (2, 5, 20):
    t = taus[f"wide ×1.5, shifted, S = {S}"]
    ax.hist(
        t.numpy(),
        bins=torch.arange(1.5, 30.5).numpy(),
        histtype="step",
        density=True,
        label=f"S = {S}",
    )
ax.set_xlabel("τ")
ax.set_title("wide proposal: τ versus S")
ax.legend(fontsize=8)
viz.save(fig, "03_meeting_times")
display(fig)

# Checks: the exact-proposal law, τ falling with S, and the narrow proposal's heavier tail
# (P(τ > 50), where the wide proposal has essentially no mass).
p_exact = (5 - 1) / 5
met2 = (taus["exact proposal, S = 5"] == 2).double()
assert abs(met2.mean() - p_exact) < 4 * (p_exact * (1 - p_exact) / R) ** 0.5
t2, t20 = taus["wide ×1.5, shifted, S = 2"], taus["wide ×1.5, shifted, S = 20"]
assert t2.mean() - t20.mean() > 4 * (t2.var() / R + t20.var() / R).sqrt()
wide5 = (taus["wide ×1.5, shifted, S = 5"] > 50).double()
narrow5 = (taus["narrow ×0.7, shifted, S = 5"] > 50).double()
assert narrow5.mean() - wide5.mean() > 4 * (narrow5.var() / R + wide5.var() / R).sqrt()

# %% [markdown]
# **Take-away.** Meeting is fast when the weights are bounded and the proposal is good; with a
# too-narrow proposal τ has a polynomial tail (notebook 06) and the cost of the estimator is
# dominated by rare, very long runs.
#
# ## Exercises
#
# **Exercise 1.** Show that the maximal coupling's $P(i = j)$ equals $1 - \mathrm{TV}(p, q)$,
# where $\mathrm{TV} = \frac12\sum_s |p_s - q_s|$, for the `res` example above.

# %% jupyter={"source_hidden": true} tags=["solution"]
tv = 0.5 * (res.p - res.q).abs().sum().item()
print(f"1 − TV = {1 - tv:.4f}, α = {res.alpha:.4f}, empirical P(i = j) = {res.frac_equal:.4f}")

# %% [markdown]
# **Exercise 2.** With the exact posterior as proposal, $\tau - 1$ is geometric with success
# probability $(S-1)/S$, so $E[\tau] = 1 + S/(S-1)$. Check this for $S = 2$ and $S = 10$.

# %% jupyter={"source_hidden": true} tags=["solution"]
for S_ex in (2, 10):
    t_ex, _ = meeting_times(S_ex, 0.0, 1.0)
    se_ex = (t_ex.var() / len(t_ex)).sqrt().item()
    print(f"S = {S_ex}: mean τ {t_ex.mean():.3f} ± {se_ex:.3f}, theory {1 + S_ex / (S_ex - 1):.3f}")

# %% [markdown]
# **Exercise 3.** Does the defensive proposal (ε = 0.2) shorten the narrow proposal's tail here?
# Compare $P(\tau > 20)$ with and without it (hint: `model.target(..., defensive=0.2)`).

# %% jupyter={"source_hidden": true} tags=["solution"]
tgt_def = model.target(x.expand(R, -1), shift=0.5, scale=0.7, defensive=0.2)
est_def = u.coupled_estimate(tgt_def, 5, max_steps=cap, generator=g, on_timeout="truncate")
print(
    "P(τ > 20): narrow",
    (taus["narrow ×0.7, shifted, S = 5"] > 20).double().mean().item(),
    " narrow + defensive",
    (est_def.tau > 20).double().mean().item(),
)
