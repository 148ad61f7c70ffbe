"""ucvae_lite: unbiased VAE log-likelihood gradients from coupled Markov chains.

Ruiz, Titsias, Cemgil & Doucet (UAI 2021): coupled conditional importance sampling chains on
the IWAE-augmented latent space give unbiased estimates of posterior expectations, hence of
∇_θ log p_θ(x), where IWAE's are biased.

The package in layers; each imports only the layers above it in this list:

* ``core``: the method (targets, ``iwae``, ``kernels``, the ``coupled`` driver, ``hkm``,
  ``estimate``, ``surrogate``; ``machinery`` only makes it fast);
* ``models``: the VAE, its distributions and flows, the exact linear-Gaussian model;
* ``peers``: SUMO and MSC;
* ``training``: ``objectives`` by name, the ``train`` loop, ``data``, ``evaluate``;
* ``studies``: the measurements behind notebooks 06–07 and the README;
* ``lab``: what the notebooks use (``teaching``, ``checks``, ``plots``, ``widgets``,
  ``pretrained``).

Reading order, one gradient step from data to optimiser: ``training.train``
(``Trainer.train_step``) → ``training.objectives.ucvae`` → ``core.coupled.coupled_estimate``
→ ``core.kernels`` (the CIS step and its coupling) and ``core.hkm.hkm_weights`` →
``core.surrogate.log_likelihood_surrogate``.

Here: the method's names, and ``VAE``, ``TrainConfig``, ``Trainer`` (loaded on first use, so
that ``import ucvae_lite`` stays light).
"""

from ucvae_lite import _moved
from ucvae_lite.core.coupled import CoupledChains, MeetingTimeoutError, coupled_estimate
from ucvae_lite.core.estimate import Estimate
from ucvae_lite.core.hkm import hkm_weights
from ucvae_lite.core.iwae import (
    effective_sample_size,
    iwae_bound,
    iwae_estimate,
    normalized_weights,
    sample_extended_target,
)
from ucvae_lite.core.kernels import (
    CISState,
    CoupledState,
    Particle,
    cis_step,
    coupled_cis_step,
    maximal_coupling,
)
from ucvae_lite.core.rejuvenation import RandomWalkMH
from ucvae_lite.core.surrogate import log_likelihood_surrogate, particle_log_joint
from ucvae_lite.core.targets import ImportanceTarget, Target
from ucvae_lite.models.distributions import DefensiveMixture, Gaussian, StandardNormal
from ucvae_lite.models.linear_gaussian import LinearGaussian
from ucvae_lite.peers.sumo import sumo_log_marginal

_moved.install()

_LAZY = {
    "VAE": "ucvae_lite.models.vae",
    "TrainConfig": "ucvae_lite.training.train",
    "Trainer": "ucvae_lite.training.train",
}


def __getattr__(name: str):
    """``VAE``, ``TrainConfig``, ``Trainer`` on first use; old module paths (``_moved``)."""
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    return _moved.old_attribute(name)


__all__ = [
    "CISState",
    "CoupledChains",
    "CoupledState",
    "DefensiveMixture",
    "Estimate",
    "Gaussian",
    "ImportanceTarget",
    "LinearGaussian",
    "MeetingTimeoutError",
    "Particle",
    "RandomWalkMH",
    "StandardNormal",
    "Target",
    "TrainConfig",
    "Trainer",
    "VAE",
    "cis_step",
    "coupled_cis_step",
    "coupled_estimate",
    "effective_sample_size",
    "hkm_weights",
    "iwae_bound",
    "iwae_estimate",
    "log_likelihood_surrogate",
    "maximal_coupling",
    "normalized_weights",
    "particle_log_joint",
    "sample_extended_target",
    "sumo_log_marginal",
]
__version__ = "0.2.0"
