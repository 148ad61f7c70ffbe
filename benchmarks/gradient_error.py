"""When does unbiasedness pay? θ-gradient bias and noise at equal compute (``landscape``).

At a fixed θ, for IWAE-S (S = 5, 10, 50), ucvae (the defaults: S = 10, k = 1, m = 2), ucvae
with a thinned correction (p = p*, estimated from the ucvae run), SUMO and Markovian score
climbing (MSC; one persistent CIS chain per data point, at chain ages 1, 10 and 100), measures
on N data points with R independent estimates each:

* |b̄|², the squared bias of the minibatch gradient (noise-corrected, with its standard error),
* tr Σ_est, the estimator's mean within-image variance, and tr Σ_data, the between-image
  variance of the exact per-image gradients (the minibatch noise SGD pays anyway),
* c, the cost per data point: log-weight evaluations (default) or, with --cost decoder,
  decoder evaluations as a training step pays them (``landscape.GradientSamples``),
* MSE(C) = |b̄|² + c · (tr Σ_data + tr Σ_est) / C of the average gradient over a budget of C
  evaluations, and the crossover C* at which each unbiased method overtakes each IWAE-S.

Cases (``--cases``): the linear-Gaussian model (``exact``: exact per-point gradients; the
proposal is the posterior shifted by 0.5 and 1.5× wider); the shipped digits VAE with a 2-D
latent (``digits2d``, default: the reference is each image's exact gradient on grids, from
``exact.decoder_gradients``, so ucvae's own bias row is a real test); and, on request, a
5-D digits VAE trained briefly with IWAE-10 (``digits``: the reference per-image gradient is
the average of many ucvae estimates, whose own noise enters the standard errors, cross-checked
against IWAE with a large S; it cannot show ucvae's own bias).

    python benchmarks/gradient_error.py --quick     # ≤ 10 min on 2 cores
    python benchmarks/gradient_error.py             # more points and replicates
    python benchmarks/gradient_error.py --cost decoder   # budgets in decoder evaluations

Writes figures/gradient_error{_CASES}{_quick}{_decoder}.md, .csv and .png (_CASES: the cases
joined by _, when they are not the default exact and digits2d).
"""

from __future__ import annotations

import argparse
import csv
import math
import time
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

import ucvae_lite as u
from ucvae_lite.lab import teaching as T
from ucvae_lite.lab.plots import viz
from ucvae_lite.studies import landscape as L
from ucvae_lite.studies.stats import z_threshold
from ucvae_lite.training.runtime import figures_dir
from ucvae_lite.training.train import TrainConfig, train

ROOT = Path(__file__).resolve().parents[1]
BUDGETS = (1e3, 1e4, 1e5, 1e6)
DEFAULT_CASES = ["exact", "digits2d"]  # evaluations, for the MSE columns


def exact_case(points: int, replicates: int, seed: int, progress: bool):
    model = u.LinearGaussian.example()
    xs = model.sample_data(points, torch.Generator().manual_seed(seed))
    reference = torch.stack([T.exact_gradient(model, xs[i : i + 1]) for i in range(points)])

    def proposal(x, R):
        return model.proposal(x.expand(R, -1), shift=0.5, scale=1.5)

    return model, xs, proposal, reference, None


def digits_model(epochs: int, seed: int) -> u.vae.VAE:
    out = ROOT / "runs" / "bench" / f"gradient_error_digits_iwae10_{epochs}"
    cfg = TrainConfig(objective="iwae", epochs=epochs, seed=seed, out=str(out), val_samples=50)
    if (out / "checkpoint.pt").exists():
        from ucvae_lite.training.evaluate import load_model

        return load_model(out / "checkpoint.pt")[0]
    model, _ = train(cfg, progress=False)
    return model.eval()


