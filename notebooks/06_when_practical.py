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
# # 06 · When is the unbiased gradient practical?
#
# $H_{k:m}$ is unbiased (notebook 04) and trains a VAE (notebook 05). Useful needs more: the
# chains must meet quickly, and the extra noise must cost less than IWAE's bias. We measure
# both on the digits VAEs of notebook 05.
#
# **Learning objectives.** After this notebook you can
# 1. derive the 1/t law of meeting times for degenerate weights and read a measured tail
#    against it;
# 2. tell from within-set ESS and PSIS $\hat k$, before training, whether the weights are
#    degenerate, and write that rule;
# 3. judge "practical" with IWAE's bias included: the error of an averaged gradient against
#    compute, the crossover budget $C^*$, and why SGD cares: derive how many steps Adam's
#    iterate averages, and check it;
# 4. say what the levers ($S$, $k$, $m$, the proposal's width, a move of the reference) change.
#
# **Prerequisites.** Notebooks 03 (meeting times), 04 ($H_{k:m}$, variance × cost) and 05 (the
# trained models). Notebook 07 derives the error-against-budget formula used in §3.
#
# **Study time: about 60 minutes.** Estimated from ≈ 2,200 words at 150 a minute (15 min),
# three predictions written down (6 min), the widget (10 min), three exercises (25 min: one
# derivation, two short functions), one written answer (5 min) and the run time (measured on
# 2 CPU cores: about 20 s in fast mode, 80 s in full mode).
#
# **Fast or full.** Stored outputs: fast mode (`UCVAE_FAST=1`, fewer images and replicates).
# `UCVAE_FAST=0` runs the full sizes; every asserted conclusion holds in both, and each printed
# number says which mode made it.

# %%
# %matplotlib inline
import csv
import math
import time
from dataclasses import replace

import torch
from IPython.display import display

from ucvae_lite import RandomWalkMH, coupled_estimate
from ucvae_lite.core.diagnostics import degenerate_survival, tau_summary
from ucvae_lite.core.iwae import effective_sample_size
from ucvae_lite.lab import checks, pretrained
from ucvae_lite.lab.plots import pictures, viz
from ucvae_lite.lab.widgets.practical import practical_widget
from ucvae_lite.studies import practical
from ucvae_lite.training.data import load_dataset
from ucvae_lite.training.runtime import REPO_ROOT, fast_mode

START = time.perf_counter()
FAST = fast_mode()
MODE = "fast" if FAST else "full"
N_IMG, R = (10, 50) if FAST else (40, 100)  # test images; chains (or gradients) per image
S = 10
torch.set_num_threads(1)  # tiny tensors: one thread is fastest
g = torch.Generator().manual_seed(0)
data = load_dataset("digits")
model, ckpt = pretrained.load("iwae")  # IWAE-10, 5 latents, 2000 epochs (notebook 05)
model2, _ = pretrained.load("iwae_2d")  # the same with 2 latents: exact posterior on a grid
x = data.test[:N_IMG]
print(f"{MODE} mode: {N_IMG} test images × {R} replicates; model test LL {ckpt['test']['ll']:.2f}")

# %% [markdown]
# ## 1 · Meeting times against the 1/t law
#
# **The law.** Suppose one particle of every set takes nearly all the weight (within-set
# ESS ≈ 1). Selection is then an argmax: each chain keeps the heaviest particle it has seen.
# There are $S+1$ starting candidates ($X_0$'s $S$ draws and $Y_0$'s reference), and each
# coupled step adds $S-1$ fresh draws shared by both chains. The chains meet at the first step
# whose fresh draws beat every starting candidate. By step $t$ there are $(S-1)(t-1)$ fresh
# draws, and the heaviest of i.i.d. draws is equally likely to be any of them:
#
# $$P(\tau > t) = \frac{S+1}{S+1+(S-1)(t-1)} \approx \frac{S+1}{(S-1)\,t},$$
#
# a $1/t$ tail: $E[\tau] = \sum_t P(\tau > t) = \infty$ for every $S$ (Exercise 1).
#
# Proposals too narrow **and** too wide get there. One $c$ times wider than a Gaussian
# posterior in $d$ dimensions bounds the weights, but only by about $c^d$: bounded weights give
# a geometric tail whose rate can still be terrible.
#
# **Predict, then check (Exercise P1, 1 point, written).** With the trained encoder $q_\phi$
# and with proposals 2× and 3× wider (same mean), where will each survival curve sit against
# the dashed law, and why? Write your answer in the cell below before you run the next one.

