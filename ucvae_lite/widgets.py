"""Widget factories for the notebooks: thin wrappers over tested functions in ``teaching``.

Each factory returns an ``ipywidgets.VBox`` to ``display(...)``. The figure is rendered to PNG
into an ``ipywidgets.Image`` (works in JupyterLab without an interactive matplotlib backend);
the controls and outputs are attributes of the returned box, so tests can drive a widget by
setting ``.value`` on a slider and check that ``box.image.value`` and ``box.summary.value``
change. Callbacks only call ``teaching``/``viz`` functions and re-render. Notebook 06's widget
is in ``widgets_practical``.
"""

from __future__ import annotations

from collections.abc import Callable

import ipywidgets as W
import torch
from torch import Tensor

from . import teaching, viz
from .linear_gaussian import LinearGaussian
from .targets import Target


def _image() -> W.Image:
    return W.Image(format="png", layout=W.Layout(max_width="720px"))


def coupling_widget(num_slots: int = 5, n: int = 2000, seed: int = 0) -> W.VBox:
    """Sliders for two weight vectors p and q; shows both, their overlap and a joint draw.

    Attributes: ``p_sliders``, ``q_sliders`` (FloatSliders), ``redraw`` (Button for a new
    joint draw), ``image``, ``summary`` (HTML with α and the empirical P(i = j)), ``update()``.
    """
    g = torch.Generator().manual_seed(seed)
    init_p = torch.rand(num_slots, generator=g, device="cpu").tolist()
    init_q = torch.rand(num_slots, generator=g, device="cpu").tolist()

    def slider(i: int, v: float, who: str) -> W.FloatSlider:
        return W.FloatSlider(
            value=round(v, 2),
            min=0.0,
            max=1.0,
            step=0.01,
            description=f"{who}[{i}]",
            continuous_update=False,
            layout=W.Layout(width="260px"),
        )

    p_sl = [slider(i, v, "p") for i, v in enumerate(init_p)]
    q_sl = [slider(i, v, "q") for i, v in enumerate(init_q)]
    redraw = W.Button(description="new joint draw")
    image, summary = _image(), W.HTML()
    box = W.VBox([W.HBox([W.VBox(p_sl), W.VBox(q_sl)]), redraw, summary, image])
    box.p_sliders, box.q_sliders, box.redraw, box.image, box.summary = (
        p_sl,
        q_sl,
        redraw,
        image,
        summary,
    )
    box.draw_seed = seed

    def update(_=None) -> None:
        p = [s.value for s in p_sl]
        q = [s.value for s in q_sl]
        if sum(p) <= 0 or sum(q) <= 0:
            summary.value = "<b>Give each distribution some positive weight.</b>"
            return
        res = teaching.coupling_draws(p, q, n=n, seed=box.draw_seed)
        fig = viz.new_figure(size=(6.0, 3.4))
        viz.categorical_coupling(fig.axes[0], res.p, res.q, res.draw)
        image.value = viz.to_png(fig)
        summary.value = (
            f"overlap α = Σ min(p, q) = <b>{res.alpha:.3f}</b>; in {res.n} joint draws "
            f"i = j in <b>{res.frac_equal:.3f}</b> of them (maximal: no coupling does better)."
        )

    def new_draw(_=None) -> None:
        box.draw_seed += 1
        update()

    for s in p_sl + q_sl:
        s.observe(update, names="value")
    redraw.on_click(new_draw)
    box.update = update
    update()
    return box


