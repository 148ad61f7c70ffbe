"""Training loop, checkpoints, resume, divergence handling and the command line (tiny runs)."""

import math
import warnings
from dataclasses import replace

import pytest
import torch

import ucvae_lite.training.config as config_mod
import ucvae_lite.training.train as train_mod
from ucvae_lite.cli import main
from ucvae_lite.studies.practical import degenerate_regime
from ucvae_lite.training.data import load_dataset
from ucvae_lite.training.evaluate import evaluate, load_model
from ucvae_lite.training.objectives import Objective, TruncationWarning
from ucvae_lite.training.train import (
    DegenerateWeightsError,
    TrainConfig,
    TrainingDivergedError,
    train,
)


@pytest.fixture(scope="module")
def data():
    return load_dataset("digits").subset(300, 50, 50)


def _cfg(tmp_path, **kw):
    base = dict(objective="ucvae", epochs=2, batch_size=50, val_samples=10, out=str(tmp_path))
    return TrainConfig(**{**base, **kw})


def test_checkpoint_round_trip(tmp_path, data):
    model, hist = train(_cfg(tmp_path), progress=False, data=data)
    assert hist["epoch"] == [1, 2] and len(hist["step_tau_mean"]) == 12
    assert all(t >= 2 for t in hist["tau_mean"]) and hist["truncated"] == [0, 0]
    loaded, ckpt = load_model(tmp_path / "checkpoint.pt")  # weights_only=True inside
    for k, v in model.state_dict().items():
        assert torch.equal(v, loaded.state_dict()[k])
    assert ckpt["config"]["objective"] == "ucvae" and ckpt["epoch"] == 1
    res = evaluate(loaded, data.test, 20)
    assert math.isfinite(res["ll"]) and res["se"] > 0 and res["ll"] < 0


def _same(xs: list, ys: list) -> bool:
    """Equal lists, NaN equal to NaN."""
    if len(xs) != len(ys):
        return False
    return all(x == y or (x != x and y != y) for x, y in zip(xs, ys, strict=True))


@pytest.mark.parametrize("objective", ["ucvae", "iwae", "msc", "sumo"])
def test_resume_continues_bit_for_bit(tmp_path, data, objective, capsys):
    """3 epochs in one go == 2 epochs, stop, resume to 3, bit for bit: the checkpoint holds the
    model, optimiser, both generators, history and best model (ucvae's degenerate-regime check
    draws from a generator of its own, so it cannot shift the training's random numbers)."""
    full, hist_full = train(_cfg(tmp_path / "a", epochs=3, objective=objective), False, False, data)
    train(_cfg(tmp_path / "b", epochs=2, objective=objective), progress=False, data=data)
    capsys.readouterr()
    resumed, hist = train(_cfg(tmp_path / "b", epochs=3, objective=objective), True, True, data)
    out = capsys.readouterr().out
    assert f"resuming {tmp_path / 'b' / 'checkpoint.pt'} after epoch 2\n" in out
    assert hist["epoch"] == [1, 2, 3] and f"{objective} epoch 3: train bound" in out
    for k, v in full.state_dict().items():  # the best-validation weights
        assert torch.equal(v, resumed.state_dict()[k]), k
    a = torch.load(tmp_path / "a" / "checkpoint.pt", weights_only=True)
    b = torch.load(tmp_path / "b" / "checkpoint.pt", weights_only=True)
    for k, v in a["model"].items():  # the last epoch's weights
        assert torch.equal(v, b["model"][k]), k
    assert torch.equal(a["rng_model"], b["rng_model"]) and a["best_epoch"] == b["best_epoch"]
    assert hist.keys() == hist_full.keys()
    for k in hist_full.keys() - {"time", "train_time"}:  # NaN (τ of iwae) equals NaN
        assert _same(hist[k], hist_full[k]), k
    assert len(hist["time"]) == 3 and hist["time"][2] > hist["time"][1]  # elapsed carried on
    if objective == "ucvae":
        assert len(hist["check_median_ess"]) == 4  # before training + after each epoch


def test_nan_loss_names_the_step_and_keeps_the_checkpoint(tmp_path, data, monkeypatch):
    real = train_mod.objective("elbo")
    calls = {"n": 0}

    def flaky(model, x, cfg, generator, context=None):
        calls["n"] += 1
        step = real(model, x, cfg, generator, context)
        if calls["n"] == 9:  # epoch 2, step 3 (6 steps per epoch)
            step.loss = step.loss * float("nan")
        return step

    monkeypatch.setattr(train_mod, "objective", lambda name: Objective(name, flaky))
    with pytest.raises(TrainingDivergedError, match=r"epoch 2, step 3 of 6: the loss is nan"):
        train(_cfg(tmp_path, epochs=3, objective="elbo"), progress=False, data=data)
    ckpt = torch.load(tmp_path / "checkpoint.pt", weights_only=True)
    assert ckpt["epoch"] == 0  # the last finished epoch (epoch 1) is kept
    assert all(torch.isfinite(v).all() for v in ckpt["model"].values())


