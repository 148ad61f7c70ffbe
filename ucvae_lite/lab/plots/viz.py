"""Plotting helpers for the notebooks and widgets (matplotlib, no pyplot state needed).

Every helper draws on an ``Axes`` it is given (or creates a ``Figure``) and returns it, so the
same code serves static figures, widgets and tests. Figures are built with
``matplotlib.figure.Figure`` directly: widgets can redraw without leaking pyplot figures.
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import torch
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.patches import Ellipse
from torch import Tensor

from ucvae_lite.core.diagnostics import degenerate_survival, survival
from ucvae_lite.core.kernels import CISState
from ucvae_lite.training.runtime import figures_dir

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


def plot_survival(ax: Axes, tau: Tensor, label: str, color=None) -> Axes:
    """Empirical P(τ > t) (``diagnostics.survival``, t = 1..max τ) against t on log-log axes:
    heavy tails show as straight lines."""
    t, surv = (v.numpy() for v in survival(torch.as_tensor(tau)))
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
    legend: bool = True,
) -> Axes:
    """Two particle sets X_t and Y_{t−1} of one chain pair on a 2-D latent.

    Slot 0 of each set is its reference (large marker); slots 1.. are the fresh draws, shared
    by both chains after the first coupled step (grey, sized by X's normalised weight).
    ``legend=False`` leaves the legend to the caller (``coupled_chains_panels`` draws one for
    the whole figure, outside the panels); otherwise it goes where it hides the least data.
    """
    from ucvae_lite.core.iwae import normalized_weights

    zx, zy = x_state.particles[0].numpy(), y_state.particles[0].numpy()
    wx = normalized_weights(x_state.log_weights[0]).numpy()
    if posterior is not None:
        gaussian_ellipse(
            ax, posterior[0], posterior[1], color=COLORS["exact"], lw=1, ls="--",
            label="posterior p(z | x), 2σ",
        )  # fmt: skip
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
        label="reference of $Y_{t-1}$",
        zorder=3,
    )
    ax.scatter(*zx[0], s=90, marker="o", color=COLORS["x"], label="reference of $X_t$", zorder=4)
    pair = f"$X_{{{t}}} = Y_{{{t - 1}}}$"
    ax.set_title(
        f"$t = {t}$: " + (f"met, {pair}" if met else "not met yet"),
        color="tab:green" if met else "k",
        fontsize=10,
    )
    if limits is not None:
        ax.set_xlim(limits[0], limits[1])
        ax.set_ylim(limits[2], limits[3])
    ax.set_xlabel("z₁")
    ax.set_ylabel("z₂")
    if legend:
        ax.legend(fontsize=7, loc="best", framealpha=0.9)
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
    t_max = 2
    for i, (label, tau) in enumerate(taus.items()):
        plot_survival(ax, tau, label, color=f"C{i}")
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


# --- notebooks 00-04 (the lab): one helper per figure, so the notebooks show the idea -------


def toy_model(
    ax: Axes,
    posterior: tuple[Tensor, Tensor],
    posterior_draws: Tensor,
    proposals: dict[str, tuple[Tensor, Tensor]],
    proposal_draws: Tensor | None = None,
) -> Axes:
    """The 2-D posterior (draws and 2σ ellipse), proposals' 2σ ellipses and the N(0, I) prior."""
    z = np.asarray(posterior_draws, dtype=float)
    ax.scatter(z[:, 0], z[:, 1], s=5, alpha=0.5, color="k", label="posterior draws")
    if proposal_draws is not None:
        q = np.asarray(proposal_draws, dtype=float)
        label = f"draws of the {next(iter(proposals))}"
        ax.scatter(q[:, 0], q[:, 1], s=5, alpha=0.4, color=COLORS["x"], label=label)
    gaussian_ellipse(ax, posterior[0], posterior[1], color="k", lw=1.5, label="posterior (2σ)")
    for i, (name, (mean, cov)) in enumerate(proposals.items()):
        gaussian_ellipse(ax, mean, cov, color=f"C{i}", ls="--", label=name)
    gaussian_ellipse(ax, np.zeros(2), np.eye(2), color="0.6", ls=":", label="prior N(0, I)")
    ax.set_xlim(-2.5, 2.5)
    ax.set_ylim(-2.5, 2.5)
    ax.set_aspect("equal")
    ax.set_xlabel("z₁")
    ax.set_ylabel("z₂")
    ax.legend(fontsize=7, loc="lower left")
    return ax


def iwae_panels(
    axes: list[Axes], curve, highlight: int | None = None, panels: str = "abc"
) -> list[Axes]:
    """Panels from a ``teaching.IWAECurve``, one axes each, chosen by ``panels``: (a) the bound
    L_S against log p(x); (b) the gap times S against its large-S limit V/2 (the delta method);
    (c) IWAE's gradient bias against S, with the noise floor below which a measured bias is not
    resolved. ``highlight``: an S to mark in every panel."""
    S = np.asarray(curve.num_samples, dtype=float)
    gap, se = np.asarray(curve.gap), np.asarray(curve.gap_se)
    slots = dict(zip(panels, axes, strict=True))
    if "a" in slots:
        _iwae_bound_panel(slots["a"], curve, S, se)
    if "b" in slots:
        _iwae_gap_panel(slots["b"], curve, S, gap, se)
    if "c" in slots:
        _iwae_gradient_panel(slots["c"], curve, S)
    if highlight is not None:
        for a in axes:
            a.axvline(highlight, color="tab:green", lw=1, alpha=0.6)
    return axes


def _iwae_bound_panel(ax: Axes, curve, S: np.ndarray, se: np.ndarray) -> None:
    estimate_with_band(ax, S, np.asarray(curve.bound), se, "IWAE bound L_S", exact=curve.log_px)
    ax.set_xscale("log")
    ax.set_xlabel("S")
    ax.set_ylabel("nats")
    ax.set_title("(a) L_S rises towards log p(x)", fontsize=9)
    ax.legend(fontsize=7)


def _iwae_gap_panel(ax: Axes, curve, S: np.ndarray, gap: np.ndarray, se: np.ndarray) -> None:
    estimate_with_band(ax, S, S * gap, S * se, "S × (log p(x) − L_S)", color="C1")
    ax.axhline(curve.variance / 2, color="k", ls="--", lw=1, label="V / 2 (exact V)")
    ax.set_xscale("log")
    ax.set_xlabel("S")
    ax.set_ylabel("S × gap (nats)")
    ax.set_title("(b) gap ≈ V / (2S) for large S", fontsize=9)
    ax.legend(fontsize=7)


def _iwae_gradient_panel(ax: Axes, curve, S: np.ndarray) -> None:
    keep = ~np.isnan(np.asarray(curve.grad_bias))
    Sg = S[keep]
    ax.plot(Sg, np.asarray(curve.grad_bias)[keep], "o-", ms=3, label="‖E[IWAE grad] − exact‖")
    ax.plot(Sg, np.asarray(curve.grad_floor)[keep], ":", color="0.5", label="noise floor")
    if keep.any():
        ref = np.asarray(curve.grad_bias)[keep][0] * Sg[0]
        ax.plot(Sg, ref / Sg, "k--", lw=0.8, label="∝ 1/S")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("S")
    ax.set_ylabel("gradient bias (norm)")
    ax.set_title("(c) IWAE's θ-gradient is biased", fontsize=9)
    ax.legend(fontsize=7)


def bias_curves(
    ax: Axes, x, curves: dict[str, tuple[Tensor, Tensor]], xlabel: str, ylabel: str
) -> Axes:
    """|bias| ± 2 SE against x for several estimators, on a log scale (floored at 1e-4).

    ``x``: the common x values, or a dict giving each curve its own."""
    for name, (bias, se) in curves.items():
        estimate_with_band(ax, x[name] if isinstance(x, dict) else x, bias, se, name)
    ax.set_yscale("log")
    ax.set_ylim(bottom=1e-4)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.legend(fontsize=7)
    return ax


def max_weight_vs_n(
    ax: Axes, sizes: list[int], values: dict[str, list[float]], bounds: dict[str, float]
) -> Axes:
    """The largest of n log-weights (relative to log p(x)) against n, with known upper bounds."""
    for i, (name, v) in enumerate(values.items()):
        ax.plot(sizes, v, "o-", ms=3, color=f"C{i}", label=name)
        if name in bounds:
            ax.axhline(bounds[name], color=f"C{i}", ls=":", lw=1)
    ax.set_xscale("log")
    ax.set_xlabel("n proposal draws")
    ax.set_ylabel("max log w − log p(x)   (dotted: sup)")
    ax.legend(fontsize=7)
    return ax


def move_probability_vs_dim(
    ax: Axes, dims: list[int], rows: dict[str, tuple[list[float], list[float]]], bound: list[float]
) -> Axes:
    """P(a CIS step leaves its reference) against the latent dimension d, ± 2 SE per curve,
    with the uniform-ergodicity constant (S − 1)/(2 sup w/p(x) + S − 2) below them all."""
    for name, (p, se) in rows.items():
        estimate_with_band(ax, dims, p, se, name)
    ax.plot(dims, bound, "k--", lw=1, label="lower bound ε")
    ax.set_yscale("log")
    ax.set_xlabel("latent dimension d")
    ax.set_ylabel("P(leave the reference in one step)")
    ax.legend(fontsize=7)
    return ax


def tau_histogram(ax: Axes, taus: dict[str, Tensor], max_t: int = 30) -> Axes:
    """Histograms of meeting times (integers 2..max_t), one outline per sample."""
    bins = np.arange(1.5, max_t + 1.5)
    for name, tau in taus.items():
        ax.hist(np.asarray(tau, dtype=float), bins=bins, histtype="step", density=True, label=name)
    ax.set_xlabel("τ")
    ax.set_ylabel("frequency")
    ax.legend(fontsize=7)
    return ax


def mse_vs_budget(
    ax: Axes,
    budgets,
    entries: list,
    crossovers: dict[str, tuple[float, ...]] | None = None,
    bands: bool = True,
    title: str = "",
) -> Axes:
    """MSE(C) = |b|² + c V / C against the budget C (log-log), one line per
    ``budget.ErrorBudget`` in ``entries``: solid with b = 0 for the ones marked ``unbiased``,
    dashed (flattening at |b|²) for the others; ``bands``: ± 2 SE.

    ``crossovers`` {name: (C*, se)}: C* ± 2 SE as grey vertical bands, annotated "C* name".
    {name: (C*, low, high)}, ``name`` an entry's: a dotted line at C* in that entry's colour
    over the band [low, high], the crossing marked on the first unbiased entry's line, and the
    label "C* vs name".

    More than five entries are told apart by family (IWAE-S dashed reds, darker for larger S;
    MSC dash-dotted greens, darker when older; unbiased ones solid, with markers from the
    second on) and named at their right ends instead of in a legend; entries whose lines
    coincide over the whole range (within 5%) share one name.
    """
    C = np.asarray(budgets, dtype=float)
    many = len(entries) > 5
    styles = _budget_styles(entries) if many else [
        {"ls": "-" if eb.unbiased else "--", "color": f"C{i % 10}"} for i, eb in enumerate(entries)
    ]  # fmt: skip
    for eb, style in zip(entries, styles, strict=True):
        mse = eb.mse(C)
        ax.plot(C, mse, label=eb.name, **style)
        if bands:
            se = eb.mse_se(C)
            low = np.maximum(mse - 2 * se, 1e-12)
            ax.fill_between(C, low, mse + 2 * se, color=style["color"], alpha=0.2)
    ax.set_xscale("log")
    ax.set_yscale("log")
    colours = {eb.name: style["color"] for eb, style in zip(entries, styles, strict=True)}
    unbiased = next((eb for eb in entries if eb.unbiased), None)
    for name, value in (crossovers or {}).items():
        if len(value) == 3:
            _crossover_line(ax, name, value, colours.get(name, "0.4"), unbiased)
            continue
        c_star, se = value
        ax.axvspan(max(c_star - 2 * se, C[0]), c_star + 2 * se, color="0.5", alpha=0.25, lw=0)
        ax.annotate(
            f"C* {name}".strip(), (c_star, 0.03), xycoords=("data", "axes fraction"),
            xytext=(3, 0), textcoords="offset points", rotation=90, fontsize=7, va="bottom",
        )  # fmt: skip
    ax.set_xlabel("budget C (log-weight evaluations)")
    ax.set_ylabel("MSE = |bias|² + c·V / C")
    if title:
        ax.set_title(title, fontsize=10)
    if many:
        _label_line_ends(ax, C, entries, styles)
    else:
        ax.legend(fontsize=7)
    return ax


def _budget_styles(entries: list) -> list[dict]:
    """Line styles by family: IWAE-S dashed reds and MSC dash-dotted greens, darker down the
    list; unbiased entries solid, the second and later with sparse markers (offset, so that
    lines drawn on top of one another still show both)."""
    from matplotlib import colormaps

    families = {"IWAE": ("--", "Reds"), "MSC": ("-.", "Greens")}
    members = {f: [eb.name for eb in entries if eb.name.startswith(f)] for f in families}
    solid = ["tab:blue", "tab:purple", "tab:cyan", "tab:olive", "tab:brown"]
    markers = [None, "o", "s", "^", "D"]
    styles, n_unbiased = [], 0
    for eb in entries:
        family = next((f for f in families if eb.name.startswith(f)), None)
        if family is not None and not eb.unbiased:
            ls, cmap = families[family]
            k, n = members[family].index(eb.name), len(members[family])
            shade = 0.45 + 0.5 * k / max(n - 1, 1)
            marker = markers[k % len(markers)]
            style = {"ls": ls, "color": colormaps[cmap](shade), "lw": 1.4}
        else:
            k, n_unbiased = n_unbiased, n_unbiased + 1
            marker = markers[k % len(markers)]
            style = {"ls": "-", "color": solid[k % len(solid)], "lw": 2.2 if k == 0 else 1.3}
        if marker is not None:
            style |= {"marker": marker, "ms": 3.5, "markevery": (0.04 * (k % 5), 0.2)}
        styles.append(style)
    return styles


def _crossover_line(ax: Axes, name: str, value: tuple, colour, unbiased) -> None:
    """C* of the unbiased entry against ``name``: dotted line, [low, high] band, the crossing
    marked on the unbiased line, and a "C* vs name" label along the line."""
    c_star, low, high = value
    ax.axvspan(low, high, color=colour, alpha=0.12, lw=0)
    ax.axvline(c_star, color=colour, ls=":", lw=1.2)
    if unbiased is not None:
        ax.plot([c_star], [float(unbiased.mse(c_star))], "o", color=colour, ms=5, mec="k", mew=0.6)
    ax.annotate(
        f"C* vs {name}", (c_star, 0.03), xycoords=("data", "axes fraction"), xytext=(-2, 0),
        textcoords="offset points", rotation=90, fontsize=7, va="bottom", ha="right",
        color=colour,
    )  # fmt: skip


def _label_line_ends(ax: Axes, C: np.ndarray, entries: list, styles: list[dict]) -> None:
    """Name each line right of the axes, in its colour, joined to its end by a thin leader;
    names pushed apart vertically so that they do not overlap; lines within 5% of each other
    at every budget share a name ("MSC age 10, 30")."""
    import os

    curves = [np.log10(eb.mse(C)) for eb in entries]
    groups: list[list[int]] = []
    for i, y in enumerate(curves):
        for g in groups:
            if np.abs(y - curves[g[0]]).max() < np.log10(1.05):
                g.append(i)
                break
        else:
            groups.append([i])
    ax.autoscale_view()
    y0, y1 = np.log10(ax.get_ylim())
    height = ax.get_window_extent().height * 72 / ax.figure.dpi  # points
    gap = 8.5 * (y1 - y0) / max(height, 1.0)  # one line of 7-point text, in decades
    items = []
    for g in groups:
        names = [entries[i].name for i in g]
        prefix = os.path.commonprefix(names)
        prefix = prefix[: prefix.rfind(" ") + 1] if len(g) > 1 else ""
        text = names[0] + "".join(f", {n[len(prefix) :]}" for n in names[1:])
        items.append([float(np.mean([curves[i][-1] for i in g])), text, styles[g[0]]["color"]])
    items.sort(key=lambda item: item[0])
    placed = [item[0] for item in items]
    for _ in range(50):  # push apart until every pair is at least one line of text apart
        moved = False
        for k in range(1, len(placed)):
            overlap = gap - (placed[k] - placed[k - 1])
            if overlap > 1e-9:
                placed[k - 1] -= overlap / 2
                placed[k] += overlap / 2
                moved = True
        if not moved:
            break
    for (y_end, text, colour), y in zip(items, placed, strict=True):
        ax.annotate(
            text, (C[-1], 10**y_end), xytext=(1.03, 10**y), textcoords=("axes fraction", "data"),
            fontsize=7, color=colour, va="center", ha="left", annotation_clip=False,
            arrowprops={"arrowstyle": "-", "color": colour, "lw": 0.5, "shrinkA": 1, "shrinkB": 0},
        )  # fmt: skip


def gradient_bias_bars(ax: Axes, rows: dict[str, Tensor], exact: Tensor) -> Axes:
    """Per-coordinate mean − exact (± 2 SE) of replicate gradient estimates [R, P]."""
    idx = np.arange(exact.numel())
    offsets = np.linspace(-0.25, 0.25, len(rows))
    for off, (name, gr) in zip(offsets, rows.items(), strict=True):
        err = (gr.mean(0) - exact).numpy()
        se = (gr.std(0) / np.sqrt(gr.shape[0])).numpy()
        ax.errorbar(idx + off, err, 2 * se, fmt="o", ms=3, label=name)
    ax.axhline(0, color="k", lw=1)
    ax.set_xticks(idx)
    ax.tick_params(axis="x", labelsize=7)
    ax.set_xlabel("gradient coordinate (W: 0–7, b: 8–11, log σ: 12)")
    ax.set_ylabel("mean − exact (±2 SE)")
    ax.legend(fontsize=7)
    return ax


def widget_figure(
    ncols: int = 1, size: tuple[float, float] = (3.2, 3.0), wspace: float = 0.42
) -> Figure:
    """A one-row Figure for widgets: fixed margins instead of constrained layout, which would
    triple the time a redraw takes (widgets must answer within 0.3 s)."""
    fig = Figure(figsize=(size[0] * ncols, size[1]))
    fig.subplots(1, ncols, squeeze=False)
    left = 0.55 / (size[0] * ncols) * 1.6
    fig.subplots_adjust(left=left, right=0.98, bottom=0.2, top=0.88, wspace=wspace)
    return fig


def coupled_chains_panels(
    fig_axes: list[Axes], run, posterior: tuple[Tensor, Tensor], limits=None
) -> list[Axes]:
    """X_t and Y_{t−1} of a recorded chain pair (row 0) at t = 1, 2, …, one axes each, with
    one legend for all of them below the panels (outside the data)."""
    tau = int(run.tau[0])
    for t, ax in enumerate(fig_axes, start=1):
        coupled_chains_step(
            ax, run.xs[t], run.ys[t - 1], t, t >= tau, posterior, limits, legend=False
        )
    fig = fig_axes[0].figure
    handles, labels = fig_axes[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="outside lower center", ncol=len(labels), fontsize=8)
    fig.suptitle(
        "lag-1 coupled chains: $X_t$ and $Y_{t-1}$ at each step $t$ until they meet", fontsize=10
    )
    return fig_axes


def plain_log_ticks(fig: Figure) -> Figure:
    """Log axes labelled 1, 10, 0.1 instead of 10⁰, 10¹, 10⁻¹, and without minor ticks: easier
    to read, and a widget redraws in about half the time (mathtext labels and the many minor
    ticks of log axes are slow to draw)."""
    from matplotlib.ticker import FuncFormatter, NullLocator

    for ax in fig.axes:
        for axis in (ax.xaxis, ax.yaxis):
            if axis.get_scale() == "log":
                axis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
                axis.set_minor_locator(NullLocator())
    return fig
