"""Test log-likelihood of a trained VAE by the IWAE bound with many samples.

    log p̂(x) = log (1/S) Σ_{s=1}^{S} p_θ(x, z_s) / q_φ(z_s | x),   z_s ~ q_φ(· | x)

is a lower bound on log p(x) whose gap shrinks like O(1/S); the IWAE paper uses S = 5000.
We report the mean over test images and its standard error (std / √N over images; the
Monte Carlo noise of each image's estimate is part of that spread). The S samples are
drawn in chunks and combined with a running logsumexp, so memory stays bounded.
"""

from __future__ import annotations

import math
from pathlib import Path

import torch
from torch import Tensor

from .vae import VAE

EVAL_SAMPLES = 5000
FAST_EVAL_SAMPLES = 200


@torch.no_grad()
def log_likelihood(
    model: VAE,
    x: Tensor,
    num_samples: int = EVAL_SAMPLES,
    batch_size: int = 100,
    max_rows: int = 50_000,
    generator: torch.Generator | None = None,
) -> Tensor:
    """Per-image IWAE-S estimates log p̂(x_i), [N], for x [N, P].

    Data go in batches of ``batch_size`` and samples in chunks so that at most ``max_rows``
    (image, sample) pairs are decoded at once.
    """
    out = []
    chunk = max(1, max_rows // batch_size)
    for xb in x.split(batch_size):
        q = model.encode(xb)
        acc = torch.full((xb.shape[0],), -math.inf, device=x.device, dtype=x.dtype)
        done = 0
        while done < num_samples:
            n = min(chunk, num_samples - done)
            z = q.sample(n, generator)
            log_w = model.log_joint(xb, z) - q.log_prob(z)
            acc = torch.logaddexp(acc, torch.logsumexp(log_w, -1))
            done += n
        out.append(acc - math.log(num_samples))
    return torch.cat(out)


def evaluate(
    model: VAE, x: Tensor, num_samples: int = EVAL_SAMPLES, seed: int = 0, **kwargs
) -> dict:
    """{"ll": mean log p̂(x), "se": its standard error, "n": images, "num_samples": S}."""
    device = x.device
    g = torch.Generator(device=device).manual_seed(seed)
    ll = log_likelihood(model, x, num_samples, generator=g, **kwargs)
    return {
        "ll": ll.mean().item(),
        "se": (ll.std() / math.sqrt(len(ll))).item(),
        "n": len(ll),
        "num_samples": num_samples,
    }


def load_model(path: str | Path, device: str = "cpu", best: bool = True) -> tuple[VAE, dict]:
    """A VAE from a training checkpoint (``torch.load(..., weights_only=True)``).

    ``best=True`` loads the weights of the best validation epoch when the checkpoint has them.
    Returns (model, checkpoint dict).
    """
    ckpt = torch.load(Path(path), map_location=device, weights_only=True)
    model = VAE(**{**ckpt["model_config"], "hidden": tuple(ckpt["model_config"]["hidden"])})
    state = ckpt["best_model"] if best and ckpt.get("best_model") else ckpt["model"]
    model.load_state_dict(state)
    return model.to(device).eval(), ckpt