def test_one_degenerate_rule_whose_ess_threshold_train_sets():
    # practical.degenerate_regime is the only rule; train passes cfg.degenerate_ess as min_ess.
    assert degenerate_regime(2.0, 10) is None  # DEGENERATE_ESS = 1.5
    msg = degenerate_regime(2.0, 10, min_ess=3.0)
    assert msg is not None and "below 3 particles" in msg and "notebook 06" in msg
    assert "k̂" not in msg and ".md" not in msg
    assert degenerate_regime(2.0, 10, 0.9, min_ess=1.0) is not None  # k̂ alone suffices


def test_degenerate_weights_warn_exactly_once(tmp_path, data, capsys):
    # A threshold above any possible ESS (S = 10) makes all three checks fire: one
    # RuntimeWarning for the run, every check in the history, and no copy of it on stdout/stderr.
    cfg = _cfg(tmp_path, degenerate_ess=11.0)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        _, hist = train(cfg, progress=True, data=data)
    assert hist["degenerate"] == [True, True, True] and len(hist["check_median_ess"]) == 3
    runtime = [str(w.message) for w in caught if w.category is RuntimeWarning]
    assert len(runtime) == 1 and runtime[0].startswith("ucvae before training: importance")
    out, err = capsys.readouterr()
    assert "ucvae epoch 2: train bound" in out  # the per-epoch lines are there...
    assert "degenerate" not in out + err and "ESS" not in out + err  # ...the warning is not


def test_degenerate_raise_refuses_after_saving_that_epoch(tmp_path, data, monkeypatch):
    healthy, degenerate = (5.0, 0.2), (1.0, 0.9)  # (median ESS, median k̂)
    verdicts = iter([healthy, degenerate])
    monkeypatch.setattr(train_mod, "median_weight_diagnostics", lambda *a, **k: next(verdicts))
    with pytest.raises(DegenerateWeightsError, match="ucvae after epoch 1: .*Refusing"):
        train(_cfg(tmp_path, epochs=3, degenerate="raise"), progress=False, data=data)
    ckpt = torch.load(tmp_path / "checkpoint.pt", weights_only=True)
    assert ckpt["epoch"] == 0 and ckpt["history"]["degenerate"] == [False, True]


def test_early_stopping_keeps_the_best_epoch(tmp_path, data, monkeypatch, capsys):
    scores = iter([-1.0, -2.0, -1.5, -3.0])  # validation: epoch 1 stays the best
    monkeypatch.setattr(train_mod, "validate", lambda *a: (next(scores), 0.1))
    model, hist = train(_cfg(tmp_path, objective="elbo", epochs=10, patience=2), data=data)
    assert hist["epoch"] == [1, 2, 3] and hist["val_ll"] == [-1.0, -2.0, -1.5]
    assert "stopping after epoch 3: no validation improvement" in capsys.readouterr().out
    ckpt = torch.load(tmp_path / "checkpoint.pt", weights_only=True)
    assert ckpt["best_epoch"] == 1
    for k, v in ckpt["best_model"].items():
        assert torch.equal(v, model.state_dict()[k])
    _, hist = train(_cfg(tmp_path / "t", objective="elbo", time_limit=1e-9), data=data)
    assert hist["epoch"] == [1]
    assert "stopping after epoch 1: time limit reached" in capsys.readouterr().out


def test_quiet_run_prints_nothing_and_calls_back_every_epoch(tmp_path, data, capsys):
    seen = []
    train(
        _cfg(tmp_path, objective="elbo"),
        progress=False,
        data=data,
        callback=lambda epoch, model, hist: seen.append((epoch, list(hist["epoch"]))),
    )
    assert seen == [(1, [1]), (2, [1, 2])]
    assert capsys.readouterr() == ("", "")


def test_training_checks_no_setting_again(tmp_path, data, monkeypatch):
    """The config was checked when it was made; the trainer hands it to the objective as is."""
    cfg = _cfg(tmp_path, epochs=1, num_samples=3)
    checked = []
    monkeypatch.setattr(config_mod, "check", checked.append)
    train(cfg, progress=False, data=data)
    assert checked == []


