"""Training: a short loop (``Trainer``) that fires events, and callbacks with one job each.

``train(config)`` trains one VAE with one objective of ``objectives.py`` by Adam:

    for each epoch:   draw this epoch's binary training images, shuffle them into minibatches
        for each step:    loss = objective(model, x_batch);  (θ, φ) ← Adam step along −∇ loss
        validate:         mean IWAE-``val_samples`` bound on the validation images

and fires ``on_train_start``, ``on_epoch_start``, ``on_step_end``, ``on_epoch_end`` and
``on_train_end`` to its callbacks, in this order:

* ``DivergenceGuard``: a NaN or infinite loss stops training with ``TrainingDivergedError``
  naming the epoch and step; the checkpoint of the last finished epoch is kept.
* ``History``: the per-step and per-epoch numbers that ``train`` returns.
* ``DegenerateCheck`` (ucvae): are the importance weights degenerate? (below)
* ``TruncationReport``: a line for each epoch in which coupled chains hit ``max_steps``.
* ``Progress``: a tqdm bar per epoch and one line after it (``progress=False``: silent).
* ``Checkpoint``: ``OUT/checkpoint.pt`` after every epoch, written atomically (a crash never
  leaves a half-written file), holding only tensors and plain Python values (it loads with
  ``torch.load(..., weights_only=True)``). ``resume=True`` restores the model, optimiser,
  both random generators, history, epoch, elapsed time and best model first, so a resumed run
  continues exactly as an uninterrupted one would.
* ``EpochFunction``: the caller's ``callback(epoch, model, history)``.
* ``EarlyStopping``: ``patience`` epochs without a better validation bound, or ``time_limit``.

Degenerate weights (ucvae only). Before the first epoch and after every epoch, on
``DEGENERATE_CHECK_IMAGES`` validation images, ``diagnostics.degenerate_regime`` asks whether the
median within-set ESS (Σ_s w_s)² / Σ_s w_s² of S particles is below ``degenerate_ess`` or the
median PSIS k̂ is above ``diagnostics.DEGENERATE_KHAT``. There one particle takes nearly all the
weight, the meeting time has a near-1/t tail and the unbiased gradient is tens to hundreds of
times noisier than IWAE's per unit of compute (notebook 06). ``degenerate="warn"`` (default)
warns once per run and records every check in the history; ``"raise"`` refuses to go on
(``DegenerateWeightsError``, after that epoch's checkpoint is saved); ``"ignore"`` skips it.
"""

from __future__ import annotations

import math
import os
import time
import warnings
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from torch import Tensor
from tqdm.auto import tqdm

from ucvae_lite.core.diagnostics import DEGENERATE_ESS, degenerate_regime
from ucvae_lite.models.vae import DEFAULT_ARCH, VAE, build_vae
from ucvae_lite.peers.msc import MSCMemory
from ucvae_lite.training.data import DATASETS, BinaryImages, load_for_config
from ucvae_lite.training.evaluate import log_likelihood, weight_diagnostics
from ucvae_lite.training.objectives import (
    OBJECTIVES,
    ObjectiveConfig,
    Step,
    StepContext,
    TruncationWarning,
    objective,
)
from ucvae_lite.training.runtime import fast_mode  # noqa: F401 (notebooks import it from here)

DEGENERATE_POLICIES = ("warn", "raise", "ignore")
# How optimisation steps are timed (``TrainConfig.clock``, ``time_limit``): wall-clock seconds,
# or this process's CPU seconds (with one thread, about the same on an idle machine, and
# robust to other processes sharing the machine).
CLOCKS = {"wall": time.perf_counter, "process": time.process_time}
DEGENERATE_CHECK_IMAGES = 100  # validation images in the degenerate-regime check
EPOCH_KEYS = ("epoch", "train_bound", "val_ll", "val_se", "time", "steps", "truncated")
EPOCH_KEYS += ("tau_mean", "tau_max", "evals", "ess", "train_time", "decoder_evals")
STEP_KEYS = ("step_bound", "step_tau_mean", "step_tau_max")
CHECK_KEYS = ("check_median_ess", "degenerate")  # one entry per degenerate-regime check


