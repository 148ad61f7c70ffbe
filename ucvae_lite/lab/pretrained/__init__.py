"""Small pretrained digits VAEs shipped with the package, and the command that retrains them.

Four checkpoints in this folder, each trained by ``train.train`` with its defaults (Adam 1e-3,
batch 100, S = 10, dynamic binarisation, seed 0, the 64-64-64 tanh MLP of
``vae.DEFAULT_ARCH``) for ``EPOCHS`` epochs, keeping the weights of the best validation epoch:

    digits_elbo.pt     objective "elbo",  d = 5
    digits_iwae.pt     objective "iwae",  d = 5
    digits_ucvae.pt    objective "ucvae", d = 5  (k = 1, m = 2, IWAE-bound encoder)
    digits_iwae_2d.pt  objective "iwae",  d = 2  (its posterior can be drawn on a grid)

Each file holds only tensors and plain Python values (it loads with
``torch.load(..., weights_only=True)``, through ``evaluate.load_model``): the model's config
and weights, the training config, the per-epoch history (validation IWAE-100 bound, time and,
for ucvae, meeting times and evaluations), the test log-likelihood (IWAE-5000 bound on the 397
test images, seed 0), a cheap deterministic score for tests (``check``: IWAE-100 on the first
100 test images, seed 0) and ``weights_sha256``, a hash of the weights and of the history's
deterministic entries (everything but wall-clock times).

Retrain them (overwrites this folder; ``--out DIR`` writes elsewhere, ``--check`` retrains
into a temporary folder and compares hashes with the shipped files)::

    python -m ucvae_lite.lab.pretrained --retrain

Training is deterministic on the CPU with one thread (``train`` sets it for digits): the same
torch version on the same kind of CPU reproduces every weight bit for bit, and the hash says
whether it did (``--check``). Measured (``RETRAIN_TIME``): 16 min 22 s for all four on a
2-core machine shared with other work (elbo 106 s, iwae 90 s, ucvae 664 s, iwae_2d 113 s;
torch 2.13.0+cpu); the files weigh 425 KB in all. The ucvae run truncated 15 of its 2.4
million chains at ``max_steps`` = 1000 (reported in its history, ``truncated``).
"""

from __future__ import annotations

import hashlib
import tempfile
import time
from dataclasses import asdict, replace
from pathlib import Path

import torch
from tqdm.auto import tqdm

from ucvae_lite.models.vae import VAE
from ucvae_lite.training.data import BinaryImages, load_dataset
from ucvae_lite.training.evaluate import evaluate, iwae_log_likelihood, load_model
from ucvae_lite.training.train import TrainConfig, train

FOLDER = Path(__file__).resolve().parent
EPOCHS = 2000
EVAL_SAMPLES = 5000  # the test log-likelihood: IWAE-5000 bound, as in the IWAE paper
CHECK_SAMPLES, CHECK_IMAGES = 100, 100  # the cheap deterministic score the tests recompute
SPECS: dict[str, dict] = {
    "elbo": {"objective": "elbo"},
    "iwae": {"objective": "iwae"},
    "ucvae": {"objective": "ucvae"},
    "iwae_2d": {"objective": "iwae", "latent_dim": 2},
}
NAMES = tuple(SPECS)
# per-epoch history kept in the file (train's History; the chains' entries for ucvae only)
HISTORY_KEYS = ("val_ll", "time", "ess")
UCVAE_HISTORY_KEYS = ("tau_mean", "tau_max", "evals", "truncated")
RETRAIN_COMMAND = "python -m ucvae_lite.lab.pretrained --retrain"
RETRAIN_TIME = "16 min 22 s on 2 shared CPU cores (torch 2.13.0+cpu)"


def path(name: str, folder: Path = FOLDER) -> Path:
    """The checkpoint file of ``name`` (one of ``NAMES``)."""
    if name not in SPECS:
        raise ValueError(f"no pretrained model {name!r}; choose one of {', '.join(NAMES)}")
    return Path(folder) / f"digits_{name}.pt"


def config(name: str, epochs: int = EPOCHS, subset: list[int] | None = None) -> TrainConfig:
    """The training config of ``name``: ``TrainConfig`` defaults on digits, seed 0."""
    if name not in SPECS:
        raise ValueError(f"no pretrained model {name!r}; choose one of {', '.join(NAMES)}")
    return TrainConfig(dataset="digits", seed=0, epochs=epochs, subset=subset, **SPECS[name])


def load(name: str, folder: Path = FOLDER) -> tuple[VAE, dict]:
    """(model in eval mode, checkpoint dict) of a shipped model, loaded with weights_only=True."""
    return load_model(path(name, folder))


