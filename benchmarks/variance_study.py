"""When is the unbiased gradient practical? Meeting times and gradient variance per compute.

For VAEs trained briefly with each setting, on a fixed set of test images, measures per
setting (``ucvae_lite.studies.practical``):

* the meeting time τ over all chains (mean, median, p99, max, Hill tail index) and its
  survival against the degenerate-weights 1/t law;
* the importance-weight diagnostics: median within-set ESS/S and median PSIS k̂ (1000 draws);
* the total variance over decoder parameters θ of one gradient sample, averaged over images,
  for ucvae (H_{k:m}), IWAE at the same S, and IWAE at the S that costs as much as ucvae
  (S' = ucvae's mean log-weight evaluations, rounded); cost = log-weight evaluations.

``work_ratio`` = (variance × cost of ucvae) / (variance × cost of IWAE-S): how many times more
compute ucvae needs for the same gradient variance (lower is better; 1 = parity). It ignores
IWAE's bias, which ucvae removes; ``ratio_same_cost`` compares ucvae with IWAE-S' at equal cost.
Levers: latent dimension, encoder family (diagonal / full-covariance Gaussian / a 4-layer
affine-coupling flow on the diagonal Gaussian), encoder
objective (IWAE bound / inclusive KL, both trained with the ucvae decoder gradient), S, (k, m).
Every chain is run to its meeting time (step cap 20,000: chains hitting it are *counted* in
the ``truncated`` column, never dropped silently).

    python benchmarks/variance_study.py --quick            # digits, a subset of the levers
    python benchmarks/variance_study.py                    # all levers; MNIST too if installed

Writes figures/variance_study{_mnist}{_quick}.csv and .md, figures/variance_study_tau{...}.png
and figures/variance_study_work{...}.png (``_mnist`` when run with ``--datasets mnist``).
"""

from __future__ import annotations

import argparse
import csv
import math
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch

from ucvae_lite.lab.plots import viz
from ucvae_lite.studies import practical as P
from ucvae_lite.training.data import load_dataset
from ucvae_lite.training.evaluate import iwae_log_likelihood
from ucvae_lite.training.train import TrainConfig, train

ROOT = Path(__file__).resolve().parents[1]
REJUVENATION_SCALES = (0.1, 1.0)  # random-walk scales, in units of the encoder's σ_φ(x)
FLOW_LAYERS = 4  # the "flow" encoder family: 4 conditional affine coupling layers (flows.py)
LEVERS = ("latent_dim", "encoder_family", "encoder_objective", "S", "k_m", "rejuvenation")


@dataclass(frozen=True)
class ModelSpec:
    """How one VAE of the study is trained (briefly)."""

    dataset: str = "digits"
    latent_dim: int = 5
    covariance: str = "diag"  # "diag", "full", or "flow" (diag + FLOW_LAYERS coupling layers)
    objective: str = "iwae"  # the training objective (S = 10 throughout)
    encoder: str = "iwae"  # for objective="ucvae": the encoder's objective

    @property
    def name(self) -> str:
        obj = self.objective if self.objective != "ucvae" else f"ucvae-{self.encoder}"
        return f"{self.dataset}-d{self.latent_dim}-{self.covariance}-{obj}"


@dataclass(frozen=True)
class Setting:
    """One row: a lever, the model it runs on, and the estimator's S, k, m."""

    lever: str
    model: ModelSpec
    num_samples: int = 10
    k: int = 1
    m: int = 2
    rejuvenate: float | None = None  # MH move on the references, scale c × σ_φ(x) (off: None)


@dataclass
class Plan:
    settings: list[Setting] = field(default_factory=list)
    epochs: dict = field(default_factory=dict)  # dataset -> training epochs
    images: int = 10
    replicates: int = 100


