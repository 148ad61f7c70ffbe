"""ucvae_lite: unbiased VAE log-likelihood gradients from coupled Markov chains.

Ruiz, Titsias, Cemgil & Doucet (UAI 2021): coupled conditional importance sampling chains on
the IWAE-augmented latent space give unbiased estimates of posterior expectations, hence of
∇_θ log p_θ(x), where IWAE's are biased.

Reading order, one gradient step from data to optimiser: ``train`` (``Trainer.train_step``)
→ ``objectives.ucvae`` → ``coupled.coupled_estimate`` → ``coupled.CoupledChains`` →
``kernels`` (the CIS step and its coupling: ``init``, ``select``, ``refresh``) and
``hkm.hkm_weights`` → ``surrogate.log_likelihood_surrogate``. ``machinery`` holds what only
makes it fast; ``teaching`` records the same chains step by step for the notebooks.
"""

from .coupled import CoupledChains, MeetingTimeoutError, coupled_estimate
from .distributions import DefensiveMixture, Gaussian, StandardNormal
from .estimate import Estimate
from .hkm import hkm_weights
from .iwae import (
    effective_sample_size,
    iwae_bound,
    iwae_estimate,
    normalized_weights,
    sample_extended_target,
)
from .kernels import CISState, CoupledState, Particle, cis_step, coupled_cis_step, maximal_coupling
from .linear_gaussian import LinearGaussian
from .rejuvenation import RandomWalkMH
from .sumo import sumo_log_marginal
from .surrogate import log_likelihood_surrogate, particle_log_joint
from .targets import ImportanceTarget, Target

__all__ = [
    "CISState",
    "CoupledChains",
    "CoupledState",
    "Particle",
    "RandomWalkMH",
    "hkm_weights",
    "particle_log_joint",
    "DefensiveMixture",
    "Estimate",
    "Gaussian",
    "ImportanceTarget",
    "LinearGaussian",
    "MeetingTimeoutError",
    "StandardNormal",
    "Target",
    "cis_step",
    "coupled_cis_step",
    "coupled_estimate",
    "effective_sample_size",
    "iwae_bound",
    "iwae_estimate",
    "log_likelihood_surrogate",
    "maximal_coupling",
    "normalized_weights",
    "sample_extended_target",
    "sumo_log_marginal",
]
__version__ = "0.1.0"
