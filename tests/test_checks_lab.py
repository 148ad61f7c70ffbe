"""The lab's checkers (``ucvae_lite.lab.checks.lab``) accept right answers and reject typical
mistakes.

For each code exercise: the library's own answer passes, a second, independently written
correct answer (the notebook's model solution) passes, and each typical mistake fails with
``CheckFailed`` whose hint names it. Numeric answers: the right value passes, the listed
mistakes fail with their own hint. Each checker must take under a second.
"""

from __future__ import annotations

import math
import re
import time

import pytest
import torch

import ucvae_lite as u
from ucvae_lite.core import hkm, kernels
from ucvae_lite.lab import checks
from ucvae_lite.lab.checks import CheckFailed
from ucvae_lite.studies.budget import ErrorBudget


def fails(check, fn, match: str, **kw) -> None:
    with pytest.raises(CheckFailed, match=match):
        check(fn, **kw)


def test_checkers_are_exported_and_fast():
    for name in checks.__all__:
        assert hasattr(checks, name)
    start = time.process_time()
    checks.check_cis_step(lambda t, s, g: kernels.cis_step(t, s, g)[0])
    checks.check_maximal_coupling(kernels.coupled_indices)
    assert time.process_time() - start < 2.0


def test_every_checker_is_fast():
    """Each lab checker, run on the library's answer, takes well under a CPU second (one
    thread; CPU time, so that a loaded machine does not fail it)."""
    answers = {
        "check_grad_b": grad_b,
        "check_iwae_bound": u.iwae_bound,
        "check_iwae_gradient": iwae_gradient,
        "check_cis_step": kernels.cis_step,
        "check_maximal_coupling": kernels.coupled_indices,
        "check_coupled_step": library_coupled_step,
        "check_hkm": h_km_library,
        "check_budget_crossover": lambda a, b: (a.noise - b.noise) / b.bias2,
    }
    for name, fn in answers.items():
        start = time.process_time()
        getattr(checks, name)(fn)
        assert time.process_time() - start < 1.0, name


# --- 00 ---


def grad_b(model, x, z):
    return (x - z @ model.W.T - model.b) / model.sigma**2


def test_grad_b():
    checks.check_grad_b(grad_b)
    checks.check_grad_b(grad_b, seed=3)
    fails(checks.check_grad_b, lambda m, x, z: -grad_b(m, x, z), "sign")
    fails(checks.check_grad_b, lambda m, x, z: grad_b(m, x, z) * m.sigma, "not by σ")
    fails(checks.check_grad_b, lambda m, x, z: grad_b(m, x, z)[:, :2], "shape")
    fails(checks.check_grad_b, lambda m, x, z: 1 / 0, "ZeroDivisionError")


# --- 01 ---


def bound_by_max(log_w):
    top = log_w.max(-1, keepdim=True).values
    return top[..., 0] + (log_w - top).exp().mean(-1).log()


def test_iwae_bound():
    checks.check_iwae_bound(u.iwae_bound)
    checks.check_iwae_bound(bound_by_max, seed=5)
    fails(checks.check_iwae_bound, lambda lw: lw.exp().mean(-1).log(), "underflows")
    fails(checks.check_iwae_bound, lambda lw: lw.mean(-1), "ELBO")
    fails(checks.check_iwae_bound, lambda lw: torch.logsumexp(lw, -1), "forgot the 1/S")
    fails(
        checks.check_iwae_bound,
        lambda lw: (_ for _ in ()).throw(NotImplementedError()),
        "not written yet",
    )


def iwae_gradient(model, x, z, log_q):
    params = [p.detach().clone().requires_grad_(True) for p in (model.W, model.b, model.log_sigma)]
    log_w = u.LinearGaussian(*params).log_joint(x, z) - log_q
    bound = torch.logsumexp(log_w, -1) - math.log(z.shape[1])
    grads = torch.autograd.grad(bound.sum(), params)
    return torch.cat([g.flatten() for g in grads])