class Recorder(train_mod.Callback):
    """Records the events in the order the trainer fires them; stops after epoch 2."""

    def __init__(self):
        self.events = []

    def on_train_start(self, trainer):
        self.events.append("on_train_start")

    def on_epoch_start(self, trainer):
        self.events.append("on_epoch_start")

    def on_step_end(self, trainer):
        self.events.append("on_step_end")

    def on_epoch_end(self, trainer):
        self.events.append("on_epoch_end")
        if trainer.epoch == 2:
            trainer.stop_reason = "enough"

    def on_train_end(self, trainer):
        self.events.append("on_train_end")


def test_trainer_fires_events_in_order_and_stops_when_asked(tmp_path, data):
    cfg = _cfg(tmp_path, objective="elbo", epochs=5)
    rec = Recorder()
    train_mod.Trainer(cfg, train_mod.build_model(cfg, data.dim), data, [rec]).fit()
    epoch = ["on_epoch_start"] + ["on_step_end"] * 6 + ["on_epoch_end"]  # 300 images / 50
    assert rec.events == ["on_train_start", *epoch, *epoch, "on_train_end"]


def test_cli_train_evaluate_reproduce(tmp_path, capsys):
    out = tmp_path / "run"
    main(
        [
            "train",
            "--objective",
            "ucvae",
            "--epochs",
            "1",
            "--out",
            str(out),
            "--quiet",
            "--eval-samples",
            "10",
            "--val-samples",
            "5",
            "--hidden",
            "16",
            "--latent-dim",
            "2",
        ]
    )
    assert "test log-likelihood (IWAE-10)" in capsys.readouterr().out
    main(["evaluate", str(out / "checkpoint.pt"), "--eval-samples", "10"])
    assert "test log-likelihood (IWAE-10, 397 images)" in capsys.readouterr().out
    figs = tmp_path / "figs"
    main(
        [
            "reproduce",
            "--epochs",
            "1",
            "--seeds",
            "0",
            "--out",
            str(tmp_path / "rep"),
            "--figures",
            str(figs),
            "--quiet",
            "--eval-samples",
            "10",
            "--hidden",
            "16",
        ]
    )
    table = (figs / "results_digits.md").read_text()
    for name in ("elbo", "iwae", "ucvae"):
        assert f"| {name} |" in table
    for f in ("results_digits.csv", "learning_curves_digits.png", "meeting_times_digits.png"):
        assert (figs / f).stat().st_size > 0


def test_cli_help_explains_every_flag(capsys):
    for cmd in ("train", "evaluate", "reproduce"):
        with pytest.raises(SystemExit):
            main([cmd, "--help"])
        text = capsys.readouterr().out
        assert "--resume" in text or cmd == "evaluate"
        assert text.count("--") > 5


def test_msc_keeps_its_chains_in_the_checkpoint_and_refuses_other_data(tmp_path, data):
    cfg = _cfg(tmp_path, epochs=1, objective="msc")
    train(cfg, progress=False, data=data)
    ckpt = torch.load(tmp_path / "checkpoint.pt", weights_only=True)
    memory = ckpt["memory"]
    assert memory["reference"].shape[0] == len(data.train) and bool((memory["visits"] == 1).all())
    other = data.subset(200, 50, 50)
    with pytest.raises(ValueError, match="same --dataset"):
        train(_cfg(tmp_path, epochs=2, objective="msc"), True, False, other)
    with pytest.raises(ValueError, match="objective"):
        train(_cfg(tmp_path, epochs=2, objective="iwae"), True, False, data)


def test_time_limit_counts_optimisation_steps_on_the_chosen_clock(tmp_path, data):
    _, hist = train(_cfg(tmp_path, epochs=5, objective="elbo", time_limit=1e-9, clock="process"),
                    progress=False, data=data)  # fmt: skip
    assert hist["epoch"] == [1] and 0 < hist["train_time"][0] <= hist["time"][0]
    with pytest.raises(ValueError, match="clock"):
        _cfg(tmp_path, clock="sundial")


