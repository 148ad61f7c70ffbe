"""Diagrams of the method's objects, drawn from real draws (notebooks 01-04 and their widgets).

* ``extended_target``: a particle set from IWAE's q^S beside a draw from the extended target
  π̄(s, z_{1:S}), and the conditional π̄(s | z_{1:S}) = w̄_s as bars.
* ``draw_cis_step``: one CIS step on a 2-D latent: the set X_t, its weights, the selected
  slot ℓ (the step itself is ``kernels.cis_step``).
* ``lag_chains_timeline``: lag-1 coupled chains X_0, X_1, Y_0, … from a recorded run
  (``teaching.lag_coupled_chains``), the meeting time τ, and which terms enter H_{k:m}.

Like ``viz``, every function draws on the ``Axes`` it is given and returns them.
"""

from __future__ import annotations

import numpy as np
from matplotlib.axes import Axes
from matplotlib.patches import FancyArrowPatch, Rectangle
from torch import Tensor

from ucvae_lite.core.hkm import correction_weight
from ucvae_lite.core.iwae import normalized_weights
from ucvae_lite.core.kernels import CISState
from ucvae_lite.lab.plots.viz import COLORS, gaussian_ellipse

Gauss = tuple[Tensor, Tensor]  # (mean [2], covariance [2, 2])


def _np(v) -> np.ndarray:
    return np.asarray(v.detach().cpu() if isinstance(v, Tensor) else v, dtype=float)


def _limits(points: list[np.ndarray], gausses: list[Gauss], pad: float = 0.15) -> tuple:
    """Square-ish axis limits (x0, x1, y0, y1) around points [n, 2] and 2σ ellipses."""
    lo = np.min([p.min(0) for p in points], 0)
    hi = np.max([p.max(0) for p in points], 0)
    for mean, cov in gausses:
        sd = 2.1 * np.sqrt(np.diag(_np(cov)))
        lo, hi = np.minimum(lo, _np(mean) - sd), np.maximum(hi, _np(mean) + sd)
    span = (hi - lo).max() * (1 + 2 * pad)
    mid = (hi + lo) / 2
    return mid[0] - span / 2, mid[0] + span / 2, mid[1] - span / 2, mid[1] + span / 2


def _particles(
    ax: Axes,
    z: Tensor,
    wbar: np.ndarray,
    posterior: Gauss,
    proposal: Gauss,
    special: int | None = None,
    special_label: str = "",
    limits: tuple | None = None,
) -> None:
    """Particles numbered 1..S with marker area ∝ w̄, posterior and proposal ellipses."""
    z = _np(z)
    gaussian_ellipse(
        ax, posterior[0], posterior[1], color=COLORS["exact"], lw=1.2, label="p(z | x)"
    )
    gaussian_ellipse(
        ax, proposal[0], proposal[1], color=COLORS["iwae"], lw=1, ls="--", label="q(z)"
    )
    others = [j for j in range(len(z)) if j != special]
    ax.scatter(
        z[others, 0], z[others, 1], s=15 + 400 * wbar[others], color=COLORS["fresh"], zorder=3
    )
    if special is not None:
        ax.scatter(
            *z[special],
            s=40 + 400 * wbar[special],
            marker="*",
            color=COLORS["x"],
            zorder=4,
            label=special_label,
        )
    for j, (a, b) in enumerate(z):
        ax.annotate(str(j + 1), (a, b), (4, 4), textcoords="offset points", fontsize=7)
    if limits is not None:
        ax.set_xlim(limits[0], limits[1])
        ax.set_ylim(limits[2], limits[3])
    ax.set_xlabel("z₁")
    ax.set_ylabel("z₂")


