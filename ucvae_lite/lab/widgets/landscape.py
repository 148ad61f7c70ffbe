"""The widget of notebook 07: which gradient estimator wins at a given compute budget?

A thin wrapper over ``budget.ErrorBudget`` (measured bias, variances and cost of each
method): no estimator runs while the sliders move, so an update is arithmetic
(``rank_at_budget``) and one small figure.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import ipywidgets as W
import numpy as np
from matplotlib.ticker import NullFormatter

from ucvae_lite.lab.plots import viz
from ucvae_lite.studies.budget import ErrorBudget

COMPUTE = np.geomspace(1e2, 1e7, 60)  # the budgets the curves are drawn at


@dataclass
class BudgetRanking:
    """The methods at one budget C: ``budgets`` with tr Σ_data scaled, ``mse`` {name: MSE(C)},
    and the ``winner``, the name with the smallest MSE."""

    compute: float
    budgets: list[ErrorBudget]
    mse: dict[str, float]
    winner: str


def rank_at_budget(
    budgets: list[ErrorBudget], compute: float, data_noise: float = 1.0
) -> BudgetRanking:
    """MSE(C) = |b|² + c (V + ``data_noise`` · tr Σ_data) / C of every method at C = ``compute``
    (|b|² = 0 for a method marked unbiased: ``ErrorBudget.mse``), and the smallest."""
    scaled = [replace(b, data_variance=b.data_variance * data_noise) for b in budgets]
    mse = {b.name: float(b.mse(compute)) for b in scaled}
    return BudgetRanking(compute, scaled, mse, min(mse, key=mse.get))


def budget_widget(budgets: list[ErrorBudget], log10_budget: float = 4.0) -> W.VBox:
    """Sliders for the budget C (log10 of log-weight evaluations) and a multiplier of the
    minibatch noise tr Σ_data; shows every method's MSE(C) and the winner.

    Attributes: ``budget`` and ``data_noise`` (FloatSliders), ``image``, ``summary``,
    ``winner`` (the name of the best method at the current settings), ``update()``.
    """
    box = _budget_controls(log10_budget)
    box.winner = None

    def update(_=None) -> None:
        ranking = rank_at_budget(budgets, 10.0**box.budget.value, box.data_noise.value)
        box.winner = ranking.winner
        box.image.value = _budget_png(ranking, box.budget.value)
        box.summary.value = (
            f"At C = 10^{box.budget.value:g} evaluations with {box.data_noise.value:.3g}× the "
            f"minibatch noise, the smallest MSE is <b>{ranking.winner}</b>'s "
            f"({ranking.mse[ranking.winner]:.3g}). Biased methods flatten at their squared "
            "bias; unbiased ones keep falling like 1/C."
        )

    box.budget.observe(update, names="value")
    box.data_noise.observe(update, names="value")
    box.update = update
    update()
    return box


def _budget_controls(log10_budget: float) -> W.VBox:
    """``budget`` (log10 C), ``data_noise`` (× tr Σ_data), ``image`` and ``summary``."""
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
    box.budget, box.data_noise, box.image, box.summary = budget, noise, image, summary
    return box


def _budget_png(ranking: BudgetRanking, log10_budget: float) -> bytes:
    """MSE against compute with the budget marked, and each method's MSE there as bars."""
    fig = viz.widget_figure(ncols=2, size=(3.9, 3.2), wspace=0.75)
    viz.mse_vs_budget(
        fig.axes[0], COMPUTE, ranking.budgets, bands=False, title="MSE against compute"
    )
    fig.axes[0].axvline(ranking.compute, color="k", lw=0.8, ls=":")
    names = list(ranking.mse)
    fig.axes[1].barh(names, [ranking.mse[n] for n in names], color="0.6")
    fig.axes[1].barh([ranking.winner], [ranking.mse[ranking.winner]], color="tab:green")
    fig.axes[1].set_xscale("log")
    fig.axes[1].xaxis.set_minor_formatter(NullFormatter())  # no crowded minor labels
    fig.axes[1].set_xlabel(f"MSE at C = 10^{log10_budget:g}")
    fig.axes[1].tick_params(axis="y", labelsize=7)
    return viz.to_png(fig)
