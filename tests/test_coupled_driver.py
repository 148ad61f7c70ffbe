"""The driver ``coupled.CoupledChains`` runs the kernels it is given, stops the pairs that are
done through the coupled kernel's ``stop_met``, and ``hkm.validate_lags`` is the one k ≤ m check."""

import pytest
import torch
from conftest import replicate

import ucvae_lite as u
from ucvae_lite.core import kernels as K
from ucvae_lite.core.hkm import hkm_weights, validate_lags
from ucvae_lite.core.iwae import normalized_weights
from ucvae_lite.core.machinery import ParticleStore, take
from ucvae_lite.studies.stats import z_score, z_threshold


class Spy:
    """A kernel that records its calls and passes them on."""

    def __init__(self, kernel):
        self.kernel, self.calls = kernel, []

    def __call__(self, target, state, *args, **kwargs):
        self.calls.append((state, kwargs.get("stop_met")))
        return self.kernel(target, state, *args, **kwargs)


@pytest.mark.parametrize("k,m,move", [(0, 0, None), (1, 3, None), (0, 2, 0.4)])
def test_the_driver_runs_the_kernels_it_is_given(model, x, k, m, move):
    """The same estimate through the default kernels and through wrappers of them; the single
    kernel makes X_1 once, the coupled kernel every later step, asked to stop met pairs once
    t + 1 > m; one step per running pair per call."""
    target = model.target(replicate(x, 30), shift=0.7, scale=0.8)
    kw = {"move": u.RandomWalkMH(move)} if move else {}
    single, coupled = Spy(u.cis_step), Spy(u.coupled_cis_step)
    plain = u.coupled_estimate(target, 3, k, m, generator=torch.Generator().manual_seed(4), **kw)
    spied = u.coupled_estimate(
        target, 3, k, m, generator=torch.Generator().manual_seed(4),
        single_kernel=single, coupled_kernel=coupled, **kw,
    )  # fmt: skip
    for field in ("flat_particles", "flat_coef", "rows", "tau", "num_evals"):
        assert torch.equal(getattr(plain, field), getattr(spied, field)), field
    assert len(single.calls) == 1
    assert single.calls[0][0].particles.shape[0] == target.x.shape[0]
    steps = len(coupled.calls)
    assert steps == max(int(plain.tau.max()), m + 1) - 1  # t = 1 .. max(τ, m + 1) − 1
    assert [stop for _, stop in coupled.calls] == [t + 1 > m for t in range(1, steps + 1)]
    running = [state.met.shape[0] for state, _ in coupled.calls]
    assert running == sorted(running, reverse=True) and running[-1] < running[0]


def independent_indices(target, state, store, generator=None, move=None, *, stop_met=False):
    """Another coupled kernel: the index draws of X and Y independent (a valid coupling, but
    not the maximal one), common fresh draws as before; ``stop_met`` honoured."""
    ix = K.sample_categorical(normalized_weights(state.x.log_weights), generator)
    iy = K.sample_categorical(normalized_weights(state.y.log_weights), generator)
    iy = torch.where(state.met, ix, iy)  # met chains stay met
    ref_x, ref_y = K.reference(state.x, ix), K.reference(state.y, iy)
    met = K.met(ref_x, ref_y)
    keep = (~met if stop_met else torch.ones_like(met)).nonzero().flatten()
    ref_x, ref_y = take(ref_x, keep), take(ref_y, keep)
    num_fresh = state.x.particles.shape[1] - 1
    new = K.refresh(target.select(keep), ref_x, ref_y, num_fresh, store.select(keep), generator)
    return new, K.CoupledInfo(ix, iy, met, keep)


