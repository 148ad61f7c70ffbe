"""The shipped pretrained digits models: small, loadable with weights_only=True, scoring as
recorded, declared as package data, and retrained deterministically by the documented command."""

import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
import torch

from ucvae_lite.lab import pretrained
from ucvae_lite.training.data import load_dataset
from ucvae_lite.training.evaluate import evaluate

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def digits():
    return load_dataset("digits")


def test_checkpoints_are_small_and_load_with_weights_only():
    sizes = [pretrained.path(n).stat().st_size for n in pretrained.NAMES]
    assert max(sizes) < 200_000 and sum(sizes) < 500_000  # a few hundred KB in all
    for name in pretrained.NAMES:
        raw = torch.load(pretrained.path(name), map_location="cpu", weights_only=True)
        model, ckpt = pretrained.load(name)
        assert not model.training and ckpt["config"]["objective"] == raw["config"]["objective"]
        assert ckpt["config"]["epochs"] == pretrained.EPOCHS and ckpt["config"]["seed"] == 0
        assert model.latent_dim == (2 if name == "iwae_2d" else 5)
        # the file is what its hash says (weights and deterministic history)
        assert pretrained.weights_hash(ckpt["model"], ckpt["history"]) == ckpt["weights_sha256"]
        assert len(ckpt["history"]["val_ll"]) == pretrained.EPOCHS
    with pytest.raises(ValueError, match="choose one of"):
        pretrained.path("vae")


def test_checkpoints_score_as_recorded(digits):
    for name in pretrained.NAMES:
        model, ckpt = pretrained.load(name)
        # the cheap score is deterministic: same seed, same images, same number
        assert pretrained.recorded_score(model, digits) == pytest.approx(
            ckpt["check"]["ll"], abs=1e-3
        )
        # the recorded IWAE-5000 test log-likelihood, against a fresh IWAE-500 estimate: the
        # bound grows with S (by a few hundredths of a nat here) and other draws move it little
        fresh = evaluate(model, digits.test, 500, seed=1)["ll"]
        assert -0.02 < ckpt["test"]["ll"] - fresh < 0.1, (name, ckpt["test"]["ll"], fresh)
        assert ckpt["test"]["num_samples"] == pretrained.EVAL_SAMPLES


def test_trained_models_are_far_better_than_untrained(digits):
    torch.manual_seed(0)
    untrained = pretrained.config("iwae")  # the same initialisation as every shipped model
    from ucvae_lite.training.train import build_model

    base = evaluate(build_model(untrained, digits.dim), digits.test, 100)["ll"]
    for name in pretrained.NAMES:
        assert pretrained.load(name)[1]["test"]["ll"] > base + 10


def test_retraining_is_deterministic(tmp_path):
    """The command's code path, on a tiny setting, twice: identical weights hashes."""
    hashes = []
    for run in ("a", "b"):
        pretrained.retrain(("ucvae", "iwae_2d"), tmp_path / run, 2, [100, 40, 100], 20, False)
        hashes.append([pretrained.load(n, tmp_path / run)[1]["weights_sha256"]
                       for n in ("ucvae", "iwae_2d")])  # fmt: skip
    assert hashes[0] == hashes[1]
    other = pretrained.retrain(("iwae_2d",), tmp_path / "c", 3, [100, 40, 100], 20, False)
    assert pretrained.load("iwae_2d", other["iwae_2d"].parent)[1]["weights_sha256"] != hashes[0][1]


def test_command_line(tmp_path):
    run = lambda *a: subprocess.run(  # noqa: E731
        [sys.executable, "-m", "ucvae_lite.lab.pretrained", *a],
        capture_output=True, text=True, cwd=ROOT, timeout=120,
    )  # fmt: skip
    out = run()
    assert out.returncode == 0 and out.stdout.count("KB") == len(pretrained.NAMES)
    bad = run("--retrain", "vae")
    assert bad.returncode == 2 and "choose from" in bad.stderr


def test_checkpoints_are_package_data():
    meta = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert "*.pt" in meta["tool"]["setuptools"]["package-data"]["ucvae_lite.lab.pretrained"]
    assert (ROOT / "ucvae_lite" / "lab" / "pretrained" / "__init__.py").exists()
