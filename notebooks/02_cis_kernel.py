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
# # 02 · The CIS kernel: one Markov chain on the augmented space
#
# A state is a particle set $\xi = (z_1 = r, z_2, \dots, z_S)$ whose slot 1 holds the
# **reference** $r$. One conditional importance sampling (CIS, i-SIR) step:
#
# 1. pick $\ell \sim \mathrm{Categorical}(\bar w(\xi))$; the new reference is $r' = z_\ell$;
# 2. draw fresh $z'_2..z'_S \sim q$ i.i.d.; $\xi' = (r', z'_2, \dots, z'_S)$.
#
# It leaves $p(r\mid x)\prod_{j\ge2} q(z_j)$ invariant, and under it
# $\mathbb E[h(\xi)] = \mathbb E_p[f]$ for $h(\xi) = \sum_j \bar w_j(\xi) f(z_j)$.
# Started from $\xi_0 \sim q^S$, $h(\xi_0)$ **is** IWAE's estimate: the chain starts at IWAE's
# bias and forgets it step by step. `u.cis_step(target, state, generator)` is one step for a
# whole batch of chains; `T.run_cis_chain` records $h(X_t)$ along the way.

# %%
# %matplotlib inline
import math

import torch
from IPython.display import display

import ucvae_lite as u
from ucvae_lite import teaching as T
from ucvae_lite import viz

FAST = T.fast_mode()
R = 1_000 if FAST else 20_000  # independent chains per curve
STEPS = 40
g = torch.Generator().manual_seed(2)

model = u.LinearGaussian.example(latent_dim=2, obs_dim=4, sigma=0.7, seed=0)
x = model.sample_data(3, torch.Generator().manual_seed(1))[:1]
exact = model.posterior(x)[0][0]  # E[z | x]


def chains(S: int, shift: float = 0.5, scale: float = 1.5, defensive: float = 0.0):
    """h(X_t) = Σ w̄ z for R independent CIS chains: [STEPS + 1, R, 2]."""
    target = model.target(x.expand(R, -1), shift=shift, scale=scale, defensive=defensive)
    return T.run_cis_chain(target, S, STEPS, generator=g)


def bias_curve(h):
    """|E h(X_t) − exact| (first coordinate) and its standard error, per t."""
    return (h[..., 0].mean(1) - exact[0]).abs(), h[..., 0].std(1) / math.sqrt(h.shape[1])


# %% [markdown]
# ## Convergence of $\mathbb E\,h(X_t)$ to the exact posterior mean, for several S
# Wide, shifted proposal (bounded weights). The bias at $t = 0$ is IWAE's bias.

# %%
by_S = {S: chains(S) for S in (2, 5, 20)}
fig = viz.new_figure(ncols=2)
t = torch.arange(STEPS + 1)
for S, h in by_S.items():
    b, se = bias_curve(h)
    viz.estimate_with_band(fig.axes[0], t, b, se, f"S = {S}")
    fig.axes[1].plot(t * (S - 1) + 1, b, marker="o", ms=2, label=f"S = {S}")
for ax, xlabel in zip(fig.axes, ["step t", "log-weight evaluations S + t(S − 1)"], strict=True):
    ax.set_yscale("log")
    ax.set_ylim(1e-4, 1)
    ax.set_xlabel(xlabel)
    ax.set_ylabel("|E h(X_t) − E[z₁|x]|")
    ax.legend(fontsize=8)
fig.axes[0].set_title("the chain forgets IWAE's bias")
fig.axes[1].set_title("the same, per unit of work")
viz.save(fig, "02_cis_convergence")
display(fig)

for S, h in by_S.items():
    z0, zT = T.z_score(h[0], exact).abs().max(), T.z_score(h[-1], exact).abs().max()
    print(f"S = {S:2d}: |z| at t = 0: {z0:6.1f};  at t = {STEPS}: {zT:5.1f}")
    assert z0 > 4, "h(X_0) is IWAE's estimate: biased"
assert T.z_score(by_S[20][-1], exact).abs().max() < 4, "the S = 20 chain should have converged"
assert T.z_score(by_S[5][-1], exact).abs().max() < 4, "the S = 5 chain should have converged"

# %% [markdown]
# ## Proposal quality
# Same S = 5, three proposals: wide and shifted, **narrow** (half the posterior width,
# unshifted), and the narrow one mixed with the prior (defensive, see below). We track
# $E[z_1^2\mid x]$, which depends on the posterior's tails: a narrow proposal rarely proposes
# there, so the chain is slow to put its reference there.

# %%
by_q = {}
fig = viz.new_figure()
ax = fig.axes[0]
second = lambda z: z[..., 0:1] ** 2  # noqa: E731  (E[z₁² | x] is sensitive to the tails)
exact2 = model.posterior_moments(x)[1][0, 0, 0]
for name, (shift, scale, eps) in {
    "wide (×1.5), shifted": (0.5, 1.5, 0.0),
    "narrow (×0.5)": (0.0, 0.5, 0.0),
    "narrow, defensive ε = 0.2": (0.0, 0.5, 0.2),
}.items():
    tgt = model.target(x.expand(R, -1), shift=shift, scale=scale, defensive=eps)
    h2 = T.run_cis_chain(tgt, 5, STEPS, second, generator=g)[..., 0]
    by_q[name] = h2
    b = (h2.mean(1) - exact2).abs()
    se = h2.std(1) / math.sqrt(R)
    viz.estimate_with_band(ax, t, b, se, name)
