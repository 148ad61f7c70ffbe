"""Every training setting, defined once: its default, what it means and which values it takes.

``ObjectiveConfig`` holds the objectives' settings; ``TrainConfig`` extends it with the data,
model, optimiser and run settings (an objective is handed the ``TrainConfig`` itself). Each
field is declared with ``setting(default, help, rule)``: the default, one help line (the
command line's flags and their ``--help`` are generated from these fields,
``cli._add_training_flags``) and the ``Rule`` its values must follow. Rules that tie two
settings together are listed in the class's ``RULES``.

``check`` applies them all, once, when a config is made (``__post_init__``; ``replace`` and
``with_`` make a new config, checked once in turn). A broken rule raises ``ConfigError``,
whose message says what to change and names the settings through a ``Spelling``: as fields
here (``m = 2 is below k = 3``), as flags on the command line (``--m 2 (the default) is below
--k 3``).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import Field, dataclass, field, fields, replace
from typing import Any, ClassVar

from ucvae_lite.core.diagnostics import DEGENERATE_ESS
from ucvae_lite.models.vae import ACTIVATIONS, COVARIANCES, DEFAULT_ARCH
from ucvae_lite.peers.sumo import Roulette

DATASETS = ("digits", "mnist", "fashion-mnist")
BINARIZATIONS = ("dynamic", "static")
OBJECTIVES = ("elbo", "iwae", "ucvae", "sumo", "msc")
ENCODER_OBJECTIVES = ("iwae", "inclusive")
ON_TIMEOUT = ("truncate", "raise")  # what ucvae does with chains unmet after max_steps
DEGENERATE_POLICIES = ("warn", "raise", "ignore")
# How optimisation steps are timed (``clock``, ``time_limit``): wall-clock seconds, or this
# process's CPU seconds (with one thread, about the same on an idle machine, and robust to
# other processes sharing the machine).
CLOCKS = {"wall": time.perf_counter, "process": time.process_time}


class Spelling:
    """How an error message names a setting: here, as the field (``k``, ``k = 3``)."""

    def name(self, setting: str) -> str:
        return setting

    def value(self, setting: str, value: Any) -> str:
        return f"{setting} = {value!r}"


Message = Callable[[Spelling], str]


class ConfigError(ValueError):
    """Bad input: a setting out of range, or a file named by one that cannot be used. Its
    message says what to change (the command line answers it with exit status 2).

    ``str(error)`` names settings as fields; ``error.spelled(spelling)`` names them as another
    reader does (the command line: as its flags).
    """

    def __init__(self, message: str | Message):
        self._message = message if callable(message) else lambda _spelling: message
        super().__init__(self._message(Spelling()))

    def spelled(self, spelling: Spelling) -> str:
        return self._message(spelling)

    def __reduce__(self):  # pickled across processes (reproduce --jobs) as its text
        return type(self), (str(self),)


# --- rules and settings -------------------------------------------------------------------------


@dataclass(frozen=True)
class Rule:
    """The values a setting takes: ``ok(value)``, described by ``text`` ("an integer >= 2");
    ``choices`` when they are a fixed list."""

    text: str
    ok: Callable[[Any], bool]
    choices: tuple | None = None


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return (_is_int(value) or isinstance(value, float)) and math.isfinite(value)


def integer(low: int | None = None) -> Rule:
    """An integer (>= ``low``)."""
    text = "an integer" if low is None else f"an integer >= {low}"
    return Rule(text, lambda v: _is_int(v) and (low is None or v >= low))


def number(text: str, ok: Callable[[float], bool]) -> Rule:
    """A finite number for which ``ok`` holds."""
    return Rule(text, lambda v: _is_number(v) and ok(v))


def one_of(choices) -> Rule:
    choices = tuple(choices)
    return Rule(f"one of {choices}", lambda v: isinstance(v, str) and v in choices, choices)


def sizes(text: str, count: int | None = None) -> Rule:
    """A list of integers >= 1 (exactly ``count`` of them, if given)."""
    return Rule(
        text,
        lambda v: (
            isinstance(v, list | tuple)
            and (count is None or len(v) == count)
            and all(_is_int(n) and n >= 1 for n in v)
        ),
    )


def optional(meaning: str, rule: Rule) -> Rule:
    """None (which means ``meaning``) or a value of ``rule``."""
    return Rule(f"None ({meaning}) or {rule.text}", lambda v: v is None or rule.ok(v))


@dataclass(frozen=True)
class Setting:
    """A field's documentation and rule. ``group`` and ``type`` (one value's parser; None: the
    default's type) shape its command-line flag; ``flag`` holds more argparse options
    (``aliases``, ``nargs``, ``metavar``)."""

    help: str
    rule: Rule | None
    group: str
    type: type | None
    flag: dict


def setting(
    default: Any,
    help: str,
    rule: Rule | None = None,
    *,
    group: str,
    type: type | None = None,
    **flag,
) -> Any:
    """A dataclass field with its default, help line and rule."""
    return field(default=default, metadata={"setting": Setting(help, rule, group, type, flag)})


def settings(config) -> list[tuple[Field, Setting]]:
    """The fields of a config class (or instance) that are settings, in declaration order."""
    return [(f, f.metadata["setting"]) for f in fields(config) if "setting" in f.metadata]


def check(config) -> None:
    """Every setting's rule in field order, then the class's ``RULES``; ``ConfigError`` at the
    first one broken."""
    for f, spec in settings(config):
        value = getattr(config, f.name)
        if spec.rule is not None and not spec.rule.ok(value):
            raise ConfigError(_out_of_range(f.name, spec.rule, value))
    for rule in config.RULES:
        message = rule(config)
        if message is not None:
            raise ConfigError(message)


def _out_of_range(name: str, rule: Rule, value: Any) -> Message:
    return lambda s: f"{s.name(name)} must be {rule.text}, got {value!r}"


# --- rules tying settings together ----------------------------------------------------------


def _k_within_m(c: ObjectiveConfig) -> Message | None:
    if c.k <= c.m:
        return None
    return lambda s: (
        f"{s.value('m', c.m)} is below {s.value('k', c.k)}: H_k:m averages chain steps k..m; "
        f"set {s.name('m')} to {c.k} or more, or {s.name('k')} lower"
    )


def _max_steps_reach_m(c: ObjectiveConfig) -> Message | None:
    if c.max_steps >= c.m:
        return None
    return lambda s: (
        f"{s.value('max_steps', c.max_steps)} is below {s.value('m', c.m)}: the chains must "
        f"run m steps; set {s.name('max_steps')} to {c.m} or more"
    )


def _flow_on_diagonal(c: TrainConfig) -> Message | None:
    if c.flow_layers == 0 or c.covariance == "diag":
        return None
    return lambda s: (
        f"{s.value('flow_layers', c.flow_layers)} builds a flow on a diagonal Gaussian, not on "
        f"{s.value('covariance', c.covariance)}; set {s.name('covariance')} to diag or "
        f"{s.name('flow_layers')} to 0"
    )


DATA, OBJ, MODEL, RUN = GROUPS = ("data", "objective", "model and optimiser", "run")  # of flags


@dataclass(frozen=True)
class ObjectiveConfig:
    """The objectives' settings; ``num_samples`` is S for all of them (matched comparisons).

    k, m, max_steps, on_timeout, rejuvenate and correction_prob only affect ``ucvae``,
    ``sumo_*`` only ``sumo``; ``eps`` is the proposal of ucvae, sumo and msc; ``encoder`` is
    how ucvae and msc train φ. The ucvae estimate averages the coupled chains' steps k..m
    (H_{k:m}), so 0 ≤ k ≤ m, and a chain pair still unmet after ``max_steps`` ≥ m steps is
    truncated (counted in the step's diagnostics) or raises. The latent size is a model
    setting (``vae.DEFAULT_ARCH``).

    The defaults are the studied ucvae defaults, kept after the variance study
    (benchmarks/variance_study.py; README "When is the estimator practical?"). On digits,
    d = 5: (k, m) = (1, 2) has about 2x lower variance x cost than (0, 0), is level with (2, 4)
    (within the study's noise) and better than (4, 8); S = 50 lowers ucvae's variance x cost
    relative to IWAE (5x at S = 5, 2.4x at S = 10, 1.6x at S = 50 in quick mode) but S is
    shared with the elbo/iwae comparisons; the full-covariance and flow encoders, the
    inclusive-KL encoder objective and the rejuvenation move (off by default) did not lower
    it. No setting reached parity with IWAE per unit of compute (1.6-5x in quick mode, 5-11x
    at S = 10 for longer-trained models), and MNIST d = 10/50 sit in the degenerate regime
    (~40x / ~350x on the median image), which training warns about.
    """

    num_samples: int = setting(
        10, "samples per data point S, for every objective", integer(2), group=OBJ, aliases=["-S"]
    )
    k: int = setting(1, "ucvae: first chain step averaged in H_k:m", integer(0), group=OBJ)
    m: int = setting(2, "ucvae: last chain step averaged in H_k:m, >= k", integer(0), group=OBJ)
    eps: float = setting(
        0.0,
        "ucvae, sumo, msc: defensive weight e of the proposal (1-e) q + e N(0,I), 0 = plain q",
        number(
            "in [0, 1) (the weight of N(0, I) in the proposal; 0: the plain encoder)",
            lambda v: 0.0 <= v < 1.0,
        ),
        group=OBJ,
    )
    encoder: str = setting(
        "iwae",
        "ucvae, msc: encoder objective, the IWAE bound or the inclusive KL estimated by the chains",
        one_of(ENCODER_OBJECTIVES),
        group=OBJ,
    )
    max_steps: int = setting(
        1000,
        "ucvae: chain step cap; chains that have not met are truncated and reported",
        integer(1),
        group=OBJ,
    )
    on_timeout: str = setting(
        "truncate",
        "ucvae: chains unmet at --max-steps are truncated (biased, counted) or raise an error",
        one_of(ON_TIMEOUT),
        group=OBJ,
    )
    rejuvenate: float | None = setting(
        None,
        "ucvae: after every index selection, move the chains' references by a coupled "
        "random-walk Metropolis-Hastings step of scale C x the encoder's sigma (still "
        "unbiased; costs about 2 more evaluations per chain step; default: off)",
        optional(
            "no MH move",
            number("a positive scale (a multiple of the encoder's sigma)", lambda v: v > 0),
        ),
        group=OBJ,
        type=float,
        metavar="C",
    )
    correction_prob: float = setting(
        1.0,
        "ucvae: compute each data point's bias correction with probability P and weight it "
        "1/P: still unbiased, cheaper, noisier",
        number(
            "in (0, 1] (the probability that a data point's bias correction is computed; "
            "1: always)",
            lambda v: 0.0 < v <= 1.0,
        ),
        group=OBJ,
        metavar="P",
    )
    sumo_min_terms: int = setting(
        1, "sumo: the IWAE bound L_m kept whole before the roulette", integer(1), group=OBJ
    )
    sumo_cutoff: int = setting(
        80, "sumo: P(K >= j) = 1/j up to this j, then a geometric tail", integer(1), group=OBJ
    )
    sumo_ratio: float = setting(
        0.9, "sumo: the geometric tail's ratio", number("in (0, 1)", lambda v: 0 < v < 1), group=OBJ
    )

    RULES: ClassVar[tuple[Callable, ...]] = (_k_within_m, _max_steps_reach_m)

    def __post_init__(self) -> None:
        check(self)

    def roulette(self) -> Roulette:
        """SUMO's distribution of the number of terms (``sumo.Roulette``)."""
        return Roulette(self.sumo_min_terms, self.sumo_cutoff, self.sumo_ratio)

    def with_(self, **changes) -> ObjectiveConfig:
        """A copy with some fields changed (None values are ignored)."""
        return replace(self, **{k: v for k, v in changes.items() if v is not None})


DEFAULT_CONFIG = ObjectiveConfig()
_ARCH = ", ".join(f"{a['latent_dim']} on {name}" for name, a in DEFAULT_ARCH.items())
_HIDDEN = ", ".join(f"{' '.join(map(str, a['hidden']))} on {n}" for n, a in DEFAULT_ARCH.items())


@dataclass(frozen=True)
class TrainConfig(ObjectiveConfig):
    """Everything that defines a training run (saved in its checkpoint): the objective's
    settings (``ObjectiveConfig``'s fields), then the data, model, optimiser and run.

    ``None`` means: for ``latent_dim`` and ``hidden``, the dataset's default
    (``vae.DEFAULT_ARCH``); for ``subset``, every image; for ``patience``, ``time_limit`` and
    ``decoder_limit``, no limit; for ``threads``, 1 on digits and torch's choice otherwise.
    """

    dataset: str = setting(
        "digits",
        "digits (scikit-learn, 8x8, offline), mnist or fashion-mnist",
        one_of(DATASETS),
        group=DATA,
    )
    data_dir: str | None = setting(
        None,
        "directory with IDX files (train-images-idx3-ubyte[.gz], t10k-images-idx3-ubyte[.gz]) "
        "for mnist / fashion-mnist",
        group=DATA,
        type=str,
    )
    subset: list[int] | None = setting(
        None,
        "use only the first TRAIN / VALID / TEST images of the splits, for shorter runs; "
        "default: all",
        optional("all images", sizes("three sizes [train, valid, test], each an integer >= 1", 3)),
        group=DATA,
        type=int,
        nargs=3,
        metavar=("TRAIN", "VALID", "TEST"),
    )
    binarization: str = setting(
        "dynamic",
        "dynamic: redraw binary training images every epoch (IWAE paper); static: once",
        one_of(BINARIZATIONS),
        group=DATA,
    )
    objective: str = setting(
        "ucvae",
        "elbo: S-sample VAE bound; iwae: IWAE-S bound; ucvae: unbiased coupled-chain decoder "
        "gradient; sumo: unbiased log p(x) by Russian roulette; msc: Markovian score climbing, "
        "one persistent CIS chain per example (biased)",
        one_of(OBJECTIVES),
        group=OBJ,
    )
    degenerate: str = setting(
        "warn",
        "ucvae when the importance weights are degenerate: warn once, raise (refuse to train) "
        "or ignore (no check)",
        one_of(DEGENERATE_POLICIES),
        group=OBJ,
    )
    degenerate_ess: float = setting(
        DEGENERATE_ESS,
        "median within-set ESS (in particles) below which the weights count as degenerate",
        number("> 0 (particles of the median within-set ESS)", lambda v: v > 0),
        group=OBJ,
    )
    latent_dim: int | None = setting(
        None,
        f"latent size d (default: {_ARCH})",
        optional("the dataset's default", integer(1)),
        group=MODEL,
        type=int,
    )
    hidden: list[int] | None = setting(
        None,
        f"hidden layer sizes (default: {_HIDDEN})",
        optional("the dataset's default", sizes("layer sizes, each an integer >= 1")),
        group=MODEL,
        type=int,
        nargs="+",
    )
    activation: str = setting(
        "tanh", "activation between the MLP layers", one_of(ACTIVATIONS), group=MODEL
    )
    covariance: str = setting(
        "diag",
        "encoder family: diagonal or full-covariance Gaussian",
        one_of(COVARIANCES),
        group=MODEL,
    )
    flow_layers: int = setting(
        0,
        "encoder family: K > 0 adds K conditional affine coupling layers on top of the "
        "diagonal Gaussian (a normalising flow)",
        integer(0),
        group=MODEL,
    )
    epochs: int = setting(100, "training epochs", integer(1), group=MODEL)
    batch_size: int = setting(100, "minibatch size", integer(1), group=MODEL)
    lr: float = setting(
        1e-3, "Adam learning rate", number("> 0 and finite", lambda v: v > 0), group=MODEL
    )
    seed: int = setting(0, "seed of initialisation, sampling and batches", integer(), group=MODEL)
    val_samples: int = setting(
        100, "S of the IWAE bound on the validation images each epoch", integer(2), group=MODEL
    )
    patience: int | None = setting(
        None,
        "early stopping: stop after this many epochs without validation improvement (default: off)",
        optional("no early stopping", integer(1)),
        group=MODEL,
        type=int,
    )
    time_limit: float | None = setting(
        None,
        "stop after the epoch in which the time spent in optimisation steps passes this many "
        "seconds (see --clock; default: no limit)",
        optional("no limit", number("> 0 seconds", lambda v: v > 0)),
        group=MODEL,
        type=float,
    )
    decoder_limit: float | None = setting(
        None,
        "stop after the epoch in which the decoder evaluations (particles through the decoder, "
        "summed over all steps) pass this number (default: no limit)",
        optional("no limit", number("> 0 decoder evaluations", lambda v: v > 0)),
        group=MODEL,
        type=float,
    )
    clock: str = setting(
        "wall",
        "how training time is measured: wall-clock seconds, or this process's CPU seconds, "
        "robust to other programs on the machine",
        one_of(CLOCKS),
        group=MODEL,
    )
    device: str = setting("cpu", "torch device, e.g. cpu or cuda", group=RUN)
    threads: int | None = setting(
        None,
        "torch CPU threads (default: 1 on digits, torch's choice otherwise)",
        optional("1 on digits, torch's choice otherwise", integer(1)),
        group=RUN,
        type=int,
    )
    out: str = setting("runs/train", "directory for checkpoint.pt", group=RUN)

    RULES: ClassVar[tuple[Callable, ...]] = (*ObjectiveConfig.RULES, _flow_on_diagonal)

    def objective_config(self) -> ObjectiveConfig:
        """The objective's settings alone, as an ``ObjectiveConfig``."""
        return ObjectiveConfig(**{f.name: getattr(self, f.name) for f in fields(ObjectiveConfig)})

    def resolved_latent_dim(self) -> int:
        """``latent_dim``, or the dataset's default in ``vae.DEFAULT_ARCH`` (5 on digits, 50 on
        (fashion-)mnist as in the IWAE paper)."""
        if self.latent_dim is not None:
            return self.latent_dim
        return DEFAULT_ARCH[self.dataset]["latent_dim"]
