"""Real labelled images for validation and evaluation: .npz, MNIST IDX files, or scikit-learn digits.

All loaders return ``(images uint8 [N,H,W], labels int64 [N])`` with white-on-black images, the
MNIST convention the 2D families render in.
"""

from __future__ import annotations

import gzip
import struct
from pathlib import Path

import numpy as np

from otfgen.configs.schema import BUILTIN

# IDX (LeCun et al., http://yann.lecun.com/exdb/mnist/): magic = 0x0000 | dtype code | ndim
_IDX_DTYPES = {0x08: np.uint8, 0x09: np.int8, 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


class DataError(ValueError):
    pass


def read_idx(path: str | Path) -> np.ndarray:
    """Read one IDX file (optionally .gz)."""
    path = Path(path)
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as f:
        raw = f.read()
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] not in _IDX_DTYPES:
        raise DataError(f"{path}: not an IDX file (bad magic number)")
    ndim = raw[3]
    if len(raw) < 4 + 4 * ndim:
        raise DataError(f"{path}: IDX header truncated ({len(raw)} bytes for {ndim} dimensions)")
    dims = struct.unpack(f">{ndim}I", raw[4 : 4 + 4 * ndim])
    dtype = np.dtype(_IDX_DTYPES[raw[2]])
    body = raw[4 + 4 * ndim :]
    if len(body) != int(np.prod(dims)) * dtype.itemsize:
        raise DataError(f"{path}: IDX header says {dims} but the body has {len(body)} bytes")
    return np.frombuffer(body, dtype=dtype).reshape(dims)


def _idx_pair(path: Path) -> tuple[Path, Path]:
    """Given either file of an MNIST-style pair, find both (…-images-idx3-ubyte[.gz], …-labels-idx1-ubyte[.gz])."""
    name = path.name
    if "images" in name and "idx3" in name:
        return path, path.with_name(name.replace("images", "labels").replace("idx3", "idx1"))
    if "labels" in name and "idx1" in name:
        return path.with_name(name.replace("labels", "images").replace("idx1", "idx3")), path
    raise DataError(f"{path}: an IDX path must name the images (…images-idx3-ubyte[.gz]) or labels file")


def sklearn_digits(size: int = 28) -> tuple[np.ndarray, np.ndarray]:
    """scikit-learn's 1,797 real 8×8 handwritten digits, normalised the MNIST way to size×size.

    MNIST (LeCun et al. 1998) fits each digit in a 20×20 box keeping its aspect ratio, then
    centres its centre of mass in the 28×28 frame; we do the same from the 8×8 originals.
    """
    try:
        from sklearn.datasets import load_digits
    except ImportError as e:  # pragma: no cover - depends on the environment
        raise DataError("the built-in validation set needs scikit-learn (pip install scikit-learn)") from e
    d = load_digits()
    imgs = (d.images / 16.0 * 255.0).astype(np.float32)
    return mnist_normalise(imgs, size), d.target.astype(np.int64)


def mnist_normalise(images: np.ndarray, size: int = 28, box: int | None = None) -> np.ndarray:
    """Fit each image's ink in a box (20/28 of the frame) by bilinear resampling, centre its mass."""
    import torch
    import torch.nn.functional as F

    box = box or round(size * 20 / 28)
    out = np.zeros((len(images), size, size), dtype=np.uint8)
    for i, im in enumerate(np.asarray(images, dtype=np.float32)):
        ys, xs = np.nonzero(im > 0)
        if len(ys) == 0:
            continue
        crop = im[ys.min() : ys.max() + 1, xs.min() : xs.max() + 1]
        h, w = crop.shape
        s = box / max(h, w)
        nh, nw = max(1, round(h * s)), max(1, round(w * s))
        t = torch.from_numpy(np.ascontiguousarray(crop))[None, None]
        r = F.interpolate(t, size=(nh, nw), mode="bilinear", align_corners=False)[0, 0].numpy()
        r = np.clip(r, 0, 255)
        yy, xx = np.mgrid[0:nh, 0:nw]
        m = r.sum()
        cy, cx = (yy * r).sum() / m, (xx * r).sum() / m
        oy, ox = int(round(size / 2 - 0.5 - cy)), int(round(size / 2 - 0.5 - cx))
        oy, ox = min(max(oy, 0), size - nh), min(max(ox, 0), size - nw)
        out[i, oy : oy + nh, ox : ox + nw] = np.round(r).astype(np.uint8)
    return out


def load_dataset(path: str | Path | None) -> tuple[np.ndarray, np.ndarray]:
    """Load real labelled images from ``path``: .npz (images, labels), IDX (.gz) pair, or the built-in."""
    if path is None or str(path) == BUILTIN:
        return sklearn_digits()
    path = Path(path).expanduser()
    if not path.exists():
        raise DataError(f"data path '{path}' does not exist")
    if path.suffix == ".npz":
        with np.load(path) as z:  # numpy's default refuses object arrays: only raw numbers are read
            missing = {"images", "labels"} - set(z.files)
            if missing:
                raise DataError(f"{path}: missing arrays {sorted(missing)} (has {z.files})")
            try:
                images, labels = z["images"], z["labels"]
            except ValueError as e:
                raise DataError(f"{path}: 'images' and 'labels' must be numeric arrays ({e})") from None
    elif "idx" in path.name:
        ip, lp = _idx_pair(path)
        for p in (ip, lp):
            if not p.exists():
                raise DataError(f"IDX file '{p}' does not exist (need both images and labels)")
        images, labels = read_idx(ip), read_idx(lp)
    else:
        raise DataError(f"{path}: unsupported format; use .npz (images, labels), MNIST IDX files, or '{BUILTIN}'")
    if images.dtype != np.uint8 or images.ndim not in (3, 4):
        raise DataError(f"{path}: images must be uint8 [N,H,W] or [N,H,W,C], got {images.dtype} {images.shape}")
    if labels.shape != (len(images),):
        raise DataError(f"{path}: labels shape {labels.shape} does not match {len(images)} images")
    return np.ascontiguousarray(images), labels.astype(np.int64)


def few_per_class(labels: np.ndarray, k: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Indices of k images per class (chosen by ``seed``) and of all the others.

    The few-real mode trains on the first set and must report on the second only: real data
    that shapes training is never the data a result is reported on.
    """
    g = np.random.default_rng(seed)
    picked = []
    for c in np.unique(labels):
        idx = np.flatnonzero(labels == c)
        if len(idx) < k:
            raise DataError(f"class {c} has {len(idx)} images, fewer than real_per_class={k}")
        picked.append(g.choice(idx, size=k, replace=False))
    train = np.sort(np.concatenate(picked))
    rest = np.setdiff1d(np.arange(len(labels)), train)
    return train, rest
