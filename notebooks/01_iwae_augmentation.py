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
# # 01 · IWAE augmentation: the bound, the extended target, and the bias of IWAE's gradient
#
# With $S$ draws $z_1..z_S \sim q(z\mid x)$ and weights $w_s = p(x, z_s)/q(z_s\mid x)$,
# IWAE maximises
#
# $$\mathcal L_S = \mathbb E_{q^S} \log\Big(\frac1S\sum_s w_s\Big) \le \log p(x),$$
#
# and its $\theta$-gradient is
# $\mathbb E_{q^S}\big[\sum_s \bar w_s \nabla_\theta \log p_\theta(x, z_s)\big]$
# with $\bar w_s = w_s/\sum_j w_j$. Compare with Fisher's identity: the same integrand
# $h(z_{1:S}) = \sum_s \bar w_s f(z_s)$, but averaged under the wrong distribution.
# The right one is the **extended target**
#
# $$\bar\pi(s, z_{1:S}) = \tfrac1S\, p(z_s\mid x) \prod_{j\neq s} q(z_j\mid x),$$
#
# under which slot $s$ is exactly posterior-distributed and $\bar\pi(s\mid z_{1:S}) = \bar w_s$, so
# $\mathbb E_{\bar\pi}[h] = \mathbb E_{p(z\mid x)}[f]$ exactly.

# %%
# %matplotlib inline
import math

import torch
from IPython.display import display

import ucvae_lite as u
from ucvae_lite import teaching as T
from ucvae_lite import viz

FAST = T.fast_mode()
R = 2_000 if FAST else 20_000  # replicates per measurement
g = torch.Generator().manual_seed(1)

model = u.LinearGaussian.example(latent_dim=2, obs_dim=4, sigma=0.7, seed=0)
x = model.sample_data(3, torch.Generator().manual_seed(1))[:1]
log_px = model.log_marginal(x).item()
post_mean, post_cov = model.posterior(x)
target = model.target(x, shift=0.5, scale=1.5)  # wide, shifted proposal (as in notebook 00)
many = model.target(x.expand(R, -1), shift=0.5, scale=1.5)  # R replicates of the same problem

# %% [markdown]
# ## The IWAE bound versus S
# Each replicate is one value of $\log \frac1S \sum_s w_s$; their mean estimates $\mathcal L_S$.
# (`many` holds R copies of the data point, so one call draws all replicates.)

# %%
sizes = [1, 2, 5, 10, 50, 200]
bounds = {S: T.iwae_bound_samples(many, S, 1, g)[0] for S in sizes}
gap = {S: log_px - b.mean().item() for S, b in bounds.items()}
gap_se = {S: b.std().item() / math.sqrt(len(b)) for S, b in bounds.items()}
for S in sizes:
    print(f"S = {S:4d}: log p(x) − L_S = {gap[S]:.4f} ± {gap_se[S]:.4f}")

fig = viz.new_figure(ncols=2)
ax = fig.axes[0]
means = [bounds[S].mean().item() for S in sizes]
viz.estimate_with_band(ax, sizes, means, [gap_se[S] for S in sizes], "IWAE bound L_S", exact=log_px)
ax.set_xscale("log")
ax.set_xlabel("S")
ax.set_title("the bound approaches log p(x)")
ax.legend(fontsize=8)
ax = fig.axes[1]
ax.errorbar(sizes, [gap[S] for S in sizes], [2 * gap_se[S] for S in sizes], marker="o", ms=3)
ax.plot(sizes, [gap[10] * 10 / S for S in sizes], "k:", label="∝ 1/S")
ax.set_xscale("log")
ax.set_yscale("log")
ax.set_xlabel("S")
ax.set_title("gap log p(x) − L_S")
ax.legend(fontsize=8)
viz.save(fig, "01_iwae_bound")
display(fig)

# The bound is below log p(x) (one-sided, 4 SE; at S ≤ 10 the gap is large enough to resolve
# with R replicates in fast mode), and it tightens with S.
for S in [1, 2, 5, 10]:
    assert gap[S] > 4 * gap_se[S], f"IWAE bound should be strictly below log p(x) at S={S}"
assert gap[2] > gap[10] + 4 * math.hypot(gap_se[2], gap_se[10])

# %% [markdown]
# ## The extended target: slot $s$ is exactly posterior-distributed
# `u.sample_extended_target` draws $s$ uniformly, puts an exact posterior draw in slot $s$ and
# proposal draws everywhere else. Check two claims: (1) the particle in slot $s$ has the
# posterior mean; (2) under $\bar\pi$ the self-normalised estimate $\sum_s \bar w_s z_s$ is
# **unbiased**, while under $q^S$ (plain IWAE) it is not.

