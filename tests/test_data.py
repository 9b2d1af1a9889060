"""Real-data loaders: IDX (plain and .gz) in LeCun's format, .npz, the built-in scikit-learn digits."""

from __future__ import annotations

import gzip
import struct

import numpy as np
import pytest

from otfgen.trainer import data
from otfgen.trainer.data import DataError, load_dataset, read_idx


def idx_bytes(a: np.ndarray, code: int = 0x08) -> bytes:
    """LeCun's IDX: magic 0x0000 | type code | ndim, then each dim as a big-endian uint32, then the body."""
    return bytes([0, 0, code, a.ndim]) + struct.pack(f">{a.ndim}I", *a.shape) + a.tobytes()


@pytest.fixture
def pair():
    gen = np.random.default_rng(0)
    return gen.integers(0, 256, size=(13, 28, 28), dtype=np.uint8), gen.integers(0, 10, size=13).astype(np.uint8)


def write_pair(tmp_path, images, labels, gz=False, prefix="t10k"):
    ext = ".gz" if gz else ""
    opener = gzip.open if gz else open
    ip, lp = tmp_path / f"{prefix}-images-idx3-ubyte{ext}", tmp_path / f"{prefix}-labels-idx1-ubyte{ext}"
    with opener(ip, "wb") as f:
        f.write(idx_bytes(images))
    with opener(lp, "wb") as f:
        f.write(idx_bytes(labels))
    return ip, lp


def test_idx_magic_numbers_are_lecuns(pair):
    images, labels = pair
    assert idx_bytes(images)[:16] == struct.pack(">IIII", 0x00000803, 13, 28, 28)
    assert idx_bytes(labels)[:8] == struct.pack(">II", 0x00000801, 13)


@pytest.mark.parametrize("gz", [False, True])
def test_read_idx_gives_back_the_arrays(tmp_path, pair, gz):
    images, labels = pair
    ip, lp = write_pair(tmp_path, images, labels, gz)
    got_i, got_l = read_idx(ip), read_idx(lp)
    assert got_i.dtype == np.uint8 and got_i.shape == (13, 28, 28)
    np.testing.assert_array_equal(got_i, images)
    np.testing.assert_array_equal(got_l, labels)


def test_read_idx_other_types_are_big_endian_on_disk(tmp_path):
    a = np.arange(-6, 6, dtype=np.int32).reshape(3, 4)
    p = tmp_path / "x.idx"
    p.write_bytes(idx_bytes(a.astype(">i4"), code=0x0C))
    np.testing.assert_array_equal(read_idx(p), a)
    f = np.linspace(-1, 1, 5)
    p.write_bytes(idx_bytes(f.astype(">f8"), code=0x0E))
    np.testing.assert_array_equal(read_idx(p), f)


@pytest.mark.parametrize("gz", [False, True])
@pytest.mark.parametrize("which", [0, 1])
def test_load_dataset_from_either_file_of_the_pair(tmp_path, pair, gz, which):
    images, labels = pair
    paths = write_pair(tmp_path, images, labels, gz, prefix="train")
    got_i, got_l = load_dataset(paths[which])
    assert got_i.dtype == np.uint8 and got_l.dtype == np.int64
    np.testing.assert_array_equal(got_i, images)
    np.testing.assert_array_equal(got_l, labels.astype(np.int64))
    got_s = load_dataset(str(paths[which]))[0]  # str paths too
    np.testing.assert_array_equal(got_s, images)


def test_npz_round_trip(tmp_path, pair):
    images, labels = pair
    p = tmp_path / "real.npz"
    np.savez_compressed(p, images=images, labels=labels.astype(np.int32))
    got_i, got_l = load_dataset(p)
    np.testing.assert_array_equal(got_i, images)
    assert got_l.dtype == np.int64
    np.testing.assert_array_equal(got_l, labels)
    rgb = np.zeros((3, 8, 8, 3), np.uint8)
    np.savez(p, images=rgb, labels=np.arange(3))
    assert load_dataset(p)[0].shape == (3, 8, 8, 3)


