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
# # 05 · Training real VAEs: ELBO vs IWAE vs the unbiased gradient
#
# Notebooks 01–04 built an estimator $H_{k:m}$ of posterior expectations that is *exactly*
# unbiased. Here it trains a real VAE on real images (scikit-learn's 8×8 digits, binarised):
#
# * **elbo**: $\max \frac1S\sum_s \log w_s$ (a VAE with $S$ samples);
# * **iwae**: $\max \log \frac1S\sum_s w_s$ (biased gradient of $\log p_\theta(x)$, bias $O(1/S)$);
# * **ucvae**: the decoder $\theta$ follows $\sum_n c_n \nabla_\theta \log p_\theta(x, z_n)$ from
#   coupled chains, an **unbiased** estimate of $\nabla_\theta \log p_\theta(x)$ (Fisher's
#   identity); the encoder $\phi$ follows the IWAE bound (it only proposes; any $q_\phi$ works).
#
# Same model (64-64-64-5 MLP, tanh), same $S = 10$, same initialisation, batches and epochs.
# We score each by the test log-likelihood (IWAE bound with many samples) and watch the price
# of unbiasedness: meeting times, evaluations, gradient variance.

# %%
# %matplotlib inline
import math

import matplotlib.pyplot as plt
import torch
from IPython.display import display

import ucvae_lite as u
from ucvae_lite import viz
from ucvae_lite.data import load_dataset
from ucvae_lite.evaluate import evaluate, log_likelihood
from ucvae_lite.objectives import UCVAE_DEFAULTS, decoder_gradient
from ucvae_lite.runtime import runs_dir
from ucvae_lite.train import TrainConfig, fast_mode, train
from ucvae_lite.vae import build_vae

FAST = fast_mode()  # UCVAE_FAST=1 (CI): a few epochs, fewer samples; same claims
EPOCHS = 5 if FAST else 150
S_EVAL = 200 if FAST else 5000
R_GRAD = 8 if FAST else 30  # gradient draws per variance measurement
torch.set_num_threads(1)  # tiny tensors: one thread is fastest
data = load_dataset("digits")
print(
    f"train {tuple(data.train.shape)}, valid {tuple(data.valid.shape)}, "
    f"test {tuple(data.test.shape)}; ucvae defaults: {UCVAE_DEFAULTS}"
)

fig, axes = plt.subplots(1, 8, figsize=(8, 1.3))
for ax, img in zip(axes, data.test[:8], strict=True):
    ax.imshow(img.view(8, 8), cmap="gray_r")
    ax.axis("off")
fig.suptitle("binarised test digits")
plt.close(fig)
display(fig)

# %% [markdown]
# ## Train the three objectives
# After every epoch of the ucvae run we also measure, on 20 fixed validation images, the
# variance of the decoder gradient from ucvae and from IWAE at the *same* parameters
# (sum over coordinates of the variance of the minibatch gradient, over `R_GRAD` draws).

# %%
x_grad = data.valid[:20]
grad_var = {"epoch": [], "ucvae": [], "iwae": []}


def measure_variance(epoch, model, history):
    g = torch.Generator().manual_seed(epoch)
    grad_var["epoch"].append(epoch)
    for name in ("ucvae", "iwae"):
        draws = torch.stack(
            [decoder_gradient(model, x_grad, name, generator=g) for _ in range(R_GRAD)]
        )
        grad_var[name].append(draws.var(0).sum().item())


runs = {}
for name in ("elbo", "iwae", "ucvae"):
    out = str(runs_dir() / "nb05" / name)  # the repository's runs/ (or $UCVAE_RUNS)
    cfg = TrainConfig(objective=name, epochs=EPOCHS, seed=0, val_samples=50, out=out)
    model, hist = train(
        cfg, progress=False, data=data, callback=measure_variance if name == "ucvae" else None
    )
    runs[name] = {"model": model, "history": hist}
    print(
        f"{name:>5}: {hist['epoch'][-1]} epochs, {hist['steps'][-1]} steps, "
        f"{hist['time'][-1]:.1f}s, final validation LL {hist['val_ll'][-1]:.2f}"
    )

