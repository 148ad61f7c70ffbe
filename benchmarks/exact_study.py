"""Does unbiasedness buy a better model? Training the 2-D digits VAE, scored by exact log p.

The digits VAE with a 2-D latent (64-64-64-2, tanh), on statically binarised digits (1,200
training, 200 validation, 397 test images), where ``exact`` gives log p_θ(x) and its gradient
on grids.

* **Phase 1.** IWAE-10 from initialisation (and, from the same initialisation, the ELBO and
  ucvae-10: does the ranking hold from scratch?), Adam 10⁻³, batch 100. Every
  ``--eval-every`` epochs the exact validation log-likelihood is computed; training stops
  when its best value has not improved by more than 0.01 nats over the last ``--patience``
  evaluations (or at ``--max-epochs``), and the best checkpoint is kept and scored on all
  training and test images. ``--init-seeds`` repeats phase 1 from other initialisations (on
  the same data), and the table pairs ucvae with IWAE by initialisation.
* **Phase 2.** From IWAE-10's checkpoint, each arm trains for ``--steps`` steps on the same
  minibatches for a given seed, with Adam whose learning rate decays linearly from ``--lr``
  to 0 (so every arm comes to rest). Arms (``oracle_study.ARMS``): IWAE-S and ucvae
  (k = 1, m = 2) at S = 3 and 10, IWAE-50, MSC with the inclusive encoder, and the
  *oracle*: the minibatch's exact gradient from a 61-point grid per axis
  (``exact.oracle_loss``), with the encoder trained by IWAE-10's bound as in ucvae. Then the
  remedies for ucvae-10's heavy tails that keep its expectation: m = 5; R = 2 independent
  estimates per image averaged, at twice the cost and at equal cost (``B=50``: half the
  images per step); Adam with β₂ = 0.99; and SGD with a constant step and Polyak–Ruppert
  averaging of the second half's iterates (``SGD+PR``, beside IWAE-10 trained the same way).
  Recorded: the exact log-likelihood of 200 training images at the start, half, three
  quarters and end of the run, and at the end that of all training and test images
  (accepted grids, error < 10⁻³ nats per image); decoder evaluations; CPU seconds; Adam's
  mean √v̂ over the decoder. The first seed's final weights are saved beside its record
  (``.pt``), for ``benchmarks/exact_gradient.py --checkpoint``.

Each finished run is saved under ``--out`` (JSON), and a stopped study resumes where it was.

    python benchmarks/exact_study.py --quick      # a few minutes: tiny phases, 2 seeds
    python benchmarks/exact_study.py --arms oracle --seeds 0 1 2   # one part of the study

Writes figures/exact_study{_quick}.md, .csv (one row per arm) and .png, and
figures/results_exact2d{_quick}.csv (one row per arm, seed and checkpoint), from every run
found under ``--out``.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
from pathlib import Path

import numpy as np
import torch

from ucvae_lite.studies import oracle_study as S
from ucvae_lite.studies.oracle_study import ARMS
from ucvae_lite.studies.stats import mean_and_se
from ucvae_lite.training.data import load_dataset
from ucvae_lite.training.runtime import figures_dir, runs_dir


def phase1(data, args, out: Path, name: str, init_seed: int | None = None) -> dict:
    """``oracle_study.train_until_plateau`` for ``name``, saved in ``out`` (and reused).
    ``init_seed`` (default ``--seed``) draws the initial weights and the minibatch order; the
    binarised data stay those of ``--seed``."""
    init_seed = args.seed if init_seed is None else init_seed
    suffix = "" if init_seed == args.seed else f"_init{init_seed}"
    path = out / f"phase1_{name}{suffix}.pt"
    if path.exists():
        result = torch.load(path, weights_only=True)
    else:
        result = S.train_until_plateau(
            data, name, args.max_epochs, args.eval_every, args.patience, init_seed
        )
        result["init_seed"] = init_seed
    if "train_ll" not in result:  # the kept checkpoint's exact train and test log p
        model = S.new_model()
        model.load_state_dict(result["model"])
        result["train_ll"], result["test_ll"] = (
            S.exact_ll(model, data.train),
            S.exact_ll(model, data.test),
        )
        torch.save(result, path)
    return result


def mean_se(values: list[float]) -> tuple[float, float]:
    """Mean and standard error over seeds (``stats.mean_and_se``); NaN where it has no data."""
    if len(values) < 2:
        return (float(values[0]) if values else math.nan), math.nan
    return mean_and_se(torch.tensor(values))


def phase2_run(data, start_state: dict, arm: str, seed: int, args, out: Path) -> dict:
    """``oracle_study.train_arm`` for one arm and seed; the record is saved as JSON."""
    path = out / f"phase2_{arm.replace(' ', '_')}_{seed}.json"
    if path.exists():
        return json.loads(path.read_text())
    state = path.with_suffix(".pt") if seed == args.seeds[0] else None  # θ for exact_gradient
    record = S.train_arm(
        data, start_state, arm, seed, args.steps, args.lr, args.oracle_points, args.curve_images,
        state_path=state,
    )  # fmt: skip
    path.write_text(json.dumps(record))
    return record


def phase1_lines(results: list[dict], data_seed: int) -> list[str]:
    """Phase 1 as a table, then ucvae − IWAE from the same initialisation (paired by
    initialisation seed, mean ± SE over seeds when there are several): does the ranking of
    the warm-started study hold from scratch, and how much do initialisations differ?"""
    lines = [
        "| objective | initialisation seed | best epoch (stopped) | valid log p | train log p | "
        "test log p | CPU min |",
        "|---|---|---|---|---|---|---|",
    ]
    by: dict[str, dict[int, dict]] = {}
    for p in results:
        init = p.get("init_seed", data_seed)
        by.setdefault(p["objective"], {})[init] = p
        lines.append(
            f"| {p['objective']} | {init} | {p['best_epoch']} ({p['epochs']}) | "
            f"{p['valid_ll']:.3f} | {p['train_ll']:.3f} | {p['test_ll']:.3f} | "
            f"{p['cpu_seconds'] / 60:.1f} |"
        )
    shared = sorted(set(by.get("iwae", {})) & set(by.get("ucvae", {})))
    if not shared:
        return lines
    lines += ["", "ucvae − IWAE from the same initialisation (same minibatches):", ""]
    for key in ("valid_ll", "train_ll", "test_ll"):
        d = [by["ucvae"][s][key] - by["iwae"][s][key] for s in shared]
        each = ", ".join(f"{v:+.3f}" for v in d)
        mean = ""
        if len(d) > 1:
            m, se = mean_se(d)
            mean = f"; mean {m:+.3f} ± {se:.3f}, ucvae ahead in {sum(v > 0 for v in d)}"
            mean += f" of {len(d)}"
        lines.append(f"- {key.split('_')[0]}: {each} (seeds {', '.join(map(str, shared))}){mean}")
    return lines


def phase1_found(out: Path, data_seed: int) -> list[dict]:
    """Every phase-1 result under ``out`` (without its weights), ordered by initialisation
    seed and then objective, as the table lists them."""
    order = {"iwae": 0, "elbo": 1, "ucvae": 2}
    found = []
    for path in out.glob("phase1_*.pt"):
        r = torch.load(path, weights_only=True)
        r.pop("model", None)
        r.setdefault("init_seed", data_seed)
        found.append(r)
    return sorted(found, key=lambda r: (r["init_seed"], order.get(r["objective"], 3)))


def write_checkpoint_rows(runs: list[dict], path: Path) -> None:
    """One row per (arm, S, seed, checkpoint): the step, the decoder evaluations and CPU
    seconds spent so far, the exact log p of the curve's training images; at the last
    checkpoint also the exact log p of all training and test images and Adam's √v̂."""
    fields = ["arm", "S", "seed", "step", "decoder_evals", "cpu_seconds", "curve_ll",
              "train_ll", "test_ll", "sqrt_v"]  # fmt: skip
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=fields)
        w.writeheader()
        for r in sorted(runs, key=lambda r: (list(ARMS).index(r["arm"]), r["seed"])):
            arm = ARMS[r["arm"]]  # S is the number of particles; the oracle has none
            size = "" if arm.objective == "oracle" else arm.cfg.num_samples
            for step, evals, cpu, curve_ll in r["curve"]:
                last = step == r["curve"][-1][0]
                w.writerow({
                    "arm": r["arm"], "S": size, "seed": r["seed"],
                    "step": step, "decoder_evals": evals, "cpu_seconds": cpu,
                    "curve_ll": curve_ll, "train_ll": r["train_ll"] if last else "",
                    "test_ll": r["test_ll"] if last else "", "sqrt_v": r["sqrt_v"] if last else "",
                })  # fmt: skip


