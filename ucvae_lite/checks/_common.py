"""What every checker shares: how it reports success and failure, and how it compares."""

from __future__ import annotations

import math

import torch
from torch import Tensor

from ..stats import z_score, z_threshold


class CheckFailed(AssertionError):
    """A learner's function gave a wrong answer; the message is a hint."""


def passed(message: str) -> None:
    """Print the confirmation a correct answer earns."""
    print(f"✓ {message}")


def require(ok: bool, hint: str) -> None:
    """Raise ``CheckFailed(hint)`` unless ``ok``."""
    if not ok:
        raise CheckFailed(hint)


def call(fn, *args, what: str):
    """``fn(*args)``, turning an exception inside the learner's code into a hint."""
    try:
        return fn(*args)
    except CheckFailed:
        raise
    except NotImplementedError as e:
        raise CheckFailed(f"{what}: not written yet ({e or 'NotImplementedError'})") from e
    except Exception as e:  # noqa: BLE001 - any error in the learner's code becomes a hint
        raise CheckFailed(f"{what} raised {type(e).__name__}: {e}") from e


def expect_shape(value, shape: tuple[int, ...], what: str) -> Tensor:
    """``value`` as a tensor of exactly ``shape``, or a hint naming the shape."""
    require(isinstance(value, Tensor), f"{what} should return a torch.Tensor, got {type(value)}")
    require(
        tuple(value.shape) == tuple(shape),
        f"{what} should have shape {tuple(shape)}, got {tuple(value.shape)}",
    )
    return value


def expect_close(value: Tensor, expected: Tensor, what: str, hint: str = "", atol=1e-8) -> None:
    """Agreement to rounding (deterministic answers)."""
    value = expect_shape(value, tuple(expected.shape), what)
    err = (value.double() - expected.double()).abs().max().item() if value.numel() else 0.0
    require(
        math.isfinite(err) and err <= atol,
        f"{what} is off by up to {err:.3g} (tolerance {atol:g}). {hint}".strip(),
    )


def expect_unbiased(samples: Tensor, exact: Tensor | float, what: str, hint: str = "") -> float:
    """The replicate mean of ``samples`` [n, ...] agrees with ``exact`` within the z-threshold
    for that many coordinates (a correct answer fails with probability below 6e-5)."""
    z = z_score(samples.double(), torch.as_tensor(exact, dtype=torch.float64))
    limit = z_threshold(max(1, z.numel()))
    worst = z.abs().max().item()
    require(
        math.isfinite(worst) and worst < limit,
        f"{what}: the mean of {samples.shape[0]} replicates is {worst:.1f} standard errors "
        f"from the exact answer (allowed: {limit:.1f}). {hint}".strip(),
    )
    return worst
