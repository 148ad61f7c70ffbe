"""The checkers of notebooks 05 and 06 accept right answers and reject typical mistakes.

For each checker: the library's own answer (or a second, independent correct implementation)
passes, and each mistake a learner is likely to make raises ``CheckFailed`` with the hint
that names it. Every checker runs in well under a second.
"""

import math
import time

import pytest
import torch

from ucvae_lite.core.diagnostics import degenerate_survival
from ucvae_lite.core.iwae import effective_sample_size, iwae_bound
from ucvae_lite.core.surrogate import log_likelihood_surrogate, particle_log_joint
from ucvae_lite.lab import checks
from ucvae_lite.lab.checks import CheckFailed
from ucvae_lite.models.vae import posterior_grid


def fails(check, fn, match: str) -> None:
    with pytest.raises(CheckFailed, match=match):
        check(fn)


# --- the ucvae decoder loss --------------------------------------------------------------------
def decoder_loss_library(model, x, est):
    return -log_likelihood_surrogate(est, particle_log_joint(model, x), "mean")


def decoder_loss_padded(model, x, est):  # a second correct answer: the padded view
    return -(est.coef * model.log_joint(x, est.particles)).sum(1).mean()


def test_decoder_loss_accepts_two_correct_answers(capsys):
    start = time.process_time()
    checks.check_ucvae_decoder_loss(decoder_loss_library)
    checks.check_ucvae_decoder_loss(decoder_loss_padded, seed=3)
    assert time.process_time() - start < 2 and capsys.readouterr().out.count("✓") == 2


@pytest.mark.parametrize(
    "mistake,match",
    [
        (lambda m, x, e: -decoder_loss_padded(m, x, e), "wrong sign"),
        (lambda m, x, e: len(x) * decoder_loss_padded(m, x, e), "average over images"),
        (
            lambda m, x, e: -(e.coef.clamp_min(0) * m.log_joint(x, e.particles)).sum(1).mean(),
            "negative coefficients",
        ),
        (
            lambda m, x, e: (
                -(
                    torch.softmax(e.initial_log_weights, -1)
                    * m.log_joint(x, e.flat_particles[: len(x) * e.num_samples].view(len(x), -1, 2))
                )
                .sum(1)
                .mean()
            ),
            "IWAE's decoder gradient",
        ),
        (lambda m, x, e: decoder_loss_padded(m, x, e).detach(), "without a gradient"),
        (lambda m, x, e: decoder_loss_padded(m, x, e) / 11, "11 times too small"),
        (lambda m, x, e: 3 * decoder_loss_padded(m, x, e), "3 times too large"),
        (lambda m, x, e: -2 * decoder_loss_padded(m, x, e), "points the wrong way"),
        (lambda m, x, e: (e.coef * m.encode(x).log_prob(e.particles)).sum(), "does not depend"),
    ],
)
def test_decoder_loss_rejects_mistakes(mistake, match):
    fails(checks.check_ucvae_decoder_loss, mistake, match)


# --- the IWAE encoder loss with θ fixed --------------------------------------------------------
def iwae_encoder_loss(model, x, S, generator):
    q = model.encode(x)
    z = q.sample(S, generator)
    return -iwae_bound(model.log_joint(x, z, detach_decoder=True) - q.log_prob(z)).mean()


def test_iwae_encoder_loss_accepts_the_answer():
    checks.check_iwae_encoder_loss(iwae_encoder_loss)
    checks.check_iwae_encoder_loss(iwae_encoder_loss, num_samples=3, seed=4)


def _theta_moves(model, x, S, g):
    q = model.encode(x)
    z = q.sample(S, g)
    return -iwae_bound(model.log_joint(x, z) - q.log_prob(z)).mean()


def _elbo(model, x, S, g):
    q = model.encode(x)
    z = q.sample(S, g)
    return -(model.log_joint(x, z, detach_decoder=True) - q.log_prob(z)).mean()


def _detached_z(model, x, S, g):
    q = model.encode(x)
    z = q.sample(S, g).detach()
    return -iwae_bound(model.log_joint(x, z, detach_decoder=True) - q.log_prob(z)).mean()