def test_missing_path(tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        load_dataset(tmp_path / "nope.npz")


def test_missing_partner_idx_file(tmp_path, pair):
    ip, lp = write_pair(tmp_path, *pair)
    lp.unlink()
    with pytest.raises(DataError, match="labels-idx1"):
        load_dataset(ip)


def test_idx_path_that_names_neither_file(tmp_path, pair):
    p = tmp_path / "digits.idx"
    p.write_bytes(idx_bytes(pair[0]))
    with pytest.raises(DataError, match="images"):
        load_dataset(p)


def test_unsupported_format(tmp_path):
    p = tmp_path / "x.csv"
    p.write_text("1,2\n")
    with pytest.raises(DataError, match="unsupported"):
        load_dataset(p)


def test_npz_with_object_arrays_is_refused(tmp_path):
    # an .npz may carry Python objects; they are never rebuilt, the file is refused with a clear error
    p = tmp_path / "objects.npz"
    np.savez(p, images=np.array([{"a": 1}, {"b": 2}], dtype=object), labels=np.array([0, 1]))
    with pytest.raises(DataError, match="numeric arrays"):
        load_dataset(p)


def test_npz_missing_labels(tmp_path, pair):
    p = tmp_path / "x.npz"
    np.savez(p, images=pair[0], targets=pair[1])
    with pytest.raises(DataError, match="labels"):
        load_dataset(p)


@pytest.mark.parametrize("magic", [b"\x08\x03\x00\x00", b"\x00\x01\x08\x03", b"\x00\x00\x07\x03", b"PK\x03\x04", b"\x00\x00"])
def test_bad_magic_number(tmp_path, pair, magic):
    p = tmp_path / "a-images-idx3-ubyte"
    p.write_bytes(magic + idx_bytes(pair[0])[4:])
    with pytest.raises(DataError, match="magic"):
        read_idx(p)


def test_truncated_idx_body(tmp_path, pair):
    ip, _ = write_pair(tmp_path, *pair)
    ip.write_bytes(ip.read_bytes()[:-1])
    with pytest.raises(DataError, match="body"):
        read_idx(ip)
    with pytest.raises(DataError):
        load_dataset(ip)


def test_idx_body_too_long(tmp_path, pair):
    ip, _ = write_pair(tmp_path, *pair)
    ip.write_bytes(ip.read_bytes() + b"\x00")
    with pytest.raises(DataError, match="body"):
        read_idx(ip)


@pytest.mark.parametrize("keep", [4, 6, 11])
def test_truncated_idx_header(tmp_path, pair, keep):
    p = tmp_path / "a-images-idx3-ubyte"
    p.write_bytes(idx_bytes(pair[0])[:keep])
    with pytest.raises(DataError):
        read_idx(p)


def test_truncated_gzip_idx_header(tmp_path):
    p = tmp_path / "a-images-idx3-ubyte.gz"
    with gzip.open(p, "wb") as f:
        f.write(bytes([0, 0, 8, 3, 0, 0, 0]))
    with pytest.raises(DataError):
        read_idx(p)


def test_wrong_image_dtype(tmp_path, pair):
    images, labels = pair
    ip, lp = write_pair(tmp_path, images, labels)
    ip.write_bytes(idx_bytes(images.astype(">i4"), code=0x0C))
    with pytest.raises(DataError, match="uint8"):
        load_dataset(ip)
    p = tmp_path / "f.npz"
    np.savez(p, images=images.astype(np.float32), labels=labels)
    with pytest.raises(DataError, match="uint8"):
        load_dataset(p)


def test_wrong_image_rank_and_label_count(tmp_path, pair):
    images, labels = pair
    p = tmp_path / "x.npz"
    np.savez(p, images=images.reshape(13, -1), labels=labels)
    with pytest.raises(DataError, match="uint8"):
        load_dataset(p)
    np.savez(p, images=images, labels=labels[:-1])
    with pytest.raises(DataError, match="labels"):
        load_dataset(p)
    np.savez(p, images=images, labels=labels[:, None])
    with pytest.raises(DataError, match="labels"):
        load_dataset(p)


@pytest.fixture(scope="module")
def digits():
    return load_dataset(None)


def test_builtin_sklearn_digits(digits):
    images, labels = digits
    assert images.dtype == np.uint8 and images.shape == (1797, 28, 28)
    assert labels.dtype == np.int64 and labels.shape == (1797,)
    assert set(np.unique(labels)) == set(range(10))
    same, _ = load_dataset(data.BUILTIN)
    assert same.tobytes() == images.tobytes()


def test_builtin_digits_look_like_mnist(digits):
    images, _ = digits
    assert (images.max(axis=(1, 2)) > 128).all()  # white ink
    assert images[:, 0, :].max() == 0 and images[:, :, 0].max() == 0  # black border
    w = images.astype(np.float64)
    yy, xx = np.mgrid[0:28, 0:28]
    m = w.sum(axis=(1, 2))
    cy, cx = (w * yy).sum(axis=(1, 2)) / m, (w * xx).sum(axis=(1, 2)) / m
    assert np.abs(cy - 13.5).max() < 1.0 and np.abs(cx - 13.5).max() < 1.0
    rows, cols = images.any(axis=2), images.any(axis=1)  # each digit's ink fits a 20-pixel box, MNIST-style
    height = 28 - rows.argmax(axis=1) - rows[:, ::-1].argmax(axis=1)
    width = 28 - cols.argmax(axis=1) - cols[:, ::-1].argmax(axis=1)
    side = np.maximum(height, width)
    assert side.max() <= 20 and np.median(side) >= 19


def test_score_rates_a_model_of_ones_own_on_real_images_and_keeps_its_mode(tmp_path):
    """otfgen.score: any module that returns logits, on an .npz of real images (README: a loop of
    your own)."""
    import torch

    import otfgen

    labels = np.array([0] * 30 + [1] * 50 + [2] * 20, np.uint8)
    images = np.zeros((100, 28, 28), np.uint8)
    images[labels == 1, :, :14] = 255  # class 1: the left half lit
    np.savez(tmp_path / "real.npz", images=images, labels=labels)

    class LeftHalf(torch.nn.Module):  # says 1 where the left half is lit, else 0
        def __init__(self):
            super().__init__()
            self.w = torch.nn.Parameter(torch.zeros(1))

        def forward(self, x):
            lit = (x[:, 0, :, :14].mean((1, 2)) > 0.5).float()
            return torch.stack([1 - lit, lit, torch.zeros_like(lit)], 1) * 10 + self.w

    model = LeftHalf().train(True)
    r = otfgen.score(model, str(tmp_path / "real.npz"))
    assert r["n"] == 100 and r["acc"] == 0.8 and r["acc_class"] == [1.0, 1.0, 0.0]  # every 2 read as 0
    assert model.training  # left as it was
    otfgen.score(model.train(False), str(tmp_path / "real.npz"))
    assert not model.training
