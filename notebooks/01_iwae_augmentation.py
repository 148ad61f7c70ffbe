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
# # 01 · IWAE: the bound, its O(1/S) gap, the extended target, and the bias of IWAE's gradient
#
# **Learning objectives.** After this notebook you can
# 1. compute IWAE's bound without overflow, and derive why its gap is about $V/(2S)$;
# 2. define $q^S$ and the extended target $\bar\pi$, derive $\bar\pi$'s marginal and conditional,
#    and say exactly which KL divergence IWAE's gap is;
# 3. explain IWAE's θ-gradient as the right integrand averaged under the wrong distribution,
#    write it with autograd, and measure its bias against the exact gradient.
#
# **Pre-lab reading.** With 00, read before the 2-hour lab (02–04), on your own. **Notation:**
# [docs/notation.md](../docs/notation.md) has every symbol of the lab in one table.
#
# **Prerequisites.** Notebook 00; Jensen's inequality; a second-order Taylor expansion.
#
# **Study time: about 21 minutes, 36 with the optional exercises** (pre-lab reading).
# Estimated: ≈ 1,450 words at 150 a minute (10 min), the bound exercise (5 min), two predictions
# written down and a widget (6 min); the optional gap (5 min) and gradient (10 min) exercises;
# the cells run in about 13–20 s (fast) or 33 s (full), on a 2-core machine loaded by other jobs.
#
# **Fast or full.** Stored outputs: `UCVAE_FAST=1` (fewer replicates). `UCVAE_FAST=0` for the
# full run; every asserted conclusion holds in both.

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

torch.set_num_threads(1)  # small tensors: one thread is fastest, and kind to shared CPUs
FAST = T.fast_mode()
R = 2_000 if FAST else 20_000  # replicates per gradient measurement
R_BOUND = 20_000 if FAST else 100_000  # replicates per bound measurement (cheap)
g = torch.Generator().manual_seed(1)

model = u.LinearGaussian.example(latent_dim=2, obs_dim=4, sigma=0.7, seed=0)
x = model.sample_data(3, torch.Generator().manual_seed(1))[:1]
log_px = model.log_marginal(x).item()
post_mean, post_cov = model.posterior(x)
SHIFT, SCALE = 0.5, 1.5  # the wide, shifted proposal of notebook 00
many = model.target(x.expand(R_BOUND, -1), shift=SHIFT, scale=SCALE)  # replicates of one problem

# %% [markdown]
# ## IWAE's bound
# Draw $z_1, \dots, z_S$ independently from $q(z\mid x)$: their joint density is
# $q^S(z_{1:S}) = \prod_{s} q(z_s\mid x)$. With weights $w_s = p(x, z_s)/q(z_s \mid x)$ and their
# average $\hat p = \frac1S\sum_s w_s$,
#
# $$\mathcal L_S = \mathbb E_{q^S} \log \hat p \;\le\; \log \mathbb E_{q^S}\hat p = \log p(x)$$
#
# by Jensen's inequality, since each $w_s$ has mean $\int p(x, z)\,dz = p(x)$. For $S = 1$ this is
# the ELBO. One term, $\log \hat p$, is what a program computes; for an image the log-weights are
# in the hundreds, so $\exp(\log w)$ over- or underflows.
#
# **Exercise 1 (2 points).** Write `iwae_bound(log_w)`: for log-weights [B, S] return
# $\log \frac1S \sum_s w_s$ for each row, [B], without ever computing $\exp$ of a large number.
# Hint: $\log\sum_s e^{a_s} = a_{\max} + \log\sum_s e^{a_s - a_{\max}}$.
#
# **Expected output.** A worked example: for the rows $(0, 0)$ and $(1000, 1000 + \log 3)$ the
# bound is $\log 1 = 0$ and $1000 + \log 2$, so
# `iwae_bound(torch.tensor([[0.0, 0.0], [1000.0, 1000.0 + math.log(3)]]))` gives
# `tensor([0.0000, 1000.6932])` (float32 for $1000.69315$); a naive `exp` gives `inf` in the
# second row. The checker below prints a line starting with ✓; a wrong answer raises an error
# that names the likely mistake.


