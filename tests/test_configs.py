"""ObjectiveConfig and TrainConfig: one definition of every setting (default, help, rule),
checked once when a config is made, rejecting bad values with a message that says what to
change."""

from dataclasses import fields, replace

import pytest

import ucvae_lite.training.config as config_mod
from ucvae_lite.models.vae import DEFAULT_ARCH
from ucvae_lite.training.config import ConfigError, settings
from ucvae_lite.training.objectives import DEFAULT_CONFIG, UCVAE_DEFAULTS, ObjectiveConfig
from ucvae_lite.training.train import TrainConfig


def test_objective_config_defaults_are_the_studied_ucvae_defaults():
    assert UCVAE_DEFAULTS is DEFAULT_CONFIG == ObjectiveConfig()  # one object, two names
    assert (DEFAULT_CONFIG.num_samples, DEFAULT_CONFIG.k, DEFAULT_CONFIG.m) == (10, 1, 2)
    assert DEFAULT_CONFIG.max_steps == TrainConfig().max_steps == 1000
    assert not hasattr(DEFAULT_CONFIG, "latent_dim")  # a model setting (vae.DEFAULT_ARCH)


def test_every_setting_is_declared_once_with_help_and_a_default():
    """TrainConfig inherits the objective's fields (the same Field objects): nothing is
    redeclared, and every field is a setting with a help line."""
    objective_fields = {f.name: f for f in fields(ObjectiveConfig)}
    for f in fields(TrainConfig):
        if f.name in objective_fields:
            assert f is objective_fields[f.name], f.name
    assert [f.name for f, _ in settings(TrainConfig)] == [f.name for f in fields(TrainConfig)]
    assert all(spec.help for _, spec in settings(TrainConfig))


def test_checked_once_when_made_never_again(monkeypatch):
    calls = []
    real = config_mod.check
    monkeypatch.setattr(config_mod, "check", lambda c: calls.append(c) or real(c))
    cfg = TrainConfig(k=0, m=0)
    assert calls == [cfg]
    replace(cfg, seed=1)  # a new config: checked once in turn
    assert len(calls) == 2 and calls[1].seed == 1


def test_messages_name_settings_as_the_reader_calls_them():
    """The library names fields; the command line re-spells the same error with its flags."""

    class Flags(config_mod.Spelling):
        def name(self, setting):
            return "--" + setting.replace("_", "-")

        def value(self, setting, value):
            return f"{self.name(setting)} {value}"

    with pytest.raises(ConfigError) as err:
        TrainConfig(max_steps=1, sumo_cutoff=5)
    assert str(err.value).startswith("max_steps = 1 is below m = 2: ")
    assert err.value.spelled(Flags()).startswith("--max-steps 1 is below --m 2: ")
    with pytest.raises(ConfigError) as err:
        TrainConfig(sumo_cutoff=0)
    assert err.value.spelled(Flags()) == "--sumo-cutoff must be an integer >= 1, got 0"


@pytest.mark.parametrize(
    "changes,message",
    [
        ({"num_samples": 1}, r"num_samples must be an integer >= 2, got 1"),
        ({"num_samples": 2.0}, r"num_samples must be an integer >= 2, got 2.0"),
        ({"k": -1}, r"k must be an integer >= 0"),
        ({"k": 3}, r"m = 2 is below k = 3: .* set m to 3 or more, or k lower"),  # m = 2: default
        ({"k": 0, "m": 1.5}, r"m must be an integer >= 0, got 1.5"),
        ({"m": 5, "max_steps": 4}, r"max_steps = 4 is below m = 5: .* set max_steps to 5 or more"),
        ({"k": 0, "m": 0, "max_steps": 0}, r"max_steps must be an integer >= 1, got 0"),
        ({"sumo_ratio": 1.0}, r"sumo_ratio must be in \(0, 1\), got 1.0"),
        ({"correction_prob": 0.0}, r"correction_prob must be in \(0, 1\]"),
        ({"rejuvenate": float("inf")}, r"rejuvenate must be None \(no MH move\) or a positive"),
        ({"on_timeout": "clip"}, r"on_timeout must be one of \('truncate', 'raise'\)"),
        ({"encoder": "exclusive"}, r"encoder must be one of"),
        ({"eps": 1.0}, r"eps must be in \[0, 1\)"),
    ],
)
def test_objective_config_rejects_bad_settings(changes, message):
    with pytest.raises(ConfigError, match=message):
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
        ({"k": 3}, r"m = 2 is below k = 3"),  # the objective's settings too
        ({"num_samples": 1}, r"num_samples must be an integer >= 2"),
        ({"flow_layers": 2, "covariance": "full"}, r"flow_layers = 2 builds a flow on a diag"),
        ({"activation": "gelu"}, r"activation must be one of \('tanh', 'relu', 'softplus'\)"),
        ({"hidden": [64, 0]}, r"hidden must be None \(the dataset's default\) or layer sizes"),
        ({"lr": float("nan")}, r"lr must be > 0 and finite, got nan"),
    ],
)
def test_train_config_rejects_bad_settings(changes, message):
    with pytest.raises(ConfigError, match=message):
        TrainConfig(**changes)


def test_train_config_resolves_defaults():
    assert TrainConfig().objective_config() == UCVAE_DEFAULTS
    assert TrainConfig(num_samples=5, k=0).objective_config() == ObjectiveConfig(5, k=0)
    assert TrainConfig().resolved_latent_dim() == DEFAULT_ARCH["digits"]["latent_dim"] == 5
    assert TrainConfig(dataset="mnist").resolved_latent_dim() == 50
    assert TrainConfig(dataset="mnist", latent_dim=10).resolved_latent_dim() == 10
    TrainConfig(patience=1, time_limit=0.5, subset=[1, 1, 1], val_samples=2)  # edge cases pass