def digits_case(
    points: int, ref_replicates: int, iwae_check: int, epochs: int, seed: int, progress
):
    """A trained digits VAE, test images, and reference gradients: the mean of many ucvae
    estimates (unbiased; the variance of that mean is returned too)."""
    from ucvae_lite.training.data import load_dataset

    model = digits_model(epochs, seed)
    xs = load_dataset("digits").test[:points]

    def proposal(x, R):
        return model.proposal(x.expand(R, -1), detach=True)

    g = torch.Generator().manual_seed(seed + 7)
    ucvae = L.Method("reference", "ucvae", 10, 1, 2)
    refs, ref_vars, checks = [], [], []
    rows = tqdm(range(points), desc="reference gradients", disable=not progress)
    for i in rows:
        s = L.gradient_samples(
            ucvae, model, xs[i : i + 1], proposal(xs[i : i + 1], ref_replicates), ref_replicates, g
        )
        refs.append(s.grads.double().mean(0))
        ref_vars.append(s.grads.double().var(0) / ref_replicates)
        big = L.Method("IWAE-big", "iwae", iwae_check, unbiased=False)
        c = L.gradient_samples(big, model, xs[i : i + 1], proposal(xs[i : i + 1], 50), 50, g)
        checks.append((c.grads.double().mean(0), c.grads.double().var(0) / 50))
    reference, reference_var = torch.stack(refs), torch.stack(ref_vars)
    # Cross-check: the references against IWAE-S' (bias O(1/S')), coordinate by coordinate.
    iw = torch.stack([c[0] for c in checks])
    iw_var = torch.stack([c[1] for c in checks])
    z = ((iw - reference) / (iw_var + reference_var).sqrt().clamp_min(1e-300)).flatten()
    cross = {
        "iwae_check_S": iwae_check,
        "max_abs_z": z.abs().max().item(),
        "threshold": z_threshold(z.numel()),
    }
    return model, xs, proposal, reference, reference_var, cross


def digits2d_case(points: int, progress: bool):
    """The shipped digits VAE with a 2-D latent, test images, and their exact gradients
    (``exact.decoder_gradients``: grids, error < 1e-3 nats in log p per image)."""
    from ucvae_lite.lab import pretrained
    from ucvae_lite.studies import exact
    from ucvae_lite.training.data import load_dataset

    model = pretrained.load("iwae_2d")[0]
    xs = load_dataset("digits").test[:points]

    def proposal(x, R):
        return model.proposal(x.expand(R, -1), detach=True)

    return model, xs, proposal, exact.decoder_gradients(model, xs, progress).double()


def report(
    name: str, budgets: list[L.ErrorBudget], p_star: float | None, extra: str, cost: str
) -> list[str]:
    iwaes = [b for b in budgets if b.name.startswith("IWAE")]
    lines = [f"### {name}", "", extra, ""]
    head = (
        f"| method | {cost} evals c | abs bias² ± SE | tr Σ_est | tr Σ_data | "
        + " | ".join(f"MSE at C = {c:.0e}" for c in BUDGETS)
        + " | "
        + " | ".join(f"C* vs {i.name}" for i in iwaes)
        + " |"
    )
    lines += [head, "|" + "---|" * (5 + len(BUDGETS) + len(iwaes))]
    for b in budgets:
        mses = " | ".join(f"{b.mse(c):.3g}" for c in BUDGETS)
        cross = " | ".join(("–" if not b.unbiased else _fmt_c(b.crossover(i))) for i in iwaes)
        lines.append(
            f"| {b.name} | {b.cost:.1f} | {b.bias2:.3g} ± {b.bias2_se:.2g} | {b.variance:.3g} | "
            f"{b.data_variance:.3g} | {mses} | {cross} |"
        )
    if p_star is not None:
        lines += [
            "",
            f"Optimal thinning probability estimated from the ucvae row: p* = {p_star:.3f}.",
        ]
    return lines + [""]


