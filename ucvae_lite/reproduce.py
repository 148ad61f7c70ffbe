"""Reproduce the results table: ELBO vs IWAE vs ucvae with matched settings, over seeds.

For each seed, the three objectives start from the same initialisation (same seed), use the
same S, architecture, optimiser, batches and epochs; each is then scored by the IWAE-5000
bound on the test set. Writes, under ``figures/``:

    results_<dataset>.csv / .md        test log-likelihood per objective (mean ± SE over seeds)
    learning_curves_<dataset>.png      validation log-likelihood vs epoch and vs time
    meeting_times_<dataset>.png        ucvae meeting times during training
"""

from __future__ import annotations

import csv
import math
import statistics
import time
from dataclasses import replace
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from .data import load_for_config  # noqa: E402
from .evaluate import evaluate  # noqa: E402
from .objectives import OBJECTIVES  # noqa: E402
from .train import TrainConfig, train  # noqa: E402

COLORS = {"elbo": "tab:blue", "iwae": "tab:orange", "ucvae": "tab:green"}


def run_all(
    base: TrainConfig,
    seeds: list[int],
    objectives: tuple[str, ...] = OBJECTIVES,
    eval_samples: int = 5000,
    resume: bool = False,
    progress: bool = True,
) -> list[dict]:
    """Train every (objective, seed) pair under ``base.out``/OBJECTIVE_sSEED; returns rows
    {objective, seed, test_ll, test_se, epochs, time, steps, tau_mean, tau_max, evals, history}.
    """
    data = load_for_config(base.dataset, base.data_dir, base.binarization, base.seed, base.subset)
    rows = []
    for seed in seeds:
        for obj in objectives:
            cfg = replace(base, objective=obj, seed=seed, out=f"{base.out}/{obj}_s{seed}")
            t0 = time.perf_counter()
            model, hist = train(cfg, resume=resume, progress=progress, data=data)
            res = evaluate(model, data.test.to(cfg.device), eval_samples, seed=seed)
            tau = [t for t in hist["step_tau_mean"] if math.isfinite(t)]
            rows.append(
                {
                    "objective": obj,
                    "seed": seed,
                    "test_ll": res["ll"],
                    "test_se": res["se"],
                    "epochs": hist["epoch"][-1],
                    "time": hist["time"][-1],
                    "steps": hist["steps"][-1],
                    "tau_mean": statistics.fmean(tau) if tau else float("nan"),
                    "tau_max": max(hist["step_tau_max"], default=float("nan")),
                    "evals": statistics.fmean(hist["evals"]),
                    "truncated": sum(hist["truncated"]),
                    "history": hist,
                }
            )
            print(  # one line per run, even when quiet
                f"{obj} seed {seed}: test IWAE-{eval_samples} {res['ll']:.3f} ± "
                f"{res['se']:.3f} ({time.perf_counter() - t0:.0f}s)",
                flush=True,
            )
    return rows


def summarize(rows: list[dict]) -> list[dict]:
    """Per objective: mean test LL over seeds, SE over seeds (or the test-set SE for one seed)."""
    out = []
    for obj in dict.fromkeys(r["objective"] for r in rows):
        rs = [r for r in rows if r["objective"] == obj]
        lls = [r["test_ll"] for r in rs]
        se = statistics.stdev(lls) / math.sqrt(len(lls)) if len(lls) > 1 else rs[0]["test_se"]
        out.append(
            {
                "objective": obj,
                "seeds": len(rs),
                "test_ll": statistics.fmean(lls),
                "se_seeds": se,
                "se_test": statistics.fmean(r["test_se"] for r in rs),
                "epochs": rs[0]["epochs"],
                "steps": rs[0]["steps"],
                "time_s": statistics.fmean(r["time"] for r in rs),
                "tau_mean": statistics.fmean(r["tau_mean"] for r in rs),
                "tau_max": max(r["tau_max"] for r in rs),
                "evals_per_point": statistics.fmean(r["evals"] for r in rs),
                "truncated": sum(r["truncated"] for r in rs),
            }
        )
    return out


def paired_differences(rows: list[dict], a: str = "ucvae", b: str = "iwae") -> tuple[float, float]:
    """Mean and SE over seeds of test_ll(a) − test_ll(b), paired by seed."""
    by = {(r["objective"], r["seed"]): r["test_ll"] for r in rows}
    d = [by[(a, s)] - by[(b, s)] for (o, s) in by if o == a and (b, s) in by]
    if not d:
        return float("nan"), float("nan")
    se = statistics.stdev(d) / math.sqrt(len(d)) if len(d) > 1 else float("nan")
    return statistics.fmean(d), se


