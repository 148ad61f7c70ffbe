"""The exact posterior of a 2-D-latent VAE on a grid, and bias and noise at equal compute.

* ``vae.posterior_grid``: log p(x) by the grid agrees with an unbiased importance-sampling
  estimate of p(x) (within 4 SE), and the grid's posterior mean with the self-normalised one.
* ``practical.exact_output_bias_gradient`` is exactly the autograd gradient of the grid's
  log p(x) (Fisher's identity holds exactly on a grid), and ``per_row_expectation`` of
  ``output_bias_score`` is exactly the surrogate's per-row gradient for the output biases.
* ``estimator_samples`` and ``output_bias_budgets``: ucvae is unbiased against the exact
  gradient (z-threshold, and |b̄|² within 4 SE of 0), IWAE-2 is not (power check).
"""

import math

import pytest
import torch

from ucvae_lite import coupled_estimate
from ucvae_lite.core.surrogate import per_row_gradients
from ucvae_lite.models.vae import VAE, posterior_box, posterior_grid, zoomed_posterior_grid
from ucvae_lite.studies import practical
from ucvae_lite.studies.stats import z_threshold


def vae2(seed: int = 0) -> VAE:
    torch.manual_seed(seed)
    model = VAE(16, (8,), 2).double()
    with torch.no_grad():
        for p in model.decoder.parameters():
            p.mul_(2.0)  # a posterior sharper than the prior
    return model


def images(n: int = 2) -> torch.Tensor:
    g = torch.Generator().manual_seed(1)
    return torch.rand(n, 16, generator=g, dtype=torch.float64).round()


def test_grid_log_marginal_and_mean_agree_with_importance_sampling():
    model, x = vae2(), images()
    grid = posterior_grid(model, x, limit=5.0, n=301)
    assert torch.allclose(grid.posterior_weights.sum(-1), torch.ones(2, dtype=torch.float64))
    with torch.no_grad():
        target = model.target(x)
        z = target.sample(100_000, torch.Generator().manual_seed(2))
        lw = target.log_weight(z)
    w = (lw - lw.max(-1, keepdim=True).values).exp()
    log_p_is = lw.max(-1).values + w.mean(-1).log()
    se = w.std(-1) / w.mean(-1) / math.sqrt(w.shape[-1])  # delta method for log of a mean
    assert ((grid.log_marginal.detach() - log_p_is).abs() < 4 * se).all()
    mean_is = (torch.softmax(lw, -1)[..., None] * z).sum(1)
    mean_grid = grid.expectation(lambda zz: zz).detach()
    assert (mean_grid - mean_is).abs().max() < 0.02
    finer = posterior_grid(model, x, limit=5.0, n=601).log_marginal
    assert (finer - grid.log_marginal).abs().max() < 1e-6  # converged in the grid


def test_grid_needs_a_2d_latent():
    torch.manual_seed(0)
    with pytest.raises(ValueError, match="2-D latent"):
        posterior_grid(VAE(16, (8,), 3), images())


def sharp_offset_vae2(centre: tuple[float, float] = (1.5, -1.0), slope: float = 20.0):
    """A 2-D-latent VAE and one image whose posterior is narrow and far from the origin: the
    decoder's logits are ≈ slope · d_p·(z − centre) for four directions d_p, each with one
    pixel on and one off, so that log p(x | z) falls by ≈ slope·|z − centre|·Σ|cos| away from
    ``centre`` (20 nats within ≈ 0.4). Its posterior box is a small part of [−4, 4]², and a
    grid over the whole square puts few points where the posterior is."""
    torch.manual_seed(0)
    model = VAE(8, (2,), 2).double()
    first, last = model.decoder[0], model.decoder[-1]
    c = torch.tensor(centre, dtype=torch.float64)
    angles = torch.arange(4, dtype=torch.float64) * math.pi / 4
    d = torch.stack([angles.cos(), angles.sin()], -1).repeat_interleave(2, 0)  # [8, 2]
    with torch.no_grad():
        first.weight.copy_(0.2 * torch.eye(2, dtype=torch.float64))  # tanh(0.2 (z − c)): ≈ linear
        first.bias.copy_(-0.2 * c)
        last.weight.copy_(slope / 0.2 * d)
        last.bias.zero_()
    return model, torch.tensor([[1.0, 0.0] * 4], dtype=torch.float64)


