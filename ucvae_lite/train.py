"""Training loop: Adam, seeds, tqdm progress, validation each epoch, checkpoints and resume.

One call trains one VAE with one objective (``objectives.py``) and writes ``OUT/checkpoint.pt``
after every epoch (atomically: a crash never leaves a half-written file), so ``resume=True``
loses at most one epoch. Checkpoints hold only tensors and plain Python values and load with
``torch.load(..., weights_only=True)``. A non-finite loss stops training with an error that
names the step; the checkpoint of the last finished epoch is kept.

For ``ucvae`` the loop also checks, before the first epoch and after every epoch, whether the
importance weights are in the degenerate regime of method.md §6, on
``DEGENERATE_CHECK_IMAGES`` validation images: median within-set ESS below
``degenerate_ess`` particles (ESS/S near 1/S) or median PSIS k̂ of 500 draws above
``practical.DEGENERATE_KHAT``. There the meeting time has a near-1/t tail and the unbiased
gradient is tens to hundreds of times noisier than IWAE's. ``degenerate="warn"`` (default)
warns once per run and records the median ESS of every check in the history; ``"raise"``
refuses to train (``DegenerateWeightsError``); ``"ignore"`` is the explicit override.
"""

from __future__ import annotations

import math
import os
import time
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from tqdm.auto import tqdm

from .data import BinaryImages, load_dataset
from .evaluate import log_likelihood
from .objectives import OBJECTIVES, UCVAE_DEFAULTS, ObjectiveConfig, objective
from .practical import DEGENERATE_ESS, degenerate_regime, weight_diagnostics
from .runtime import fast_mode  # noqa: F401 (notebooks import it from here)
from .vae import VAE, build_vae

DEGENERATE_POLICIES = ("warn", "raise", "ignore")
DEGENERATE_CHECK_IMAGES = 100  # validation images in the degenerate-regime check


class TrainingDivergedError(RuntimeError):
    """The loss became NaN or infinite; the last good checkpoint is kept."""


class DegenerateWeightsError(RuntimeError):
    """ucvae refused to train: the importance weights are degenerate (``degenerate="raise"``)."""


@dataclass
class TrainConfig:
    """Everything that defines a training run (saved in its checkpoint).

    ``None`` for num_samples, k, m, eps, encoder, latent_dim, max_steps means "take it from
    ``UCVAE_DEFAULTS``" (latent_dim: 5 on digits, 50 on (fashion-)mnist as in the IWAE paper).
    """

    dataset: str = "digits"
    objective: str = "ucvae"
    num_samples: int | None = None
    k: int | None = None
    m: int | None = None
    eps: float | None = None
    encoder: str | None = None
    max_steps: int | None = None
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
    time_limit: float | None = None  # seconds; stop after the epoch that passes it
    binarization: str = "dynamic"
    data_dir: str | None = None
    subset: list[int] | None = None  # [train, valid, test] sizes for quick runs
    device: str = "cpu"
    threads: int | None = None  # torch CPU threads (None: 1 on digits, torch's default else)
    out: str = "runs/train"
    extra: dict = field(default_factory=dict)

    def objective_config(self) -> ObjectiveConfig:
        latent = self.latent_dim
        if latent is None:
            latent = UCVAE_DEFAULTS.latent_dim if self.dataset == "digits" else 50
        return UCVAE_DEFAULTS.with_(
            num_samples=self.num_samples,
            k=self.k,
            m=self.m,
            eps=self.eps,
            encoder=self.encoder,
            max_steps=self.max_steps,
            latent_dim=latent,
        )


def _history() -> dict:
    keys = ["epoch", "train_bound", "val_ll", "val_se", "time", "steps", "truncated"]
    keys += ["tau_mean", "tau_max", "evals", "ess"]
    return {k: [] for k in keys} | {
        "step_bound": [],
        "step_tau_mean": [],
        "step_tau_max": [],
        "check_median_ess": [],  # degenerate-regime check: before training, then per epoch
        "degenerate": [],
    }


def check_degenerate(
    model: VAE, x: torch.Tensor, ocfg: ObjectiveConfig, cfg: TrainConfig, where: str, seed: int
) -> tuple[float, str | None]:
    """Median within-set ESS (and PSIS k̂) on x at ucvae's S and ε; a message when degenerate.

    ``cfg.degenerate="raise"`` raises ``DegenerateWeightsError`` instead of returning one.
    """
    g = torch.Generator(device=x.device).manual_seed(seed)
    was_training = model.training
    model.eval()
    d = weight_diagnostics(
        model, x, ocfg.num_samples, ocfg.eps, num_sets=20, num_khat=500, generator=g
    )
    model.train(was_training)
    med, khat = d["median_ess"], d["median_khat"]
    msg = degenerate_regime(med, ocfg.num_samples, khat)
    if msg is None and med < cfg.degenerate_ess:  # a stricter threshold than the library's
        msg = f"median within-set ESS {med:.2f} of S = {ocfg.num_samples} is below "
        msg += f"degenerate_ess={cfg.degenerate_ess}"
    if msg is not None:
        msg = f"ucvae {where}: {msg}"
        if cfg.degenerate == "raise":
            raise DegenerateWeightsError(
                msg + '. Refusing to train; pass degenerate="warn" or "ignore" to override.'
            )
    return med, msg