class TrainingDivergedError(RuntimeError):
    """The loss became NaN or infinite, or a step failed on non-finite weights; the last good
    checkpoint is kept."""


class DegenerateWeightsError(RuntimeError):
    """ucvae refused to train: the importance weights are degenerate (``degenerate="raise"``)."""


def _require(ok: bool, message: str) -> None:
    """Raise ``ValueError(message)`` unless ``ok``."""
    if not ok:
        raise ValueError(message)


def _int_at_least(value, minimum: int) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= minimum


@dataclass
class TrainConfig:
    """Everything that defines a training run (saved in its checkpoint).

    ``None`` for num_samples, k, m, eps, encoder, max_steps, rejuvenate, correction_prob and
    the sumo settings means "the ``ObjectiveConfig`` default"; for latent_dim, "the dataset's
    default" (``resolved_latent_dim``).
    """

    dataset: str = "digits"
    objective: str = "ucvae"
    num_samples: int | None = None
    k: int | None = None
    m: int | None = None
    eps: float | None = None
    encoder: str | None = None
    max_steps: int | None = None
    rejuvenate: float | None = None  # ucvae: MH move on the references, scale c × σ_φ(x)
    correction_prob: float | None = None  # ucvae: thinned bias correction probability
    sumo_cutoff: int | None = None  # sumo: where the roulette's tail turns geometric
    sumo_min_terms: int | None = None  # sumo: the IWAE bound kept whole
    latent_dim: int | None = None
    hidden: list[int] | None = None
    activation: str = "tanh"
    covariance: str = "diag"  # encoder family: "diag" or "full" Gaussian (vae.COVARIANCES)
    flow_layers: int = 0  # > 0: that many affine coupling layers on the diag Gaussian (flows.py)
    degenerate: str = "warn"  # ucvae in the degenerate regime: "warn", "raise" or "ignore"
    degenerate_ess: float = DEGENERATE_ESS  # median within-set ESS (particles) below = degenerate
    epochs: int = 100
    batch_size: int = 100
    lr: float = 1e-3
    seed: int = 0
    val_samples: int = 100
    patience: int | None = None  # early stopping: epochs without validation improvement
    time_limit: float | None = None  # seconds of optimisation steps; stop after that epoch
    decoder_limit: float | None = None  # decoder evaluations (all steps); stop after that epoch
    clock: str = "wall"  # how steps are timed: "wall" (perf_counter) or "process" (CPU time)
    binarization: str = "dynamic"
    data_dir: str | None = None
    subset: list[int] | None = None  # [train, valid, test] sizes for quick runs
    device: str = "cpu"
    threads: int | None = None  # torch CPU threads (None: 1 on digits, torch's default else)
    out: str = "runs/train"

    def __post_init__(self) -> None:
        """Reject bad settings now, with a message that says what to change."""
        _require(
            self.dataset in DATASETS, f"dataset must be one of {DATASETS}, got {self.dataset!r}"
        )
        _require(
            self.objective in OBJECTIVES,
            f"objective must be one of {OBJECTIVES}, got {self.objective!r}",
        )
        _require(
            self.degenerate in DEGENERATE_POLICIES,
            f"degenerate must be one of {DEGENERATE_POLICIES}, got {self.degenerate!r}",
        )
        _require(
            self.degenerate_ess > 0,
            f"degenerate_ess must be > 0 particles, got {self.degenerate_ess!r}",
        )
        for name, minimum in (("epochs", 1), ("batch_size", 1), ("val_samples", 2)):
            value = getattr(self, name)
            _require(
                _int_at_least(value, minimum),
                f"{name} must be an integer >= {minimum}, got {value!r}",
            )
        _require(self.lr > 0, f"lr must be > 0, got {self.lr!r}")
        _require(
            self.patience is None or _int_at_least(self.patience, 1),
            f"patience must be None (no early stopping) or an integer >= 1, got {self.patience!r}",
        )
        _require(
            self.time_limit is None or self.time_limit > 0,
            f"time_limit must be None (no limit) or > 0 seconds, got {self.time_limit!r}",
        )
        _require(
            self.decoder_limit is None or self.decoder_limit > 0,
            f"decoder_limit must be None (no limit) or > 0 decoder evaluations, "
            f"got {self.decoder_limit!r}",
        )
        _require(
            self.clock in CLOCKS,
            f"clock must be one of {tuple(CLOCKS)} (how training time is measured), "
            f"got {self.clock!r}",
        )
        _require(
            self.latent_dim is None or _int_at_least(self.latent_dim, 1),
            f"latent_dim must be None (the dataset's default) or an integer >= 1, "
            f"got {self.latent_dim!r}",
        )
        _require(
            self.subset is None
            or (len(self.subset) == 3 and all(_int_at_least(n, 1) for n in self.subset)),
            f"subset must be None (all images) or three sizes [train, valid, test], each an "
            f"integer >= 1, got {self.subset!r}",
        )
        self.objective_config()  # raises for a bad num_samples, k, m, eps, encoder or max_steps

    def objective_config(self) -> ObjectiveConfig:
        """The objective's settings: ``ObjectiveConfig()`` with this run's non-None overrides."""
        return ObjectiveConfig().with_(
            num_samples=self.num_samples,
            k=self.k,
            m=self.m,
            eps=self.eps,
            encoder=self.encoder,
            max_steps=self.max_steps,
            rejuvenate=self.rejuvenate,
            correction_prob=self.correction_prob,
            sumo_cutoff=self.sumo_cutoff,
            sumo_min_terms=self.sumo_min_terms,
        )

    def resolved_latent_dim(self) -> int:
        """``latent_dim``, or the dataset's default in ``vae.DEFAULT_ARCH`` (5 on digits, 50 on
        (fashion-)mnist as in the IWAE paper)."""
        if self.latent_dim is not None:
            return self.latent_dim
        return DEFAULT_ARCH[self.dataset]["latent_dim"]


