"""Widget factories for notebooks 01–04: thin wrappers over tested functions in ``teaching``.

Each factory returns an ``ipywidgets.VBox`` to ``display(...)``. The figure is rendered to PNG
into an ``ipywidgets.Image`` (works in JupyterLab without an interactive matplotlib backend);
the controls and outputs are attributes of the returned box, so tests can drive a widget by
setting ``.value`` on a slider and check that ``box.image.value`` and ``box.summary.value``
change. Each widget is three parts: its controls (``_..._controls``), its computation (a pure,
tested function in ``teaching``) and its drawing (``_..._png``, ``_..._text``); the callbacks
only connect them. Notebook 06's widget is in ``widgets.practical``, 07's in
``widgets.landscape``.
"""

from __future__ import annotations

import math
from contextlib import contextmanager
from functools import wraps

import ipywidgets as W
import torch
from torch import Tensor

from ucvae_lite.lab import teaching
from ucvae_lite.lab.plots import diagrams, viz
from ucvae_lite.models.linear_gaussian import LinearGaussian


@contextmanager
def _one_thread():
    """Run a widget update on one torch thread: its tensors are small, and on a busy 2-core
    machine two threads make each update many times slower, not faster."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(n)


def _single_threaded(callback):
    """``callback`` run under ``_one_thread``."""

    @wraps(callback)
    def run(*args, **kwargs):
        with _one_thread():
            return callback(*args, **kwargs)

    return run


def _image() -> W.Image:
    return W.Image(format="png", layout=W.Layout(max_width="720px"))


def _slider(value: int, low: int, high: int, name: str) -> W.IntSlider:
    """An integer slider that updates on release."""
    return W.IntSlider(value=value, min=low, max=high, description=name, continuous_update=False)


def _observe(callback, *controls) -> None:
    for control in controls:
        control.observe(callback, names="value")


# --- notebook 03: the maximal coupling of two categoricals ----------------------------------


def coupling_widget(num_slots: int = 5, n: int = 2000, seed: int = 0) -> W.VBox:
    """Sliders for two weight vectors p and q; shows both, their overlap and a joint draw.

    Attributes: ``p_sliders``, ``q_sliders`` (FloatSliders), ``redraw`` (Button for a new
    joint draw), ``image``, ``summary`` (HTML with α and the empirical P(i = j)), ``update()``.
    """
    box = _coupling_controls(num_slots, seed)
    box.draw_seed = seed

    @_single_threaded
    def update(_=None) -> None:
        p = [s.value for s in box.p_sliders]
        q = [s.value for s in box.q_sliders]
        if sum(p) <= 0 or sum(q) <= 0:
            box.summary.value = "<b>Give each distribution some positive weight.</b>"
            return
        res = teaching.coupling_draws(p, q, n=n, seed=box.draw_seed)
        box.image.value = _coupling_png(res)
        box.summary.value = (
            f"overlap α = Σ min(p, q) = <b>{res.alpha:.3f}</b>; in {res.n} joint draws "
            f"i = j in <b>{res.frac_equal:.3f}</b> of them (maximal: no coupling does better)."
        )

    def new_draw(_=None) -> None:
        box.draw_seed += 1
        update()

    _observe(update, *box.p_sliders, *box.q_sliders)
    box.redraw.on_click(new_draw)
    box.update = update
    update()
    return box


def _coupling_controls(num_slots: int, seed: int) -> W.VBox:
    """Random initial weights p, q (from ``seed``), one slider per slot, and a redraw button."""
    g = torch.Generator().manual_seed(seed)
    init = {who: torch.rand(num_slots, generator=g, device="cpu").tolist() for who in "pq"}

    def slider(i: int, v: float, who: str) -> W.FloatSlider:
        return W.FloatSlider(
            value=round(v, 2), min=0.0, max=1.0, step=0.01, description=f"{who}[{i}]",
            continuous_update=False, layout=W.Layout(width="260px"),
        )  # fmt: skip

    p_sl = [slider(i, v, "p") for i, v in enumerate(init["p"])]
    q_sl = [slider(i, v, "q") for i, v in enumerate(init["q"])]
    redraw, image, summary = W.Button(description="new joint draw"), _image(), W.HTML()
    box = W.VBox([W.HBox([W.VBox(p_sl), W.VBox(q_sl)]), redraw, summary, image])
    box.p_sliders, box.q_sliders, box.redraw = p_sl, q_sl, redraw
    box.image, box.summary = image, summary
    return box


def _coupling_png(res: teaching.CouplingDraws) -> bytes:
    fig = viz.new_figure(size=(6.0, 3.4))
    viz.categorical_coupling(fig.axes[0], res.p, res.q, res.draw)
    return viz.to_png(viz.plain_log_ticks(fig))


# --- shared by the chain widgets: the proposal and the 2-D picture --------------------------


def _limits(model: LinearGaussian, x: Tensor, shift: float, scale: float) -> tuple:
    """Square axis limits around the posterior of x [1, p] and a proposal (shift, scale)."""
    post_mean, post_cov = (v[0] for v in model.posterior(x))
    half = 3.2 * post_cov.diagonal().sqrt().max().item() * max(scale, 1.0) + abs(shift)
    cx, cy = post_mean[0].item() + shift / 2, post_mean[1].item() + shift / 2
    return (cx - half, cx + half, cy - half, cy + half)


def _proposal_sliders(shift: float, scale: float, min_scale: float = 0.3) -> tuple:
    """Sliders for the proposal N(μ + shift·1, scale² Σ) built from the exact posterior."""
    sh = W.FloatSlider(
        value=shift, min=-1.0, max=1.0, step=0.1, description="q shift", continuous_update=False
    )
    sc = W.FloatSlider(
        value=scale, min=min_scale, max=4.0, step=0.1, description="q width",
        continuous_update=False,
    )  # fmt: skip
    return sh, sc


def _chain_controls(
    model: LinearGaussian, step: W.IntSlider, num_samples: int, shift: float, scale: float,
    seed: int,
) -> W.VBox:  # fmt: skip
    """The controls of the CIS and coupled-chains widgets: ``step`` (t), ``S``, ``shift`` and
    ``scale`` (the proposal), ``seed``; and their ``image`` and ``summary``."""
    if model.latent_dim != 2:
        raise ValueError(f"the chain widgets draw a 2-D latent, got latent_dim={model.latent_dim}")
    S = _slider(num_samples, 2, 20, "S")
    sh, sc = _proposal_sliders(shift, scale)
    sd = W.IntText(value=seed, description="seed", layout=W.Layout(width="160px"))
    image, summary = _image(), W.HTML()
    box = W.VBox([W.HBox([S, sd]), W.HBox([sh, sc]), step, summary, image])
    box.step, box.S, box.shift, box.scale, box.seed = step, S, sh, sc, sd
    box.image, box.summary = image, summary
    return box


def _posterior(model: LinearGaussian, x: Tensor) -> tuple[Tensor, Tensor]:
    """(mean [2], covariance [2, 2]) of p(z | x) for one data point x [1, p]."""
    mean, cov = model.posterior(x)
    return mean[0], cov[0]


# --- notebook 01: the IWAE bound and its gradient against S ---------------------------------

IWAE_SIZES = [1, 2, 5, 10, 20, 50, 100]  # the S values of iwae_widget


def iwae_widget(
    model: LinearGaussian,
    x: Tensor,
    num_samples: int = 10,
    shift: float = 0.5,
    scale: float = 1.5,
    replicates: int = 600,
    bound_replicates: int = 3000,
    seed: int = 0,
) -> W.VBox:
    """IWAE against S: the bound L_S and the bias of IWAE's θ-gradient, against exact values.

    Controls: ``S`` (SelectionSlider over ``IWAE_SIZES``), ``shift`` and ``scale`` (the
    proposal; width ≥ 0.8, where Var_q[w] is finite). Changing the proposal re-measures the
    curves (``teaching.iwae_curve``: ``replicates`` gradients and ``bound_replicates`` bounds
    per S; cached per proposal); moving S only moves the marker and the numbers. Attributes:
    ``S``, ``shift``, ``scale``, ``image``, ``summary``, ``curve`` (the current
    ``teaching.IWAECurve``), ``update()``.
    """
    x = x[:1]
    S = W.SelectionSlider(
        options=IWAE_SIZES, value=num_samples, description="S", continuous_update=False
    )
    sh, sc = _proposal_sliders(shift, scale, min_scale=0.8)
    image, summary = _image(), W.HTML()
    box = W.VBox([W.HBox([S, sh, sc]), summary, image])
    box.S, box.shift, box.scale, box.image, box.summary = S, sh, sc, image, summary
    cache: dict[tuple[float, float], teaching.IWAECurve] = {}

    @_single_threaded
    def update(_=None) -> None:
        key = (round(sh.value, 3), round(sc.value, 3))
        if key not in cache:
            g = torch.Generator().manual_seed(seed)
            cache[key] = teaching.iwae_curve(
                model, x, IWAE_SIZES, replicates, *key, g, bound_replicates=bound_replicates
            )
        box.curve = cache[key]
        image.value = _iwae_png(box.curve, S.value)
        summary.value = _iwae_text(box.curve, S.value)

    _observe(update, S, sh, sc)
    box.update = update
    update()
    return box


def _iwae_png(curve: teaching.IWAECurve, S: int) -> bytes:
    fig = viz.widget_figure(ncols=3, size=(3.2, 3.0))
    viz.iwae_panels(fig.axes, curve, highlight=S)
    return viz.to_png(viz.plain_log_ticks(fig))


def _iwae_text(curve: teaching.IWAECurve, S: int) -> str:
    i = curve.num_samples.index(S)
    grad = (
        "S = 1 has no self-normalised gradient"
        if S < 2
        else f"‖IWAE gradient bias‖ = <b>{curve.grad_bias[i]:.3f}</b> (noise floor "
        f"{curve.grad_floor[i]:.3f}; largest |z| {curve.grad_max_z[i]:.1f})"
    )
    return (
        f"S = {S}: L_S = {curve.bound[i]:.4f} ± {curve.gap_se[i]:.4f}, log p(x) = "
        f"{curve.log_px:.4f}: gap <b>{curve.gap[i]:.4f}</b>; the delta method predicts "
        f"V/(2S) = {curve.predicted_gap[i]:.4f} (V = Var_q[w/p(x)] = {curve.variance:.2f}, "
        f"exact). {grad}."
    )


# --- notebook 02: one CIS chain, step by step -----------------------------------------------


def cis_chain_widget(
    model: LinearGaussian,
    x: Tensor,
    num_samples: int = 5,
    shift: float = 0.5,
    scale: float = 1.5,
    steps: int = 30,
    seed: int = 0,
) -> W.VBox:
    """Step one CIS chain on the 2-D latent: the set X_t, its weights w̄ and the selected slot.

    Controls: ``step`` (t), ``S``, ``shift``, ``scale`` (the proposal), ``seed``. Changing
    S, the proposal or the seed re-runs ``teaching.record_cis_chain`` for ``steps`` steps;
    moving ``step`` redraws step t (``teaching.cis_step_view``, ``diagrams.draw_cis_step``).
    Attributes: those controls, ``image``, ``summary``, ``record`` (the
    ``teaching.CISRecord``), ``h`` (h(X_t), first coordinate), ``rerun()``, ``redraw()``.
    """
    x = x[:1]
    post = _posterior(model, x)
    step = W.IntSlider(value=0, min=0, max=steps - 1, description="step t")
    box = _chain_controls(model, step, num_samples, shift, scale, seed)

    @_single_threaded
    def rerun(_=None) -> None:
        target = model.target(x, shift=box.shift.value, scale=box.scale.value)
        g = torch.Generator().manual_seed(int(box.seed.value))
        box.record = teaching.record_cis_chain(target, box.S.value, steps, g)
        box.h = box.record.h()[:, 0, 0]
        box.limits = _limits(model, x, box.shift.value, box.scale.value)
        redraw()

    @_single_threaded
    def redraw(_=None) -> None:
        view = teaching.cis_step_view(box.record, step.value)
        box.image.value = _cis_png(view, box.h, post, box.limits, steps)
        box.summary.value = _cis_text(view)

    step.observe(redraw, names="value")
    _observe(rerun, box.S, box.shift, box.scale, box.seed)
    box.rerun, box.redraw = rerun, redraw
    rerun()
    return box


def _cis_png(
    view: teaching.CISStepView, h: Tensor, post: tuple[Tensor, Tensor], limits: tuple, steps: int
) -> bytes:
    """The set X_t and its selection (two panels), and h(X_t) along the chain so far."""
    t, ell = view.t, view.selected
    fig = viz.widget_figure(ncols=3, size=(3.3, 3.2))
    diagrams.draw_cis_step(
        fig.axes[0], fig.axes[1], view.state, ell, post, view.trail.numpy(), limits, view.row
    )
    fig.axes[0].set_title(f"X_{t}: reference and fresh draws", fontsize=9)
    fig.axes[1].set_title(f"select ℓ = {ell + 1} (green)", fontsize=9)
    ax = fig.axes[2]
    ax.plot(range(t + 1), h[: t + 1].numpy(), "o-", ms=3, color=viz.COLORS["x"])
    ax.axhline(post[0][0].item(), color="k", ls="--", lw=1, label="E[z₁ | x] (exact)")
    ax.set_xlim(-0.5, steps - 0.5)
    ax.set_xlabel("step t")
    ax.set_ylabel("h(X_t), first coordinate")
    ax.set_title("Σ w̄ z₁ along this chain", fontsize=9)
    ax.legend(fontsize=7)
    return viz.to_png(viz.plain_log_ticks(fig))


def _cis_text(view: teaching.CISStepView) -> str:
    t, ell, w = view.t, view.selected, view.weights
    what = (
        "keeps its reference (slot 1)"
        if ell == 0
        else f"moves to fresh draw {ell + 1}, which becomes the next reference"
    )
    return (
        f"t = {t}: w̄ = [{', '.join(f'{v:.2f}' for v in w.tolist())}]; the chain selects "
        f"slot <b>{ell + 1}</b> (probability {w[ell]:.2f}) and {what}. It left its "
        f"reference in {view.moves} of the {t} steps before this one."
    )


# --- notebook 03: two lag-1 coupled chains, step by step ------------------------------------


def coupled_chains_widget(
    model: LinearGaussian,
    x: Tensor,
    num_samples: int = 5,
    shift: float = 0.5,
    scale: float = 1.5,
    seed: int = 0,
    max_steps: int = 200,
) -> W.VBox:
    """Step two lag-1 coupled CIS chains on a 2-D latent and watch them meet, and why.

    Controls: ``step`` (t), ``S``, ``shift`` and ``scale`` (the proposal), ``seed``. Changing
    S, the proposal or the seed re-runs ``teaching.lag_coupled_chains`` for one chain pair;
    moving ``step`` redraws X_t and Y_{t−1} (``viz.coupled_chains_step``) beside their
    selection probabilities w̄^X, w̄^Y, the overlap α and the slots (ℓ_X, ℓ_Y) the coupling
    selects for the next step (``teaching.coupled_step``, ``diagrams.selection_bars``): the
    chains meet when both select the same shared fresh slot. Attributes: the controls,
    ``image``, ``summary``, ``run``.
    """
    x = x[:1]
    post = _posterior(model, x)
    step = W.IntSlider(value=1, min=1, max=1, description="step t")
    box = _chain_controls(model, step, num_samples, shift, scale, seed)
    box.run = None

    @_single_threaded
    def rerun(_=None) -> None:
        target = model.target(x, shift=box.shift.value, scale=box.scale.value)
        g = torch.Generator().manual_seed(int(box.seed.value))
        # m = max_steps: the pair keeps running after it meets, so that X_τ and the step into
        # it can be shown.
        box.run = teaching.lag_coupled_chains(target, box.S.value, max_steps, max_steps, g)
        box.limits = _limits(model, x, box.shift.value, box.scale.value)
        step.max = max(2, min(int(box.run.tau[0]), box.run.steps - 1))
        if step.value == 1:
            redraw()
        else:
            step.value = 1  # triggers redraw

    @_single_threaded
    def redraw(_=None) -> None:
        view = teaching.coupled_step(box.run, step.value)
        box.image.value = _coupled_png(box.run, view, post, box.limits)
        box.summary.value = _coupled_text(view, box.run.steps)

    step.observe(redraw, names="value")
    _observe(rerun, box.S, box.shift, box.scale, box.seed)
    box.rerun, box.redraw = rerun, redraw
    rerun()
    return box


def _coupled_png(
    run: teaching.CoupledRun, view: teaching.CoupledStep, post: tuple[Tensor, Tensor], limits
) -> bytes:
    t = view.t
    fig = viz.widget_figure(ncols=2, size=(4.4, 3.9))
    viz.coupled_chains_step(fig.axes[0], run.xs[t], run.ys[t - 1], t, view.met, post, limits)
    diagrams.selection_bars(fig.axes[1], view.wx, view.wy, *view.slots)
    fig.axes[1].set_title(f"selection for step {t} → {t + 1}", fontsize=9)
    return viz.to_png(viz.plain_log_ticks(fig))


def _coupled_text(view: teaching.CoupledStep, steps: int) -> str:
    t, (ix, iy) = view.t, view.slots
    meet = f"τ = {view.tau}" if view.tau <= steps else f"not met within {steps} steps"
    why = {
        "met": "The chains have met: identical sets, identical selections from here on.",
        "meet": (
            f"Both select slot {ix + 1}, a fresh draw the two sets share: "
            f"X_{t + 1} = Y_{t}, so they meet at τ = {t + 1}."
        ),
        "own references": (
            "Both select slot 1, but slot 1 holds each chain's own reference (two different "
            "particles): not met."
        ),
        "different": f"They select different slots ({ix + 1} and {iy + 1}): not met.",
    }[view.outcome]
    return (
        f"{meet}. Step t = {t}: overlap α = Σ min(w̄^X, w̄^Y) = <b>{view.alpha:.2f}</b> is the "
        f"chance that the coupling selects the same slot in both; it selected "
        f"(ℓ_X, ℓ_Y) = ({ix + 1}, {iy + 1}). {why}"
    )


# --- notebook 04: H_{k:m} against IWAE at equal compute -------------------------------------


def variance_widget(
    model: LinearGaussian,
    x: Tensor,
    num_samples: int = 5,
    k: int = 0,
    m: int = 0,
    shift: float = 0.5,
    scale: float = 1.5,
    replicates: int = 500,
    iwae_replicates: int = 20_000,
    seed: int = 0,
) -> W.VBox:
    """H_{k:m} against IWAE at the same S, for the posterior mean E[z | x]: variance × cost,
    IWAE's bias, and the mean squared error against the compute budget.

    Controls: ``k``, ``m``, ``S``, ``shift``, ``scale`` (the proposal) and ``replicates``
    (runs of H_{k:m}; IWAE, being cheap, gets ``iwae_replicates`` so its bias is resolved).
    Each change measures both (``teaching.variance_comparison``) and draws c·V, |bias|² and
    MSE(C) = |bias|² + c·V/C with the crossover budget C*. Attributes: the controls,
    ``image``, ``summary``, ``history`` ((S, k, m, VarianceCost of H_{k:m}) per update),
    ``budgets`` (the last pair of ``ErrorBudget``s), ``update()``.
    """
    x = x[:1]
    box = _variance_controls(num_samples, k, m, shift, scale, replicates)
    box.history = []

    @_single_threaded
    def update(_=None) -> None:
        if box.m.value < box.k.value:
            box.m.value = box.k.value  # triggers update again
            return
        S, kk, mm = box.S.value, box.k.value, box.m.value
        res = teaching.variance_comparison(
            model, x, S, kk, mm, box.shift.value, box.scale.value, box.replicates.value,
            iwae_replicates, torch.Generator().manual_seed(seed),
        )  # fmt: skip
        box.budgets = (res.coupled, res.iwae)
        box.history.append((S, kk, mm, res.variance_cost))
        box.image.value = _variance_png(res)
        box.summary.value = (
            f"S = {S}, (k, m) = ({kk}, {mm}), q shift {box.shift.value:.1f}, width "
            f"{box.scale.value:.1f}: " + _variance_text(res)
        )

    _observe(update, box.k, box.m, box.S, box.replicates, box.shift, box.scale)
    box.update = update
    update()
    return box


def _variance_controls(
    num_samples: int, k: int, m: int, shift: float, scale: float, replicates: int
) -> W.VBox:
    """Sliders ``k``, ``m``, ``S``, ``replicates``, ``shift``, ``scale``; ``image``, ``summary``."""
    kk, mm, S = _slider(k, 0, 10, "k"), _slider(m, 0, 20, "m"), _slider(num_samples, 2, 30, "S")
    reps = W.IntSlider(
        value=replicates, min=100, max=5000, step=100, description="replicates",
        continuous_update=False,
    )  # fmt: skip
    sh, sc = _proposal_sliders(shift, scale, min_scale=0.8)
    image, summary = _image(), W.HTML()
    box = W.VBox([W.HBox([kk, mm, S]), W.HBox([sh, sc, reps]), summary, image])
    box.k, box.m, box.S, box.replicates, box.shift, box.scale = kk, mm, S, reps, sh, sc
    box.image, box.summary = image, summary
    return box


def _variance_png(res: teaching.VarianceComparison) -> bytes:
    """Three panels: c·V of both, |bias|² ± 2 SE of both, MSE against the budget C with C*."""
    coupled, iwae = res.coupled, res.iwae
    fig = viz.widget_figure(ncols=3, size=(3.2, 3.0), wspace=0.55)
    names, colors = [coupled.name, iwae.name], [viz.COLORS["x"], viz.COLORS["iwae"]]
    fig.axes[0].bar(names, [coupled.cost * coupled.variance, iwae.cost * iwae.variance],
                    color=colors)  # fmt: skip
    fig.axes[0].set_yscale("log")
    fig.axes[0].set_ylabel("c · V (evaluations × variance)")
    fig.axes[0].set_title("noise per unit of compute", fontsize=9)
    fig.axes[1].bar(names, [coupled.bias2, iwae.bias2],
                    yerr=[2 * coupled.bias2_se, 2 * iwae.bias2_se], color=colors)  # fmt: skip
    fig.axes[1].axhline(0, color="k", lw=0.8)
    fig.axes[1].set_ylabel("|bias|² (± 2 SE)")
    fig.axes[1].set_title("squared bias", fontsize=9)
    c_star = res.crossover
    crossing = c_star is not None and c_star[0] > 0
    top = max(1e4, 10 * c_star[0]) if crossing else 1e5
    budgets = torch.logspace(0, math.log10(top), 60).numpy()
    viz.mse_vs_budget(fig.axes[2], budgets, [coupled, iwae], {"": c_star} if crossing else None)
    fig.axes[2].set_title("MSE of the average at budget C", fontsize=9)
    return viz.to_png(viz.plain_log_ticks(fig))


def _variance_text(res: teaching.VarianceComparison) -> str:
    coupled, iwae, c_star = res.coupled, res.iwae, res.crossover
    if c_star is None:
        verdict = "IWAE's bias is not resolved here (|bias|² < 4 SE): no crossover to report."
    elif c_star[0] <= 0:
        verdict = "H_{k:m} has the lower MSE at every budget."
    else:
        verdict = (
            f"H_{{k:m}} has the lower MSE once the budget exceeds <b>C* = {c_star[0]:,.0f} ± "
            f"{c_star[1]:,.0f}</b> evaluations."
        )
    work = coupled.cost * coupled.variance, iwae.cost * iwae.variance
    return (
        f"H_{{k:m}} costs {coupled.cost:.1f} evaluations (mean τ "
        f"{res.variance_cost.mean_tau:.2f}), c·V = {work[0]:.3g} vs IWAE's {work[1]:.3g} "
        f"(<b>{work[0] / work[1]:.1f}×</b>); IWAE's |bias|² = {iwae.bias2:.2e} ± "
        f"{iwae.bias2_se:.1e}, H's {coupled.bias2:.1e} ± {coupled.bias2_se:.1e}. {verdict}"
    )