def _weighted_gradient(uniform: bool, normalise: bool = True):
    def fn(model, x, z, log_q):
        params = [
            p.detach().clone().requires_grad_(True) for p in (model.W, model.b, model.log_sigma)
        ]
        log_joint = u.LinearGaussian(*params).log_joint(x, z)
        w = (log_joint.detach() - log_q).softmax(-1)
        if uniform:
            w = torch.full_like(w, 1 / w.shape[-1])
        if not normalise:
            w = torch.ones_like(w)
        grads = torch.autograd.grad((w * log_joint).sum(), params)
        return torch.cat([g.flatten() for g in grads])

    return fn


def test_iwae_gradient():
    checks.check_iwae_gradient(iwae_gradient)
    checks.check_iwae_gradient(_weighted_gradient(False), seed=2)  # the surrogate route
    fails(checks.check_iwae_gradient, _weighted_gradient(True), "ELBO")
    fails(checks.check_iwae_gradient, _weighted_gradient(False, normalise=False), "summed")


def test_gap_prediction(model, x):
    from ucvae_lite.lab.teaching import relative_weight_variance

    V = relative_weight_variance(model, x[:1], 0.5, 1.5)
    checks.check_gap_prediction(V / 200, model, x[:1], 0.5, 1.5, 100)
    checks.check_gap_prediction(1.05 * V / 200, model, x[:1], 0.5, 1.5, 100)  # a 10⁵-draw V
    with pytest.raises(CheckFailed, match="factor 2"):
        checks.check_gap_prediction(V / 100, model, x[:1], 0.5, 1.5, 100)
    with pytest.raises(CheckFailed, match="divide by S"):
        checks.check_gap_prediction(V / 2, model, x[:1], 0.5, 1.5, 100)


# --- 02 ---


def cis_step(target, state, generator=None):
    w = torch.softmax(state.log_weights, -1)
    ell = torch.multinomial(w, 1, generator=generator)[:, 0]
    rows = torch.arange(len(ell))
    fresh = target.sample(state.particles.shape[1] - 1, generator)
    z = torch.cat([state.particles[rows, ell][:, None], fresh], 1)
    lw = torch.cat([state.log_weights[rows, ell][:, None], target.log_weight(fresh)], 1)
    return u.CISState(z, lw)


def _cis_mistake(kind: str):
    def fn(target, state, generator=None):
        w = torch.softmax(state.log_weights, -1)
        if kind == "uniform":
            w = torch.ones_like(w)
        if kind == "fresh only":
            w = w.clone()
            w[:, 0] = 0
        if kind == "argmax":
            ell = w.argmax(-1)
        else:
            ell = torch.multinomial(w, 1, generator=generator)[:, 0]
        rows = torch.arange(len(ell))
        S = state.particles.shape[1]
        fresh = target.sample(S - 1, generator)
        if kind == "old slots":
            fresh = state.particles[:, 1:]
        lw_fresh = target.log_weight(fresh)
        if kind == "stale weights":
            lw_fresh = state.log_weights[:, 1:]
        z = torch.cat([state.particles[rows, ell][:, None], fresh], 1)
        lw = torch.cat([state.log_weights[rows, ell][:, None], lw_fresh], 1)
        if kind == "reference last":
            z, lw = z.roll(1, 1), lw.roll(1, 1)
        return u.CISState(z, lw)

    return fn


def test_cis_step():
    checks.check_cis_step(lambda t, s, g: kernels.cis_step(t, s, g))  # (state, info) accepted
    checks.check_cis_step(cis_step, seed=4)
    fails(checks.check_cis_step, _cis_mistake("uniform"), "not uniformly")
    fails(checks.check_cis_step, _cis_mistake("argmax"), "largest weight")
    fails(checks.check_cis_step, _cis_mistake("fresh only"), "candidate too")
    fails(checks.check_cis_step, _cis_mistake("old slots"), "fresh proposal draws")
    fails(checks.check_cis_step, _cis_mistake("stale weights"), "log-weights of slots")
    fails(checks.check_cis_step, _cis_mistake("reference last"), "slot 1 of the new set")