def new_history() -> dict[str, list]:
    """Empty lists: one entry per epoch (EPOCH_KEYS), per step (STEP_KEYS; τ for ucvae only)
    and per degenerate-regime check (CHECK_KEYS)."""
    return {key: [] for key in EPOCH_KEYS + STEP_KEYS + CHECK_KEYS}


@torch.no_grad()
def validate(model: VAE, x: Tensor, num_samples: int, seed: int) -> tuple[float, float]:
    """Mean IWAE-``num_samples`` bound on x and its standard error."""
    g = torch.Generator(device=x.device).manual_seed(seed)
    ll = log_likelihood(model, x, num_samples, generator=g)
    return ll.mean().item(), (ll.std() / math.sqrt(len(ll))).item()


def _cpu_state(model: VAE) -> dict:
    return {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}


def save_atomically(path: Path, state: dict) -> None:
    """``torch.save`` to a temporary file, then rename it: ``path`` is never half-written."""
    tmp = path.with_suffix(".tmp")
    torch.save(state, tmp)
    os.replace(tmp, path)


class Callback:
    """One job in the training loop: override the events it needs; each gets the ``Trainer``."""

    def on_train_start(self, trainer: Trainer) -> None:
        """Once, before anything else."""

    def on_epoch_start(self, trainer: Trainer) -> None:
        """Before each epoch's first step (``trainer.epoch`` epochs are finished)."""

    def on_step_end(self, trainer: Trainer) -> None:
        """After each optimiser step (``trainer.last`` is its ``Step``)."""

    def on_epoch_end(self, trainer: Trainer) -> None:
        """After each epoch's validation (``trainer.epoch`` now counts this epoch)."""

    def on_train_end(self, trainer: Trainer) -> None:
        """Once, after the last epoch (not when an error ends training)."""