def test_another_coupled_kernel_gives_another_unbiased_estimator(model, x):
    """The driver is generic in K̄: with independent index draws the chains meet later (τ
    larger than with the maximal coupling), and H_{k:m} is still unbiased."""
    R, B, S = 3000, x.shape[0], 3
    target = model.target(replicate(x, R), shift=0.5, scale=1.5)
    g = torch.Generator().manual_seed(31)
    est = u.coupled_estimate(target, S, 1, 2, generator=g, coupled_kernel=independent_indices)
    best = u.coupled_estimate(target, S, 1, 2, generator=g)
    tau, tau_best = est.tau.double(), best.tau.double()
    se = (tau.var() / len(tau) + tau_best.var() / len(tau_best)).sqrt()
    assert (tau.mean() - tau_best.mean()) / se > 4
    exact_mean, _ = model.posterior_moments(x)
    mean = est.mean().view(B, R, 2)
    for b in range(B):
        assert z_score(mean[b], exact_mean[b]).abs().max() < z_threshold(B * 2)


def _pairs(model, x, g, store, n=400, S=3):
    """(X_1, Y_0) for n pairs with a spread of weights, then one coupled step from it."""
    target = model.target(replicate(x, n // x.shape[0]), shift=0.7, scale=0.8)
    rows = store.rows(torch.arange(target.x.shape[0]))
    x1, _ = K.cis_step(target, K.draw(target, S, g, rows), g, rows)
    state = K.lag_start(target, x1, rows, g)
    state, _ = K.coupled_cis_step(target, state, rows, g)
    return target, rows, state


@pytest.mark.parametrize("move", [None, 0.4])
def test_stop_met_leaves_out_the_met_pairs_only(model, x, move):
    """With ``stop_met`` the kernel returns exactly the pairs that have not met, with the
    references the full step gives them, and draws fresh particles for those pairs only."""
    S, results = 3, {}
    for stop in (False, True):
        store = ParticleStore()
        target, rows, state = _pairs(model, x, torch.Generator().manual_seed(9), store, S=S)
        mv = (
            u.RandomWalkMH(move).bind(target, len(state.met), 2, state.x.log_weights)
            if move
            else None
        )
        before = store.size
        new, info = K.coupled_cis_step(
            target, state, rows, torch.Generator().manual_seed(1), mv, stop_met=stop
        )
        results[stop] = (new, info, store.size - before, state)
    full, info_full, _, state = results[False]
    new, info, added, _ = results[True]
    assert torch.equal(info.index_x, info_full.index_x)  # the same selection
    selected = K.met(K.reference(state.x, info.index_x), K.reference(state.y, info.index_y))
    assert 0 < int(state.met.sum()) < int(selected.sum()) < len(selected)  # some meet now
    assert bool(info.met[selected].all())  # met at the selection: met, stopped before any move
    assert torch.equal(info.kept, (~info.met).nonzero().flatten())
    assert torch.equal(info_full.kept, torch.arange(len(info.met)))
    assert new.x.particles.shape[0] == info.kept.numel() and not bool(new.met.any())
    if move is None:  # the references come before any fresh draw: the same for kept pairs
        assert torch.equal(info.met, info_full.met)
        assert torch.equal(new.x.ids[:, 0], full.x.ids[info.kept, 0])
        assert added == (S - 1) * info.kept.numel()
    else:  # the move ran on the pairs unmet after the selection only: 1 or 2 proposals each
        unmet = int((~selected).sum())
        assert unmet <= added - (S - 1) * info.kept.numel() <= 2 * unmet


def test_stop_met_with_every_pair_met_draws_nothing(model, x):
    store = ParticleStore()
    target, rows, state = _pairs(model, x, torch.Generator().manual_seed(9), store)
    met = state._replace(y=state.x, met=torch.ones_like(state.met))
    before = store.size
    new, info = K.coupled_cis_step(target, met, rows, torch.Generator(), stop_met=True)
    assert store.size == before and info.kept.numel() == 0 and new.x.particles.shape[0] == 0


@pytest.mark.parametrize("k,m,match", [(-1, 0, "k must be"), (2, 1, "k <= m"), (0, 1.5, "k must")])
def test_check_lags_is_the_one_check(model, x, k, m, match):
    with pytest.raises(ValueError, match=match):
        validate_lags(k, m)
    with pytest.raises(ValueError, match=match):
        hkm_weights(3, k, m, torch.tensor([True]))
    with pytest.raises(ValueError, match=match):
        u.coupled_estimate(model.target(x), 3, k, m)
    validate_lags(0, 0), validate_lags(2, 5)
