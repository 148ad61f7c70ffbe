"""Plotting helpers for the notebooks and widgets (matplotlib, no pyplot state needed).

Every helper draws on an ``Axes`` it is given (or creates a ``Figure``) and returns it, so the
same code serves static figures, widgets and tests. Figures are built with
``matplotlib.figure.Figure`` directly: widgets can redraw without leaking pyplot figures.
"""

from __future__ import annotations

import io
from pathlib import Path

import matplotlib
import numpy as np
import torch
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.patches import Ellipse
from torch import Tensor

from .kernels import CISState
from .runtime import figures_dir

COLORS = {"x": "tab:blue", "y": "tab:orange", "fresh": "0.55", "exact": "k", "iwae": "tab:red"}


def new_figure(ncols: int = 1, nrows: int = 1, size: tuple[float, float] = (4.5, 3.4)) -> Figure:
    """A Figure with a grid of axes (``fig.axes``), each panel ``size`` inches."""
    fig = Figure(figsize=(size[0] * ncols, size[1] * nrows), layout="constrained")
    fig.subplots(nrows, ncols, squeeze=False)
    return fig


def to_png(fig: Figure, dpi: int = 90) -> bytes:
    """The figure rendered as PNG bytes (for ``ipywidgets.Image``)."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi)
    return buf.getvalue()


def save(fig: Figure, name: str, folder: Path | None = None, dpi: int = 120) -> Path:
    """Save ``fig`` as ``<name>.png`` in ``folder``, else in ``figures_dir()``; return the path.

    ``figures_dir()`` is the repository's ``figures/`` or ``$UCVAE_FIGURES`` (``runtime``).
    """
    path = (folder or figures_dir()) / f"{name}.png"
    fig.savefig(path, dpi=dpi)
    return path


def mse_against_compute(
    ax: Axes, budgets: list, compute: tuple[float, float] = (1e2, 1e7), title: str = ""
) -> Axes:
    """MSE(C) = |b̄|² + c (tr Σ_data + tr Σ_est) / C of each ``landscape.ErrorBudget`` against
    the budget C (log-log): solid for unbiased methods, dashed for biased ones (their curves
    flatten at |b̄|²). Ten distinct colours."""
    c = np.geomspace(*compute, 200)
    colors = matplotlib.colormaps["tab10"].colors
    for i, b in enumerate(budgets):
        mse = b.mse(c)
        ax.loglog(
            c, mse, ls="-" if b.unbiased else "--", lw=1.3, label=b.name, color=colors[i % 10]
        )
    ax.set_xlabel("compute C (log-weight evaluations)")
    ax.set_ylabel("MSE of the averaged gradient")
    if title:
        ax.set_title(title, fontsize=10)
    ax.legend(fontsize=7, ncol=2)
    return ax


def bias_by_age(ax: Axes, ages: list[int], budgets: list, iwae=None) -> Axes:
    """Squared bias |b̄|² ± 2 SE of MSC's gradient against its chain's age (log-log where
    positive), with IWAE's at the same S as a dashed line (``landscape.ErrorBudget``s)."""
    bias = np.array([b.bias2 for b in budgets])
    se = np.array([b.bias2_se for b in budgets])
    ax.errorbar(ages, bias, yerr=2 * se, fmt="o-", color=COLORS["x"], capsize=3, label="MSC")
    if iwae is not None:
        ax.axhline(iwae.bias2, color=COLORS["iwae"], ls="--", lw=1, label=iwae.name)
    ax.axhline(0.0, color="0.6", lw=0.7)
    ax.set_xscale("log")
    ax.set_xlabel("chain age (visits at a fixed θ)")
    ax.set_ylabel("squared bias |b̄|² (± 2 SE)")
    ax.set_title("Markovian score climbing: bias against chain age", fontsize=10)
    ax.legend(fontsize=8)
    return ax


