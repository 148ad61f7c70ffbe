"""The widget of notebook 07: which gradient estimator wins at a given compute budget?

A thin wrapper over ``budget.ErrorBudget`` (measured bias, variances and cost of each
method): no estimator runs while the sliders move, so an update is arithmetic and one small
figure.
"""

from __future__ import annotations

import math
from dataclasses import replace

import ipywidgets as W
import numpy as np
from matplotlib.ticker import NullFormatter

from ucvae_lite.lab.plots import viz
from ucvae_lite.studies.budget import ErrorBudget

COMPUTE = np.geomspace(1e2, 1e7, 60)  # the budgets the curves are drawn at


def budget_widget(budgets: list[ErrorBudget], log10_budget: float = 4.0) -> W.VBox:
    """Sliders for the budget C (log10 of log-weight evaluations) and a multiplier of the
    minibatch noise tr Σ_data; shows every method's MSE(C) and the winner.

    Attributes: ``budget`` and ``data_noise`` (FloatSliders), ``image``, ``summary``,
    ``winner`` (the name of the best method at the current settings), ``update()``.
    """
    budget = W.FloatSlider(
        value=log10_budget, min=2.0, max=7.0, step=0.25, description="log10 C",
        continuous_update=False,
    )  # fmt: skip
    noise = W.FloatLogSlider(
        value=1.0, base=10, min=-2, max=2, step=0.25, description="Σ_data ×",
        continuous_update=False,
    )  # fmt: skip
    image = W.Image(format="png", layout=W.Layout(max_width="760px"))
    summary = W.HTML()
    box = W.VBox([W.HBox([budget, noise]), summary, image])
    box.budget, box.data_noise, box.image, box.summary, box.winner = (
        budget, noise, image, summary, None,
    )  # fmt: skip

    def update(_=None) -> None:
        scaled = [replace(b, data_variance=b.data_variance * noise.value) for b in budgets]
        c = 10.0**budget.value
        mse = {b.name: b.mse(c) for b in scaled}
        box.winner = min(mse, key=mse.get)
        fig = viz.widget_figure(ncols=2, size=(3.9, 3.2), wspace=0.75)
        viz.mse_vs_budget(fig.axes[0], COMPUTE, scaled, bands=False, title="MSE against compute")
        fig.axes[0].axvline(c, color="k", lw=0.8, ls=":")
        names = [b.name for b in scaled]
        fig.axes[1].barh(names, [mse[n] for n in names], color="0.6")
        fig.axes[1].barh([box.winner], [mse[box.winner]], color="tab:green")
        fig.axes[1].set_xscale("log")
        fig.axes[1].xaxis.set_minor_formatter(NullFormatter())  # no crowded minor labels
        fig.axes[1].set_xlabel(f"MSE at C = 10^{budget.value:g}")
        fig.axes[1].tick_params(axis="y", labelsize=7)
        image.value = viz.to_png(fig)
        summary.value = (
            f"At C = 10^{budget.value:g} evaluations with {noise.value:.3g}× the minibatch noise, "
            f"the smallest MSE is <b>{box.winner}</b>'s ({mse[box.winner]:.3g}). Biased methods "
            "flatten at their squared bias; unbiased ones keep falling like 1/C."
        )

    budget.observe(update, names="value")
    noise.observe(update, names="value")
    box.update = update
    update()
    return box


def winner(budgets: list[ErrorBudget], compute: float, data_noise: float = 1.0) -> str:
    """The method with the smallest MSE at ``compute`` (the widget's answer, for tests)."""
    scaled = [replace(b, data_variance=b.data_variance * data_noise) for b in budgets]
    best = min(scaled, key=lambda b: b.mse(compute))
    return best.name if math.isfinite(best.mse(compute)) else ""
