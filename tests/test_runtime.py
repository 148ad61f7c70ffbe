"""One fast-mode rule and one figures folder for the library, the CLI and every notebook."""

from pathlib import Path

import pytest

from ucvae_lite.lab import teaching
from ucvae_lite.training import runtime, train


@pytest.mark.parametrize("value", ["1", "true", "TRUE", "Yes", "on", " on "])
def test_fast_mode_on(monkeypatch, value):
    monkeypatch.setenv("UCVAE_FAST", value)
    assert runtime.fast_mode() is True


@pytest.mark.parametrize("value", ["", "0", "false", "False", "NO", "off"])
def test_fast_mode_off(monkeypatch, value):
    monkeypatch.setenv("UCVAE_FAST", value)
    assert runtime.fast_mode() is False


def test_fast_mode_off_when_unset(monkeypatch):
    monkeypatch.delenv("UCVAE_FAST", raising=False)
    assert runtime.fast_mode() is False


@pytest.mark.parametrize("value", ["2", "fast", "y", "-1"])
def test_fast_mode_rejects_other_values_naming_variable_value_and_choices(monkeypatch, value):
    monkeypatch.setenv("UCVAE_FAST", value)
    with pytest.raises(ValueError) as err:
        runtime.fast_mode()
    msg = str(err.value)
    assert "UCVAE_FAST" in msg and repr(value) in msg
    assert all(word in msg for word in ("1", "true", "yes", "on", "0", "false", "no", "off"))


def test_teaching_and_train_share_the_one_rule():
    """Notebooks import fast_mode / figures_dir from teaching or train: the same functions."""
    assert teaching.fast_mode is runtime.fast_mode is train.fast_mode
    assert teaching.figures_dir is runtime.figures_dir


def test_figures_dir_defaults_to_the_repository_figures(monkeypatch):
    monkeypatch.delenv("UCVAE_FIGURES", raising=False)
    path = runtime.figures_dir()
    assert path == Path(__file__).resolve().parents[1] / "figures"


def test_figures_dir_honours_ucvae_figures_and_creates_it(monkeypatch, tmp_path):
    target = tmp_path / "made" / "here"
    monkeypatch.setenv("UCVAE_FIGURES", str(target))
    assert runtime.figures_dir() == target and target.is_dir()


def test_viz_save_writes_into_ucvae_figures(monkeypatch, tmp_path):
    from ucvae_lite.lab.plots import viz

    monkeypatch.setenv("UCVAE_FIGURES", str(tmp_path))
    path = viz.save(viz.new_figure(), "runtime_test")
    assert path == tmp_path / "runtime_test.png" and path.stat().st_size > 0


def test_runs_dir_honours_ucvae_runs(monkeypatch, tmp_path):
    monkeypatch.setenv("UCVAE_RUNS", str(tmp_path / "runs"))
    assert runtime.runs_dir() == tmp_path / "runs" and (tmp_path / "runs").is_dir()
    monkeypatch.delenv("UCVAE_RUNS")
    monkeypatch.setattr(runtime, "REPO_ROOT", tmp_path / "repo")  # the tree stays untouched
    assert runtime.runs_dir() == tmp_path / "repo" / "runs"


def test_the_test_session_sends_figures_and_runs_outside_the_tree():
    """The root conftest.py points both at a temporary folder: tests rewrite no tracked file."""
    for path in (runtime.figures_dir(), runtime.runs_dir()):
        assert not path.resolve().is_relative_to(runtime.REPO_ROOT), path
