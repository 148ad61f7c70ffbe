"""The diagrams draw what they say, from real runs."""

import matplotlib

matplotlib.use("Agg")

import torch  # noqa: E402

import ucvae_lite as u  # noqa: E402
from ucvae_lite.lab import teaching as T
from ucvae_lite.lab.plots import diagrams, viz


def _post(model, x):
    mean, cov = model.posterior(x[:1])
    return mean[0], cov[0]


def test_extended_target(model, x):
    one = model.target(x[:1], shift=0.5, scale=1.5)
    g = torch.Generator().manual_seed(0)
    iw = u.core.kernels.draw(one, 6, g)
    s, z = u.sample_extended_target(one, 6, lambda gen: T.posterior_draws(model, x[:1], 1, gen), g)
    pi = u.CISState(z, one.log_weight(z))
    q = one.proposal
    fig = viz.new_figure(ncols=3)
    diagrams.extended_target(fig.axes, iw, pi, int(s[0]), _post(model, x), (q.loc[0], torch.eye(2)))
    assert len(fig.axes[2].patches) == 6  # one bar per slot
    blue = [p for p in fig.axes[2].patches if p.get_facecolor()[2] > 0.6]
    assert len(blue) == 1  # the slot that holds the posterior draw
    assert "slot s" in fig.axes[1].get_legend().get_texts()[-1].get_text()
    assert viz.to_png(fig).startswith(b"\x89PNG")


def test_draw_cis_step(model, x):
    rec = T.record_cis_chain(model.target(x[:1]), 5, 2, torch.Generator().manual_seed(0))
    fig = viz.new_figure(ncols=2)
    ell = int(rec.indices[1][0])
    diagrams.draw_cis_step(fig.axes[0], fig.axes[1], rec.states[1], ell, _post(model, x))
    bars = fig.axes[1].patches
    assert len(bars) == 5 and bars[ell].get_linewidth() == 2.5


def test_lag_chains_timeline_marks_the_terms(model, x):
    one = model.target(x[:1], shift=0.5, scale=1.5)

    def run(seed):
        return T.lag_coupled_chains(one, 5, 8, generator=torch.Generator().manual_seed(seed))

    seed = T.find_seed(lambda s: int(run(s).tau[0]) == 5)
    r = run(seed)
    fig = viz.new_figure(size=(9, 3))
    ax = fig.axes[0]
    diagrams.lag_chains_timeline(ax, r, 1, 3, h_x=r.h_x()[:, 0, 0], h_y=r.h_y()[:, 0, 0])
    texts = [t.get_text() for t in ax.texts]
    # corrections at t = k+1..τ−1 = 2, 3, 4 with weights 1/3, 2/3, 1
    assert [t for t in texts if t.startswith("×")] == ["×0.33", "×0.67", "×1"]
    assert "$X_{5}$" in texts and "$Y_{4}$" in texts and "$X_{6}$" not in texts
    assert texts.count("=") == 1  # X_5 = Y_4
    assert any("τ = 5" in t for t in texts) and "τ = 5" in ax.get_title()


def test_selection_bars(model, x):
    fig = viz.new_figure()
    wx, wy = torch.tensor([0.5, 0.3, 0.2]), torch.tensor([0.1, 0.3, 0.6])
    diagrams.selection_bars(fig.axes[0], wx, wy, 1, 1)
    labels = [t.get_text() for t in fig.axes[0].get_legend().get_texts()]
    assert "overlap: α = 0.60" in labels
    assert {t.get_text() for t in fig.axes[0].texts} == {"ℓ_X", "ℓ_Y"}
