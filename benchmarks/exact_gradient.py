"""Gradient bias and heavy tails at one θ, against the exact gradient of a 2-D-latent VAE.

At the shipped digits VAE with a 2-D latent (``pretrained.load("iwae_2d")``), on the first N
training images (static binarisation, seed 0):

1. the grid's own error on those images (``exact.grid_error``: refinement, widening, edge);
2. the exact per-image decoder gradients ∇_θ log p_θ(x_n) (``exact``, by autograd);
3. for each method, M minibatch decoder gradients g_i of batch B, the same batches for every
   method, each paired with the batch's exact gradient e_i. From d_i = g_i − e_i:
   * ``bias2``: |E d|², the squared bias of the minibatch gradient, by the unbiased
     U-statistic Σ_{i≠j} d_i·d_j / (M(M − 1)), with its standard error; ``rel_bias`` is
     |E d| / |∇| with ∇ the mean exact gradient of the N images;
   * ``noise``: B · tr Cov(d), the estimator's own variance per image (the minibatch's data
     noise is removed by the pairing), and ``noise_x_cost``, that times its cost;
   * the tails of g: ``top1_share``, the share of Σ_i |g_i − ḡ|² carried by the largest 1% of
     minibatches; ``max_dev``, the largest |g_i − ḡ| over its median;
   * Adam's second moment after the M gradients in order: ``sqrt_v``, the mean over θ of
     √v̂ (β₂ = 0.999), as a ratio to IWAE-10's (``sqrt_v_ratio``), and the same for β₂ = 0.99
     (``sqrt_v_ratio_099``). A larger √v̂ means a shorter Adam step for the same mean gradient;
   * ``decoder_evals`` per data point and ``seconds`` per minibatch.

Methods: IWAE-S (S = 3, 10, 50); ucvae at S = 3 and 10 (k = 1, m = 2); the unbiased remedies
for heavy tails at S = 10: m = 5, and R = 2 independent estimates per image averaged (the
image repeated in the batch; cost ×2); Markovian score climbing with the inclusive encoder
after ``--msc-warmup`` visits per image (biased); and one biased variant named as such:
ucvae with its chains capped at 3 steps (``max_steps=3``: unmet pairs are truncated).

    python benchmarks/exact_gradient.py --quick     # N = 100, M = 100, B = 50; ~5 min
    python benchmarks/exact_gradient.py             # N = 1200, M = 600, B = 100
    python benchmarks/exact_gradient.py --checkpoint runs/.../phase2_oracle_0.pt --tag oracle_end
        # the same at weights written by benchmarks/exact_study.py

Writes figures/exact_gradient{_quick}.md, .csv and .png.
"""

from __future__ import annotations

import argparse
import csv
import math
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from ucvae_lite.lab import pretrained
from ucvae_lite.peers.msc import MSCMemory
from ucvae_lite.studies import exact
from ucvae_lite.studies.oracle_study import new_model
from ucvae_lite.training.data import load_dataset
from ucvae_lite.training.objectives import (
    ObjectiveConfig,
    StepContext,
    TruncationWarning,
    objective,
)
from ucvae_lite.training.runtime import figures_dir


@dataclass(frozen=True)
class Method:
    label: str
    name: str  # the objective
    cfg: ObjectiveConfig = field(default_factory=ObjectiveConfig)
    replicas: int = 1  # independent estimates per image, averaged
    unbiased: bool = True


METHODS = (
    Method("iwae-3", "iwae", ObjectiveConfig(num_samples=3), unbiased=False),
    Method("iwae-10", "iwae", ObjectiveConfig(num_samples=10), unbiased=False),
    Method("iwae-50", "iwae", ObjectiveConfig(num_samples=50), unbiased=False),
    Method("ucvae-3", "ucvae", ObjectiveConfig(num_samples=3)),
    Method("ucvae-10", "ucvae", ObjectiveConfig(num_samples=10)),
    Method("ucvae-10 m=5", "ucvae", ObjectiveConfig(num_samples=10, m=5)),
    Method("ucvae-10 R=2", "ucvae", ObjectiveConfig(num_samples=10), replicas=2),
    Method(
        "msc-10 inclusive",
        "msc",
        ObjectiveConfig(num_samples=10, encoder="inclusive"),
        unbiased=False,
    ),  # fmt: skip
    Method(
        "ucvae-10 capped at 3 steps",
        "ucvae",
        ObjectiveConfig(num_samples=10, max_steps=3),
        unbiased=False,
    ),  # fmt: skip
)