@pytest.mark.parametrize(
    "mistake,match",
    [
        (_theta_moves, "moves the decoder"),
        (_elbo, "ELBO"),
        (_detached_z, "path through z"),
        (lambda m, x, S, g: -iwae_encoder_loss(m, x, S, g), "wrong sign"),
    ],
)
def test_iwae_encoder_loss_rejects_mistakes(mistake, match):
    fails(checks.check_iwae_encoder_loss, mistake, match)


# --- the inclusive-KL encoder loss -------------------------------------------------------------
def inclusive_loss(model, x, est):
    return -(est.coef * model.encode(x).log_prob(est.particles)).sum(1).mean()


def test_inclusive_loss_accepts_the_answer():
    checks.check_inclusive_encoder_loss(inclusive_loss)


@pytest.mark.parametrize(
    "mistake,match",
    [
        (lambda m, x, e: -inclusive_loss(m, x, e), "wrong sign"),
        (lambda m, x, e: decoder_loss_padded(m, x, e), "moves the decoder"),
        (
            lambda m, x, e: -(e.coef.abs() * m.encode(x).log_prob(e.particles)).sum(1).mean(),
            "differs",
        ),
    ],
)
def test_inclusive_loss_rejects_mistakes(mistake, match):
    fails(checks.check_inclusive_encoder_loss, mistake, match)


# --- log p(x) on a grid ------------------------------------------------------------------------
def grid_ll(model, x, limit, n):
    axis = torch.linspace(-limit, limit, n, dtype=x.dtype)
    z = torch.cartesian_prod(axis, axis)
    lj = model.log_joint(x, z.expand(len(x), -1, -1))
    return torch.logsumexp(lj, -1) + 2 * math.log(axis[1] - axis[0])


def test_grid_log_likelihood_accepts_the_answer():
    checks.check_grid_log_likelihood(grid_ll)
    checks.check_grid_log_likelihood(lambda m, x, lim, n: posterior_grid(m, x, lim, n).log_marginal)


@pytest.mark.parametrize(
    "mistake,match",
    [
        (lambda m, x, lim, n: grid_ll(m, x, lim, n) - 2 * math.log(2 * lim / (n - 1)), "cell"),
        (lambda m, x, lim, n: grid_ll(m, x, lim, n) + 0.1, "off by"),
    ],
)
def test_grid_log_likelihood_rejects_mistakes(mistake, match):
    fails(checks.check_grid_log_likelihood, mistake, match)


# --- the 1/t law -------------------------------------------------------------------------------
def test_degenerate_tail(capsys):
    p20 = degenerate_survival(torch.tensor([20.0]), 10).item()
    t99 = 1 + math.floor(99 * 11 / 9) + 1  # (S−1)(t−1) > 99 (S+1): t − 1 > 121
    checks.check_degenerate_tail(p20, t99)
    # the ✓ message teaches the median: P(τ > 2) = 11/20 > 1/2 ≥ P(τ > 3) = 11/29, so 3
    assert "a median of 3 steps" in capsys.readouterr().out
    with pytest.raises(CheckFailed, match="Off by one"):
        checks.check_degenerate_tail(11 / (11 + 9 * 20), t99)  # t fresh sets instead of t − 1
    with pytest.raises(CheckFailed, match="first drops below 1%"):
        checks.check_degenerate_tail(p20, t99 - 1)


# --- within-set ESS and the degenerate-regime rule ---------------------------------------------
def test_within_set_ess():
    checks.check_within_set_ess(effective_sample_size)
    checks.check_within_set_ess(lambda lw: torch.softmax(lw, -1).pow(2).sum(-1).reciprocal())
    naive = lambda lw: lw.exp().sum(-1).pow(2) / lw.mul(2).exp().sum(-1)  # noqa: E731
    fails(checks.check_within_set_ess, naive, "overflows")
    fails(checks.check_within_set_ess, lambda lw: effective_sample_size(lw) / 10, "ESS / S")


def is_degenerate(log_w, min_ess):
    return effective_sample_size(log_w).mean(-1).median().item() < min_ess


def test_is_degenerate():
    checks.check_is_degenerate(is_degenerate)
    by_mean = lambda lw, e: effective_sample_size(lw).mean().item() < e  # noqa: E731
    pooled = lambda lw, e: effective_sample_size(lw.flatten(1)).median().item() < e  # noqa: E731
    fails(checks.check_is_degenerate, by_mean, "MEDIAN")
    fails(checks.check_is_degenerate, pooled, "pooled")
