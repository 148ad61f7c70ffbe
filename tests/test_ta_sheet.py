"""The teaching assistant's sheet (``docs/ta_sheet.md``) shows what the checkers say today: it
is rebuilt from the wrong-answer suites and compared with the stored page, numbers masked (a
hint's numbers may differ in the last digits from one CPU to another)."""

import re
from pathlib import Path

from classroom import ta_sheet

NUMBER = re.compile(r"[-−+]?\d+(\.\d+)?(e[-+]?\d+)?")


def masked(text: str) -> str:
    return NUMBER.sub("#", text)


def test_sheet_is_current():
    stored = (Path(ta_sheet.ROOT) / "docs" / "ta_sheet.md").read_text()
    built = ta_sheet.build()
    assert masked(built) == masked(stored), "rebuild it: python -m classroom.ta_sheet"


def test_every_exercise_has_advice_and_rows():
    built = ta_sheet.build()
    for checker, (exercise, _) in ta_sheet.ADVICE.items():
        assert f"## {exercise} (`{checker}`)" in built
    assert built.count("\n| ") > 150  # one row per typical wrong answer, with the headers
