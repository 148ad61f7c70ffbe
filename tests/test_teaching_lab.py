"""The lab's teaching helpers (notebooks 00-04) against exact answers."""

import math

import pytest
import torch

import ucvae_lite as u
from ucvae_lite.lab import teaching as T
from ucvae_lite.studies.budget import crossover_budget
from ucvae_lite.studies.stats import z_score


@pytest.mark.parametrize(("shift", "scale"), [(0.5, 1.5), (0.0, 1.0), (0.2, 3.0), (-0.3, 1.1)])
@pytest.mark.parametrize("order", [2, 3])
def test_weight_moment_matches_monte_carlo(model, x, shift, scale, order):
    x1 = x[:1]
    target = model.target(x1, shift=shift, scale=scale)
    w = (target.log_weight(target.sample(400_000, torch.Generator().manual_seed(0)))[0]
         - model.log_marginal(x1)).exp()  # fmt: skip
    mc = w.pow(order)
    exact = T.weight_moment(model, x1, order, shift, scale)
    assert abs(mc.mean().item() - exact) < 5 * mc.std().item() / math.sqrt(len(mc)) + 1e-9
    if shift == 0 and scale == 1:
        assert exact == pytest.approx(1.0)


def test_weight_moment_is_infinite_for_narrow_proposals(model, x):
    assert T.weight_moment(model, x[:1], 2, 0.0, 0.7) == math.inf  # c² ≤ 1/2
    assert math.isfinite(T.weight_moment(model, x[:1], 2, 0.0, 0.8))
    assert T.relative_weight_variance(model, x[:1], 0.0, 1.0) == pytest.approx(0.0, abs=1e-12)
    with pytest.raises(ValueError):
        T.weight_moment(model, x[:1], 0)


def test_iwae_curve_gap_and_gradient_bias(model, x):
    g = torch.Generator().manual_seed(0)
    c = T.iwae_curve(model, x[:1], [1, 5, 50], 2000, 0.5, 1.5, g, bound_replicates=20_000)
    assert c.num_samples == [1, 5, 50] and math.isnan(c.grad_bias[0])
    assert all(gap > 4 * se for gap, se in zip(c.gap, c.gap_se, strict=True))  # L_S < log p(x)
    assert c.gap[0] > c.gap[1] > c.gap[2]
    # the delta method: S × gap → V / 2
    assert abs(50 * c.gap[2] - c.variance / 2) < 4 * 50 * c.gap_se[2] + 0.1 * c.variance
    assert c.grad_max_z[1] > 4 and c.grad_bias[1] > c.grad_bias[2]
    perfect = T.iwae_curve(model, x[:1], [5], 200, 0.0, 1.0, g)  # q = posterior: no bias
    assert abs(perfect.gap[0]) < 1e-9 and perfect.grad_max_z[0] < 5


def test_group_mean_gradients_average_per_replicate_gradients(model, x):
    target = model.target(x[:1].expand(40, -1), shift=0.5, scale=1.5)
    est = u.iwae_estimate(target, 4, torch.Generator().manual_seed(0))
    per = T.per_replicate_gradients(model, x[:1], est)
    blocks = T.group_mean_gradients(model, x[:1], est, groups=8)
    torch.testing.assert_close(blocks, per.reshape(8, 5, -1).mean(1))
    with pytest.raises(ValueError, match="equal groups"):
        T.group_mean_gradients(model, x[:1], est, groups=7)


def test_extended_target_marginal_and_conditional(model, x):
    """Slot 1 of π̄ is p with prob 1/S and q otherwise; s given the set is drawn ∝ w."""
    x1, S, R = x[:1], 4, 20_000
    target = model.target(x1.expand(R, -1), shift=0.5, scale=1.5)
    d = T.extended_target_draws(model, x1, target, S, torch.Generator().manual_seed(0))
    assert T.extended_target_checks is T.extended_target_draws  # notebook 01's stored .ipynb
    exact = model.posterior(x1)[0][0] / S + (1 - 1 / S) * target.proposal.loc[0]
    assert z_score(d["slot0"], exact).abs().max() < 4
    onehot = torch.nn.functional.one_hot(d["s"], S).double()
    assert z_score(onehot - d["wbar"], torch.zeros(S)).abs().max() < 4.5
    # power: under q^S (no posterior slot) the first slot's mean is q's
    assert z_score(target.sample(1)[:, 0], exact).abs().max() > 4


def test_cis_step_leaves_the_extended_target_invariant(model, x):
    x1, R = x[:1], 20_000
    g = torch.Generator().manual_seed(1)
    target = model.target(x1.expand(R, -1), shift=0.5, scale=1.5)
    state = T.stationary_cis_state(model, x1, target, 5, g)
    exact = model.posterior(x1)[0][0]
    assert z_score(state.particles[:, 0], exact).abs().max() < 4
    rec = T.record_cis_chain(target, 5, 3, g, initial=state)
    assert rec.steps == 3 and len(rec.indices) == 3
    for s in rec.states[1:]:
        assert z_score(s.particles[:, 0], exact).abs().max() < 4
    start = T.record_cis_chain(target, 5, 1, g)  # from q^S: the first reference is biased
    assert z_score(start.states[1].particles[:, 0], exact).abs().max() > 4
    p, se = T.move_probability(target, state, generator=g)
    assert 0 < p < 1 and se > 0