# %% [markdown]
# ## Test log-likelihood
# $\log \hat p(x) = \log \frac1{S}\sum_s w_s$ with $S$ = `S_EVAL` (5000 in full mode, as in the
# IWAE paper), averaged over the 397 test images, ± its standard error. An untrained model
# (same initialisation) is the baseline.

# %%
torch.manual_seed(0)
untrained = build_vae("digits", 64)  # the default digits VAE (vae.DEFAULT_ARCH), as trained above
results = {"untrained": evaluate(untrained, data.test, S_EVAL)}
for name, r in runs.items():
    results[name] = evaluate(r["model"], data.test, S_EVAL)
print(f"{'model':>10} {'test LL':>9} {'± SE':>6}")
for name, res in results.items():
    print(f"{name:>10} {res['ll']:9.3f} {res['se']:6.3f}")

# %% [markdown]
# Differences *between* objectives are paired over the same test images, so their SE is
# smaller than each model's SE. In fast mode (a few epochs) the objectives are barely
# distinguishable; the README's results table gives the full runs over several seeds.


# %%
def paired(a, b, n=S_EVAL):
    """Mean and SE of per-image log p̂_a(x) − log p̂_b(x) on the test set."""
    ga, gb = torch.Generator().manual_seed(1), torch.Generator().manual_seed(2)
    la = log_likelihood(runs[a]["model"], data.test, n, generator=ga)
    lb = log_likelihood(runs[b]["model"], data.test, n, generator=gb)
    d = la - lb
    return d.mean().item(), (d.std() / math.sqrt(len(d))).item()


for a, b in [("ucvae", "iwae"), ("ucvae", "elbo"), ("iwae", "elbo")]:
    m, se = paired(a, b)
    print(f"{a} − {b}: {m:+.3f} ± {se:.3f} nats")

# %% [markdown]
# **Checks that must hold.** Training helps every objective (far beyond the SE), and the
# large-$S$ test estimate is at least the training bound $\mathcal L_{10}$ (the IWAE bound
# increases with $S$) up to Monte Carlo error.

# %%
base = results["untrained"]
for name in runs:
    gain = results[name]["ll"] - base["ll"]
    assert gain > 4 * math.hypot(results[name]["se"], base["se"]), (name, gain)
    g = torch.Generator().manual_seed(3)
    big = log_likelihood(runs[name]["model"], data.test, S_EVAL, generator=g)
    small = log_likelihood(runs[name]["model"], data.test, 10, generator=g)
    d = big - small
    assert d.mean() > -4 * d.std() / math.sqrt(len(d)), name
print("training improved every model; IWAE-S_eval ≥ IWAE-10 on the test set: OK")

# %% [markdown]
# ## Learning curves

# %%
fig, axes = plt.subplots(1, 2, figsize=(10, 3.6))
colors = {"elbo": "tab:blue", "iwae": "tab:orange", "ucvae": "tab:green"}
for name, r in runs.items():
    h = r["history"]
    axes[0].plot(h["epoch"], h["val_ll"], color=colors[name], label=name)
    axes[1].plot(h["time"], h["val_ll"], color=colors[name], label=name)
axes[0].set_xlabel("epoch")
axes[1].set_xlabel("training time (s)")
for ax in axes:
    ax.set_ylabel("validation LL (IWAE-50)")
    ax.legend()
fig.suptitle("digits: same epochs, different cost per epoch")
fig.tight_layout()
viz.save(fig, "05_learning_curves")
plt.close(fig)
display(fig)

# %% [markdown]
# ## Meeting times and cost during training
# Every ucvae step runs coupled chains for each image of the minibatch. The chains meet at
# $\tau \ge 2$; the cost per image is $2S + (S-1)\max(\tau - 2, m - 1)$ evaluations against
# IWAE's $S$.

