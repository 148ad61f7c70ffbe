"""What every checker shares: how it reports success and failure, and how it compares."""

from __future__ import annotations

import contextlib
import contextvars
import math
import numbers
import warnings

import numpy as np
import torch
from torch import Tensor

from ucvae_lite.studies.stats import z_score, z_threshold


class CheckFailed(AssertionError):
    """A learner's function gave a wrong answer; the message is a hint."""


def passed(message: str) -> None:
    """Print the confirmation a correct answer earns (``score`` keeps it for its summary)."""
    record = _RECORD.get()
    if record is not None:
        record.message = message
        return
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


# --- partial credit: a checker's properties, scored one by one --------------------------------
#
# A checker names the *properties* that make an answer right (``@properties(...)``) and runs the
# checks of each inside ``with prop(name):``. In normal use ``prop`` does nothing: the first
# failure raises ``CheckFailed`` with its hint, as it always has. ``score`` runs the checker in
# collect mode instead: a failure (any exception, the learner's crash included) inside a
# property is recorded against that property and the checker goes on to the next check, so
# each property is tried on its own. Code outside every property is a prerequisite (the answer
# has the right form, the plain case's call returns): if it fails, nothing can be checked and
# every property fails. Properties do not nest: inside one, ``prop`` is transparent, so a case
# that a property owns as a whole (``with prop("float32"):`` around a float32 case) may run
# checks that elsewhere belong to other properties.


class _Record:
    """What one collect-mode run of a checker found."""

    def __init__(self, names: tuple[str, ...]):
        self.names = names
        self.failed: dict[str, str] = {}  # property -> the hint of its first failure
        self.entered: set[str] = set()
        self.active: str | None = None
        self.message: str | None = None  # the checker's own ✓ message, if it got there


_RECORD: contextvars.ContextVar[_Record | None] = contextvars.ContextVar(
    "ucvae_checks_record", default=None
)


def properties(*names: str):
    """Declare the properties a checker scores (``check.properties``), in the order printed."""
    if len(set(names)) != len(names) or not names:
        raise ValueError(f"properties must be distinct and not empty, got {names}")

    def mark(check):
        check.properties = tuple(names)
        return check

    return mark


def _why(error: BaseException) -> str:
    if isinstance(error, CheckFailed):
        return str(error)
    if isinstance(error, NameError):  # a value an earlier, failed check did not produce
        return f"not checked: it needs a result that an earlier check could not produce ({error})"
    return f"the check raised {type(error).__name__}: {error}"


@contextlib.contextmanager
def prop(name: str | None):
    """Run the checks of property ``name`` (None: no property). Normal use: transparent. Collect
    mode (``score``): a failure inside is recorded against ``name`` and swallowed."""
    record = _RECORD.get()
    if name is None or record is None or record.active is not None:
        yield
        return
    if name not in record.names:
        raise ValueError(f"{name!r} is not one of the declared properties {record.names}")
    record.entered.add(name)
    record.active = name
    try:
        yield
    except Exception as e:  # noqa: BLE001 - any failure, the learner's crash included
        record.failed.setdefault(name, _why(e))
    finally:
        record.active = None


def score(check, *args, points: float, runs=(), **kwargs) -> float:
    """Run ``check(*args, **kwargs)`` property by property and return the points earned.

    Each property of the checker (``check.properties``; a checker without them is one
    property, all or nothing) is tried on its own; it passes when every check of it passes in
    every run: ``check(*args, **kwargs)``, then ``check(*args, **{**kwargs, **extra})`` for each
    dict ``extra`` in ``runs`` (the hidden tests' seeds). Points are split equally between the
    properties, ``points · passed / total`` rounded to 2 decimals, and below ``points``
    unless every property passes. Prints "✓ <property>" or "✗ <property>: <hint>" per property
    and "score: a/b properties → p of N points", and returns p (a float), which nbgrader reads
    as the partial credit of a test cell whose last line is this call. Warnings are silenced
    meanwhile: nbgrader gives 0 to a cell that writes to stderr."""
    declared = getattr(check, "properties", None)
    names = tuple(declared) if declared else (f"{getattr(check, '__name__', 'the check')} passes",)
    failed: dict[str, str] = {}
    message = None
    for i, extra in enumerate([{}, *runs]):
        record = _Record(names)
        token = _RECORD.set(record)
        aborted = None
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                check(*args, **{**kwargs, **extra})
        except Exception as e:  # noqa: BLE001 - outside every property: nothing was checked
            aborted = _why(e)
        finally:
            _RECORD.reset(token)
        where = " (" + ", ".join(f"{k}={v!r}" for k, v in extra.items()) + ")" if extra else ""
        for name in names:
            if name in failed:
                continue
            if name in record.failed:
                failed[name] = record.failed[name] + where
            elif aborted is not None:
                failed[name] = aborted + where if not declared else f"not checked: {aborted}{where}"
            elif declared and name not in record.entered:
                failed[name] = "not checked: the checker never reached it" + where
        if i == 0:
            message = record.message
    good = len(names) - len(failed)
    earned = (
        float(points) if not failed else min(round(points * good / len(names), 2), points - 0.01)
    )
    earned = max(earned, 0.0)
    if not failed and message:
        print(f"✓ {message}")
    for name in names:
        print(f"✓ {name}" if name not in failed else f"✗ {name}: {failed[name]}")
    print(f"score: {good}/{len(names)} properties → {earned:g} of {points:g} points")
    return earned
