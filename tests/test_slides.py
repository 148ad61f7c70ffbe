"""The opening lecture's slides (``make slides``) work offline, in a real browser.

The deck is built for the module into a temporary folder by the command ``make slides`` runs
(``python -m classroom.slides OUT``). Then

* the page names no script, stylesheet or image (nor MathJax, in reveal.js's settings) by a URL
  with a host, each file it names was copied beside it, and no CSS file of the deck imports or
  loads one (``url(...)``, ``@import``);
* headless Chromium opens ``index.html`` from the file system with every request that is not a
  ``file://`` URL aborted and recorded. reveal.js initialised, with 10–15 slides; every
  ``<img>`` loaded a picture (``naturalWidth > 0``); MathJax typeset every formula of the source
  (one ``mjx-container`` per ``\\(`` or ``\\[``) and no TeX delimiter is left in the slides'
  text; stepping through every slide, none is taller than the deck's 720 pixels. No console
  error, no JavaScript error, no failed local request, and the list of requests that tried to
  leave the machine is empty;
* the numbers the verdict slide quotes from README.md (``<span class="readme">``) are still in
  README's section "Does the unbiased gradient give a better model, and when?".

Screenshots of every slide go to pytest's temporary folder. Outside CI the browser tests skip
when Playwright, Chromium or ``site/node_modules`` (``make slides`` runs ``npm ci``) is
missing; with ``CI=true`` they fail instead.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import CHROMIUM, CHROMIUM_ARGS, IN_CI

ROOT = Path(__file__).resolve().parents[1]
SOURCE = ROOT / "classroom" / "slides.html"
NODE_MODULES = ROOT / "site" / "node_modules"
PAGE_LOAD_MS = 30_000
MIN_SLIDES, MAX_SLIDES = 10, 15
# a path with a scheme or a host: //host/..., http:, https:, ...
EXTERNAL = re.compile(r"^(?:[a-z][a-z0-9+.-]*:|//)", re.I)
HTML_REFS = re.compile(r"<(?:script|img|link|source|iframe)\b[^>]*?\b(?:src|href)=\"([^\"]*)\"")
CSS_REFS = re.compile(r"url\(\s*['\"]?([^'\")]+)|@import\s+['\"]([^'\"]+)")
COMMENT = re.compile(r"<!--.*?-->", re.S)
# TeX left as text: a delimiter MathJax should have consumed
RAW_TEX = ("\\(", "\\)", "\\[", "\\]", "$$")
VERDICT = "## Does the unbiased gradient give a better model, and when?"


def _missing() -> str | None:
    """Why the deck cannot be built and opened here, or None."""
    try:
        __import__("playwright.sync_api")
    except ImportError:
        return "python package playwright missing (pip install -r requirements.txt)"
    for package in ("reveal.js", "mathjax"):
        if not (NODE_MODULES / package).is_dir():
            return f"{NODE_MODULES / package} missing (make slides runs npm ci)"
    if not CHROMIUM.exists():
        return f"{CHROMIUM} not found (make browser)"
    return None


@pytest.fixture(scope="module")
def deck(tmp_path_factory) -> Path:
    """The deck, built as ``make slides`` builds it, in a temporary folder."""
    reason = _missing()
    if reason is not None:
        if IN_CI:
            pytest.fail(f"the slides tests must run in CI: {reason}")
        pytest.skip(f"the slides cannot be built here: {reason}")
    out = tmp_path_factory.mktemp("slides")
    cmd = [sys.executable, "-m", "classroom.slides", str(out)]
    result = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
    assert result.returncode == 0, f"the slides build failed:\n{result.stdout}{result.stderr}"
    return out


def _formulas() -> int:
    """How many formulas the source has: each opens with \\( or \\[."""
    source = COMMENT.sub("", SOURCE.read_text(encoding="utf-8"))
    return source.count("\\(") + source.count("\\[")


def test_deck_names_nothing_outside_the_deck(deck: Path):
    page = (deck / "index.html").read_text(encoding="utf-8")
    outside = [f"index.html: {ref}" for ref in HTML_REFS.findall(page)]
    for css in deck.rglob("*.css"):
        for groups in CSS_REFS.findall(css.read_text(errors="ignore")):
            outside += [f"{css.name}: {ref}" for ref in groups if ref]
    outside = [ref for ref in outside if EXTERNAL.match(ref.split(": ", 1)[1])]
    outside = [ref for ref in outside if not ref.split(": ", 1)[1].startswith("data:")]
    assert outside == [], f"the deck loads from elsewhere: {outside[:10]}"
    # the math plugin loads MathJax by the path in reveal.js's settings, not by a tag
    refs = HTML_REFS.findall(page) + re.findall(r'"mathjax": "([^"]+)"', page)
    assert any(ref.endswith("tex-mml-chtml.js") for ref in refs), "no MathJax path in the page"
    for ref in refs:
        assert not EXTERNAL.match(ref), f"index.html loads {ref} from elsewhere"
        assert (deck / ref).is_file(), f"index.html names {ref}, which the build did not copy"


def test_verdict_quotes_the_readme():
    """The verdict slide's numbers are README's: when README's verdict changes, so must it."""
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert VERDICT in readme, f"README.md has no section {VERDICT!r}"
    section = readme.split(VERDICT, 1)[1].split("\n## ", 1)[0]
    section = " ".join(section.split())
    quoted = re.findall(r"<span class=\"readme\">([^<]+)</span>", SOURCE.read_text("utf-8"))
    assert quoted, "the verdict slide quotes no number from README.md"
    stale = [q for q in quoted if " ".join(q.split()) not in section]
    assert stale == [], (
        f"the verdict slide (classroom/slides.html) quotes numbers README's verdict no longer "
        f"has: {stale}"
    )


def test_deck_works_offline_in_chromium(deck: Path, tmp_path: Path):
    from playwright.sync_api import sync_playwright

    left: list[str] = []  # requests that tried to leave the machine
    errors: list[str] = []  # console errors, JavaScript errors, failed local requests

    def only_local(route) -> None:
        if route.request.url.startswith("file://"):
            route.continue_()
        else:
            left.append(route.request.url)
            route.abort()

    with sync_playwright() as pw:
        browser = pw.chromium.launch(
            executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS
        )
        try:
            context = browser.new_context(viewport={"width": 1280, "height": 720})
            context.route("**/*", only_local)
            page = context.new_page()
            page.on("pageerror", lambda e: errors.append(f"JavaScript error: {e}"))
            page.on(
                "console",
                lambda m: m.type == "error" and errors.append(f"console error: {m.text}"),
            )
            page.on(
                "requestfailed",
                lambda r: errors.append(f"request failed: {r.url} ({r.failure})"),
            )
            try:
                page.goto((deck / "index.html").as_uri(), wait_until="load")
                _check_deck(page, tmp_path)
            except Exception as e:  # say what was blocked or failed: the likely cause
                raise AssertionError(
                    f"{e}\nblocked requests: {left[:10]}\nerrors: {errors[:10]}"
                ) from e
        finally:
            browser.close()
    assert left == [], f"requests that tried to leave the machine: {left[:10]}"
    assert errors == [], f"errors in the deck: {errors[:10]}"


def _check_deck(page, shots: Path) -> None:
    try:
        page.wait_for_function("() => window.Reveal && Reveal.isReady()", timeout=PAGE_LOAD_MS)
    except Exception as e:
        raise AssertionError("reveal.js did not initialise") from e
    n_slides = page.evaluate("() => Reveal.getTotalSlides()")
    assert MIN_SLIDES <= n_slides <= MAX_SLIDES, f"{n_slides} slides, not {MIN_SLIDES}–{MAX_SLIDES}"

    # maths: MathJax started (from the local copy) and typeset every formula of the source
    try:
        page.wait_for_function(
            "() => window.MathJax && MathJax.startup && MathJax.startup.promise",
            timeout=PAGE_LOAD_MS,
        )
    except Exception as e:
        raise AssertionError("MathJax did not start in the deck") from e
    page.evaluate("() => MathJax.startup.promise")
    expected = _formulas()
    typeset = page.locator(".reveal .slides mjx-container").count()
    assert expected > 0 and typeset == expected, f"{typeset} of {expected} formulas typeset"

    # figures: every <img> loaded a picture
    page.wait_for_function(
        "() => Array.from(document.images).every(i => i.complete)", timeout=PAGE_LOAD_MS
    )
    widths = page.evaluate(
        "() => Array.from(document.images).map(i => [i.getAttribute('src'), i.naturalWidth])"
    )
    assert widths, "the deck has no figures"
    empty = [src for src, width in widths if width == 0]
    assert empty == [], f"figures that did not load: {empty}"

    # every slide: no TeX left as text, and it fits the deck's height
    height = page.evaluate("() => Reveal.getConfig().height")
    page.evaluate("() => Reveal.configure({ transition: 'none' })")  # screenshots: no fading
    for i in range(n_slides):
        page.evaluate(f"() => Reveal.slide({i})")
        page.evaluate("() => MathJax.startup.promise")
        page.wait_for_timeout(50)
        title = page.evaluate("() => Reveal.getCurrentSlide().querySelector('h1, h2').textContent")
        text = page.evaluate(
            "() => { const s = Reveal.getCurrentSlide().cloneNode(true);"
            " s.querySelectorAll('mjx-container, aside.notes').forEach(e => e.remove());"
            " return s.textContent; }"
        )
        raw = [tex for tex in RAW_TEX if tex in text]
        assert raw == [], f"slide {i + 1} ({title.strip()}): TeX left as text {raw}"
        tall = page.evaluate("() => Reveal.getCurrentSlide().scrollHeight")
        assert tall <= height, f"slide {i + 1} ({title.strip()}) is {tall} px tall, over {height}"
        page.screenshot(path=str(shots / f"slide_{i + 1:02d}.png"))