def extended_target(
    axes: list[Axes],
    iwae_set: CISState,
    target_set: CISState,
    s: int,
    posterior: Gauss,
    proposal: Gauss,
) -> list[Axes]:
    """Three panels: (a) z_{1:S} ~ q^S, IWAE's sample; (b) a draw from π̄: slot s holds an
    exact posterior draw, the other slots proposal draws; (c) π̄(s = j | z_{1:S}) = w̄_j for
    the set of (b), with the slot that really holds the posterior draw marked.

    ``iwae_set`` and ``target_set`` hold one set each (row 0 is drawn); marker areas ∝ w̄.
    """
    w_iwae = _np(normalized_weights(iwae_set.log_weights[0]))
    w_pi = _np(normalized_weights(target_set.log_weights[0]))
    S = len(w_pi)
    lim = _limits([_np(iwae_set.particles[0]), _np(target_set.particles[0])], [posterior, proposal])
    _particles(axes[0], iwae_set.particles[0], w_iwae, posterior, proposal, limits=lim)
    axes[0].set_title("(a) IWAE: every slot from q", fontsize=9)
    axes[0].legend(fontsize=6, loc="upper left", markerscale=0.5)
    label = f"slot s = {s + 1} ~ p(z|x)"
    _particles(axes[1], target_set.particles[0], w_pi, posterior, proposal, s, label, lim)
    axes[1].set_title("(b) π̄: slot s from p(z | x), the rest from q", fontsize=9)
    axes[1].legend(fontsize=6, loc="upper left", markerscale=0.5)
    ax = axes[2]
    colors = [COLORS["x"] if j == s else COLORS["fresh"] for j in range(S)]
    ax.bar(np.arange(1, S + 1), w_pi, color=colors)
    ax.axhline(1 / S, color="k", lw=0.8, ls=":", label="1/S (uniform)")
    ax.set_xticks(np.arange(1, S + 1))
    ax.set_xlabel("slot j")
    ax.set_ylabel("π̄(s = j | z₁..z_S) = w̄_j")
    ax.set_title("(c) given the set, s is drawn ∝ the weights", fontsize=9)
    ax.legend(fontsize=7)
    return axes


def draw_cis_step(
    ax_latent: Axes,
    ax_weights: Axes,
    state: CISState,
    index: int | None,
    posterior: Gauss,
    trail: np.ndarray | None = None,
    limits: tuple[float, float, float, float] | None = None,
    row: int = 0,
) -> tuple[Axes, Axes]:
    """One CIS step X_t → X_{t+1} for chain ``row``: the set X_t (slot 1 = the reference, a
    large blue dot; fresh draws grey, area ∝ w̄), the selected slot ℓ ringed in green, and the
    selection probabilities w̄ as bars. ``trail`` [n, 2] draws the earlier references."""
    z = _np(state.particles[row])
    w = _np(normalized_weights(state.log_weights[row]))
    S = len(w)
    gaussian_ellipse(
        ax_latent, posterior[0], posterior[1], color=COLORS["exact"], lw=1, ls="--", label="p(z|x)"
    )
    if trail is not None and len(trail) > 1:
        ax_latent.plot(trail[:, 0], trail[:, 1], "-", color=COLORS["x"], alpha=0.35, lw=1)
    ax_latent.scatter(
        z[1:, 0], z[1:, 1], s=15 + 400 * w[1:], color=COLORS["fresh"], label="fresh draws", zorder=3
    )
    ax_latent.scatter(*z[0], s=60 + 400 * w[0], color=COLORS["x"], label="reference", zorder=4)
    if index is not None:
        ax_latent.scatter(
            *z[index], s=300 + 400 * w[index], facecolor="none", edgecolor="tab:green", lw=2,
            label="selected ℓ", zorder=5,
        )  # fmt: skip
    for j, (a, b) in enumerate(z):
        ax_latent.annotate(str(j + 1), (a, b), (4, 4), textcoords="offset points", fontsize=7)
    if limits is not None:
        ax_latent.set_xlim(limits[0], limits[1])
        ax_latent.set_ylim(limits[2], limits[3])
    ax_latent.set_xlabel("z₁")
    ax_latent.set_ylabel("z₂")
    ax_latent.legend(fontsize=6, loc="upper left", markerscale=0.5)
    colors = [COLORS["x"]] + [COLORS["fresh"]] * (S - 1)
    bars = ax_weights.bar(np.arange(1, S + 1), w, color=colors)
    if index is not None:
        bars[index].set_edgecolor("tab:green")
        bars[index].set_linewidth(2.5)
    ax_weights.set_xticks(np.arange(1, S + 1))
    ax_weights.set_xlabel("slot (1 = reference)")
    ax_weights.set_ylabel("P(select slot) = w̄")
    ax_weights.set_ylim(0, 1.05)
    return ax_latent, ax_weights


