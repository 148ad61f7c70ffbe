"""The widgets of the coupled-chains notebook, proven in a real browser.

Executing a widget cell headless (nbval) proves nothing about what a learner sees: the most
common complaint about widget notebooks is "Error displaying widget: model not found". This
test starts JupyterLab on loopback (random port, random token, throwaway config/runtime/data
dirs), opens ``notebooks/03_coupled_kernels.ipynb`` in headless Chromium (Debian's
``/usr/bin/chromium`` driven by Playwright), runs all cells, moves a slider with the keyboard
and checks that

* the ipywidgets DOM is there (``.jupyter-widgets``, ``.widget-slider``), with no
  "Error displaying widget" / "model not found" text and no error outputs;
* the plot in the slider's cell output changed after the slider moved.

Screenshots of that output before and after (``browser_widget*_{before,after}.png``) go to
pytest's temporary folder, so the test leaves the work tree clean. To regenerate the tracked
screenshots in ``figures/`` on purpose, name the folder with ``UCVAE_SCREENSHOTS`` (a path
relative to the repository root, or absolute)::

    UCVAE_SCREENSHOTS=figures .venv/bin/python -m pytest -q tests/test_browser.py

Outside CI the test skips when Chromium or Playwright is missing; with ``CI=true`` it fails
instead (``.ci/run`` and ``make test`` install Chromium from Debian's packages when root).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from conftest import CHROMIUM, CHROMIUM_ARGS, IN_CI

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOK = Path(
    os.environ.get("UCVAE_BROWSER_NOTEBOOK", ROOT / "notebooks" / "03_coupled_kernels.ipynb")
)
SERVER_START_S = 90  # JupyterLab up and answering /api/status
KERNEL_READY_MS = 60_000  # notebook open, kernel idle
RUN_ALL_MS = 120_000  # all cells executed (fast mode)
PLOT_CHANGE_MS = 30_000  # the plot redrawn after the slider moved


def _missing() -> str | None:
    """Why the browser test cannot run here, or None."""
    if not CHROMIUM.exists():
        return f"{CHROMIUM} not found (apt-get install -y chromium, or `make browser`)"
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return "python package playwright not installed (pip install -r requirements.txt)"
    if not NOTEBOOK.exists():
        return f"{NOTEBOOK} not found"
    return None


@pytest.fixture(scope="module")
def browser_available() -> None:
    reason = _missing()
    if reason is None:
        return
    if IN_CI:
        pytest.fail(f"browser test must run in CI: {reason}")
    pytest.skip(f"browser test cannot run here: {reason}")


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _settings(settings_dir: Path) -> None:
    """User settings for the throwaway Lab: every cell in the DOM, no autosave, no news."""
    files = {
        # "none" keeps off-screen cells in the DOM, so selectors see the whole notebook.
        "@jupyterlab/notebook-extension/tracker.jupyterlab-settings": {
            "windowingMode": "none",
            "autoStartDefaultKernel": True,  # no kernel dialog if a notebook names no kernel
        },
        "@jupyterlab/docmanager-extension/plugin.jupyterlab-settings": {"autosave": False},
        "@jupyterlab/apputils-extension/notification.jupyterlab-settings": {
            "fetchNews": "false",
            "checkForUpdates": False,
            "doNotDisturbMode": True,
        },
    }
    for name, value in files.items():
        path = settings_dir / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(value))


class Lab:
    """A JupyterLab server on 127.0.0.1 serving a temporary copy of the notebook."""

    def __init__(self, base: str, token: str, path: str, log: Path):
        self.base, self.token, self.path, self.log = base, token, path, log

    @property
    def url(self) -> str:
        return f"{self.base}/lab/tree/{self.path}?token={self.token}"

    def log_tail(self, n: int = 4000) -> str:
        return self.log.read_text(errors="replace")[-n:] if self.log.exists() else ""


@pytest.fixture(scope="module")
def lab(browser_available) -> Lab:
    """Start JupyterLab (own process group, temp dirs), yield it, always shut it down."""
    tmp = Path(tempfile.mkdtemp(prefix="ucvae-lab-"))
    served = tmp / "root"
    (served / "notebooks").mkdir(parents=True)
    (served / "figures").mkdir()
    # A copy, so nothing the browser does (run, save) can touch the repo's notebook.
    shutil.copy(NOTEBOOK, served / "notebooks" / NOTEBOOK.name)
    config, settings = tmp / "config", tmp / "settings"
    config.mkdir()
    _settings(settings)
    (config / "jupyter_lab_config.py").write_text(
        "c.LabApp.news_url = None\n"
        "c.LabApp.check_for_updates_class = 'jupyterlab.NeverCheckForUpdate'\n"
        "c.LabApp.extension_manager = 'readonly'\n"
    )
    port, token = _free_port(), os.urandom(24).hex()
    env = {
        **os.environ,
        "JUPYTER_CONFIG_DIR": str(config),
        "JUPYTER_DATA_DIR": str(tmp / "data"),
        "JUPYTER_RUNTIME_DIR": str(tmp / "runtime"),
        "IPYTHONDIR": str(tmp / "ipython"),
        "JUPYTER_PLATFORM_DIRS": "1",
        "UCVAE_FAST": "1",
    }
    cmd = [
        sys.executable,
        "-m",
        "jupyterlab",
        "--no-browser",
        "--ServerApp.ip=127.0.0.1",
        f"--ServerApp.port={port}",
        "--ServerApp.port_retries=0",
        f"--IdentityProvider.token={token}",
        f"--ServerApp.root_dir={served}",
        "--ServerApp.allow_root=True",  # CI runs as root
        "--ServerApp.terminals_enabled=False",
        "--LabApp.expose_app_in_browser=True",
        f"--LabApp.user_settings_dir={settings}",
        f"--LabApp.workspaces_dir={tmp / 'workspaces'}",
    ]
    log = tmp / "jupyterlab.log"
    base = f"http://127.0.0.1:{port}"
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            cmd, cwd=served, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )
    server = Lab(base, token, f"notebooks/{NOTEBOOK.name}", log)
    try:
        deadline = time.monotonic() + SERVER_START_S
        while True:
            if proc.poll() is not None:
                pytest.fail(f"JupyterLab exited with {proc.returncode}:\n{server.log_tail()}")
            try:
                with urllib.request.urlopen(f"{base}/api/status?token={token}", timeout=2):
                    break
            except (urllib.error.URLError, OSError):
                if time.monotonic() > deadline:
                    pytest.fail(f"JupyterLab not up after {SERVER_START_S}s:\n{server.log_tail()}")
                time.sleep(0.3)
        yield server
    finally:
        _shutdown(proc, base, token)
        shutil.rmtree(tmp, ignore_errors=True)


def _shutdown(proc: subprocess.Popen, base: str, token: str) -> None:
    """Ask the server to stop (it shuts its kernels down), then end its process group."""
    if proc.poll() is None:
        try:
            req = urllib.request.Request(f"{base}/api/shutdown?token={token}", method="POST")
            urllib.request.urlopen(req, timeout=5).close()
            proc.wait(timeout=15)
        except (urllib.error.URLError, OSError, subprocess.TimeoutExpired):
            pass
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            break
        try:
            proc.wait(timeout=10)
            break
        except subprocess.TimeoutExpired:
            continue
    proc.wait(timeout=10)


# JavaScript run in the page through window.jupyterapp (exposed by --expose-app-in-browser).
JS_KERNEL_IDLE = """() => {
  const w = window.jupyterapp && window.jupyterapp.shell.currentWidget;
  const k = w && w.sessionContext && w.sessionContext.session && w.sessionContext.session.kernel;
  return !!(k && k.status === 'idle' && w.content && w.content.widgets.length);
}"""

# 'done' when every code cell ran and the kernel is idle; 'error' as soon as an output is one.
JS_RUN_STATE = """() => {
  const w = window.jupyterapp.shell.currentWidget;
  const k = w.sessionContext.session && w.sessionContext.session.kernel;
  let pending = false;
  for (const cell of w.content.widgets) {
    if (cell.model.type !== 'code') continue;
    const outs = cell.model.outputs;
    for (let i = 0; i < outs.length; i++) if (outs.get(i).type === 'error') return 'error';
    if (!cell.model.executionCount) pending = true;
  }
  return (!pending && k && k.status === 'idle') ? 'done' : false;
}"""

JS_ERRORS = """() => {
  const errs = [];
  for (const cell of window.jupyterapp.shell.currentWidget.content.widgets) {
    if (cell.model.type !== 'code') continue;
    const outs = cell.model.outputs;
    for (let i = 0; i < outs.length; i++) {
      const o = outs.get(i).toJSON();
      const src = cell.model.sharedModel.getSource().slice(0, 200);
      if (o.output_type === 'error') errs.push(o.ename + ': ' + o.evalue + ' in cell: ' + src);
    }
  }
  return errs;
}"""

JS_KERNEL_IS_IDLE = """() => {
  const k = window.jupyterapp.shell.currentWidget.sessionContext.session.kernel;
  return k.status === 'idle';
}"""


def _images(area) -> list[str]:
    """Digests of the <img> sources in a locator (widget PNG blobs or inline matplotlib)."""
    return [
        hashlib.sha1(src.encode()).hexdigest()
        for src in area.locator("img").evaluate_all("els => els.map(e => e.src)")
    ]


def _screenshot_dir(tmp_path: Path) -> Path:
    """``$UCVAE_SCREENSHOTS`` (relative to the repository root) if set, else ``tmp_path``."""
    named = os.environ.get("UCVAE_SCREENSHOTS", "").strip()
    folder = ROOT / named if named else tmp_path
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def test_widgets_render_and_respond_in_chromium(lab: Lab, tmp_path: Path):
    from playwright.sync_api import sync_playwright

    shots = _screenshot_dir(tmp_path)
    profile = tempfile.mkdtemp(prefix="ucvae-chromium-")  # fresh, empty user-data-dir
    try:
        with sync_playwright() as pw:
            ctx = pw.chromium.launch_persistent_context(
                profile,
                executable_path=str(CHROMIUM),
                headless=True,
                args=CHROMIUM_ARGS,
                viewport={"width": 1400, "height": 1000},
            )
            try:
                _exercise_notebook(ctx.new_page(), lab, shots)
            finally:
                ctx.close()
    finally:
        shutil.rmtree(profile, ignore_errors=True)


def _exercise_notebook(page, lab: Lab, shots: Path) -> None:
    page.goto(lab.url, wait_until="domcontentloaded")
    try:
        page.wait_for_function(JS_KERNEL_IDLE, timeout=KERNEL_READY_MS)
    except Exception as e:
        pytest.fail(f"notebook did not open with an idle kernel: {e}\n{lab.log_tail()}")

    page.evaluate("() => window.jupyterapp.commands.execute('notebook:run-all-cells')")
    try:
        state = page.wait_for_function(JS_RUN_STATE, timeout=RUN_ALL_MS, polling=250)
    except Exception:
        pytest.fail(f"cells still running after {RUN_ALL_MS // 1000} s (Run All)")
    state = state.json_value()
    errors = page.evaluate(JS_ERRORS)
    assert state == "done" and not errors, f"cells raised in JupyterLab: {errors}"

    notebook = page.locator(".jp-NotebookPanel:not(.lm-mod-hidden) .jp-Notebook")
    mode = page.evaluate(
        "() => window.jupyterapp.shell.currentWidget.content.notebookConfig.windowingMode"
    )
    assert mode == "none", f"user settings not applied (windowingMode {mode!r})"
    try:
        notebook.locator(".widget-slider").first.wait_for(state="visible", timeout=20_000)
    except Exception:
        _assert_no_widget_errors(notebook)  # the likelier cause, with a clearer message
        pytest.fail("no slider widget (.widget-slider) visible 20 s after all cells ran")
    assert notebook.locator(".jupyter-widgets").count() > 0, "no ipywidgets DOM in the notebook"
    _assert_no_widget_errors(notebook)

    # Every cell whose output holds a slider and a plot is a widget: move one of its sliders.
    cells = notebook.locator(".jp-CodeCell").filter(has=page.locator(".widget-slider"))
    cells = cells.filter(has=page.locator(".jp-Cell-outputArea img"))
    n = cells.count()
    assert n > 0, "no cell output with both a slider and a plot"
    for i in range(n):
        name = "browser_widget" if i == 0 else f"browser_widget{i + 1}"
        area = cells.nth(i).locator(".jp-Cell-outputArea")
        _move_slider_and_check_plot(page, area, shots / name)
    _assert_no_widget_errors(notebook)
    assert not page.evaluate(JS_ERRORS), "cells raised after the sliders moved"


def _assert_no_widget_errors(notebook) -> None:
    text = notebook.inner_text()
    for bad in ("Error displaying widget", "model not found"):
        assert bad not in text, f"{bad!r} shown in the notebook"


def _move_slider_and_check_plot(page, area, shot: Path) -> None:
    """Move a slider in ``area`` with the keyboard; the plot there must change.

    Screenshots of ``area`` go to ``<shot>_before.png`` and ``<shot>_after.png``.
    """
    name = shot.name
    area.scroll_into_view_if_needed()
    area.locator("img").first.wait_for(state="visible")
    sliders = area.locator(".widget-slider")
    # Prefer a "step" slider (the chains widget: step t), else the first one.
    stepper = sliders.filter(has_text=re.compile(r"\bstep\b", re.IGNORECASE))
    slider = stepper.first if stepper.count() else sliders.first
    readout = slider.locator(".widget-readout")
    value_before = readout.inner_text()
    imgs_before = _images(area)
    shot_before = area.screenshot(path=f"{shot}_before.png")

    handle = slider.locator(".noUi-handle").first
    handle.focus()
    for key in ("ArrowRight", "ArrowLeft"):  # left if the slider starts at its maximum
        for _ in range(3):
            page.keyboard.press(key)
        page.wait_for_timeout(100)
        if readout.inner_text() != value_before:
            break
    value_after = readout.inner_text()
    assert value_after != value_before, f"{name}: slider did not move (readout {value_before!r})"

    # Wait until the plot is redrawn (a new image src) and the kernel is idle again.
    deadline = time.monotonic() + PLOT_CHANGE_MS / 1000
    while time.monotonic() < deadline:
        if _images(area) != imgs_before and page.evaluate(JS_KERNEL_IS_IDLE):
            break
        page.wait_for_timeout(200)
    page.wait_for_timeout(500)  # let the last redraw paint
    shot_after = area.screenshot(path=f"{shot}_after.png")
    assert _images(area) != imgs_before, f"{name}: the plot did not change ({value_after!r})"
    assert shot_before != shot_after, f"{name}: the output looks the same after the slider moved"
