"""Notebook 07's checkers accept correct answers and reject typical mistakes; its widget."""

import matplotlib

matplotlib.use("Agg")

import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402

from ucvae_lite.lab import checks
from ucvae_lite.lab.widgets.landscape import budget_widget, rank_at_budget  # noqa: E402
from ucvae_lite.peers.sumo import Roulette, sumo_from_log_weights  # noqa: E402
from ucvae_lite.studies.budget import ErrorBudget  # noqa: E402


def library_sumo(log_w, k, m, cutoff, ratio):
    return sumo_from_log_weights(log_w, k, Roulette(m, cutoff, ratio))


def loop_sumo(log_w, k, m, cutoff, ratio):
    """A second correct implementation, written differently (loops)."""
    out = []
    for row, kb in zip(log_w, k.tolist(), strict=True):

        def bound(n, row=row):
            return torch.logsumexp(row[:n], 0) - torch.log(torch.tensor(float(n), dtype=row.dtype))

        total = bound(m)
        for j in range(1, kb + 1):
            surv = 1 / j if j <= cutoff else (1 / cutoff) * ratio ** (j - cutoff)
            total = total + (bound(m + j) - bound(m + j - 1)) / surv
        out.append(total)
    return torch.stack(out)


def multiplied_sumo(log_w, k, m, cutoff, ratio):
    r = Roulette(m, cutoff, ratio)
    N = log_w.shape[1]
    bounds = torch.logcumsumexp(log_w, -1) - torch.arange(1, N + 1, dtype=log_w.dtype).log()
    j = torch.arange(1, N - m + 1)
    kept = j[None] <= k[:, None]
    return bounds[:, m - 1] + torch.where(
        kept, (bounds[:, m:] - bounds[:, m - 1 : N - 1]) * r.survival(j), 0.0
    ).sum(-1)


def test_check_sumo():
    checks.check_sumo(library_sumo)
    checks.check_sumo(loop_sumo)
    with pytest.raises(AssertionError, match="divide"):
        checks.check_sumo(multiplied_sumo)
    with pytest.raises(AssertionError, match="not written yet"):
        checks.check_sumo(lambda *a: (_ for _ in ()).throw(NotImplementedError()))


def test_check_crossover_with_minibatch_noise():
    checks.check_budget_crossover(lambda u, i: u.crossover(i), data_noise=True)

    def written_out(u, i):
        noise_u = u.cost * (u.data_variance + u.variance)
        return (noise_u - i.cost * (i.data_variance + i.variance)) / i.bias2

    checks.check_budget_crossover(written_out, data_noise=True)
    forgot = lambda u, i: (u.cost * u.variance - i.cost * i.variance) / i.bias2  # noqa: E731
    with pytest.raises(AssertionError, match="minibatch noise"):
        checks.check_budget_crossover(forgot, data_noise=True)
    checks.check_budget_crossover(forgot)  # without minibatch noise the two agree
    with pytest.raises(AssertionError, match="C\\* should be"):
        checks.check_budget_crossover(lambda u, i: u.cost * u.variance / i.bias2, data_noise=True)


def test_check_thinned():
    checks.check_thinned(lambda h0, h, z, p: h0 + (z / p)[:, None] * (h - h0))
    with pytest.raises(AssertionError, match="divided by p"):
        checks.check_thinned(lambda h0, h, z, p: h0 + z[:, None] * (h - h0))
    with pytest.raises(AssertionError, match="correction"):
        checks.check_thinned(lambda h0, h, z, p: (z / p)[:, None] * h)


def test_check_expected_k():
    right = Roulette().expected_k()
    checks.check_expected_k(right)
    # every form of a correct answer: a 0-d tensor, a NumPy number
    checks.check_expected_k(torch.tensor(right, dtype=torch.float64))
    checks.check_expected_k(np.float64(right))
    for wrong in (True, str(right), torch.tensor([right, right])):
        with pytest.raises(checks.CheckFailed):
            checks.check_expected_k(wrong)
    with pytest.raises(AssertionError, match="harmonic"):
        checks.check_expected_k(5.0)


def _budgets():
    return [
        ErrorBudget("IWAE-10", 0.03, 0.005, 13.6, 0.0, 10.0, data_variance=260.0),
        ErrorBudget("IWAE-50", 0.0013, 0.002, 3.1, 0.0, 50.0, data_variance=260.0),
        ErrorBudget("ucvae", -0.001, 0.002, 15.9, 0.0, 29.8, data_variance=260.0, unbiased=True),
    ]


def test_rank_at_budget_is_the_mse_formula():
    """MSE(C) = |b|² + c (V + ν tr Σ_data) / C, with |b|² = 0 for the unbiased method."""
    for compute, noise in ((1e3, 1.0), (1e7, 1.0), (1e7, 0.01)):
        ranking = rank_at_budget(_budgets(), compute, noise)
        by_hand = {
            b.name: (0.0 if b.unbiased else max(b.bias2, 0.0))
            + b.cost * (b.variance + noise * b.data_variance) / compute
            for b in _budgets()
        }
        assert ranking.mse == pytest.approx(by_hand)
        assert ranking.winner == min(by_hand, key=by_hand.get)
    assert rank_at_budget(_budgets(), 1e3).winner == "IWAE-10"
    assert rank_at_budget(_budgets(), 1e7).winner == "ucvae"


def test_budget_widget_answers():
    w = budget_widget(_budgets(), log10_budget=3.0)
    assert w.winner == "IWAE-10" and bytes(w.image.value).startswith(b"\x89PNG")
    before = bytes(w.image.value)
    w.budget.value = 7.0
    assert w.winner == "ucvae" and "ucvae" in w.summary.value and bytes(w.image.value) != before
    w.data_noise.value = 0.01  # little minibatch noise: the estimators' own noise decides
    assert w.winner == rank_at_budget(_budgets(), 1e7, 0.01).winner
    assert "0.01× the minibatch noise" in w.summary.value
