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
# **Learning objectives.** After this notebook you can
# 1. state Fisher's identity and say why the posterior expectation in it is the hard part;
# 2. name what is exact in the linear-Gaussian toy model that every later notebook checks against;
# 3. read a check in this package: a z-score of replicate estimates against an exact answer;
# 4. find your way through the course: pre-lab reading (00–01), the lab (02–04), the homework
#    (05–07).
#
# **Pre-lab reading.** This notebook and 01 are read *before* the 2-hour lab (02–04), on your own;
# the lab starts from what they set up. **Notation:** every symbol of the lab is in one table,
# [docs/notation.md](../docs/notation.md).
#
# **Prerequisites.** Python and PyTorch basics; Gaussian densities; what a VAE's encoder and
# decoder are; expectations and Monte Carlo averages.
#
# **Study time: about 16 minutes** (pre-lab reading). Estimated, not measured on learners:
# ≈ 1,380 words at 150 words a minute (9 min), one short code exercise (5 min), one prediction
# written down (2 min); the cells run in about 7–11 s, fast or full, timed on a 2-core machine
# loaded by other jobs. Every notebook's time is estimated the same way: words ÷ 150 a
# minute, plus 2–10 minutes per exercise by its size (2 for a number, 5 for a short function, 10
# for a batched one), 2 per prediction written down, 2 per widget, plus the run time.
#
# **Fast or full.** `UCVAE_FAST=1` (set in the shell before starting Jupyter, as CI does) uses
# fewer replicates; the stored outputs are that fast run. Unset it, or set `UCVAE_FAST=0`, for
# the full-size run. Every conclusion the text draws is asserted in code and holds in both modes.

# %% [markdown]
# ## The problem
# A latent-variable model $p_\theta(x, z) = p(z)\,p_\theta(x \mid z)$ is trained by maximum
# likelihood, which needs $\nabla_\theta \log p_\theta(x)$ with
# $p_\theta(x) = \int p_\theta(x, z)\,dz$: an integral nobody can compute for a neural decoder.
# **Fisher's identity** turns the gradient into a posterior expectation:
#
# $$\nabla_\theta \log p_\theta(x)
#   = \frac{\int \nabla_\theta p_\theta(x, z)\,dz}{p_\theta(x)}
#   = \int \frac{p_\theta(x, z)}{p_\theta(x)}\,\nabla_\theta \log p_\theta(x, z)\,dz
#   = \mathbb{E}_{p_\theta(z\mid x)}\big[\nabla_\theta \log p_\theta(x, z)\big].$$
#
# The posterior $p_\theta(z \mid x)$ is intractable too. A VAE follows the ELBO and an IWAE its
# $S$-sample bound: both give **biased** estimates of this gradient. This package teaches how two
# coupled Markov chains give an estimate that is **exactly unbiased** (Ruiz, Titsias, Cemgil &
# Doucet, 2021), and what that costs.

# %% [markdown]
# ## A toy model where everything is exact
# To *see* a bias we need the exact answer. The linear-Gaussian model has it in closed form:
#
# $$z \sim \mathcal N(0, I_d), \qquad x \mid z \sim \mathcal N(Wz + b, \sigma^2 I_p),$$
# $$p(x) = \mathcal N(x;\, b,\, WW^\top + \sigma^2 I), \qquad
#   p(z \mid x) = \mathcal N(\mu, \Sigma),\quad \Sigma = (I + W^\top W/\sigma^2)^{-1},\quad
#   \mu = \Sigma W^\top (x - b)/\sigma^2.$$
#
# We use $d = 2$, $p = 4$ and one data point $x$; $\theta = (W, b, \log\sigma)$ has 13 numbers.

# %%
# %matplotlib inline
import torch
from IPython.display import display

import ucvae_lite as u
from ucvae_lite.lab import checks
from ucvae_lite.lab import teaching as T
from ucvae_lite.lab.plots import viz

torch.set_num_threads(1)  # small tensors: one thread is fastest, and kind to shared CPUs
FAST = T.fast_mode()  # UCVAE_FAST=1: fewer replicates, the same asserted conclusions
R = 5_000 if FAST else 50_000
g = torch.Generator().manual_seed(0)

model = u.LinearGaussian.example(latent_dim=2, obs_dim=4, sigma=0.7, seed=0)
x = model.sample_data(3, torch.Generator().manual_seed(1))[:1]  # one data point
post_mean, post_cov = model.posterior(x)
print("log p(x), exact    :", round(model.log_marginal(x).item(), 4))
print("E[z | x], exact    :", post_mean[0].numpy().round(4))
print("posterior std devs :", post_cov[0].diagonal().sqrt().numpy().round(4))

