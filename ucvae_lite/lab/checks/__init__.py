"""Checkers for the notebooks' exercises: is the function you wrote right?

Each ``check_*`` function takes the function a learner wrote, runs it against the library on
fixed seeds and, wherever one exists, against an exact answer, then either prints a short
confirmation or raises ``AssertionError`` with a hint that says what is wrong and where to
look. Checkers accept any correct implementation (not only the library's own); the package's
tests show that each one accepts the library's answer and rejects a typical mistake.

    from ucvae_lite.lab import checks
    checks.check_maximal_coupling(my_coupling)   # prints "✓ ..." or raises AssertionError

Partial credit: ``checks.score(checks.check_maximal_coupling, my_coupling, points=3)`` runs the
checker property by property (each checker lists the properties that define a right answer,
``check.properties``), prints "✓ <property>" or "✗ <property>: <hint>" for each and returns the
points earned, split equally between the properties (full points only when all pass). As the
last line of an nbgrader test cell its value is the cell's partial credit.
"""

from ucvae_lite.lab.checks import lab, landscape, training
from ucvae_lite.lab.checks._common import CheckFailed, passed, score
from ucvae_lite.lab.checks.lab import *  # noqa: F403  (notebooks 00-04)
from ucvae_lite.lab.checks.landscape import *  # noqa: F403  (notebook 07)
from ucvae_lite.lab.checks.training import *  # noqa: F403  (notebooks 05 and 06)

__all__ = ["CheckFailed", "passed", "score", *lab.__all__, *landscape.__all__, *training.__all__]
