"""The results table: every objective with matched settings, over seeds and two budgets.

For each seed, each objective (``VARIANTS``: elbo, iwae, ucvae, ucvae with a thinned
correction, sumo, msc) starts from the same initialisation and uses the same S, architecture,
optimiser and batches; each is then scored by the IWAE-5000 bound on the test set. Two budgets
(``Budget``):

* ``steps``: the same number of epochs (optimisation steps) for every objective;
* ``decoder``: the same number of decoder evaluations (particles through the decoder, summed
  over every step: what a step pays for, see ``objectives``) for every objective; a run stops
  after the epoch in which it passes the budget. Deterministic, and the same on any machine;
* ``time``: the same seconds of optimisation steps for every objective, measured on this
  process's CPU clock with one thread (robust to other programs on the machine; a run stops
  after the epoch in which it passes the budget). Such runs are not bit-reproducible.

Writes, under ``figures/``:

    results_<dataset>.csv                one row per (objective, seed, budget)
    results_<dataset>.md                 per budget: mean ± SE over seeds, paired differences
                                         against IWAE with SEs and win counts
    learning_curves_<dataset>.png        validation log-likelihood vs epoch and vs time
    meeting_times_<dataset>.png          ucvae meeting times during training

Paired differences (same seed, same initialisation and batches) remove most of the between-
seed spread; with n seeds a difference smaller than about 2.8 × its SE (80% power at the 5%
level) cannot be resolved, and the table says so.
"""

from __future__ import annotations

import csv
import math
import statistics
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass, replace
from multiprocessing import get_context
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from ucvae_lite.training.data import load_for_config  # noqa: E402
from ucvae_lite.training.evaluate import evaluate  # noqa: E402
from ucvae_lite.training.train import TrainConfig, train  # noqa: E402

THIN_P = 0.25  # the thinned variant's correction probability unless the base config sets one
VARIANTS = {  # label -> TrainConfig overrides
    "elbo": {"objective": "elbo"},
    "iwae": {"objective": "iwae"},
    "ucvae": {"objective": "ucvae", "correction_prob": 1.0},  # every correction computed
    "ucvae-thin": {"objective": "ucvae"},  # correction_prob: the base config's (< 1) or THIN_P
    "sumo": {"objective": "sumo"},
    "msc": {"objective": "msc"},
}
COLORS = {
    "elbo": "tab:blue",
    "iwae": "tab:orange",
    "ucvae": "tab:green",
    "ucvae-thin": "tab:olive",
    "sumo": "tab:purple",
    "msc": "tab:brown",
}
EPOCH_CAP = 100_000  # the epoch cap of a time or decoder budget run (the limit binds first)
BUDGETS = ("steps", "decoder", "time")


@dataclass(frozen=True)
class Budget:
    """``kind`` "steps" (``value`` epochs), "decoder" (``value`` decoder evaluations) or
    "time" (``value`` seconds of optimisation)."""

    kind: str
    value: float

    def __post_init__(self):
        if self.kind not in BUDGETS or not self.value > 0:
            raise ValueError(
                f"a budget is ('steps', epochs > 0), ('decoder', decoder evaluations > 0) or "
                f"('time', seconds > 0), got {self}"
            )

    @property
    def label(self) -> str:
        if self.kind == "steps":
            return f"{int(self.value)} epochs"
        if self.kind == "decoder":
            return f"{self.value:.3g} decoder evaluations"
        return f"{self.value:g} s"

    def apply(self, cfg: TrainConfig) -> TrainConfig:
        if self.kind == "steps":
            return replace(cfg, epochs=int(self.value), time_limit=None, decoder_limit=None)
        if self.kind == "decoder":
            return replace(cfg, epochs=EPOCH_CAP, time_limit=None, decoder_limit=self.value)
        return replace(cfg, epochs=EPOCH_CAP, time_limit=float(self.value), clock="process")