# %% [markdown]
# ## Fisher's identity, checked
# Average $\nabla_\theta \log p_\theta(x, z)$ over $R$ exact posterior draws and compare with
# autograd of the closed-form $\log p_\theta(x)$.
#
# **How every check in these notebooks reads.** For each coordinate, the z-score is
# (mean of the replicates − exact) / (standard error of that mean). A correct estimator gives
# |z| < 4 except with probability about $6\cdot10^{-5}$; with many coordinates the cut-off rises a
# little (`stats.z_threshold`). Each unbiasedness check is paired with a *power* check: a biased
# method must fail the same test.

# %%
exact_grad = T.exact_gradient(model, x)
z_post = T.posterior_draws(model, x, R, g)
fisher = T.joint_gradients(model, x, z_post)
z_fisher = T.z_score(fisher, exact_grad)
print("exact ∇θ log p(x):", exact_grad.numpy().round(3))
print(f"largest |z| of the Fisher average over 13 coordinates: {z_fisher.abs().max():.2f}")
assert z_fisher.abs().max() < T.z_threshold(13), "Fisher's identity must hold"

# power: draws from the prior instead of the posterior give a different (wrong) average
z_wrong = T.z_score(T.joint_gradients(model, x, torch.randn(R, 2, generator=g, dtype=x.dtype)),
                    exact_grad)  # fmt: skip
print(f"the same average over prior draws: largest |z| = {z_wrong.abs().max():.1f} (rejected)")
assert z_wrong.abs().max() > T.z_threshold(13)

# %% [markdown]
# **Exercise 1 (2 points).** Fisher's identity by hand, for $b$. Show that
# $\nabla_b \log p(x, z) = (x - Wz - b)/\sigma^2$ (only the likelihood term depends on $b$), and
# write `grad_b(model, x, z)` returning it for each row of `z` [n, d] as an [n, p] tensor
# (`model.W`, `model.b`, `model.sigma`). Its mean over posterior draws is the $b$-part of
# `exact_grad` (entries 8–11).
#
# **Expected output.** A worked example to try first: at $z = 0$ the answer is $(x - b)/\sigma^2$,
# so `grad_b(model, x, torch.zeros(1, 2, dtype=x.dtype))` gives
# `[[-0.2553, -2.0858, -3.6937, 0.1965]]` (rounded). Then the checker below prints a line
# starting with ✓; a wrong answer raises an error whose message names the likely mistake.


# %% jupyter={"source_hidden": true} nbgrader={"grade": false, "grade_id": "ex1_grad_b", "locked": false, "schema_version": 3, "solution": true, "task": false} tags=["solution"]
def grad_b(model, x, z):
    """∇_b log p(x, z) = (x − W z − b) / σ² for each row of z.

    x [1, p] (one data point), z [n, d]; model.W [p, d], model.b [p], model.sigma (0-d).
    Returns [n, p]: row i is the gradient at latent z[i].
    """
    # decoder_mean = ...  # W z_i + b for every row at once: z @ model.W.T + model.b, [n, p]
    # return ...          # (x − decoder_mean) / σ²: x [1, p] broadcasts over the n rows
    ### BEGIN SOLUTION
    decoder_mean = z @ model.W.T + model.b
    return (x - decoder_mean) / model.sigma**2
    ### END SOLUTION


# %% nbgrader={"grade": true, "grade_id": "ex1_grad_b_test", "locked": true, "points": 2, "schema_version": 3, "solution": false, "task": false}
checks.score(checks.check_grad_b, grad_b, points=2)
### BEGIN HIDDEN TESTS
checks.score(checks.check_grad_b, grad_b, points=2, runs=[{"seed": 11}])
### END HIDDEN TESTS

# %% [markdown]
# ## Proposals with a dial
# In a VAE the proposal is the encoder $q_\phi(z \mid x)$. Here we build proposals from the exact
# posterior so we can dial their quality: `shift` moves the mean by `shift` in every coordinate,
# `scale` multiplies the width:
# $q = \mathcal N(\mu + \text{shift}\cdot\mathbf 1,\ \text{scale}^2\,\Sigma)$.
# The importance weight is $w(z) = p(x, z)/q(z)$, so $w(z)/p(x) = p(z \mid x)/q(z)$.
#
# **Predict.** Which of the two proposals drawn below (1.5× wide and shifted; 0.5× narrow) has
# importance weights that stay bounded however far out $z$ goes? Decide before you look, and
# write your answer with a one-line reason in the answer cell below (1 point).

# %% [markdown] jupyter={"source_hidden": true} nbgrader={"grade": true, "grade_id": "predict_bounded_weights", "locked": false, "points": 1, "schema_version": 3, "solution": true, "task": false}
# <details><summary>Model answer and rubric: open it only after writing yours</summary>
#
# **Model answer.** The 1.5× wide one, shifted or not. Its Gaussian tails are heavier than the
# posterior's in every direction, so $w(z)/p(x) = p(z \mid x)/q(z) \to 0$ far out and the ratio
# has a finite maximum. The 0.5× narrow one has lighter tails than the posterior, so the ratio
# grows without bound as $z$ moves out.
#
# **Rubric (1 point).** 1: the wide proposal, with the reason (tails of $q$ heavier than the
# posterior's, so $p/q$ falls off; the shift does not matter). ½: the wide proposal without a
# reason, or a reason that rests on the shift. 0: the narrow proposal.
#
# </details>

