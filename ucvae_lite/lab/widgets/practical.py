"""The widget of notebook 06: the levers of "is the unbiased gradient practical?" on a real VAE.

A thin wrapper over one tested function, ``practical.output_bias_comparison`` (R estimates of
the decoder's output-bias gradient ∇_b log p_θ(x) from ucvae's H_{k:m}, IWAE-S and IWAE-S',
with q_φ widened by a factor, and their error budgets against the exact gradient on a grid,
``practical.exact_output_bias_gradient``, when the latent is 2-D), and ``pictures``/``viz``
for the panels. Like ``widgets.chains``, it renders to PNG in an ``ipywidgets.Image``;
controls and outputs are attributes of the returned box, so tests drive it by setting
``.value``.
"""

from __future__ import annotations

import io
import math
from collections.abc import Callable

import ipywidgets as W
import numpy as np
import torch
from matplotlib.figure import Figure
from matplotlib.image import imsave
from matplotlib.ticker import FuncFormatter, NullLocator
from torch import Tensor

from ucvae_lite.lab.plots import pictures, viz
from ucvae_lite.models.vae import VAE
from ucvae_lite.studies import practical
from ucvae_lite.studies.stats import z_threshold

_PLAIN = FuncFormatter(lambda v, _: f"{v:g}")


def practical_widget(
    model: VAE,
    images: Tensor,
    image_shape: tuple[int, int] = (8, 8),
    num_samples: int = 10,
    k: int = 1,
    m: int = 2,
    factor: float = 1.0,
    replicates: int = 400,
    seed: int = 0,
    max_steps: int = 5000,
) -> W.VBox:
    """Sliders for S, k, m and the proposal's widening factor, and a selector over ``images``.

    Each change draws R = ``replicates`` estimates of ∇_b log p_θ(x) (the decoder's output
    biases, one per pixel) from ucvae (S, k, m), IWAE-S and IWAE-S' (S' = ucvae's mean cost),
    all with the proposal q_φ's standard deviations × ``factor``, and shows: the image;
    variance × cost of the three; τ's survival against the degenerate-weights 1/t law; and,
    for a 2-D latent (exact gradient on a grid), MSE against budget with IWAE's bias and the
    crossover budget C*. Chains unmet after ``max_steps`` are truncated and counted.

    Attributes: ``S``, ``k``, ``m`` (IntSliders), ``factor`` (FloatSlider), ``image_index``
    (Dropdown), ``image``, ``thumbnail``, ``summary``, ``history`` (one dict of
    ``landscape.ErrorBudget`` per update, keyed ucvae, IWAE-S, IWAE-S'), ``update()``.
    """
    if images.dim() != 2:
        raise ValueError(f"images must be [N, P] (one image per row), got {tuple(images.shape)}")
    box = _practical_controls(len(images), num_samples, k, m, factor)
    box.history = []
    exact = _exact_gradients(model, images)

    def update(_=None) -> None:
        if box.m.value < box.k.value:
            box.m.value = box.k.value  # triggers update again
            return
        i = box.image_index.value
        res = practical.output_bias_comparison(
            model, images[i : i + 1], box.S.value, box.k.value, box.m.value, replicates,
            box.factor.value, exact(i), torch.Generator().manual_seed(seed), max_steps,
        )  # fmt: skip
        box.history.append(res.budgets)
        box.thumbnail.value = _thumbnail(images[i], image_shape)
        box.image.value = _practical_png(res)
        box.summary.value = (
            f"S = {box.S.value}, (k, m) = ({box.k.value}, {box.m.value}), q width × "
            f"{box.factor.value:g}: " + _practical_text(res, max_steps, replicates)
        )

    for w in (box.S, box.k, box.m, box.factor, box.image_index):
        w.observe(update, names="value")
    box.update = update
    update()
    return box


def _exact_gradients(model: VAE, images: Tensor) -> Callable[[int], Tensor | None]:
    """i ↦ the exact output-bias gradient of image i [1, P] (on a grid, so a 2-D latent only;
    None otherwise), computed once per image."""
    cache: dict[int, Tensor] = {}

    def exact(i: int) -> Tensor | None:
        if model.latent_dim != 2:
            return None
        if i not in cache:
            cache[i] = practical.exact_output_bias_gradient(model, images[i : i + 1])
        return cache[i]

    return exact


def _practical_controls(n_images: int, num_samples: int, k: int, m: int, factor: float) -> W.VBox:
    """``S``, ``k``, ``m``, ``factor`` (q width ×), ``image_index``; ``image``, ``thumbnail``
    and ``summary``."""
    S = W.IntSlider(value=num_samples, min=2, max=50, description="S", continuous_update=False)
    kk = W.IntSlider(value=k, min=0, max=8, description="k", continuous_update=False)
    mm = W.IntSlider(value=m, min=0, max=16, description="m", continuous_update=False)
    fac = W.FloatSlider(
        value=factor, min=0.5, max=4.0, step=0.25, description="q width ×",
        continuous_update=False,
    )  # fmt: skip
    pick = W.Dropdown(
        options=[(f"test image {i}", i) for i in range(n_images)], value=0, description="image"
    )
    image, summary = W.Image(format="png", layout=W.Layout(max_width="900px")), W.HTML()
    thumb = W.Image(format="png", layout=W.Layout(width="64px"))
    box = W.VBox([W.HBox([S, kk, mm]), W.HBox([fac, pick, thumb]), summary, image])
    box.S, box.k, box.m, box.factor, box.image_index = S, kk, mm, fac, pick
    box.image, box.thumbnail, box.summary = image, thumb, summary
    return box