def _save(path: Path, state: dict) -> None:
    tmp = path.with_suffix(".tmp")
    torch.save(state, tmp)
    os.replace(tmp, path)


@torch.no_grad()
def validate(model: VAE, x: torch.Tensor, num_samples: int, seed: int) -> tuple[float, float]:
    """Mean IWAE-``num_samples`` bound on x and its standard error."""
    g = torch.Generator(device=x.device).manual_seed(seed)
    ll = log_likelihood(model, x, num_samples, generator=g)
    return ll.mean().item(), (ll.std() / math.sqrt(len(ll))).item()


def train(
    config: TrainConfig,
    resume: bool = False,
    progress: bool = True,
    data: BinaryImages | None = None,
    callback=None,
) -> tuple[VAE, dict]:
    """Train one VAE; returns (model at its best validation epoch, history).

    ``callback(epoch, model, history)``, if given, runs after every epoch (e.g. to measure
    gradient variance); ``data`` skips loading the dataset again.
    """
    cfg = config
    if cfg.objective not in OBJECTIVES:
        raise ValueError(f"objective must be one of {OBJECTIVES}, got {cfg.objective!r}")
    if cfg.degenerate not in DEGENERATE_POLICIES:
        raise ValueError(f"degenerate must be one of {DEGENERATE_POLICIES}, got {cfg.degenerate!r}")
    threads = cfg.threads or (1 if cfg.dataset == "digits" else None)
    if threads:
        torch.set_num_threads(threads)
    ocfg = cfg.objective_config()
    device = torch.device(cfg.device)
    if data is None:
        data = load_dataset(cfg.dataset, cfg.data_dir, cfg.binarization, cfg.seed)
        if cfg.subset:
            data = data.subset(*cfg.subset)
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    path = out / "checkpoint.pt"

    torch.manual_seed(cfg.seed)
    model = build_vae(
        cfg.dataset,
        data.dim,
        hidden=tuple(cfg.hidden) if cfg.hidden else None,
        latent_dim=ocfg.latent_dim,
        activation=cfg.activation,
        covariance=cfg.covariance,
        flow_layers=cfg.flow_layers,
    ).to(device)
    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr)
    gen = torch.Generator(device=device).manual_seed(cfg.seed + 1)
    data_gen = torch.Generator().manual_seed(cfg.seed + 2)
    history, start, elapsed = _history(), 0, 0.0
    best = {"epoch": -1, "val_ll": -math.inf, "model": None}
    if resume and path.exists():
        ckpt = torch.load(path, map_location=device, weights_only=True)
        model.load_state_dict(ckpt["model"])
        opt.load_state_dict(ckpt["optimizer"])
        gen.set_state(ckpt["rng_model"])
        data_gen.set_state(ckpt["rng_data"])
        history, start, elapsed = ckpt["history"], ckpt["epoch"] + 1, ckpt["elapsed"]
        best = {"epoch": ckpt["best_epoch"], "val_ll": ckpt["best_val"], "model": None}
        best["model"] = ckpt["best_model"]
        if progress:
            tqdm.write(f"resuming {path} after epoch {ckpt['epoch']}")

    fn = objective(cfg.objective)
    valid = data.valid.to(device)
    check = cfg.objective == "ucvae" and cfg.degenerate != "ignore"
    warned = any(history.get("degenerate", []))

    def run_check(where: str) -> None:
        nonlocal warned
        med, msg = check_degenerate(
            model, valid[:DEGENERATE_CHECK_IMAGES], ocfg, cfg, where, cfg.seed + 3
        )
        history.setdefault("check_median_ess", []).append(med)
        history.setdefault("degenerate", []).append(msg is not None)
        if msg is not None and not warned:
            warned = True
            warnings.warn(msg, RuntimeWarning, stacklevel=3)
            if progress:
                tqdm.write(f"WARNING {msg}")

    if check and start == 0:
        run_check("before training")
    for epoch in range(start, cfg.epochs):
        t0 = time.perf_counter()
        xs = data.train_epoch(data_gen)
        perm = torch.randperm(len(xs), generator=data_gen)
        batches = list(perm.split(cfg.batch_size))
        sums = {"bound": 0.0, "tau_mean": 0.0, "evals": 0.0, "ess": 0.0}
        tau_max, truncated = 0, 0
        bar = tqdm(
            batches,
            desc=f"{cfg.objective} epoch {epoch + 1}/{cfg.epochs}",
            disable=not progress,
            leave=False,
        )
        for i, idx in enumerate(bar):
            xb = xs[idx].to(device)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", RuntimeWarning)  # counted and reported below
                step = fn(model, xb, ocfg, gen)
            if not (math.isfinite(step.loss.item()) and math.isfinite(step.bound)):
                raise TrainingDivergedError(
                    f"{cfg.objective} loss is {step.loss.item()} (bound {step.bound}) at epoch "
                    f"{epoch + 1}, step {i + 1} of {len(batches)}. The checkpoint of the last "
                    f"finished epoch is kept in {path}; try a lower --lr, then --resume."
                )
            opt.zero_grad(set_to_none=True)
            step.loss.backward()
            opt.step()
            d = step.diagnostics
            sums["bound"] += step.bound
            sums["ess"] += d.get("ess", float("nan"))
            history["step_bound"].append(step.bound)
            if "tau_mean" in d:
                sums["tau_mean"] += d["tau_mean"]
                sums["evals"] += d["evals"]
                tau_max = max(tau_max, d["tau_max"])
                truncated += d["truncated"]
                history["step_tau_mean"].append(d["tau_mean"])
                history["step_tau_max"].append(d["tau_max"])
                bar.set_postfix(bound=f"{step.bound:.2f}", tau=f"{d['tau_mean']:.2f}")
            else:
                bar.set_postfix(bound=f"{step.bound:.2f}")
        n = len(batches)
        val_ll, val_se = validate(model, valid, cfg.val_samples, cfg.seed)
        elapsed += time.perf_counter() - t0
        is_ucvae = cfg.objective == "ucvae"
        row = {
            "epoch": epoch + 1,
            "train_bound": sums["bound"] / n,
            "val_ll": val_ll,
            "val_se": val_se,
            "time": elapsed,
            "steps": (epoch + 1) * n,
            "truncated": truncated,
            "tau_mean": sums["tau_mean"] / n if is_ucvae else float("nan"),
            "tau_max": float(tau_max) if is_ucvae else float("nan"),
            "evals": sums["evals"] / n if is_ucvae else float(ocfg.num_samples),
            "ess": sums["ess"] / n,
        }
        for k, v in row.items():
            history[k].append(v)
        if truncated:
            tqdm.write(
                f"WARNING epoch {epoch + 1}: {truncated} coupled chains hit max_steps="
                f"{ocfg.max_steps} and were truncated (biased gradient for those points)"
            )
        if progress:
            extra = f", tau mean {row['tau_mean']:.2f} max {tau_max}" if is_ucvae else ""
            tqdm.write(
                f"{cfg.objective} epoch {epoch + 1}: train bound {row['train_bound']:.3f}, "
                f"valid IWAE-{cfg.val_samples} {val_ll:.3f} ± {val_se:.3f}{extra} "
                f"({elapsed:.0f}s)"
            )
        if val_ll > best["val_ll"]:
            best = {"epoch": epoch + 1, "val_ll": val_ll, "model": _cpu_state(model)}
        try:  # a refusal by the degenerate-regime check still keeps this epoch's checkpoint
            if check:
                run_check(f"after epoch {epoch + 1}")
        finally:
            _save(path, _checkpoint(cfg, model, opt, gen, data_gen, history, epoch, elapsed, best))
        if callback is not None:
            callback(epoch + 1, model, history)
        stop_patience = cfg.patience is not None and epoch + 1 - best["epoch"] >= cfg.patience
        stop_time = cfg.time_limit is not None and elapsed >= cfg.time_limit
        if stop_patience or stop_time:
            if progress:
                why = "no validation improvement" if stop_patience else "time limit reached"
                tqdm.write(f"stopping after epoch {epoch + 1}: {why}")
            break
    if best["model"] is not None:
        model.load_state_dict(best["model"])
    return model, history


def _cpu_state(model: VAE) -> dict:
    return {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}


def _checkpoint(cfg, model, opt, gen, data_gen, history, epoch, elapsed, best) -> dict:
    """Tensors and plain Python values only: loadable with weights_only=True."""
    return {
        "config": asdict(cfg),
        "model_config": model.config(),
        "model": _cpu_state(model),
        "optimizer": opt.state_dict(),
        "rng_model": gen.get_state(),
        "rng_data": data_gen.get_state(),
        "history": history,
        "epoch": epoch,
        "elapsed": elapsed,
        "best_epoch": best["epoch"],
        "best_val": best["val_ll"],
        "best_model": best["model"],
    }
