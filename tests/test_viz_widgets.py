"""Plotting helpers draw what they say; widget callbacks re-render when controls change."""

import matplotlib

matplotlib.use("Agg")

import torch  # noqa: E402

import ucvae_lite as u  # noqa: E402
from ucvae_lite.lab import teaching as T
from ucvae_lite.lab import widgets as wd
from ucvae_lite.lab.plots import viz

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
    viz.plot_survival(a[2], torch.arange(1, 50), "tau")
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
    w = wd.variance_widget(model, x, num_samples=3, replicates=200, iwae_replicates=2000)
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
    coupled, iwae = w.budgets
    assert iwae.cost == 6 and coupled.cost == vc.cost
    w.shift.value, w.scale.value = 0.0, 1.0  # the exact proposal: IWAE has no bias left
    assert "not resolved" in w.summary.value or "every budget" in w.summary.value
    w.k.value, w.S.value, w.shift.value, w.scale.value = 0, 3, 0.5, 1.5
    assert "C* =" in w.summary.value and "IWAE's |bias|²" in w.summary.value


def test_new_plot_helpers_draw(model, x):
    from ucvae_lite.studies.budget import ErrorBudget

    fig = viz.new_figure(ncols=4, nrows=2)
    a = fig.axes
    post = model.posterior(x[:1])
    q = model.proposal(x[:1], 0.5, 1.5)
    viz.toy_model(
        a[0], (post[0][0], post[1][0]), torch.randn(20, 2), {"q": (q.loc[0], torch.eye(2))}
    )
    assert len(a[0].patches) == 3  # posterior, proposal, prior ellipses
    curve = T.iwae_curve(model, x[:1], [1, 2, 5], 40, 0.5, 1.5, torch.Generator().manual_seed(0))
    viz.iwae_panels(a[1:4], curve, highlight=2)
    assert a[3].get_yscale() == "log" and a[2].get_lines()[-1].get_xdata()[0] == 2
    viz.max_weight_vs_n(a[4], [1, 10], {"a": [0.1, 0.2]}, {"a": 0.3})
    viz.move_probability_vs_dim(a[5], [2, 4], {"m": ([0.5, 0.2], [0.01, 0.01])}, [0.3, 0.1])
    viz.tau_histogram(a[6], {"t": torch.tensor([2, 3, 3, 5])})
    eb = [
        ErrorBudget("u", 0, 0, 1.0, 0.1, 10.0, unbiased=True),
        ErrorBudget("i", 0.01, 1e-3, 0.1, 0.01, 5.0),
    ]
    viz.mse_vs_budget(a[7], [1.0, 10.0, 1e4], eb, {"i": (950.0, 50.0)})
    assert a[7].get_xscale() == "log" and len(a[7].get_lines()) == 2
    assert viz.to_png(fig).startswith(PNG)
    wf = viz.widget_figure(ncols=3)
    assert len(wf.axes) == 3 and wf.get_layout_engine() is None


def test_iwae_widget_callbacks(model, x):
    w = wd.iwae_widget(model, x, num_samples=5, replicates=100, bound_replicates=200)
    assert bytes(w.image.value).startswith(PNG) and "S = 5" in w.summary.value
    curve, img = w.curve, bytes(w.image.value)
    w.S.value = 20  # moving S reuses the measured curve
    assert w.curve is curve and "S = 20" in w.summary.value and bytes(w.image.value) != img
    w.scale.value = 2.0  # a new proposal: new measurements, including the exact V
    assert w.curve is not curve and f"{w.curve.variance:.2f}" in w.summary.value
    w.S.value = 1
    assert "S = 1 has no" in w.summary.value


def test_cis_chain_widget_callbacks(model, x):
    w = wd.cis_chain_widget(model, x, num_samples=4, steps=10, seed=2)
    rec = w.record
    assert rec.steps == 10 and bytes(w.image.value).startswith(PNG)
    ell = int(rec.indices[0][0])
    assert f"slot <b>{ell + 1}</b>" in w.summary.value
    img = bytes(w.image.value)
    w.step.value = 5
    assert bytes(w.image.value) != img and "t = 5" in w.summary.value
    w.S.value = 6
    assert w.record is not rec and w.record.states[0].particles.shape == (1, 6, 2)
    w.shift.value = 0.0
    w.scale.value = 1.0
    assert w.record.states[0].log_weights.std() < 1e-9  # q = posterior: equal weights


def test_chains_widget_shows_selection_and_why(model, x):
    w = wd.coupled_chains_widget(model, x, num_samples=5, seed=5)
    tau = int(w.run.tau[0])
    w.step.value = tau - 1  # the step into the meeting
    assert f"so they meet at τ = {tau}" in w.summary.value and "α =" in w.summary.value
    old = w.run
    w.shift.value = 0.0
    assert w.run is not old and w.step.value == 1
