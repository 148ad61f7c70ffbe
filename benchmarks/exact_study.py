"""Does unbiasedness buy a better model? Training the 2-D digits VAE, scored by exact log p.

The digits VAE with a 2-D latent (64-64-64-2, tanh), on statically binarised digits (1,200
training, 200 validation, 397 test images), where ``exact`` gives log p_θ(x) and its gradient
on grids.

* **Phase 1.** IWAE-10 (and the ELBO, for reference) from initialisation, Adam 10⁻³, batch
  100. Every ``--eval-every`` epochs the exact validation log-likelihood is computed; training
  stops when its best value has not improved by more than 0.01 nats over the last
  ``--patience`` evaluations (or at ``--max-epochs``), and the best checkpoint is kept.
* **Phase 2.** From IWAE-10's checkpoint, each arm trains for ``--steps`` steps with Adam
  whose learning rate decays linearly from ``--lr`` to 0 (so every arm comes to rest), on
  the same minibatches for a given seed. Arms: IWAE-S and ucvae (k = 1, m = 2) at S = 3 and
  10, IWAE-50, MSC with the inclusive encoder, and the *oracle*: the minibatch's exact
  gradient from a 61-point grid per axis (``exact.oracle_loss``), with the encoder trained
  by IWAE-10's bound as in ucvae; and three remedies for ucvae-10's heavy tails that keep
  its expectation: m = 5, R = 2 independent estimates per image averaged, and Adam with
  β₂ = 0.99. Recorded: the exact log-likelihood of 200 training images
  at the start, half, three quarters and end of the run, and at the end that of all
  training and test images (accepted grids, error < 10⁻³ nats per image); decoder
  evaluations; CPU seconds; Adam's mean √v̂ over the decoder.

Each finished run is saved under ``--out`` (JSON), and a stopped study resumes where it was.

    python benchmarks/exact_study.py --quick      # a few minutes: tiny phases, 2 seeds
    python benchmarks/exact_study.py --arms oracle --seeds 0 1 2   # one part of the study

Writes figures/exact_study{_quick}.md, .csv and .png from every run found under ``--out``.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import time
import warnings
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from ucvae_lite import exact
from ucvae_lite.data import load_dataset
from ucvae_lite.iwae import iwae_bound
from ucvae_lite.msc import MSCMemory
from ucvae_lite.objectives import ObjectiveConfig, StepContext, TruncationWarning, objective
from ucvae_lite.runtime import figures_dir, runs_dir
from ucvae_lite.vae import VAE

ARMS = {  # name: (objective, its settings, independent estimates per image, Adam's β₂)
    "iwae-3": ("iwae", ObjectiveConfig(num_samples=3), 1, 0.999),
    "ucvae-3": ("ucvae", ObjectiveConfig(num_samples=3), 1, 0.999),
    "iwae-10": ("iwae", ObjectiveConfig(num_samples=10), 1, 0.999),
    "ucvae-10": ("ucvae", ObjectiveConfig(num_samples=10), 1, 0.999),
    "iwae-50": ("iwae", ObjectiveConfig(num_samples=50), 1, 0.999),
    "msc-10 inclusive": ("msc", ObjectiveConfig(num_samples=10, encoder="inclusive"), 1, 0.999),
    "oracle": ("oracle", ObjectiveConfig(num_samples=10), 1, 0.999),
    # the unbiased remedies for heavy tails (their expectation is ucvae-10's)
    "ucvae-10 m=5": ("ucvae", ObjectiveConfig(num_samples=10, m=5), 1, 0.999),
    "ucvae-10 R=2": ("ucvae", ObjectiveConfig(num_samples=10), 2, 0.999),
    "ucvae-10 β₂=0.99": ("ucvae", ObjectiveConfig(num_samples=10), 1, 0.99),
}


def new_model() -> VAE:
    return VAE(64, (64, 64), 2, activation="tanh")


def exact_ll(model: VAE, x: torch.Tensor) -> float:
    """Mean exact log p_θ(x) over the rows of x, on accepted grids."""
    return exact.log_likelihoods(model, x).mean().item()


def oracle_step(model: VAE, x, cfg: ObjectiveConfig, gen, n: int) -> tuple[torch.Tensor, float]:
    """The oracle's loss: the grid's exact −mean log p for θ; IWAE-S for φ with θ held fixed."""
    q = model.proposal(x)
    z = q.sample(cfg.num_samples, gen)
    enc = -iwae_bound(model.log_joint(x, z, detach_decoder=True) - q.log_prob(z)).mean()
    return exact.oracle_loss(model, x, n) + enc, float(n * n)


def decoder_sqrt_v(model: VAE, opt: torch.optim.Adam) -> float:
    """Mean over the decoder's parameters of Adam's bias-corrected √v̂."""
    values, beta2 = [], opt.param_groups[0]["betas"][1]
    for p in model.decoder.parameters():
        state = opt.state.get(p, {})
        if "exp_avg_sq" in state:
            t = float(state["step"])
            values.append((state["exp_avg_sq"] / (1 - beta2**t)).sqrt().reshape(-1))
    return torch.cat(values).mean().item() if values else math.nan


def phase1(data, args, out: Path, name: str) -> dict:
    """Train ``name`` (iwae or elbo) until the exact validation log p stops improving."""
    path = out / f"phase1_{name}.pt"
    if path.exists():
        return torch.load(path, weights_only=True)
    torch.manual_seed(args.seed)
    model = new_model()
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    gen, data_gen = torch.Generator().manual_seed(1), torch.Generator().manual_seed(2)
    cfg = ObjectiveConfig(num_samples=10)
    best, history, since, start = (-math.inf, 0, None), [], 0, time.process_time()
    bar = tqdm(range(1, args.max_epochs + 1), desc=f"phase 1 {name}")
    for epoch in bar:
        for idx in torch.randperm(len(data.train), generator=data_gen).split(100):
            loss = objective(name)(model, data.train[idx], cfg, gen).loss
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        if epoch % args.eval_every:
            continue
        ll = exact_ll(model, data.valid)
        history.append((epoch, ll))
        bar.set_postfix(valid=f"{ll:.3f}", best=f"{best[0]:.3f}")
        if ll > best[0] + 0.01:
            best, since = (ll, epoch, {k: v.clone() for k, v in model.state_dict().items()}), 0
        else:
            since += 1
            if since >= args.patience:
                break
    result = {
        "objective": name,
        "best_epoch": best[1],
        "valid_ll": best[0],
        "epochs": epoch,
        "history": history,
        "cpu_seconds": time.process_time() - start,
        "model": best[2],
    }
    torch.save(result, path)
    return result


def phase2_run(data, start_state: dict, arm: str, seed: int, args, out: Path) -> dict:
    """One arm from the phase-1 checkpoint, one seed; the record is saved as JSON."""
    path = out / f"phase2_{arm.replace(' ', '_')}_{seed}.json"
    if path.exists():
        return json.loads(path.read_text())
    name, cfg, replicas, beta2 = ARMS[arm]
    torch.manual_seed(seed)
    model = new_model()
    model.load_state_dict(start_state)
    opt = torch.optim.Adam(model.parameters(), lr=args.lr, betas=(0.9, beta2))
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda t: max(0.0, 1 - t / args.steps))
    gen, data_gen = torch.Generator().manual_seed(100 + seed), torch.Generator().manual_seed(seed)
    memory = MSCMemory.empty(len(data.train), 2, "digits") if name == "msc" else None
    curve_x = data.train[: args.curve_images]
    marks = {0, args.steps // 2, (3 * args.steps) // 4, args.steps}
    curve, decoder_evals, cpu, step = [], 0.0, 0.0, 0
    order = iter(())
    with tqdm(total=args.steps, desc=f"{arm} seed {seed}", leave=False) as bar:
        while step <= args.steps:
            if step in marks:
                curve.append((step, decoder_evals, cpu, exact_ll(model, curve_x)))
            if step == args.steps:
                break
            idx = next(order, None)
            if idx is None:
                order = iter(torch.randperm(len(data.train), generator=data_gen).split(100))
                idx = next(order)
            x, tick = data.train[idx], time.process_time()
            if replicas > 1:  # R independent estimates per image, averaged by the mean loss
                x, idx = x.repeat_interleave(replicas, 0), idx.repeat_interleave(replicas)
            if name == "oracle":
                loss, evals = oracle_step(model, x, cfg, gen, args.oracle_points)
            else:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore", TruncationWarning)
                    s = objective(name)(model, x, cfg, gen, StepContext(idx, memory))
                loss, evals = s.loss, s.diagnostics.get("decoder_evals", cfg.num_samples)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            cpu += time.process_time() - tick
            decoder_evals += evals * x.shape[0]  # x holds the R replicas
            step += 1
            bar.update()
    record = {
        "arm": arm,
        "seed": seed,
        "steps": args.steps,
        "train_ll": exact_ll(model, data.train),
        "test_ll": exact_ll(model, data.test),
        "curve": curve,
        "decoder_evals": decoder_evals,
        "cpu_seconds": cpu,
        "sqrt_v": decoder_sqrt_v(model, opt),
    }
    path.write_text(json.dumps(record))
    return record


def summarise(out: Path, tag: str, phase1_results: list[dict], args) -> None:
    runs = [json.loads(p.read_text()) for p in sorted(out.glob("phase2_*.json"))]
    if not runs:
        return
    by = {}
    for r in runs:
        by.setdefault(r["arm"], {})[r["seed"]] = r
    arms = [a for a in ARMS if a in by]
    rows = []
    for arm in arms:
        seeds = sorted(by[arm])
        row = {"arm": arm, "seeds": len(seeds)}
        for key in ("train_ll", "test_ll"):
            v = np.array([by[arm][s][key] for s in seeds])
            row[key] = v.mean()
            row[key + "_se"] = v.std(ddof=1) / math.sqrt(len(v)) if len(v) > 1 else math.nan
        for ref in ("iwae-10", "oracle"):
            shared = [s for s in seeds if ref in by and s in by[ref]]
            d = np.array([by[arm][s]["train_ll"] - by[ref][s]["train_ll"] for s in shared])
            row[f"vs_{ref}"] = d.mean() if len(d) else math.nan
            row[f"vs_{ref}_se"] = d.std(ddof=1) / math.sqrt(len(d)) if len(d) > 1 else math.nan
            row[f"vs_{ref}_wins"] = f"{int((d > 0).sum())}/{len(d)}" if len(d) else ""
        last = [by[arm][s]["curve"] for s in seeds]
        row["last_quarter_gain"] = float(np.mean([c[-1][3] - c[-2][3] for c in last]))
        row["decoder_evals"] = float(np.mean([by[arm][s]["decoder_evals"] for s in seeds]))
        row["cpu_seconds"] = float(np.mean([by[arm][s]["cpu_seconds"] for s in seeds]))
        row["sqrt_v"] = float(np.mean([by[arm][s]["sqrt_v"] for s in seeds]))
        rows.append(row)
    fig_dir = figures_dir()
    with open(fig_dir / f"exact_study{tag}.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    lines = [
        "# Exact log-likelihoods after training the 2-D digits VAE" + " (quick)" * bool(tag),
        "",
        f"`python benchmarks/exact_study.py{' --quick' if tag else ''}` (phase 2: "
        f"{args.steps} steps, Adam {args.lr:g} decaying linearly to 0, batch 100, oracle grid "
        f"{args.oracle_points}² points per image). Exact log p in nats per image (accepted "
        "grids, < 10⁻³ nats per image).",
        "",
        "Phase 1 (exact validation log p every "
        f"{args.eval_every} epochs; stop after {args.patience} evaluations without a gain "
        "> 0.01 nats):",
        "",
    ]
    for p in phase1_results:
        lines.append(
            f"- {p['objective']}: best exact validation log p {p['valid_ll']:.3f} at epoch "
            f"{p['best_epoch']} (stopped at {p['epochs']}; {p['cpu_seconds'] / 60:.1f} CPU min)"
        )
    lines += [
        "",
        "| arm | seeds | train log p | test log p | train − IWAE-10 (wins) | train − oracle "
        "(wins) | last-quarter gain | decoder evals | CPU s | √v̂ |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]

    def pm(v, se):
        return f"{v:+.4f} ± {se:.4f}" if not math.isnan(se) else f"{v:+.4f}"

    for r in rows:
        lines.append(
            f"| {r['arm']} | {r['seeds']} | {r['train_ll']:.4f} ± {r['train_ll_se']:.4f} | "
            f"{r['test_ll']:.4f} ± {r['test_ll_se']:.4f} | "
            f"{pm(r['vs_iwae-10'], r['vs_iwae-10_se'])} ({r['vs_iwae-10_wins']}) | "
            f"{pm(r['vs_oracle'], r['vs_oracle_se'])} ({r['vs_oracle_wins']}) | "
            f"{r['last_quarter_gain']:+.4f} | {r['decoder_evals']:.3g} | "
            f"{r['cpu_seconds']:.0f} | {r['sqrt_v']:.3g} |"
        )
    lines += [
        "",
        "Differences are paired by seed (the same minibatches) and the SE is over seeds. "
        f"'last-quarter gain' is the change of the exact log p of {args.curve_images} training "
        "images over the run's last quarter: near 0 when the arm has come to rest.",
    ]
    (fig_dir / f"exact_study{tag}.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    plot(by, arms, fig_dir / f"exact_study{tag}.png", args.curve_images)


def plot(by: dict, arms: list[str], path: Path, curve_images: int) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(12, 4.2), sharey=True)
    for i, arm in enumerate(arms):
        curves = np.array([by[arm][s]["curve"] for s in sorted(by[arm])])  # [seeds, marks, 4]
        mean = curves.mean(0)
        for ax, col in ((axes[0], 0), (axes[1], 1)):
            ax.plot(mean[:, col], mean[:, 3], marker="o", color=f"C{i}", label=arm)
    axes[0].set_xlabel("phase-2 steps")
    axes[1].set_xlabel("decoder evaluations")
    axes[1].set_xscale("log")
    axes[0].set_ylabel(f"exact log p of {curve_images} training images (nats)")
    axes[0].legend(fontsize=8)
    fig.suptitle("Warm-started from IWAE-10: where each gradient takes the model (mean of seeds)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="tiny phases, 2 seeds: a few minutes")
    p.add_argument(
        "--arms", nargs="+", default=list(ARMS), choices=list(ARMS), metavar="ARM",
        help="default: all of " + ", ".join(ARMS),
    )  # fmt: skip
    p.add_argument("--seeds", nargs="+", type=int, default=None)
    p.add_argument("--steps", type=int, default=None, help="phase-2 steps (default 600)")
    p.add_argument("--lr", type=float, default=1e-3, help="phase-2 initial learning rate")
    p.add_argument("--oracle-points", type=int, default=61, help="oracle grid points per axis")
    p.add_argument("--max-epochs", type=int, default=None, help="phase 1 (default 3000)")
    p.add_argument("--eval-every", type=int, default=None, help="phase 1 (default 25 epochs)")
    p.add_argument("--patience", type=int, default=8, help="phase 1 evaluations")
    p.add_argument("--seed", type=int, default=0, help="phase 1's seed")
    p.add_argument(
        "--phase1", nargs="+", default=["iwae", "elbo"], choices=["iwae", "elbo"],
        help="phase-1 objectives (iwae first: phase 2 starts from it)",
    )  # fmt: skip
    p.add_argument("--out", type=Path, default=None, help="runs/exact_study{_quick}")
    p.add_argument("--curve-images", type=int, default=None, help="scored along a run (200)")
    p.add_argument(
        "--subset", type=int, nargs=3, default=None, metavar=("TRAIN", "VALID", "TEST"),
        help="use the first images of each split (quick: 300 50 50)",
    )  # fmt: skip
    p.add_argument("--summarise-only", action="store_true")
    p.add_argument("--threads", type=int, default=None)
    args = p.parse_args(argv)
    q = args.quick
    args.seeds = args.seeds if args.seeds is not None else ([0, 1] if q else [0, 1, 2])
    args.steps = args.steps or (40 if q else 600)
    args.max_epochs = args.max_epochs or (60 if q else 3000)
    args.eval_every = args.eval_every or (20 if q else 25)
    args.curve_images = args.curve_images or (50 if q else 200)
    if q:
        args.oracle_points = min(args.oracle_points, 21)
    if args.phase1[0] != "iwae":
        p.error("--phase1 must start with iwae: phase 2 starts from its checkpoint")
    if args.steps < 4 or args.oracle_points < 3 or args.oracle_points % 2 == 0:
        p.error("need --steps >= 4 and an odd --oracle-points >= 3")
    if args.threads:
        torch.set_num_threads(args.threads)
    tag = "_quick" if q else ""
    out = args.out or runs_dir() / f"exact_study{tag}"
    out.mkdir(parents=True, exist_ok=True)
    data = load_dataset("digits", binarization="static", seed=args.seed)
    subset = args.subset or ((300, 50, 50) if q else None)
    if subset is not None:
        if min(subset) < 1 or subset[0] < 100:
            p.error("--subset needs at least 100 training images (one batch) and 1 of the others")
        data = data.subset(*subset)
        args.curve_images = min(args.curve_images, subset[0])
    results = [phase1(data, args, out, name) for name in args.phase1]
    if not args.summarise_only:
        start = results[0]["model"]
        for seed in args.seeds:
            for arm in args.arms:
                phase2_run(data, start, arm, seed, args, out)
    summarise(out, tag, [{k: v for k, v in r.items() if k != "model"} for r in results], args)


if __name__ == "__main__":
    main()