def gaussian_ellipse(ax: Axes, mean: Tensor, cov: Tensor, nsig: float = 2.0, **kwargs) -> Ellipse:
    """Draw the nsig-standard-deviation ellipse of N(mean, cov) in 2-D."""
    vals, vecs = np.linalg.eigh(np.asarray(cov, dtype=float))
    angle = np.degrees(np.arctan2(vecs[1, 1], vecs[0, 1]))
    width, height = 2 * nsig * np.sqrt(vals[::-1])
    kwargs.setdefault("fill", False)
    e = Ellipse(np.asarray(mean, dtype=float), width, height, angle=angle, **kwargs)
    ax.add_patch(e)
    return e


def estimate_with_band(
    ax: Axes, x, mean, se, label: str, color=None, exact: float | None = None, marker="o"
) -> Axes:
    """Plot mean ± 2 SE against x, with an optional horizontal line at the exact value."""
    x, mean, se = (np.asarray(v, dtype=float) for v in (x, mean, se))
    (line,) = ax.plot(x, mean, marker=marker, ms=3, label=label, color=color)
    ax.fill_between(x, mean - 2 * se, mean + 2 * se, color=line.get_color(), alpha=0.2)
    if exact is not None:
        ax.axhline(exact, color=COLORS["exact"], ls="--", lw=1, label="exact")
    return ax


def running_mean(ax: Axes, samples: Tensor, exact: float, label: str, color=None) -> Axes:
    """Running mean of replicate estimates [R] with a ±2 SE band, and the exact value."""
    s = np.asarray(samples, dtype=float)
    n = np.arange(1, len(s) + 1)
    mean = np.cumsum(s) / n
    sq = np.cumsum(s**2) / n
    se = np.sqrt(np.maximum(sq - mean**2, 0) / np.maximum(n - 1, 1))
    ax.plot(n, mean, color=color, label=label)
    ax.fill_between(n[1:], (mean - 2 * se)[1:], (mean + 2 * se)[1:], color=color, alpha=0.2)
    ax.axhline(exact, color=COLORS["exact"], ls="--", lw=1)
    ax.set_xscale("log")
    ax.set_xlabel("number of replicates")
    return ax


def survival(ax: Axes, tau: Tensor, label: str, color=None) -> Axes:
    """Empirical P(τ > t) against t on log-log axes (heavy tails show as straight lines)."""
    t = np.sort(np.asarray(tau, dtype=float))
    surv = 1.0 - np.arange(1, len(t) + 1) / len(t)
    keep = surv > 0
    ax.step(t[keep], surv[keep], where="post", label=label, color=color)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("t")
    ax.set_ylabel("P(τ > t)")
    return ax


def categorical_coupling(
    ax: Axes, p: Tensor, q: Tensor, draw: tuple[int, int] | None = None
) -> Axes:
    """Bars of two categoricals p and q (side by side) and their overlap min(p, q).

    The overlap's total mass α = Σ min(p, q) is the largest possible P(i = j); ``draw`` marks
    one joint draw (i, j) from the maximal coupling.
    """
    p, q = np.asarray(p, dtype=float), np.asarray(q, dtype=float)
    idx = np.arange(len(p))
    ax.bar(idx - 0.2, p, width=0.4, color=COLORS["x"], alpha=0.7, label="p (chain X)")
    ax.bar(idx + 0.2, q, width=0.4, color=COLORS["y"], alpha=0.7, label="q (chain Y)")
    ax.bar(
        idx,
        np.minimum(p, q),
        width=0.8,
        fill=False,
        hatch="//",
        edgecolor="k",
        label=f"min(p, q): α = {np.minimum(p, q).sum():.2f}",
    )
    if draw is not None:
        i, j = draw
        top = max(p.max(), q.max())
        ax.annotate(
            "i",
            (i - 0.2, p[i]),
            (i - 0.2, p[i] + 0.12 * top),
            ha="center",
            arrowprops={"arrowstyle": "->", "color": COLORS["x"]},
        )
        ax.annotate(
            "j",
            (j + 0.2, q[j]),
            (j + 0.2, q[j] + 0.12 * top),
            ha="center",
            arrowprops={"arrowstyle": "->", "color": COLORS["y"]},
        )
        ax.set_title("joint draw: " + ("i = j (common)" if i == j else f"i = {i}, j = {j}"))
    ax.set_xticks(idx)
    ax.set_xlabel("slot")
    ax.set_ylabel("probability")
    ax.set_ylim(0, 1.25 * max(p.max(), q.max()))
    ax.legend(fontsize=7, loc="upper right")
    return ax