def make_plan(quick: bool, datasets: list[str]) -> Plan:
    plan = Plan()
    for ds in datasets:
        mnist = ds != "digits"
        base = ModelSpec(ds, 5 if not mnist else 50)
        dims = [2, 5, 10, 20, 50]
        km = [(0, 0), (1, 2), (2, 4), (4, 8)]
        sizes = [5, 10, 50]
        full_dims = [5, 20]
        enc_dims = [5]
        if not quick:
            km = [(k, m) for k in (0, 1, 2, 4) for m in sorted({k, 2 * k, 4 * k})]
            sizes = [5, 10, 50, 100, 500]
            full_dims = dims
            enc_dims = [5, 20, 50]
        if mnist:
            dims, full_dims, enc_dims = [5, 10, 20, 50], [10], [50]
            sizes = [10, 50] if quick else [5, 10, 50, 100, 500]
        plan.epochs[ds] = (40 if quick else 150) if not mnist else (2 if quick else 10)
        for d in dims:
            plan.settings.append(Setting("latent_dim", ModelSpec(ds, d)))
        for d in full_dims:
            for family in ("full", "flow"):
                plan.settings.append(Setting("encoder_family", ModelSpec(ds, d, family)))
        for d in enc_dims:
            for enc in ("iwae", "inclusive"):
                spec = ModelSpec(ds, d, objective="ucvae", encoder=enc)
                plan.settings.append(Setting("encoder_objective", spec))
        for S in sizes:
            if S != 10:
                plan.settings.append(Setting("S", base, num_samples=S))
        for k, m in km:
            if (k, m) != (1, 2):
                plan.settings.append(Setting("k_m", base, k=k, m=m))
        for c in REJUVENATION_SCALES:
            plan.settings.append(Setting("rejuvenation", base, rejuvenate=c))
    plan.images = 10 if quick else 40
    plan.replicates = 100 if quick else 200
    return plan


def train_model(spec: ModelSpec, epochs: int, data, seed: int, quiet: bool):
    with tempfile.TemporaryDirectory() as tmp:
        cfg = TrainConfig(
            dataset=spec.dataset,
            objective=spec.objective,
            num_samples=10,
            k=1,
            m=2,
            encoder=spec.encoder,
            latent_dim=spec.latent_dim,
            covariance="diag" if spec.covariance == "flow" else spec.covariance,
            flow_layers=FLOW_LAYERS if spec.covariance == "flow" else 0,
            epochs=epochs,
            seed=seed,
            val_samples=50,
            threads=1,
            out=tmp,
            degenerate="ignore",  # the study measures the degenerate regime on purpose
        )
        t0 = time.perf_counter()
        model, _ = train(cfg, progress=not quiet, data=data)
    return model.eval(), time.perf_counter() - t0


