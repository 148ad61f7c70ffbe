"""Training the 2-D digits VAE with each gradient, scored by the exact log-likelihood.

The pieces of ``benchmarks/exact_study.py`` (and of notebook 07's small version): the arms,
the oracle's step, a warm-started training run of one arm, and IWAE or the ELBO trained until
the exact validation log-likelihood stops improving. With a 2-D latent, ``exact`` computes
log p_θ(x) and ∇_θ log p_θ(x) on grids, so every arm is scored by what it is meant to
maximise, and the *oracle* arm trains θ with the minibatch's exact gradient: the best that any
unbiased estimator can do with the same minibatches.
"""

from __future__ import annotations

import math
import time
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor
from torch.optim.swa_utils import AveragedModel
from tqdm.auto import tqdm

from ucvae_lite.core.iwae import iwae_bound
from ucvae_lite.models.vae import VAE
from ucvae_lite.studies import exact
from ucvae_lite.training.data import BinaryImages
from ucvae_lite.training.objectives import (
    ObjectiveConfig,
    TruncationWarning,
    objective,
)


@dataclass(frozen=True)
class Arm:
    """How one arm trains: the objective and its settings; R independent estimates per image,
    averaged (the image repeated in the batch); the images per step (``batch_fraction`` of
    the seed's minibatch: its first rows, so arms stay paired); the optimiser (Adam with β₂,
    or SGD with Polyak–Ruppert averaging, ``sgd_pr``) and, for SGD, its constant step."""

    objective: str
    cfg: ObjectiveConfig
    replicas: int = 1
    beta2: float = 0.999
    optimizer: str = "adam"
    sgd_lr: float = 0.0
    batch_fraction: float = 1.0


# SGD's constant step for the SGD+PR arms. A pilot on seed 99 (not a study seed), 600 steps
# from phase 1's checkpoint, exact train log p: IWAE-10 −21.8148 (step 0.001), −21.8121
# (0.003), −21.8314 (0.01), diverged (0.1); ucvae-10 −21.8198, −21.8114, −21.8294 (the same).
SGD_LR = 0.003

ARMS = {
    "iwae-3": Arm("iwae", ObjectiveConfig(num_samples=3)),
    "ucvae-3": Arm("ucvae", ObjectiveConfig(num_samples=3)),
    "iwae-10": Arm("iwae", ObjectiveConfig(num_samples=10)),
    "ucvae-10": Arm("ucvae", ObjectiveConfig(num_samples=10)),
    "iwae-50": Arm("iwae", ObjectiveConfig(num_samples=50)),
    "msc-10 inclusive": Arm("msc", ObjectiveConfig(num_samples=10, encoder="inclusive")),
    "oracle": Arm("oracle", ObjectiveConfig(num_samples=10)),
    # the unbiased remedies for heavy tails (their expectation is ucvae-10's)
    "ucvae-10 m=5": Arm("ucvae", ObjectiveConfig(num_samples=10, m=5)),
    "ucvae-10 R=2": Arm("ucvae", ObjectiveConfig(num_samples=10), replicas=2),
    "ucvae-10 R=2 B=50": Arm(  # R = 2 at ucvae-10's cost: half the images per step
        "ucvae", ObjectiveConfig(num_samples=10), replicas=2, batch_fraction=0.5
    ),
    "ucvae-10 β₂=0.99": Arm("ucvae", ObjectiveConfig(num_samples=10), beta2=0.99),
    # SGD with a constant step, scored at the average of the iterates of the run's second half
    "iwae-10 SGD+PR": Arm(
        "iwae", ObjectiveConfig(num_samples=10), optimizer="sgd_pr", sgd_lr=SGD_LR
    ),
    "ucvae-10 SGD+PR": Arm(
        "ucvae", ObjectiveConfig(num_samples=10), optimizer="sgd_pr", sgd_lr=SGD_LR
    ),
}


def new_model() -> VAE:
    """The digits VAE with a 2-D latent: 64-64-64-2, tanh (the shipped ``iwae_2d``'s shape)."""
    return VAE(64, (64, 64), 2, activation="tanh")


def exact_ll(model: VAE, x: Tensor) -> float:
    """Mean exact log p_θ(x) over the rows of x, on accepted grids (< 10⁻³ nats each)."""
    return exact.log_likelihoods(model, x).mean().item()


