"""The repository stands on its own: no file cites documents that learners do not have."""

import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
OUTSIDE = ("method.md", "design.md", "seed-paper-summary", "shared/docs")


def test_no_file_cites_a_file_outside_the_repository():
    files = subprocess.run(
        ["git", "ls-files"], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout.split()
    hits = []
    for name in files:
        path = ROOT / name
        if path.suffix in (".png", ".pt", ".gz") or not path.is_file():
            continue
        text = path.read_text(errors="ignore")
        hits += [f"{name}: {word}" for word in OUTSIDE if word in text]
    this = Path(__file__).name
    assert [h for h in hits if not h.startswith(f"tests/{this}")] == []
