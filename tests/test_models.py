"""Closed forms and proposals: checked against identities and torch.distributions."""

import math

import pytest
import torch
from torch.distributions import MultivariateNormal, Normal

import ucvae_lite as u


def test_log_marginal_is_bayes_identity(model, x):
    # log p(x) = log p(x, z) - log p(z | x) for every z.
    mean, cov = model.posterior(x)
    z = torch.randn(3, 7, 2, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    post = MultivariateNormal(mean[:, None, :], cov[:, None])
    lhs = model.log_marginal(x)[:, None].expand(3, 7)
    rhs = model.log_joint(x, z) - post.log_prob(z)
    torch.testing.assert_close(lhs, rhs)


def test_batched_parameters_match_shared(model, x):
    B = x.shape[0]
    batched = u.LinearGaussian(
        model.W.expand(B, -1, -1), model.b.expand(B, -1), model.log_sigma.expand(B)
    )
    z = torch.randn(B, 5, 2, dtype=torch.float64)
    torch.testing.assert_close(batched.log_joint(x, z), model.log_joint(x, z))


@pytest.mark.parametrize("full", [False, True])
def test_gaussian_log_prob_matches_torch(full):
    g = torch.Generator().manual_seed(0)
    loc = torch.randn(4, 3, generator=g, dtype=torch.float64)
    if full:
        a = torch.randn(4, 3, 3, generator=g, dtype=torch.float64)
        scale = torch.linalg.cholesky(a @ a.transpose(-1, -2) + torch.eye(3, dtype=torch.float64))
        ref = MultivariateNormal(loc[:, None], scale_tril=scale[:, None])
    else:
        scale = torch.rand(4, 3, generator=g, dtype=torch.float64) + 0.5
        ref = Normal(loc[:, None], scale[:, None])
    q = u.Gaussian(loc, scale)
    z = q.sample(6, g)
    assert z.shape == (4, 6, 3)
    expected = ref.log_prob(z) if full else ref.log_prob(z).sum(-1)
    torch.testing.assert_close(q.log_prob(z), expected)


def test_gaussian_sample_moments():
    loc = torch.tensor([[1.0, -2.0]], dtype=torch.float64)
    scale = torch.tensor([[[1.0, 0.0], [0.8, 0.5]]], dtype=torch.float64)
    z = u.Gaussian(loc, scale).sample(200_000, torch.Generator().manual_seed(0))[0]
    cov = torch.cov(z.T)
    se = 4 * 2 / 200_000**0.5
    assert (z.mean(0) - loc[0]).abs().max() < se
    assert (cov - scale[0] @ scale[0].T).abs().max() < 2 * se


def test_defensive_mixture_density_and_bounded_weights(model, x):
    # 1-D check that q_eps integrates to one; then weights <= max likelihood / eps.
    q1 = u.DefensiveMixture(
        u.Gaussian(torch.tensor([[0.5]], dtype=torch.float64), torch.tensor([[0.3]]).double()),
        0.1,
    )
    grid = torch.linspace(-12, 12, 20001, dtype=torch.float64)
    dens = q1.log_prob(grid.view(1, -1, 1)).exp()[0]
    assert abs(torch.trapezoid(dens, grid).item() - 1) < 1e-6
    eps = 0.2
    tgt = model.target(x, shift=0.0, scale=0.3, defensive=eps)
    z = tgt.sample(5000, torch.Generator().manual_seed(0))
    log_w = tgt.log_weight(z)
    max_log_lik = -0.5 * model.obs_dim * math.log(2 * math.pi) - model.obs_dim * model.log_sigma
    assert bool((log_w <= max_log_lik - math.log(eps) + 1e-9).all())


def test_distribution_errors():
    with pytest.raises(ValueError, match="scale must be"):
        u.Gaussian(torch.zeros(2, 3), torch.ones(2, 2))
    with pytest.raises(ValueError, match="positive"):
        u.Gaussian(torch.zeros(2, 3), torch.zeros(2, 3))
    with pytest.raises(ValueError, match="eps"):
        u.DefensiveMixture(u.Gaussian(torch.zeros(1, 1), torch.ones(1, 1)), 1.5)
    with pytest.raises(ValueError, match="shape"):
        u.StandardNormal(2, 3).log_prob(torch.zeros(2, 5, 4))
