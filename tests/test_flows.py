"""The flow encoder: change of variables, normalisation, sampling law, and the package contract."""

import pytest
import torch
from conftest import replicate

import ucvae_lite as u
from ucvae_lite.models.distributions import Gaussian
from ucvae_lite.models.flows import ConditionalFlow, FlowGaussian
from ucvae_lite.models.vae import VAE
from ucvae_lite.studies.stats import z_score
from ucvae_lite.training.evaluate import load_model


def _random_flow(dim: int, context_dim: int, layers: int, seed: int) -> ConditionalFlow:
    """A flow with random (non-identity) parameters, in float64."""
    torch.manual_seed(seed)
    flow = ConditionalFlow(dim, context_dim, layers, hidden=16).double()
    with torch.no_grad():
        for p in flow.parameters():
            p.normal_(0.0, 0.5)
    return flow


def _flow_q(batch: int = 3, dim: int = 2, layers: int = 3, seed: int = 0) -> FlowGaussian:
    g = torch.Generator().manual_seed(seed)
    loc = torch.randn(batch, dim, generator=g, dtype=torch.float64) * 0.5
    scale = torch.rand(batch, dim, generator=g, dtype=torch.float64) * 0.5 + 0.5
    context = torch.randn(batch, 4, generator=g, dtype=torch.float64)
    return FlowGaussian(Gaussian(loc, scale), _random_flow(dim, 4, layers, seed), context)


def test_inverse_undoes_forward_and_log_det_is_the_jacobian():
    q = _flow_q(dim=5, layers=4)
    z0 = q.base.sample(6, torch.Generator().manual_seed(1))
    ctx = q.context[:, None].expand(3, 6, -1)
    z, log_det = q.flow(z0, ctx)
    back, log_det_inv = q.flow(z, ctx, inverse=True)
    torch.testing.assert_close(back, z0)
    torch.testing.assert_close(log_det_inv, log_det)
    for b, n in [(0, 0), (1, 3), (2, 5)]:
        jac = torch.autograd.functional.jacobian(
            lambda v, b=b: q.flow(v[None], q.context[b : b + 1])[0][0], z0[b, n]
        )
        torch.testing.assert_close(torch.linalg.slogdet(jac)[1], log_det[b, n])


def test_density_integrates_to_one_and_matches_its_samples():
    # On a 2-D grid: ∫ q = 1 (the sign of the log-determinant is right), and the grid mean
    # ∫ z q(z) dz equals the mean of q's own samples within 4 SE (sample and log_prob agree).
    q = _flow_q(batch=2, dim=2, layers=3, seed=2)
    h = 0.02
    axis = torch.arange(-9.0, 9.0, h, dtype=torch.float64)
    grid = torch.cartesian_prod(axis, axis)  # [G, 2]
    dens = q.log_prob(grid[None].expand(2, -1, -1)).exp()  # [2, G]
    mass = dens.sum(-1) * h * h
    torch.testing.assert_close(mass, torch.ones(2, dtype=torch.float64), atol=2e-3, rtol=0)
    grid_mean = (dens[..., None] * grid).sum(1) * h * h
    z = q.sample(20_000, torch.Generator().manual_seed(3))
    se = z.std(1) / z.shape[1] ** 0.5
    assert ((z.mean(1) - grid_mean).abs() < 4 * se).all(), (z.mean(1), grid_mean, se)


def test_select_and_detach():
    q = _flow_q()
    z = q.sample(4, torch.Generator().manual_seed(0)).detach()
    idx = torch.tensor([2, 2, 0])
    torch.testing.assert_close(q.select(idx).log_prob(z[idx]), q.log_prob(z)[idx])
    assert not q.detach().log_prob(z).requires_grad
    assert q.log_prob(z).requires_grad  # the flow's parameters are in the graph
    torch.testing.assert_close(q.detach().log_prob(z), q.log_prob(z).detach())