def coupled_chains_widget(
    model: LinearGaussian,
    x: Tensor,
    num_samples: int = 5,
    shift: float = 0.5,
    scale: float = 1.5,
    seed: int = 0,
    max_steps: int = 200,
) -> W.VBox:
    """Step two lag-1 coupled CIS chains on a 2-D latent and watch them meet.

    Controls: ``step`` (t, IntSlider), ``S``, ``scale`` (proposal width / posterior width),
    ``seed``. Changing S, scale or seed re-runs ``teaching.lag_coupled_chains`` for one chain
    pair; moving ``step`` redraws X_t and Y_{t−1} with ``viz.coupled_chains_step``.
    """
    if model.latent_dim != 2:
        raise ValueError(f"the chains widget draws a 2-D latent, got latent_dim={model.latent_dim}")
    x = x[:1]
    post_mean, post_cov = (v[0] for v in model.posterior(x))
    half = 3.5 * post_cov.diagonal().sqrt().max().item() * max(scale, 1.0) + abs(shift)
    limits = (
        post_mean[0].item() - half,
        post_mean[0].item() + half,
        post_mean[1].item() - half,
        post_mean[1].item() + half,
    )

    step = W.IntSlider(value=1, min=1, max=1, description="step t")
    S = W.IntSlider(value=num_samples, min=2, max=20, description="S", continuous_update=False)
    sc = W.FloatSlider(
        value=scale, min=0.3, max=3.0, step=0.1, description="q width", continuous_update=False
    )
    sd = W.IntText(value=seed, description="seed", layout=W.Layout(width="160px"))
    image, summary = _image(), W.HTML()
    box = W.VBox([W.HBox([S, sc, sd]), step, summary, image])
    box.step, box.S, box.scale, box.seed, box.image, box.summary = step, S, sc, sd, image, summary
    box.run = None

    def rerun(_=None) -> None:
        target = model.target(x, shift=shift, scale=sc.value)
        g = torch.Generator().manual_seed(int(sd.value))
        # m = max_steps: the pair keeps running after it meets, so step τ can be shown.
        box.run = teaching.lag_coupled_chains(target, S.value, max_steps, max_steps, g)
        tau = int(box.run.tau[0])
        # Show one step past the meeting (or the last recorded step).
        step.max = max(2, min(tau, box.run.steps))
        if step.value == 1:
            redraw()
        else:
            step.value = 1  # triggers redraw

    def redraw(_=None) -> None:
        run, t = box.run, step.value
        tau = int(run.tau[0])
        met = t >= tau
        fig = viz.new_figure(size=(5.2, 4.6))
        viz.coupled_chains_step(
            fig.axes[0], run.xs[t], run.ys[t - 1], t, met, (post_mean, post_cov), limits
        )
        image.value = viz.to_png(fig)
        hx, hy = run.h_x()[t, 0], run.h_y()[t - 1, 0]
        meet = f"τ = {tau}" if tau <= run.steps else f"not met within {run.steps} steps"
        summary.value = (
            f"{meet}. h(X_t) = ({hx[0]:.3f}, {hx[1]:.3f}), "
            f"h(Y_{{t−1}}) = ({hy[0]:.3f}, {hy[1]:.3f})"
            + ("; the chains are identical from here on." if met else ".")
        )

    step.observe(redraw, names="value")
    for w in (S, sc, sd):
        w.observe(rerun, names="value")
    box.rerun, box.redraw = rerun, redraw
    rerun()
    return box


def variance_widget(
    make_target: Callable[[int], Target],
    num_samples: int = 5,
    k: int = 0,
    m: int = 0,
    seed: int = 0,
) -> W.VBox:
    """Sliders for k, m and S; shows variance, cost and variance × cost of H_{k:m} vs IWAE.

    ``make_target(replicates)`` returns a target whose rows are replicates of one data point.
    Each change calls ``teaching.variance_cost`` for the coupled estimator and for IWAE at the
    same S, with the replicate count of the ``replicates`` slider.
    """
    kk = W.IntSlider(value=k, min=0, max=10, description="k", continuous_update=False)
    mm = W.IntSlider(value=m, min=0, max=20, description="m", continuous_update=False)
    S = W.IntSlider(value=num_samples, min=2, max=30, description="S", continuous_update=False)
    reps = W.IntSlider(
        value=500, min=100, max=5000, step=100, description="replicates", continuous_update=False
    )
    image, summary = _image(), W.HTML()
    box = W.VBox([W.HBox([kk, mm]), W.HBox([S, reps]), summary, image])
    box.k, box.m, box.S, box.replicates, box.image, box.summary = kk, mm, S, reps, image, summary
    box.history = []

    def update(_=None) -> None:
        if mm.value < kk.value:
            mm.value = kk.value  # triggers update again
            return
        g = torch.Generator().manual_seed(seed)
        coupled = teaching.variance_cost(make_target(reps.value), S.value, kk.value, mm.value, g)
        iwae = teaching.variance_cost(make_target(reps.value), S.value, generator=g)
        box.history.append((S.value, kk.value, mm.value, coupled))
        fig = viz.new_figure(ncols=3, size=(2.6, 2.8))
        names = ["H_{k:m}", "IWAE"]
        for ax, key, title in zip(
            fig.axes,
            ["var", "cost", "work"],
            ["variance", "cost (evals)", "variance × cost"],
            strict=True,
        ):
            vals = [getattr_value(coupled, key), getattr_value(iwae, key)]
            ax.bar(names, vals, color=[viz.COLORS["x"], viz.COLORS["iwae"]])
            ax.set_title(title, fontsize=9)
            if key != "cost":
                ax.set_yscale("log")
        image.value = viz.to_png(fig)
        summary.value = (
            f"S = {S.value}, (k, m) = ({kk.value}, {mm.value}): variance "
            f"{coupled.variance.mean():.4f} (IWAE {iwae.variance.mean():.4f}), cost "
            f"{coupled.cost:.1f} evals (IWAE {iwae.cost:.0f}), mean τ {coupled.mean_tau:.2f}; "
            f"variance × cost = <b>{coupled.work / iwae.work:.1f}×</b> IWAE's "
            "(IWAE's bias is not in this number)."
        )

    for w in (kk, mm, S, reps):
        w.observe(update, names="value")
    box.update = update
    update()
    return box


def getattr_value(vc: teaching.VarianceCost, key: str) -> float:
    """The bar heights of ``variance_widget``: mean variance, cost or variance × cost."""
    return {"var": vc.variance.mean().item(), "cost": vc.cost, "work": vc.work}[key]