def _fmt_c(c: float) -> str:
    return "never" if math.isinf(c) else f"{c:.3g}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="fewer points and replicates (≤ 10 min)")
    ap.add_argument(
        "--cases",
        nargs="+",
        default=DEFAULT_CASES,
        choices=["exact", "digits2d", "digits"],
        help="digits2d: exact reference by grid (default); digits: the 5-D model, whose "
        "reference is the mean of many ucvae estimates",
    )
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--quiet", action="store_true")
    ap.add_argument(
        "--cost",
        choices=L.COST_UNITS,
        default="log-weight",
        help="what the budget C counts: log-weight evaluations (default) or decoder evaluations",
    )
    args = ap.parse_args()
    torch.set_num_threads(1)
    q = args.quick
    progress = (lambda it, desc: tqdm(it, desc=desc, leave=False)) if not args.quiet else None
    cases = "" if args.cases == DEFAULT_CASES else "_" + "_".join(args.cases)
    suffix = cases + ("_quick" if q else "") + ("_decoder" if args.cost == "decoder" else "")
    unit = f"{args.cost} evaluations"
    t0 = time.perf_counter()
    md = [
        f"# θ-gradient bias and noise at equal compute ({'quick' if q else 'full'} run)",
        "",
        f"Command: `python benchmarks/gradient_error.py{' --quick' if q else ''}"
        f"{' --cost decoder' if args.cost == 'decoder' else ''}"
        f"{' --cases ' + ' '.join(args.cases) if cases else ''}`",
        "",
        "MSE(C) = |b̄|² + c (tr Σ_data + tr Σ_est) / C: the mean squared error of the average of "
        f"minibatch gradients over a budget of C {unit}; C* is the budget past "
        "which an unbiased method's MSE is below IWAE-S's (per data point of the minibatch).",
        "",
    ]
    rows_csv, figure_data = [], {}
    for case in args.cases:
        if case == "exact":
            points, R = (8, 1000) if q else (16, 4000)
            model, xs, proposal, reference, reference_var = exact_case(
                points, R, args.seed, not args.quiet
            )
            extra = (
                f"Linear-Gaussian model (d = 2, p = 4), {points} data points × {R} estimates each; "
                "exact per-point gradients; proposal = posterior shifted by 0.5, 1.5× wider."
            )
        elif case == "digits2d":
            points, R = (12, 150) if q else (32, 400)
            model, xs, proposal, reference = digits2d_case(points, not args.quiet)
            reference_var = None
            extra = (
                f"The shipped digits VAE with a 2-D latent (64-64-64-2, IWAE-trained); {points} "
                f"test images × {R} estimates each. Reference: the exact per-image gradient "
                "on grids (log p within 1e-3 nats per image), so ucvae's own bias row is a test."
            )
        else:
            points, R, ref_R, big, epochs = (
                (12, 150, 1000, 500, 60) if q else (32, 400, 4000, 2000, 300)
            )
            model, xs, proposal, reference, reference_var, cross = digits_case(
                points, ref_R, big, epochs, args.seed, not args.quiet
            )
            extra = (
                f"Digits VAE (64-64-64-5) trained {epochs} epochs with IWAE-10; {points} test "
                f"images × {R} estimates each. Reference: the mean of {ref_R} ucvae estimates "
                "per image; "
                f"against IWAE-{cross['iwae_check_S']} (50 estimates per image) its largest "
                f"|z| over all coordinates is {cross['max_abs_z']:.2f} (threshold "
                f"{cross['threshold']:.2f})."
            )
        methods = L.default_methods()
        ucvae_row = [m for m in methods if m.name == "ucvae"]
        first = L.measure(
            ucvae_row, model, xs, proposal, R, reference, reference_var, args.seed, progress,
            args.cost,
        )  # fmt: skip
        p_star = first[0].optimal_correction_prob(10)
        p_thin = max(0.05, round(p_star or 1.0, 2))
        thinned = L.Method(f"ucvae p={p_thin:g}", "ucvae", 10, 1, 2, correction_prob=p_thin)
        rest = [m for m in methods if m.kind != "ucvae"]
        budgets = L.measure(
            rest[:3], model, xs, proposal, R, reference, reference_var, args.seed + 1, progress,
            args.cost,
        )  # fmt: skip
        budgets += first
        if p_thin < 1.0:
            budgets += L.measure(
                [thinned], model, xs, proposal, R, reference, reference_var, args.seed + 2,
                progress, args.cost,
            )  # fmt: skip
        budgets += L.measure(
            rest[3:], model, xs, proposal, R, reference, reference_var, args.seed + 3, progress,
            args.cost,
        )  # fmt: skip
        md += report(case, budgets, p_star, extra, args.cost)
        figure_data[case] = budgets
        for b in budgets:
            rows_csv.append(
                {
                    "case": case,
                    "method": b.name,
                    "cost": b.cost,
                    "cost_unit": args.cost,
                    "bias2": b.bias2,
                    "bias2_se": b.bias2_se,
                    "var_est": b.variance,
                    "var_data": b.data_variance,
                    "unbiased": b.unbiased,
                    "p_star": p_star,
                }  # fmt: skip
            )
        print("\n".join(md[-len(budgets) - 8 :]), flush=True)
    out = figures_dir()
    (out / f"gradient_error{suffix}.md").write_text(
        "\n".join(md) + f"\n({time.perf_counter() - t0:.0f} s)\n"
    )
    with open(out / f"gradient_error{suffix}.csv", "w", newline="") as f:
        w = csv.DictWriter(f, list(rows_csv[0]))
        w.writeheader()
        w.writerows(rows_csv)
    fig = viz.new_figure(ncols=len(figure_data), size=(4.4, 3.6))
    for ax, (case, budgets) in zip(fig.axes, figure_data.items(), strict=True):
        viz.mse_vs_budget(ax, np.geomspace(1e2, 1e7, 200), budgets, bands=False, title=case)
    viz.save(fig, f"gradient_error{suffix}")
    print(f"wrote figures/gradient_error{suffix}.md/.csv/.png ({time.perf_counter() - t0:.0f} s)")


if __name__ == "__main__":
    main()
