"""Test log-likelihood of a trained VAE by the IWAE bound with many samples.

    log p̂(x) = log (1/S) Σ_{s=1}^{S} p_θ(x, z_s) / q_φ(z_s | x),   z_s ~ q_φ(· | x)

is a lower bound on log p(x) whose gap shrinks like O(1/S); the IWAE paper uses S = 5000.
We report the mean over test images and its standard error (std / √N over images; the
Monte Carlo noise of each image's estimate is part of that spread). The S samples are
drawn in chunks and combined with a running logsumexp, so memory stays bounded.
"""

from __future__ import annotations

import math
import pickle
import warnings
import zipfile
from pathlib import Path

import torch
from torch import Tensor

from ucvae_lite.core.diagnostics import psis_khat
from ucvae_lite.core.iwae import effective_sample_size
from ucvae_lite.models.vae import VAE, widened_target
from ucvae_lite.training.config import ConfigError

EVAL_SAMPLES = 5000
FAST_EVAL_SAMPLES = 200


@torch.no_grad()
def iwae_log_likelihood(
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
    ll = iwae_log_likelihood(model, x, num_samples, generator=g, **kwargs)
    return {
        "ll": ll.mean().item(),
        "se": (ll.std() / math.sqrt(len(ll))).item(),
        "n": len(ll),
        "num_samples": num_samples,
    }


class CheckpointError(ConfigError):
    """A path that is not a training checkpoint (missing, not a torch file, wrong contents):
    bad input, as a ``ConfigError`` (a ``ValueError``)."""


MODEL_KEYS = ("model_config", "model")  # what rebuilding the model needs
CHECKPOINT_KEYS = (*MODEL_KEYS, "config")  # a checkpoint written by train
CONFIG_KEYS = ("dataset", "binarization", "seed")  # what evaluating needs to reload the data
# What torch.load(..., weights_only=True) raises on files that are not torch checkpoints:
# text and random bytes reach the restricted unpickler, which fails in many ways.
_NOT_A_TORCH_FILE = (
    pickle.UnpicklingError,
    RuntimeError,
    EOFError,
    zipfile.BadZipFile,
    ValueError,
    KeyError,
    IndexError,
    TypeError,
    AttributeError,
)
_WRITTEN_BY = "pass a checkpoint.pt written by train or reproduce (e.g. runs/train/checkpoint.pt)"


def _reason(e: Exception, limit: int = 90) -> str:
    """``Type: message``, cut to its first line and ``limit`` characters (torch's run long)."""
    text = str(e).strip().splitlines()[0] if str(e).strip() else ""
    if len(text) > limit:
        text = text[: limit - 3].rstrip() + "..."
    return f"{type(e).__name__}: {text}" if text else type(e).__name__


def read_checkpoint(path: str | Path, require: tuple[str, ...] = CHECKPOINT_KEYS) -> dict:
    """The dict in a training checkpoint, loaded on the CPU with ``weights_only=True``.

    Raises ``CheckpointError`` when the file is missing, is not a torch file (user files are
    never unpickled beyond torch's restricted loader), or lacks the keys in ``require``
    (with ``"config"`` among them: or its ``config`` lacks ``CONFIG_KEYS``).
    """
    path = Path(path)
    if not path.exists():
        raise CheckpointError(f"checkpoint {path} not found; {_WRITTEN_BY}")
    if path.is_dir():
        raise CheckpointError(f"checkpoint {path} is a directory; {_WRITTEN_BY}")
    try:
        with warnings.catch_warnings():  # e.g. "Detected pickle protocol 4" on foreign pickles
            warnings.simplefilter("ignore")
            ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except _NOT_A_TORCH_FILE as e:
        raise CheckpointError(
            f"{path} is not a torch checkpoint ({_reason(e)}); {_WRITTEN_BY}"
        ) from e
    except OSError as e:
        raise CheckpointError(f"cannot read checkpoint {path}: {e.strerror or e}") from e
    if not isinstance(ckpt, dict):
        raise CheckpointError(
            f"{path} holds a {type(ckpt).__name__}, not a training checkpoint; {_WRITTEN_BY}"
        )
    missing = [k for k in require if k not in ckpt]
    if not missing and "config" in require:
        config = ckpt["config"]
        if not isinstance(config, dict):
            missing = ["config dict"]
        else:
            missing = [f"config[{k!r}]" for k in CONFIG_KEYS if k not in config]
    if missing:
        raise CheckpointError(
            f"{path} is a torch file but not a training checkpoint (no {', '.join(missing)}); "
            + _WRITTEN_BY
        )
    return ckpt


def load_model(
    path: str | Path,
    device: str = "cpu",
    best: bool = True,
    require: tuple[str, ...] = MODEL_KEYS,
) -> tuple[VAE, dict]:
    """A VAE from a checkpoint (``torch.load(..., weights_only=True)``), on ``device``.

    ``best=True`` loads the weights of the best validation epoch when the checkpoint has them.
    ``require`` names the keys the checkpoint must hold: the model's by default,
    ``CHECKPOINT_KEYS`` for a checkpoint written by ``train`` (with its training config).
    Returns (model, checkpoint dict). Raises ``CheckpointError`` (a ``ValueError``) when
    ``path`` is not such a checkpoint, saying why.
    """
    ckpt = read_checkpoint(path, require)
    try:
        config = ckpt["model_config"]
        model = VAE(**{**config, "hidden": tuple(config["hidden"])})
        state = ckpt["best_model"] if best and ckpt.get("best_model") else ckpt["model"]
        model.load_state_dict(state)
    except (KeyError, TypeError, ValueError, RuntimeError) as e:
        raise CheckpointError(
            f"{path}: its weights do not match its model_config ({_reason(e)}); {_WRITTEN_BY}"
        ) from e
    return model.to(device).eval(), ckpt


@torch.no_grad()
def weight_diagnostics(
    model: VAE,
    x: Tensor,
    num_samples: int,
    eps: float = 0.0,
    num_sets: int = 50,
    num_khat: int = 1000,
    generator: torch.Generator | None = None,
    factor: float = 1.0,
) -> dict:
    """Importance-weight diagnostics of q_φ for the images x [B, P], per image.

    ``factor`` ≠ 1 widens q_φ's standard deviations by that factor (``widened_target``; only
    with ``eps = 0``), to see the diagnostics of a worse proposal on the same model.

    Returns tensors [B]: ``ess`` (mean within-set ESS in particles, over ``num_sets`` sets of
    S = ``num_samples``), ``ess_frac`` (= ess / S), ``khat`` (PSIS k̂ of ``num_khat`` draws;
    skipped when 0), and the floats ``median_ess``, ``median_ess_frac``, ``median_khat``.
    """
    if factor != 1.0 and eps:
        raise ValueError("widen the encoder (factor) or mix in the prior (eps), not both")
    target = model.target(x, eps) if factor == 1.0 else widened_target(model, x, factor)
    lw = target.log_weight(target.sample(num_sets * num_samples, generator))
    ess = effective_sample_size(lw.view(len(x), num_sets, num_samples)).mean(-1)
    out = {"ess": ess, "ess_frac": ess / num_samples}
    out["median_ess"] = ess.median().item()
    out["median_ess_frac"] = out["median_ess"] / num_samples
    if num_khat:
        big = target.log_weight(target.sample(num_khat, generator))
        out["khat"] = psis_khat(big).float()
        out["median_khat"] = out["khat"].median().item()
    return out


def __getattr__(name: str):
    """``log_likelihood``, 0.1's name of ``iwae_log_likelihood``, for one release."""
    if name == "log_likelihood":
        warnings.warn(
            "ucvae_lite.training.evaluate.log_likelihood is now iwae_log_likelihood (0.2); the "
            "old name will be removed in 0.3",
            FutureWarning,
            stacklevel=2,
        )
        return iwae_log_likelihood
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
