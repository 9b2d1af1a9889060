"""Few-real mode: k real images per class alone, versus the same k images mixed into the generated stream.

Both arms train the same SmallCNN for the same number of optimiser steps and are tested on the
real images that were *not* picked (``trainer.data.few_per_class``, same seed in both arms):

- real-only: minibatches drawn with replacement from the k×classes real images (in this process);
- generated + real: ``otfgen trainer.real_data=PATH trainer.val_data=PATH`` — each minibatch is
  generated samples plus ``real_fraction`` real ones, through the whole loop.

    python benchmarks/few_real.py --data ../shared/data/mnist_dev.npz --k 10 --samples 60000
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]

from otfgen.trainer.data import few_per_class, load_dataset  # noqa: E402
from otfgen.trainer.models import SmallCNN, to_input  # noqa: E402
from otfgen.trainer.evaluate import evaluate  # noqa: E402
from otfgen.trainer.step import TrainStep  # noqa: E402


def real_only(x, y, pick, rest, steps: int, batch: int, lr: float, seed: int) -> float:
    torch.manual_seed(seed)
    g = torch.Generator().manual_seed(seed)
    xs, ys = torch.from_numpy(x[pick]), torch.from_numpy(y[pick])
    model = SmallCNN(num_classes=int(y.max()) + 1)
    step = TrainStep(model, steps, lr=lr)  # the trainer's own step
    for _ in range(steps):
        j = torch.randint(len(ys), (batch,), generator=g)
        step(to_input(xs[j]), ys[j])
    return evaluate(model, x[rest], y[rest], torch.device("cpu"), int(y.max()) + 1)["acc"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", required=True, help="real labelled images (.npz / IDX)")
    ap.add_argument("--scene", default="mnist2d")
    ap.add_argument("--k", type=int, default=10, help="real images per class")
    ap.add_argument("--samples", type=int, default=60000, help="generated samples (sets the step count)")
    ap.add_argument("--fraction", type=float, default=0.25, help="share of real images in a mixed minibatch")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    x, y = load_dataset(args.data)
    pick, rest = few_per_class(y, args.k, args.seed)
    batch = 128
    steps = args.samples // batch
    with tempfile.TemporaryDirectory() as tmp:
        run = Path(tmp) / "run"
        data = str(Path(args.data).resolve())
        p = subprocess.run([sys.executable, "-m", "otfgen.controller.main", f"hydra.run.dir={run}", f"scene={args.scene}",
                            f"seed={args.seed}", f"budget.samples={args.samples}", f"trainer.val_every={args.samples}",
                            f"trainer.real_data={data}", f"trainer.val_data={data}", f"trainer.real_per_class={args.k}",
                            f"trainer.real_fraction={args.fraction}"], cwd=ROOT, capture_output=True, text=True)
        if p.returncode != 0:
            sys.exit(f"otfgen failed:\n{p.stderr[-2000:]}")
        final = [json.loads(line) for line in open(run / "metrics.jsonl")]
        mixed = [m for m in final if "val/acc" in m][-1]
    # same number of optimiser steps, and as many real samples per step as the mixed arm's whole batch
    n_real = round(batch * args.fraction / (1 - args.fraction))
    base = real_only(x, y, pick, rest, steps, batch + n_real, 3e-3, args.seed)
    print(f"{args.scene}: {args.k} real images per class ({len(pick)}), tested on the other {len(rest)}")
    print(f"{'real only':28s}{100 * base:7.2f}%   ({steps} steps of {batch + n_real})")
    print(f"{'generated + real (otfgen)':28s}{100 * mixed['val/acc']:7.2f}%   "
          f"({args.samples} generated + {steps * n_real} real draws)")
    print(f"difference: {100 * (mixed['val/acc'] - base):+.2f} points")


if __name__ == "__main__":
    main()
