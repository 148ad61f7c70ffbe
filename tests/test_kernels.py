"""The CIS kernel, the maximal coupling and the coupled kernel (``kernels``)."""

import numpy as np
import pytest
import torch
from scipy.stats import chisquare

import ucvae_lite as u
from ucvae_lite.core import kernels as K
from ucvae_lite.core.machinery import ParticleStore
from ucvae_lite.studies.stats import z_score, z_threshold


def test_sample_categorical_frequencies():
    p = torch.tensor([0.1, 0.0, 0.6, 0.3], dtype=torch.float64)
    idx = K.sample_categorical(p.expand(100_000, -1), torch.Generator().manual_seed(0))
    counts = torch.bincount(idx, minlength=4).numpy()
    assert counts[1] == 0  # zero mass is never drawn
    keep = p.numpy() > 0
    assert chisquare(counts[keep], 100_000 * p.numpy()[keep]).pvalue > 1e-4


@pytest.mark.parametrize("seed", [0, 1])
def test_maximal_coupling_marginals_and_overlap(seed):
    g = torch.Generator().manual_seed(seed)
    S, n = 6, 200_000
    log_p = torch.randn(S, generator=g, dtype=torch.float64)
    log_q = torch.randn(S, generator=g, dtype=torch.float64)
    i, j = u.maximal_coupling(log_p.expand(n, -1), log_q.expand(n, -1), g)
    p, q = torch.softmax(log_p, 0).numpy(), torch.softmax(log_q, 0).numpy()
    assert chisquare(np.bincount(i.numpy(), minlength=S), n * p).pvalue > 1e-4
    assert chisquare(np.bincount(j.numpy(), minlength=S), n * q).pvalue > 1e-4
    overlap = np.minimum(p, q).sum()
    same = (i == j).double().mean().item()
    assert abs(same - overlap) < 4 * (overlap * (1 - overlap) / n) ** 0.5


def test_maximal_coupling_identical_always_equal():
    lw = torch.randn(1000, 5, dtype=torch.float64)
    i, j = u.maximal_coupling(lw, lw.clone(), torch.Generator().manual_seed(0))
    assert torch.equal(i, j)


def _start(target, S, g, store):
    """X_0 ~ q^S and the lag-1 start (X_1, Y_0), as the estimator makes them."""
    rows = store.rows(torch.arange(target.x.shape[0]))
    x0 = K.draw(target, S, g, rows)
    x1, _ = K.cis_step(target, x0, g, rows)
    return x0, K.lag_start(target, x1, rows, g)


def _references(model, x, steps, coupled, n=20000, S=3, shift=0.8):
    """The references after ``steps`` steps of one CIS chain, or of both coupled chains."""
    g = torch.Generator().manual_seed(11 if coupled else 12)
    target = model.target(x[:1].expand(n, -1), shift=shift, scale=1.2)
    store = ParticleStore()
    x0, state = _start(target, S, g, store)
    if not coupled:
        chain = K.draw(target, S, g)
        for _ in range(steps):
            chain, _ = K.cis_step(target, chain, g)
        return chain.particles[:, 0], None
    for _ in range(steps):
        state, _ = K.coupled_cis_step(target, state, store.rows(torch.arange(n)), g)
    return state.x.particles[:, 0], state.y.particles[:, 0]


@pytest.mark.parametrize("steps", [1, 3])
def test_coupled_kernel_has_cis_marginals(model, x, steps):
    """Each coupled chain's reference has the law of a single CIS chain's (two-sample z-test).

    X_t of the lag-1 pair has made t steps, Y_{t−1} one fewer."""
    single = {s: _references(model, x, s, coupled=False)[0] for s in (steps, steps + 1)}
    ref_x, ref_y = _references(model, x, steps, coupled=True)
    limit = z_threshold(2 * 2 * 2)  # 2 chains × 2 functions × 2 coordinates
    for a, b in ((ref_x, single[steps + 1]), (ref_y, single[steps])):
        for f in (lambda z: z, lambda z: z**2):
            fa, fb = f(a), f(b)
            diff = fa.mean(0) - fb.mean(0)
            se = (fa.var(0) / len(fa) + fb.var(0) / len(fb)).sqrt()
            assert (diff / se).abs().max() < limit


def test_coupled_kernel_power_check(model, x):
    """The same two-sample test tells a chain from one that made one step fewer."""
    one, _ = _references(model, x, 0, coupled=False)
    two, _ = _references(model, x, 1, coupled=False)
    diff = one.mean(0) - two.mean(0)
    se = (one.var(0) / len(one) + two.var(0) / len(two)).sqrt()
    assert (diff / se).abs().max() > z_threshold(8)


def test_cis_chain_converges_to_posterior(model, x):
    # After enough steps the reference is (nearly) exactly posterior-distributed.
    ref, _ = _references(model, x, 20, coupled=False, n=20000, S=10, shift=0.3)
    mean, _ = model.posterior(x[:1])
    assert z_score(ref, mean[0]).abs().max() < z_threshold(2)


def test_chains_stay_equal_after_meeting(model, x):
    g = torch.Generator().manual_seed(2)
    n = 500
    target = model.target(x[:1].expand(n, -1), shift=0.5, scale=1.5)
    store = ParticleStore()
    _, state = _start(target, 4, g, store)
    met_before = state.met.clone()
    for _ in range(30):
        state, info = K.coupled_cis_step(target, state, store.rows(torch.arange(n)), g)
        assert bool(info.met[met_before].all())  # once met, always met
        equal = (state.x.particles == state.y.particles).flatten(1).all(-1)
        assert torch.equal(equal, info.met)  # met (same ids) exactly when the sets are equal
        met_before = info.met
    assert met_before.float().mean() > 0.99


def test_fresh_slots_are_shared_and_ids_name_particles(model, x):
    g = torch.Generator().manual_seed(4)
    target = model.target(x, shift=0.5, scale=1.5)
    store = ParticleStore()
    x0, state = _start(target, 4, g, store)
    assert torch.equal(state.x.particles[:, 1:], state.y.particles[:, 1:])
    assert torch.equal(state.x.ids[:, 1:], state.y.ids[:, 1:])
    ids = torch.cat([x0.ids.flatten(), state.x.ids.flatten(), state.y.ids[:, 0]]).unique()
    assert ids.numel() == store.size == 3 * (4 + 4)  # X_0, Y_0's reference, fresh: all distinct
    assert set(state.x.ids[:, 0].tolist()) <= set(x0.ids.flatten().tolist())  # X_1's ref from X_0
    with pytest.raises(ValueError, match="ids"):
        K.met(
            K.Particle(x0.particles[:, 0], x0.log_weights[:, 0], None),
            K.reference(x0, 0 * x0.ids[:, 0]),
        )
