"""Sphinx configuration of the course site: ``make site`` builds it into ``build/site/``.

The site is the markdown pages of ``docs/`` and the notebooks as they are stored (executed, with
their saved widget state); nothing is executed here, and solution cells are shown collapsed,
as in the notebooks. It works offline: the maths renderer (MathJax 3) and the widget manager
(``@jupyter-widgets/html-manager``'s standalone ``embed.js``, which needs no require.js for
the core widgets the notebooks use) come from the npm packages pinned in
``site/package.json``, installed by ``npm ci`` into ``site/node_modules``, and are copied into
the site's ``_static`` folder; the theme (Furo) loads nothing from elsewhere.
``tests/test_site.py`` opens the result with every non-local request blocked.

Run from the repository root: ``sphinx-build -c site . build/site`` (the source folder is the
repository, so that ``docs/`` pages link to ``../notebooks/*.ipynb`` and ``../figures/*.png``
by the same relative paths that work when they are read on their own).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from sphinx.application import Sphinx
from sphinx.errors import ConfigError

HERE = Path(__file__).resolve().parent
NODE_MODULES = HERE / "node_modules"
# what the pages load, by their folder under _static: the npm files that provide it
ASSETS = {
    "mathjax": NODE_MODULES / "mathjax" / "es5",
    "html-manager": NODE_MODULES / "@jupyter-widgets" / "html-manager" / "dist",
}

project = "ucvae_lite"
author = "ucvae_lite contributors"
copyright = "ucvae_lite contributors, MIT licence"

extensions = ["myst_nb"]
root_doc = "docs/index"
# the source folder is the repository: take only the pages and the numbered notebooks
include_patterns = ["docs/*.md", "notebooks/[0-9][0-9]_*.ipynb"]
exclude_patterns = [".venv", ".git", "build", "site", "**/.ipynb_checkpoints"]
templates_path = ["_templates"]
# build/site/index.html sends the browser to the front page, docs/index.html
html_additional_pages = {"index": "redirect.html"}

# the notebooks are stored executed (make main): render them as they are
nb_execution_mode = "off"
myst_enable_extensions = ["dollarmath", "amsmath"]
myst_heading_anchors = 3

html_theme = "furo"
html_title = "ucvae_lite: unbiased VAE gradients from coupled Markov chains"
html_show_sourcelink = False
html_copy_source = False
# MathJax 3 from site/node_modules, whose fonts and extensions load from beside it (Sphinx 9
# defaults to MathJax 4 from a CDN; MathJax 4 fetches its fonts and speech data from a CDN
# unless told otherwise). Sphinx writes myst's settings as ``window.MathJax = {options:
# {processHtmlClass: ...}}`` (mathjax4_config), which MathJax 3 reads the same way.
mathjax_path = "mathjax/tex-mml-chtml.js"
mathjax_config_path = "mathjax_config.js"
# myst-nb adds these scripts to pages with saved widget state (its default: require.js and
# embed-amd.js from CDNs); embed.js finds the <script type="application/vnd.jupyter.widget-
# state+json"> and widget-view tags myst-nb writes and renders the widgets from them.
nb_ipywidgets_js = {"html-manager/embed.js": {}}


def collapse_solutions(app: Sphinx, docname: str, source: list[str]) -> None:
    """Show each solution cell of a notebook collapsed, behind "Show the solution", as the
    stored notebook does (cells tagged ``solution`` or with nbgrader ``solution: true``)."""
    if app.env.doc2path(docname).suffix != ".ipynb":
        return
    nb = json.loads(source[0])
    for cell in nb["cells"]:
        meta = cell.setdefault("metadata", {})
        if "solution" in meta.get("tags", []) or meta.get("nbgrader", {}).get("solution"):
            meta["tags"] = [*meta.get("tags", []), "hide-input"]
            meta.setdefault("mystnb", {})["code_prompt_show"] = "Show the solution"
    source[0] = json.dumps(nb)


def check_assets(app: Sphinx) -> None:
    """Fail early, saying what to run, when the npm packages are not installed."""
    missing = [str(path) for path in ASSETS.values() if not path.is_dir()]
    if missing:
        raise ConfigError(
            f"missing {', '.join(missing)}: run `npm ci` in {HERE} (make site does it)"
        )


def copy_assets(app: Sphinx, exception: Exception | None) -> None:
    """Copy MathJax and the widget manager into the built site's _static folder."""
    if exception is not None or app.builder.format != "html":
        return
    for name, source in ASSETS.items():
        target = Path(app.outdir) / "_static" / name
        shutil.copytree(source, target, dirs_exist_ok=True, ignore=shutil.ignore_patterns("*.map"))


def setup(app: Sphinx) -> None:
    # MathJax on every page, not only those with formulas in their body: the sidebar lists the
    # notebooks by their titles, and some titles hold maths
    app.set_html_assets_policy("always")
    app.connect("builder-inited", check_assets)
    app.connect("source-read", collapse_solutions)
    app.connect("build-finished", copy_assets)
