"""Partial credit: ``checks.score`` grades a checker property by property.

A right answer earns every point; a wrong answer that breaks some properties earns the points
of the others (strictly between 0 and full); a crash earns 0; in normal use a checker still
raises on its first failure with the same hint. Last, nbgrader itself reads the value of a
test cell ending in ``checks.score(...)`` as that cell's partial credit.
"""

from __future__ import annotations

import contextlib
import io
import re

import nbformat
import pytest
import torch
from nbgrader.utils import determine_grade
from test_wrong_answers_homework import (
    ENCODER_MISTAKES,
    ESS_MISTAKES,
    GRID_MISTAKES,
    RULE_MISTAKES,
    SUMO_MISTAKES,
    THINNED_MISTAKES,
    dec_library,
    enc_library,
    ess_softmax,
    grid_solution,
    incl_library,
    rule_solution,
    sumo_solution,
    thinned_solution,
)
from test_wrong_answers_lab import RIGHT, WRONG

from ucvae_lite.lab import checks
from ucvae_lite.lab.checks import CheckFailed


def scored(check, *args, points=3, **kwargs) -> tuple[float, str]:
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        value = checks.score(check, *args, points=points, **kwargs)
    return value, out.getvalue()


def wrong(checker: str, what: str):
    return next(fn for w, fn, _ in WRONG[checker] if w == what)


def test_score_is_exported_and_every_code_checker_declares_properties():
    assert "score" in checks.__all__ and checks.score is not None
    for name in checks.__all__:
        check = getattr(checks, name)
        props = getattr(check, "properties", ())
        assert len(set(props)) == len(props), name
    several = ("check_coupled_step", "check_cis_step", "check_iwae_bound", "check_sumo",
               "check_within_set_ess", "check_degenerate_tail", "check_is_degenerate")  # fmt: skip
    for name in several:
        assert len(getattr(checks, name).properties) >= 2, name
    assert len(checks.check_coupled_step.properties) == 5


RIGHT_ANSWERS = [(c, fns[0][1]) for c, fns in RIGHT.items()] + [
    ("check_ucvae_decoder_loss", dec_library),
    ("check_iwae_encoder_loss", enc_library),
    ("check_inclusive_encoder_loss", incl_library),
    ("check_grid_log_likelihood", grid_solution),
    ("check_within_set_ess", ess_softmax),
    ("check_is_degenerate", rule_solution),
    ("check_sumo", sumo_solution),
    ("check_thinned", thinned_solution),
]


@pytest.mark.parametrize(("checker", "fn"), RIGHT_ANSWERS, ids=[c for c, _ in RIGHT_ANSWERS])
def test_right_answer_scores_full_points(checker, fn):
    value, out = scored(getattr(checks, checker), fn, points=3)
    assert value == 3.0 and isinstance(value, float), out
    assert "✗" not in out
    n = len(getattr(getattr(checks, checker), "properties", ("one",)))
    assert f"score: {n}/{n} properties → 3 of 3 points" in out
    assert out.startswith("✓ ")  # the checker's own message comes first


def test_right_answers_score_full_points_on_other_seeds():
    for seed in (1, 3, 7):
        value, out = scored(checks.check_hkm, RIGHT["check_hkm"][0][1], runs=[{"seed": seed}])
        assert value == 3.0, out
        value, out = scored(checks.check_coupled_step, RIGHT["check_coupled_step"][1][1],
                            seed=seed)  # fmt: skip
        assert value == 3.0, out


# (checker, wrong answer, the properties it must fail: every other one passes)
PARTIAL = [
    ("check_coupled_step", "exp then normalise", {"numerically stable"}),
    ("check_coupled_step", "independent selection", {"maximally coupled", "numerically stable"}),
    ("check_coupled_step", "Y's fresh log-weights 0", {"log-weights", "numerically stable"}),
    ("check_cis_step", "multinomial(exp(log_w))", {"numerically stable"}),
    ("check_cis_step", "reference keeps slot 1's log-weight", {"log-weight", "stable"}),
    ("check_iwae_bound", "one max for the batch", {"stable on image-sized"}),
    ("check_iwae_gradient", "exp then normalise", {"784-pixel"}),
    ("check_maximal_coupling", "no 1e-300 for zero rows", {"edge cases"}),
    ("check_hkm", "weight off by one", {"k < m", "float32"}),
]