def summarise(out: Path, tag: str, args) -> None:
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
            row[key], row[key + "_se"] = mean_se([by[arm][s][key] for s in seeds])
        for ref, key in (("iwae-10", "train_ll"), ("oracle", "train_ll"), ("iwae-10", "test_ll")):
            shared = [s for s in seeds if ref in by and s in by[ref]]
            d = [by[arm][s][key] - by[ref][s][key] for s in shared]
            col = f"{key.split('_')[0]}_vs_{ref}"
            row[col], row[col + "_se"] = mean_se(d)
            row[col + "_wins"] = f"{sum(v > 0 for v in d)}/{len(d)}" if d else ""
        last = [by[arm][s]["curve"] for s in seeds]
        row["last_quarter_gain"] = float(np.mean([c[-1][3] - c[-2][3] for c in last]))
        row["decoder_evals"] = float(np.mean([by[arm][s]["decoder_evals"] for s in seeds]))
        row["cpu_seconds"] = float(np.mean([by[arm][s]["cpu_seconds"] for s in seeds]))
        row["sqrt_v"] = float(np.mean([by[arm][s]["sqrt_v"] for s in seeds]))
        rows.append(row)
    fig_dir = figures_dir()
    write_checkpoint_rows(runs, fig_dir / f"results_exact2d{tag}.csv")
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
        "> 0.01 nats; the best checkpoint scored on all training and test images):",
        "",
        *phase1_lines(phase1_found(out, args.seed), args.seed),
    ]
    lines += [
        "",
        "| arm | seeds | train log p | test log p | train − IWAE-10 (wins) | train − oracle "
        "(wins) | test − IWAE-10 (wins) | last-quarter gain | decoder evals | CPU s | √v̂ |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]

    def sqrt_v(v):
        return "–" if math.isnan(v) else f"{v:.3g}"

    def pm(v, se):
        return f"{v:+.4f} ± {se:.4f}" if not math.isnan(se) else f"{v:+.4f}"

    for r in rows:
        lines.append(
            f"| {r['arm']} | {r['seeds']} | {r['train_ll']:.4f} ± {r['train_ll_se']:.4f} | "
            f"{r['test_ll']:.4f} ± {r['test_ll_se']:.4f} | "
            f"{pm(r['train_vs_iwae-10'], r['train_vs_iwae-10_se'])} "
            f"({r['train_vs_iwae-10_wins']}) | "
            f"{pm(r['train_vs_oracle'], r['train_vs_oracle_se'])} ({r['train_vs_oracle_wins']}) | "
            f"{pm(r['test_vs_iwae-10'], r['test_vs_iwae-10_se'])} ({r['test_vs_iwae-10_wins']}) | "
            f"{r['last_quarter_gain']:+.4f} | {r['decoder_evals']:.3g} | "
            f"{r['cpu_seconds']:.0f} | {sqrt_v(r['sqrt_v'])} |"
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
    """Three panels: the biased arms and the oracle against steps; ucvae and its unbiased
    remedies against steps (IWAE-10 and the oracle repeated as references); every arm against
    decoder evaluations. Each arm keeps its colour and marker in all three."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    markers = "osD^v<>pPX*hH"
    hues = [plt.get_cmap("tab20")(j) for j in (*range(0, 20, 2), *range(1, 20, 2))]
    style = {arm: (hues[i % 20], markers[i % len(markers)]) for i, arm in enumerate(arms)}
    unbiased = [a for a in arms if a.startswith("ucvae")]
    refs = [a for a in ("iwae-10", "oracle") if a in arms]
    groups = ([a for a in arms if a not in unbiased], refs + unbiased)
    fig, axes = plt.subplots(1, 3, figsize=(16, 4.8), sharey=True)
    for ax, group, title in zip(
        axes[:2],
        groups,
        ("biased gradients and the oracle", "ucvae and its unbiased remedies"),
        strict=True,
    ):
        for arm in group:
            curves = np.array([by[arm][s]["curve"] for s in sorted(by[arm])])  # [seeds, marks, 4]
            mean = curves.mean(0)
            color, marker = style[arm]
            dashed = arm in refs and group is groups[1]
            ax.plot(mean[:, 0], mean[:, 3], marker=marker, color=color, label=arm,
                    ls="--" if dashed else "-", alpha=0.6 if dashed else 1.0)  # fmt: skip
        ax.set_title(title, fontsize=10)
        ax.set_xlabel("phase-2 steps")
        ax.legend(fontsize=7.5, loc="lower right")
    for arm in arms:
        mean = np.array([by[arm][s]["curve"] for s in sorted(by[arm])]).mean(0)
        color, marker = style[arm]
        axes[2].plot(mean[1:, 1], mean[1:, 3], marker=marker, color=color)  # log axis: no 0
    axes[2].set_xscale("log")
    axes[2].set_title("every arm, against its cost", fontsize=10)
    axes[2].set_xlabel("decoder evaluations (from the first mark on)")
    axes[0].set_ylabel(f"exact log p of {curve_images} training images (nats)")
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
        "--init-seeds", nargs="+", type=int, default=[], metavar="SEED",
        help="also train the --phase1 objectives from these initialisations (same data)",
    )  # fmt: skip
    p.add_argument(
        "--phase1", nargs="+", default=["iwae", "elbo", "ucvae"],
        choices=["iwae", "elbo", "ucvae"],
        help="phase-1 objectives, from initialisation (iwae first: phase 2 starts from it)",
    )  # fmt: skip
    p.add_argument("--out", type=Path, default=None, help="runs/exact_study{_quick}")
    p.add_argument("--curve-images", type=int, default=None, help="scored along a run (200)")
    p.add_argument(
        "--subset", type=int, nargs=3, default=None, metavar=("TRAIN", "VALID", "TEST"),
        help="use the first images of each split (quick: 300 50 50)",
    )  # fmt: skip
    p.add_argument(
        "--summarise-only", action="store_true",
        help="skip phase 2 and rewrite the tables from every run under --out (the --phase1 "
        "runs asked for still train where they have no file)",
    )  # fmt: skip
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
    results += [
        phase1(data, args, out, name, s)
        for s in args.init_seeds if s != args.seed
        for name in args.phase1
    ]  # fmt: skip
    if not args.summarise_only:
        start = results[0]["model"]
        for seed in args.seeds:
            for arm in args.arms:
                phase2_run(data, start, arm, seed, args, out)
    summarise(out, tag, args)


if __name__ == "__main__":
    main()
