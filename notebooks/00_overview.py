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
# # 00 · Overview: why a VAE's gradient is hard, and a toy model where we know the answer
#
# A latent-variable model $p_\theta(x, z) = p(z)\,p_\theta(x \mid z)$ is trained by maximum
# likelihood, which needs $\nabla_\theta \log p_\theta(x)$ with
# $p_\theta(x) = \int p_\theta(x, z)\,dz$ — an integral nobody can compute for a neural decoder.
# **Fisher's identity** turns the gradient into a posterior expectation:
#
# $$\nabla_\theta \log p_\theta(x)
#   = \mathbb{E}_{p_\theta(z\mid x)}\big[\nabla_\theta \log p_\theta(x, z)\big].$$
#
# The posterior is intractable too, so a VAE follows the ELBO and an IWAE its $S$-sample bound,
# both **biased** surrogates. This package teaches how two coupled Markov chains on IWAE's
# augmented space give an estimate of that posterior expectation that is **exactly unbiased**
# (Ruiz, Titsias, Cemgil & Doucet, UAI 2021).
#
# To *see* bias we need the exact answer. The linear-Gaussian model has everything in closed form:
#
# $$z \sim \mathcal N(0, I_d), \qquad x \mid z \sim \mathcal N(Wz + b, \sigma^2 I_p),$$
# $$p(x) = \mathcal N(x;\, b,\, WW^\top + \sigma^2 I), \qquad
#   p(z \mid x) = \mathcal N(\mu, \Sigma),\ \Sigma = (I + W^\top W/\sigma^2)^{-1}.$$

# %%
# %matplotlib inline
import torch
from IPython.display import display

import ucvae_lite as u
from ucvae_lite import teaching as T
from ucvae_lite import viz

FAST = T.fast_mode()  # UCVAE_FAST=1 (CI): fewer replicates, same claims
R = 5_000 if FAST else 50_000
g = torch.Generator().manual_seed(0)

model = u.LinearGaussian.example(latent_dim=2, obs_dim=4, sigma=0.7, seed=0)
x = model.sample_data(3, torch.Generator().manual_seed(1))[:1]  # one data point
post_mean, post_cov = model.posterior(x)
print("log p(x) exact      :", round(model.log_marginal(x).item(), 4))
print("E[z | x] exact      :", post_mean[0].numpy().round(4))
print("posterior std devs  :", post_cov[0].diagonal().sqrt().numpy().round(4))

# %% [markdown]
# ## Fisher's identity, checked
# Average $\nabla_\theta \log p_\theta(x, z)$ over exact posterior draws and compare with autograd
# of the closed-form $\log p_\theta(x)$ ($\theta = (W, b, \log\sigma)$, 13 numbers). Every
# comparison in these notebooks is a z-score: (mean − exact) / standard error; a correct
# estimator gives |z| < 4 except with probability ≈ 6·10⁻⁵ per coordinate.

# %%
exact_grad = T.exact_gradient(model, x)
z_post = T.posterior_draws(model, x, R, g)
fisher = T.joint_gradients(model, x, z_post)
z_fisher = T.z_score(fisher, exact_grad)
print("exact ∇θ log p(x):", exact_grad.numpy().round(3))
print("max |z| of the Monte Carlo Fisher average:", round(z_fisher.abs().max().item(), 2))
assert z_fisher.abs().max() < 4, "Fisher's identity must hold within 4 standard errors"

# %% [markdown]
# ## The toy problem used throughout
# In a real VAE the proposal is the encoder $q_\phi(z \mid x)$. Here we build proposals from the
# exact posterior so that we can dial their quality: `shift` moves the mean, `scale` multiplies
# the width. A proposal **wider** than the posterior has bounded importance weights; a
# **narrower** one has unbounded weights — that distinction will matter for the Markov chains.

# %%
fig = viz.new_figure(size=(5.0, 4.2))
ax = fig.axes[0]
zq = model.proposal(x, shift=0.5, scale=1.5).sample(300, g)[0]
ax.scatter(*z_post[:300].T, s=5, alpha=0.5, color="k", label="posterior draws")
ax.scatter(*zq.T, s=5, alpha=0.5, color=viz.COLORS["x"], label="proposal draws")
viz.gaussian_ellipse(ax, post_mean[0], post_cov[0], color="k", lw=1.5, label="posterior (2σ)")
for scale, shift, color, name in [
    (1.5, 0.5, "tab:blue", "wide, shifted q"),
    (0.5, 0.0, "tab:red", "narrow q"),
]:
    q = model.proposal(x, shift=shift, scale=scale)
    viz.gaussian_ellipse(ax, q.loc[0], q.scale[0] @ q.scale[0].T, color=color, ls="--", label=name)
prior = torch.eye(2, dtype=torch.float64)
viz.gaussian_ellipse(ax, torch.zeros(2), prior, color="0.6", ls=":", label="prior N(0, I)")
ax.set_xlim(-2.5, 2.5)
ax.set_ylim(-2.5, 2.5)
ax.set_aspect("equal")
ax.legend(fontsize=7, loc="lower left")
ax.set_title("toy model: posterior p(z | x) and proposals")
viz.save(fig, "00_toy_model")
display(fig)

# %% [markdown]
# ## Map of the notebooks
#
# | notebook | question | key object |
# |---|---|---|
# | `00_overview` | what is the problem, what is exact? | Fisher's identity |
# | `01_iwae_augmentation` | why is IWAE biased? | the extended target |
# | `02_cis_kernel` | how does one chain forget its IWAE start? | `cis_step` |
# | `03_coupled_kernels` | how do two chains meet, and when? | `coupled_cis_step` |
# | `04_estimator` | how does $H_{k:m}$ remove the bias? at what cost? | `coupled_estimate` |
# | `05_training` | does it train real VAEs? | the unbiased surrogate loss |
#
# Run any notebook fast with `UCVAE_FAST=1` (what CI does) or in full for publication figures.

# %% [markdown]
# ## Exercises
#
# **Exercise 1.** Estimate $\log p(x)$ by plain importance sampling with the *prior* as
# proposal, $\log \frac1n \sum_i p(x \mid z_i)$, $z_i \sim \mathcal N(0, I)$, for $n = 10^4$.
# How close is it to the exact value? (Hint: `model.log_joint(x, z) - model.prior(1).log_prob(z)`
# is $\log p(x \mid z)$.)

# %% jupyter={"source_hidden": true} tags=["solution"]
z_prior = model.prior(1).sample(10_000, torch.Generator().manual_seed(1))
log_lik = model.log_joint(x, z_prior) - model.prior(1).log_prob(z_prior)
is_estimate = torch.logsumexp(log_lik, -1) - torch.log(torch.tensor(10_000.0))
print("IS with the prior:", is_estimate.item(), " exact:", model.log_marginal(x).item())

# %% [markdown]
# **Exercise 2.** Fisher's identity holds for any parameter. Check it for $b$ alone in closed
# form: show that $\nabla_b \log p(x, z) = (x - Wz - b)/\sigma^2$, average it over posterior draws
# and compare with the $b$-part of `exact_grad` (entries 8–11).

# %% jupyter={"source_hidden": true} tags=["solution"]
resid = (x - z_post @ model.W.T - model.b) / model.sigma**2
print("Monte Carlo:", resid.mean(0).numpy().round(3))
print("exact      :", exact_grad[8:12].numpy().round(3))
