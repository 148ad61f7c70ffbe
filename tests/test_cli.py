"""The command line answers bad input with one line and exit status 2, before any training;
a run that fails (NaN weights mid-training) with one line, the advice and exit status 1.

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

import ucvae_lite.training.config as config_mod
import ucvae_lite.training.data as data_mod
import ucvae_lite.training.evaluate as evaluate_mod
import ucvae_lite.training.train as train_mod
from ucvae_lite import cli
from ucvae_lite.cli import main
from ucvae_lite.training.config import OBJECTIVES, ConfigError, TrainConfig, settings
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
    "S < 2": (["train", "--num-samples", "1"], ["--num-samples", "an integer >= 2", "got 1"]),
    "epochs 0": (["train", "--epochs", "0"], ["--epochs"]),
    "batch size 0": (["train", "--batch-size", "0"], ["--batch-size"]),
    "negative lr": (["train", "--lr", "-1"], ["--lr"]),
    "eval samples 0": (["train", "--eval-samples", "0"], ["--eval-samples"]),
    "val samples 0": (["train", "--val-samples", "0"], ["--val-samples"]),
    "max steps 0": (["reproduce", "--max-steps", "0"], ["--max-steps"]),
    "max steps < m": (
        ["train", "--max-steps", "1"],
        ["--max-steps 1", "--m 2 (", "to 2"],
    ),
    "val samples 1": (["train", "--val-samples", "1"], ["--val-samples", ">= 2"]),
    "sumo ratio 1": (["train", "--sumo-ratio", "1"], ["--sumo-ratio", "(0, 1)"]),
    "no such activation": (["train", "--activation", "gelu"], ["--activation", "tanh"]),
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
        raise ConfigError("stop here")

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


# --- exit status 1: a run that failed; 2: bad input found while running -------------------------
def test_nan_weights_mid_training_exit_1_with_advice_that_works(tmp_path, monkeypatch, capsys):
    """ucvae diverges in epoch 2 (``--lr 1e6``): NaN log-weights in a step are a failed run,
    exit status 1 from ``python -m ucvae_lite``, one line naming the epoch and saying what to
    do; doing it (a lower --lr, then --resume: the resumed run takes the new lr) finishes."""
    monkeypatch.setenv("UCVAE_FAST", "1")
    flags = ["train", "--activation", "relu", "--quiet", "--eval-samples", "10"]
    flags += ["--out", str(tmp_path / "run")]
    assert run_main([*flags, "--epochs", "1"], capsys).returncode == 0
    res = run_cli([*flags, "--epochs", "2", "--resume", "--lr", "1e6"], tmp_path)
    lines = res.stderr.splitlines()
    assert res.returncode == 1 and len(lines) == 1 and "Traceback" not in res.stderr, res.stderr
    for needle in ("error: ucvae at epoch 2", "log-weights returned NaN", "checkpoint of epoch 1"):
        assert needle in lines[0], lines[0]
    assert lines[0].endswith("try a lower --lr, then --resume.")
    res = run_main([*flags, "--epochs", "2", "--resume"], capsys)
    assert res.returncode == 0 and "ucvae on digits: 2 epochs" in res.stdout


def test_resuming_another_objective_is_bad_input(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("UCVAE_FAST", "1")
    flags = ["train", "--quiet", "--eval-samples", "10", "--epochs", "1"]
    flags += ["--out", str(tmp_path / "run")]
    assert run_main([*flags, "--objective", "iwae"], capsys).returncode == 0
    res = run_main([*flags, "--objective", "elbo", "--resume"], capsys)
    assert_one_line_error(res, "cannot resume", "objective='iwae'", "another --out")


def test_the_flags_are_checked_once(monkeypatch, tmp_path, capsys):
    """One TrainConfig is made, and checked once, per command; the trainer checks nothing."""
    checked = []
    real = config_mod.check
    monkeypatch.setattr(config_mod, "check", lambda c: checked.append(type(c)) or real(c))
    monkeypatch.setattr(train_mod, "train", lambda cfg, **kw: (None, {"epoch": [1], "time": [0]}))
    monkeypatch.setattr(evaluate_mod, "evaluate", lambda *a, **k: {"ll": -1.0, "se": 0.1})
    assert main(["train", "--k", "0", "--m", "0", "--out", str(tmp_path / "r")]) == 0
    assert checked == [TrainConfig]


def _flags(command: str) -> dict:
    """The options of ``command`` by destination."""
    sub = next(a for a in cli.build_parser()._actions if a.dest == "command")
    return {a.dest: a for a in sub.choices[command]._actions if a.option_strings}


RUN_FLAGS = {"help", "debug", "eval_samples", "resume", "fast", "quiet"}
REPRODUCE_FLAGS = {"seeds", "objectives", "budgets", "decoder_budget", "time_budget", "jobs"}


@pytest.mark.parametrize("command", ["train", "reproduce"])
def test_every_training_flag_is_a_setting_with_its_default_and_choices(command):
    """The training flags are TrainConfig's fields: names, defaults (but those that fast mode
    or the dataset fill in, left None) and choices; nothing else but the run flags."""
    flags = _flags(command)
    fields = {f.name: (f, spec) for f, spec in settings(TrainConfig)}
    if command == "reproduce":
        del fields["objective"]  # reproduce trains each of --objectives
    for name, (f, spec) in fields.items():
        action = flags[name]
        assert action.option_strings[0] == "--" + name.replace("_", "-"), name
        assert action.default == (None if name in cli._FAST else f.default), name
        assert action.choices == (spec.rule.choices if spec.rule else None), name
        assert action.help.startswith(spec.help), name
    extra = REPRODUCE_FLAGS | {"figures"} if command == "reproduce" else set()
    assert set(flags) == set(fields) | RUN_FLAGS | extra


def test_help_names_all_five_objectives(capsys):
    with pytest.raises(SystemExit):
        main(["--help"])
    top = " ".join(capsys.readouterr().out.split())
    assert "train one VAE with one objective: elbo, iwae, ucvae, sumo or msc" in top
    help_text = _flags("train")["objective"].help
    assert all(f"{name}:" in help_text for name in OBJECTIVES) and len(OBJECTIVES) == 5