def _figure(ncols: int) -> Figure:
    """Panels side by side, laid out by hand (constrained layout, log-axis minor ticks and
    mathtext tick labels take most of a redraw's time)."""
    fig = Figure(figsize=(3.3 * ncols, 3.0))
    fig.subplots(1, ncols)
    fig.subplots_adjust(left=0.07, right=0.96, bottom=0.22, top=0.88, wspace=0.5)
    return fig


def _thumbnail(x: Tensor, shape: tuple[int, int], scale: int = 8) -> bytes:
    """The image as a small PNG (each pixel a scale × scale block), without a figure."""
    img = np.kron(x.detach().reshape(shape).cpu().numpy(), np.ones((scale, scale)))
    buf = io.BytesIO()
    imsave(buf, img, cmap="gray_r", vmin=0, vmax=1, format="png")
    return buf.getvalue()


def _works(res: practical.OutputBiasComparison) -> dict[str, float]:
    """Variance × cost of each method: the variance left per log-weight evaluation."""
    return {name: b.cost * b.variance for name, b in res.budgets.items()}


def _practical_png(res: practical.OutputBiasComparison) -> bytes:
    """Variance × cost bars, τ's survival against the 1/t law, and (with an exact gradient)
    MSE against compute of ucvae and IWAE-S with C* dotted."""
    fig = _figure(3)
    a1, a2, a3 = fig.axes
    pictures.work_bars(a1, _works(res), "variance × cost (lower wins)")
    viz.survival_vs_degenerate(a2, {"ucvae τ": res.tau}, res.num_samples, "τ against the 1/t law")
    a2.set_ylabel("P(τ > t)")
    if res.against_exact:
        uc, iw = res.ucvae, res.iwae_same_s
        viz.mse_vs_budget(a3, np.geomspace(10.0, 1e6, 120), [uc, iw], bands=False,
                          title="MSE against compute (exact ∇)")  # fmt: skip
        c_star = uc.crossover(iw)
        if 0 < c_star < math.inf:
            a3.axvline(c_star, color="0.4", ls=":", lw=1)
    else:
        a3.axis("off")
        a3.text(0.5, 0.5, "IWAE's bias needs the exact\ngradient: a 2-D latent\n(grid)",
                ha="center", va="center", fontsize=9)  # fmt: skip
    for axis in [a for ax in fig.axes for a in (ax.xaxis, ax.yaxis)]:
        axis.set_minor_locator(NullLocator())
        if axis.get_scale() == "log":  # plain labels: mathtext parsing is slow
            axis.set_major_formatter(_PLAIN)
    return viz.to_png(fig, dpi=80)


def _practical_text(res: practical.OutputBiasComparison, max_steps: int, replicates: int) -> str:
    uc, S, s2, tau = res.ucvae, res.num_samples, res.matched_s, res.tau
    truncated = int((tau > max_steps).sum())
    works = _works(res)
    return (
        f"mean τ {tau.double().mean():.2f} (max {int(tau.max())}"
        + (f", {truncated} truncated" if truncated else "")
        + f"), cost {uc.cost:.1f} evaluations; variance × cost = "
        f"<b>{works['ucvae'] / works[f'IWAE-{S}']:.2f}×</b> IWAE-{S}'s, at equal cost "
        f"the variance is <b>{uc.variance / res.iwae_same_cost.variance:.2f}×</b> IWAE-{s2}'s. "
        + _bias_text(res, replicates)
    )


def _bias_text(res: practical.OutputBiasComparison, replicates: int) -> str:
    """IWAE-S's squared bias against ucvae's, the crossover budget, and a caution when
    ucvae's mean is off the exact gradient (rare large weights carry its expectation)."""
    if not res.against_exact:
        return "IWAE's bias is not shown: no exact gradient for a latent of more than 2-D."
    uc, iw, S = res.ucvae, res.iwae_same_s, res.num_samples
    c_star = uc.crossover(iw)
    if 0 < c_star < math.inf:
        verdict = (
            f"ucvae has the lower MSE past <b>C* ≈ {c_star:.3g}</b> evaluations "
            f"(≈ {c_star / S:.0f} IWAE-{S} gradients averaged)."
        )
    elif c_star == 0:
        verdict = "ucvae wins at every budget."
    else:
        verdict = "no bias measured: IWAE wins at every budget here."
    text = (
        f"IWAE-{S}'s squared bias {iw.bias2:.3g} ± {iw.bias2_se:.2g} against its variance "
        f"{iw.variance:.3g} per estimate (ucvae's: {uc.bias2:.2g} ± {uc.bias2_se:.2g}); " + verdict
    )
    z, n_z = res.z_test
    if z > z_threshold(n_z):
        text += (
            f" <b>Caution:</b> ucvae's mean over {replicates} replicates is off the exact "
            f"gradient (max |z| {z:.1f} over {n_z} pixels): rare draws with huge weights "
            "carry part of its expectation here (posterior mass q seldom proposes), so "
            "far more replicates are needed to see that it is unbiased."
        )
    return text