# %% jupyter={"source_hidden": true} nbgrader={"grade": false, "grade_id": "ex1_iwae_bound", "locked": false, "schema_version": 3, "solution": true, "task": false} tags=["solution"]
def iwae_bound(log_w):
    """log (1/S) Σ_s exp(log_w[:, s]) for each row of log-weights log_w [B, S]: returns [B]."""
    # top = ...     # each row's largest log-weight, kept as [B, 1] (.max(-1, keepdim=True))
    # return ...    # top + log of the row mean of exp(log_w − top): [B]; every exp is ≤ 1
    ### BEGIN SOLUTION
    top = log_w.max(-1, keepdim=True).values
    return top[:, 0] + (log_w - top).exp().mean(-1).log()
    ### END SOLUTION


# %% nbgrader={"grade": true, "grade_id": "ex1_iwae_bound_test", "locked": true, "points": 2, "schema_version": 3, "solution": false, "task": false}
checks.score(checks.check_iwae_bound, iwae_bound, points=2)
### BEGIN HIDDEN TESTS
checks.score(checks.check_iwae_bound, iwae_bound, points=2, runs=[{"seed": 7}])
### END HIDDEN TESTS

# %% [markdown]
# ## The gap is O(1/S): a derivation
# Write $\hat p / p(x) = 1 + \varepsilon$. Then $\mathbb E\varepsilon = 0$ and, the $S$ weights
# being independent, $\mathrm{Var}\,\varepsilon = V/S$ with $V = \mathrm{Var}_q[w/p(x)]$. Expand
# $\log(1+\varepsilon) = \varepsilon - \varepsilon^2/2 + O(\varepsilon^3)$ and take expectations:
#
# $$\log p(x) - \mathcal L_S = -\mathbb E \log(1 + \varepsilon)
#   = \frac{V}{2S} + O(S^{-2}).$$
#
# (The delta method; it needs $V < \infty$.) Here $V$ is known exactly: $w/p(x) = p(z\mid x)/q(z)$
# is a ratio of Gaussians, and $\mathbb E_q[(p/q)^2] = \int p^2/q$ is a Gaussian integral
# (`T.relative_weight_variance`; it is infinite when the proposal is narrower than
# $1/\sqrt2$ of the posterior's width).
#
# **Predict.** Double $S$: what happens to the gap? And to $S \times$ gap? Write your answer in
# the cell below (1 point) before you run the next cell.

# %% [markdown] jupyter={"source_hidden": true} nbgrader={"grade": true, "grade_id": "predict_gap_doubling", "locked": false, "points": 1, "schema_version": 3, "solution": true, "task": false}
# <details><summary>Model answer and rubric: open it only after writing yours</summary>
#
# **Model answer.** The gap is about $V/(2S)$, so doubling $S$ about halves it, and
# $S \times$ gap stays about constant, near $V/2$ (closer to it the larger $S$: the $O(S^{-2})$
# terms fade).
#
# **Rubric (1 point).** ½: the gap halves (falls like $1/S$). ½: $S\times$gap is about constant
# at $V/2$ (not $V$). No credit for "the gap vanishes" or for a gap that grows.
#
# </details>

# %%
sizes = [1, 2, 5, 10, 20, 50, 100, 200]
curve = T.iwae_curve(model, x, sizes, R, SHIFT, SCALE, g, gradients=False, bound_replicates=R_BOUND)
V = curve.variance
print(f"V = Var_q[w/p(x)] = {V:.4f} (exact); log p(x) = {log_px:.4f}")
for S, gap, se in zip(sizes, curve.gap, curve.gap_se, strict=True):
    print(f"S = {S:3d}: log p(x) − L_S = {gap:.4f} ± {se:.4f};  V/(2S) = {V / (2 * S):.4f}")
fig = viz.new_figure(ncols=2, size=(4.2, 3.3))
viz.iwae_panels(fig.axes, curve, panels="ab")
viz.save(fig, "01_iwae_bound")
display(fig)