def test_flow_vae_starts_as_its_diagonal_gaussian_and_trains_phi(tmp_path):
    torch.manual_seed(0)
    vae = VAE(16, (8, 8), 3, flow_layers=2)
    x = torch.rand(4, 16).round()
    q = vae.encode(x)
    z = q.sample(5).detach()
    torch.testing.assert_close(q.log_prob(z), q.base.log_prob(z))  # identity at init
    with torch.no_grad():  # leave the identity so every flow parameter matters
        for p in vae.flow.parameters():
            p.normal_(0.0, 0.3)
    q = vae.encode(x)
    z = q.sample(5)
    loss = -u.iwae_bound(vae.log_joint(x, z) - q.log_prob(z)).mean()
    loss.backward()
    assert all(bool((p.grad != 0).any()) for p in vae.flow.parameters())
    path = tmp_path / "checkpoint.pt"
    torch.save({"model_config": vae.config(), "model": vae.state_dict()}, path)
    loaded, _ = load_model(path)  # torch.load(weights_only=True), VAE(**config)
    assert loaded.config()["flow_layers"] == 2
    z = z.detach()
    torch.testing.assert_close(loaded.encode(x).log_prob(z), vae.encode(x).log_prob(z))


def test_detached_flow_is_frozen_at_detach_time():
    q = _flow_q()
    frozen = q.detach()
    z = q.sample(4, torch.Generator().manual_seed(0)).detach()
    before = frozen.log_prob(z)
    with torch.no_grad():  # what an optimiser step does to the live flow
        for p in q.flow.parameters():
            p.add_(0.1)
    torch.testing.assert_close(frozen.log_prob(z), before)
    torch.testing.assert_close(frozen.select(torch.tensor([1])).log_prob(z[[1]]), before[[1]])
    assert not torch.allclose(q.log_prob(z), before)


def test_coupled_estimate_with_a_flow_proposal_is_unbiased(model, x):
    # The linear-Gaussian posterior, with a non-trivial flow proposal: moments within 4 SE.
    R, B = 3000, x.shape[0]
    mean, cov = model.posterior(x)
    xr = replicate(x, R)
    base = Gaussian(
        replicate(mean + 0.3, R), replicate(1.3 * torch.diagonal(cov, dim1=-2, dim2=-1).sqrt(), R)
    )
    flow = _random_flow(2, x.shape[1], 2, seed=4)
    with torch.no_grad():
        for p in flow.parameters():
            p.mul_(0.4)  # a moderate warp: the weights stay usable
    q = FlowGaussian(base, flow, xr).detach()
    target = u.ImportanceTarget(model, xr, q)
    est = u.coupled_estimate(target, 4, 1, 2, generator=torch.Generator().manual_seed(5))
    exact_mean, exact_second = model.posterior_moments(x)
    m = est.mean().view(B, R, 2)
    sec = est.second_moment().view(B, R, 2, 2)
    for b in range(B):
        assert z_score(m[b], exact_mean[b]).abs().max() < 4
        assert z_score(sec[b], exact_second[b]).abs().max() < 4
    iw = u.iwae_estimate(target, 4, generator=torch.Generator().manual_seed(6))
    iw_mean = iw.mean().view(B, R, 2)
    assert max(z_score(iw_mean[b], exact_mean[b]).abs().max() for b in range(B)) > 4


def test_coupled_estimator_runs_on_a_flow_vae_with_a_defensive_mixture():
    torch.manual_seed(0)
    vae = VAE(16, (8, 8), 3, flow_layers=2)
    x = torch.rand(5, 16).round()
    est = u.coupled_estimate(vae.target(x, eps=0.1), 4, 1, 2, generator=torch.Generator())
    assert est.tau.shape == (5,) and bool((est.tau >= 2).all())
    assert est.flat_particles.dtype == torch.float32


def test_bad_flow_arguments():
    with pytest.raises(ValueError, match="flow_layers"):
        VAE(16, (8,), 3, flow_layers=-1)
    with pytest.raises(ValueError, match="covariance='diag'"):
        VAE(16, (8,), 3, covariance="full", flow_layers=2)
    with pytest.raises(ValueError, match="hidden layer"):
        VAE(16, (), 3, flow_layers=1)
    with pytest.raises(ValueError, match="num_layers"):
        ConditionalFlow(3, 4, 0)
    q = _flow_q()
    with pytest.raises(ValueError, match="context"):
        FlowGaussian(q.base, q.flow, q.context[:2])