def decoder_grad(model) -> torch.Tensor:
    return torch.cat([p.grad.reshape(-1) for p in model.decoder.parameters()])


def u_stat_sq_norm(d: torch.Tensor) -> tuple[float, float]:
    """(|E d|², SE) from rows d_i: Σ_{i≠j} d_i·d_j / (M(M − 1)) and 2 sd(h_i)/√M."""
    M, total = d.shape[0], d.sum(0)
    h = (d * (total - d)).sum(-1) / (M - 1)
    return h.mean().item(), 2 * h.std().item() / math.sqrt(M)


def sqrt_v(grads: torch.Tensor, beta2: float) -> float:
    """Mean over θ of Adam's √v̂ after the rows of ``grads`` in order."""
    v = torch.zeros_like(grads[0])
    for g in grads:
        v = beta2 * v + (1 - beta2) * g.pow(2)
    return (v / (1 - beta2 ** grads.shape[0])).sqrt().mean().item()


def run_method(model, method: Method, x, exact_grads, batches, warmup: int, seed: int) -> dict:
    gen = torch.Generator().manual_seed(seed)
    memory = None
    if method.name == "msc":  # chains warmed up at this θ, `warmup` visits per image
        memory = MSCMemory.empty(x.shape[0], model.latent_dim, "digits")
        for _ in range(warmup):
            for idx in torch.arange(x.shape[0]).split(100):
                objective("msc")(model, x[idx], method.cfg, gen, StepContext(idx, memory))
    fn = objective(method.name)
    grads, evals, taus, truncated, start = [], [], [], 0, time.process_time()
    for idx in batches:
        xb, ib = x[idx], idx
        if method.replicas > 1:
            xb, ib = xb.repeat_interleave(method.replicas, 0), ib.repeat_interleave(method.replicas)
        model.zero_grad(set_to_none=True)
        with warnings.catch_warnings():  # the capped variant truncates on purpose: counted
            warnings.simplefilter("ignore", TruncationWarning)
            step = fn(model, xb, method.cfg, gen, StepContext(ib, memory))
        step.loss.backward()
        truncated += step.diagnostics.get("truncated", 0)
        taus.append(step.diagnostics.get("tau_mean", math.nan))
        grads.append(-decoder_grad(model))  # the loss is −(estimate of mean log p)
        evals.append(step.diagnostics.get("decoder_evals", method.cfg.num_samples))
    seconds = (time.process_time() - start) / len(batches)
    g = torch.stack(grads).double()
    e = torch.stack([exact_grads[idx].mean(0) for idx in batches]).double()
    d = g - e
    bias2, bias2_se = u_stat_sq_norm(d)
    grad_norm = exact_grads.double().mean(0).norm().item()
    dev = (g - g.mean(0)).pow(2).sum(-1)
    top = max(1, math.ceil(0.01 * len(batches)))
    B = batches[0].numel()
    noise = B * d.var(0).sum().item()
    cost = float(np.mean(evals)) * method.replicas
    return {
        "method": method.label,
        "unbiased": method.unbiased,
        "bias2": bias2,
        "bias2_se": bias2_se,
        "rel_bias": math.sqrt(max(bias2, 0.0)) / grad_norm,
        "grad_norm": grad_norm,
        "noise": noise,
        "decoder_evals": cost,
        "noise_x_cost": noise * cost,
        "top1_share": (dev.topk(top).values.sum() / dev.sum()).item(),
        "max_dev": (dev.max().sqrt() / dev.median().sqrt()).item(),
        "sqrt_v": sqrt_v(g, 0.999),
        "sqrt_v_099": sqrt_v(g, 0.99),
        "seconds": seconds,
        "truncated": truncated,
        "tau_mean": float(np.nanmean(taus)) if not all(map(math.isnan, taus)) else math.nan,
    }