class Trainer:
    """Adam on one objective, epoch after epoch; the callbacks do everything else.

    Its state, all of which a checkpoint holds (``state_dict``): ``model``, ``opt``, ``gen``
    (the objective's random numbers), ``data_gen`` (binarisation and shuffling), ``epoch``
    (finished epochs), ``elapsed`` (seconds spent in steps and validation), ``history`` and
    ``best`` (epoch, validation bound and CPU weights of the best epoch so far). During an
    epoch: ``step`` (1, 2, ... of ``num_batches``) and ``last`` (the last ``Step``); after
    it, ``val_ll`` and ``val_se``. A callback ends training by setting ``stop_reason`` (after
    this epoch) or ``error`` (raised once every callback has seen this epoch's end, so the
    checkpoint of this epoch is saved first).
    """

    def __init__(self, cfg: TrainConfig, model: VAE, data: BinaryImages, callbacks: list[Callback]):
        self.cfg, self.ocfg = cfg, cfg.objective_config()
        self.model, self.data, self.callbacks = model, data, callbacks
        self.device = next(model.parameters()).device
        self.valid = data.valid.to(self.device)
        self.objective = objective(cfg.objective)
        self.opt = torch.optim.Adam(model.parameters(), lr=cfg.lr)
        self.gen = torch.Generator(device=self.device).manual_seed(cfg.seed + 1)
        self.data_gen = torch.Generator().manual_seed(cfg.seed + 2)
        self.epoch, self.step, self.elapsed, self.train_time = 0, 0, 0.0, 0.0
        self.decoder_evals = 0.0  # particles through the decoder, summed over every step
        self.clock = CLOCKS[cfg.clock]
        self.memory = None  # msc: one persistent chain per training example
        if cfg.objective == "msc":
            latent = model.latent_dim
            self.memory = MSCMemory.empty(len(data.train), latent, cfg.dataset, self.device)
        self.num_batches = math.ceil(len(data.train) / cfg.batch_size)
        self.history = new_history()
        self.best = {"epoch": -1, "val_ll": -math.inf, "model": None}
        self.last: Step | None = None
        self.val_ll = self.val_se = math.nan
        self.stop_reason: str | None = None
        self.error: Exception | None = None

    def fire(self, event: str) -> None:
        """Call every callback's ``event`` method, in list order."""
        for callback in self.callbacks:
            getattr(callback, event)(self)

    def fit(self) -> tuple[VAE, dict]:
        """Train to ``cfg.epochs`` or until a callback stops; returns (best model, history)."""
        self.fire("on_train_start")
        while self.epoch < self.cfg.epochs and self.stop_reason is None:
            self.fire("on_epoch_start")
            self.run_epoch()
            self.fire("on_epoch_end")
            if self.error is not None:
                raise self.error
        if self.best["model"] is not None:
            self.model.load_state_dict(self.best["model"])
        self.fire("on_train_end")
        return self.model, self.history

    def run_epoch(self) -> None:
        """One pass over the shuffled training images, then validation and the best epoch."""
        start = time.perf_counter()
        for step, (index, x) in enumerate(self.batches(), start=1):
            tick = self.clock()
            self.step = step
            try:
                self.last = self.train_step(index, x)
            except ValueError as e:  # settings were checked before step 1: the run failed
                raise TrainingDivergedError(
                    f"{self.cfg.objective} step failed at epoch {self.epoch + 1}, step {step} "
                    f"of {self.num_batches}: {e} The checkpoint of the last finished epoch is "
                    f"kept in {self.cfg.out}; try a lower --lr, then --resume."
                ) from e
            self.train_time += self.clock() - tick
            per_point = self.last.diagnostics.get("decoder_evals", self.ocfg.num_samples)
            self.decoder_evals += per_point * x.shape[0]
            self.fire("on_step_end")
        cfg = self.cfg
        self.val_ll, self.val_se = validate(self.model, self.valid, cfg.val_samples, cfg.seed)
        self.elapsed += time.perf_counter() - start
        self.epoch += 1
        if self.val_ll > self.best["val_ll"]:
            self.best = {
                "epoch": self.epoch,
                "val_ll": self.val_ll,
                "model": _cpu_state(self.model),
            }

    def batches(self) -> Iterator[tuple[Tensor, Tensor]]:
        """This epoch's minibatches as (example indices, images): fresh binary images (if
        dynamic), shuffled by ``data_gen``."""
        xs = self.data.train_epoch(self.data_gen)
        order = torch.randperm(len(xs), generator=self.data_gen, device=self.data_gen.device)
        for idx in order.split(self.cfg.batch_size):
            yield idx.to(self.device), xs[idx].to(self.device)

    def train_step(self, index: Tensor, x: Tensor) -> Step:
        """loss = objective(model, x); one Adam step along its negative gradient."""
        context = StepContext(index, self.memory)
        with warnings.catch_warnings():
            # truncated chains are counted per epoch; every other warning passes through
            warnings.simplefilter("ignore", TruncationWarning)
            step = self.objective(self.model, x, self.ocfg, self.gen, context)
        self.opt.zero_grad(set_to_none=True)
        step.loss.backward()
        self.opt.step()
        return step

    def state_dict(self) -> dict:
        """Everything needed to continue exactly; tensors and plain Python values only."""
        return {
            "config": asdict(self.cfg),
            "model_config": self.model.config(),
            "model": _cpu_state(self.model),
            "optimizer": self.opt.state_dict(),
            "rng_model": self.gen.get_state(),
            "rng_data": self.data_gen.get_state(),
            "history": self.history,
            "epoch": self.epoch - 1,  # index of the last finished epoch (0: the first)
            "elapsed": self.elapsed,
            "train_time": self.train_time,
            "decoder_evals": self.decoder_evals,
            "memory": self.memory.state_dict() if self.memory is not None else None,
            "best_epoch": self.best["epoch"],
            "best_val": self.best["val_ll"],
            "best_model": self.best["model"],
        }

    def load_state_dict(self, state: dict) -> None:
        """Continue from ``state_dict()``: the next epoch is the one after ``state["epoch"]``.

        The checkpoint must come from the same objective and data (ValueError otherwise)."""
        saved = state["config"]
        for key in ("objective", "dataset", "subset"):
            if saved.get(key) != getattr(self.cfg, key):
                raise ValueError(
                    f"cannot resume: the checkpoint was trained with {key}="
                    f"{saved.get(key)!r}, this run has {key}={getattr(self.cfg, key)!r}; pass "
                    f"the same {key}, or start a fresh run (another --out, without --resume)"
                )
        if self.memory is not None:
            if state.get("memory") is None:
                raise ValueError("cannot resume msc: the checkpoint holds no MSC chains")
            self.memory.load_state_dict(state["memory"])
        self.model.load_state_dict(state["model"])
        self.opt.load_state_dict(state["optimizer"])
        self.gen.set_state(state["rng_model"].cpu())  # generator states are CPU byte tensors
        self.data_gen.set_state(state["rng_data"].cpu())
        self.history = new_history() | state["history"]
        self.epoch, self.elapsed = state["epoch"] + 1, state["elapsed"]
        self.train_time = state.get("train_time", state["elapsed"])
        self.decoder_evals = state.get("decoder_evals", 0.0)  # older checkpoints: not counted
        self.best = {
            "epoch": state["best_epoch"],
            "val_ll": state["best_val"],
            "model": state["best_model"],
        }