# %% [markdown] nbgrader={"grade": true, "grade_id": "p1_survival_answer", "locked": false, "points": 1, "schema_version": 3, "solution": true, "task": false} tags=["solution"] jupyter={"source_hidden": true}
# **Your prediction, and why:**
#
# ### BEGIN SOLUTION
# **Model answer.** The trained encoder's curve sits far below the 1/t law; the 2× wider
# proposal's sits higher, and the 3× wider one's highest, close to the law over the first
# steps. The law holds when one particle takes nearly all of each set's weight, so that
# selection is an argmax. The trained encoder keeps the weights within a set fairly even, so
# the chains often pick the same fresh particle and meet within a few steps. A wider proposal
# puts most draws where the posterior is small, and the rare draw near the posterior mode
# takes the set: the weights grow degenerate and the tail approaches the law. The widened
# proposals still bound the weights (by about $c^d$), so their tails are geometric in the end,
# at a slow rate: the curves bend away from the law only further out.
#
# **Rubric (1 point).** ½: the order (trained encoder lowest and well below the law; the
# wider, the higher; 3× nearest the law). ½: the reason (a wider proposal makes the weights
# within a set uneven, selection becomes an argmax, which is the law's assumption). A
# prediction that 3× crosses the law, with this reason, keeps the ½. No credit for an order
# without a reason.
# ### END SOLUTION

# %%
xr = x.repeat_interleave(R, 0)
WIDTHS = (1.0, 2.0, 3.0)
taus = {}
with torch.no_grad():
    for f in WIDTHS:
        target = practical.widened_target(model, xr, f)
        taus[f"q × {f:g}"] = coupled_estimate(target, S, max_steps=100_000, generator=g).tau


def p_above(tau, t):
    """Empirical P(τ > t) and its binomial standard error (at least one exceedance's)."""
    p = (tau > t).double().mean().item()
    return p, math.sqrt(max(p, 1 / len(tau)) * (1 - p) / len(tau))


T8 = 8
law8 = degenerate_survival(torch.tensor([float(T8)]), S).item()
for name, tau in taus.items():
    s, (p, se) = tau_summary(tau), p_above(tau, T8)
    print(f"{name}: mean τ {s['mean']:.2f}, max {s['max']:.0f}, P(τ > 8) = {p:.3f} ± {se:.3f}"
          f"  (1/t law: {law8:.3f})")  # fmt: skip
fig = viz.new_figure(size=(5.5, 3.8))
viz.survival_vs_degenerate(fig.axes[0], taus, S, f"meeting times, S = {S}, {len(xr)} chain pairs")
viz.save(fig, "06_tau_survival")
display(fig)

p1, se1 = p_above(taus["q × 1"], T8)
p3, se3 = p_above(taus["q × 3"], T8)
assert p1 + 3 * se1 < law8, "the trained encoder's tail should sit well below the 1/t law"
assert p3 - p1 > 3 * math.hypot(se1, se3), "a 3× wider proposal should have a heavier tail"

# %% [markdown]
# The trained encoder's tail sits far below the law; widening the proposal lifts it towards
# the law (on MNIST with 50 latents the trained encoder itself sits near it: README).
#
# ## 2 · Which regime are we in? Diagnostics before training
#
# Two numbers per image, from draws of $q_\phi$ alone: the **within-set ESS**
# $(\sum_s w_s)^2/\sum_s w_s^2$ of sets of $S$ (1 to $S$; near 1: one particle takes the set)
# and **PSIS $\hat k$** (Vehtari et al.), the fitted tail shape of the largest weights (above
# 0.7: too heavy-tailed for importance sampling). `practical.degenerate_regime` flags a median
# ESS below `practical.DEGENERATE_ESS` particles or a median $\hat k$ above 0.7; the training
# loop warns with it (Exercises 2 and 3 write it).

# %%
diags = {}
for f in WIDTHS:
    d = practical.weight_diagnostics(model, x, S, generator=g, factor=f)
    diags[f"q × {f:g}"] = (d["ess"], d["khat"])
    verdict = practical.degenerate_regime(d["median_ess"], S, d["median_khat"])
    print(f"q × {f:g}: median ESS {d['median_ess']:.2f} of {S}, median k̂ "
          f"{d['median_khat']:.2f} -> {'degenerate' if verdict else 'fine'}")  # fmt: skip
fig = viz.new_figure(ncols=2, size=(4.0, 3.2))
pictures.plot_weight_diagnostics(fig.axes, diags, S, practical.DEGENERATE_ESS)
viz.save(fig, "06_weight_diagnostics")
display(fig)

med = {k: (ess.median().item(), khat.median().item()) for k, (ess, khat) in diags.items()}
assert practical.degenerate_regime(med["q × 1"][0], S, med["q × 1"][1]) is None
assert practical.degenerate_regime(med["q × 3"][0], S, med["q × 3"][1]) is not None
assert med["q × 1"][1] < practical.DEGENERATE_KHAT < med["q × 3"][1]

