"""The notebooks' step-by-step runner and the fast estimator agree exactly.

``teaching.lag_coupled_chains`` records every particle set X_t, Y_{t−1} and
``teaching.h_km_terms`` assembles H_{k:m} from them straight from its definition.
``coupled_estimate`` credits the same terms to stored particles step by step, merges shared
particles and drops finished chains. With the same seed both see the same draws (they run the
same ``CoupledChains``), so τ and every particle's coefficient must be identical — for batches
whose chains finish at different times, with the MH move, with ``initial=`` and through a
target without ``select``. ``hkm_weights`` is checked against its formula and against the
term-by-term sum.
"""

import pytest
import torch
from conftest import NoSelect

import ucvae_lite as u
from ucvae_lite.core.hkm import correction_weight, hkm_weights
from ucvae_lite.core.kernels import CISState
from ucvae_lite.lab import teaching as T


@pytest.mark.parametrize("k,m", [(0, 0), (1, 2), (2, 6), (3, 3)])
def test_hkm_weights_formula(k, m):
    unmet = torch.tensor([True, False, True])
    for t in range(0, 15):
        a, b = hkm_weights(t, k, m, unmet, dtype=torch.float64)
        average = 1 / (m - k + 1) if k <= t <= m else 0.0
        corr = min(1.0, (t - k) / (m - k + 1)) if t >= k + 1 else 0.0
        assert correction_weight(t, k, m) == corr
        expect_a = torch.tensor([average + corr, average, average + corr], dtype=torch.float64)
        torch.testing.assert_close(a, expect_a, rtol=0, atol=0)
        torch.testing.assert_close(b, -torch.tensor([corr, 0.0, corr], dtype=torch.float64))
    with pytest.raises(ValueError, match="k <= m"):
        hkm_weights(0, 2, 1, unmet)


def _distinct_points(model, n=6):
    """Data points far apart, so their chains meet at very different times."""
    return (
        model.sample_data(n, torch.Generator().manual_seed(7))
        * torch.linspace(0.5, 3.0, n, dtype=torch.float64)[:, None]
    )


def _coefficients_from_run(run: T.CoupledRun, k: int, m: int, size: int) -> torch.Tensor:
    """[B, size]: each particle's coefficient in H_{k:m}, assembled term by term from the run
    (f = one-hot of the particle's id, so h(ξ) = Σ_j w̄_j e_{id_j})."""

    def one_hot(s: CISState) -> CISState:
        ids = s.ids.clamp_min(0)
        return CISState(torch.nn.functional.one_hot(ids, size).double(), s.log_weights, s.ids)

    onehot_run = T.CoupledRun(
        [one_hot(s) for s in run.xs],
        [one_hot(s) for s in run.ys],
        run.running,
        run.tau,
        run.truncated,
        run.num_samples,
    )
    return T.h_km_terms(onehot_run, k, m).total


def _coefficients_from_estimate(est: u.Estimate) -> torch.Tensor:
    M = est.flat_coef.numel()
    out = torch.zeros(est.batch_size, M, dtype=torch.float64)
    out[est.rows, torch.arange(M)] = est.flat_coef.double()
    return out


CASES = {
    "plain": {},
    "mh-move": {"move": 0.4},
    "initial": {"initial": True},
    "no-select": {"no_select": True},
    "no-select+move+initial": {"no_select": True, "move": 0.4, "initial": True},
}