# The bound is strictly below log p(x), tightens with S, and S × gap → V/2 (not V: the 1/2 of
# the expansion is resolved).
gap, se = dict(zip(sizes, curve.gap, strict=True)), dict(zip(sizes, curve.gap_se, strict=True))
for S in (1, 2, 5, 10):
    assert gap[S] > 4 * se[S], f"the bound must be below log p(x) at S = {S}"
assert gap[2] > gap[10] + 4 * math.hypot(se[2], se[10])
assert abs(200 * gap[200] - V / 2) < 4 * 200 * se[200], "S·gap → V/2"
assert abs(200 * gap[200] - V) > 4 * 200 * se[200], "power: V/S is rejected"

# %% [markdown]
# The gap halves when $S$ doubles, and $S\times$gap approaches $V/2$ (the dashed line): at
# $S = 100$ and $200$ it is within 1.5 standard errors of it, while at $S = 10$–$50$ it is still
# 3–4 standard errors above, where the $O(S^{-2})$ terms of the expansion show.
#
# **Exercise 2 (2 points, derivation, optional).** For the proposal
# `model.target(x, shift=0.0, scale=2.0)` estimate $V = \mathrm{Var}_q[w/p(x)]$ from $10^5$
# proposal draws (`target.sample(n, g)` gives [1, n, 2]; `target.log_weight(z)`; `log_px` is
# exact), and predict the gap $\log p(x) - \mathcal L_{100}$. Assign it to `answer_ex2`.
#
# **Expected output.** One number (a Python float or a 0-d tensor): for instance $V = 1$ would
# predict $1/200 = 0.005$. The checker prints ✓ with the exact $V$, or says how far off you are.

# %% jupyter={"source_hidden": true} nbgrader={"grade": false, "grade_id": "ex2_gap", "locked": false, "schema_version": 3, "solution": true, "task": false} tags=["solution"]
# wide = ...        # model.target(x, shift=0.0, scale=2.0)
# ratio = ...       # w/p(x) of 100_000 draws: exp(log-weight − log_px), [100_000]
# answer_ex2 = ...  # V/(2S): V = the variance of ratio, S = 100
### BEGIN SOLUTION
wide = model.target(x, shift=0.0, scale=2.0)
ratio = (wide.log_weight(wide.sample(100_000, torch.Generator().manual_seed(5)))[0] - log_px).exp()
answer_ex2 = ratio.var().item() / (2 * 100)
### END SOLUTION

# %% nbgrader={"grade": true, "grade_id": "ex2_gap_test", "locked": true, "points": 2, "schema_version": 3, "solution": false, "task": false}
checks.score(
    checks.check_gap_prediction,
    answer_ex2,
    model,
    x,
    points=2,
    shift=0.0,
    scale=2.0,
    num_samples=100,
)

# %% [markdown]
# ## The extended target
# IWAE samples the whole set $z_{1:S}$ from $q^S$. Now add an index $s \in \{1..S\}$ and define
#
# $$\bar\pi(s, z_{1:S}) = \frac1S\, p(z_s\mid x) \prod_{j\neq s} q(z_j\mid x):$$
#
# pick a slot uniformly, put an exact posterior draw there and proposal draws elsewhere.
#
# **Its marginal.** Sum over $s$ and use $p(z_s \mid x)/q(z_s) = w_s / p(x)$:
#
# $$\bar\pi(z_{1:S}) = \prod_j q(z_j) \cdot \frac1S \sum_s \frac{p(z_s\mid x)}{q(z_s)}
#   = q^S(z_{1:S})\,\frac{\hat p}{p(x)}.$$
#
# **Its conditional.** Divide: $\bar\pi(s \mid z_{1:S}) = w_s / \sum_j w_j = \bar w_s$.
#
# **Consequences.** (i) For any $f$ with $\mathbb E_p|f| < \infty$, with
# $h(z_{1:S}) = \sum_j \bar w_j f(z_j)$ (the self-normalised estimate),
# $\mathbb E_{\bar\pi}[h] = \mathbb E_{\bar\pi}\big[\mathbb E[f(z_s)\mid z_{1:S}]\big]
# = \mathbb E_{\bar\pi}[f(z_s)] = \mathbb E_{p(z\mid x)}[f]$: under $\bar\pi$, $h$ is exactly
# unbiased. (ii) IWAE computes the same $h$ under $q^S$ instead. How far apart are the two laws
# of the set? Using the marginal,
#
# $$\mathrm{KL}\big(q^S \,\|\, \bar\pi(z_{1:S})\big)
#   = \mathbb E_{q^S}\log\frac{q^S}{q^S\,\hat p/p(x)}
#   = \log p(x) - \mathcal L_S:$$
#
# IWAE's gap *is* the KL divergence from $q^S$ to the extended target's marginal on the set. It
# falls like $V/(2S)$, but it is not the bias of $h$: that is $\mathbb E_{q^S}h - \mathbb E_p f$,
# which the next sections measure.

