"""ObjectiveConfig and TrainConfig reject bad settings with a message that says what to change."""

import pytest

from ucvae_lite.objectives import DEFAULT_CONFIG, UCVAE_DEFAULTS, ObjectiveConfig


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