# --- 03 ---


def maximal_coupling(p, q, generator=None):
    nu = torch.minimum(p, q)
    alpha = nu.sum(-1)
    common = torch.rand(alpha.shape, generator=generator, dtype=p.dtype) < alpha
    i_c = torch.multinomial(nu + 1e-300, 1, generator=generator)[:, 0]
    i_p = torch.multinomial((p - nu) + 1e-300, 1, generator=generator)[:, 0]
    i_q = torch.multinomial((q - nu) + 1e-300, 1, generator=generator)[:, 0]
    return torch.where(common, i_c, i_p), torch.where(common, i_c, i_q)


def independent(p, q, generator=None):
    return (
        torch.multinomial(p, 1, generator=generator)[:, 0],
        torch.multinomial(q, 1, generator=generator)[:, 0],
    )


def no_residuals(p, q, generator=None):
    """Common index with probability α, but then i ~ p and j ~ q (not the residuals)."""
    nu = torch.minimum(p, q)
    common = torch.rand(p.shape[0], generator=generator, dtype=p.dtype) < nu.sum(-1)
    i_c = torch.multinomial(nu + 1e-300, 1, generator=generator)[:, 0]
    i, j = independent(p, q, generator)
    return torch.where(common, i_c, i), torch.where(common, i_c, j)


def test_maximal_coupling():
    checks.check_maximal_coupling(kernels.coupled_indices)
    checks.check_maximal_coupling(maximal_coupling, seed=1)
    fails(checks.check_maximal_coupling, independent, "Independent draws give")
    fails(checks.check_maximal_coupling, no_residuals, "marginals are off")
    fails(checks.check_maximal_coupling, lambda p, q, g: independent(p, q, g)[0], "pair")


def coupled_step(target, x, y, generator=None):
    wx, wy = torch.softmax(x.log_weights, -1), torch.softmax(y.log_weights, -1)
    ix, iy = maximal_coupling(wx, wy, generator)
    rows = torch.arange(len(ix))
    fresh = target.sample(x.particles.shape[1] - 1, generator)
    lw_fresh = target.log_weight(fresh)

    def new(state, idx):
        z = torch.cat([state.particles[rows, idx][:, None], fresh], 1)
        return u.CISState(z, torch.cat([state.log_weights[rows, idx][:, None], lw_fresh], 1))

    return new(x, ix), new(y, iy)


def library_coupled_step(target, x, y, generator=None):
    ix, iy = kernels.maximal_coupling(x.log_weights, y.log_weights, generator)
    fresh = kernels.draw(target, x.particles.shape[1] - 1, generator)
    return (
        kernels.with_fresh(kernels.reference(x, ix), fresh),
        kernels.with_fresh(kernels.reference(y, iy), fresh),
    )


def test_coupled_step():
    checks.check_coupled_step(library_coupled_step)
    checks.check_coupled_step(coupled_step, seed=2)

    def separate_fresh(target, x, y, g=None):
        return cis_step(target, x, g), cis_step(target, y, g)

    def independent_selection(target, x, y, g=None):
        nx = cis_step(target, x, g)
        rows = torch.arange(x.particles.shape[0])
        iy = torch.multinomial(torch.softmax(y.log_weights, -1), 1, generator=g)[:, 0]
        z = torch.cat([y.particles[rows, iy][:, None], nx.particles[:, 1:]], 1)
        return nx, u.CISState(
            z, torch.cat([y.log_weights[rows, iy][:, None], nx.log_weights[:, 1:]], 1)
        )

    def swapped(target, x, y, g=None):
        a, b = coupled_step(target, x, y, g)
        return b, a

    fails(checks.check_coupled_step, separate_fresh, "SAME fresh draws")
    fails(checks.check_coupled_step, independent_selection, "look independent")
    fails(checks.check_coupled_step, swapped, "from its own old set")


# --- 04 ---