class DivergenceGuard(Callback):
    """A NaN or infinite loss or bound ends training, naming the epoch and step."""

    def __init__(self, checkpoint: Path):
        self.checkpoint = checkpoint

    def on_step_end(self, t: Trainer) -> None:
        loss, bound = t.last.loss.item(), t.last.bound
        if not (math.isfinite(loss) and math.isfinite(bound)):
            raise TrainingDivergedError(
                f"{t.cfg.objective} loss is {loss} (bound {bound}) at epoch {t.epoch + 1}, "
                f"step {t.step} of {t.num_batches}. The checkpoint of the last finished epoch "
                f"is kept in {self.checkpoint}; try a lower --lr, then --resume."
            )


def _finite_mean(values) -> float:
    """The mean of the finite values (a thinned ucvae step may run no chain: τ is NaN)."""
    finite = [v for v in values if math.isfinite(v)]
    return sum(finite) / len(finite) if finite else math.nan


class History(Callback):
    """Records ``trainer.history``: bound (and τ, for ucvae) per step; per epoch, the means
    over its steps of bound, τ, evaluations and ESS/S, the max τ, the truncated chains, the
    validation bound ± SE, the elapsed time and the total steps."""

    def on_epoch_start(self, t: Trainer) -> None:
        self.bounds: list[float] = []
        self.diagnostics: list[dict] = []

    def on_step_end(self, t: Trainer) -> None:
        d = t.last.diagnostics
        self.bounds.append(t.last.bound)
        self.diagnostics.append(d)
        t.history["step_bound"].append(t.last.bound)
        if "tau_mean" in d:
            t.history["step_tau_mean"].append(d["tau_mean"])
            t.history["step_tau_max"].append(d["tau_max"])

    def on_epoch_end(self, t: Trainer) -> None:
        n, ds = len(self.bounds), self.diagnostics
        ucvae = t.cfg.objective == "ucvae"
        row = {
            "epoch": t.epoch,
            "train_bound": sum(self.bounds) / n,
            "val_ll": t.val_ll,
            "val_se": t.val_se,
            "time": t.elapsed,
            "steps": t.epoch * n,
            "truncated": sum(d.get("truncated", 0) for d in ds),
            "tau_mean": _finite_mean(d["tau_mean"] for d in ds) if ucvae else math.nan,
            "tau_max": float(max(d["tau_max"] for d in ds)) if ucvae else math.nan,
            "evals": sum(d.get("evals", t.ocfg.num_samples) for d in ds) / n,
            "train_time": t.train_time,
            "decoder_evals": t.decoder_evals,
            "ess": sum(d.get("ess", math.nan) for d in ds) / n,
        }
        for key, value in row.items():
            t.history[key].append(value)