def run_config(base: TrainConfig, variant: str, seed: int, budget: Budget) -> TrainConfig:
    """The training config of one run: the variant's overrides, the seed, the budget."""
    if variant not in VARIANTS:
        raise ValueError(f"unknown variant {variant!r}; choose from {', '.join(VARIANTS)}")
    overrides = dict(VARIANTS[variant])
    if variant == "ucvae-thin":
        p = base.correction_prob if base.correction_prob < 1.0 else THIN_P
        overrides["correction_prob"] = p
    out = f"{base.out}/{variant}_{budget.kind}_s{seed}"
    return budget.apply(replace(base, seed=seed, out=out, threads=1, **overrides))


def run_one(cfg: TrainConfig, variant: str, budget: Budget, eval_samples: int, resume: bool,
            progress: bool) -> dict:  # fmt: skip
    """Train and score one run; its row of the results CSV (plus its history)."""
    data = load_for_config(cfg.dataset, cfg.data_dir, cfg.binarization, cfg.seed, cfg.subset)
    t0 = time.perf_counter()
    model, hist = train(cfg, resume=resume, progress=progress, data=data)
    res = evaluate(model, data.test.to(cfg.device), eval_samples, seed=cfg.seed)
    tau = [t for t in hist["step_tau_mean"] if math.isfinite(t)]
    return {
        "objective": variant,
        "seed": cfg.seed,
        "budget": budget.kind,
        "budget_value": budget.value,
        "test_ll": res["ll"],
        "test_se": res["se"],
        "train_seconds": hist["train_time"][-1],
        "decoder_evals": hist["decoder_evals"][-1],
        "wall_seconds": time.perf_counter() - t0,
        "epochs": hist["epoch"][-1],
        "steps": hist["steps"][-1],
        "evals": statistics.fmean(hist["evals"]),
        "tau_mean": statistics.fmean(tau) if tau else math.nan,
        "tau_max": max(hist["step_tau_max"], default=math.nan),
        "truncated": sum(hist["truncated"]),
        "history": hist,
    }


def _run_one_from_dict(args: tuple) -> dict:
    cfg, variant, budget, eval_samples, resume = args
    return run_one(TrainConfig(**cfg), variant, Budget(**budget), eval_samples, resume, False)


def run_all(
    base: TrainConfig,
    seeds: list[int],
    variants: list[str],
    budgets: list[Budget],
    eval_samples: int = 5000,
    resume: bool = False,
    progress: bool = True,
    jobs: int = 1,
) -> list[dict]:
    """Every (variant, seed, budget) run; ``jobs`` > 1 runs that many at once (one thread each)."""
    runs = [(run_config(base, v, s, b), v, b) for s in seeds for b in budgets for v in variants]
    rows = []

    def done(row: dict) -> None:
        rows.append(row)
        print(  # one line per run, even when quiet
            f"{row['objective']} seed {row['seed']} ({row['budget']}): test IWAE-{eval_samples} "
            f"{row['test_ll']:.3f} ± {row['test_se']:.3f}, {row['steps']} steps, "
            f"{row['train_seconds']:.0f} s of steps",
            flush=True,
        )

    if jobs <= 1:
        for cfg, v, b in runs:
            done(run_one(cfg, v, b, eval_samples, resume, progress))
    else:
        tasks = [(asdict(cfg), v, asdict(b), eval_samples, resume) for cfg, v, b in runs]
        with ProcessPoolExecutor(jobs, mp_context=get_context("spawn")) as pool:
            for row in pool.map(_run_one_from_dict, tasks):
                done(row)
    return rows


