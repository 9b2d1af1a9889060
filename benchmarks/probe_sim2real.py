"""Probe models saved by ``sim2real.py --save-model``: which real images they all misread, and why.

For each model: accuracy on the real set; then the ensemble (mean softmax) accuracy; then the
real images that at least ``--min-wrong`` of the models misread (errors shared by models trained
on different generated samples are the generator's, not the training run's). ``--grid`` writes
a PNG with one row per such image: the real image (titled true>predicted), then its nearest
generated samples in the first model's embedding space (cosine), each titled with its label.
When those neighbours are generated digits of the predicted class that look unlike it, the
generator's classes overlap there; when they look like the real image, that style is missing
from the true class.

    python benchmarks/sim2real.py --samples 60000 --seed 0 --save-model /tmp/m0.pt   # and seeds 1, 2
    python benchmarks/probe_sim2real.py /tmp/m0.pt /tmp/m1.pt /tmp/m2.pt --grid /tmp/hard.png

Its figures, with their commands: docs/experiments.md (mnist2d sim-to-real).
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from sim2real import DEFAULT_DATA, predict  # this script's folder is on sys.path


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("models", nargs="+", help="state dicts written by sim2real.py --save-model (default widths)")
    p.add_argument("--family", default="mnist2d")
    p.add_argument("--data", default=None, help="real labelled set (.npz / IDX); default: the family's dev file")
    p.add_argument("--min-wrong", type=int, default=2, help="list real images at least this many models misread")
    p.add_argument("--grid", default=None, help="write a PNG: each listed real image and its nearest generated samples")
    p.add_argument("--pool", type=int, default=30_000, help="generated samples searched for neighbours")
    p.add_argument("--preblur", type=float, default=0.0, help="the input blur the models were trained with "
                   "(sim2real.py --preblur): it is not part of the state dict")
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args()
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[var] = str(args.threads)

    import numpy as np
    import torch

    from otfgen.blender_gen.families import load
    from otfgen.trainer.data import load_dataset
    from otfgen.trainer.models import SmallCNN

    torch.set_num_threads(args.threads)
    family = load(args.family)
    data = args.data or str(DEFAULT_DATA.get(args.family, ""))
    if not data or not Path(data).exists():
        raise SystemExit(f"no real set: pass --data (the default {data or '(none)'} does not exist)")
    x, y = load_dataset(data)
    first, probs = None, []
    for path in args.models:
        m = SmallCNN(in_channels=1 if x.ndim == 3 else x.shape[-1], num_classes=family.NUM_CLASSES,
                     input_blur=args.preblur)
        m.load_state_dict(torch.load(path, map_location="cpu"))
        probs.append(predict(m, x, probs=True))
        first = first or m  # the grid's embedding space
        print(f"{path}: {100 * (probs[-1].argmax(1) == y).mean():.2f}%")
    preds = np.stack([q.argmax(1) for q in probs])
    print(f"ensemble of {len(probs)}: {100 * (np.mean(probs, 0).argmax(1) == y).mean():.2f}%")
    wrong = (preds != y).sum(0)
    hard = np.flatnonzero(wrong >= args.min_wrong)
    print(f"{len(hard)} real images misread by >= {args.min_wrong} of {len(probs)} models; per class: "
          + " ".join(f"{c}:{n}" for c, n in enumerate(np.bincount(y[hard], minlength=family.NUM_CLASSES))))
    if args.grid and len(hard):
        save_grid(args, family, first, x, y, preds, hard)


def save_grid(args, family, model, x, y, preds, hard, k: int = 10) -> None:
    import numpy as np
    import torch
    from PIL import Image, ImageDraw

    from otfgen.blender_gen.families import default_space
    from otfgen.trainer.models import to_input

    space = default_space(args.family)
    params, seeds = space.sample(None, 77, args.pool)
    gen, lab = family.render(params, seeds)

    def embed(a):
        with torch.no_grad():
            e = torch.cat([model.embed(to_input(torch.from_numpy(a[i : i + 1000]))) for i in range(0, len(a), 1000)])
        return torch.nn.functional.normalize(e, dim=1)

    eg, er = embed(gen), embed(x[hard])
    rows = []
    for r, i in enumerate(hard):
        nn = torch.topk(eg @ er[r], k).indices.numpy()
        bad = preds[:, i][preds[:, i] != y[i]]
        tiles = [(x[i], f"{y[i]}>{np.bincount(bad).argmax()}")] + [(gen[j], str(lab[j])) for j in nn]
        row = []
        for img, title in tiles:
            im = Image.fromarray(img if img.ndim == 2 else img.mean(-1).astype(np.uint8)).resize((56, 56))
            ImageDraw.Draw(im).text((1, 1), title, fill=160)
            row.append(np.asarray(im))
        rows.append(np.concatenate(row, 1))
    Image.fromarray(np.concatenate(rows, 0)).save(args.grid)
    print(f"wrote {args.grid}")


if __name__ == "__main__":
    main()