def measure(model, x: torch.Tensor, s: Setting, plan: Plan, seed: int) -> tuple[dict, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    t0 = time.perf_counter()
    diag = P.weight_diagnostics(model, x, s.num_samples, generator=g)
    comps = [
        P.compare(
            model, xi, s.num_samples, s.k, s.m, plan.replicates, generator=g,
            rejuvenate=s.rejuvenate,
        )
        for xi in x
    ]  # fmt: skip
    row = P.summarise(comps)
    row["median_ess_frac"] = diag["median_ess_frac"]
    row["median_khat"] = diag["median_khat"]
    row["seconds"] = time.perf_counter() - t0
    tau = torch.cat([c.ucvae.tau for c in comps])
    return row, tau


COLUMNS = [
    "lever", "dataset", "latent_dim", "covariance", "train", "S", "k", "m", "rejuvenate",
    "test_ll",
    "median_ess_frac", "median_khat", "tau_mean", "tau_median", "tau_p99", "tau_max",
    "tau_tail_index", "truncated", "evals_ucvae", "matched_s", "var_ucvae", "var_iwae",
    "var_iwae_matched", "work_ratio", "work_ratio_median_image", "ratio_same_cost",
    "ratio_same_cost_median_image", "train_seconds", "seconds",
]  # fmt: skip


def fmt(v) -> str:
    if v is None:
        return ""
    if isinstance(v, float):
        if math.isinf(v) or math.isnan(v):
            return str(v)
        return f"{v:.4g}"
    return str(v)


def table(rows: list[dict]) -> str:
    cols = [
        ("lever", "lever"), ("setting", None), ("test LL", "test_ll"),
        ("ESS/S", "median_ess_frac"), ("k̂", "median_khat"), ("mean τ", "tau_mean"),
        ("p99 τ", "tau_p99"), ("max τ", "tau_max"), ("tail α", "tau_tail_index"),
        ("evals", "evals_ucvae"), ("Var×cost vs IWAE-S", "work_ratio"),
        ("(median image)", "work_ratio_median_image"), ("Var vs IWAE-S' (S')", None),
    ]  # fmt: skip
    lines = ["| " + " | ".join(c for c, _ in cols) + " |", "|" + "---|" * len(cols)]
    for r in rows:
        setting = (
            f"d={r['latent_dim']} {r['covariance']} {r['train']} S={r['S']} k,m={r['k']},{r['m']}"
        )
        if r["rejuvenate"] is not None:
            setting += f" MH {r['rejuvenate']}σ"
        cells = []
        for name, key in cols:
            if name == "setting":
                cells.append(setting)
            elif key is None:
                cells.append(f"{r['ratio_same_cost']:.3g} ({r['matched_s']})")
            elif key == "test_ll":
                cells.append(f"{r[key]:.2f}")
            elif key in ("tau_max",):
                cells.append(f"{int(r[key])}")
            elif isinstance(r[key], float):
                cells.append(f"{r[key]:.3g}")
            else:
                cells.append(str(r[key]))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def figures(rows: list[dict], taus: list[torch.Tensor], suffix: str, out: Path) -> list[Path]:
    paths = []
    ds0 = rows[0]["dataset"]

    def pick(lever: str) -> list:
        return [
            (r, t)
            for r, t in zip(rows, taus, strict=True)
            if r["lever"] == lever and r["dataset"] == ds0
        ]

    # τ survival against the 1/t law.
    fig = viz.new_figure(ncols=4, size=(4.2, 3.4))
    lat = pick("latent_dim")
    viz.survival_vs_degenerate(
        fig.axes[0], {f"d={r['latent_dim']}": t for r, t in lat}, 10, f"{ds0}: latent dimension"
    )
    enc = [(r, t) for r, t in lat if r["latent_dim"] in (5, 20)] + pick("encoder_family")
    enc += pick("encoder_objective")
    viz.survival_vs_degenerate(
        fig.axes[1],
        {f"d={r['latent_dim']} {r['covariance']} {r['train']}": t for r, t in enc},
        10,
        "encoder family / objective",
    )
    # The S, (k, m) and rejuvenation levers vary the base model (d = 5 digits, d = 50 MNIST).
    d0 = (pick("S") or pick("k_m") or pick("rejuvenation") or lat)[0][0]["latent_dim"]
    base = [(r, t) for r, t in lat if r["latent_dim"] == d0] + pick("S")
    base.sort(key=lambda rt: rt[0]["S"])
    viz.survival_vs_degenerate(
        fig.axes[2],
        {f"S={r['S']}": t for r, t in base},
        {f"S={r['S']}": r["S"] for r, _ in base},
        f"S (d={d0}, k,m=1,2)",
    )
    rejuv = [(r, t) for r, t in base if r["S"] == 10] + pick("rejuvenation")
    viz.survival_vs_degenerate(
        fig.axes[3],
        {("no MH move" if r["rejuvenate"] is None else f"MH {r['rejuvenate']}σ"): t
         for r, t in rejuv},
        10,
        f"rejuvenation (d={rejuv[0][0]['latent_dim']})",
    )  # fmt: skip
    paths.append(viz.save(fig, f"variance_study_tau{suffix}", out))
    # Variance per compute relative to IWAE-S, per lever.
    fig = viz.new_figure(ncols=5, size=(3.3, 3.2))
    levers = [
        ("latent_dim", lambda r: str(r["latent_dim"]), "latent dimension d"),
        ("encoder", lambda r: f"d{r['latent_dim']}\n{r['covariance']}\n{r['train']}", "encoder"),
        ("S", lambda r: str(r["S"]), "S"),
        ("k_m", lambda r: f"{r['k']},{r['m']}", "(k, m)"),
        ("rejuvenation", lambda r: "off" if r["rejuvenate"] is None else f"{r['rejuvenate']}σ",
         "MH rejuvenation"),
    ]  # fmt: skip
    for ax, (lever, label, title) in zip(fig.axes, levers, strict=True):
        if lever == "encoder":
            sel = [r for r, _ in enc]
        elif lever == "S":
            sel = [r for r, _ in base]
        elif lever == "rejuvenation":
            sel = [r for r, _ in rejuv]
        elif lever == "k_m":
            sel = [r for r, _ in lat if r["latent_dim"] == d0] + [r for r, _ in pick("k_m")]
            sel.sort(key=lambda r: (r["k"], r["m"]))
        else:
            sel = [r for r, _ in lat]
        xs = list(range(len(sel)))
        ax.plot(xs, [r["work_ratio"] for r in sel], "o-", label="Var×cost / IWAE-S's")
        ax.plot(xs, [r["work_ratio_median_image"] for r in sel], "s--", label="same, median image")
        ax.plot(xs, [r["ratio_same_cost"] for r in sel], "^:", label="Var / IWAE-S' (equal cost)")
        ax.axhline(1.0, color="k", lw=0.8)
        ax.set_xticks(xs, [label(r) for r in sel], fontsize=7)
        ax.set_yscale("log")
        ax.set_title(title, fontsize=9)
        ax.set_xlabel(title, fontsize=8)
    fig.axes[0].set_ylabel("ucvae / IWAE (1 = parity, higher = ucvae worse)")
    fig.axes[0].legend(fontsize=7)
    paths.append(viz.save(fig, f"variance_study_work{suffix}", out))
    return paths


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--quick", action="store_true", help="digits, a subset of levers (~5 min)")
    p.add_argument("--datasets", nargs="+", default=None, help="digits, mnist and/or fashion-mnist")
    p.add_argument(
        "--levers",
        nargs="+",
        default=None,
        choices=LEVERS,
        help="only these levers (default all): e.g. latent_dim, to choose a latent size",
    )
    p.add_argument("--images", type=int, default=None, help="test images per setting")
    p.add_argument("--replicates", type=int, default=None, help="gradient samples per image")
    p.add_argument("--epochs", type=int, default=None, help="training epochs per model")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default=str(ROOT / "figures"), help="folder for CSV, table, figures")
    p.add_argument("--verbose", action="store_true", help="training progress bars")
    a = p.parse_args(argv)
    torch.set_num_threads(1)  # small models: one thread is much faster on a shared machine
    datasets = a.datasets
    if datasets is None:
        datasets = ["digits"]
        if not a.quick:
            try:
                load_dataset("mnist")
                datasets.append("mnist")
            except Exception as e:  # noqa: BLE001
                print(f"MNIST not available ({e}); digits only")
    plan = make_plan(a.quick, datasets)
    if a.epochs:
        plan.epochs = dict.fromkeys(plan.epochs, a.epochs)
    if a.images:
        plan.images = a.images
    if a.replicates:
        plan.replicates = a.replicates
    if a.levers:
        plan.settings = list(dict.fromkeys(s for s in plan.settings if s.lever in a.levers))
    tag = "" if datasets == ["digits"] else "_" + "_".join(datasets)
    if a.levers:
        tag += "_" + "_".join(a.levers)
    suffix = tag + ("_quick" if a.quick else "")
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    t_start = time.perf_counter()
    data = {ds: load_dataset(ds, seed=a.seed) for ds in datasets}
    models: dict[ModelSpec, tuple] = {}
    rows, taus = [], []
    for s in plan.settings:
        ds = s.model.dataset
        if s.model not in models:
            epochs = plan.epochs[ds]
            model, secs = train_model(s.model, epochs, data[ds], a.seed, not a.verbose)
            x_ll = data[ds].test[:100]
            g = torch.Generator().manual_seed(a.seed)
            ll = iwae_log_likelihood(model, x_ll, 1000, generator=g).mean().item()
            models[s.model] = (model, secs, ll)
            print(f"trained {s.model.name} ({epochs} epochs, {secs:.0f} s): test LL {ll:.3f}")
        model, secs, ll = models[s.model]
        x = data[ds].test[: plan.images]
        row, tau = measure(model, x, s, plan, a.seed + 1)
        row = {
            "lever": s.lever,
            "dataset": ds,
            "latent_dim": s.model.latent_dim,
            "covariance": s.model.covariance,
            "train": s.model.objective
            if s.model.objective != "ucvae"
            else f"ucvae-{s.model.encoder}",
            "S": s.num_samples,
            "k": s.k,
            "m": s.m,
            "rejuvenate": s.rejuvenate,
            "test_ll": ll,
            "train_seconds": secs,
        } | row
        rows.append(row)
        taus.append(tau)
        print(
            f"  {s.lever:17s} d={s.model.latent_dim:<3d} {s.model.covariance:4s} "
            f"S={s.num_samples:<4d} k,m={s.k},{s.m} MH={s.rejuvenate}: "
            f"ESS/S {row['median_ess_frac']:.3f} "
            f"k̂ {row['median_khat']:.2f} mean τ {row['tau_mean']:.2f} max {row['tau_max']:.0f} "
            f"α {row['tau_tail_index']:.2f} Var×cost/IWAE {row['work_ratio']:.1f} "
            f"(median image {row['work_ratio_median_image']:.1f}) ({row['seconds']:.0f} s)",
            flush=True,
        )
    csv_path = out / f"variance_study{suffix}.csv"
    with csv_path.open("w", newline="") as f:
        w = csv.DictWriter(f, COLUMNS)
        w.writeheader()
        for r in rows:
            w.writerow({c: fmt(r[c]) for c in COLUMNS})
    total = time.perf_counter() - t_start
    md = table(rows)
    header = (
        f"Variance study ({'quick' if a.quick else 'full'}: {plan.images} test images × "
        f"{plan.replicates} gradient samples per setting; models trained "
        f"{', '.join(f'{k} {v} epochs' for k, v in plan.epochs.items())} with S = 10; "
        f"{total:.0f} s)\n\n"
    )
    (out / f"variance_study{suffix}.md").write_text(header + md + "\n")
    paths = figures(rows, taus, suffix, out)
    print()
    print(header + md)
    print(f"\nwrote {csv_path}, {', '.join(str(p) for p in paths)} in {total:.0f} s")


if __name__ == "__main__":
    main()