def coupled_chains_step(
    ax: Axes,
    x_state: CISState,
    y_state: CISState,
    t: int,
    met: bool,
    posterior: tuple[Tensor, Tensor] | None = None,
    limits: tuple[float, float, float, float] | None = None,
) -> Axes:
    """Two particle sets X_t and Y_{t−1} of one chain pair on a 2-D latent.

    Slot 0 of each set is its reference (large marker); slots 1.. are the fresh draws, shared
    by both chains after the first coupled step (grey, sized by X's normalised weight).
    """
    from .iwae import normalized_weights

    zx, zy = x_state.particles[0].numpy(), y_state.particles[0].numpy()
    wx = normalized_weights(x_state.log_weights[0]).numpy()
    if posterior is not None:
        gaussian_ellipse(ax, posterior[0], posterior[1], color=COLORS["exact"], lw=1, ls="--")
    ax.scatter(
        zx[1:, 0],
        zx[1:, 1],
        s=20 + 200 * wx[1:],
        color=COLORS["fresh"],
        label="fresh draws (shared)",
        zorder=2,
    )
    ax.scatter(
        *zy[0],
        s=160,
        marker="s",
        facecolor="none",
        edgecolor=COLORS["y"],
        lw=2,
        label="reference of Y_{t-1}",
        zorder=3,
    )
    ax.scatter(*zx[0], s=90, marker="o", color=COLORS["x"], label="reference of X_t", zorder=4)
    ax.set_title(
        f"t = {t}: " + ("MET (X_t = Y_{t-1})" if met else "not met yet"),
        color="tab:green" if met else "k",
    )
    if limits is not None:
        ax.set_xlim(limits[0], limits[1])
        ax.set_ylim(limits[2], limits[3])
    ax.set_xlabel("z₁")
    ax.set_ylabel("z₂")
    ax.legend(fontsize=7, loc="lower right")
    return ax


def histogram_vs_exact(ax: Axes, samples: dict[str, Tensor], exact: float, bins: int = 60) -> Axes:
    """Histograms of replicate estimates from several estimators, with the exact value."""
    allv = torch.cat([v.flatten() for v in samples.values()]).double()
    lo, hi = torch.quantile(allv, 0.005).item(), torch.quantile(allv, 0.995).item()
    for name, v in samples.items():
        ax.hist(
            np.asarray(v, dtype=float),
            bins=bins,
            range=(lo, hi),
            density=True,
            histtype="step",
            lw=1.5,
            label=f"{name}: mean {v.double().mean():.3f}",
        )
    ax.axvline(exact, color=COLORS["exact"], ls="--", lw=1, label=f"exact {exact:.3f}")
    ax.legend(fontsize=7)
    return ax


def survival_vs_degenerate(
    ax: Axes, taus: dict[str, Tensor], num_samples: int | dict[str, int], title: str = ""
) -> Axes:
    """Empirical P(τ > t) of each meeting-time sample against the degenerate-weights 1/t law.

    ``num_samples`` is S for all curves or a dict label -> S (one dashed law per distinct S):
    P(τ > t) = (S+1) / (S+1 + (S−1)(t−1)), what τ follows when one particle takes all the
    weight (``diagnostics.degenerate_survival``). Curves well below it have light tails;
    curves along it do not.
    """
    from .diagnostics import degenerate_survival

    t_max = 2
    for i, (label, tau) in enumerate(taus.items()):
        survival(ax, tau, label, color=f"C{i}")
        t_max = max(t_max, int(torch.as_tensor(tau).max()))
    per = num_samples if isinstance(num_samples, dict) else {k: num_samples for k in taus}
    t = torch.logspace(0, np.log10(max(t_max, 10) * 2), 200)
    for S in sorted(set(per.values())):
        ax.plot(t, degenerate_survival(t, S), ls="--", lw=1, color="k", alpha=0.6)
        ax.annotate(
            f"1/t law, S={S}",
            (t[-1], degenerate_survival(t[-1:], S)[0]),
            fontsize=7,
            ha="right",
            va="bottom",
        )
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=7)
    return ax