def test_exact_gradient_is_the_gradient_of_the_zoomed_grid_log_marginal():
    model, x = sharp_offset_vae2()
    lo1, hi1, lo2, hi2 = box = posterior_box(model, x)
    assert (hi1 - lo1) * (hi2 - lo2) < 64 / 10  # the grid must zoom: the box is small …
    assert lo1 > 0 and hi2 < 0  # … and away from the origin, around (1.5, −1)
    bias = model.decoder[-1].bias
    log_px = posterior_grid(model, x, n=121, box=box).log_marginal.sum()
    (auto,) = torch.autograd.grad(log_px, [bias])
    exact = practical.exact_output_bias_gradient(model, x, 121)[0]
    torch.testing.assert_close(exact, auto, rtol=1e-10, atol=1e-12)
    # the zoom is what makes 121² points enough: the same points over the whole square are not
    log_px_square = posterior_grid(model, x, 4.0, 121).log_marginal.sum()
    (square,) = torch.autograd.grad(log_px_square, [bias])
    assert (square - exact).abs().max() > 1e-6


def test_output_bias_score_is_the_surrogates_per_row_gradient():
    model, x = vae2(), images(3)
    est = coupled_estimate(model.target(x), 4, 1, 2, generator=torch.Generator().manual_seed(0))
    name = f"decoder.{len(model.decoder) - 1}.bias"
    params = {name: model.decoder[-1].bias}
    auto = per_row_gradients(model, x, est, params=params)
    closed = practical.per_row_expectation(est, practical.output_bias_score(model, x), chunk=7)
    torch.testing.assert_close(closed, auto, rtol=1e-9, atol=1e-11)


def test_ucvae_unbiased_and_iwae_biased_against_the_exact_gradient():
    model, x = vae2(), images(2)
    exact = practical.exact_output_bias_gradient(model, x, 201)
    g = torch.Generator().manual_seed(3)
    budgets, checks = practical.output_bias_budgets(
        model, x, exact, (2,), 4, 0, 0, replicates=4000, factor=1.5, generator=g
    )
    uc, iw = budgets
    assert uc.cost > 8 and iw.cost == 2 and (checks["tau"] >= 2).all()
    assert uc.unbiased and not iw.unbiased and uc.data_variance > 0
    z, n = checks["ucvae"]
    assert z < z_threshold(n) and abs(uc.bias2) < 4 * uc.bias2_se
    z, n = checks["IWAE-2"]
    assert z > z_threshold(n) and iw.bias2 > 4 * iw.bias2_se  # power: the biased one fails
    assert uc.crossover(iw) > 0


def test_estimator_samples_per_image():
    model, x = vae2(), images(3)
    samples, tau = practical.estimator_samples(model, x, "ucvae", 3, 7, 1, 2)
    assert len(samples) == 3 and samples[0].grads.shape == (7, 16) and tau.shape == (21,)
    assert all(s.cost >= 2 * 3 for s in samples)
    samples, tau = practical.estimator_samples(model, x, "iwae", 5, 7)
    assert all(s.cost == 5 for s in samples) and (tau == 0).all()


def test_output_bias_comparison_at_equal_cost():
    """Notebook 06's widget: ucvae against IWAE-S and IWAE-S' (S' = ucvae's cost), each budget
    measured against the exact gradient; ucvae passes its z-test."""
    from ucvae_lite.studies.landscape import minibatch_error_budget

    model, x = vae2(), images(1)
    exact = practical.exact_output_bias_gradient(model, x, 101)
    res = practical.output_bias_comparison(
        model, x, 3, 1, 2, 300, 1.5, exact, torch.Generator().manual_seed(0)
    )
    uc, tau = practical.estimator_samples(
        model, x, "ucvae", 3, 300, 1, 2, 1.5, torch.Generator().manual_seed(0), 20_000
    )
    assert res.ucvae == minibatch_error_budget("ucvae", uc, exact)  # against the exact gradient
    assert torch.equal(res.tau, tau) and res.matched_s == max(2, round(uc[0].cost)) > 3
    assert res.iwae_same_s.cost == 3 and res.iwae_same_cost.cost == res.matched_s
    assert res.ucvae.unbiased and not res.iwae_same_s.unbiased
    z, n = res.z_test
    assert res.against_exact and z < z_threshold(n)
    blind = practical.output_bias_comparison(model, x, 3, 0, 0, 20)  # no exact gradient
    assert not blind.against_exact and blind.tau.shape == (20,)


