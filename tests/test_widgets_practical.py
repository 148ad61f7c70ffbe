"""Notebook 06's widget re-renders when its levers move, and shows IWAE's bias on a 2-D latent."""

import matplotlib

matplotlib.use("Agg")

import pytest  # noqa: E402
import torch  # noqa: E402

from ucvae_lite.lab.widgets.practical import practical_widget  # noqa: E402
from ucvae_lite.models.vae import VAE  # noqa: E402

PNG = b"\x89PNG"


def small_vae(latent: int) -> VAE:
    torch.manual_seed(0)
    return VAE(16, (8,), latent)


def images(n: int = 3) -> torch.Tensor:
    return torch.rand(n, 16, generator=torch.Generator().manual_seed(1)).round()


def test_practical_widget_levers_on_a_2d_latent():
    w = practical_widget(small_vae(2), images(), (4, 4), num_samples=4, k=0, m=0, replicates=50)
    img, text = bytes(w.image.value), w.summary.value
    assert img.startswith(PNG) and "IWAE-4" in text and "squared bias" in text
    assert len(w.history) == 1 and w.history[0]["ucvae"].unbiased
    w.S.value = 6
    assert bytes(w.image.value) != img and "IWAE-6" in w.summary.value
    assert w.history[-1]["IWAE-6"].cost == 6
    w.k.value = 2  # m < k: m is moved up to k, then one update runs
    assert w.m.value == 2 and "(k, m) = (2, 2)" in w.summary.value
    n = len(w.history)
    w.factor.value = 2.0
    assert len(w.history) == n + 1 and "q width × 2" in w.summary.value
    before, thumb = w.history[-1]["ucvae"].cost, bytes(w.thumbnail.value)
    w.image_index.value = 2
    assert len(w.history) == n + 2 and bytes(w.image.value) != img
    assert w.history[-1]["ucvae"].cost != before  # another image, other chains
    assert thumb.startswith(PNG) and bytes(w.thumbnail.value) != thumb


def test_practical_widget_without_an_exact_gradient_says_so():
    w = practical_widget(small_vae(3), images(2), (4, 4), num_samples=3, replicates=20)
    assert "not shown" in w.summary.value and bytes(w.image.value).startswith(PNG)


def test_practical_widget_needs_a_batch_of_images():
    with pytest.raises(ValueError, match="one image per row"):
        practical_widget(small_vae(2), images()[0])
