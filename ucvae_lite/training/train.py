"""Training: a short loop (``Trainer``) that fires events, and callbacks with one job each.

``train(config)`` trains one VAE with one objective of ``objectives.py`` by Adam:

    for each epoch:   draw this epoch's binary training images, shuffle them into minibatches
        for each step:    loss = objective(model, x_batch);  (θ, φ) ← Adam step along −∇ loss
        validate:         mean IWAE-``val_samples`` bound on the validation images

The loop knows nothing about any one objective: it calls ``Objective.train_step``, saves and
restores ``Objective.state_dict`` (msc's chains), and its callbacks read the ``Step``'s
fields (τ where a step ran coupled chains: ``Step.chains``). ``config`` was checked when it
was made; a run that fails afterwards raises a ``TrainingFailedError`` (the command line's
exit status 1, against 2 for bad input, ``config.ConfigError``).

and fires ``on_train_start``, ``on_epoch_start``, ``on_step_end``, ``on_epoch_end`` and
``on_train_end`` to its callbacks, in this order:

* ``DivergenceGuard``: a NaN or infinite loss stops training with ``TrainingDivergedError``
  naming the epoch and step; the checkpoint of the last finished epoch is kept.
* ``History``: the per-step and per-epoch numbers that ``train`` returns.
* ``DegenerateCheck`` (objectives that run coupled chains: ucvae): are the importance
  weights degenerate? (below)
* ``TruncationReport``: a line for each epoch in which coupled chains hit ``max_steps``.
* ``Progress``: a tqdm bar per epoch and one line after it (``progress=False``: silent).
* ``Checkpoint``: ``OUT/checkpoint.pt`` after every epoch, written atomically (a crash never
  leaves a half-written file), holding only tensors and plain Python values (it loads with
  ``torch.load(..., weights_only=True)``). ``resume=True`` restores the model, optimiser,
  both random generators, history, epoch, elapsed time and best model first, so a resumed run
  continues exactly as an uninterrupted one would.
* ``EpochFunction``: the caller's ``callback(epoch, model, history)``.
* ``EarlyStopping``: ``patience`` epochs without a better validation bound, or ``time_limit``.

Degenerate weights (coupled chains only). Before the first epoch and after every epoch, on
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
from dataclasses import asdict
from pathlib import Path

import torch
from torch import Tensor
from tqdm.auto import tqdm

from ucvae_lite.core.diagnostics import degenerate_regime
from ucvae_lite.models.vae import VAE, build_vae
from ucvae_lite.training.config import CLOCKS, ConfigError, ObjectiveConfig, TrainConfig
from ucvae_lite.training.data import BinaryImages, load_for_config
from ucvae_lite.training.evaluate import iwae_log_likelihood, weight_diagnostics
from ucvae_lite.training.objectives import Step, TruncationWarning, objective
from ucvae_lite.training.runtime import fast_mode  # noqa: F401 (notebooks import it from here)

DEGENERATE_CHECK_IMAGES = 100  # validation images in the degenerate-regime check
CHECKPOINT = "checkpoint.pt"  # the file in ``TrainConfig.out``
# "train_bound" and "step_bound" are the mean Step.log_p (for sumo an unbiased estimate, not a
# bound): the keys keep their 0.1 names, which checkpoints and results tables carry
EPOCH_KEYS = ("epoch", "train_bound", "val_ll", "val_se", "time", "steps", "truncated")
EPOCH_KEYS += ("tau_mean", "tau_max", "evals", "ess", "train_time", "decoder_evals")
STEP_KEYS = ("step_bound", "step_tau_mean", "step_tau_max")
CHECK_KEYS = ("check_median_ess", "degenerate")  # one entry per degenerate-regime check


class TrainingFailedError(RuntimeError):
    """A run whose settings were accepted failed; the checkpoint of the last finished epoch is
    kept (the command line answers with exit status 1)."""


class TrainingDivergedError(TrainingFailedError):
    """The loss became NaN or infinite, or a step failed on non-finite weights."""


class DegenerateWeightsError(TrainingFailedError):
    """ucvae refused to train: the importance weights are degenerate (``degenerate="raise"``)."""


def new_history() -> dict[str, list]:
    """Empty lists: one entry per epoch (EPOCH_KEYS), per step (STEP_KEYS; τ only for steps
    that run coupled chains) and per degenerate-regime check (CHECK_KEYS)."""
    return {key: [] for key in EPOCH_KEYS + STEP_KEYS + CHECK_KEYS}


@torch.no_grad()
def validate(model: VAE, x: Tensor, num_samples: int, seed: int) -> tuple[float, float]:
    """Mean IWAE-``num_samples`` bound on x and its standard error."""
    g = torch.Generator(device=x.device).manual_seed(seed)
    ll = iwae_log_likelihood(model, x, num_samples, generator=g)
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
    (the objective's random numbers), ``data_gen`` (binarisation and shuffling), the
    ``objective``'s own state (``Objective.state_dict``: msc's chains), ``epoch`` (finished
    epochs), ``elapsed`` (seconds spent in steps and validation), ``history`` and ``best``
    (epoch, validation bound and CPU weights of the best epoch so far). During an epoch:
    ``step`` (1, 2, ... of ``num_batches``) and ``last`` (the last ``Step``); after it,
    ``val_ll`` and ``val_se``. A callback ends training by setting ``stop_reason`` (after this
    epoch) or ``error`` (raised once every callback has seen this epoch's end, so the
    checkpoint of this epoch is saved first).

    ``cfg`` was checked when it was made; the trainer hands it to the objective as it is (a
    ``TrainConfig`` is an ``ObjectiveConfig``) and checks nothing again.
    """

    def __init__(self, cfg: TrainConfig, model: VAE, data: BinaryImages, callbacks: list[Callback]):
        self.cfg, self.model, self.data, self.callbacks = cfg, model, data, callbacks
        self.device = next(model.parameters()).device
        self.valid = data.valid.to(self.device)
        self.objective = objective(cfg.objective)
        self.objective.init_state(model, len(data.train), cfg.dataset)
        self.opt = torch.optim.Adam(model.parameters(), lr=cfg.lr)
        self.gen = torch.Generator(device=self.device).manual_seed(cfg.seed + 1)
        self.data_gen = torch.Generator().manual_seed(cfg.seed + 2)
        self.epoch, self.step, self.elapsed, self.train_time = 0, 0, 0.0, 0.0
        self.decoder_evals = 0.0  # particles through the decoder, summed over every step
        self.clock = CLOCKS[cfg.clock]
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
            self.last = self.train_step(index, x)
            self.train_time += self.clock() - tick
            self.decoder_evals += self.last.decoder_evals * x.shape[0]
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
        """loss = objective(model, x); one Adam step along its negative gradient.

        The settings were checked before step 1, so a ``ValueError`` from the step means that
        the numbers went bad (NaN or infinite log-weights): ``TrainingDivergedError``."""
        try:
            with warnings.catch_warnings():
                # truncated chains are counted per epoch (``Step.chains``); every other
                # warning passes through
                warnings.simplefilter("ignore", TruncationWarning)
                step = self.objective.train_step(self.model, x, index, self.cfg, self.gen)
        except ValueError as e:
            raise self.diverged(f"the step failed: {str(e).rstrip('. ')}") from e
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
            "memory": self.objective.state_dict(),  # the objective's state: msc's chains
            "best_epoch": self.best["epoch"],
            "best_val": self.best["val_ll"],
            "best_model": self.best["model"],
        }

    def load_state_dict(self, state: dict) -> None:
        """Continue from ``state_dict()``: the next epoch is the one after ``state["epoch"]``,
        with Adam's moments restored and this run's learning rate ``cfg.lr``.

        The checkpoint must come from the same objective and data (``ConfigError`` otherwise)."""
        saved = state["config"]
        for key in ("objective", "dataset", "subset"):
            if saved.get(key) != getattr(self.cfg, key):
                raise ConfigError(
                    f"cannot resume: the checkpoint was trained with {key}="
                    f"{saved.get(key)!r}, this run has {key}={getattr(self.cfg, key)!r}; pass "
                    f"the same {key}, or start a fresh run (another --out, without --resume)"
                )
        self.objective.load_state_dict(state.get("memory"))
        self.model.load_state_dict(state["model"])
        self.opt.load_state_dict(state["optimizer"])
        for group in self.opt.param_groups:  # this run's lr: "a lower --lr, then --resume"
            group["lr"] = self.cfg.lr
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

    def diverged(self, what: str) -> TrainingDivergedError:
        """The error for a run whose numbers went bad at this step: where, and what to do."""
        where = f"{self.cfg.objective} at epoch {self.epoch + 1}, step {self.step} of "
        where += f"{self.num_batches}: {what}."
        if self.epoch == 0:
            return TrainingDivergedError(f"{where} No epoch finished; try a lower --lr.")
        return TrainingDivergedError(
            f"{where} The checkpoint of epoch {self.epoch} is kept in "
            f"{Path(self.cfg.out) / CHECKPOINT}; try a lower --lr, then --resume."
        )


