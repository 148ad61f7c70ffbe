"""Plotting helpers draw what they say; widget callbacks re-render when controls change."""

import matplotlib

matplotlib.use("Agg")

import torch  # noqa: E402

import ucvae_lite as u  # noqa: E402
from ucvae_lite import teaching as T  # noqa: E402
from ucvae_lite import viz  # noqa: E402
from ucvae_lite import widgets as wd  # noqa: E402

PNG = b"\x89PNG"


def test_to_png_and_save(tmp_path):
    fig = viz.new_figure(ncols=2)
    assert len(fig.axes) == 2
    assert viz.to_png(fig).startswith(PNG)
    path = viz.save(fig, "test_fig", folder=tmp_path)
    assert path.exists() and path.read_bytes().startswith(PNG)


def test_plot_helpers_draw(model, x):
    fig = viz.new_figure(ncols=3, nrows=2)
    a = fig.axes
    viz.estimate_with_band(a[0], [1, 2, 3], [0.1, 0.2, 0.3], [0.01] * 3, "m", exact=0.3)
    assert len(a[0].lines) == 2 and len(a[0].collections) == 1
    viz.running_mean(a[1], torch.randn(100), 0.0, "r")
    assert a[1].get_xscale() == "log"
    viz.survival(a[2], torch.arange(1, 50), "tau")
    assert a[2].get_yscale() == "log"
    viz.categorical_coupling(a[3], torch.tensor([0.2, 0.8]), torch.tensor([0.5, 0.5]), (1, 1))
    assert "i = j" in a[3].get_title()
    run = T.lag_coupled_chains(model.target(x[:1]), 4, generator=torch.Generator().manual_seed(0))
    mean, cov = model.posterior(x[:1])
    viz.coupled_chains_step(a[4], run.xs[1], run.ys[0], 1, False, (mean[0], cov[0]))
    assert "not met" in a[4].get_title() and len(a[4].patches) == 1  # posterior ellipse
    viz.histogram_vs_exact(a[5], {"a": torch.randn(500), "b": torch.randn(500) + 1}, 0.0)
    assert len(a[5].patches) == 2
    assert viz.to_png(fig).startswith(PNG)


def test_coupling_widget_callbacks():
    w = wd.coupling_widget(num_slots=4, seed=0)
    assert len(w.p_sliders) == 4 and bytes(w.image.value).startswith(PNG)
    img, text = bytes(w.image.value), w.summary.value
    w.p_sliders[0].value = 1.0
    w.q_sliders[0].value = 1.0
    assert bytes(w.image.value) != img and w.summary.value != text
    p = torch.tensor([s.value for s in w.p_sliders])
    q = torch.tensor([s.value for s in w.q_sliders])
    alpha = torch.minimum(p / p.sum(), q / q.sum()).sum().item()
    assert f"{alpha:.3f}" in w.summary.value
    img = bytes(w.image.value)
    w.redraw.click()  # a new joint draw: new seed, new picture
    assert w.draw_seed == 1
    for s in w.p_sliders + w.q_sliders:
        s.value = 0.0
    assert "positive weight" in w.summary.value


def test_coupled_chains_widget_callbacks(model, x):
    w = wd.coupled_chains_widget(model, x, num_samples=3, seed=1)
    tau = int(w.run.tau[0])
    assert w.step.max == max(2, tau) and bytes(w.image.value).startswith(PNG)
    assert f"τ = {tau}" in w.summary.value
    img = bytes(w.image.value)
    w.step.value = w.step.max
    assert bytes(w.image.value) != img
    if tau <= w.step.max:
        assert "identical" in w.summary.value
    old_run = w.run
    w.seed.value = 7
    assert w.run is not old_run and w.step.value == 1
    w.S.value = 10
    assert w.run.num_samples == 10
    w.scale.value = 0.5
    assert w.run.xs[0].particles.shape == (1, 10, 2)


def test_coupled_chains_widget_needs_2d():
    m3 = u.LinearGaussian.example(latent_dim=3)
    try:
        wd.coupled_chains_widget(m3, m3.sample_data(1))
    except ValueError as e:
        assert "2-D" in str(e)
    else:
        raise AssertionError("expected ValueError")


def test_variance_widget_callbacks(model, x):
    def make(r):
        return model.target(x[:1].expand(r, -1), shift=0.5, scale=1.5)

    w = wd.variance_widget(make, num_samples=3)
    w.replicates.value = 200
    img, text = bytes(w.image.value), w.summary.value
    w.m.value = 3
    assert (
        bytes(w.image.value) != img
        and "(k, m) = (0, 3)" in w.summary.value
        and text != w.summary.value
    )
    w.k.value = 5  # k > m: m follows k
    assert w.m.value == 5 and "(k, m) = (5, 5)" in w.summary.value
    w.S.value = 6
    assert "S = 6" in w.summary.value
    S, k, m, vc = w.history[-1]
    assert (S, k, m) == (6, 5, 5) and vc.cost >= 12
