"""Training loop, checkpoints, resume, divergence handling and the command line (tiny runs)."""

import math

import pytest
import torch

import ucvae_lite.train as train_mod
from ucvae_lite.cli import main
from ucvae_lite.data import load_dataset
from ucvae_lite.evaluate import evaluate, load_model
from ucvae_lite.train import TrainConfig, TrainingDivergedError, train


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


def test_resume_continues_exactly(tmp_path, data):
    """3 epochs in one go == 2 epochs, stop, --resume to 3 (RNG states are checkpointed)."""
    full, _ = train(_cfg(tmp_path / "a", epochs=3, objective="iwae"), progress=False, data=data)
    train(_cfg(tmp_path / "b", epochs=2, objective="iwae"), progress=False, data=data)
    resumed, hist = train(
        _cfg(tmp_path / "b", epochs=3, objective="iwae"), resume=True, progress=False, data=data
    )
    assert hist["epoch"] == [1, 2, 3]
    for k, v in full.state_dict().items():
        torch.testing.assert_close(v, resumed.state_dict()[k])


def test_nan_loss_names_the_step_and_keeps_the_checkpoint(tmp_path, data, monkeypatch):
    real = train_mod.objective("elbo")
    calls = {"n": 0}

    def flaky(model, x, cfg, generator):
        calls["n"] += 1
        step = real(model, x, cfg, generator)
        if calls["n"] == 9:  # epoch 2, step 3 (6 steps per epoch)
            step.loss = step.loss * float("nan")
        return step

    monkeypatch.setattr(train_mod, "objective", lambda name: flaky)
    with pytest.raises(TrainingDivergedError, match=r"epoch 2, step 3 of 6"):
        train(_cfg(tmp_path, epochs=3, objective="elbo"), progress=False, data=data)
    ckpt = torch.load(tmp_path / "checkpoint.pt", weights_only=True)
    assert ckpt["epoch"] == 0  # the last finished epoch (epoch 1) is kept
    assert all(torch.isfinite(v).all() for v in ckpt["model"].values())


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
