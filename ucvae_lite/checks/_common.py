"""What every checker shares: how it reports success and failure, and how it compares."""

from __future__ import annotations

import math
import numbers

import numpy as np
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


def call(fn, *args, what: str, advice: tuple[tuple[str, str], ...] = ()):
    """``fn(*args)``, turning an exception inside the learner's code into a hint.

    ``advice``: pairs (text, hint); the hint is added when the error's type and message
    contain the text (case-insensitive), to name the mistake that usually causes that error.
    """
    try:
        return fn(*args)
    except CheckFailed:
        raise
    except NotImplementedError as e:
        raise CheckFailed(f"{what}: not written yet ({e or 'NotImplementedError'})") from e
    except Exception as e:  # noqa: BLE001 - any error in the learner's code becomes a hint
        said = f"{type(e).__name__}: {e}"
        hints = [hint for text, hint in advice if text.lower() in said.lower()]
        raise CheckFailed(" ".join([f"{what} raised {said}.", *hints[:1]])) from e


def as_number(value, what: str) -> float:
    """``value`` as a float: a Python or NumPy number, or a one-element tensor or array (the
    forms a correct answer comes in); anything else (text, True/False, a list) is a hint."""
    if isinstance(value, Tensor) and value.numel() == 1 and not value.is_complex():
        return float(value.detach().cpu().reshape(()))
    if isinstance(value, np.ndarray) and value.size == 1 and value.dtype.kind in "iuf":
        return float(value.reshape(()))
    if isinstance(value, numbers.Real) and not isinstance(value, bool | np.bool_):
        return float(value)
    shown = f"a tensor of shape {tuple(value.shape)}" if hasattr(value, "shape") else repr(value)
    raise CheckFailed(f"{what} should be one number (a float, or a 0-d tensor), got {shown}")


def expect_shape(value, shape: tuple[int, ...], what: str) -> Tensor:
    """``value`` as a tensor of exactly ``shape``, or a hint naming the shape."""
    require(isinstance(value, Tensor), f"{what} should return a torch.Tensor, got {type(value)}")
    require(
        tuple(value.shape) == tuple(shape),
        f"{what} should have shape {tuple(shape)}, got {tuple(value.shape)}",
    )
    return value


def expect_close(value: Tensor, expected: Tensor, what: str, hint: str = "", atol=1e-8) -> None:
    """Agreement to rounding (deterministic answers); equal infinities agree."""
    value = expect_shape(value, tuple(expected.shape), what)
    err = max_error(value, expected)
    require(
        math.isfinite(err) and err <= atol,
        f"{what} is off by up to {err:.3g} (tolerance {atol:g}). {hint}".strip(),
    )


def max_error(value: Tensor, expected: Tensor) -> float:
    """Largest |value − expected| (equal entries, infinities included, count 0; NaN gives NaN)."""
    if not value.numel():
        return 0.0
    a, b = value.detach().double().cpu(), expected.detach().double().cpu()
    return torch.where(a == b, 0.0, (a - b).abs()).max().item()


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
