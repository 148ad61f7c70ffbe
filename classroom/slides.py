"""The opening lecture's slides, a reveal.js deck that works offline (``make slides``).

    python -m classroom.slides [OUT]        # default: build/slides

The slides are ``classroom/slides.html``: one ``<section>`` per slide, maths in ``\\( \\)``
and ``\\[ \\]``, figures named ``figures/NAME.png``, speaker notes in ``<aside class="notes">``.
This module wraps them into ``OUT/index.html`` and puts everything the page loads beside it:

* ``OUT/reveal/``: reveal.js, its white theme (fonts embedded) and its math and notes plugins;
* ``OUT/mathjax/``: MathJax 3, which the math plugin loads from there (not from its CDN);
* ``OUT/figures/``: the figures the slides name, copied from the repository's ``figures/``.

reveal.js and MathJax come from the npm packages pinned in ``site/package.json``, installed by
``npm ci`` into ``site/node_modules`` (``make slides`` runs it), so the deck needs no network:
open ``OUT/index.html`` in a browser, or copy the folder to the lecture room's machine.
``tests/test_slides.py`` opens it in headless Chromium with every non-local request blocked.
"""

from __future__ import annotations

import argparse
import html
import json
import re
import shutil
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SOURCE = Path(__file__).resolve().parent / "slides.html"
FIGURES = ROOT / "figures"
NODE_MODULES = ROOT / "site" / "node_modules"
REVEAL = NODE_MODULES / "reveal.js"
MATHJAX = NODE_MODULES / "mathjax" / "es5"
DEFAULT_OUT = ROOT / "build" / "slides"
TITLE = "Unbiased gradients for VAEs from coupled Markov chains: the opening lecture"
# what the page loads from reveal.js's package: its file under dist/ -> its path under OUT
REVEAL_FILES = {
    "reset.css": "reveal/reset.css",
    "reveal.css": "reveal/reveal.css",
    "theme/white.css": "reveal/theme/white.css",
    "reveal.js": "reveal/reveal.js",
    "plugin/math.js": "reveal/plugin/math.js",
    "plugin/notes.js": "reveal/plugin/notes.js",
}
COMMENT = re.compile(r"<!--.*?-->", re.S)  # the source's comments stay out of the page
# <img src="figures/NAME.png">: the figures a slide names
FIGURE_REF = re.compile(r"<img\b[^>]*?\bsrc=\"figures/([^\"/]+)\"")

# reveal.js's settings; "mathjax3" points the math plugin at the local MathJax copy
CONFIG = {
    "hash": True,
    "slideNumber": "c/t",
    "width": 1280,
    "height": 720,
    "margin": 0.04,
    "center": True,
    "transition": "fade",
    "transitionSpeed": "fast",
    "mathjax3": {
        "mathjax": "mathjax/tex-mml-chtml.js",
        "tex": {"inlineMath": [["\\(", "\\)"]], "displayMath": [["\\[", "\\]"]]},
        "options": {"skipHtmlTags": ["script", "noscript", "style", "textarea", "pre", "code"]},
    },
}

STYLE = """
.reveal { font-size: 25px; }
.reveal h1 { font-size: 1.9em; text-transform: none; }
.reveal h2 { font-size: 1.35em; text-transform: none; margin-bottom: 14px; }
.reveal p, .reveal li { line-height: 1.3; }
.reveal p { margin: 10px 0; }
.reveal ol, .reveal ul { margin-left: 1.1em; }
.reveal li { margin: 4px 0; }
.reveal .cols { display: grid; grid-template-columns: 1fr 1fr; gap: 28px; align-items: center;
  text-align: left; }
.reveal .cols.fig-wide { grid-template-columns: 5fr 7fr; gap: 22px; }
.reveal .cols3 { display: grid; grid-template-columns: 1fr 1fr 1fr; gap: 20px;
  align-items: start; }
.reveal .cols3 figure { margin: 0; }
.reveal figcaption { font-size: 0.72em; line-height: 1.3; text-align: left; margin-top: 8px; }
.reveal img.fig { max-width: 100%; max-height: 470px; margin: 0; }
.reveal img.fig.wide { max-height: 300px; }
.reveal .lead { font-size: 1.1em; color: #555; }
.reveal .roadmap { display: inline-block; text-align: left; }
.reveal .small { font-size: 0.8em; }
.reveal .src { font-size: 0.6em; color: #777; margin-top: 14px; }
.reveal .predict { border-left: 4px solid #2a76dd; padding: 4px 10px; background: #eef4fd;
  font-size: 0.85em; }
.reveal .readme { white-space: nowrap; }
.reveal table.map { font-size: 0.72em; margin: 0 auto; }
.reveal table.map td, .reveal table.map th { padding: 6px 12px; text-align: left; }
.reveal table.map tr.homework { color: #777; }
.reveal mjx-container[display="true"] { margin: 0.5em 0 !important; }
"""

