"""Widget factories for the notebooks: thin wrappers over tested functions in ``teaching``.

Each factory returns an ``ipywidgets.VBox`` to ``display(...)``. The figure is rendered to PNG
into an ``ipywidgets.Image`` (works in JupyterLab without an interactive matplotlib backend);
the controls and outputs are attributes of the returned box, so tests can drive a widget by
setting ``.value`` on a slider and check that ``box.image.value`` and ``box.summary.value``
change. Callbacks only call ``teaching``/``viz`` functions and re-render. Notebook 06's widget
is in ``widgets_practical``.
"""

from __future__ import annotations

import math
from contextlib import contextmanager
from functools import wraps

import ipywidgets as W
import torch
from torch import Tensor

from ucvae_lite.lab import teaching
from ucvae_lite.lab.plots import viz
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

    @_single_threaded
    def update(_=None) -> None:
        p = [s.value for s in p_sl]
        q = [s.value for s in q_sl]
        if sum(p) <= 0 or sum(q) <= 0:
            summary.value = "<b>Give each distribution some positive weight.</b>"
            return
        res = teaching.coupling_draws(p, q, n=n, seed=box.draw_seed)
        fig = viz.new_figure(size=(6.0, 3.4))
        viz.categorical_coupling(fig.axes[0], res.p, res.q, res.draw)
        image.value = viz.to_png(viz.plain_log_ticks(fig))
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

    Controls: ``S`` (SelectionSlider over ``SIZES``), ``shift`` and ``scale`` (the proposal;
    width ≥ 0.8, where Var_q[w] is finite). Changing the proposal re-measures the curves
    (``teaching.iwae_curve``: ``replicates`` gradients and ``bound_replicates`` bounds per S;
    cached per proposal); moving S
    only moves the marker and the numbers. Attributes: ``S``, ``shift``, ``scale``, ``image``,
    ``summary``, ``curve`` (the current ``teaching.IWAECurve``), ``update()``.
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
        curve = box.curve = cache[key]
        i = curve.num_samples.index(S.value)
        fig = viz.widget_figure(ncols=3, size=(3.2, 3.0))
        viz.iwae_panels(fig.axes, curve, highlight=S.value)
        image.value = viz.to_png(viz.plain_log_ticks(fig))
        grad = (
            "S = 1 has no self-normalised gradient"
            if S.value < 2
            else f"‖IWAE gradient bias‖ = <b>{curve.grad_bias[i]:.3f}</b> (noise floor "
            f"{curve.grad_floor[i]:.3f}; largest |z| {curve.grad_max_z[i]:.1f})"
        )
        summary.value = (
            f"S = {S.value}: L_S = {curve.bound[i]:.4f} ± {curve.gap_se[i]:.4f}, log p(x) = "
            f"{curve.log_px:.4f}: gap <b>{curve.gap[i]:.4f}</b>; the delta method predicts "
            f"V/(2S) = {curve.predicted_gap[i]:.4f} (V = Var_q[w/p(x)] = {curve.variance:.2f}, "
            f"exact). {grad}."
        )

    for w in (S, sh, sc):
        w.observe(update, names="value")
    box.update = update
    update()
    return box


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
    moving ``step`` redraws with ``diagrams.cis_step``. Attributes: those controls, ``image``,
    ``summary``, ``record`` (the ``teaching.CISRecord``), ``rerun()``, ``redraw()``.
    """
    if model.latent_dim != 2:
        raise ValueError(f"the CIS widget draws a 2-D latent, got latent_dim={model.latent_dim}")
    from ucvae_lite.lab.plots import diagrams

    x = x[:1]
    post = tuple(v[0] for v in model.posterior(x))
    exact = post[0][0].item()
    step = W.IntSlider(value=0, min=0, max=steps - 1, description="step t")
    S = W.IntSlider(value=num_samples, min=2, max=20, description="S", continuous_update=False)
    sh, sc = _proposal_sliders(shift, scale)
    sd = W.IntText(value=seed, description="seed", layout=W.Layout(width="160px"))
    image, summary = _image(), W.HTML()
    box = W.VBox([W.HBox([S, sd]), W.HBox([sh, sc]), step, summary, image])
    box.step, box.S, box.shift, box.scale, box.seed = step, S, sh, sc, sd
    box.image, box.summary = image, summary

    @_single_threaded
    def rerun(_=None) -> None:
        target = model.target(x, shift=sh.value, scale=sc.value)
        g = torch.Generator().manual_seed(int(sd.value))
        box.record = teaching.record_cis_chain(target, S.value, steps, g)
        box.h = torch.stack([teaching.h_values(s)[0, 0] for s in box.record.states])
        box.limits = _limits(model, x, sh.value, sc.value)
        redraw()

    @_single_threaded
    def redraw(_=None) -> None:
        rec, t = box.record, step.value
        ell = int(rec.indices[t][0])
        refs = torch.stack([s.particles[0, 0] for s in rec.states[: t + 1]]).numpy()
        fig = viz.widget_figure(ncols=3, size=(3.3, 3.2))
        diagrams.cis_step(fig.axes[0], fig.axes[1], rec.states[t], ell, post, refs, box.limits)
        fig.axes[0].set_title(f"X_{t}: reference and fresh draws", fontsize=9)
        fig.axes[1].set_title(f"select ℓ = {ell + 1} (green)", fontsize=9)
        ax = fig.axes[2]
        ax.plot(range(t + 1), box.h[: t + 1].numpy(), "o-", ms=3, color=viz.COLORS["x"])
        ax.axhline(exact, color="k", ls="--", lw=1, label="E[z₁ | x] (exact)")
        ax.set_xlim(-0.5, steps - 0.5)
        ax.set_xlabel("step t")
        ax.set_ylabel("h(X_t), first coordinate")
        ax.set_title("Σ w̄ z₁ along this chain", fontsize=9)
        ax.legend(fontsize=7)
        image.value = viz.to_png(viz.plain_log_ticks(fig))
        w = teaching.normalized_weights(rec.states[t].log_weights[0])
        moved = sum(int(i[0]) != 0 for i in rec.indices[:t])
        what = (
            "keeps its reference (slot 1)"
            if ell == 0
            else f"moves to fresh draw {ell + 1}, which becomes the next reference"
        )
        summary.value = (
            f"t = {t}: w̄ = [{', '.join(f'{v:.2f}' for v in w.tolist())}]; the chain selects "
            f"slot <b>{ell + 1}</b> (probability {w[ell]:.2f}) and {what}. It left its "
            f"reference in {moved} of the {t} steps before this one."
        )

    step.observe(redraw, names="value")
    for w in (S, sh, sc, sd):
        w.observe(rerun, names="value")
    box.rerun, box.redraw = rerun, redraw
    rerun()
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
    """Step two lag-1 coupled CIS chains on a 2-D latent and watch them meet, and why.

    Controls: ``step`` (t), ``S``, ``shift`` and ``scale`` (the proposal), ``seed``. Changing
    S, the proposal or the seed re-runs ``teaching.lag_coupled_chains`` for one chain pair;
    moving ``step`` redraws X_t and Y_{t−1} (``viz.coupled_chains_step``) beside their
    selection probabilities w̄^X, w̄^Y, the overlap α and the slots (ℓ_X, ℓ_Y) the coupling
    selects for the next step (``diagrams.selection_bars``): the chains meet when both select
    the same shared fresh slot. Attributes: the controls, ``image``, ``summary``, ``run``.
    """
    if model.latent_dim != 2:
        raise ValueError(f"the chains widget draws a 2-D latent, got latent_dim={model.latent_dim}")
    from ucvae_lite.lab.plots import diagrams

    x = x[:1]
    post = tuple(v[0] for v in model.posterior(x))
    step = W.IntSlider(value=1, min=1, max=1, description="step t")
    S = W.IntSlider(value=num_samples, min=2, max=20, description="S", continuous_update=False)
    sh, sc = _proposal_sliders(shift, scale)
    sd = W.IntText(value=seed, description="seed", layout=W.Layout(width="160px"))
    image, summary = _image(), W.HTML()
    box = W.VBox([W.HBox([S, sd]), W.HBox([sh, sc]), step, summary, image])
    box.step, box.S, box.shift, box.scale, box.seed = step, S, sh, sc, sd
    box.image, box.summary = image, summary
    box.run = None

    @_single_threaded
    def rerun(_=None) -> None:
        target = model.target(x, shift=sh.value, scale=sc.value)
        g = torch.Generator().manual_seed(int(sd.value))
        # m = max_steps: the pair keeps running after it meets, so X_τ and the step into it
        # can be shown.
        box.run = teaching.lag_coupled_chains(target, S.value, max_steps, max_steps, g)
        box.limits = _limits(model, x, sh.value, sc.value)
        tau = int(box.run.tau[0])
        step.max = max(2, min(tau, box.run.steps - 1))
        if step.value == 1:
            redraw()
        else:
            step.value = 1  # triggers redraw

    @_single_threaded
    def redraw(_=None) -> None:
        run, t = box.run, step.value
        tau = int(run.tau[0])
        met = t >= tau
        ix, iy = (int(i[0]) for i in teaching.selected_slots(run, t))
        wx = teaching.normalized_weights(run.xs[t].log_weights[0])
        wy = teaching.normalized_weights(run.ys[t - 1].log_weights[0])
        fig = viz.widget_figure(ncols=2, size=(4.4, 3.9))
        viz.coupled_chains_step(fig.axes[0], run.xs[t], run.ys[t - 1], t, met, post, box.limits)
        diagrams.selection_bars(fig.axes[1], wx, wy, ix, iy)
        fig.axes[1].set_title(f"selection for step {t} → {t + 1}", fontsize=9)
        image.value = viz.to_png(viz.plain_log_ticks(fig))
        alpha = torch.minimum(wx, wy).sum().item()
        meet = f"τ = {tau}" if tau <= run.steps else f"not met within {run.steps} steps"
        if met:
            why = "The chains have met: identical sets, identical selections from here on."
        elif ix == iy and ix > 0:
            why = (
                f"Both select slot {ix + 1}, a fresh draw the two sets share: "
                f"X_{t + 1} = Y_{t}, so they meet at τ = {t + 1}."
            )
        elif ix == iy == 0:
            why = (
                "Both select slot 1, but slot 1 holds each chain's own reference (two different "
                "particles): not met."
            )
        else:
            why = f"They select different slots ({ix + 1} and {iy + 1}): not met."
        summary.value = (
            f"{meet}. Step t = {t}: overlap α = Σ min(w̄^X, w̄^Y) = <b>{alpha:.2f}</b> is the "
            f"chance that the coupling selects the same slot in both; it selected "
            f"(ℓ_X, ℓ_Y) = ({ix + 1}, {iy + 1}). {why}"
        )

    step.observe(redraw, names="value")
    for w in (S, sh, sc, sd):
        w.observe(rerun, names="value")
    box.rerun, box.redraw = rerun, redraw
    rerun()
    return box


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
    Each change measures both with ``budget.error_budget`` against the exact posterior mean
    and draws c·V, |bias|² and MSE(C) = |bias|² + c·V/C with the crossover budget C*.
    Attributes: the controls, ``image``, ``summary``, ``history`` ((S, k, m, VarianceCost of
    H_{k:m}) per update), ``budgets`` (the last pair of ``ErrorBudget``s), ``update()``.
    """
    from ucvae_lite.core.coupled import coupled_estimate
    from ucvae_lite.core.iwae import iwae_estimate
    from ucvae_lite.studies.budget import crossover_budget, error_budget
    from ucvae_lite.studies.stats import variance_and_cost

    x = x[:1]
    exact = model.posterior(x)[0][0]
    kk = W.IntSlider(value=k, min=0, max=10, description="k", continuous_update=False)
    mm = W.IntSlider(value=m, min=0, max=20, description="m", continuous_update=False)
    S = W.IntSlider(value=num_samples, min=2, max=30, description="S", continuous_update=False)
    reps = W.IntSlider(
        value=replicates, min=100, max=5000, step=100, description="replicates",
        continuous_update=False,
    )  # fmt: skip
    sh, sc = _proposal_sliders(shift, scale, min_scale=0.8)
    image, summary = _image(), W.HTML()
    box = W.VBox([W.HBox([kk, mm, S]), W.HBox([sh, sc, reps]), summary, image])
    box.k, box.m, box.S, box.replicates, box.shift, box.scale = kk, mm, S, reps, sh, sc
    box.image, box.summary = image, summary
    box.history = []

    @_single_threaded
    def update(_=None) -> None:
        if mm.value < kk.value:
            mm.value = kk.value  # triggers update again
            return
        g = torch.Generator().manual_seed(seed)
        n_u, n_i = reps.value, iwae_replicates
        t_u = model.target(x.expand(n_u, -1), shift=sh.value, scale=sc.value)
        t_i = model.target(x.expand(n_i, -1), shift=sh.value, scale=sc.value)
        est = coupled_estimate(t_u, S.value, kk.value, mm.value, generator=g)
        iw = iwae_estimate(t_i, S.value, g)
        coupled = error_budget(est.mean(), exact, est.num_evals, "H_{k:m}", unbiased=True)
        iwae = error_budget(iw.mean(), exact, S.value, f"IWAE-{S.value}")
        box.budgets = (coupled, iwae)
        vc = variance_and_cost(
            est.mean(), est.num_evals.double().mean().item(), est.tau.double().mean().item()
        )
        box.history.append((S.value, kk.value, mm.value, vc))
        fig = viz.widget_figure(ncols=3, size=(3.2, 3.0), wspace=0.55)
        names = ["H_{k:m}", f"IWAE-{S.value}"]
        colors = [viz.COLORS["x"], viz.COLORS["iwae"]]
        work = [coupled.cost * coupled.variance, iwae.cost * iwae.variance]
        fig.axes[0].bar(names, work, color=colors)
        fig.axes[0].set_yscale("log")
        fig.axes[0].set_ylabel("c · V (evaluations × variance)")
        fig.axes[0].set_title("noise per unit of compute", fontsize=9)
        b2 = [coupled.bias2, iwae.bias2]
        fig.axes[1].bar(names, b2, yerr=[2 * coupled.bias2_se, 2 * iwae.bias2_se], color=colors)
        fig.axes[1].axhline(0, color="k", lw=0.8)
        fig.axes[1].set_ylabel("|bias|² (± 2 SE)")
        fig.axes[1].set_title("squared bias", fontsize=9)
        resolved = iwae.bias2 > 4 * iwae.bias2_se
        c_star = crossover_budget(coupled, iwae) if resolved else None
        top = max(1e4, 10 * c_star[0]) if c_star and c_star[0] > 0 else 1e5
        budgets = torch.logspace(0, math.log10(top), 60).numpy()
        crossings = {"": c_star} if c_star and c_star[0] > 0 else None
        viz.mse_vs_budget(fig.axes[2], budgets, [coupled, iwae], crossings)
        fig.axes[2].set_title("MSE of the average at budget C", fontsize=9)
        image.value = viz.to_png(viz.plain_log_ticks(fig))
        if c_star is None:
            verdict = "IWAE's bias is not resolved here (|bias|² < 4 SE): no crossover to report."
        elif c_star[0] <= 0:
            verdict = "H_{k:m} has the lower MSE at every budget."
        else:
            verdict = (
                f"H_{{k:m}} has the lower MSE once the budget exceeds <b>C* = {c_star[0]:,.0f} ± "
                f"{c_star[1]:,.0f}</b> evaluations."
            )
        summary.value = (
            f"S = {S.value}, (k, m) = ({kk.value}, {mm.value}), q shift {sh.value:.1f}, width "
            f"{sc.value:.1f}: H_{{k:m}} costs {coupled.cost:.1f} evaluations (mean τ "
            f"{vc.mean_tau:.2f}), c·V = {work[0]:.3g} vs IWAE's {work[1]:.3g} "
            f"(<b>{work[0] / work[1]:.1f}×</b>); IWAE's |bias|² = {iwae.bias2:.2e} ± "
            f"{iwae.bias2_se:.1e}, H's {coupled.bias2:.1e} ± {coupled.bias2_se:.1e}. {verdict}"
        )

    for w in (kk, mm, S, reps, sh, sc):
        w.observe(update, names="value")
    box.update = update
    update()
    return box


def getattr_value(vc: teaching.VarianceCost, key: str) -> float:
    """The bar heights of ``variance_widget``: mean variance, cost or variance × cost."""
    return {"var": vc.variance.mean().item(), "cost": vc.cost, "work": vc.work}[key]