def test_widened_target_scales_the_encoder_and_checks_its_input():
    model, x = vae2(), images()
    q = model.encode(x)
    t = practical.widened_target(model, x, 2.5)
    torch.testing.assert_close(t.proposal.scale, 2.5 * q.scale.detach())
    torch.testing.assert_close(t.proposal.loc, q.loc.detach())
    with pytest.raises(ValueError, match="widening factor"):
        practical.widened_target(model, x, 0.0)
    torch.manual_seed(0)
    with pytest.raises(ValueError, match="diagonal"):
        practical.widened_target(VAE(16, (8,), 2, covariance="full"), images().float(), 2.0)
    with pytest.raises(ValueError, match="method"):
        practical.estimator_samples(model, x, "elbo", 3, 4)


def test_weight_diagnostics_of_a_widened_proposal():
    model, x = vae2(), images(4)
    same = [
        practical.weight_diagnostics(
            model, x, 10, num_khat=0, generator=torch.Generator().manual_seed(0), **kw
        )
        for kw in ({}, {"factor": 1.0})
    ]
    torch.testing.assert_close(same[0]["ess"], same[1]["ess"])
    wide = practical.weight_diagnostics(model, x, 10, num_khat=0, factor=4.0)
    assert wide["median_ess"] < same[0]["median_ess"]  # a far too wide q: more degenerate
    with pytest.raises(ValueError, match="not both"):
        practical.weight_diagnostics(model, x, 10, eps=0.1, factor=2.0)


def test_grid_kl_divergences():
    model, x = vae2(), images(2)
    grid = posterior_grid(model, x, 5.0, 201)
    q = model.encode(x)
    log_q = q.log_prob(grid.points.expand(2, -1, -1))
    excl, incl = (v.detach() for v in grid.kl(log_q))
    assert (excl > 0).all() and (incl > 0).all()
    # KL(q ‖ p) = log p(x) − ELBO: check against a Monte Carlo ELBO (within 4 SE)
    with torch.no_grad():
        z = q.sample(50_000, torch.Generator().manual_seed(5))
        lw = model.log_joint(x, z) - q.log_prob(z)
    gap = grid.log_marginal.detach() - lw.mean(-1)
    assert ((gap - excl).abs() < 4 * lw.std(-1) / math.sqrt(50_000)).all()
    same = grid.kl(grid.log_joint.detach())  # p against itself
    assert torch.allclose(same[0], torch.zeros(2, dtype=torch.float64), atol=1e-12)


def test_zoomed_grid_agrees_with_a_fine_grid_at_a_fraction_of_the_points():
    """On the shipped 2-D model (sharp posteriors: the case the zoom is for)."""
    from ucvae_lite.lab import pretrained
    from ucvae_lite.training.data import load_dataset

    model = pretrained.load("iwae_2d")[0]
    x = load_dataset("digits").test[8:10]
    for i in range(2):
        fine = posterior_grid(model, x[i : i + 1], 4.0, 801).log_marginal
        coarse = posterior_grid(model, x[i : i + 1], 4.0, 201).log_marginal
        zoom = zoomed_posterior_grid(model, x[i : i + 1], 201)
        lo1, hi1, lo2, hi2 = posterior_box(model, x[i : i + 1])
        assert -4 <= lo1 < hi1 <= 4 and -4 <= lo2 < hi2 <= 4 and (hi1 - lo1) * (hi2 - lo2) < 64
        assert (zoom.log_marginal - fine).abs().item() < 2e-5
    assert (coarse - fine).abs().item() > 1e-3  # image 9: 201 points on the square are too few
    with pytest.raises(ValueError, match="non-empty box"):
        posterior_grid(model, x, n=11, box=(1.0, 0.0, 0.0, 1.0))


def test_uncovered_mass_finds_the_mode_the_encoder_misses():
    """Shipped 2-D model: test image 4 has a second mode (0.2% of the posterior) about five
    encoder standard deviations away; image 5's posterior sits inside q's 4-σ ellipse."""
    from ucvae_lite.lab import pretrained
    from ucvae_lite.training.data import load_dataset

    model = pretrained.load("iwae_2d")[0]
    mass = practical.uncovered_mass(model, load_dataset("digits").test[[4, 5]])
    assert mass[0] > 1e-3 and mass[1] < 1e-4
