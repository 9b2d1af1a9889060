"""Sim-to-real check for a 2D family: train on generated images only, test on real ones.

Trains ``trainer.models.SmallCNN`` for one pass over ``--samples`` images drawn uniformly from the
family's full parameter space (``ParamSpace.sample(None, seed, n)``: no policy, no hand-picked
region), then reports accuracy on a real labelled set (the family's dev file by default) and,
for digits, on scikit-learn's 8×8 digits. No real image is ever trained on.

    python benchmarks/sim2real.py --samples 200000 --threads 1
    python benchmarks/sim2real.py --family fashion2d --samples 200000 --threads 1
    python benchmarks/sim2real.py --family fashion2d --samples 60000 --repeat 8   # mean and spread of 8 seeds

Flags, by purpose:
  run        --family, --samples, --seed, --threads, --data (another real set), --repeat N (seeds
             SEED..SEED+N-1: mean, sd and the N models as one mean-softmax ensemble)
  generator  --override NAME=LOW:HIGH (another range without editing the YAML), --self-check N
             (error rate per parameter bin on N fresh generated samples)
  model      --width, --hidden, --dropout, --norm, --preblur (SmallCNN's input_blur; mnist2d's
             scene sets 1.0 for the trainer, this script leaves it off unless asked)
  training   --batch, --lr, --wd, --epochs, --smoothing, --mixup, --trim, --clean
  outputs    --save-model (for probe_sim2real.py), --save-grid, --save-errors

One run's figure moves with its seed (by about a point on the 1,000 digits, more on the 500
garments), so compare variants over several seeds with --repeat. Figures measured so far and
what has been tried: docs/experiments.md.
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
    p.add_argument("--seed", type=int, default=0, help="request seed for ParamSpace.sample (and torch's)")
    p.add_argument("--repeat", type=int, default=1, metavar="N", help="run seeds SEED..SEED+N-1 one after another "
                   "and print the mean and spread (one fashion2d run at 60k varies by ~1.4 points, sd) and the accuracy of "
                   "the N models as one mean-softmax ensemble")
    p.add_argument("--width", type=int, default=32, help="SmallCNN width (channels of the first block)")
    p.add_argument("--hidden", type=int, default=128, help="SmallCNN hidden units")
    p.add_argument("--dropout", type=float, default=0.3)
    p.add_argument("--epochs", type=int, default=1, help="passes over the same generated samples")
    p.add_argument("--smoothing", type=float, default=0.0, help="label smoothing of the cross-entropy")
    p.add_argument("--wd", type=float, default=1e-4, help="AdamW weight decay")
    p.add_argument("--norm", choices=["batch", "group"], default="batch",
                   help="normalisation layers of the CNN: batch (the trainer's) or group (per-sample statistics, "
                        "8 groups: nothing learnt about the generated set's batch statistics)")
    p.add_argument("--preblur", type=float, default=0.0, help="SmallCNN's input_blur: fixed Gaussian blur (std in "
                   "pixels) of the input, in training and test alike (hides edge-profile detail in both domains)")
    p.add_argument("--clean", action="store_true", help="diagnostic: train, drop the generated samples that model "
                   "misreads, train a fresh model on the rest (what ambiguous generated samples cost)")
    p.add_argument("--trim", type=float, default=0.0, help="fraction of each batch's highest-loss samples left out "
                   "of the loss after the first 20%% of steps (robust to ambiguous generated samples)")
    p.add_argument("--mixup", type=float, default=0.0, metavar="ALPHA", help="mixup of pairs of generated samples "
                   "(weights ~ Beta(ALPHA, ALPHA); 0 = off), a regulariser against the generator's own cues")
    p.add_argument("--override", nargs="*", default=[], metavar="NAME=LOW:HIGH",
                   help="replace a parameter's range for this run (e.g. blur=0:0.8)")
    p.add_argument("--self-check", type=int, default=0, metavar="N",
                   help="also score N fresh generated samples and print the error rate per parameter bin "
                        "(which regions of the space the model itself cannot read)")
    p.add_argument("--save-model", default=None, help="write the trained model's state dict here (torch.save), "
                   "to probe it afterwards without retraining")
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

    from otfgen.blender_gen.families import default_space, load
    from otfgen.blender_gen.space import ParamSpace

    if args.repeat < 1:
        raise SystemExit(f"--repeat {args.repeat}: expected at least 1 run")
    torch.set_num_threads(args.threads)
    family, space = load(args.family), default_space(args.family)
    if args.override:
        m = space.to_mapping()
        for o in args.override:
            name, _, rng_ = o.partition("=")
            lo, _, hi = rng_.partition(":")
            if name not in m or "low" not in m[name] or not hi:
                raise SystemExit(f"--override {o}: expected NAME=LOW:HIGH for a numeric parameter of {args.family} "
                                 f"(numeric: {sorted(k for k, v in m.items() if 'low' in v)})")
            m[name]["low"], m[name]["high"] = type(m[name]["low"])(lo), type(m[name]["high"])(hi)
            m[name]["default"] = min(max(m[name]["default"], m[name]["low"]), m[name]["high"])
        space = ParamSpace.from_mapping(m)
        print("ranges overridden: " + ", ".join(args.override))

    results = {}  # eval set -> accuracy per seed
    votes = {}  # eval set -> (labels, sum of the runs' softmax outputs)
    for seed in range(args.seed, args.seed + args.repeat):
        if args.repeat > 1:
            print(f"\n=== seed {seed} ===", flush=True)
        run_args = argparse.Namespace(**{**vars(args), "seed": seed})
        for key in ("save_model", "save_grid", "save_errors"):  # one file per seed
            if args.repeat > 1 and getattr(args, key):
                path = Path(getattr(args, key))
                setattr(run_args, key, str(path.with_name(f"{path.stem}.s{seed}{path.suffix}")))
        for name, (acc, y, prob) in run_once(run_args, family, space).items():
            results.setdefault(name, []).append(acc)
            votes[name] = (y, votes[name][1] + prob if name in votes else prob)
    if args.repeat > 1:
        print(f"\nover seeds {args.seed}-{args.seed + args.repeat - 1}:")
        for name, accs in results.items():
            a = np.array(accs) * 100
            runs = " / ".join(f"{v:.1f}" for v in a)
            print(f"  {name}: mean {a.mean():.2f}%  sd {a.std(ddof=1):.2f}  min {a.min():.2f}  max {a.max():.2f}  ({runs})")
        for name, (y, prob) in votes.items():
            print(f"  {name}: the {args.repeat} models as one ensemble (mean softmax): "
                  f"{100 * (prob.argmax(1) == y).mean():.2f}%")


def run_once(args, family, space) -> dict[str, tuple]:
    """Generate, train and evaluate once with ``args.seed``; returns, per real set, (accuracy,
    labels, softmax outputs [N, classes]) so that several runs can be scored as an ensemble."""
    import numpy as np
    import torch

    from otfgen.trainer.data import BUILTIN, load_dataset

    torch.manual_seed(args.seed)

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
    t0 = time.perf_counter()
    model = train(args, family, images, labels)
    if args.clean:
        # diagnostic: how much do ambiguous generated samples cost? Drop the ones the first model
        # misreads (its own training samples) and train a fresh model on the rest
        keep = predict(model, images) == labels
        print(f"clean: {100 * (1 - keep.mean()):.2f}% of the generated samples misread by the first model, "
              f"dropped; retraining on {keep.sum():,}")
        model = train(args, family, images[keep], labels[keep])
    t_train = time.perf_counter() - t0
    steps = math.ceil(len(images) / args.batch) * args.epochs

    if args.save_model:
        torch.save(model.state_dict(), args.save_model)
    if args.self_check:
        self_check(args, family, space, model)

    # -- evaluate on real digits ---------------------------------------------------------------
    default = DEFAULT_DATA.get(args.family)
    data = args.data or (str(default) if default is not None and default.exists() else BUILTIN)
    digits = args.family != "fashion2d"  # scikit-learn's 8×8 digits only mean something for digit families
    evals = [data] + ([BUILTIN] if data != BUILTIN and digits else [])
    model.eval()
    accs = {}
    print(f"\nbudget: {args.samples:,} generated samples, {steps} steps of {args.batch}, "
          f"{(t_gen + t_train) / 60:.1f} min on {args.threads} thread(s) (train {t_train / 60:.1f} min)")
    for path in evals:
        x, y = load_dataset(path)
        prob = predict(model, x, probs=True)
        pred = prob.argmax(1)
        acc = (pred == y).mean()
        name = Path(path).name if path != BUILTIN else BUILTIN
        accs[name] = (float(acc), y, prob)
        per_class = " ".join(f"{d}:{(pred[y == d] == d).mean():.2f}" for d in range(family.NUM_CLASSES))
        print(f"accuracy on {name} ({len(y)} real): "
              f"{100 * acc:.2f}%   per class {per_class}")
        print_confusions(y, pred, family.NUM_CLASSES, 6)
        if args.save_errors and path == data:
            save_errors(args.save_errors, x, y, pred)

    return accs


def train(args, family, images, labels):
    """Train SmallCNN (with the benchmark's options) for args.epochs passes over the images."""
    import torch

    from otfgen.trainer.models import SmallCNN, to_input
    from otfgen.trainer.step import TrainStep

    n = len(images)
    model = SmallCNN(num_classes=family.NUM_CLASSES, width=args.width, hidden=args.hidden, dropout=args.dropout,
                     input_blur=args.preblur)
    if args.norm == "group":
        for i, m in enumerate(model.features):
            if isinstance(m, torch.nn.BatchNorm2d):
                model.features[i] = torch.nn.GroupNorm(8, m.num_features)
    per_epoch = math.ceil(n / args.batch)
    steps = per_epoch * args.epochs
    step = TrainStep(model, steps, lr=args.lr, weight_decay=args.wd, label_smoothing=args.smoothing)
    x_all, y_all = torch.from_numpy(images), torch.from_numpy(labels)
    order = torch.cat([torch.randperm(n) for _ in range(args.epochs)])
    mix = torch.distributions.Beta(args.mixup, args.mixup) if args.mixup > 0 else None
    ce = step.loss
    model.train()
    t0, running = time.perf_counter(), 0.0
    for i in range(steps):
        e, k = divmod(i, per_epoch)
        idx = order[e * n + k * args.batch : e * n + min((k + 1) * args.batch, n)]
        xb, yb = to_input(x_all[idx]), y_all[idx]
        if mix is None:
            losses = ce(model(xb), yb)
        else:
            lam, perm = float(mix.sample()), torch.randperm(len(idx))
            out = model(lam * xb + (1 - lam) * xb[perm])
            losses = lam * ce(out, yb) + (1 - lam) * ce(out, yb[perm])
        if args.trim and i >= 0.2 * steps:
            losses = losses.topk(len(idx) - int(args.trim * len(idx)), largest=False).values
        loss = step.update(losses)
        running = 0.98 * running + 0.02 * loss if i else loss
        if (i + 1) % max(1, steps // 10) == 0:
            print(f"  step {i + 1}/{steps}  loss {running:.3f}  {time.perf_counter() - t0:.0f} s", flush=True)
    return model


def self_check(args, family, space, model, bins: int = 4) -> None:
    """Error rate on fresh generated samples, overall and per quarter of each parameter's range."""
    import numpy as np

    params, seeds = space.sample(None, args.seed + 10_000, args.self_check)
    x, y = family.render(params, seeds)
    pred = predict(model, x)
    wrong = pred != y
    print(f"\nself-check: {100 * wrong.mean():.2f}% of {len(y):,} fresh generated samples misread")
    for p in space:
        if p.name == family.LABEL_PARAM or p.kind == "choice":
            continue
        v = np.asarray(params[p.name], np.float64)
        b = np.clip(((v - p.low) / max(p.high - p.low, 1e-12) * bins).astype(int), 0, bins - 1)
        rates = [100 * wrong[b == k].mean() if (b == k).any() else float("nan") for k in range(bins)]
        print(f"  {p.name:>11} [{p.low:g}, {p.high:g}]: " + "  ".join(f"{r:5.2f}%" for r in rates))
    per = " ".join(f"{d}:{100 * wrong[y == d].mean():.1f}%" for d in range(family.NUM_CLASSES))
    print(f"  per class: {per}")
    print_confusions(y, pred, family.NUM_CLASSES, 8)
    skeletons = getattr(family, "SKELETONS", None)  # families with per-class style variants (mnist2d)
    if skeletons is not None and "variant" in params:
        worst = []
        for d, variants in skeletons.items():
            vb = np.minimum((np.asarray(params["variant"]) * len(variants)).astype(int), len(variants) - 1)
            for k in range(len(variants)):
                m = (y == d) & (vb == k)
                if m.sum() > 20:
                    worst.append((wrong[m].mean(), d, k))
        print("  worst (class/variant): " + ", ".join(f"{d}/{k}: {100 * r:.1f}%" for r, d, k in sorted(worst)[::-1][:8]))


def predict(model, x, batch: int = 512, probs: bool = False):
    """Predicted classes (or, with ``probs``, softmax outputs) for uint8 images, in eval mode."""
    import torch

    from otfgen.trainer.models import to_input

    model.eval()
    with torch.no_grad():
        out = torch.cat([model(to_input(torch.from_numpy(x[a : a + batch])))
                         for a in range(0, len(x), batch)])
    return (torch.softmax(out, 1) if probs else out.argmax(1)).numpy()


def print_confusions(y, pred, num_classes: int, top: int) -> None:
    import numpy as np

    conf = np.zeros((num_classes,) * 2, np.int64)
    np.add.at(conf, (y, pred), 1)
    np.fill_diagonal(conf, 0)
    off = sorted(((conf[i, j], i, j) for i, j in zip(*np.nonzero(conf))), reverse=True)[:top]
    print("  most confused (true->pred: n): " + ", ".join(f"{i}->{j}: {n}" for n, i, j in off))


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
