"""Models that produce targets: Gaussians and flows, the VAE, and the linear-Gaussian model
whose posterior and log-likelihood are exact. Import from ``core`` only."""
