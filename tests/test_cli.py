"""The command line answers bad input with one line and exit status 2, before any training.

For every bad input, stderr must be a single ``error: ...`` line, with no traceback, and
nothing may be written to the working folder (validation happens before data loading and
training); ``--debug`` brings the traceback back. One input of each kind of error (a flag
value, an argparse error, a missing dataset, a file that is not a checkpoint, a bad
``UCVAE_FAST``) runs ``python -m ucvae_lite`` as a subprocess with this checkout on
PYTHONPATH; the full list of bad flag values calls ``cli.main`` in-process, which is the
same code without the ~1 s torch import per case.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import ucvae_lite.training.data as data_mod
import ucvae_lite.training.evaluate as evaluate_mod
import ucvae_lite.training.train as train_mod
from ucvae_lite.cli import main
from ucvae_lite.training.evaluate import CHECKPOINT_KEYS, CheckpointError, load_model

ROOT = Path(__file__).resolve().parents[1]


def run_cli(args: list[str], cwd: Path, **env: str) -> subprocess.CompletedProcess:
    """``python -m ucvae_lite *args`` in ``cwd``, importing this checkout's package."""
    path = os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH")) if p)
    full_env = {**os.environ, "PYTHONPATH": path, "UCVAE_FAST": "1", **env}
    return subprocess.run(
        [sys.executable, "-m", "ucvae_lite", *args],
        cwd=cwd,
        env=full_env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def run_main(args: list[str], capsys) -> subprocess.CompletedProcess:
    """``cli.main(args)`` in-process, its exit status and output as a CompletedProcess."""
    try:
        code = main(args)
    except SystemExit as e:  # argparse's own errors
        code = e.code
    out, err = capsys.readouterr()
    return subprocess.CompletedProcess(args, code, out, err)


def assert_one_line_error(res: subprocess.CompletedProcess, *needles: str) -> str:
    """Exit 2, stderr one non-empty ``error:`` line mentioning ``needles``, no traceback."""
    lines = res.stderr.splitlines()
    assert res.returncode == 2, (res.returncode, res.stderr)
    assert len(lines) == 1 and lines[0].startswith("error: ") and lines[0][7:].strip(), lines
    assert "Traceback" not in res.stderr + res.stdout
    for needle in needles:
        assert needle in lines[0], (needle, lines[0])
    return lines[0]


@pytest.fixture
def files(tmp_path: Path) -> dict[str, Path]:
    """Files that are not training checkpoints, and an empty IDX directory."""
    d = tmp_path / "files"
    d.mkdir()
    (d / "text.pt").write_text("this is not a checkpoint\n")
    (d / "empty.pt").write_bytes(b"")
    torch.save({"weights": torch.zeros(2)}, d / "no_keys.pt")
    torch.save(torch.zeros(3), d / "tensor.pt")
    (d / "idx").mkdir()
    return {p.name: p for p in d.iterdir()}


BAD_FLAGS = {
    "k > m": (["train", "--k", "3", "--m", "1"], ["--k 3", "--m 1"]),
    "k > default m": (["train", "--k", "3"], ["--k 3", "--m 2 (the default)"]),
    "S < 2": (["train", "--num-samples", "1"], ["--num-samples", "at least 2"]),
    "epochs 0": (["train", "--epochs", "0"], ["--epochs"]),
    "batch size 0": (["train", "--batch-size", "0"], ["--batch-size"]),
    "negative lr": (["train", "--lr", "-1"], ["--lr"]),
    "eval samples 0": (["train", "--eval-samples", "0"], ["--eval-samples"]),
    "val samples 0": (["train", "--val-samples", "0"], ["--val-samples"]),
    "max steps 0": (["reproduce", "--max-steps", "0"], ["--max-steps"]),
    "max steps < m": (["train", "--max-steps", "1"], ["--max-steps 1", "--m 2"]),
    "eps 1.5": (["train", "--eps", "1.5"], ["--eps", "[0, 1)"]),
    "latent dim 0": (["train", "--latent-dim", "0"], ["--latent-dim"]),
    "hidden 0": (["train", "--hidden", "64", "0"], ["--hidden"]),
    "flow on full": (["train", "--flow-layers", "2", "--covariance", "full"], ["--flow-layers"]),
    "seeds empty": (["reproduce", "--seeds"], ["--seeds"]),
    "seeds repeated": (["reproduce", "--seeds", "1", "1"], ["--seeds"]),
    "decoder budget 0": (["reproduce", "--decoder-budget", "0"], ["--decoder-budget"]),
    "decoder limit -1": (["train", "--decoder-limit", "-1"], ["--decoder-limit"]),
    "not an int": (["train", "--epochs", "many"], ["--epochs", "--help"]),
    "no such device": (["train", "--device", "nonesuch"], ["--device", "cpu"]),
    "data dir missing": (
        ["train", "--dataset", "fashion-mnist", "--data-dir", "/nonexistent"],
        ["--data-dir /nonexistent"],
    ),
    "data dir for digits": (["train", "--data-dir", "."], ["--data-dir"]),
    "demo S < 2": (["demo", "--num-samples", "1"], ["--num-samples"]),
    "demo m < k": (["demo", "--k", "2", "--m", "1"], ["--m 1"]),
    "evaluate samples 0": (["evaluate", "x.pt", "--eval-samples", "0"], ["--eval-samples"]),
    "no command": ([], ["command"]),
    "rejuvenate 0": (["train", "--rejuvenate", "0"], ["--rejuvenate", "positive"]),
    "correction prob 0": (["train", "--correction-prob", "0"], ["--correction-prob", "(0, 1]"]),
    "correction prob 2": (["reproduce", "--correction-prob", "2"], ["--correction-prob"]),
    "sumo cutoff 0": (["train", "--sumo-cutoff", "0"], ["--sumo-cutoff"]),
    "sumo min terms 0": (["train", "--sumo-min-terms", "0"], ["--sumo-min-terms"]),
    "bad clock": (["train", "--clock", "sundial"], ["--clock"]),
    "subset 0": (["train", "--subset", "10", "0", "5"], ["--subset"]),
}


@pytest.mark.parametrize("name", BAD_FLAGS)
def test_bad_flag_values_are_one_line_errors_before_anything_runs(
    name, tmp_path, monkeypatch, capsys
):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("UCVAE_FAST", "1")
    args, needles = BAD_FLAGS[name]
    assert_one_line_error(run_main(args, capsys), *needles)
    assert list(tmp_path.iterdir()) == [], "nothing may be written before validation passes"


@pytest.mark.parametrize("name", ["k > m", "not an int"])
def test_bad_flag_values_from_the_shell(name, tmp_path):
    args, needles = BAD_FLAGS[name]
    assert_one_line_error(run_cli(args, tmp_path), *needles)
    assert list(tmp_path.iterdir()) == []


def test_missing_dataset_is_one_line_with_how_to_get_it(tmp_path, files):
    args = ["train", "--dataset", "fashion-mnist", "--data-dir", str(files["idx"])]
    assert_one_line_error(run_cli(args, tmp_path), "train-images-idx3-ubyte", "apt-get install")
    assert list(tmp_path.iterdir()) == [files["idx"].parent]  # no runs/ folder


def test_bad_fast_mode_variable_is_one_line(tmp_path):
    res = run_cli(["train"], tmp_path, UCVAE_FAST="maybe")
    assert_one_line_error(res, "UCVAE_FAST", "'maybe'")


NOT_CHECKPOINTS = [
    ("missing.pt", "not found"),
    ("text.pt", "not a torch checkpoint"),
    ("empty.pt", "not a torch checkpoint"),
    ("no_keys.pt", "no model_config, model, config"),
    ("tensor.pt", "holds a Tensor"),
    ("idx", "is a directory"),
]


@pytest.mark.parametrize("name,needle", NOT_CHECKPOINTS)
def test_evaluate_rejects_what_is_not_a_checkpoint(name, needle, files, tmp_path, capsys):
    path = files.get(name, tmp_path / name)
    assert_one_line_error(run_main(["evaluate", str(path)], capsys), str(path), needle)


@pytest.mark.parametrize("name,needle", NOT_CHECKPOINTS[:2])
def test_evaluate_rejects_what_is_not_a_checkpoint_from_the_shell(name, needle, files, tmp_path):
    path = files.get(name, tmp_path / name)
    assert_one_line_error(run_cli(["evaluate", str(path)], tmp_path), str(path), needle)


@pytest.mark.parametrize("where", ["before", "after"])
def test_debug_shows_the_traceback(where, tmp_path, files):
    args = ["evaluate", str(files["text.pt"])]
    args = ["--debug", *args] if where == "before" else [*args, "--debug"]
    res = run_cli(args, tmp_path)
    assert res.returncode != 0 and "Traceback" in res.stderr
    assert "CheckpointError" in res.stderr


# --- the same errors in the library, and the CLI's single data load --------------------------
def test_load_model_raises_checkpoint_error_naming_the_problem(files, tmp_path):
    with pytest.raises(CheckpointError, match="not found"):
        load_model(tmp_path / "missing.pt")
    with pytest.raises(CheckpointError, match="not a torch checkpoint"):
        load_model(files["text.pt"])
    with pytest.raises(CheckpointError, match=r"no model_config, model\)"):
        load_model(files["no_keys.pt"])  # a model needs no training config ...
    with pytest.raises(CheckpointError, match="no model_config, model, config"):
        load_model(files["no_keys.pt"], require=CHECKPOINT_KEYS)  # ... evaluate's data does
    bad = {"model_config": {}, "model": {}, "config": {"dataset": "digits"}}
    torch.save(bad, tmp_path / "config.pt")
    with pytest.raises(CheckpointError, match="binarization"):
        load_model(tmp_path / "config.pt", require=CHECKPOINT_KEYS)
    with pytest.raises(CheckpointError, match="do not match its model_config"):
        load_model(tmp_path / "config.pt")
    assert issubclass(CheckpointError, ValueError)


def test_train_command_loads_the_dataset_once(monkeypatch, tmp_path, capsys):
    calls, seen = [], {}
    real = data_mod.load_dataset

    def counting(*args, **kwargs):
        calls.append(args)
        return real(*args, **kwargs)

    def fake_train(cfg, resume=False, progress=True, data=None, callback=None):
        seen["data"] = data
        return None, {"epoch": [1], "time": [0.0]}

    monkeypatch.setattr(data_mod, "load_dataset", counting)
    monkeypatch.setattr(train_mod, "train", fake_train)
    monkeypatch.setattr(evaluate_mod, "evaluate", lambda *a, **k: {"ll": -1.0, "se": 0.1})
    assert main(["train", "--quiet", "--out", str(tmp_path / "run")]) == 0
    assert len(calls) == 1 and seen["data"] is not None
    assert "test log-likelihood" in capsys.readouterr().out


def test_a_failed_run_is_one_line_with_status_1(monkeypatch, tmp_path, capsys):
    """A run that fails (here: refused degenerate weights) is one ``error:`` line, exit 1."""

    def refuse(*args, **kwargs):
        raise train_mod.DegenerateWeightsError("ucvae before training: weights are degenerate")

    monkeypatch.setattr(train_mod, "train", refuse)
    monkeypatch.chdir(tmp_path)
    res = run_main(["train", "--epochs", "1", "--out", str(tmp_path / "run")], capsys)
    lines = res.stderr.splitlines()
    assert res.returncode == 1 and len(lines) == 1 and "degenerate" in lines[0]
    assert "Traceback" not in res.stderr


def test_rejuvenate_reaches_the_training_config(monkeypatch, tmp_path, capsys):
    seen = {}

    def fake_train(cfg, *args, **kwargs):
        seen["objective"] = cfg.objective_config()
        raise ValueError("stop here")

    monkeypatch.setattr(train_mod, "train", fake_train)
    res = run_main(["train", "--rejuvenate", "0.5", "--out", str(tmp_path / "r")], capsys)
    assert res.returncode == 2 and seen["objective"].rejuvenate == 0.5


def test_default_decoder_budget_is_what_iwae_spends_on_the_images_loaded():
    """reproduce's default decoder budget counts the training images actually loaded, even
    when --subset asks for more than the dataset has."""
    from ucvae_lite import cli

    args = cli.build_parser().parse_args(
        ["reproduce", "--subset", "100000", "10", "10", "--epochs", "2", "--num-samples", "4"]
    )
    base = cli._train_config(args, "ucvae")
    assert cli._iwae_decoder_evals(base) == 2 * 1200 * 4  # digits has 1,200 training images