def paired_differences(rows: list[dict], a: str, b: str = "iwae", budget: str | None = None):
    """Mean and SE over seeds of test_ll(a) − test_ll(b), paired by seed, and a's wins."""
    by = {(r["objective"], r["seed"], r["budget"]): r["test_ll"] for r in rows}
    d = [
        by[(a, s, bud)] - by[(b, s, bud)]
        for (o, s, bud) in by
        if o == a and (b, s, bud) in by and (budget is None or bud == budget)
    ]
    if not d:
        return math.nan, math.nan, 0, 0
    se = statistics.stdev(d) / math.sqrt(len(d)) if len(d) > 1 else math.nan
    return statistics.fmean(d), se, sum(x > 0 for x in d), len(d)


def summarize(rows: list[dict]) -> list[dict]:
    """Per (budget, objective): mean test LL and SE over seeds, the paired difference against
    IWAE with its SE and the win count, mean steps, seconds and evaluations."""
    out = []
    for budget in dict.fromkeys(r["budget"] for r in rows):
        for obj in dict.fromkeys(r["objective"] for r in rows if r["budget"] == budget):
            rs = [r for r in rows if r["objective"] == obj and r["budget"] == budget]
            lls = [r["test_ll"] for r in rs]
            se = statistics.stdev(lls) / math.sqrt(len(lls)) if len(lls) > 1 else rs[0]["test_se"]
            diff, diff_se, wins, n = paired_differences(rows, obj, "iwae", budget)
            out.append(
                {
                    "budget": budget,
                    "budget_label": Budget(budget, rs[0]["budget_value"]).label,
                    "objective": obj,
                    "seeds": len(rs),
                    "test_ll": statistics.fmean(lls),
                    "se_seeds": se,
                    "vs_iwae": diff,
                    "vs_iwae_se": diff_se,
                    "wins": wins,
                    "pairs": n,
                    "steps": statistics.fmean(r["steps"] for r in rs),
                    "train_seconds": statistics.fmean(r["train_seconds"] for r in rs),
                    "decoder_evals": statistics.fmean(r.get("decoder_evals", math.nan) for r in rs),
                    "evals": statistics.fmean(r["evals"] for r in rs),
                    "tau_max": max(r["tau_max"] for r in rs),
                    "truncated": sum(r["truncated"] for r in rs),
                }
            )
    return out


def write_tables(
    rows: list[dict], dataset: str, command: str, figures: Path, eval_samples: int = 5000
) -> Path:
    """results_<dataset>.csv (one row per run) and .md (per budget); returns the .md path."""
    figures.mkdir(parents=True, exist_ok=True)
    keys = [k for k in rows[0] if k != "history"]
    with open(figures / f"results_{dataset}.csv", "w", newline="") as f:
        w = csv.DictWriter(f, keys)
        w.writeheader()
        for r in rows:
            w.writerow({k: r[k] for k in keys})
    lines = [
        f"# Test log-likelihood on {dataset} (IWAE-{eval_samples} bound, nats; higher is better)",
        "",
        f"Command: `{command}`",
    ]
    summary = summarize(rows)
    for budget in dict.fromkeys(s["budget"] for s in summary):
        ss = [s for s in summary if s["budget"] == budget]
        what = {
            "steps": "the same epochs",
            "decoder": "the same decoder evaluations",
            "time": "the same CPU seconds of steps",
        }[budget]
        lines += [
            "",
            f"## Budget: {ss[0]['budget_label']} ({what} for every objective)",
            "",
            "| objective | seeds | test LL (mean ± SE) | − IWAE, paired (± SE) | wins vs IWAE | "
            "steps | s of steps | decoder evals | evals / point / step | max τ | truncated |",
            "|---|---|---|---|---|---|---|---|---|---|---|",
        ]
        for s in ss:
            vs = "–" if s["objective"] == "iwae" else f"{s['vs_iwae']:+.3f} ± {s['vs_iwae_se']:.3f}"
            wins = "–" if s["objective"] == "iwae" else f"{s['wins']}/{s['pairs']}"
            tmax = "–" if math.isnan(s["tau_max"]) else f"{s['tau_max']:.0f}"
            lines.append(
                f"| {s['objective']} | {s['seeds']} | {s['test_ll']:.3f} ± {s['se_seeds']:.3f} | "
                f"{vs} | {wins} | {s['steps']:.0f} | {s['train_seconds']:.0f} | "
                f"{s['decoder_evals']:.3g} | {s['evals']:.1f} | {tmax} | {s['truncated']} |"
            )
        ses = [
            s["vs_iwae_se"]
            for s in ss
            if s["objective"] != "iwae" and math.isfinite(s["vs_iwae_se"])
        ]
        if ses:
            lines += [
                "",
                f"Resolution: paired SEs are {min(ses):.3f}–{max(ses):.3f} nats, so differences "
                f"smaller than about {2.8 * min(ses):.2f}–{2.8 * max(ses):.2f} nats (2.8 SE: 80% "
                "power at the 5% level) cannot be resolved with these seeds.",
            ]
    path = figures / f"results_{dataset}.md"
    path.write_text("\n".join(lines) + "\n")
    return path