@pytest.mark.parametrize("objective", ["iwae", "ucvae", "sumo"])
def test_decoder_limit_counts_what_the_decoder_saw(tmp_path, data, objective, monkeypatch):
    """The decoder budget sums each step's decoder evaluations (a forward hook on the decoder
    agrees); IWAE spends exactly images × S per epoch; the count survives a resume."""
    seen = [0]

    def count(module, inp, out):
        seen[0] += inp[0].numel() // inp[0].shape[-1]

    original = train_mod.Trainer.train_step

    def counted(self, index, x):
        hook = self.model.decoder.register_forward_hook(count)
        try:
            return original(self, index, x)
        finally:
            hook.remove()

    monkeypatch.setattr(train_mod.Trainer, "train_step", counted)
    cfg = _cfg(tmp_path, epochs=5, objective=objective, decoder_limit=1.0, num_samples=4)
    _, hist = train(cfg, progress=False, data=data)
    assert hist["epoch"] == [1]  # the budget binds after the first epoch
    assert hist["decoder_evals"] == [pytest.approx(seen[0])]
    if objective == "iwae":
        assert seen[0] == len(data.train) * 4
    first = seen[0]
    _, hist = train(replace(cfg, decoder_limit=None, epochs=2), True, False, data)
    assert hist["decoder_evals"] == [pytest.approx(first), pytest.approx(seen[0])]
    with pytest.raises(ValueError, match="decoder_limit"):
        _cfg(tmp_path, decoder_limit=0)


def test_decoder_budget_of_iwae_epochs_gives_iwae_exactly_those_epochs(tmp_path, data):
    """A decoder budget of exactly what IWAE-S spends in E epochs (reproduce's default) stops
    IWAE after epoch E, not E + 1: the budget is reached when the count equals it."""
    S, epochs = 4, 2
    budget = float(epochs * len(data.train) * S)
    cfg = _cfg(tmp_path, epochs=5, objective="iwae", decoder_limit=budget, num_samples=S)
    _, hist = train(cfg, progress=False, data=data)
    assert hist["epoch"] == [1, 2] and hist["decoder_evals"][-1] == budget


def test_only_the_truncation_warning_is_silenced(tmp_path, data, monkeypatch):
    """A step's truncation warning is counted, not printed; any other warning passes."""
    elbo = train_mod.objective("elbo")

    def noisy(*args):
        message = "3 of 50 coupled chains hit max_steps=2 and were truncated"
        warnings.warn(message, TruncationWarning, stacklevel=2)
        warnings.warn("something else went wrong", RuntimeWarning, stacklevel=2)
        return elbo(*args)

    monkeypatch.setattr(train_mod, "objective", lambda name: Objective(name, noisy))
    with pytest.warns(RuntimeWarning) as record:
        train(_cfg(tmp_path, epochs=1, objective="elbo"), progress=False, data=data)
    messages = [str(w.message) for w in record]
    assert any("something else" in m for m in messages)
    assert not any("max_steps" in m for m in messages)


def test_a_step_that_fails_mid_run_is_a_failed_run_not_bad_input(tmp_path, data, monkeypatch):
    """NaN weights appearing during training raise TrainingDivergedError with the advice (the
    CLI's exit 1), not the ValueError that bad settings raise (exit 2)."""
    elbo, calls = train_mod.objective("elbo"), [0]

    def breaks(*args):
        calls[0] += 1
        if calls[0] == 3:
            raise ValueError("log-weights returned NaN for 1 of 500 particles.")
        return elbo(*args)

    monkeypatch.setattr(train_mod, "objective", lambda name: Objective(name, breaks))
    with pytest.raises(
        TrainingDivergedError, match=r"3 of 6: the step failed: log.*finished; try a lower --lr"
    ):
        train(_cfg(tmp_path, epochs=1, objective="elbo"), progress=False, data=data)
    calls[0] = -6  # now the 9th step fails: epoch 2, with epoch 1's checkpoint to resume from
    with pytest.raises(TrainingDivergedError, match=r"epoch 2, .*epoch 1 is kept .*--resume"):
        train(_cfg(tmp_path / "b", epochs=2, objective="elbo"), progress=False, data=data)


def test_resume_keeps_a_best_epoch_from_before_the_stop(tmp_path, data, monkeypatch):
    """Validation gets worse after epoch 1: a run resumed after epoch 2 must still return (and
    save) epoch 1's weights as the best model."""
    scores = iter([-1.0, -2.0, -3.0])
    monkeypatch.setattr(train_mod, "validate", lambda *a: (next(scores), 0.1))
    train(_cfg(tmp_path, epochs=2, objective="elbo"), progress=False, data=data)
    best = torch.load(tmp_path / "checkpoint.pt", weights_only=True)["best_model"]
    model, hist = train(_cfg(tmp_path, epochs=3, objective="elbo"), True, False, data)
    assert hist["val_ll"] == [-1.0, -2.0, -3.0]
    ckpt = torch.load(tmp_path / "checkpoint.pt", weights_only=True)
    assert ckpt["best_epoch"] == 1
    for k, v in best.items():
        assert torch.equal(v, model.state_dict()[k]) and torch.equal(v, ckpt["best_model"][k]), k