def h_km(h_x, h_y, tau, k, m):
    H = h_x[k : m + 1].mean()
    for t in range(k + 1, tau):
        H = H + min(1, (t - k) / (m - k + 1)) * (h_x[t] - h_y[t - 1])
    return H


def h_km_library(h_x, h_y, tau, k, m):
    total = 0.0
    for t in range(len(h_x)):
        a, b = hkm.hkm_weights(t, k, m, torch.tensor([t < tau]), torch.float64)
        total += float(a) * float(h_x[t]) + (float(b) * float(h_y[t - 1]) if t else 0.0)
    return total


def test_hkm():
    checks.check_hkm(h_km_library)
    checks.check_hkm(h_km, seed=3)

    def no_min(h_x, h_y, tau, k, m):
        H = h_x[k : m + 1].mean()
        for t in range(k + 1, tau):
            H = H + (t - k) / (m - k + 1) * (h_x[t] - h_y[t - 1])
        return H

    def no_lag(h_x, h_y, tau, k, m):
        H = h_x[k : m + 1].mean()
        for t in range(k + 1, tau):
            H = H + min(1, (t - k) / (m - k + 1)) * (h_x[t] - h_y[t])
        return H

    def short_average(h_x, h_y, tau, k, m):
        return h_km(h_x, h_y, tau, k, m) - h_x[k : m + 1].mean() + h_x[k : max(m, k + 1)].mean()

    def to_tau(h_x, h_y, tau, k, m):  # including t = τ adds h(X_τ) − h(Y_τ−1) = 0: still right
        H = h_x[k : m + 1].mean()
        for t in range(k + 1, tau + 1):
            H = H + min(1, (t - k) / (m - k + 1)) * (h_x[t] - h_y[t - 1])
        return H

    checks.check_hkm(to_tau)
    fails(checks.check_hkm, no_min, "capped at 1")
    fails(checks.check_hkm, no_lag, "lag")
    fails(checks.check_hkm, short_average, "inclusive")
    fails(checks.check_hkm, lambda h_x, h_y, tau, k, m: h_x[k : m + 1].mean(), "stop at t = τ")


def test_crossover():
    def crossover(unbiased, biased):
        return (unbiased.cost * unbiased.variance - biased.cost * biased.variance) / biased.bias2

    checks.check_budget_crossover(crossover)
    fails(checks.check_budget_crossover, lambda a, b: (a.variance - b.variance) / b.bias2, "cost")
    fails(checks.check_budget_crossover, lambda a, b: crossover(a, b) ** 0.5, "solve for C")
    assert isinstance(ErrorBudget("x", 0, 0, 1, 0, 1), ErrorBudget)


# --- numeric answers ---


@pytest.mark.parametrize("name", sorted(checks.ANSWERS))
def test_values(name, capsys):
    answer = checks.ANSWERS[name]
    checks.check_value(name, answer.value)
    assert "is right" in capsys.readouterr().out
    for wrong, why in answer.mistakes:
        with pytest.raises(CheckFailed, match="not quite: " + re.escape(why[:20])):
            checks.check_value(name, wrong)
    off = tuple(v + 0.5 for v in answer.value) if isinstance(answer.value, tuple) else -7.0
    with pytest.raises(CheckFailed, match="not right"):
        checks.check_value(name, off)
    with pytest.raises(CheckFailed):
        checks.check_value(name, None)
    with pytest.raises(CheckFailed, match="give a number"):
        checks.check_value(name, "seven")


def test_value_answers_are_the_derived_numbers():
    from ucvae_lite.core.diagnostics import degenerate_survival

    assert checks.ANSWERS["03_expected_tau_S4"].value == pytest.approx(7 / 3)
    law = degenerate_survival(torch.tensor([10.0]), 10).item()
    assert checks.ANSWERS["03_degenerate_tail_S10_t10"].value == pytest.approx(law)
    w = tuple(hkm.correction_weight(t, 2, 5) for t in range(3, 8))
    assert checks.ANSWERS["04_correction_weights"].value == pytest.approx(w)
    with pytest.raises(KeyError):
        checks.check_value("no such exercise", 1.0)