# %% [markdown]
# ## 3 · Bias and noise at equal compute
#
# Variance per unit of compute leaves out what the unbiased estimator is for: IWAE's bias. A
# minibatch step (batch $B$, $c$ evaluations per image) has mean $g^* + \bar b$ (exact
# full-data gradient plus bias, zero for $H_{k:m}$) and total variance
# $(\operatorname{tr}\Sigma_{data} + \operatorname{tr}\Sigma_{est})/B$: the minibatch noise
# plus the estimator's own. Averaging $T$ steps at a budget of $C = TBc$ evaluations,
#
# $$\mathrm{MSE}(C) = |\bar b|^2 + \frac{c\,(\operatorname{tr}\Sigma_{data} +
# \operatorname{tr}\Sigma_{est})}{C}.$$
#
# **Why SGD cares:** a small step size averages many steps' gradients, so the noise keeps
# shrinking and the bias stays (how many steps Adam averages is derived below). The unbiased
# estimator wins past a crossover budget $C^*$ (notebook 07 derives it).
#
# We measure every term on the 2-D model of notebook 05, whose exact gradient is a sum over a
# grid, for the decoder's 64 output biases: $\nabla_b \log p_\theta(x) =
# E_{p(z|x)}[x - \sigma(f_\theta(z))]$, closed form at every particle.
#
# **Which images.** Those whose posterior the encoder covers (mass beyond 4 encoder standard
# deviations below $10^{-3}$). Elsewhere both estimators see part of the posterior only in rare
# draws with huge weights, and a few thousand replicates do not yet show the unbiased one's
# unbiasedness (try such an image in the widget of §5).

# %%
SCAN, N_BUDGET, R_BUDGET = (12, 6, 1000) if FAST else (60, 20, 4000)
GRID = 101  # points per side of each image's zoomed posterior grid (IWAE-5000 checks it below)
uncovered = practical.uncovered_mass(model2, data.test[:SCAN], n=GRID)
chosen = (uncovered < 1e-3).nonzero().flatten()[:N_BUDGET]
x2 = data.test[chosen]
exact = practical.exact_output_bias_gradient(model2, x2, n=GRID)
worst = int(uncovered.argmax())
print(f"{MODE} mode: {len(chosen)} covered images of the first {SCAN} ({chosen.tolist()}), "
      f"{R_BUDGET} estimates each; not covered, e.g. image {worst}: "
      f"{uncovered[worst]:.2%} of its posterior beyond 4 encoder sds")  # fmt: skip

# %% [markdown]
# **Predict, then check (Exercise P2, 1 point, written).** IWAE's bias is $O(1/S)$. Which
# IWAE-$S$ has the largest squared bias, and will the unbiased estimator's measured $|\bar b|^2$
# be distinguishable from zero?

# %% [markdown] nbgrader={"grade": true, "grade_id": "p2_bias_answer", "locked": false, "points": 1, "schema_version": 3, "solution": true, "task": false} tags=["solution"] jupyter={"source_hidden": true}
# **Your prediction, and why:**
#
# ### BEGIN SOLUTION
# **Model answer.** IWAE-2: the bias shrinks like $1/S$, so the squared bias like $1/S^2$, and
# $S = 2$ is the smallest $S$ measured (the table: about 30× IWAE-10's). ucvae's measured
# $|\bar b|^2$ is not distinguishable from zero: its estimator is unbiased, so the measurement is
# zero plus noise of the size of its standard error. It can even come out negative, because
# $|\bar g - g^*|^2 - \operatorname{tr}\hat\Sigma/R$ subtracts the noise of the mean.
#
# **Rubric (1 point).** ½: IWAE-2, with the reason ($O(1/S)$ bias, smallest $S$). ½: ucvae's
# value within a few standard errors of zero, because it is unbiased (saying "exactly zero" without
# the noise gets ¼).
# ### END SOLUTION

# %%
gb = torch.Generator().manual_seed(1)
budgets, zcheck = practical.output_bias_budgets(
    model2, x2, exact, (2, 5, 10, 50), S, 1, 2, R_BUDGET, generator=gb
)
ref_check, _ = practical.output_bias_budgets(model2, x2, exact, (5000,), S, 0, 0, 10, generator=gb)
by = {b.name: b for b in budgets}
uc = by["ucvae"]
print(f"{'method':>8} {'evals c':>8} {'|b̄|² ± SE':>22} {'tr Σ_est':>9} {'tr Σ_data':>9}")
for b in budgets + ref_check[1:]:
    print(f"{b.name:>8} {b.cost:8.1f} {b.bias2:11.2e} ± {b.bias2_se:8.1e} {b.variance:9.3g} "
          f"{b.data_variance:9.3g}")  # fmt: skip
iw10 = by["IWAE-10"]
assert abs(uc.bias2) < 4 * uc.bias2_se, "ucvae's bias should be consistent with zero"
assert iw10.bias2 > 4 * iw10.bias2_se, "IWAE-10's bias should be detected"
assert by["IWAE-2"].bias2 > by["IWAE-10"].bias2 > by["IWAE-50"].bias2  # shrinks with S
assert abs(ref_check[1].bias2) < 4 * ref_check[1].bias2_se + 0.05 * iw10.bias2  # grid vs IWAE-5000

# %% [markdown]
# IWAE-5000 (bias $O(1/5000)$) agrees with the grid: the reference is right. Now the error of
# the averaged gradient against compute. Each $C^*$ is marked where ucvae's line crosses that
# IWAE's, with the range that moving IWAE's $|\bar b|^2$ by two standard errors gives. ucvae
# spends $c$ evaluations per image, so a window of $T$ steps of batch $B$ costs $C = TBc$: the
# last column converts $C^*$ into ucvae steps.

