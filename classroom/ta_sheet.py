"""The teaching assistant's sheet: checker message → likely mistake → what to tell the student.

    python -m classroom.ta_sheet [OUT]        # default: docs/ta_sheet.md

The rows are not written by hand: every typical wrong answer of the wrong-answer suites
(``tests/test_wrong_answers_lab.py``: ``WRONG`` and ``checks.ANSWERS``' mistakes;
``tests/test_wrong_answers_homework.py``: the ``*_MISTAKES`` tables) is run through its
checker here, and the hint the checker gives is printed beside the mistake it stands for. So
the sheet shows exactly what a student sees, and ``tests/test_ta_sheet.py`` fails when a
checker's hints change and the sheet was not rebuilt. What to tell the student is one
question per exercise (``ADVICE``): a nudge toward the mistake, not the answer.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import io
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

from ucvae_lite.lab import checks
from ucvae_lite.lab.checks import CheckFailed

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_OUT = ROOT / "docs" / "ta_sheet.md"

# checker -> (notebook and exercise, what to ask the student first)
ADVICE = {
    "check_grad_b": (
        "00 · ∇_b log p(x, z)",
        "Write log N(x; Wz + b, σ²I) out in full and differentiate one term by hand: which "
        "power of σ is left, and with which sign?",
    ),
    "check_iwae_bound": (
        "01 · IWAE's bound",
        "What is exp(−800) in floating point? Which number can you subtract from every "
        "log-weight of a row, and why must it be that row's own?",
    ),
    "check_iwae_gradient": (
        "01 · IWAE's gradient",
        "Which weights multiply ∇ log w_s: the raw w_s or w̄_s? Should a gradient flow "
        "through them?",
    ),
    "check_cis_step": (
        "02 · one CIS step",
        "List the S candidates of the selection. Is the reference one of them, and is each "
        "candidate's log-weight the one of the particle now in that slot?",
    ),
    "check_maximal_coupling": (
        "03 · the maximal coupling",
        "With probability Σ min(p, q) both indices are equal: drawn from which distribution? "
        "And otherwise, from which residuals?",
    ),
    "check_coupled_step": (
        "03 · one coupled step",
        "After the step, print both chains' reference log-weights and fresh log-weights: "
        "does each belong to the particle in that slot, in that chain?",
    ),
    "check_hkm": (
        "04 · H_{k:m}",
        "Write out the weights min(1, (t − k)/(m − k + 1)) for t = k + 1, …, τ − 1 on paper "
        "for k = 1, m = 3, τ = 6, and which h(Y) each correction subtracts.",
    ),
    "check_budget_crossover": (
        "04 / 07 · the crossover budget C*",
        "Write both mean squared errors at budget C (noise × cost / C, plus bias²) and solve "
        "for the C where they are equal: which terms carry a cost factor?",
    ),
    "check_ucvae_decoder_loss": (
        "05 · ucvae's decoder loss",
        "Which signs do the coefficients c have, and what should the loss's gradient be: "
        "the estimate of ∇ log p, averaged over images, with which sign?",
    ),
    "check_iwae_encoder_loss": (
        "05 · IWAE's encoder loss",
        "Which parameters should this loss move, and through which path does z depend on φ?",
    ),
    "check_inclusive_encoder_loss": (
        "05 · the inclusive-KL loss",
        "−Σ c log q(z): which density, which coefficients (signed!), and which parameters "
        "should move?",
    ),
    "check_grid_log_likelihood": (
        "05 · log p(x) on a grid",
        "A Riemann sum needs the cell's area: what is it for n points on [−L, L]², and how "
        "do you add it in log space without exp()?",
    ),
    "check_degenerate_tail": (
        "06 · the 1/t law's tail",
        "How many sets of fresh draws have the chains made by step t, and what is P(τ > t) "
        "for them?",
    ),
    "check_within_set_ess": (
        "06 · within-set ESS",
        "ESS = (Σ w)² / Σ w²: compute it from log-weights without exp() overflowing — which "
        "max do you subtract?",
    ),
    "check_is_degenerate": (
        "06 · the degenerate rule",
        "Read the rule again: the median over images of what per image, compared how with min_ess?",
    ),
    "check_sumo": (
        "07 · SUMO",
        "Each Δ_j is kept with probability P(K ≥ j): what must you divide by so that its "
        "expectation is unchanged?",
    ),
    "check_expected_k": (
        "07 · E[K]",
        "E[K] = Σ_j P(K ≥ j): write P(K ≥ j) for j ≤ c and for j > c separately.",
    ),
    "check_thinned": (
        "07 · the thinned correction",
        "Only the correction is thinned: what does dividing by p do to its expectation, and "
        "what happens to h(X_0)?",
    ),
    "check_value": (
        "02 – 04 · numeric answers",
        "Ask for the derivation on paper, one line at a time; the hint names the usual slip.",
    ),
}


def _load(name: str):
    spec = importlib.util.spec_from_file_location(name, ROOT / "tests" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def cases() -> Iterator[tuple[str, str, Callable[[], None]]]:
    """(checker, the mistake, a call of the checker on that wrong answer) for every wrong
    answer of the two suites."""
    lab = _load("test_wrong_answers_lab")
    for checker, wrong in lab.WRONG.items():
        for what, fn, _ in wrong:
            yield checker, what, lambda c=checker, f=fn: getattr(checks, c)(f)
    for name, answer in checks.ANSWERS.items():
        for value, why in answer.mistakes:
            yield "check_value", f"{name}: {why}", lambda n=name, v=value: checks.check_value(n, v)
    homework = _load("test_wrong_answers_homework")
    tables = {
        "check_ucvae_decoder_loss": homework.DECODER_MISTAKES,
        "check_iwae_encoder_loss": homework.ENCODER_MISTAKES,
        "check_inclusive_encoder_loss": homework.INCLUSIVE_MISTAKES,
        "check_grid_log_likelihood": homework.GRID_MISTAKES,
        "check_degenerate_tail": homework.TAIL_MISTAKES,
        "check_within_set_ess": homework.ESS_MISTAKES,
        "check_is_degenerate": homework.RULE_MISTAKES,
        "check_sumo": homework.SUMO_MISTAKES,
        "check_expected_k": homework.EK_MISTAKES,
        "check_thinned": homework.THINNED_MISTAKES,
    }
    for checker, table in tables.items():
        for what, (answer, _) in table.items():
            args = answer if checker == "check_degenerate_tail" else (answer,)
            yield checker, what, lambda c=checker, a=args: getattr(checks, c)(*a)


def hint(call: Callable[[], None]) -> str:
    """The message the checker gives; an error if it accepts the wrong answer."""
    with contextlib.redirect_stdout(io.StringIO()):
        try:
            call()
        except CheckFailed as e:
            return " ".join(str(e).split())
    raise AssertionError("a wrong answer of the suites passed its checker")


def _cell(text: str) -> str:
    return text.replace("|", "\\|")


def build() -> str:
    """The sheet's Markdown."""
    rows: dict[str, list[tuple[str, str]]] = {c: [] for c in ADVICE}
    for checker, what, call in cases():
        rows[checker].append((hint(call), what))
    lines = [
        "# The teaching assistant's sheet",
        "",
        "What a student's checker says, the mistake that usually causes it, and what to ask "
        "first. Every row is a typical wrong answer run through its checker "
        "(`python -m classroom.ta_sheet` rebuilds this page from the wrong-answer suites in "
        "`tests/`), so the messages are the ones students see; a checker runs more cases than "
        "the one shown, and a message may continue with the case's numbers.",
        "",
        "General advice: ask the student to read the whole message (it names the case that "
        "failed: float32, image-sized or mixed-scale rows, a row that is −∞ but one), to "
        "print shapes and one row of their result, and to compare with the worked example "
        "above the exercise.",
        "",
    ]
    for checker, found in rows.items():
        if not found:
            continue
        exercise, advice = ADVICE[checker]
        lines += [
            f"## {exercise} (`{checker}`)",
            "",
            f"**Ask first:** {advice}",
            "",
            "| the checker says | likely mistake |",
            "|---|---|",
        ]
        lines += [f"| {_cell(message)} | {_cell(what)} |" for message, what in found]
        lines.append("")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("out", nargs="?", type=Path, default=DEFAULT_OUT)
    args = p.parse_args(argv)
    args.out.write_text(build())
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