# %%
S = 5
one = model.target(x, shift=SHIFT, scale=SCALE)
s_one, z_one = u.sample_extended_target(one, S, lambda gen: T.posterior_draws(model, x, 1, gen), g)
q_one = one.proposal
fig = viz.new_figure(ncols=3, size=(3.5, 3.4))
diagrams.extended_target(
    fig.axes,
    u.core.kernels.draw(one, S, g),
    u.CISState(z_one, one.log_weight(z_one)),
    int(s_one[0]),
    (post_mean[0], post_cov[0]),
    (q_one.loc[0], q_one.scale[0] @ q_one.scale[0].T),
)
viz.save(fig, "01_extended_target")
display(fig)

# %% [markdown]
# **Numerical checks against exact answers** ($R$ draws of $\bar\pi$, $S = 5$):
# 1. *marginal*: slot 1 holds the posterior draw with probability $1/S$, so its mean is exactly
#    $\frac1S\mu_{\text{post}} + (1-\frac1S)\mu_q$; and reweighting $q^S$ draws by
#    $\hat p/p(x)$ must give the same mean (that is the marginal formula);
# 2. *conditional*: $\mathbb E[\mathbf 1\{s = j\} - \bar w_j] = 0$ for every slot $j$;
# 3. *consequence*: $h$ is unbiased under $\bar\pi$ and biased under $q^S$ (IWAE).

# %%
draws = T.extended_target_draws(model, x, many, S, g)
exact_slot1 = post_mean[0] / S + (1 - 1 / S) * many.proposal.loc[0]
z_q = many.sample(S, g)
reweighted = (u.iwae_bound(many.log_weight(z_q)) - log_px).exp()[:, None] * z_q[:, 0]
onehot = torch.nn.functional.one_hot(draws["s"], S).double()
h_pi = (draws["wbar"][..., None] * draws["z"]).sum(1)
h_q = u.iwae_estimate(many, S, generator=g).mean()
checks_table = {
    "slot 1 under π̄ vs (1/S)μ_post + (1−1/S)μ_q": T.z_score(draws["slot0"], exact_slot1),
    "q^S reweighted by p̂/p(x), same exact mean": T.z_score(reweighted, exact_slot1),
    "1{s = j} − w̄_j under π̄, j = 1..S": T.z_score(onehot - draws["wbar"], torch.zeros(S)),
    "h under π̄ vs E[z | x]": T.z_score(h_pi, post_mean[0]),
    "h under q^S (IWAE) vs E[z | x]": T.z_score(h_q, post_mean[0]),
}
for name, z in checks_table.items():
    print(f"{name:45s} largest |z| = {z.abs().max():5.1f}")
*unbiased, iwae = checks_table.values()
assert all(z.abs().max() < T.z_threshold(z.numel()) for z in unbiased)
assert iwae.abs().max() > T.z_threshold(2), "IWAE's self-normalised mean must be biased"