# %%
B_TRAIN = 100  # the training batch size
crossings, steps_to_win = {}, {}
for b in budgets[1:]:
    c_star = uc.crossover(b)
    lo, hi = (uc.crossover(replace(b, bias2=b.bias2 + k * b.bias2_se)) for k in (2, -2))
    if 0 < c_star < math.inf:
        crossings[b.name] = (c_star, lo, hi)
        steps_to_win[b.name] = c_star / (B_TRAIN * uc.cost)
        print(f"{b.name}: C* = {c_star:.2g} evaluations (range {lo:.2g} to {hi:.2g}), "
              f"≈ {steps_to_win[b.name]:,.0f} ucvae steps of batch {B_TRAIN}")  # fmt: skip
    else:
        print(f"{b.name}: {'never' if c_star == math.inf else 'at every budget'} (C* = {c_star})")
fig = viz.new_figure(size=(6.2, 4.0))
viz.mse_vs_budget(fig.axes[0], torch.logspace(2, 8, 200).numpy(), budgets, crossings,
                  bands=False, title=f"output-bias gradient, {MODE} mode")  # fmt: skip
viz.save(fig, "06_error_against_budget")
display(fig)
noise_ratio = uc.data_variance / max(b.variance for b in budgets)
print(f"minibatch noise tr Σ_data = {uc.data_variance:.3g}: {noise_ratio:.0f}× the largest "
      f"estimator variance (IWAE-2's), {uc.data_variance / uc.variance:.0f}× ucvae's")  # fmt: skip
c10 = uc.crossover(iw10)
assert 0 < c10 < math.inf and c10 > uc.crossover(by["IWAE-2"])  # a smaller bias takes longer
assert by["IWAE-50"].cost > uc.cost and uc.crossover(by["IWAE-50"]) == 0
assert noise_ratio > 3  # minibatch noise dominates

# %% [markdown]
# The minibatch noise dwarfs both estimators' own, so what decides is the cost per image and
# the bias: an IWAE that costs more per image than ucvae loses at every budget.
#
# **How many steps does Adam average?** The formula is for an equal-weight average of $T$
# gradients. Adam keeps no such average: its iterate does the averaging. Near a minimum
# $\theta^*$, along a direction of curvature $\lambda$, a step uses the estimate
# $g_t = \lambda(\theta_t - \theta^*) + b + \xi_t$ (bias $b$, independent zero-mean noise
# $\xi_t$ of variance $\sigma^2$). Late in training Adam's second moment $\hat v$ (an average of
# $g^2$ over about $1/(1-\beta_2) = 1000$ steps) barely moves, so its step is $\eta/\sqrt{\hat v}$.
# Leave the momentum aside for a moment:
#
# $$\theta_{t+1} - \theta^* = (1 - \alpha)(\theta_t - \theta^*) - \frac{\eta}{\sqrt{\hat v}}
# (b + \xi_t), \qquad \alpha = \frac{\eta\lambda}{\sqrt{\hat v}}.$$
#
# Unrolled, the exact gradient at the iterate is minus a weighted average of the past
# estimates' errors, with weights $\alpha(1-\alpha)^j$ that sum to 1:
#
# $$\lambda(\theta_t - \theta^*) = -\sum_{j \ge 0} \alpha(1-\alpha)^j\,(b + \xi_{t-1-j}).$$
#
# Its mean is $-b$: **the bias stays in full**. Its variance is
# $\sigma^2\sum_j \alpha^2(1-\alpha)^{2j} = \sigma^2\alpha/(2-\alpha)$, the variance of an
# equal-weight average of $N = (2-\alpha)/\alpha$ gradients. Adam's momentum
# ($m_t = \beta_1 m_{t-1} + (1-\beta_1) g_t$, $\beta_1 = 0.9$) turns this into a second-order
# recursion whose stationary variance gives
#
# $$N = \frac{2}{\alpha} - \frac{1-\beta_1}{1+\beta_1} \approx \frac{2\sqrt{\hat v}}{\eta\,\lambda},$$
#
# less than one step shorter. So the window is not $1/\eta$: it is longer where the gradient is
# noisy, shorter where the loss is curved, and each direction has its own. The check below runs
# PyTorch's Adam on noisy quadratics and measures $N = \sigma^2 / E[(\lambda\theta_t -
# \lambda\theta^* + b)^2]$ against the formula, with Adam's own $\hat v$.

# %%
BETA1 = 0.9  # torch.optim.Adam's default, used to train every model