def _node(ax: Axes, t: float, y: float, text: str, color: str, met: bool) -> None:
    face = "#d9f2d9" if met else "white"
    ax.add_patch(
        Rectangle((t - 0.32, y - 0.16), 0.64, 0.32, facecolor=face, edgecolor=color, lw=1.5)
    )
    ax.text(t, y, text, ha="center", va="center", fontsize=9)


def _arrow(ax: Axes, a: tuple[float, float], b: tuple[float, float], color="0.4", **kw) -> None:
    ax.add_patch(FancyArrowPatch(a, b, arrowstyle="-|>", mutation_scale=9, color=color, **kw))


def lag_chains_timeline(
    ax: Axes, run, k: int, m: int, pair: int = 0, h_x: Tensor | None = None, h_y=None
) -> Axes:
    """The lag-1 chains of one recorded pair as a timeline, with the terms of H_{k:m} marked.

    Top row X_0, X_1, …; bottom row Y_0, Y_1, …, with Y_{t−1} under X_t (the two move together
    by the coupled kernel K̄). From τ on, X_t = Y_{t−1} (green). Shaded: the steps k..m whose
    h(X_t) are averaged, each with weight 1/(m−k+1). Red: the corrections h(X_t) − h(Y_{t−1}),
    t = k+1..τ−1, each with its weight min(1, (t−k)/(m−k+1)). ``run``: a ``CoupledRun`` (record
    it with m ≥ τ to see X_τ: a pair stops at max(τ − 1, m) otherwise); steps up to max(τ, m)
    are drawn. ``h_x`` [T+1], ``h_y`` [T] (optional): values printed beside the nodes.
    """
    tau = int(run.tau[pair])
    T = run.steps
    running = [bool(r[pair]) for r in run.running]
    last = min(max(t for t in range(T + 1) if running[t]), max(tau, m))
    yx, yy = 1.0, 0.0
    ax.add_patch(
        Rectangle((k - 0.45, yx - 0.3), m - k + 0.9, 0.6, color=COLORS["x"], alpha=0.12, lw=0)
    )
    ax.text(
        (k + m) / 2, yx + 0.42, f"average: weight 1/{m - k + 1} on h(X_t), t = {k}..{m}",
        ha="center", fontsize=8, color=COLORS["x"],
    )  # fmt: skip
    for t in range(last + 1):
        _timeline_step(ax, t, t >= tau, t < last, (yx, yy), h_x, h_y)
    for t in range(k + 1, min(tau, last + 1)):
        w = correction_weight(t, k, m)
        _arrow(ax, (t + 0.05, yy + 0.17), (t + 0.05, yx - 0.17), color="tab:red", lw=1.2)
        ax.text(t + 0.1, (yx + yy) / 2, f"×{w:.2g}", fontsize=7.5, color="tab:red", va="center")
    ax.axvline(tau - 0.5, color="tab:green", ls="--", lw=1)
    ax.text(tau - 0.45, yx + 0.42, f"τ = {tau}: X_τ = Y_(τ−1)", color="tab:green", fontsize=8)
    _timeline_captions(ax, (yx, yy))
    ax.set_xlim(-2.6, last + 0.6)
    ax.set_ylim(yy - 0.65, yx + 0.6)
    ax.set_axis_off()
    ax.set_title(
        f"lag-1 coupled chains, S = {run.num_samples}, (k, m) = ({k}, {m}): τ = {tau}", fontsize=9
    )
    return ax


