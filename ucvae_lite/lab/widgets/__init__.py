"""ipywidgets for the notebooks, thin wrappers around pure, tested functions: ``chains``
(CIS and coupled chains, variance; notebooks 02–04), ``practical`` (06), ``landscape`` (07).
All their widgets are importable from here."""

from ucvae_lite.lab.widgets.chains import (
    cis_chain_widget,
    coupled_chains_widget,
    coupling_widget,
    iwae_widget,
    variance_widget,
)
from ucvae_lite.lab.widgets.landscape import budget_widget
from ucvae_lite.lab.widgets.practical import practical_widget

__all__ = [
    "budget_widget",
    "cis_chain_widget",
    "coupled_chains_widget",
    "coupling_widget",
    "iwae_widget",
    "practical_widget",
    "variance_widget",
]