def test_record_cis_chain_replays_run_cis_chain(model, x):
    target = model.target(x, shift=0.5, scale=1.5)
    rec = T.record_cis_chain(target, 4, 5, torch.Generator().manual_seed(3))
    h = T.run_cis_chain(target, 4, 5, generator=torch.Generator().manual_seed(3))
    torch.testing.assert_close(torch.stack([T.h_values(s) for s in rec.states]), h)
    for t in range(5):  # the new reference is the selected particle
        sel = rec.states[t].particles[torch.arange(3), rec.indices[t]]
        torch.testing.assert_close(rec.states[t + 1].particles[:, 0], sel)


def test_selected_slots_agree_with_the_particles(model, x):
    target = model.target(x.repeat_interleave(10, 0), shift=0.5, scale=1.5)
    run = T.lag_coupled_chains(target, 4, 6, generator=torch.Generator().manual_seed(2))
    for t in range(run.steps):
        ix, iy = T.selected_slots(run, t)
        live = ix >= 0
        rows = torch.arange(len(ix))[live]
        torch.testing.assert_close(
            run.xs[t + 1].particles[rows, 0], run.xs[t].particles[rows, ix[live]]
        )
        if t == 0:
            assert bool((iy == -1).all())
            continue
        met_next = (t + 1 >= run.tau) & live
        assert bool((ix[met_next] == iy[met_next]).all())  # meeting = the same slot
        assert bool((ix[met_next & (t + 1 == run.tau)] > 0).all())  # a shared fresh slot
    with pytest.raises(ValueError):
        T.selected_slots(run, run.steps)


def test_single_start_average_is_h_km(model, x):
    target = model.target(x.repeat_interleave(5, 0), shift=0.5, scale=1.5)
    run = T.lag_coupled_chains(target, 3, 6, generator=torch.Generator().manual_seed(0))
    for k, m in [(0, 0), (1, 3), (2, 6)]:
        torch.testing.assert_close(T.single_start_average(run, k, m), T.h_km_terms(run, k, m).total)


def test_find_seed():
    assert T.find_seed(lambda s: s % 7 == 3) == 3
    with pytest.raises(ValueError, match="no seed"):
        T.find_seed(lambda s: False, tries=5)


def test_survival_test():
    from ucvae_lite.core.diagnostics import degenerate_survival

    t = torch.tensor([2.0, 5.0])
    law = degenerate_survival(t, 4)
    emp, z = T.survival_test(torch.tensor([2, 3, 3, 6, 9]), t, law)
    torch.testing.assert_close(emp, torch.tensor([0.8, 0.4], dtype=torch.float64))
    assert torch.isfinite(T.survival_test(torch.full((5,), 2), t, law)[1]).all()  # all met


def test_cis_step_view_reads_the_record(model, x):
    target = model.target(x, shift=0.5, scale=1.5)
    rec = T.record_cis_chain(target, 4, 6, torch.Generator().manual_seed(3))
    torch.testing.assert_close(rec.h(), torch.stack([T.h_values(s) for s in rec.states]))
    for t in range(6):
        v = T.cis_step_view(rec, t, row=2)
        assert v.selected == int(rec.indices[t][2]) and v.trail.shape == (t + 1, 2)
        torch.testing.assert_close(v.trail[-1], rec.states[t].particles[2, 0])
        torch.testing.assert_close(v.weights, torch.softmax(rec.states[t].log_weights[2], -1))
        assert v.moves == sum(int(rec.indices[s][2]) != 0 for s in range(t))
    with pytest.raises(ValueError, match="t must be"):
        T.cis_step_view(rec, 6)


def test_coupled_step_explains_the_meeting(model, x):
    """The pair meets at τ exactly when both chains select one shared fresh slot at τ − 1."""
    one = model.target(x[:1], shift=0.5, scale=1.5)
    outcomes = set()
    for seed in range(6):
        run = T.lag_coupled_chains(one, 4, 12, 12, torch.Generator().manual_seed(seed))
        tau = int(run.tau[0])
        for t in range(1, run.steps):
            step = T.coupled_step(run, t)
            outcomes.add(step.outcome)
            assert step.met == (t >= tau) and step.tau == tau
            assert (step.outcome == "meet") == (t == tau - 1)
            assert step.alpha == pytest.approx(torch.minimum(step.wx, step.wy).sum().item())
            assert 0 <= step.alpha <= 1 + 1e-12
    assert {"met", "meet"} <= outcomes
    with pytest.raises(ValueError, match="t must be"):
        T.coupled_step(run, 0)


def test_variance_comparison_against_the_exact_posterior_mean(model, x):
    g = torch.Generator().manual_seed(0)
    res = T.variance_comparison(model, x, 3, 0, 2, 0.5, 1.5, 400, 4000, g)
    assert res.iwae.cost == 3 and res.coupled.cost == res.variance_cost.cost >= 6
    assert res.coupled.unbiased and not res.iwae.unbiased
    assert res.coupled.variance == pytest.approx(res.variance_cost.total)
    assert abs(res.coupled.bias2) < 4 * res.coupled.bias2_se  # H_{k:m}: unbiased
    assert res.iwae.bias2 > 4 * res.iwae.bias2_se  # IWAE-3 is biased: C* exists
    assert res.crossover == crossover_budget(res.coupled, res.iwae)
    g = torch.Generator().manual_seed(2)
    exact = T.variance_comparison(model, x, 3, 0, 0, 0.0, 1.0, 200, 2000, g)  # q = posterior
    assert exact.iwae.bias2 <= 4 * exact.iwae.bias2_se  # no bias left to resolve …
    assert exact.crossover is None  # … so no C* (here |b|² > 0 by chance: C* would be noise)