# %% [markdown]
# ## IWAE's gradient: the right integrand, the wrong distribution
# The proposal does not depend on $\theta$, so
# $\nabla_\theta \log \hat p = \sum_s \frac{w_s}{\sum_j w_j}\nabla_\theta \log p_\theta(x, z_s)$
# and
#
# $$\nabla_\theta \mathcal L_S = \mathbb E_{q^S}\Big[\sum_s \bar w_s\, \nabla_\theta \log
#   p_\theta(x, z_s)\Big] = \mathbb E_{q^S}[h]
#   \quad\text{with } f = \nabla_\theta \log p_\theta(x, \cdot).$$
#
# By Fisher's identity and consequence (i), $\mathbb E_{\bar\pi}[h]$ is the exact gradient;
# IWAE takes $\mathbb E_{q^S}[h]$. Their difference is IWAE's gradient bias.
#
# **Exercise 3 (3 points, optional).** Write `iwae_gradient(model, x, z, log_q)`: for proposal draws
# z [1, S, 2] with log-densities `log_q` [1, S] (constants), return $\nabla_\theta \log \hat p$ as
# one flat tensor [13] ($W$, then $b$, then $\log\sigma$). Build fresh leaf copies of the parameters
# with `requires_grad_(True)`, a model `u.LinearGaussian(W, b, log_sigma)` from them, log-weights
# `model.log_joint(x, z) − log_q`, the bound, and `torch.autograd.grad`.
#
# **Expected output.** A check to run first: with $S = 1$ the only weight is normalised to 1, so
# `iwae_gradient(model, x, z[:, :1], log_q[:, :1])` must equal
# `T.joint_gradients(model, x, z[0, :1])[0]`, Fisher's integrand at that one draw. The checker
# prints a line starting with ✓.


# %% jupyter={"source_hidden": true} nbgrader={"grade": false, "grade_id": "ex3_iwae_gradient", "locked": false, "schema_version": 3, "solution": true, "task": false} tags=["solution"]
def iwae_gradient(model, x, z, log_q):
    """∇_θ log (1/S) Σ_s w_s, θ = (W, b, log σ), flattened.

    x [1, p]; z [1, S, 2] proposal draws; log_q [1, S] their log-densities (constants).
    Returns [13]: ∇_W (8 numbers, row by row), then ∇_b (4), then ∇_{log σ} (1).
    """
    params = [p.detach().clone().requires_grad_(True) for p in (model.W, model.b, model.log_sigma)]
    # log_w = ...   # log-weights under a model built from params: [1, S]
    # bound = ...   # log (1/S) Σ_s exp(log_w): [1] (torch.logsumexp, then − log S)
    # return ...    # torch.autograd.grad(bound.sum(), params), each flattened, concatenated: [13]
    ### BEGIN SOLUTION
    log_w = u.LinearGaussian(*params).log_joint(x, z) - log_q
    bound = torch.logsumexp(log_w, -1) - math.log(z.shape[1])
    return torch.cat([gr.flatten() for gr in torch.autograd.grad(bound.sum(), params)])
    ### END SOLUTION


# %% nbgrader={"grade": true, "grade_id": "ex3_iwae_gradient_test", "locked": true, "points": 3, "schema_version": 3, "solution": false, "task": false}
checks.score(checks.check_iwae_gradient, iwae_gradient, points=3)
### BEGIN HIDDEN TESTS
checks.score(checks.check_iwae_gradient, iwae_gradient, points=3, runs=[{"seed": 3}])
### END HIDDEN TESTS

# %% [markdown]
# The library computes the same gradient for many replicates at once (a weighted surrogate
# $\sum_s \bar w_s \log p_\theta(x, z_s)$ with the weights held fixed). We measure its bias at
# each $S$ against autograd of the exact $\log p_\theta(x)$.
#
# **Predict.** The bound's gap falls like $1/S$. Does the gradient's bias fall like $1/S$ too?
# Does it reach zero at any finite $S$? Answer in the cell below (2 points), then run the next
# cell.