# %%
S = 5
s_idx, z_ext = u.sample_extended_target(
    many, S, lambda gen: T.posterior_draws(model, x, R, gen), generator=g
)
slot = z_ext[torch.arange(R), s_idx]
w_ext = u.normalized_weights(many.log_weight(z_ext))
h_ext = (w_ext[..., None] * z_ext).sum(1)
h_iwae = u.iwae_estimate(many, S, generator=g).mean()
exact = post_mean[0]
rows = {"slot s under π̄": slot, "Σ w̄ z under π̄": h_ext, "Σ w̄ z under q^S (IWAE)": h_iwae}
for name, v in rows.items():
    zs = T.z_score(v, exact)
    print(f"{name:26s} mean {v.mean(0).numpy().round(4)}  z-scores {zs.numpy().round(1)}")
assert T.z_score(slot, exact).abs().max() < 4
assert T.z_score(h_ext, exact).abs().max() < 4
assert T.z_score(h_iwae, exact).abs().max() > 4, "IWAE's self-normalised mean should be biased"

fig = viz.new_figure(size=(5.0, 4.2))
ax = fig.axes[0]
others = z_ext[:400][torch.arange(S)[None, :] != s_idx[:400, None]]
ax.scatter(*others.T, s=3, alpha=0.3, color=viz.COLORS["fresh"], label="other slots ~ q")
ax.scatter(*slot[:400].T, s=4, alpha=0.6, color=viz.COLORS["x"], label="slot s ~ p(z | x)")
viz.gaussian_ellipse(ax, exact, post_cov[0], color="k", lw=1.5, label="posterior (2σ)")
ax.legend(fontsize=8)
ax.set_title(f"draws from the extended target π̄ (S = {S})")
viz.save(fig, "01_extended_target")
display(fig)

# %% [markdown]
# ## The bias of IWAE's gradient versus S
# For each S we draw $R$ independent IWAE gradients of $\log p_\theta(x)$ (one parameter copy per
# replicate makes one backward pass return all of them) and compare their mean with the exact
# gradient from autograd of the closed-form $\log p_\theta(x)$. The bias shrinks like $1/S$ but
# is there at every $S$.

# %%
grad_sizes = [2, 5, 10, 20, 50] if FAST else [2, 5, 10, 20, 50, 100, 200]
bias = T.iwae_gradient_bias(model, x, grad_sizes, R, generator=g)
for S, b, zmax in zip(bias.num_samples, bias.bias_norm, bias.max_z, strict=True):
    print(f"S = {S:3d}: |E[IWAE grad] − exact| = {b:.3f}, largest |z| = {zmax:.1f}")

fig = viz.new_figure()
ax = fig.axes[0]
ax.plot(bias.num_samples, bias.bias_norm, "o-", label="‖bias‖ of IWAE gradient")
ax.plot(
    bias.num_samples, [bias.bias_norm[0] * 2 / S for S in bias.num_samples], "k:", label="∝ 1/S"
)
ax.set_xscale("log")
ax.set_yscale("log")
ax.set_xlabel("S")
ax.legend(fontsize=8)
ax.set_title("IWAE's gradient is biased at every S")
viz.save(fig, "01_iwae_gradient_bias")
display(fig)

assert bias.max_z[0] > 4 and bias.max_z[2] > 4, "IWAE gradient should be detectably biased"
assert bias.bias_norm[-1] < bias.bias_norm[0] / 4, "the bias should shrink with S"

# %% [markdown]
# **Take-away.** IWAE averages the right integrand under $q^S$ instead of $\bar\pi$; the mismatch
# is exactly $\mathrm{KL}(q^S\,\|\,\bar\pi) = \log p(x) - \mathcal L_S$. Notebook 02 builds a
# Markov chain whose stationary distribution *is* $\bar\pi$.
#
# ## Exercises
#
# **Exercise 1.** Use the exact posterior as the proposal (`shift=0, scale=1`). What is the IWAE
# bound for $S = 1$ and $S = 10$? Is IWAE's self-normalised mean still biased? Explain.

# %% jupyter={"source_hidden": true} tags=["solution"]
perfect = model.target(x.expand(R, -1), shift=0.0, scale=1.0)
lw = perfect.log_weight(perfect.sample(10, g))
print("log w − log p(x) (should be 0):", (lw - log_px).abs().max().item())
est_perfect = u.iwae_estimate(perfect, 10, generator=g).mean()
print("z-scores of IWAE mean:", T.z_score(est_perfect, post_mean[0]).numpy().round(2))
# All weights equal p(x): the bound is tight and w̄ = 1/S, so IWAE is exact averaging of
# posterior draws — unbiased. The bias comes entirely from q ≠ p(z | x).

# %% [markdown]
# **Exercise 2.** For large S the gap behaves like $\mathrm{Var}_q[w] / (2 S\, p(x)^2)$.
# Estimate $\mathrm{Var}_q[w/p(x)]$ with $10^5$ proposal draws and compare $S\times$gap at
# $S = 200$ with half of it.

# %% jupyter={"source_hidden": true} tags=["solution"]
w_rel = (target.log_weight(target.sample(100_000, g))[0] - log_px).exp()
print("Var[w/p(x)]/2 =", (w_rel.var() / 2).item(), "  S·gap at S=200 =", 200 * gap[200])
