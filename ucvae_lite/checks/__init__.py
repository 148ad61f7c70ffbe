"""Checkers for the notebooks' exercises: is the function you wrote right?

Each ``check_*`` function takes the function a learner wrote, runs it against the library on
fixed seeds and, wherever one exists, against an exact answer, then either prints a short
confirmation or raises ``AssertionError`` with a hint that says what is wrong and where to
look. Checkers accept any correct implementation (not only the library's own); the package's
tests show that each one accepts the library's answer and rejects a typical mistake.

    from ucvae_lite import checks
    checks.check_maximal_coupling(my_coupling)   # prints "✓ ..." or raises AssertionError
"""

from ._common import CheckFailed, passed
from .lab import (
    ANSWERS,
    check_budget_crossover,
    check_cis_step,
    check_coupled_step,
    check_gap_prediction,
    check_grad_b,
    check_hkm,
    check_iwae_bound,
    check_iwae_gradient,
    check_maximal_coupling,
    check_value,
)
from .landscape import check_expected_k, check_sumo, check_thinned
from .training import (
    check_degenerate_tail,
    check_grid_log_likelihood,
    check_inclusive_encoder_loss,
    check_is_degenerate,
    check_iwae_encoder_loss,
    check_ucvae_decoder_loss,
    check_within_set_ess,
)

__all__ = [
    "ANSWERS",
    "CheckFailed",
    "check_budget_crossover",
    "check_cis_step",
    "check_coupled_step",
    "check_expected_k",
    "check_gap_prediction",
    "check_grad_b",
    "check_hkm",
    "check_iwae_bound",
    "check_iwae_gradient",
    "check_maximal_coupling",
    "check_sumo",
    "check_thinned",
    "check_value",
    "passed",
]
__all__ += [  # notebooks 05 and 06 (checks/training.py)
    "check_degenerate_tail",
    "check_grid_log_likelihood",
    "check_inclusive_encoder_loss",
    "check_is_degenerate",
    "check_iwae_encoder_loss",
    "check_ucvae_decoder_loss",
    "check_within_set_ess",
]