@pytest.mark.parametrize(("checker", "what", "broken"), PARTIAL, ids=[w for _, w, _ in PARTIAL])
def test_a_wrong_answer_earns_the_points_of_the_properties_it_keeps(checker, what, broken):
    check = getattr(checks, checker)
    value, out = scored(check, wrong(checker, what), points=3)
    failed = [line for line in out.splitlines() if line.startswith("✗")]
    assert len(failed) == len(broken), out
    for key in broken:
        assert any(key in line for line in failed), (key, out)
    n = len(check.properties)
    assert 0 < value < 3
    assert value == round(3 * (n - len(broken)) / n, 2), out
    assert f"score: {n - len(broken)}/{n} properties → {value:g} of 3 points" in out
    # normal use: the first failure raises, with the hint that score prints for its property
    with pytest.raises(CheckFailed) as e:
        check(wrong(checker, what))
    assert any(str(e.value) in line for line in failed), (str(e.value), out)


@pytest.mark.parametrize(
    ("checker", "mistakes", "name", "broken"),
    [
        ("check_iwae_encoder_loss", ENCODER_MISTAKES, "a global max over the batch", 2),
        ("check_within_set_ess", ESS_MISTAKES, "subtracting each row's mean, not its max", 2),
        ("check_grid_log_likelihood", GRID_MISTAKES, "a hard-coded float64 grid", 1),
        ("check_sumo", SUMO_MISTAKES, "exp and cumsum with each row's max", 1),
        ("check_is_degenerate", RULE_MISTAKES, "the mean over images", 1),
        ("check_thinned", THINNED_MISTAKES, "z broadcast along the columns", 1),
    ],
)
def test_homework_mistakes_earn_partial_credit(checker, mistakes, name, broken):
    fn, match = mistakes[name]
    check = getattr(checks, checker)
    value, out = scored(check, fn, points=2)
    assert out.count("✗") == broken, out
    n = len(check.properties)
    assert value == round(2 * (n - broken) / n, 2) and 0 < value < 2, out
    assert re.search(match, out), out
    with pytest.raises(CheckFailed, match=match):
        check(fn)


def test_two_numbers_score_separately():
    value, out = scored(checks.check_degenerate_tail, 0.0604, 110, points=2)
    assert value == 1.0, out
    assert "✓ P(τ > 20)" in out and "✗ t_99" in out
    assert scored(checks.check_degenerate_tail, 0.0604, 123, points=2)[0] == 2.0
    assert scored(checks.check_degenerate_tail, 0.5, 123, points=2)[0] == 1.0
    assert scored(checks.check_degenerate_tail, "?", 1, points=2)[0] == 0.0


def not_written(*args):
    raise NotImplementedError


@pytest.mark.parametrize(
    "checker",
    ["check_coupled_step", "check_cis_step", "check_iwae_bound", "check_maximal_coupling",
     "check_hkm", "check_sumo", "check_thinned", "check_within_set_ess",
     "check_iwae_encoder_loss", "check_budget_crossover", "check_is_degenerate"],
)  # fmt: skip
def test_a_crash_scores_zero(checker):
    value, out = scored(getattr(checks, checker), not_written, points=3)
    assert value == 0.0, out
    assert "score: 0/" in out and "not written yet" in out
    value, out = scored(getattr(checks, checker), lambda *a: 1 / 0, points=3)
    assert value == 0.0, out