def adam_on_quadratic(lam, sigma, bias, steps, burn_in, lr=1e-3, seed=0):
    """PyTorch's Adam on L(θ) = Σ_i λ_i θ_i² / 2 (θ* = 0), each step with the estimate
    λθ + bias + σξ, ξ ~ N(0, 1) fresh. Starts at θ = −bias/λ, where the iterate's mean settles.
    Returns, per coordinate over the steps after ``burn_in``, the mean of the exact gradient λθ
    and the mean of (λθ + bias)², and Adam's √v̂ at the end."""
    gen = torch.Generator().manual_seed(seed)
    theta = (-bias / lam).requires_grad_()
    opt = torch.optim.Adam([theta], lr=lr, betas=(BETA1, 0.999))
    grad_sum = err2_sum = 0.0
    for t in range(steps):
        theta.grad = lam * theta.detach() + bias + sigma * torch.randn(lam.shape, generator=gen)
        opt.step()
        if t >= burn_in:
            exact_grad = (lam * theta.detach()).double()
            grad_sum, err2_sum = grad_sum + exact_grad, err2_sum + (exact_grad + bias) ** 2
    state = opt.state[theta]
    sqrt_v = (state["exp_avg_sq"] / (1 - 0.999 ** state["step"])).sqrt()
    return grad_sum / (steps - burn_in), err2_sum / (steps - burn_in), sqrt_v


K_Q, STEPS_Q = (400, 2000) if FAST else (2000, 8000)  # coordinates per λ; Adam steps
SIGMA_Q, BIAS_Q = 0.03, 0.01
lam = torch.tensor([0.06, 0.24]).repeat_interleave(K_Q)  # α ≈ 0.002 and 0.008
mean_grad, err2, sqrt_v = adam_on_quadratic(lam, SIGMA_Q, torch.full_like(lam, BIAS_Q), STEPS_Q,
                                            burn_in=STEPS_Q - 1000)  # fmt: skip
for value in lam.unique():
    sel = lam == value
    alpha = 1e-3 * value.item() / sqrt_v[sel].mean().item()
    n_theory = 2 / alpha - (1 - BETA1) / (1 + BETA1)
    n_measured = SIGMA_Q**2 / err2[sel].mean().item()
    n_se = n_measured * (err2[sel].std() / err2[sel].mean()).item() / math.sqrt(K_Q)
    g_mean, g_se = mean_grad[sel].mean().item(), mean_grad[sel].std().item() / math.sqrt(K_Q)
    print(f"λ = {value:.2f}: α = {alpha:.4f}, window N = {n_theory:,.0f} by the formula, "
          f"{n_measured:,.0f} ± {n_se:,.0f} measured; mean exact gradient {g_mean:+.5f} ± "
          f"{g_se:.5f} (−b = {-BIAS_Q})")  # fmt: skip
    assert abs(n_measured - n_theory) < 4 * n_se, "the window formula should hold"
    assert abs(g_mean + BIAS_Q) < 4 * g_se, "the bias should stay in full"

# %% [markdown]
# Now the windows of the 2-D model's 64 output biases, for the loss it was trained with (minus
# IWAE-10's bound; Adam, $\eta = 10^{-3}$, batch 100), with its other parameters held fixed.
# The curvature is in closed form: with $e_s = x - \sigma(f_\theta(z_s))$ and
# $\bar g = \sum_s \bar w_s e_s$ (IWAE's gradient in the output biases),
# $H = E\big[\sum_s \bar w_s \operatorname{diag}(\sigma_s(1-\sigma_s)) - \sum_s \bar w_s e_s
# e_s^\top + \bar g \bar g^\top\big]$. Adam's $\hat v = E[\bar g_{\text{batch}}^2]$ is the
# squared mean of the per-image gradients plus their variance over $B$. With a diagonal
# $\hat v$ the directions are the eigenvectors of $\eta\,\hat v^{-1/4} H \hat v^{-1/4}$ (one
# $\hat v^{-1/4}$ on each side), whose eigenvalues are the $\alpha$'s.


# %%
def adam_windows(model, x_train, batch, lr, num_samples, generator):
    """Adam's window N = 2/α − (1 − β₁)/(1 + β₁) along each eigen-direction of the output
    biases, for minus IWAE-S's bound on binarised images ``x_train`` [n, P]."""
    with torch.no_grad():
        q = model.encode(x_train)
        z = q.sample(num_samples, generator)  # [n, S, D]
        w_bar = torch.softmax(model.log_joint(x_train, z) - q.log_prob(z), -1).double()
        p = torch.sigmoid(model.decoder(z)).double()  # [n, S, P]
        e = x_train[:, None].double() - p  # ∇_b log p(x, z_s)
        g = (w_bar[..., None] * e).sum(1)  # [n, P]: each image's IWAE gradient
        n = len(x_train)
        curvature = (
            torch.diag((w_bar[..., None] * p * (1 - p)).sum((0, 1)))
            - torch.einsum("ns,nsi,nsj->ij", w_bar, e, e)
            + g.T @ g
        ) / n
        v_hat = g.mean(0) ** 2 + g.var(0) / batch
        scale = v_hat**-0.25  # D^(-1/4), D = diag(v̂)
        alpha = torch.linalg.eigvalsh(lr * scale[:, None] * curvature * scale[None])
    return alpha, 2 / alpha - (1 - BETA1) / (1 + BETA1)


