"""The CIS kernel, the maximal coupling and the coupled kernel."""

import numpy as np
import pytest
import torch
from conftest import z_scores
from scipy.stats import chisquare

import ucvae_lite as u
from ucvae_lite.kernels import sample_categorical


def test_sample_categorical_frequencies():
    p = torch.tensor([0.1, 0.0, 0.6, 0.3], dtype=torch.float64)
    idx = sample_categorical(p.expand(100_000, -1), torch.Generator().manual_seed(0))
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


def _reference_moments(model, x, steps, coupled, n=20000, S=3, shift=0.8):
    g = torch.Generator().manual_seed(11 if coupled else 12)
    target = model.target(x[:1].expand(n, -1), shift=shift, scale=1.2)
    sx, sy = u.init_state(target, S, g), u.init_state(target, S, g)
    for _ in range(steps):
        if coupled:
            sx, sy, info = u.coupled_cis_step(target, sx, sy, g)
        else:
            sx, _ = u.cis_step(target, sx, g)
    ref = sx.particles[:, 0]
    return ref, (sy.particles[:, 0] if coupled else None)


@pytest.mark.parametrize("steps", [1, 3])
def test_coupled_kernel_has_cis_marginals(model, x, steps):
    """Each coupled chain's reference has the single CIS chain's law (two-sample z-test)."""
    single, _ = _reference_moments(model, x, steps, coupled=False)
    ref_x, ref_y = _reference_moments(model, x, steps, coupled=True)
    for a in (ref_x, ref_y):
        for f in (lambda z: z, lambda z: z**2):
            fa, fb = f(a), f(single)
            diff = fa.mean(0) - fb.mean(0)
            se = (fa.var(0) / len(fa) + fb.var(0) / len(fb)).sqrt()
            assert (diff / se).abs().max() < 4


def test_cis_chain_converges_to_posterior(model, x):
    # After enough steps the reference is (nearly) exactly posterior-distributed.
    ref, _ = _reference_moments(model, x, 20, coupled=False, n=20000, S=10, shift=0.3)
    mean, _ = model.posterior(x[:1])
    assert z_scores(ref, mean[0]).abs().max() < 4


def test_chains_stay_equal_after_meeting(model, x):
    g = torch.Generator().manual_seed(2)
    target = model.target(x[:1].expand(500, -1), shift=0.5, scale=1.5)
    sx, sy = u.init_state(target, 4, g), u.init_state(target, 4, g)
    met_before = torch.zeros(500, dtype=torch.bool)
    for _ in range(30):
        sx, sy, info = u.coupled_cis_step(target, sx, sy, g)
        assert bool(info.met[met_before].all())  # once met, always met
        equal = (sx.particles == sy.particles).flatten(1).all(-1)
        assert torch.equal(equal, info.met)
        met_before = info.met
    assert met_before.float().mean() > 0.99