def plot_learning_curves(rows: list[dict], dataset: str, path: Path) -> None:
    """Validation log-likelihood against epoch (left) and training time (right), steps budget."""
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.8))
    shown = [r for r in rows if r["budget"] == "steps"] or rows
    first_seed = shown[0]["seed"]
    for r in shown:
        h, c = r["history"], COLORS.get(r["objective"], "k")
        label = r["objective"] if r["seed"] == first_seed else None
        axes[0].plot(h["epoch"], h["val_ll"], color=c, alpha=0.7, lw=0.8, label=label)
        axes[1].plot(h["train_time"], h["val_ll"], color=c, alpha=0.7, lw=0.8, label=label)
    axes[0].set_xlabel("epoch")
    axes[1].set_xlabel("seconds of optimisation steps")
    lows = [min(r["history"]["val_ll"][len(r["history"]["val_ll"]) // 10 :]) for r in shown]
    for ax in axes:
        ax.set_ylabel("validation log-likelihood")
        ax.set_ylim(bottom=min(lows) - 0.5)
        ax.legend(fontsize=7)
    fig.suptitle(f"{dataset}: learning curves (one line per seed)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_meeting_times(rows: list[dict], dataset: str, path: Path) -> None:
    """ucvae meeting times per training step: batch mean and batch max (steps budget)."""
    fig, ax = plt.subplots(figsize=(6, 3.6))
    ucvae = [r for r in rows if r["objective"] == "ucvae" and r["budget"] == "steps"]
    for i, r in enumerate(ucvae):
        h = r["history"]
        ax.plot(
            h["step_tau_max"],
            color="tab:red",
            alpha=0.4,
            lw=0.7,
            label="batch max" if i == 0 else None,
        )
        ax.plot(
            h["step_tau_mean"],
            color="tab:green",
            alpha=0.8,
            lw=0.7,
            label="batch mean" if i == 0 else None,
        )
    ax.set_yscale("log")
    ax.set_xlabel("training step")
    ax.set_ylabel("meeting time τ")
    ax.set_title(f"{dataset}: coupled-chain meeting times during ucvae training", fontsize=10)
    if ucvae:
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
    variants: list[str] | None = None,
    budgets: list[Budget] | None = None,
    jobs: int = 1,
) -> Path:
    """Train, evaluate, write tables and figures; returns the markdown table's path."""
    figures = Path(figures)
    variants = list(VARIANTS) if variants is None else variants
    budgets = [Budget("steps", base.epochs)] if budgets is None else budgets
    rows = run_all(base, seeds, variants, budgets, eval_samples, resume, progress, jobs)
    md = write_tables(rows, base.dataset, command, figures, eval_samples)
    plot_learning_curves(rows, base.dataset, figures / f"learning_curves_{base.dataset}.png")
    plot_meeting_times(rows, base.dataset, figures / f"meeting_times_{base.dataset}.png")
    return md