gw = torch.Generator().manual_seed(2)
x_train = torch.cat([data.train_epoch(gw) for _ in range(2)])  # two binarisations
alphas, windows = adam_windows(model2, x_train, B_TRAIN, 1e-3, S, gw)
long = int((windows > 2000).sum())
print(f"Adam's windows over the 64 output-bias directions: shortest {windows.min():,.0f} steps, "
      f"median {windows.median():,.0f}; {long} longer than 2,000 (1/η = 1,000)")  # fmt: skip
assert (alphas > 0).all(), "the loss should curve upwards along every output-bias direction"
assert windows.min() > max(steps_to_win.values()), "every window should be longer than C*"

# %% [markdown]
# Every window is longer than the steps column above: late in training, along the output
# biases, Adam averages enough steps for the unbiased gradient's iterate to be the more
# accurate, even at equal compute. Why about 500 steps? At a well-fitted model a per-image
# gradient's variance is close to the curvature (Fisher's information equals the expected
# Hessian), so $\hat v \approx \lambda / B$ and $N \approx 2/(\eta\sqrt{B\lambda})$, and a
# Bernoulli output bias has $\lambda \le 1/4$: roughly $N \ge 4/(\eta\sqrt B) = 400$ steps.
# Pixels the decoder is sure of have tiny $\lambda$ and long windows. The error at one $\theta$
# is not the whole story of training: notebook 05's IWAE-10 model still scored higher than its
# ucvae model.
#
# ## 4 · Variance per compute of the whole decoder gradient
#
# Without the bias, for all 8,704 decoder parameters of the 5-latent model
# (`practical.compare`, $(k, m) = (1, 2)$): how many times IWAE-10's compute does ucvae need
# for the same variance? Beside it, the README's variance study (models trained 40 epochs in
# its quick run, 150 in its full run), read from the committed tables.

# %%
N_VAR = 5 if FAST else 20
ratios = torch.tensor(
    [
        practical.compare(model, xi, S, 1, 2, replicates=R, generator=g).work_ratio
        for xi in x[:N_VAR]
    ]
).log()
m_log, se_log = ratios.mean().item(), (ratios.std() / math.sqrt(len(ratios))).item()
print(f"{MODE} mode, converged model: ucvae needs {math.exp(m_log):.1f}× IWAE-10's compute "
      f"(geometric mean over {N_VAR} images; ×/÷ {math.exp(2 * se_log):.2f} at 2 SE)")  # fmt: skip


def study_range(name: str) -> tuple[float, float]:
    """Var×cost ratios at S = 10, (k, m) = (1, 2), diagonal IWAE models, in a committed table."""
    with open(REPO_ROOT / "figures" / name) as f:
        rows = [r for r in csv.DictReader(f) if r["lever"] == "latent_dim" and r["S"] == "10"]
    values = [float(r["work_ratio"]) for r in rows]
    return min(values), max(values)


for name, what in (("variance_study_quick.csv", "quick study, 40 epochs"),
                   ("variance_study.csv", "full study, 150 epochs")):  # fmt: skip
    lo, hi = study_range(name)
    print(f"README {what}: {lo:.1f}–{hi:.1f}× over latent sizes (figures/{name})")
assert m_log - 2 * se_log > 0, "ucvae should need more compute per unit variance than IWAE"

# %% [markdown]
# The ratio is not set by training time alone. In the variance study's 5-D models it grew from
# 2.2–3.1× after 40 epochs to 5.3–10.7× after 150, as their weights got less even and τ's tail
# heavier (notebook 05, §6); yet the 5-latent model above, trained 2,000 epochs, needs about
# as much as those 150-epoch models (10.6× in the run stored here, known only to a factor of
# about 9 from 5 images). How even the weights are, which
# the latent size and the encoder set, is what decides it.
#
# ## 5 · Move the levers yourself
#
# On the 2-D model, one test image at a time (output-bias gradient): variance × cost of ucvae,
# IWAE-$S$ and IWAE-$S'$ ($S'$ costs what ucvae costs), τ against the 1/t law, and the error
# against compute with IWAE's exact bias (one image, so no minibatch noise). Try the width
# factor 1 → 3, $S = 2$ and $50$, $(k, m) = (0, 0)$, and the uncovered image printed in §3.

# %%
w = practical_widget(model2, data.test[:SCAN], (8, 8), num_samples=S, k=1, m=2, replicates=400)
display(w)
w.factor.value = 2.0  # what moving a slider does
print(w.summary.value.replace("<b>", "").replace("</b>", ""))

# %% [markdown]
# ## 6 · Moving the reference: a rejuvenation move
#
# In the degenerate regime the reference stays put until a fresh draw beats it. A remedy to
# try: after each selection, move both references by a coupled random-walk Metropolis–Hastings
# step targeting $p(z\mid x)$ (step $s = c\,\sigma_\phi(x)$). It keeps $H_{k:m}$ unbiased
# (`tests/test_rejuvenation.py`) and costs one evaluation per chain per move.
#
# **Predict, then check (Exercise P3, 1 point, written).** Does the move shorten the 3× wide
# proposal's tail, and what does it cost?

