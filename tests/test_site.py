"""The course site (``make site``) works offline, in a real browser.

The site is built for the module into a temporary folder by the command ``make site`` runs
(Sphinx with ``site/conf.py``; warnings are errors). Then

* no page names a script, stylesheet, image or font by a URL with a host: every ``<script>``,
  ``<link>``, ``<img>`` and CSS ``url(...)`` / ``@import`` is a path inside the site;
* headless Chromium opens ``index.html`` from the file system with every request that is not
  a ``file://`` URL aborted and recorded, follows it to the front page, then visits every
  page. On each, MathJax typeset every formula (each ``.math`` element holds an
  ``mjx-container``; no TeX left in the sidebar's titles). On the notebook page with saved
  widget state it also checks that the figures loaded (``naturalWidth > 0``), that the
  widgets rendered from their saved state (sliders and the
  Image widget's picture inside a cell output, no "Error displaying widget"), and that the
  solutions are collapsed. No page raised a JavaScript error, and the list of requests that
  tried to leave the machine is empty.

Screenshots go to pytest's temporary folder. Outside CI the module skips when Sphinx,
Playwright, Chromium or ``site/node_modules`` (``make site`` runs ``npm ci``) is missing;
with ``CI=true`` it fails instead.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import CHROMIUM, CHROMIUM_ARGS, IN_CI

ROOT = Path(__file__).resolve().parents[1]
NODE_MODULES = ROOT / "site" / "node_modules"
PAGE_LOAD_MS = 30_000
# a path with a scheme or a host: //host/..., http:, https:, ...
EXTERNAL = re.compile(r"^(?:[a-z][a-z0-9+.-]*:|//)", re.I)
# where pages name what the browser loads by itself
HTML_REFS = re.compile(r"<(?:script|img|link|source|iframe)\b[^>]*?\b(?:src|href)=\"([^\"]*)\"")
CSS_REFS = re.compile(r"url\(\s*['\"]?([^'\")]+)|@import\s+['\"]([^'\"]+)")


def _missing() -> str | None:
    """Why the site cannot be built and opened here, or None."""
    for module in ("sphinx", "myst_nb", "playwright.sync_api"):
        try:
            __import__(module)
        except ImportError:
            return f"python package {module.split('.')[0]} missing (make instructor)"
    if not NODE_MODULES.is_dir():
        return f"{NODE_MODULES} missing (make site runs npm ci)"
    if not CHROMIUM.exists():
        return f"{CHROMIUM} not found (make browser)"
    return None


def _widget_notebook() -> str:
    """The first notebook stored with saved widget state: its page must show the widgets."""
    for path in sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb")):
        widgets = json.loads(path.read_text(encoding="utf-8"))["metadata"].get("widgets", {})
        if widgets.get("application/vnd.jupyter.widget-state+json", {}).get("state"):
            return path.stem
    pytest.fail("no notebook is stored with saved widget state")


@pytest.fixture(scope="module")
def site(tmp_path_factory) -> Path:
    """The site, built as ``make site`` builds it, in a temporary folder."""
    reason = _missing()
    if reason is not None:
        if IN_CI:
            pytest.fail(f"the site tests must run in CI: {reason}")
        pytest.skip(f"the site cannot be built here: {reason}")
    out = tmp_path_factory.mktemp("site")
    cmd = [sys.executable, "-m", "sphinx", "-q", "-W", "--keep-going", "-c", "site", ".", str(out)]
    result = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
    assert result.returncode == 0, f"the site build failed:\n{result.stdout}{result.stderr}"
    return out


def _pages(site: Path) -> list[Path]:
    return sorted(p for p in site.rglob("*.html") if "_static" not in p.parts)


def test_pages_name_nothing_outside_the_site(site: Path):
    outside = []
    for page in _pages(site):
        outside += [f"{page.name}: {ref}" for ref in HTML_REFS.findall(page.read_text())]
    for css in site.joinpath("_static").rglob("*.css"):
        for groups in CSS_REFS.findall(css.read_text(errors="ignore")):
            outside += [f"{css.name}: {ref}" for ref in groups if ref]
    outside = [ref for ref in outside if EXTERNAL.match(ref.split(": ", 1)[1])]
    outside = [ref for ref in outside if not ref.split(": ", 1)[1].startswith("data:")]
    assert outside == [], f"the site loads from elsewhere: {outside[:10]}"


def test_site_works_offline_in_chromium(site: Path, tmp_path: Path):
    from playwright.sync_api import sync_playwright

    left: list[str] = []  # requests that tried to leave the machine

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
            context = browser.new_context(viewport={"width": 1300, "height": 1000})
            context.route("**/*", only_local)
            page = context.new_page()
            errors: list[str] = []
            page.on("pageerror", lambda e: errors.append(f"{page.url}: {e}"))

            try:
                page.goto((site / "index.html").as_uri())
                page.wait_for_url("**/docs/index.html", timeout=PAGE_LOAD_MS)
                for path in _pages(site):
                    page.goto(path.as_uri(), wait_until="load", timeout=PAGE_LOAD_MS)
                    _check_maths(page, path)
                notebook = site / "notebooks" / f"{_widget_notebook()}.html"
                _check_notebook_page(page, notebook, tmp_path)
                page.goto((site / "docs" / "notebooks.html").as_uri(), wait_until="load")
                _check_images(page, "figure on the notebook map")
            except Exception as e:  # say what was blocked: the likely cause
                raise AssertionError(f"{e}\nblocked requests: {left[:10]}") from e
        finally:
            browser.close()
    assert errors == [], f"JavaScript errors: {errors[:5]}"
    assert left == [], f"requests that tried to leave the machine: {left[:10]}"


def _check_notebook_page(page, path: Path, shots: Path) -> None:
    page.goto(path.as_uri(), wait_until="load", timeout=PAGE_LOAD_MS)
    assert _check_maths(page, path) > 0, f"{path.name}: no formulas on the page"
    # widgets: rendered from the saved state, in the cell outputs
    outputs = page.locator(".cell_output")
    outputs.locator(".jupyter-widgets .widget-slider").first.wait_for(timeout=PAGE_LOAD_MS)
    assert "Error displaying widget" not in page.inner_text("body")
    picture = outputs.locator(".jupyter-widgets img").first
    picture.wait_for(timeout=PAGE_LOAD_MS)
    assert picture.evaluate("img => img.complete && img.naturalWidth") > 0, "widget image empty"
    _check_images(page, f"{path.name} figure")
    # solutions: collapsed behind a toggle, as in the stored notebook
    solution = page.get_by_text("### BEGIN SOLUTION").first
    assert solution.count() and not solution.is_visible(), "a solution is shown open"
    page.screenshot(path=str(shots / f"{path.stem}.png"))
    picture.scroll_into_view_if_needed()
    page.screenshot(path=str(shots / f"{path.stem}_widget.png"))


def _check_maths(page, path: Path) -> int:
    """MathJax has typeset every formula of the page (and the maths in the sidebar's titles);
    returns how many formulas the page body has."""
    try:
        page.wait_for_function("() => window.MathJax && MathJax.startup", timeout=PAGE_LOAD_MS)
    except Exception as e:
        raise AssertionError(f"{path.name}: MathJax did not start on the page") from e
    page.evaluate("() => MathJax.startup.promise")
    n_maths = page.locator(".math").count()
    untypeset = page.locator(".math:not(:has(mjx-container))").count()
    assert untypeset == 0, f"{path.name}: {untypeset} of {n_maths} formulas not typeset"
    raw = page.locator(".sidebar-tree").inner_text()
    assert "\\(" not in raw, f"{path.name}: maths left as TeX in the sidebar"
    return n_maths


def _check_images(page, what: str) -> None:
    """Every <img> of the page (and at least one) loaded a picture."""
    page.wait_for_function("() => Array.from(document.images).every(i => i.complete)")
    widths = page.evaluate("() => Array.from(document.images).map(i => i.naturalWidth)")
    assert widths and min(widths) > 0, f"{what}: images that did not load: {widths}"