PAGE = """<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{title}</title>
<!-- built by `make slides` (python -m classroom.slides) from classroom/slides.html;
     reveal.js {reveal_version}, MathJax {mathjax_version}: local copies, no network needed -->
<link rel="stylesheet" href="reveal/reset.css">
<link rel="stylesheet" href="reveal/reveal.css">
<link rel="stylesheet" href="reveal/theme/white.css">
<style>{style}</style>
</head>
<body>
<div class="reveal">
<div class="slides">
{slides}
</div>
</div>
<script src="reveal/reveal.js"></script>
<script src="reveal/plugin/math.js"></script>
<script src="reveal/plugin/notes.js"></script>
<script>
Reveal.initialize(Object.assign({config}, {{ plugins: [RevealMath.MathJax3, RevealNotes] }}));
</script>
</body>
</html>
"""


def _version(package: Path) -> str:
    return json.loads((package / "package.json").read_text(encoding="utf-8"))["version"]


def check_assets() -> None:
    """Fail early, saying what to run, when the npm packages are not installed."""
    missing = [str(REVEAL / "dist" / name) for name in REVEAL_FILES]
    missing = [path for path in missing if not Path(path).is_file()]
    if not MATHJAX.is_dir():
        missing.append(str(MATHJAX))
    if missing:
        raise SystemExit(
            f"missing {', '.join(missing)}: run `npm ci` in {ROOT / 'site'} (make slides does it)"
        )


def figures(slides: str) -> list[str]:
    """The figure files the slides name, in order of first use; each must exist in figures/."""
    names = list(dict.fromkeys(FIGURE_REF.findall(slides)))
    missing = [name for name in names if not (FIGURES / name).is_file()]
    if missing:
        raise SystemExit(
            f"{SOURCE.name} names figures missing from {FIGURES}: {', '.join(missing)} "
            "(make main draws them)"
        )
    return names


def build(out: Path = DEFAULT_OUT) -> Path:
    """Write the deck into ``out`` (created if needed); return the path of its index.html."""
    out = Path(out).resolve()
    if out in (ROOT, FIGURES) or out in ROOT.parents:
        raise SystemExit(f"refusing to write the deck into {out}: name a new folder")
    check_assets()
    slides = COMMENT.sub("", SOURCE.read_text(encoding="utf-8"))
    names = figures(slides)
    out.mkdir(parents=True, exist_ok=True)
    for name, target in REVEAL_FILES.items():
        (out / target).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(REVEAL / "dist" / name, out / target)
    shutil.copytree(
        MATHJAX, out / "mathjax", dirs_exist_ok=True, ignore=shutil.ignore_patterns("*.map")
    )
    (out / "figures").mkdir(exist_ok=True)
    for name in names:
        shutil.copyfile(FIGURES / name, out / "figures" / name)
    page = PAGE.format(
        title=html.escape(TITLE),
        reveal_version=_version(REVEAL),
        mathjax_version=_version(MATHJAX.parent),
        style=STYLE,
        slides=slides.strip(),
        config=json.dumps(CONFIG, indent=1),
    )
    index = out / "index.html"
    index.write_text(page, encoding="utf-8")
    return index


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("out", nargs="?", default=DEFAULT_OUT, type=Path, help="output folder")
    args = parser.parse_args(argv)
    index = build(args.out)
    n = len(re.findall(r"<section\b", SOURCE.read_text(encoding="utf-8")))
    print(f"{n} slides: {index} (open it in a browser; it needs no network)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