# %% [markdown] nbgrader={"grade": true, "grade_id": "p3_move_answer", "locked": false, "points": 1, "schema_version": 3, "solution": true, "task": false} tags=["solution"] jupyter={"source_hidden": true}
# **Your prediction, and why:**
#
# ### BEGIN SOLUTION
# **Model answer.** No: neither step size lowers $P(\tau > 8)$ beyond its standard error, and
# both cost extra evaluations per estimate. The chains meet when a fresh draw takes both sets,
# which in the degenerate regime means beating both references. The move takes the references
# to typical posterior points, whose weights fresh draws from the wide proposal beat no more
# often than before. Meeting through the move itself would need the two references to land
# within a few $s$ of each other, which two random-walk steps from distant points rarely do.
#
# **Rubric (1 point).** ½: no shorter tail (or no change beyond the noise) and a higher cost.
# ½: the reason (meeting needs a fresh draw to beat the references, and moving the
# references to typical posterior points does not make that likelier).
# ### END SOLUTION

# %%
moves = {"no move": None, "s = 0.3 σ": 0.3, "s = 1.0 σ": 1.0}
taus_mh, evals_mh = {}, {}
scale = model.proposal(xr, detach=True).scale
with torch.no_grad():
    for name, c in moves.items():
        move = None if c is None else RandomWalkMH(c * scale)
        target = practical.widened_target(model, xr, 3.0)
        est = coupled_estimate(target, S, max_steps=100_000, generator=g, move=move)
        taus_mh[f"q × 3, {name}"], evals_mh[name] = est.tau, est.num_evals.double().mean().item()
p0, se0 = p_above(taus_mh["q × 3, no move"], T8)
for name in moves:
    p, se = p_above(taus_mh[f"q × 3, {name}"], T8)
    z = (p - p0) / math.hypot(se, se0) if name != "no move" else 0.0
    verdict = "heavier" if z > 2 else "lighter" if z < -2 else "no change beyond 2 SE"
    print(f"{name}: P(τ > 8) = {p:.3f} ± {se:.3f}"
          + (f" ({z:+.1f} SE against no move: {verdict})" if name != "no move" else "")
          + f", {evals_mh[name]:.1f} evaluations per estimate")  # fmt: skip
    if name != "no move":
        assert z > -3, "the move should not shorten the tail"
        assert evals_mh[name] > evals_mh["no move"], "the move costs evaluations"
fig = viz.new_figure(size=(5.5, 3.8))
viz.survival_vs_degenerate(fig.axes[0], taus_mh, S, "q × 3: with and without the MH move")
viz.save(fig, "06_rejuvenation")
display(fig)

# %% [markdown]
# Read the differences with their standard errors: neither step lowers $P(\tau > 8)$, and
# both cost evaluations (in full mode, with 4,000 chain pairs, both make the tail measurably
# heavier). A move that explores $p(z\mid x)$ takes the references to typical posterior
# points, whose weights fresh draws beat no more often; and meeting through the move needs the
# two references within a few $s$ of each other.
#
# ## Exercises
#
# **Exercise 1 (2 points, derivation).** In the degenerate regime at $S = 10$: what is
# $P(\tau > 20)$, and what is the smallest $t$ with $P(\tau > t) < 0.01$? Assign `p_tail` and
# `t_99`. (Compare the median, 3 steps: $P(\tau > 2) = 11/20$ and $P(\tau > 3) = 11/29$;
# most chains meet within a few steps, a few run very long.)

# %% nbgrader={"grade": false, "grade_id": "ex1_tail", "locked": false, "schema_version": 3, "solution": true, "task": false} tags=["solution"] jupyter={"source_hidden": true}
### BEGIN SOLUTION
p_tail = 11 / (11 + 9 * 19)  # (S+1)/(S+1+(S−1)(t−1)) at S = 10, t = 20
t_99 = 1 + math.floor(99 * 11 / 9) + 1  # (S−1)(t−1) > 99 (S+1), i.e. t − 1 > 121
### END SOLUTION

# %% nbgrader={"grade": true, "grade_id": "ex1_tail_test", "locked": true, "points": 2, "schema_version": 3, "solution": false, "task": false}
checks.score(checks.check_degenerate_tail, p_tail, t_99, points=2)

# %% [markdown]
# **Exercise 2 (2 points).** Write `within_set_ess(log_w)`: for log-weights [..., S] return
# Kish's ESS $(\sum_s w_s)^2/\sum_s w_s^2$ over the last dimension. Log-weights of images run
# into the hundreds: never exponentiate them directly.


# %% nbgrader={"grade": false, "grade_id": "ex2_ess", "locked": false, "schema_version": 3, "solution": true, "task": false} tags=["solution"] jupyter={"source_hidden": true}
def within_set_ess(log_w):
    ### BEGIN SOLUTION
    w_bar = torch.softmax(log_w, -1)  # normalised weights: the scale of w cancels
    return 1.0 / w_bar.pow(2).sum(-1)
    ### END SOLUTION


# %% nbgrader={"grade": true, "grade_id": "ex2_ess_test", "locked": true, "points": 2, "schema_version": 3, "solution": false, "task": false}
checks.score(checks.check_within_set_ess, within_set_ess, points=2)
### BEGIN HIDDEN TESTS
checks.score(checks.check_within_set_ess, within_set_ess, points=2, runs=[{"seed": 7}])
### END HIDDEN TESTS