def median_weight_diagnostics(
    model: VAE, x: Tensor, ocfg: ObjectiveConfig, seed: int
) -> tuple[float, float]:
    """Median within-set ESS (20 sets of S) and median PSIS k̂ (500 draws) of q_φ on x, at the
    objective's S and ε; a generator of its own leaves the training's random numbers alone."""
    g = torch.Generator(device=x.device).manual_seed(seed)
    was_training = model.training
    model.eval()
    d = weight_diagnostics(
        model, x, ocfg.num_samples, ocfg.eps, num_sets=20, num_khat=500, generator=g
    )
    model.train(was_training)
    return d["median_ess"], d["median_khat"]


class DegenerateCheck(Callback):
    """ucvae: checks the importance weights before the first epoch and after every epoch.

    Each check appends the median ESS to ``history["check_median_ess"]`` and its verdict
    (``diagnostics.degenerate_regime`` with ``min_ess``) to ``history["degenerate"]``.
    ``policy="warn"``: one ``RuntimeWarning``, at the run's first degenerate check (the
    history remembers it across a resume); ``"raise"``: ``DegenerateWeightsError``.
    """

    def __init__(self, policy: str, min_ess: float, images: int = DEGENERATE_CHECK_IMAGES):
        self.policy, self.min_ess, self.images = policy, min_ess, images

    def on_epoch_start(self, t: Trainer) -> None:
        if t.epoch == 0:  # before training (a resumed run was checked before it stopped)
            message = self.check(t, "before training")
            if message is not None and self.policy == "raise":
                raise self.refusal(message)

    def on_epoch_end(self, t: Trainer) -> None:
        message = self.check(t, f"after epoch {t.epoch}")
        if message is not None and self.policy == "raise":
            t.error = self.refusal(message)  # raised after the checkpoint is saved

    def check(self, t: Trainer, where: str) -> str | None:
        """Measure, record in the history, warn if this is the first degenerate check."""
        x = t.valid[: self.images]
        ess, khat = median_weight_diagnostics(t.model, x, t.ocfg, seed=t.cfg.seed + 3)
        message = degenerate_regime(ess, t.ocfg.num_samples, khat, min_ess=self.min_ess)
        t.history["check_median_ess"].append(ess)
        t.history["degenerate"].append(message is not None)
        if message is None:
            return None
        message = f"ucvae {where}: {message}"
        if self.policy == "warn" and t.history["degenerate"].count(True) == 1:
            warnings.warn(message, RuntimeWarning, stacklevel=2)
        return message

    @staticmethod
    def refusal(message: str) -> DegenerateWeightsError:
        return DegenerateWeightsError(
            message + '. Refusing to train; pass degenerate="warn" or "ignore" to override.'
        )