def write_tables(
    rows: list[dict], dataset: str, command: str, figures: Path, eval_samples: int = 5000
) -> Path:
    """results_<dataset>.csv (one row per run) and .md (summary); returns the .md path."""
    figures.mkdir(parents=True, exist_ok=True)
    keys = [k for k in rows[0] if k != "history"]
    with open(figures / f"results_{dataset}.csv", "w", newline="") as f:
        w = csv.DictWriter(f, keys)
        w.writeheader()
        for r in rows:
            w.writerow({k: r[k] for k in keys})
    summary = summarize(rows)
    lines = [
        f"# Test log-likelihood on {dataset} (IWAE-{eval_samples} bound, nats; higher is better)",
        "",
        f"Command: `{command}`",
        "",
        "| objective | seeds | test LL (mean ± SE over seeds) | mean test-set SE | epochs | "
        "steps | train time (s) | mean τ | max τ | evals / point / step | truncated |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for s in summary:
        tau = "–" if math.isnan(s["tau_mean"]) else f"{s['tau_mean']:.2f}"
        tmax = "–" if math.isnan(s["tau_max"]) else f"{s['tau_max']:.0f}"
        lines.append(
            f"| {s['objective']} | {s['seeds']} | {s['test_ll']:.3f} ± {s['se_seeds']:.3f} | "
            f"{s['se_test']:.3f} | {s['epochs']} | {s['steps']} | {s['time_s']:.0f} | {tau} | "
            f"{tmax} | {s['evals_per_point']:.1f} | {s['truncated']} |"
        )
    for other in ("iwae", "elbo"):
        d, se = paired_differences(rows, "ucvae", other)
        if not math.isnan(d):
            lines.append("")
            lines.append(f"ucvae − {other}, paired by seed: {d:+.3f} ± {se:.3f} nats")
    path = figures / f"results_{dataset}.md"
    path.write_text("\n".join(lines) + "\n")
    return path


def plot_learning_curves(rows: list[dict], dataset: str, path: Path) -> None:
    """Validation log-likelihood against epoch (left) and training time (right)."""
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.6))
    for r in rows:
        h, c = r["history"], COLORS.get(r["objective"], "k")
        label = r["objective"] if r["seed"] == rows[0]["seed"] else None
        axes[0].plot(h["epoch"], h["val_ll"], color=c, alpha=0.8, label=label)
        axes[1].plot(h["time"], h["val_ll"], color=c, alpha=0.8, label=label)
    axes[0].set_xlabel("epoch")
    axes[1].set_xlabel("training time (s)")
    for ax in axes:
        ax.set_ylabel("validation log-likelihood (IWAE bound)")
        ax.legend()
    fig.suptitle(f"{dataset}: learning curves (one line per seed)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_meeting_times(rows: list[dict], dataset: str, path: Path) -> None:
    """ucvae meeting times per training step: batch mean and batch max."""
    fig, ax = plt.subplots(figsize=(6, 3.6))
    for r in rows:
        if r["objective"] != "ucvae":
            continue
        h = r["history"]
        ax.plot(
            h["step_tau_max"],
            color="tab:red",
            alpha=0.4,
            lw=0.7,
            label="batch max" if r["seed"] == rows[0]["seed"] else None,
        )
        ax.plot(
            h["step_tau_mean"],
            color="tab:green",
            alpha=0.8,
            lw=0.7,
            label="batch mean" if r["seed"] == rows[0]["seed"] else None,
        )
    ax.set_yscale("log")
    ax.set_xlabel("training step")
    ax.set_ylabel("meeting time τ")
    ax.set_title(f"{dataset}: coupled-chain meeting times during ucvae training")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def reproduce(
    base: TrainConfig,
    seeds: list[int],
    eval_samples: int,
    command: str,
    figures: str | Path = "figures",
    resume: bool = False,
    progress: bool = True,
) -> Path:
    """Train, evaluate, write tables and figures; returns the markdown table's path."""
    figures = Path(figures)
    rows = run_all(base, seeds, OBJECTIVES, eval_samples, resume, progress)
    md = write_tables(rows, base.dataset, command, figures, eval_samples)
    plot_learning_curves(rows, base.dataset, figures / f"learning_curves_{base.dataset}.png")
    plot_meeting_times(rows, base.dataset, figures / f"meeting_times_{base.dataset}.png")
    return md