# %% [markdown] jupyter={"source_hidden": true} nbgrader={"grade": true, "grade_id": "predict_gradient_bias", "locked": false, "points": 2, "schema_version": 3, "solution": true, "task": false}
# <details><summary>Model answer and rubric: open it only after writing yours</summary>
#
# **Model answer.** Yes, about like $1/S$: the bias of a self-normalised estimate has the same
# delta-method expansion as the gap, with a leading term of order $1/S$ (the plot follows the
# $1/S$ guide). No, it is not zero at any finite $S$ unless $q$ is the exact posterior (then every
# $\bar w_s = 1/S$ and $h$ is an average of exact posterior draws); averaging more IWAE gradients
# at a fixed $S$ never removes it.
#
# **Rubric (2 points).** 1: falls like $1/S$, with a reason (the delta method, or "like the gap").
# 1: never exactly zero at finite $S$ for $q \ne p(z \mid x)$; mentioning that averaging more
# estimates does not help is enough for this point too. "It reaches zero at large $S$" earns no
# credit for the second point.
#
# </details>

# %%
grads = T.iwae_curve(model, x, sizes[1:], R, SHIFT, SCALE, g, bound_replicates=1000)
for S, b, floor, zmax in zip(
    grads.num_samples, grads.grad_bias, grads.grad_floor, grads.grad_max_z, strict=True
):
    print(
        f"S = {S:3d}: ‖E[IWAE grad] − exact‖ = {b:.3f} (noise floor {floor:.3f}), |z| ≤ {zmax:.1f}"
    )
fig = viz.new_figure(size=(4.4, 3.4))
viz.iwae_panels(fig.axes, grads, panels="c")
viz.save(fig, "01_iwae_gradient_bias")
display(fig)

bias = dict(zip(grads.num_samples, grads.grad_bias, strict=True))
max_z = dict(zip(grads.num_samples, grads.grad_max_z, strict=True))
assert max_z[2] > T.z_threshold(13) and max_z[10] > T.z_threshold(13), "biased at S = 2, 10"
assert bias[100] < bias[2] / 10, "the bias shrinks with S"

# %% [markdown]
# The bias falls along the $1/S$ guide and stays well above the noise floor wherever it is
# resolved: averaging more IWAE gradients never removes it, only larger $S$ shrinks it.
#
# **Widget.** Move $S$ and the proposal (shift, width): the bound, $S\times$gap against $V/2$
# and the gradient bias are re-measured against the exact values. Try width 1.0 with shift 0
# (the exact posterior: no bias at all), and widths that approach $1/\sqrt{2} \approx 0.71$ from
# above, where $V$ blows up: a Gaussian proposal narrower than that gives the weights an
# infinite variance.

# %%
wd.iwae_widget(model, x, num_samples=10, shift=SHIFT, scale=SCALE)

# %% [markdown]
# ## Summary
# * $\mathcal L_S = \mathbb E_{q^S}\log\hat p \le \log p(x)$; compute $\log\hat p$ with a
#   log-sum-exp. Its gap is $\mathrm{KL}(q^S\|\bar\pi) = \log p(x) - \mathcal L_S \approx V/(2S)$,
#   $V = \mathrm{Var}_q[w/p(x)]$.
# * The extended target $\bar\pi(s, z_{1:S})$ has marginal $q^S\,\hat p/p(x)$ and conditional
#   $\bar\pi(s\mid z_{1:S}) = \bar w_s$, so $h = \sum_j \bar w_j f(z_j)$ is exactly unbiased under
#   $\bar\pi$.
# * IWAE's gradient is $\mathbb E_{q^S}[h]$ with $f = \nabla_\theta\log p_\theta(x,\cdot)$:
#   biased at every finite $S$, by about $1/S$. Notebook 02 builds a Markov chain that samples
#   $\bar\pi$.
#
# ## References
# * Y. Burda, R. Grosse, R. Salakhutdinov (2016). Importance weighted autoencoders. ICLR.
# * C. Andrieu, A. Lee, M. Vihola (2018). Uniform ergodicity of the iterated conditional SMC and
#   geometric ergodicity of particle Gibbs samplers. *Bernoulli* 24(2) (the extended target).
# * F. Ruiz, M. Titsias, T. Cemgil, A. Doucet (2021). Unbiased gradient estimation for variational
#   auto-encoders using coupled Markov chains. UAI, PMLR 161:707–717.
