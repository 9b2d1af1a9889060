"""Sim-to-real check for a 2D family: train on generated images only, test on real ones.

Trains ``trainer.models.SmallCNN`` for one pass over ``--samples`` images drawn uniformly from the
family's full parameter space (``ParamSpace.sample(None, seed, n)``: no policy, no hand-picked
region), then reports accuracy on a real labelled set (the family's dev file by default) and,
for digits, on scikit-learn's 8×8 digits. No real image is ever trained on.

    python benchmarks/sim2real.py --samples 200000 --threads 1
    python benchmarks/sim2real.py --family fashion2d --samples 200000 --threads 1

Measured (1 thread, seed 0, 200k samples): mnist2d 96.8% on mnist_dev.npz, fashion2d 65.4% on
fashion_dev.npz. Seeds matter: on the 500 garments two seeds of the same generator at 60k
samples differed by 2 to 6 points (the digits' 3-seed spread in the README is ±0.5), so compare
variants over several seeds.
"""

from __future__ import annotations

import argparse
import math
import os
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data"
DEFAULT_DATA = {"mnist2d": SHARED / "mnist_dev.npz", "fashion2d": SHARED / "fashion_dev.npz"}


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--samples", type=int, default=200_000, help="generated training samples (one pass)")
    p.add_argument("--data", default=None, help="real eval set: .npz / IDX path or 'sklearn-digits' (default: the "
                   "family's dev file under ../shared/data if it exists, else sklearn-digits for digit families)")
    p.add_argument("--threads", type=int, default=1, help="torch / BLAS threads")
    p.add_argument("--family", default="mnist2d")
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--lr", type=float, default=2e-3)
    p.add_argument("--seed", type=int, default=0, help="request seed for ParamSpace.sample")
    p.add_argument("--save-grid", default=None, help="write a PNG grid of the first training samples here")
    p.add_argument("--save-errors", default=None, help="write a PNG of the misclassified real images here "
                   "(titled by the predicted class, one row per true class)")
    return p.parse_args()


def main() -> None:
    args = parse_args()
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[var] = str(args.threads)  # before numpy/torch load their thread pools

    import numpy as np
    import torch
    import torch.nn.functional as F

    from blender_gen.families import default_space, load
    from trainer.data import BUILTIN, load_dataset
    from trainer.models import SmallCNN, to_input

    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    family, space = load(args.family), default_space(args.family)

    # -- generate: uniform over the whole declared space ---------------------------------------
    t0 = time.perf_counter()
    params, seeds = space.sample(None, args.seed, args.samples)
    chunks = []
    for a in range(0, args.samples, 4096):
        chunks.append(family.render({k: v[a : a + 4096] for k, v in params.items()}, seeds[a : a + 4096]))
    images = np.concatenate([c[0] for c in chunks])
    labels = np.concatenate([c[1] for c in chunks])
    t_gen = time.perf_counter() - t0
    print(f"generated {args.samples:,} {args.family} samples in {t_gen:.1f} s ({args.samples / t_gen:,.0f}/s)")
    if args.save_grid:
        from PIL import Image

        g = images[:400].reshape(20, 20, 28, 28).transpose(0, 2, 1, 3).reshape(560, 560)
        Image.fromarray(g).save(args.save_grid)

    # -- train: one pass, AdamW with one-cycle decay ------------------------------------------
    model = SmallCNN(num_classes=family.NUM_CLASSES)
    steps = math.ceil(args.samples / args.batch)
    opt = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=args.lr, total_steps=steps, pct_start=0.15)
    x_all, y_all = torch.from_numpy(images), torch.from_numpy(labels)
    order = torch.randperm(args.samples)
    model.train()
    t0, running = time.perf_counter(), 0.0
    for step in range(steps):
        idx = order[step * args.batch : (step + 1) * args.batch]
        loss = F.cross_entropy(model(to_input(x_all[idx])), y_all[idx])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        running = 0.98 * running + 0.02 * loss.item() if step else loss.item()
        if (step + 1) % max(1, steps // 10) == 0:
            print(f"  step {step + 1}/{steps}  loss {running:.3f}  {time.perf_counter() - t0:.0f} s", flush=True)
    t_train = time.perf_counter() - t0

    # -- evaluate on real digits ---------------------------------------------------------------
    default = DEFAULT_DATA.get(args.family)
    data = args.data or (str(default) if default is not None and default.exists() else BUILTIN)
    digits = args.family != "fashion2d"  # scikit-learn's 8×8 digits only mean something for digit families
    evals = [data] + ([BUILTIN] if data != BUILTIN and digits else [])
    model.eval()
    print(f"\nbudget: {args.samples:,} generated samples, {steps} steps of {args.batch}, "
          f"{(t_gen + t_train) / 60:.1f} min on {args.threads} thread(s) (train {t_train / 60:.1f} min)")
    for path in evals:
        x, y = load_dataset(path)
        with torch.no_grad():
            pred = torch.cat([model(to_input(torch.from_numpy(x[a : a + 512]))).argmax(1)
                              for a in range(0, len(x), 512)]).numpy()
        acc = (pred == y).mean()
        per_class = " ".join(f"{d}:{(pred[y == d] == d).mean():.2f}" for d in range(family.NUM_CLASSES))
        print(f"accuracy on {Path(path).name if path != BUILTIN else BUILTIN} ({len(y)} real): "
              f"{100 * acc:.2f}%   per class {per_class}")
        conf = np.zeros((family.NUM_CLASSES,) * 2, np.int64)
        np.add.at(conf, (y, pred), 1)
        off = [(conf[i, j], i, j) for i in range(10) for j in range(10) if i != j and conf[i, j]]
        print("  most confused (true->pred: n): " + ", ".join(f"{i}->{j}: {n}" for n, i, j in sorted(off)[::-1][:6]))
        if args.save_errors and path == data:
            save_errors(args.save_errors, x, y, pred)


def save_errors(path: str, x, y, pred, per_row: int = 24) -> None:
    """Misclassified images, one row per true class, each with its predicted class drawn on it."""
    import numpy as np
    from PIL import Image, ImageDraw

    rows = []
    for d in range(10):
        bad = np.flatnonzero((y == d) & (pred != d))[:per_row]
        row = np.zeros((28, 28 * per_row), np.uint8)
        for k, i in enumerate(bad):
            im = Image.fromarray(x[i] if x.ndim == 3 else x[i].mean(-1).astype(np.uint8))
            ImageDraw.Draw(im).text((0, 0), str(pred[i]), fill=128)
            row[:, 28 * k : 28 * (k + 1)] = np.asarray(im)
        rows.append(row)
    g = np.concatenate(rows)
    Image.fromarray(g).resize((g.shape[1] * 2, g.shape[0] * 2), Image.NEAREST).save(path)


if __name__ == "__main__":
    main()