# %%
h = runs["ucvae"]["history"]
fig, axes = plt.subplots(1, 2, figsize=(10, 3.4))
axes[0].plot(h["step_tau_mean"], color="tab:green", lw=0.8, label="batch mean τ")
axes[0].plot(h["step_tau_max"], color="tab:red", lw=0.6, alpha=0.6, label="batch max τ")
axes[0].set_yscale("log")
axes[0].set_xlabel("training step")
axes[0].set_ylabel("meeting time τ")
axes[0].legend()
axes[1].plot(
    h["epoch"],
    [e / UCVAE_DEFAULTS.num_samples for e in h["evals"]],
    "o-",
    color="tab:green",
    label="evaluations / IWAE's",
)
axes[1].plot(
    h["epoch"],
    [e * UCVAE_DEFAULTS.num_samples for e in h["ess"]],
    "s-",
    color="tab:purple",
    label="within-set ESS (of S=10)",
)
axes[1].set_xlabel("epoch")
axes[1].legend()
fig.tight_layout()
viz.save(fig, "05_meeting_times")
plt.close(fig)
display(fig)
print(
    f"mean τ {sum(h['step_tau_mean']) / len(h['step_tau_mean']):.2f}, "
    f"max τ {max(h['step_tau_max'])}, truncated chains {sum(h['truncated'])}"
)
assert sum(h["truncated"]) == 0 and min(h["step_tau_mean"]) >= 2

# %% [markdown]
# ## Gradient variance over training: what unbiasedness costs
# Same parameters, same 20 images: the total variance of the ucvae decoder gradient against
# IWAE's. Two effects pull in opposite directions: the bias correction
# $\sum_t (h(X_t) - h(Y_{t-1}))$ adds variance, while averaging $h(X_t)$ over $t = k..m$
# (here $k=1, m=2$: two fresh particle sets) removes some. The fair comparison is
# variance × cost (evaluations), since IWAE could spend the same evaluations on a larger batch.

# %%
fig, ax = plt.subplots(figsize=(6, 3.4))
ax.plot(grad_var["epoch"], grad_var["ucvae"], "o-", color="tab:green", label="ucvae")
ax.plot(grad_var["epoch"], grad_var["iwae"], "s-", color="tab:orange", label="iwae")
ax.set_yscale("log")
ax.set_xlabel("epoch (of the ucvae run)")
ax.set_ylabel("total variance of θ-gradient")
ax.legend()
fig.tight_layout()
viz.save(fig, "05_gradient_variance")
plt.close(fig)
display(fig)
ratio = [a / b for a, b in zip(grad_var["ucvae"], grad_var["iwae"], strict=True)]
cost = [e / UCVAE_DEFAULTS.num_samples for e in h["evals"]]
print("variance ratio ucvae / iwae per epoch:       ", [round(r, 2) for r in ratio])
print(
    "variance x cost ratio ucvae / iwae per epoch:",
    [round(r * c, 2) for r, c in zip(ratio, cost, strict=True)],
)
assert all(math.isfinite(r) and r > 0 for r in ratio)

# %% [markdown]
# ## Is the trained model's ucvae gradient still unbiased?
# On a real VAE there is no closed form, but IWAE with $S = 5000$ has a bias of order $1/S$,
# far below the noise of the check below. We compare the gradient of the decoder's output
# biases (64 numbers) from ucvae ($S = 10$), averaged over many independent draws, with that
# reference: every z-score should be small. IWAE-10's z-scores are shown for contrast.

# %%
model = runs["ucvae"]["model"]
x10 = data.test[:10]
G, COPIES = (30, 10) if FAST else (100, 20)
gen = torch.Generator().manual_seed(5)


def bias_grads(name, S, n, copies=COPIES):
    """n draws of the minibatch-mean gradient of the output biases (copies of x10 per batch)."""
    cfg = UCVAE_DEFAULTS.with_(num_samples=S)
    xs = x10.repeat(copies, 1)
    return torch.stack([decoder_gradient(model, xs, name, cfg, gen)[-64:] for _ in range(n)])


ref = bias_grads("iwae", 5000, 4, copies=1)
ucv = bias_grads("ucvae", 10, G)
iw10 = bias_grads("iwae", 10, G)


def z_scores(draws):
    se = (draws.var(0) / len(draws) + ref.var(0) / len(ref)).sqrt()
    return (draws.mean(0) - ref.mean(0)) / se