def oracle_step(model: VAE, x: Tensor, cfg: ObjectiveConfig, gen, n: int) -> tuple[Tensor, float]:
    """The oracle's loss and its decoder evaluations per image: −(1/B) Σ_b log p_θ(x_b) on
    an n × n grid per image for θ (its gradient is the minibatch's exact one, up to the grid),
    plus IWAE-S's bound for φ with θ held fixed (as ucvae trains its encoder)."""
    q = model.proposal(x)
    z = q.sample(cfg.num_samples, gen)
    enc = -iwae_bound(model.log_joint(x, z, detach_decoder=True) - q.log_prob(z)).mean()
    return exact.oracle_loss(model, x, n) + enc, float(n * n)


def decoder_sqrt_v(model: VAE, opt: torch.optim.Adam) -> float:
    """Mean over the decoder's parameters of Adam's bias-corrected √v̂: a larger value is a
    shorter step for the same mean gradient."""
    values, beta2 = [], opt.param_groups[0]["betas"][1]
    for p in model.decoder.parameters():
        state = opt.state.get(p, {})
        if "exp_avg_sq" in state:
            t = float(state["step"])
            values.append((state["exp_avg_sq"] / (1 - beta2**t)).sqrt().reshape(-1))
    return torch.cat(values).mean().item() if values else math.nan


def train_until_plateau(
    data: BinaryImages,
    name: str,
    max_epochs: int,
    eval_every: int,
    patience: int,
    seed: int = 0,
    gain: float = 0.01,
) -> dict:
    """``name`` (iwae, elbo or ucvae; S = 10) from initialisation, Adam 10⁻³, batch 100, until the
    exact validation log-likelihood, computed every ``eval_every`` epochs, has not risen by
    more than ``gain`` nats above the kept checkpoint in ``patience`` evaluations (or
    ``max_epochs``). The kept checkpoint (``model``) is the last that beat the one before it
    by more than ``gain``. ``seed`` draws the initial weights, the objective's samples and the
    minibatch order."""
    torch.manual_seed(seed)
    model = new_model()
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    gen = torch.Generator().manual_seed(1 + 2 * seed)  # seed 0: the generators 1 and 2
    data_gen = torch.Generator().manual_seed(2 + 2 * seed)
    cfg = ObjectiveConfig(num_samples=10)
    best, history, since, start = (-math.inf, 0, None), [], 0, time.process_time()
    bar = tqdm(range(1, max_epochs + 1), desc=f"phase 1 {name}")
    for epoch in bar:
        for idx in torch.randperm(len(data.train), generator=data_gen).split(100):
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", TruncationWarning)
                loss = objective(name)(model, data.train[idx], cfg, gen).loss
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        if epoch % eval_every:
            continue
        ll = exact_ll(model, data.valid)
        history.append((epoch, ll))
        bar.set_postfix(valid=f"{ll:.3f}", best=f"{best[0]:.3f}")
        if ll > best[0] + gain:
            best, since = (ll, epoch, {k: v.clone() for k, v in model.state_dict().items()}), 0
        else:
            since += 1
            if since >= patience:
                break
    return {
        "objective": name,
        "best_epoch": best[1],
        "valid_ll": best[0],
        "epochs": epoch,
        "history": history,
        "cpu_seconds": time.process_time() - start,
        "model": best[2],
    }


