"""The VAE pictures draw what they say, with labelled axes, on small models."""

import matplotlib

matplotlib.use("Agg")

import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402

from ucvae_lite.lab.plots import pictures, viz
from ucvae_lite.models.vae import VAE, posterior_grid  # noqa: E402

PNG = b"\x89PNG"
SHAPE = (4, 4)


def vae(latent: int = 2, seed: int = 0) -> VAE:
    torch.manual_seed(seed)
    return VAE(16, (8,), latent)


def images(n: int = 3) -> torch.Tensor:
    return torch.rand(n, 16, generator=torch.Generator().manual_seed(1)).round()


def test_reconstructions_and_samples_show_decoder_means():
    models = {"a": vae(2, 0), "b": vae(2, 1)}
    x = images(3)
    fig = pictures.reconstructions(x, models, SHAPE)
    assert len(fig.axes) == 3 * 3
    data_img = fig.axes[0].images[0].get_array()
    np.testing.assert_allclose(data_img, x[0].view(SHAPE).numpy())
    recon = fig.axes[3].images[0].get_array()  # row "a", first image: σ(f_θ(μ_φ(x)))
    want = pictures.decoder_means(models["a"], models["a"].encode(x[:1]).loc)[0].view(SHAPE)
    np.testing.assert_allclose(recon, want.numpy(), rtol=1e-6)
    assert fig.axes[3].get_ylabel() == "a"
    fig = pictures.samples(models, 4, SHAPE, torch.Generator().manual_seed(0))
    assert len(fig.axes) == 8 and viz.to_png(fig).startswith(PNG)
    z = torch.randn(4, 2, generator=torch.Generator().manual_seed(0))  # the same draws per model
    got = fig.axes[4].images[0].get_array()
    np.testing.assert_allclose(
        got, pictures.decoder_means(models["b"], z)[0].view(SHAPE), rtol=1e-6
    )


def test_latent_manifold_and_posterior_vs_encoder():
    model, x = vae(), images(1)
    fig = viz.new_figure(ncols=2)
    pictures.latent_manifold(fig.axes[0], model, SHAPE, n=5)
    assert fig.axes[0].images[0].get_array().shape == (20, 20)
    grid = posterior_grid(model, x, 4.0, 81)
    q = model.encode(x)
    pictures.posterior_vs_encoder(fig.axes[1], grid, q.loc[0], q.scale[0])
    ax = fig.axes[1]
    assert ax.get_xlabel() == "z₁" and ax.get_ylabel() == "z₂"
    assert len(ax.collections) >= 2  # filled posterior contours and the encoder's lines
    lo, hi = ax.get_xlim()
    assert -4.5 < lo < hi < 4.5
    assert viz.to_png(fig).startswith(PNG)
    with pytest.raises(ValueError, match="2-D latent"):
        pictures.latent_manifold(fig.axes[0], vae(3), SHAPE)


def test_history_and_measurement_plots_label_their_axes():
    n = 30
    hist = {
        "val_ll": list(np.linspace(-30, -25, n)),
        "tau_mean": [2.3] * n,
        "tau_max": list(range(5, 5 + n)),
        "evals": [31.0] * n,
    }
    fig = viz.new_figure(ncols=3, nrows=2)  # the last panel stays empty
    a = fig.axes
    pictures.learning_curves(a[0], {"iwae": hist, "ucvae": hist})
    assert len(a[0].lines) == 2 and "validation" in a[0].get_ylabel()
    assert a[0].lines[0].get_xdata()[0] == 4  # the first 10% of epochs left out
    pictures.training_meeting_times(a[1:3], hist, 10)
    assert a[1].get_yscale() == "log" and "IWAE-10" in a[2].get_ylabel()
    ess = torch.tensor([3.0, 5.0, 1.2])
    pictures.plot_weight_diagnostics(a[3:5], {"q": (ess, torch.tensor([0.2, 0.5, 0.9]))}, 10, 1.5)
    assert "ESS" in a[3].get_xlabel() and "k̂" in a[4].get_xlabel()
    assert pictures.weight_diagnostics is pictures.plot_weight_diagnostics  # notebook 06's .ipynb
    assert viz.to_png(fig).startswith(PNG)
    fig = viz.new_figure()
    pictures.work_bars(fig.axes[0], {"ucvae": 3.0, "IWAE-10": 1.0})
    assert [t.get_text() for t in fig.axes[0].get_xticklabels()] == ["ucvae", "IWAE-10"]