def _timeline_step(
    ax: Axes, t: int, met: bool, more: bool, rows: tuple[float, float], h_x=None, h_y=None
) -> None:
    """Step t of the timeline: X_t on the top row, Y_{t−1} below it (t ≥ 1), green once met
    (with "=" between them), arrows to step t + 1 if ``more``, and h values if given."""
    yx, yy = rows
    _node(ax, t, yx, f"$X_{{{t}}}$", COLORS["x"], met)
    if h_x is not None:
        ax.text(t, yx + 0.22, f"{float(h_x[t]):.2f}", ha="center", fontsize=6.5, color="0.3")
    if more:
        _arrow(ax, (t + 0.33, yx), (t + 0.67, yx))
    if t >= 1:
        _node(ax, t, yy, f"$Y_{{{t - 1}}}$", COLORS["y"], met)
        if h_y is not None:
            ax.text(t, yy - 0.3, f"{float(h_y[t - 1]):.2f}", ha="center", fontsize=6.5, color="0.3")
        if more:
            _arrow(ax, (t + 0.33, yy), (t + 0.67, yy))
    if met:
        ax.text(t, (yx + yy) / 2, "=", ha="center", va="center", fontsize=12, color="tab:green")


def _timeline_captions(ax: Axes, rows: tuple[float, float]) -> None:
    """How the chains move (below the timeline) and what the red arrows are (left of it)."""
    yx, yy = rows
    ax.text(
        -0.45, yy - 0.5,
        "X_0, Y_0 ~ q^S;  X_1 ~ K(X_0);  then (X_t+1, Y_t) ~ K̄(X_t, Y_t−1).  "
        "Small numbers: h (first coordinate).",
        fontsize=7, color="0.3",
    )  # fmt: skip
    ax.text(
        -0.5, (yx + yy) / 2, "red: h(X_t) − h(Y_(t−1))\n× min(1, (t−k)/(m−k+1))",
        fontsize=7, color="tab:red", va="center", ha="right",
    )  # fmt: skip


def selection_bars(
    ax: Axes, wx: Tensor, wy: Tensor, ix: int | None = None, iy: int | None = None
) -> Axes:
    """The selection probabilities of a coupled step: w̄ of X_t (blue) and of Y_{t−1} (orange)
    per slot, their overlap min(w̄^X, w̄^Y) hatched (its total α is P(ℓ_X = ℓ_Y)), and the
    selected slots. Slot 1 holds each chain's own reference (two different particles);
    slots 2..S are the fresh draws the two sets share, where selecting the same slot is meeting.
    """
    wx, wy = _np(wx), _np(wy)
    S = len(wx)
    idx = np.arange(1, S + 1)
    overlap = np.minimum(wx, wy)
    ax.bar(idx - 0.2, wx, width=0.4, color=COLORS["x"], alpha=0.75, label="w̄ of X_t")
    ax.bar(idx + 0.2, wy, width=0.4, color=COLORS["y"], alpha=0.75, label="w̄ of Y_t−1")
    ax.bar(
        idx, overlap, width=0.8, fill=False, hatch="//", edgecolor="k",
        label=f"overlap: α = {overlap.sum():.2f}",
    )  # fmt: skip
    top = max(wx.max(), wy.max())
    for slot, who, dx, color in ((ix, "ℓ_X", -0.2, COLORS["x"]), (iy, "ℓ_Y", 0.2, COLORS["y"])):
        if slot is None or slot < 0:
            continue
        h = (wx if who == "ℓ_X" else wy)[slot]
        ax.annotate(
            who, (slot + 1 + dx, h), (slot + 1 + dx, h + 0.15 * top + 0.02), ha="center",
            fontsize=8, arrowprops={"arrowstyle": "->", "color": color},
        )  # fmt: skip
    ax.set_xticks(idx, ["1\n(own ref)"] + [str(j) for j in idx[1:]])
    ax.tick_params(axis="x", labelsize=7)
    ax.set_xlabel("slot (2..S: shared fresh draws)")
    ax.set_ylabel("selection probability")
    ax.set_ylim(0, 1.6 * top + 0.05)
    ax.legend(fontsize=7, loc="upper right")
    return ax