class TruncationReport(Callback):
    """A line for each epoch in which coupled chains hit ``max_steps`` (biased gradients)."""

    def on_epoch_end(self, t: Trainer) -> None:
        truncated = t.history["truncated"][-1]
        if truncated:
            tqdm.write(
                f"WARNING epoch {t.epoch}: {truncated} coupled chains hit max_steps="
                f"{t.ocfg.max_steps} and were truncated (biased gradient for those points)"
            )


class Progress(Callback):
    """A tqdm bar per epoch, one line after each epoch and one when training stops early;
    ``enabled=False`` prints none of them."""

    def __init__(self, enabled: bool = True):
        self.enabled = enabled

    def on_epoch_start(self, t: Trainer) -> None:
        desc = f"{t.cfg.objective} epoch {t.epoch + 1}/{t.cfg.epochs}"
        self.bar = tqdm(total=t.num_batches, desc=desc, disable=not self.enabled, leave=False)

    def on_step_end(self, t: Trainer) -> None:
        postfix = {"bound": f"{t.last.bound:.2f}"}
        if "tau_mean" in t.last.diagnostics:
            postfix["tau"] = f"{t.last.diagnostics['tau_mean']:.2f}"
        self.bar.set_postfix(postfix, refresh=False)
        self.bar.update()

    def on_epoch_end(self, t: Trainer) -> None:
        self.bar.close()
        if not self.enabled:
            return
        h = {key: t.history[key][-1] for key in EPOCH_KEYS}  # this epoch's row
        extra = ""
        if t.cfg.objective == "ucvae":
            extra = f", tau mean {h['tau_mean']:.2f} max {h['tau_max']:.0f}"
        tqdm.write(
            f"{t.cfg.objective} epoch {t.epoch}: train bound {h['train_bound']:.3f}, "
            f"valid IWAE-{t.cfg.val_samples} {h['val_ll']:.3f} ± {h['val_se']:.3f}{extra} "
            f"({h['time']:.0f}s)"
        )

    def on_train_end(self, t: Trainer) -> None:
        if self.enabled and t.stop_reason is not None:
            tqdm.write(f"stopping after epoch {t.epoch}: {t.stop_reason}")


class Checkpoint(Callback):
    """Saves ``trainer.state_dict()`` to ``path`` after every epoch; with ``resume``, restores
    it before training (if the file exists)."""

    def __init__(self, path: Path, resume: bool = False, verbose: bool = True):
        self.path, self.resume, self.verbose = path, resume, verbose

    def on_train_start(self, t: Trainer) -> None:
        if self.resume and self.path.exists():
            t.load_state_dict(torch.load(self.path, map_location=t.device, weights_only=True))
            if self.verbose:
                tqdm.write(f"resuming {self.path} after epoch {t.epoch}")

    def on_epoch_end(self, t: Trainer) -> None:
        save_atomically(self.path, t.state_dict())