# %%
q_wide = model.proposal(x, shift=0.5, scale=1.5)
q_narrow = model.proposal(x, scale=0.5)
fig = viz.new_figure(size=(5.0, 4.2))
viz.toy_model(
    fig.axes[0],
    (post_mean[0], post_cov[0]),
    z_post[:300],
    {
        "wide (×1.5), shifted q": (q_wide.loc[0], q_wide.scale[0] @ q_wide.scale[0].T),
        "narrow (×0.5) q": (q_narrow.loc[0], q_narrow.scale[0] @ q_narrow.scale[0].T),
    },
    q_wide.sample(300, g)[0],
)
fig.axes[0].set_title("posterior p(z | x) and two proposals (2σ ellipses)", fontsize=9)
viz.save(fig, "00_toy_model")
display(fig)

# %% [markdown]
# A Gaussian $q$ **wider** than the posterior has heavier tails, so $p(z\mid x)/q(z)$ falls off
# in every direction and the weights are bounded, shifted or not. A **narrower** $q$ has lighter
# tails than the posterior, so far out $p(z \mid x)/q(z)$ grows without bound: a rare draw there
# takes all the weight.
# Bounded is not the same as good: notebook 02 shows that a wide $q$ in $d$ dimensions has weights
# as large as about $\text{scale}^d\,p(x)$, and notebook 03 what both kinds of bad weights do to
# coupled chains.

# %% [markdown]
# ## The map
#
# | notebook | part | question | you write | time |
# |---|---|---|---|---|
# | `00_overview` | reading | what is the problem, what is exact? | ∇_b log p(x, z) | 16 min |
# | `01_iwae_augmentation` | reading | why is IWAE biased, by how much? | IWAE's bound | 21 min |
# | `02_cis_kernel` | lab | how does one chain forget IWAE's bias? | one CIS step | 28 min |
# | `03_coupled_kernels` | lab | how do two chains meet, how fast? | two functions | 44 + 5 min |
# | `04_estimator` | lab | why is $H_{k:m}$ unbiased; when does it pay? | $H_{k:m}$ | 28 + 2 min |
# | `05_training` | homework | does it train real VAEs? | three losses; a grid | |
# | `06_when_practical` | homework | when are the weights healthy? | a tail; ESS; a rule | |
# | `07_landscape` | homework | MSC, SUMO, IWAE at equal budget | SUMO; E[K]; C*; thinning | |
#
# Times are core study times, without the optional exercises; "+ 5" and "+ 2" are the sections
# of 03 and 04 read after class.
#
# **Pre-lab reading** is 00–01, done before class. **The lab** is 02–04, two hours in class with
# setup and discussion, without the exercises marked *optional* (homework, or for the quick);
# 05–07 are homework. Each notebook opens with its
# objectives and ends with a summary and references. **Exercises** are cells to fill in: the
# model answer is collapsed (click to expand it only after trying), and the cell after it runs a
# checker from `ucvae_lite.lab.checks` that prints ✓ or says what is wrong. **Written answers**
# (each "Predict" and the short derivations) go into an answer cell below the question; in the
# stored notebook that cell is collapsed and holds a model answer and the rubric the teacher
# grades by (expand it only after you have written yours); in the handed-out assignment it
# says "YOUR ANSWER HERE". **Widgets** need a running kernel: run the notebook, then move the
# sliders.

# %% [markdown]
# ## Summary
# * Maximum likelihood needs $\mathbb E_{p(z\mid x)}[\nabla_\theta \log p_\theta(x, z)]$
#   (Fisher's identity); the posterior is what we cannot sample.
# * On the linear-Gaussian model $\log p(x)$, $p(z\mid x)$ and $\nabla_\theta \log p(x)$ are exact,
#   so every estimator in this package is checked against them, with z-scores and a power check.
# * Proposals are dialled by shift and width; wide ones have bounded weights, narrow ones do not,
#   and neither fact alone says whether they are good.
#
# ## References
# * Y. Burda, R. Grosse, R. Salakhutdinov (2016). Importance weighted autoencoders. ICLR.
# * F. Ruiz, M. Titsias, T. Cemgil, A. Doucet (2021). Unbiased gradient estimation for variational
#   auto-encoders using coupled Markov chains. UAI, PMLR 161:707–717.
# * R. A. Fisher (1925). Theory of statistical estimation. *Proc. Cambridge Philos. Soc.* 22
#   (the identity behind the score of a latent-variable model).
