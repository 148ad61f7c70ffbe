"""The widget of notebook 06: the levers of "is the unbiased gradient practical?" on a real VAE.

A thin wrapper over tested functions: ``practical.estimator_samples`` (R estimates of the
decoder's output-bias gradient ∇_b log p_θ(x) from ucvae's H_{k:m}, IWAE-S and IWAE-S', with
q_φ widened by a factor), ``landscape.error_budget`` and ``ErrorBudget.crossover`` (against
the exact gradient on a grid, ``practical.exact_output_bias_gradient``, when the latent is
2-D), ``practical.max_z``, and ``pictures``/``viz`` for the panels. Like ``widgets``, it
renders to PNG in an ``ipywidgets.Image``; controls and outputs are attributes of the
returned box, so tests drive it by setting ``.value``.
"""

from __future__ import annotations

import io
import math

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
from ucvae_lite.studies.landscape import error_budget
from ucvae_lite.studies.stats import z_threshold

_PLAIN = FuncFormatter(lambda v, _: f"{v:g}")


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
    ``landscape.ErrorBudget`` per update, keyed ucvae, IWAE-S, IWAE-S'),
    ``update()``.
    """
    if images.dim() != 2:
        raise ValueError(f"images must be [N, P] (one image per row), got {tuple(images.shape)}")
    S = W.IntSlider(value=num_samples, min=2, max=50, description="S", continuous_update=False)
    kk = W.IntSlider(value=k, min=0, max=8, description="k", continuous_update=False)
    mm = W.IntSlider(value=m, min=0, max=16, description="m", continuous_update=False)
    fac = W.FloatSlider(
        value=factor, min=0.5, max=4.0, step=0.25, description="q width ×",
        continuous_update=False,
    )  # fmt: skip
    pick = W.Dropdown(
        options=[(f"test image {i}", i) for i in range(len(images))], value=0, description="image"
    )
    image, summary = W.Image(format="png", layout=W.Layout(max_width="900px")), W.HTML()
    thumb = W.Image(format="png", layout=W.Layout(width="64px"))
    box = W.VBox([W.HBox([S, kk, mm]), W.HBox([fac, pick, thumb]), summary, image])
    box.S, box.k, box.m, box.factor, box.image_index = S, kk, mm, fac, pick
    box.image, box.thumbnail, box.summary, box.history = image, thumb, summary, []
    exact_cache: dict[int, Tensor] = {}

    def exact(i: int) -> Tensor | None:
        if model.latent_dim != 2:
            return None
        if i not in exact_cache:
            exact_cache[i] = practical.exact_output_bias_gradient(model, images[i : i + 1])
        return exact_cache[i]

    def update(_=None) -> None:
        if mm.value < kk.value:
            mm.value = kk.value  # triggers update again
            return
        i = pick.value
        x, g = images[i : i + 1], torch.Generator().manual_seed(seed)
        args = {"replicates": replicates, "factor": fac.value, "generator": g}
        su, tau = practical.estimator_samples(
            model, x, "ucvae", S.value, k=kk.value, m=mm.value, max_steps=max_steps, **args
        )
        s2 = max(2, round(su[0].cost))
        si, _ = practical.estimator_samples(model, x, "iwae", S.value, **args)
        sj, _ = practical.estimator_samples(model, x, "iwae", s2, **args)
        ref = exact(i)
        names = ("ucvae", f"IWAE-{S.value}", f"IWAE-{s2}")
        rows = {
            n: error_budget(
                n, s, su[0].grads.mean(0, keepdim=True) if ref is None else ref, unbiased=u
            )  # fmt: skip
            for n, s, u in zip(names, (su, si, sj), (True, False, False), strict=True)
        }
        box.history.append(rows)
        thumb.value = _thumbnail(x, image_shape)
        fig = _figure(3)
        a1, a2, a3 = fig.axes
        works = {n: r.cost * r.variance for n, r in rows.items()}
        pictures.work_bars(a1, works, "variance × cost (lower wins)")
        truncated = int((tau > max_steps).sum())
        viz.survival_vs_degenerate(a2, {"ucvae τ": tau}, S.value, "τ against the 1/t law")
        a2.set_ylabel("P(τ > t)")
        uc, iw = rows["ucvae"], rows[names[1]]
        if ref is not None:
            c_star = uc.crossover(iw)
            viz.mse_vs_budget(
                a3,
                np.geomspace(10.0, 1e6, 120),
                [uc, iw],
                bands=False,
                title="MSE against compute (exact ∇)",
            )
            if 0 < c_star < math.inf:
                a3.axvline(c_star, color="0.4", ls=":", lw=1)
            z, n_z = practical.max_z(su, ref)
            bias = (
                f"IWAE-{S.value}'s squared bias {iw.bias2:.3g} ± {iw.bias2_se:.2g} against its "
                f"variance {iw.variance:.3g} per estimate (ucvae's: {uc.bias2:.2g} ± "
                f"{uc.bias2_se:.2g}); "
                + (
                    f"ucvae has the lower MSE past <b>C* ≈ {c_star:.3g}</b> evaluations "
                    f"(≈ {c_star / S.value:.0f} IWAE-{S.value} gradients averaged)."
                    if 0 < c_star < math.inf
                    else "ucvae wins at every budget."
                    if c_star == 0
                    else "no bias measured: IWAE wins at every budget here."
                )
            )
            if z > z_threshold(n_z):
                bias += (
                    f" <b>Caution:</b> ucvae's mean over {replicates} replicates is off the exact "
                    f"gradient (max |z| {z:.1f} over {n_z} pixels): rare draws with huge weights "
                    "carry part of its expectation here (posterior mass q seldom proposes), so "
                    "far more replicates are needed to see that it is unbiased."
                )
        else:
            a3.axis("off")
            a3.text(0.5, 0.5, "IWAE's bias needs the exact\ngradient: a 2-D latent\n(grid)",
                    ha="center", va="center", fontsize=9)  # fmt: skip
            bias = "IWAE's bias is not shown: no exact gradient for a latent of more than 2-D."
        for axis in [a for ax in fig.axes for a in (ax.xaxis, ax.yaxis)]:
            axis.set_minor_locator(NullLocator())
            if axis.get_scale() == "log":  # plain labels: mathtext parsing is slow
                axis.set_major_formatter(_PLAIN)
        image.value = viz.to_png(fig, dpi=80)
        summary.value = (
            f"S = {S.value}, (k, m) = ({kk.value}, {mm.value}), q width × {fac.value:g}: mean τ "
            f"{tau.double().mean():.2f} (max {int(tau.max())}"
            + (f", {truncated} truncated" if truncated else "")
            + f"), cost {uc.cost:.1f} evaluations; variance × cost = "
            f"<b>{works['ucvae'] / works[names[1]]:.2f}×</b> IWAE-{S.value}'s, at equal cost "
            f"the variance is <b>{uc.variance / rows[names[2]].variance:.2f}×</b> IWAE-{s2}'s. "
            + bias
        )

    for w in (S, kk, mm, fac, pick):
        w.observe(update, names="value")
    box.update = update
    update()
    return box