class EpochFunction(Callback):
    """Calls ``fn(epoch, model, history)`` after every epoch."""

    def __init__(self, fn: Callable[[int, VAE, dict], None]):
        self.fn = fn

    def on_epoch_end(self, t: Trainer) -> None:
        self.fn(t.epoch, t.model, t.history)


class EarlyStopping(Callback):
    """Stops after ``patience`` epochs without a better validation bound, after the epoch in
    which the training time passes ``time_limit`` seconds, or after the epoch in which the
    decoder evaluations pass ``decoder_limit`` (each may be None: no limit)."""

    def __init__(
        self, patience: int | None, time_limit: float | None, decoder_limit: float | None = None
    ):
        self.patience, self.time_limit, self.decoder_limit = patience, time_limit, decoder_limit

    def on_epoch_end(self, t: Trainer) -> None:
        if self.patience is not None and t.epoch - t.best["epoch"] >= self.patience:
            t.stop_reason = "no validation improvement"
        elif self.time_limit is not None and t.train_time >= self.time_limit:
            t.stop_reason = "time limit reached"
        elif self.decoder_limit is not None and t.decoder_evals >= self.decoder_limit:
            t.stop_reason = "decoder-evaluation budget reached"


def default_callbacks(
    cfg: TrainConfig,
    checkpoint: Path,
    resume: bool = False,
    progress: bool = True,
    callback: Callable[[int, VAE, dict], None] | None = None,
) -> list[Callback]:
    """``train``'s callbacks, in the order they run at every event: the guard sees each step
    first, the history is written before anything reads it, the checkpoint is saved after
    everything that writes the history."""
    callbacks: list[Callback] = [DivergenceGuard(checkpoint), History()]
    if cfg.objective == "ucvae" and cfg.degenerate != "ignore":
        callbacks.append(DegenerateCheck(cfg.degenerate, cfg.degenerate_ess))
    callbacks += [TruncationReport(), Progress(progress), Checkpoint(checkpoint, resume, progress)]
    if callback is not None:
        callbacks.append(EpochFunction(callback))
    callbacks.append(EarlyStopping(cfg.patience, cfg.time_limit, cfg.decoder_limit))
    return callbacks


def build_model(cfg: TrainConfig, data_dim: int) -> VAE:
    """The VAE of ``cfg`` on ``cfg.device``, initialised after ``torch.manual_seed(cfg.seed)``
    on the CPU (the same initial weights whatever the device), then moved."""
    torch.manual_seed(cfg.seed)
    with torch.device("cpu"):
        model = build_vae(
            cfg.dataset,
            data_dim,
            hidden=tuple(cfg.hidden) if cfg.hidden else None,
            latent_dim=cfg.resolved_latent_dim(),
            activation=cfg.activation,
            covariance=cfg.covariance,
            flow_layers=cfg.flow_layers,
        )
    return model.to(cfg.device)


def train(
    config: TrainConfig,
    resume: bool = False,
    progress: bool = True,
    data: BinaryImages | None = None,
    callback: Callable[[int, VAE, dict], None] | None = None,
) -> tuple[VAE, dict]:
    """Train one VAE; returns (model at its best validation epoch, history).

    ``resume`` continues from ``config.out``/checkpoint.pt if it exists; ``progress=False``
    prints no bar or per-epoch line; ``data`` skips loading the dataset again;
    ``callback(epoch, model, history)``, if given, runs after every epoch (e.g. to measure
    gradient variance).
    """
    cfg = config
    threads = cfg.threads or (1 if cfg.dataset == "digits" else None)
    if threads:
        torch.set_num_threads(threads)
    if data is None:
        data = load_for_config(cfg.dataset, cfg.data_dir, cfg.binarization, cfg.seed, cfg.subset)
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    callbacks = default_callbacks(cfg, out / "checkpoint.pt", resume, progress, callback)
    return Trainer(cfg, build_model(cfg, data.dim), data, callbacks).fit()