ax.set_yscale("log")
ax.set_xlabel("step t")
ax.set_ylabel("|E h(X_t) − E[z₁² | x]|")
ax.set_title("S = 5: a narrow proposal converges slowly")
ax.legend(fontsize=7)
viz.save(fig, "02_cis_proposals")
display(fig)

z_wide = T.z_score(by_q["wide (×1.5), shifted"][-1], exact2).abs().item()
z_narrow = T.z_score(by_q["narrow (×0.5)"][-1], exact2).abs().item()
print(f"|z| for E[z₁²] at t = {STEPS}: wide {z_wide:.1f}, narrow {z_narrow:.1f}")
assert z_wide < 4

# %% [markdown]
# ## Bounded versus unbounded weights, and the defensive proposal
# The CIS kernel is uniformly ergodic when $\sup_z w(z) < \infty$ (Andrieu, Lee & Vihola
# 2018). For a Gaussian proposal $q = \mathcal N(\mu, c^2\Sigma)$ of the Gaussian posterior,
# $w = p(x)\,p(z\mid x)/q(z)$:
# bounded by $p(x)\,c^d$ when $c \ge 1$ and $q$ is centred, **unbounded** when $c < 1$. The
# defensive mixture $q_\varepsilon = (1-\varepsilon) q + \varepsilon\, p(z)$ bounds them by
# $\bar L/\varepsilon$ with $\bar L = \sup_z p(x\mid z) = (2\pi\sigma^2)^{-p/2}$.
# Watch the largest of $n$ log-weights as $n$ grows.

# %%
sizes = [10, 100, 1_000, 10_000, 100_000] if FAST else [10, 100, 1_000, 10_000, 100_000, 1_000_000]
log_px = model.log_marginal(x).item()
log_Lbar = -0.5 * model.obs_dim * math.log(2 * math.pi) - model.obs_dim * model.log_sigma.item()
eps = 0.2
proposals = {
    "wide (×1.5), centred": (0.0, 1.5, 0.0),
    "narrow (×0.5)": (0.0, 0.5, 0.0),
    f"narrow, defensive ε = {eps}": (0.0, 0.5, eps),
}
max_lw = {
    name: T.max_log_weight_vs_n(model.target(x, shift=s, scale=c, defensive=e), sizes, g)
    for name, (s, c, e) in proposals.items()
}
fig = viz.new_figure()
ax = fig.axes[0]
for name, v in max_lw.items():
    ax.plot(sizes, [lw - log_px for lw in v], "o-", label=name)
ax.axhline(2 * math.log(1.5), color="tab:blue", ls=":", lw=1, label="bound d·log 1.5 (wide)")
ax.axhline(
    log_Lbar - math.log(eps) - log_px,
    color="tab:green",
    ls=":",
    lw=1,
    label="bound log(L̄/ε) − log p(x)",
)
ax.set_xscale("log")
ax.set_xlabel("n proposal draws")
ax.set_ylabel("max log w − log p(x)")
ax.set_title("unbounded weights keep growing")
ax.legend(fontsize=7)
viz.save(fig, "02_weights")
display(fig)

narrow = max_lw["narrow (×0.5)"]
assert narrow[-1] - narrow[1] > 1.0, "narrow proposal: the max weight keeps growing with n"
assert max(max_lw["wide (×1.5), centred"]) <= log_px + 2 * math.log(1.5) + 1e-9
assert max(max_lw[f"narrow, defensive ε = {eps}"]) <= log_Lbar - math.log(eps) + 1e-9

# %% [markdown]
# **Take-away.** One chain removes IWAE's bias only as $t \to \infty$, fast when the weights are
# bounded and the proposal is good, slowly otherwise. Notebook 03 runs *two* coupled chains so
# that a finite run can be corrected exactly.
#
# ## Exercises
#
# **Exercise 1.** Invariance. Start chains *at* the target: put an exact posterior draw in slot 1
# (the reference) and proposal draws in slots 2..S, take one `u.cis_step`, and check that the new
# reference still has the posterior mean (z-scores below 4).

# %% jupyter={"source_hidden": true} tags=["solution"]
tgt = model.target(x.expand(R, -1), shift=0.5, scale=1.5)
ex_gen = torch.Generator().manual_seed(5)
z_start = tgt.sample(5, ex_gen)
z_start[:, 0] = T.posterior_draws(model, x, R, ex_gen)
state = u.CISState(z_start, tgt.log_weight(z_start))
state, _ = u.cis_step(tgt, state, ex_gen)
print("z-scores of the new reference:", T.z_score(state.particles[:, 0], exact).numpy().round(2))

# %% [markdown]
# **Exercise 2.** Which S reaches $|\text{bias}| < 0.01$ in $E[z_1\mid x]$ with the fewest
# log-weight evaluations? Use the curves in `by_S` (evaluations after t steps: $S + t(S-1)$).

# %% jupyter={"source_hidden": true} tags=["solution"]
for S, h in by_S.items():
    b, _ = bias_curve(h)
    hit = (b < 0.01).nonzero()
    t_hit = int(hit[0]) if len(hit) else None
    cost = None if t_hit is None else S + t_hit * (S - 1)
    print(f"S = {S:2d}: first t with |bias| < 0.01: {t_hit}, evaluations: {cost}")
