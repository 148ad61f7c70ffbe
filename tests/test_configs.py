"""ObjectiveConfig and TrainConfig reject bad settings with a message that says what to change."""

import pytest

from ucvae_lite.models.vae import DEFAULT_ARCH
from ucvae_lite.training.objectives import DEFAULT_CONFIG, UCVAE_DEFAULTS, ObjectiveConfig
from ucvae_lite.training.train import TrainConfig


def test_objective_config_defaults_are_the_studied_ucvae_defaults():
    assert UCVAE_DEFAULTS == ObjectiveConfig() == DEFAULT_CONFIG
    assert (UCVAE_DEFAULTS.num_samples, UCVAE_DEFAULTS.k, UCVAE_DEFAULTS.m) == (10, 1, 2)
    assert not hasattr(UCVAE_DEFAULTS, "latent_dim")  # a model setting (vae.DEFAULT_ARCH)


@pytest.mark.parametrize(
    "changes,message",
    [
        ({"num_samples": 1}, r"num_samples \(S\) must be an integer >= 2"),
        ({"num_samples": 2.0}, r"num_samples \(S\) must be an integer >= 2"),
        ({"k": -1}, r"k must be an integer >= 0"),
        ({"k": 3}, r"m must be an integer >= k = 3"),  # m = 2 by default
        ({"k": 0, "m": 1.5}, r"m must be an integer >= k = 0"),
        ({"m": 5, "max_steps": 4}, r"max_steps must be an integer >= max\(1, m\) = 5"),
        ({"k": 0, "m": 0, "max_steps": 0}, r"max_steps must be an integer >= max\(1, m\) = 1"),
        ({"on_timeout": "clip"}, r"on_timeout must be one of \('truncate', 'raise'\)"),
        ({"encoder": "exclusive"}, r"encoder must be one of"),
        ({"eps": 1.0}, r"eps must be in \[0, 1\)"),
    ],
)
def test_objective_config_rejects_bad_settings(changes, message):
    with pytest.raises(ValueError, match=message):
        ObjectiveConfig(**changes)


def test_objective_config_accepts_the_edge_cases():
    ObjectiveConfig(num_samples=2, k=0, m=0, max_steps=1, on_timeout="raise")
    ObjectiveConfig(k=4, m=4, max_steps=4)


@pytest.mark.parametrize(
    "changes,message",
    [
        ({"dataset": "cifar"}, r"dataset must be one of"),
        (
            {"objective": "vae"},
            r"objective must be one of \('elbo', 'iwae', 'ucvae', 'sumo', 'msc'\)",
        ),
        ({"degenerate": "maybe"}, r"degenerate must be one of \('warn', 'raise', 'ignore'\)"),
        ({"degenerate_ess": 0.0}, r"degenerate_ess must be > 0"),
        ({"epochs": 0}, r"epochs must be an integer >= 1, got 0"),
        ({"batch_size": 2.5}, r"batch_size must be an integer >= 1, got 2.5"),
        ({"lr": 0.0}, r"lr must be > 0"),
        ({"val_samples": 1}, r"val_samples must be an integer >= 2, got 1"),
        ({"patience": 0}, r"patience must be None \(no early stopping\) or an integer >= 1"),
        ({"time_limit": -1.0}, r"time_limit must be None \(no limit\) or > 0 seconds"),
        ({"latent_dim": 0}, r"latent_dim must be None .* or an integer >= 1"),
        ({"subset": [100, 0, 10]}, r"subset must be None .* three sizes \[train, valid, test\]"),
        ({"subset": [100, 10]}, r"subset must be None .* three sizes \[train, valid, test\]"),
        ({"k": 3}, r"m must be an integer >= k = 3"),  # the objective's settings too
        ({"num_samples": 1}, r"num_samples \(S\) must be an integer >= 2"),
    ],
)
def test_train_config_rejects_bad_settings(changes, message):
    with pytest.raises(ValueError, match=message):
        TrainConfig(**changes)


def test_train_config_resolves_defaults():
    assert TrainConfig().objective_config() == UCVAE_DEFAULTS
    assert TrainConfig(num_samples=5, k=0).objective_config() == ObjectiveConfig(5, k=0)
    assert TrainConfig().resolved_latent_dim() == DEFAULT_ARCH["digits"]["latent_dim"] == 5
    assert TrainConfig(dataset="mnist").resolved_latent_dim() == 50
    assert TrainConfig(dataset="mnist", latent_dim=10).resolved_latent_dim() == 10
    TrainConfig(patience=1, time_limit=0.5, subset=[1, 1, 1], val_samples=2)  # edge cases pass