class DivergenceGuard(Callback):
    """A NaN or infinite loss or bound ends training, naming the epoch and step."""

    def on_step_end(self, t: Trainer) -> None:
        loss, bound = t.last.loss.item(), t.last.log_p
        if not (math.isfinite(loss) and math.isfinite(bound)):
            raise t.diverged(f"the loss is {loss} (bound {bound})")


def _finite_mean(values) -> float:
    """The mean of the finite values (a thinned ucvae step may run no chain: τ is NaN)."""
    finite = [v for v in values if math.isfinite(v)]
    return sum(finite) / len(finite) if finite else math.nan


class History(Callback):
    """Records ``trainer.history``: the bound per step, and τ for steps that ran coupled chains
    (``Step.chains``); per epoch, the means over its steps of bound, τ, log-weight evaluations
    and ESS/S, the max τ, the truncated chains, the validation bound ± SE, the elapsed time
    and the total steps. τ is NaN for epochs without chains."""

    def on_epoch_start(self, t: Trainer) -> None:
        self.steps: list[Step] = []

    def on_step_end(self, t: Trainer) -> None:
        self.steps.append(t.last)
        t.history["step_bound"].append(t.last.log_p)
        if t.last.chains is not None:
            t.history["step_tau_mean"].append(t.last.chains.tau_mean)
            t.history["step_tau_max"].append(t.last.chains.tau_max)

    def on_epoch_end(self, t: Trainer) -> None:
        n = len(self.steps)
        chains = [s.chains for s in self.steps if s.chains is not None]
        row = {
            "epoch": t.epoch,
            "train_bound": sum(s.log_p for s in self.steps) / n,
            "val_ll": t.val_ll,
            "val_se": t.val_se,
            "time": t.elapsed,
            "steps": t.epoch * n,
            "truncated": sum(c.truncated for c in chains),
            "tau_mean": _finite_mean(c.tau_mean for c in chains),
            "tau_max": float(max(c.tau_max for c in chains)) if chains else math.nan,
            "evals": sum(s.log_weight_evals for s in self.steps) / n,
            "train_time": t.train_time,
            "decoder_evals": t.decoder_evals,
            "ess": sum(s.ess for s in self.steps) / n,
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
    """For objectives that run coupled chains (``Objective.coupled_chains``: ucvae), checks
    the importance weights before the first epoch and after every epoch; others are skipped.

    Each check appends the median ESS to ``history["check_median_ess"]`` and its verdict
    (``diagnostics.degenerate_regime`` with ``min_ess``) to ``history["degenerate"]``.
    ``policy="warn"``: one ``RuntimeWarning``, at the run's first degenerate check (the
    history remembers it across a resume); ``"raise"``: ``DegenerateWeightsError``.
    """

    def __init__(self, policy: str, min_ess: float, images: int = DEGENERATE_CHECK_IMAGES):
        self.policy, self.min_ess, self.images = policy, min_ess, images

    def on_epoch_start(self, t: Trainer) -> None:
        if t.epoch == 0 and t.objective.coupled_chains:  # a resumed run was checked before
            message = self.check(t, "before training")
            if message is not None and self.policy == "raise":
                raise self.refusal(message)

    def on_epoch_end(self, t: Trainer) -> None:
        if not t.objective.coupled_chains:
            return
        message = self.check(t, f"after epoch {t.epoch}")
        if message is not None and self.policy == "raise":
            t.error = self.refusal(message)  # raised after the checkpoint is saved

    def check(self, t: Trainer, where: str) -> str | None:
        """Measure, record in the history, warn if this is the first degenerate check."""
        x = t.valid[: self.images]
        ess, khat = median_weight_diagnostics(t.model, x, t.cfg, seed=t.cfg.seed + 3)
        message = degenerate_regime(ess, t.cfg.num_samples, khat, min_ess=self.min_ess)
        t.history["check_median_ess"].append(ess)
        t.history["degenerate"].append(message is not None)
        if message is None:
            return None
        message = f"{t.cfg.objective} {where}: {message}"
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
                f"{t.cfg.max_steps} and were truncated (biased gradient for those points)"
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
        postfix = {"bound": f"{t.last.log_p:.2f}"}
        if t.last.chains is not None:
            postfix["tau"] = f"{t.last.chains.tau_mean:.2f}"
        self.bar.set_postfix(postfix, refresh=False)
        self.bar.update()

    def on_epoch_end(self, t: Trainer) -> None:
        self.bar.close()
        if not self.enabled:
            return
        h = {key: t.history[key][-1] for key in EPOCH_KEYS}  # this epoch's row
        extra = ""
        if t.last.chains is not None:  # this epoch's steps ran coupled chains
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
    callbacks: list[Callback] = [DivergenceGuard(), History()]
    if cfg.degenerate != "ignore":
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

    ``config`` was checked when it was made (``config.check``), and is not checked again.
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
    callbacks = default_callbacks(cfg, out / CHECKPOINT, resume, progress, callback)
    return Trainer(cfg, build_model(cfg, data.dim), data, callbacks).fit()