# %% [markdown]
# **Exercise 3 (2 points).** Write `is_degenerate(log_w, min_ess)`: log-weights
# [images, sets, S] of sets drawn from $q_\phi$ → `True` when the median over images of the
# image's mean within-set ESS is below `min_ess` (the ESS half of
# `practical.degenerate_regime`). Then apply it to `diags` above for a quick check of your own.


# %% nbgrader={"grade": false, "grade_id": "ex3_rule", "locked": false, "schema_version": 3, "solution": true, "task": false} tags=["solution"] jupyter={"source_hidden": true}
def is_degenerate(log_w, min_ess):
    ### BEGIN SOLUTION
    ess_per_image = effective_sample_size(log_w).mean(-1)  # mean over an image's sets
    return ess_per_image.median().item() < min_ess  # a few bad images must not decide
    ### END SOLUTION


# %% nbgrader={"grade": true, "grade_id": "ex3_rule_test", "locked": true, "points": 2, "schema_version": 3, "solution": false, "task": false}
checks.score(checks.check_is_degenerate, is_degenerate, points=2)
### BEGIN HIDDEN TESTS
checks.score(
    checks.check_is_degenerate, is_degenerate, points=2, runs=[{"min_ess": 2.0, "seed": 5}]
)
### END HIDDEN TESTS

# %% [markdown]
# **Exercise 3b (2 points, written).** Why does the rule take the median over images, and why
# the ESS within sets of $S$ rather than over all of an image's draws?

# %% [markdown] nbgrader={"grade": true, "grade_id": "ex3_rule_why", "locked": false, "points": 2, "schema_version": 3, "solution": true, "task": false} tags=["solution"] jupyter={"source_hidden": true}
# **Your answer:**
#
# ### BEGIN SOLUTION
# **Model answer.** *The median:* the rule is about the typical image. A few images with a
# second posterior mode, or that the encoder misses, have ESS near 1 whatever the regime, and
# a few easy ones have ESS near $S$; a mean would let those few move the verdict, the median
# does not.
# *Within sets:* the chains select within sets of $S$ (the reference and $S-1$ fresh draws),
# and the 1/t law needs one particle to take nearly all of *each set's* weight, so that
# selection is an argmax. The within-set ESS measures exactly that, on the scale $1$ to $S$
# the threshold is set on. An ESS over all of an image's draws answers another question: it
# depends on how many draws are pooled (with heavy-tailed weights it falls towards 1 as more
# are pooled, while sets of $S$ can stay even), so it cannot be compared with a threshold
# set for sets of $S$.
#
# **Rubric (2 points).** 1 point for the median: robust to a few atypical images (name a
# cause: a second mode, an encoder miss, outliers). 1 point for within sets: the chains
# select within sets of $S$, so the evenness of each set decides whether selection is an
# argmax (the 1/t law); a pooled ESS depends on the number of draws pooled. Half a point for
# each part that states the fact without the reason.
# ### END SOLUTION

# %% [markdown]
# ## Summary
#
# * Degenerate weights (ESS ≈ 1) put τ on the 1/t law for every $S$: infinite expected cost.
#   Too narrow **or** too wide a proposal gets there; bounded weights do not prevent it.
# * Within-set ESS and PSIS $\hat k$ tell the regime before training.
# * Judge "practical" by the error of the averaged gradient, $|\bar b|^2 + cV/C$: noise
#   averages away over Adam's or SGD's steps, bias does not. With the minibatch noise dominating, $C^*$ is
#   set by cost per image and IWAE's bias.
# * Adam's iterate averages $N = 2/\alpha - (1-\beta_1)/(1+\beta_1)$ steps along a direction,
#   $\alpha = \eta\lambda/\sqrt{\hat v}$, not $1/\eta$; it keeps the bias in full. Along this
#   model's output biases $N$ is at least about 460 steps (median 640), past every $C^*$.
# * Per unit of variance ucvae needs several times IWAE's compute on digits; how many depends
#   on how even the weights are, not on training time alone (§4). Moving the reference does not
#   shorten the tail.
#
# ## References
# * Burda, Grosse & Salakhutdinov (2016). Importance weighted autoencoders. ICLR.
# * Jacob, O'Leary & Atchadé (2020). Unbiased Markov chain Monte Carlo methods with couplings.
#   JRSS B.
# * Ruiz, Titsias, Cemgil & Doucet (2021). Unbiased gradient estimation for variational
#   auto-encoders using coupled Markov chains. UAI.
# * Vehtari, Simpson, Gelman, Yao & Gabry (2024). Pareto smoothed importance sampling. JMLR.
# * Andrieu, Lee & Vihola (2018). Uniform ergodicity of the iterated conditional SMC and
#   geometric ergodicity of particle Gibbs samplers. Bernoulli. (CIS, i-SIR.)

# %%
print(f"notebook ran in {time.perf_counter() - START:.0f} s ({MODE} mode)")