def train_arm(
    data: BinaryImages,
    start_state: dict,
    arm: str,
    seed: int,
    steps: int,
    lr: float = 1e-3,
    oracle_points: int = 61,
    curve_images: int = 200,
    batch_size: int = 100,
    progress: bool = True,
    state_path: Path | None = None,
) -> dict:
    """One arm (a key of ``ARMS``) from the weights ``start_state``, for ``steps`` steps on
    minibatches that depend only on ``seed`` (the same for every arm). Adam arms: the learning
    rate decays linearly from ``lr`` to 0. SGD+PR arms: a constant step ``Arm.sgd_lr``, and
    the model scored is θ̄, the mean of the iterates after steps T/2 + 1 … T (Polyak–Ruppert
    averaging of the run's second half). Returns a record: exact train and test log p at the
    end, the exact log p of the first ``curve_images`` training images at steps 0, T/2, 3T/4
    and T (with decoder evaluations and CPU seconds so far), and Adam's mean √v̂ (NaN for
    SGD). ``state_path``: where to save the final (averaged) weights, for the gradient
    statistics at that θ."""
    spec = ARMS[arm]
    torch.manual_seed(seed)
    model = new_model()
    model.load_state_dict(start_state)
    opt, sched, averaged = _optimiser(spec, model, lr, steps)
    obj = None if spec.objective == "oracle" else objective(spec.objective)
    if obj is not None:
        obj.init_state(model, len(data.train), data.name)  # msc's chains; nothing for others
    gen = torch.Generator().manual_seed(100 + seed)
    batches = _minibatches(len(data.train), batch_size, spec.batch_fraction, seed)
    curve_x, marks = data.train[:curve_images], {0, steps // 2, (3 * steps) // 4, steps}
    curve, decoder_evals, cpu = [], 0.0, 0.0

    def scored(step: int) -> VAE:  # the averaged iterate once averaging has begun
        return averaged.module if averaged is not None and step > steps // 2 else model

    with tqdm(total=steps, desc=f"{arm} seed {seed}", leave=False, disable=not progress) as bar:
        for step in range(steps + 1):
            if step in marks:
                curve.append((step, decoder_evals, cpu, exact_ll(scored(step), curve_x)))
            if step == steps:
                break
            idx = next(batches)
            tick = time.process_time()
            loss, evals = _arm_loss(spec, obj, model, data.train[idx], idx, gen, oracle_points)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            if sched is not None:
                sched.step()
            if averaged is not None and step + 1 > steps // 2:
                averaged.update_parameters(model)
            cpu += time.process_time() - tick
            decoder_evals += evals
            bar.update()
    final = scored(steps)
    if state_path is not None:
        torch.save(final.state_dict(), state_path)
    sqrt_v = decoder_sqrt_v(model, opt) if spec.optimizer == "adam" else math.nan
    return dict(arm=arm, seed=seed, steps=steps, train_ll=exact_ll(final, data.train),
                test_ll=exact_ll(final, data.test), curve=curve, decoder_evals=decoder_evals,
                cpu_seconds=cpu, sqrt_v=sqrt_v)  # fmt: skip


def _optimiser(spec: Arm, model: VAE, lr: float, steps: int):
    """(optimiser, scheduler or None, averaged model or None): Adam whose learning rate decays
    linearly from ``lr`` to 0 over ``steps``, or SGD with the constant step ``spec.sgd_lr`` and
    Polyak–Ruppert averaging (``AveragedModel``)."""
    if spec.optimizer == "sgd_pr":
        return torch.optim.SGD(model.parameters(), lr=spec.sgd_lr), None, AveragedModel(model)
    opt = torch.optim.Adam(model.parameters(), lr=lr, betas=(0.9, spec.beta2))
    return opt, torch.optim.lr_scheduler.LambdaLR(opt, lambda t: max(0.0, 1 - t / steps)), None


def _minibatches(n: int, batch_size: int, fraction: float, seed: int) -> Iterator[Tensor]:
    """Endless minibatch indices that depend only on ``seed``: epochs of random permutations
    of n examples cut into batches, each batch then cut to ``fraction`` of its examples."""
    generator = torch.Generator().manual_seed(seed)
    while True:
        for idx in torch.randperm(n, generator=generator).split(batch_size):
            yield idx[: max(1, round(fraction * idx.shape[0]))]


def _arm_loss(spec: Arm, obj, model: VAE, x: Tensor, idx: Tensor, gen, oracle_points: int):
    """The arm's loss on the images x (indices idx) and the decoder evaluations it spent. With
    ``spec.replicas`` = R > 1 each image is repeated R times: R independent estimates,
    averaged by the mean loss."""
    if spec.replicas > 1:
        x, idx = x.repeat_interleave(spec.replicas, 0), idx.repeat_interleave(spec.replicas)
    if obj is None:  # the oracle: the exact gradient from a grid
        loss, evals = oracle_step(model, x, spec.cfg, gen, oracle_points)
    else:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", TruncationWarning)
            step = obj.train_step(model, x, idx, spec.cfg, gen)
        loss, evals = step.loss, step.decoder_evals
    return loss, evals * x.shape[0]  # per image, times the images (replicas included)
