"""``exact``: log p_θ(x) and its θ-gradient on per-image grids for a 2-D latent.

* On the linear-Gaussian model (closed form), the grid's log p(x) and its autograd gradient in
  every parameter agree with the closed form's to 1e-8, from a proposal that is off-centre and
  too wide (so the first grids are not centred on the posterior).
* On the shipped digits VAE with a 2-D latent, the answer agrees with an independent uniform
  801 × 801 grid to 1e-3 nats, and ``grid_error``'s refinement, widening and edge checks pass.
* Bad input is a ValueError: a latent that is not 2-D, an even or tiny grid, and a grid that
  still cuts off posterior mass after its passes.
"""

import pytest
import torch

from ucvae_lite.lab import pretrained
from ucvae_lite.models.linear_gaussian import LinearGaussian
from ucvae_lite.models.vae import VAE, posterior_grid
from ucvae_lite.studies import exact
from ucvae_lite.training.data import load_dataset


class OffCentre:
    """The linear-Gaussian model seen through a proposal 0.5 off the posterior, 1.5× wider."""

    latent_dim = 2

    def __init__(self, model: LinearGaussian):
        self.model = model

    def log_joint(self, x, z):
        return self.model.log_joint(x, z)

    def proposal(self, x):
        return self.model.proposal(x, shift=0.5, scale=1.5)


def linear_gaussian():
    model = LinearGaussian.example()
    x = model.sample_data(6, torch.Generator().manual_seed(3))
    return model, x


def test_log_marginal_and_gradient_match_the_closed_form():
    model, x = linear_gaussian()
    params = [model.W, model.b, model.log_sigma]
    for p in params:
        p.requires_grad_(True)
    answer = exact.exact_log_marginal(OffCentre(model), x)
    closed = model.log_marginal(x)
    assert (answer.log_marginal - closed).abs().max() < 1e-8
    grid_grads = torch.autograd.grad(answer.log_marginal.sum(), params)
    exact_grads = torch.autograd.grad(closed.sum(), params)
    for g, e in zip(grid_grads, exact_grads, strict=True):
        assert (g - e).abs().max() < 1e-8 * (1 + e.abs().max())
    assert (answer.edge_mass < exact.EDGE_TOL).all() and (answer.gap < exact.GAP_TOL).all()


def test_oracle_loss_is_minus_the_mean_log_likelihood():
    model, x = linear_gaussian()
    loss = exact.oracle_loss(OffCentre(model), x)
    assert torch.allclose(loss, -model.log_marginal(x).mean(), atol=1e-8)


def test_shipped_2d_model_agrees_with_a_fine_uniform_grid():
    torch.manual_seed(0)
    model = pretrained.load("iwae_2d")[0]
    x = load_dataset("digits", binarization="static").test[:4]
    with torch.no_grad():
        answer = exact.exact_log_marginal(model, x)
        uniform = posterior_grid(model, x, limit=6.0, n=801).log_marginal
    assert (answer.log_marginal - uniform).abs().max() < 1e-3
    report = exact.grid_error(model, x)
    assert report["refine"] < 1e-3 and report["widen"] < 1e-3
    assert report["edge"] < exact.EDGE_TOL


def test_bad_input_is_a_value_error():
    model, x = linear_gaussian()
    torch.manual_seed(0)
    with pytest.raises(ValueError, match="2-D latent"):
        exact.exact_log_marginal(VAE(16, (8,), 3), torch.zeros(2, 16))
    with pytest.raises(ValueError, match="odd n"):
        exact.exact_log_marginal(OffCentre(model), x, n=20)
    with pytest.raises(ValueError, match="cuts off"):  # a reach of 0.3 cannot hold it
        exact.exact_log_marginal(OffCentre(model), x, reach=0.3, max_passes=1)
    answer = exact.exact_log_marginal(OffCentre(model), x, reach=0.3)  # later passes widen it
    assert (answer.log_marginal - model.log_marginal(x)).abs().max() < 1e-6


def test_oracle_gradient_error_is_small_on_the_shipped_model_and_grows_on_a_coarse_grid():
    torch.manual_seed(0)
    model = pretrained.load("iwae_2d")[0]
    x = load_dataset("digits", binarization="static").train[:6]
    fine = exact.oracle_gradient_error(model, x)  # the default grid trains the study's oracle
    coarse = exact.oracle_gradient_error(model, x, n=7)
    assert fine < 0.01 and coarse > 10 * fine