@pytest.mark.parametrize("case", CASES, ids=list(CASES))
@pytest.mark.parametrize("k,m", [(0, 0), (1, 3), (2, 2)])
def test_runner_and_estimator_identical(model, case, k, m):
    opts = CASES[case]
    x = _distinct_points(model)
    B, S, seed = x.shape[0], 3, 17 + k + m
    inner = model.target(x, shift=0.7, scale=0.8)
    target = NoSelect(inner) if opts.get("no_select") else inner
    kwargs = {}
    if opts.get("move"):
        kwargs["move"] = u.RandomWalkMH(opts["move"])
    if opts.get("initial"):
        g0 = torch.Generator().manual_seed(seed + 100)
        z0 = inner.sample(S, g0)
        kwargs["initial"] = (z0, inner.log_weight(z0))

    est = u.coupled_estimate(
        target, S, k, m, generator=torch.Generator().manual_seed(seed), **kwargs
    )
    run = T.lag_coupled_chains(
        target, S, m, generator=torch.Generator().manual_seed(seed), **kwargs
    )

    assert torch.equal(run.tau, est.tau)
    assert len(set(est.tau.tolist())) > 2, "the chains should finish at different times"
    # The runner's particle ids are the estimator's storage positions: same particles.
    for s in run.xs + run.ys:
        ok = s.ids >= 0
        torch.testing.assert_close(s.particles[ok], est.flat_particles[s.ids[ok]], rtol=0, atol=0)
    # Every particle's coefficient, and hence H_{k:m} for every f.
    M = est.flat_coef.numel()
    torch.testing.assert_close(
        _coefficients_from_run(run, k, m, M), _coefficients_from_estimate(est), rtol=0, atol=1e-12
    )
    torch.testing.assert_close(T.h_km_terms(run, k, m).total, est.mean(), rtol=0, atol=1e-12)
    # The cost: one stored particle per evaluation, counted per data point.
    assert torch.equal(torch.bincount(est.rows, minlength=B), est.num_evals)


def test_cross_check_can_fail(model):
    """Power check: a different seed, or other (k, m), gives different coefficients."""
    x = _distinct_points(model)
    target = model.target(x, shift=0.7, scale=0.8)
    est = u.coupled_estimate(target, 3, 1, 3, generator=torch.Generator().manual_seed(1))
    run = T.lag_coupled_chains(target, 3, 3, generator=torch.Generator().manual_seed(1))
    M = est.flat_coef.numel()
    wrong_km = _coefficients_from_run(run, 0, 3, M)
    assert not torch.allclose(wrong_km, _coefficients_from_estimate(est), atol=1e-6)
    other = T.lag_coupled_chains(target, 3, 3, generator=torch.Generator().manual_seed(2))
    assert not torch.equal(other.tau, est.tau)


def test_hkm_weights_regroup_the_term_by_term_sum(model):
    """Σ_t a_t h(X_t) + b_t h(Y_{t−1}) with ``hkm_weights`` equals ``h_km_terms``' definition."""
    x = _distinct_points(model)
    run = T.lag_coupled_chains(
        model.target(x, shift=0.7, scale=0.8), 3, 4, generator=torch.Generator().manual_seed(3)
    )
    hx, hy = run.h_x(), run.h_y()
    for k, m in [(0, 0), (1, 2), (2, 4), (4, 4)]:
        total = torch.zeros_like(hx[0])
        for t in range(run.steps + 1):
            unmet = run.tau > t
            a, b = hkm_weights(t, k, m, unmet, dtype=hx.dtype)
            ok = run.running[t][:, None]  # stopped rows hold NaN (and weight 0)
            total += torch.where(ok, a[:, None] * hx[t], 0.0)
            if t >= 1:
                total += torch.where(ok, b[:, None] * hy[t - 1], 0.0)
        torch.testing.assert_close(total, T.h_km_terms(run, k, m).total, rtol=0, atol=1e-12)


@pytest.mark.parametrize("move", [None, 0.4], ids=["plain", "mh-move"])
def test_tau_is_the_first_step_with_equal_sets(model, move):
    """τ = inf{t ≥ 1 : X_t = Y_{t−1}}, read off the record's particle ids: before τ the two sets
    differ, from τ on they are equal (or the pair has stopped: ids −1 in both). With the MH
    move the chains can also meet by accepting the same proposal."""
    x = _distinct_points(model, 12)
    kwargs = {"move": u.RandomWalkMH(move)} if move else {}
    run = T.lag_coupled_chains(model.target(x, shift=0.7, scale=0.8), 3, 2,
                               generator=torch.Generator().manual_seed(8), **kwargs)  # fmt: skip
    equal = torch.stack(
        [(run.xs[t].ids == run.ys[t - 1].ids).all(1) for t in range(1, run.steps + 1)]
    )  # [T, B]: step t = 1..T
    first = torch.where(equal.any(0), equal.double().argmax(0) + 1, run.steps + 1)
    assert torch.equal(first, run.tau)
    t = torch.arange(1, run.steps + 1)[:, None]
    assert torch.equal(equal, t >= run.tau)  # met chains stay met
    assert len(set(run.tau.tolist())) > 2