def weights_hash(state: dict[str, torch.Tensor], history: dict | None = None) -> str:
    """sha256 of the weights (sorted by name) and of the history's deterministic entries."""
    h = hashlib.sha256()
    for key in sorted(state):
        h.update(key.encode())
        h.update(state[key].detach().cpu().contiguous().numpy().tobytes())
    for key in sorted(history or {}):
        if key != "time":  # wall-clock: differs between runs
            h.update(key.encode())
            h.update(history[key].numpy().tobytes())
    return h.hexdigest()


def _history(hist: dict, objective: str) -> dict[str, torch.Tensor]:
    """The per-epoch entries worth keeping, as float32 tensors (small files)."""
    keys = HISTORY_KEYS + (UCVAE_HISTORY_KEYS if objective == "ucvae" else ())
    return {k: torch.tensor([float(v) for v in hist[k]], dtype=torch.float32) for k in keys}


def recorded_score(model: VAE, data: BinaryImages) -> float:
    """IWAE-100 on the first 100 test images with seed 0: cheap, deterministic, recorded."""
    g = torch.Generator().manual_seed(0)
    return (
        iwae_log_likelihood(model, data.test[:CHECK_IMAGES], CHECK_SAMPLES, generator=g)
        .mean()
        .item()
    )


def retrain_one(
    name: str,
    folder: Path = FOLDER,
    epochs: int = EPOCHS,
    subset: list[int] | None = None,
    eval_samples: int = EVAL_SAMPLES,
    progress: bool = True,
) -> Path:
    """Train ``name`` from scratch and write its checkpoint into ``folder``; returns the path.

    ``progress``: one bar over the epochs (with the validation bound), not a line per epoch."""
    cfg = config(name, epochs, subset)
    data = load_dataset("digits")
    if subset is not None:
        data = data.subset(*subset)
    start = time.perf_counter()
    bar = tqdm(total=epochs, desc=f"digits_{name}", unit="epoch", disable=not progress)

    def advance(epoch: int, model: VAE, hist: dict) -> None:
        bar.set_postfix({"valid LL": f"{hist['val_ll'][-1]:.2f}"}, refresh=False)
        bar.update()

    with tempfile.TemporaryDirectory() as tmp:  # train's own resumable checkpoint: not shipped
        model, hist = train(replace(cfg, out=tmp), progress=False, data=data, callback=advance)
    bar.close()
    seconds = time.perf_counter() - start
    model.eval()
    state = {k: v.detach().clone() for k, v in model.state_dict().items()}
    history = _history(hist, cfg.objective)
    test = evaluate(model, data.test, eval_samples, seed=0)
    ckpt = {
        "model_config": model.config(),
        "model": state,
        "config": asdict(replace(cfg, out="")),
        "history": history,
        "best_epoch": int(torch.tensor(hist["val_ll"]).argmax()) + 1,
        "test": {"ll": test["ll"], "se": test["se"], "num_samples": eval_samples, "seed": 0},
        "check": {"ll": recorded_score(model, data), "num_samples": CHECK_SAMPLES, "seed": 0},
        "weights_sha256": weights_hash(state, history),
        "torch_version": str(torch.__version__),
        "train_seconds": seconds,
    }
    out = path(name, folder)
    out.parent.mkdir(parents=True, exist_ok=True)
    torch.save(ckpt, out)
    return out


def retrain(
    names: tuple[str, ...] = NAMES,
    folder: Path = FOLDER,
    epochs: int = EPOCHS,
    subset: list[int] | None = None,
    eval_samples: int = EVAL_SAMPLES,
    progress: bool = True,
) -> dict[str, Path]:
    """Retrain every model in ``names`` (see ``retrain_one``); {name: checkpoint path}."""
    return {n: retrain_one(n, folder, epochs, subset, eval_samples, progress) for n in names}


def summary(folder: Path = FOLDER, names: tuple[str, ...] = NAMES) -> list[str]:
    """One line per checkpoint: size, epochs, best epoch, test LL, train time, hash prefix."""
    lines = []
    for n in names:
        p = path(n, folder)
        if not p.exists():
            lines.append(f"{p.name}: missing (python -m ucvae_lite.lab.pretrained --retrain)")
            continue
        _, c = load_model(p)
        t = c["test"]
        lines.append(
            f"{p.name}: {p.stat().st_size / 1024:.0f} KB, {c['config']['epochs']} epochs "
            f"(best {c['best_epoch']}), test LL {t['ll']:.3f} ± {t['se']:.3f} "
            f"(IWAE-{t['num_samples']}), trained in {c['train_seconds']:.0f} s, "
            f"sha256 {c['weights_sha256'][:12]}"
        )
    return lines
