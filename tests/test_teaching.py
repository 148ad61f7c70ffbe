"""Teaching computations: checked against the library estimators and closed forms."""

import pytest
import torch

import ucvae_lite as u
from ucvae_lite.lab import teaching as T
from ucvae_lite.studies.stats import variance_and_cost, z_score


def test_fast_mode_reads_environment(monkeypatch):
    monkeypatch.setenv("UCVAE_FAST", "1")
    assert T.fast_mode()
    monkeypatch.setenv("UCVAE_FAST", "0")
    assert not T.fast_mode()
    monkeypatch.delenv("UCVAE_FAST")
    assert not T.fast_mode()


def test_figures_dir_is_repo_root_figures(monkeypatch):
    monkeypatch.delenv("UCVAE_FIGURES", raising=False)  # conftest.py sets it for the session
    path = T.figures_dir()
    assert path.name == "figures" and (path.parent / "ucvae_lite").is_dir()


def test_lag_coupled_chains_batched_unbiased(model, x):
    r = 3000
    target = model.target(x[:1].expand(r, -1), shift=0.5, scale=1.5)
    run = T.lag_coupled_chains(target, 3, m=2, generator=torch.Generator().manual_seed(0))
    # A pair stops at its meeting once past m, so the last step recorded is max τ − 1.
    assert bool((run.tau >= 2).all()) and int(run.tau.max()) == run.steps + 1
    h0 = T.h_km_terms(run, 0, 0).total
    h12 = T.h_km_terms(run, 1, 2).total
    exact = model.posterior(x[:1])[0][0]
    assert z_score(h0, exact).abs().max() < 4
    assert z_score(h12, exact).abs().max() < 4
    # h(X_0) alone is IWAE's self-normalised estimate: biased.
    assert z_score(run.h_x()[0], exact).abs().max() > 4


def test_h_km_terms_errors(model, x):
    run = T.lag_coupled_chains(model.target(x[:1]), 3, generator=torch.Generator().manual_seed(0))
    with pytest.raises(ValueError, match="k <= m"):
        T.h_km_terms(run, 2, 1)
    with pytest.raises(ValueError, match="needs at least"):
        T.h_km_terms(run, 0, run.steps + 1)


def test_cis_chain_starts_biased_and_converges(model, x):
    r = 4000
    target = model.target(x[:1].expand(r, -1), shift=0.5, scale=1.5)
    h = T.run_cis_chain(target, 20, 15, generator=torch.Generator().manual_seed(0))
    assert h.shape == (16, r, 2)
    exact = model.posterior(x[:1])[0][0]
    assert z_score(h[0], exact).abs().max() > 4
    assert z_score(h[-1], exact).abs().max() < 4


def test_exact_gradient_and_iwae_bias(model, x):
    g = T.exact_gradient(model, x[:1])
    assert g.shape == (model.W.numel() + model.b.numel() + 1,)
    bias = T.iwae_curve(model, x[:1], [2, 50], 3000, generator=torch.Generator().manual_seed(0))
    assert bias.grad_max_z[0] > 4  # S = 2: IWAE's gradient is visibly biased
    assert bias.grad_bias[1] < bias.grad_bias[0]


def test_per_replicate_gradients_are_each_replicates_own(model, x):
    """Row r is ∇_θ Σ_{n ∈ r} c_n log p_θ(x, z_n), computed here for each replicate on its own:
    one shared θ, the gradient of that replicate's term of the surrogate alone."""
    r = 5
    target = model.target(x[:1].expand(r, -1), shift=0.5, scale=1.5)
    est = u.coupled_estimate(target, 4, 1, 3, generator=torch.Generator().manual_seed(0))
    grads = T.per_replicate_gradients(model, x[:1], est)
    assert grads.shape == (r, model.W.numel() + model.b.numel() + 1)
    for i in range(r):
        theta = [p.detach().clone().requires_grad_(True) for p in (model.W, model.b,
                                                                      model.log_sigma)]  # fmt: skip
        one = u.LinearGaussian(*theta)
        terms = u.log_likelihood_surrogate(est, u.particle_log_joint(one, target.x), "none")
        terms[i].backward()
        torch.testing.assert_close(grads[i], torch.cat([v.grad.reshape(-1) for v in theta]))
    assert (grads[0] - grads[1]).abs().max() > 1e-3  # replicates differ: a swap would show


def test_iwae_bound_below_log_marginal(model, x):
    target = model.target(x[:1].expand(1, -1), shift=0.5, scale=1.5)
    draws = T.iwae_bound_samples(target, 3, 2000, torch.Generator().manual_seed(0))
    assert draws.shape == (2000, 1)
    exact = model.log_marginal(x[:1]).item()
    assert draws.mean().item() + 4 * draws.std().item() / 2000**0.5 < exact


def test_max_log_weight_bounded_only_for_wide_or_defensive(model, x):
    g = torch.Generator().manual_seed(0)
    sizes = [100, 100_000]
    narrow = T.max_log_weight_vs_n(model.target(x[:1], scale=0.5), sizes, g)
    wide = T.max_log_weight_vs_n(model.target(x[:1], scale=1.5), sizes, g)
    # Narrow proposal: the max log-weight keeps growing; wide: bounded by log p(x) + 2 log 1.5.
    assert narrow[1] - narrow[0] > 1.0
    bound = model.log_marginal(x[:1]).item() + 2 * torch.log(torch.tensor(1.5)).item()
    assert max(wide) <= bound + 1e-9


def test_variance_summary(model, x):
    samples = torch.randn(20000, 2, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    vc = variance_and_cost(samples * torch.tensor([1.0, 2.0], dtype=torch.float64), cost=3.0)
    assert bool(
        (
            (vc.variance - torch.tensor([1.0, 4.0], dtype=torch.float64)).abs() < 4 * vc.variance_se
        ).all()
    )
    assert vc.work == pytest.approx(vc.variance.sum().item() * 3.0)  # total variance × cost


def test_coupling_draws_matches_overlap():
    res = T.coupling_draws([0.5, 0.3, 0.2], [0.1, 0.3, 0.6], n=20000, seed=0)
    assert res.alpha == pytest.approx(0.1 + 0.3 + 0.2)
    assert abs(res.frac_equal - res.alpha) < 4 * (res.alpha * (1 - res.alpha) / res.n) ** 0.5
    with pytest.raises(ValueError, match="non-negative"):
        T.coupling_draws([0, 0], [1, 1])
    with pytest.raises(ValueError, match="equal length"):
        T.coupling_draws([1, 1], [1, 1, 1])


def test_fisher_identity_with_exact_posterior_draws(model, x):
    g = torch.Generator().manual_seed(0)
    z = T.posterior_draws(model, x[:1], 20000, g)
    mean, cov = model.posterior(x[:1])
    assert z_score(z, mean[0]).abs().max() < 4
    grads = T.joint_gradients(model, x[:1], z)
    assert z_score(grads, T.exact_gradient(model, x[:1])).abs().max() < 4