def test_a_crash_in_one_case_fails_only_its_property():
    def bound(log_w):
        if log_w.dtype == torch.float32:
            raise RuntimeError("no float32 here")
        return torch.logsumexp(log_w, -1) - torch.log(torch.tensor(float(log_w.shape[-1])))

    value, out = scored(checks.check_iwae_bound, bound, points=3)
    assert value == 2.0, out
    assert "✗ float32 (log-weights near −600, spread widely): your iwae_bound raised " in out


def test_single_property_checkers_are_all_or_nothing():
    assert scored(checks.check_value, "03_expected_tau_S4", 1 + 4 / 3, points=1)[0] == 1.0
    value, out = scored(checks.check_value, "03_expected_tau_S4", 2.0, points=1)
    assert value == 0.0 and "score: 0/1" in out and "smallest τ" in out
    assert scored(checks.check_expected_k, 0.0, points=1)[0] == 0.0


def test_runs_require_every_property_in_every_run():
    fn = RIGHT["check_maximal_coupling"][0][1]
    value, out = scored(checks.check_maximal_coupling, fn, runs=[{"seed": 5}])
    assert value == 3.0, out
    calls = []

    def only_seed_0(log_w):  # right on the visible seed, a global max otherwise
        calls.append(1)
        if len(calls) > 5:
            top = log_w.max()
            return top + (log_w - top).exp().mean(-1).log()
        return torch.logsumexp(log_w, -1) - torch.log(torch.tensor(float(log_w.shape[-1])))

    value, out = scored(checks.check_iwae_bound, only_seed_0, runs=[{"seed": 7}])
    assert value == 2.0 and "(seed=7)" in out, out


def test_full_marks_need_every_property():
    """Rounding never gives full points to an answer that fails a property."""

    def check(answer):
        for i in range(300):
            with checks._common.prop(f"p{i}"):
                checks._common.require(i or answer, "wrong")

    check = checks._common.properties(*(f"p{i}" for i in range(300)))(check)
    assert scored(check, True, points=1)[0] == 1.0
    assert scored(check, False, points=1)[0] == 0.99


def test_normal_use_is_unchanged():
    """A checker raises its first failure and prints its own ✓ line, nothing else."""
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        checks.check_coupled_step(RIGHT["check_coupled_step"][0][1])
    assert out.getvalue().count("\n") == 1 and out.getvalue().startswith("✓ coupled step")
    with pytest.raises(CheckFailed, match="Y's fresh log-weights are 0"):
        checks.check_coupled_step(wrong("check_coupled_step", "Y's fresh log-weights 0"))


def test_nbgrader_reads_the_score_as_partial_credit():
    """A graded test cell whose last line is checks.score(...), run by a Jupyter kernel:
    nbgrader's determine_grade gives the partial credit (1 of 3 points: the textbook case
    passes, the image-sized and float32 properties fail)."""
    from nbclient import NotebookClient

    nb = nbformat.v4.new_notebook()
    nb.cells = [
        nbformat.v4.new_code_cell(
            "import torch\nfrom ucvae_lite import checks\n\n"
            "def iwae_bound(log_w):\n    return log_w.exp().mean(-1).log()\n"
        ),
        nbformat.v4.new_code_cell("checks.score(checks.check_iwae_bound, iwae_bound, points=3)"),
        nbformat.v4.new_code_cell("checks.check_iwae_bound(iwae_bound)"),
    ]
    for cell, points in zip(nb.cells[1:], (3, 3), strict=True):
        cell.metadata["nbgrader"] = {"grade": True, "grade_id": f"t{len(cell.source)}",
                                     "locked": True, "points": points, "schema_version": 3,
                                     "solution": False, "task": False}  # fmt: skip
    NotebookClient(nb, timeout=120, kernel_name="python3", allow_errors=True).execute()
    graded, plain = nb.cells[1], nb.cells[2]
    assert graded.outputs[-1].output_type == "execute_result", graded.outputs
    assert determine_grade(graded) == (1.0, 3.0)
    assert "score: 1/3 properties → 1 of 3 points" in graded.outputs[0].text
    assert determine_grade(plain) == (0, 3.0)  # the all-or-nothing call: an error, 0
