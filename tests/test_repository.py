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


def test_every_library_name_the_docs_use_exists():
    """``ucvae_lite.a.b`` written in the README or docs/ is an importable module or an
    attribute a user can reach (docs/landscape.md once named an unexported function)."""
    import importlib
    import re

    root = Path(__file__).resolve().parents[1]
    texts = [root / "README.md", *sorted((root / "docs").glob("*.md"))]
    names = set()
    for path in texts:
        names |= set(re.findall(r"ucvae_lite(?:\.[A-Za-z_]\w*)+", path.read_text()))
    assert names, "the docs name no library object: the pattern is wrong"
    missing = []
    for name in sorted(names):
        parts = name.split(".")
        obj, i = importlib.import_module(parts[0]), 1
        while i < len(parts):
            if hasattr(obj, parts[i]):
                obj = getattr(obj, parts[i])
            else:
                try:
                    obj = importlib.import_module(".".join(parts[: i + 1]))
                except ModuleNotFoundError:
                    missing.append(name)
                    break
            i += 1
    assert not missing, f"the docs name what the library does not have: {missing}"