def write(rows: list[dict], grid: dict, args, elapsed: float, tag: str) -> None:
    out = figures_dir()
    ref = next(r for r in rows if r["method"] == "iwae-10")
    for r in rows:
        r["sqrt_v_ratio"] = r["sqrt_v"] / ref["sqrt_v"]
        r["sqrt_v_ratio_099"] = r["sqrt_v_099"] / ref["sqrt_v_099"]
    with open(out / f"exact_gradient{tag}.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    threads = torch.get_num_threads()
    lines = [
        "# Gradient bias and tails at one θ, against the exact gradient"
        + (f" ({tag[1:]})" * bool(tag)),
        "",
        f"`python benchmarks/exact_gradient.py{args.command}`: {args.theta}, "
        f"N = {args.images} training images (static binarisation), "
        f"M = {args.batches} minibatches of B = {args.batch_size}, the same for every method; "
        f"{elapsed / 60:.1f} min on {threads} thread{'s' * (threads != 1)}.",
        "",
        f"Grid error on the N images: refinement {grid['refine']:.1e} nats, widening "
        f"{grid['widen']:.1e} nats, edge mass {grid['edge']:.1e} (largest over the images; "
        f"{grid['mean_points']:.0f} grid points per image on average).",
        "",
        "| method | unbiased | squared bias ± SE | bias / gradient norm | noise (per image) "
        "| decoder evals | noise × cost | top-1% share | max dev / median "
        "| √v̂ / IWAE-10 (β₂ .999) | (β₂ .99) | s / step |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['method']} | {'yes' if r['unbiased'] else 'no'} | {r['bias2']:.4f} ± "
            f"{r['bias2_se']:.4f} | {r['rel_bias']:.3f} | {r['noise']:.1f} | "
            f"{r['decoder_evals']:.1f} | {r['noise_x_cost']:.0f} | {r['top1_share']:.3f} | "
            f"{r['max_dev']:.1f} | {r['sqrt_v_ratio']:.2f} | {r['sqrt_v_ratio_099']:.2f} | "
            f"{r['seconds']:.3f} |"
        )
    lines += [
        "",
        f"|∇| (the mean exact gradient of the N images) = {rows[0]['grad_norm']:.2f}. |bias|² is "
        "the U-statistic Σ_{i≠j} d_i·d_j / (M(M − 1)) of d_i = g_i − e_i (minibatch gradient "
        "minus the same minibatch's exact gradient), so it is unbiased for the squared bias and "
        "can be negative; ± is its standard error. An unbiased method's |bias|² should be within "
        "a few SE of 0.",
    ]
    (out / f"exact_gradient{tag}.md").write_text("\n".join(lines) + "\n")
    plot(rows, out / f"exact_gradient{tag}.png")
    print("\n".join(lines))


def plot(rows: list[dict], path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels = [r["method"] for r in rows]
    y = np.arange(len(rows))
    fig, axes = plt.subplots(1, 3, figsize=(13, 0.45 * len(rows) + 1.5), sharey=True)
    colors = ["tab:green" if r["unbiased"] else "tab:gray" for r in rows]
    axes[0].barh(y, [r["bias2"] for r in rows], xerr=[2 * r["bias2_se"] for r in rows],
                 color=colors)  # fmt: skip
    axes[0].axvline(0, color="k", lw=0.8)
    axes[0].set_xlabel("squared bias |E g − ∇|² (± 2 SE)")
    axes[1].barh(y, [r["top1_share"] for r in rows], color=colors)
    axes[1].set_xlabel("share of Σ|g − ḡ|² in the top 1% of minibatches")
    axes[2].barh(y, [r["sqrt_v_ratio"] for r in rows], color=colors)
    axes[2].axvline(1, color="k", lw=0.8)
    axes[2].set_xlabel("Adam's √v̂ / IWAE-10's (β₂ = 0.999)")
    axes[0].set_yticks(y, labels)
    axes[0].invert_yaxis()
    fig.suptitle("One θ of the 2-D digits VAE, against the exact gradient (green: unbiased)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="N = 100, M = 100, B = 50")
    p.add_argument("--images", type=int, default=None, help="N (default 1200; quick 100)")
    p.add_argument("--batches", type=int, default=None, help="M (default 600; quick 100)")
    p.add_argument("--batch-size", type=int, default=None, help="B (default 100; quick 50)")
    p.add_argument("--msc-warmup", type=int, default=10, help="MSC visits per image first")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=None)
    p.add_argument(
        "--checkpoint", type=Path, default=None,
        help="weights written by exact_study (its phase-1 .pt or a run's .pt) instead of the "
        "shipped iwae_2d model",
    )  # fmt: skip
    p.add_argument("--tag", default=None, help="output name suffix (needed with --checkpoint)")
    args = p.parse_args(argv)
    if args.checkpoint is not None and not args.tag:
        p.error("--checkpoint needs --tag NAME: the outputs are exact_gradient_NAME.*")
    if args.checkpoint is not None and not args.checkpoint.is_file():
        p.error(f"--checkpoint {args.checkpoint}: no such file")
    q = args.quick
    given = [f"--{k.replace('_', '-')} {v}" for k, v in
             (("images", args.images), ("batches", args.batches), ("batch_size", args.batch_size))
             if v is not None]  # fmt: skip
    args.images = args.images or (100 if q else 1200)
    args.batches = args.batches or (100 if q else 600)
    args.batch_size = args.batch_size or (50 if q else 100)
    if not (2 <= args.batch_size <= args.images) or args.batches < 2:
        p.error("need 2 <= --batch-size <= --images and --batches >= 2")
    if args.threads:
        torch.set_num_threads(args.threads)
    start = time.perf_counter()
    torch.manual_seed(args.seed)
    if args.checkpoint is None:
        model, args.theta = (
            pretrained.load("iwae_2d")[0],
            "the shipped digits VAE with a 2-D latent",
        )
    else:
        state = torch.load(args.checkpoint, weights_only=True)
        model = new_model()
        model.load_state_dict(state.get("model", state))  # phase 1's file holds it as "model"
        args.theta = f"the 2-D digits VAE at the weights in `{args.checkpoint.name}`"
    args.command = "".join(
        f" {flag}" for flag in (
            "--quick" * q,
            *given,
            f"--checkpoint {args.checkpoint} --tag {args.tag}" if args.checkpoint else "",
        ) if flag
    )  # fmt: skip
    x = load_dataset("digits", binarization="static", seed=args.seed).train[: args.images]
    grid = {k: 0.0 for k in ("refine", "widen", "edge", "mean_points")}
    for xb in x.split(50):
        part = exact.grid_error(model, xb)
        for k in ("refine", "widen", "edge"):
            grid[k] = max(grid[k], part[k])
        grid["mean_points"] += part["mean_points"] * xb.shape[0] / x.shape[0]
    print(f"grid error: {grid}")
    exact_grads = exact.decoder_gradients(model, x, progress=True)
    g = torch.Generator().manual_seed(args.seed + 1)
    batches = [torch.randperm(args.images, generator=g)[: args.batch_size]
               for _ in range(args.batches)]  # fmt: skip
    rows = []
    for method in tqdm(METHODS, desc="methods"):
        rows.append(run_method(model, method, x, exact_grads, batches, args.msc_warmup, args.seed))
    tag = ("_quick" if q else "") + (f"_{args.tag}" if args.tag else "")
    write(rows, grid, args, time.perf_counter() - start, tag)


if __name__ == "__main__":
    main()