z_u, z_i = z_scores(ucv), z_scores(iw10)
print(f"ucvae:   max |z| = {z_u.abs().max():.2f}   (64 coordinates)")
print(f"IWAE-10: max |z| = {z_i.abs().max():.2f}")
assert z_u.abs().max() < 4.5  # Bonferroni over 64 coordinates at the 4-SE level

# %% [markdown]
# ## What to take away
# * On digits the weights are not degenerate (within-set ESS well above 1 of 10), so the
#   chains meet fast (mean τ ≈ 2.5) and ucvae costs about 3× IWAE's evaluations per step.
# * Its decoder gradient is unbiased, IWAE's is not; with $k=1, m=2$ its variance per step is
#   of the same order as IWAE's, so per epoch the two train about equally well here, and per
#   second IWAE wins. The README's results table has the full-length comparison over seeds.
# * On MNIST with 50 latents the weights degenerate and τ becomes heavy-tailed
#   (notebook 06): exactly the regime the diagnostics above are for.
#
# ## Exercises
#
# **Exercise 1.** Train ucvae with the encoder fitted by the *inclusive* KL,
# $-\mathbb E_p[\nabla_\phi \log q_\phi(z\mid x)]$, estimated by the same chains
# (`TrainConfig(..., encoder="inclusive")`) for `EPOCHS` epochs. Compare its test
# log-likelihood and mean meeting time with the IWAE-encoder run above.

# %% jupyter={"source_hidden": true} tags=["solution"]
cfg_incl = TrainConfig(
    objective="ucvae",
    encoder="inclusive",
    epochs=EPOCHS,
    seed=0,
    val_samples=50,
    out=str(runs_dir() / "nb05" / "ucvae_inclusive"),
)
model_incl, hist_incl = train(cfg_incl, progress=False, data=data)
res_incl = evaluate(model_incl, data.test, S_EVAL)
print(
    f"inclusive-KL encoder: test LL {res_incl['ll']:.3f} ± {res_incl['se']:.3f}, "
    f"mean τ {sum(hist_incl['step_tau_mean']) / len(hist_incl['step_tau_mean']):.2f}"
)
print(f"IWAE encoder:         test LL {results['ucvae']['ll']:.3f} ± {results['ucvae']['se']:.3f}")

# %% [markdown]
# **Exercise 2.** On the trained ucvae model, how do the meeting time and the cost relative to
# IWAE change with $S \in \{2, 5, 10, 20\}$? Run `u.coupled_estimate` on the test images
# (`runs["ucvae"]["model"].target(data.test)`) with $k = m = 0$ and report the mean and max of
# $\tau$ and `num_evals / S`.

# %% jupyter={"source_hidden": true} tags=["solution"]
with torch.no_grad():
    tgt = runs["ucvae"]["model"].target(data.test)
    for S in (2, 5, 10, 20):
        est = u.coupled_estimate(tgt, S, generator=torch.Generator().manual_seed(S))
        tau = est.tau.double()
        print(
            f"S={S:>2}: mean τ {tau.mean():.2f}, max τ {tau.max():.0f}, "
            f"evaluations / IWAE's {est.num_evals.double().mean() / S:.2f}"
        )

# %% [markdown]
# **Exercise 3.** The defensive proposal $(1-\varepsilon) q_\phi + \varepsilon\,p(z)$ bounds
# the weights by $1/\varepsilon$. On the trained model, does $\varepsilon = 0.2$ shorten the
# longest meeting times at $S = 10$? (`model.target(x, eps=0.2)`; run several seeds and look at
# the 99th percentile of τ.)

# %% jupyter={"source_hidden": true} tags=["solution"]
with torch.no_grad():
    m_ucvae = runs["ucvae"]["model"]
    for eps in (0.0, 0.2):
        taus = torch.cat(
            [
                u.coupled_estimate(
                    m_ucvae.target(data.test, eps=eps),
                    10,
                    generator=torch.Generator().manual_seed(seed),
                ).tau
                for seed in range(5)
            ]
        ).double()
        print(
            f"eps={eps}: mean τ {taus.mean():.2f}, p99 {taus.quantile(0.99):.0f}, "
            f"max {taus.max():.0f}"
        )
