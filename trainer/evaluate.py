"""Scoring a model on real images: ``evaluate`` (used by the trainer's validation) and the CLI.

    otfgen-eval --checkpoint PATH --data PATH    # accuracy of a trained model, one JSON line

``score(model, path)`` does the same for a model of your own (``otfgen.score``).
"""

from __future__ import annotations

import argparse
import json
import math
import sys

import numpy as np
import torch
import torch.nn.functional as F

from otfgen.configs import cli
from otfgen.configs.schema import BUILTIN
from otfgen.trainer.data import DataError, load_dataset
from otfgen.trainer.models import build, to_input
from otfgen.trainer.step import pick_device


@torch.no_grad()
def evaluate(model: torch.nn.Module, images: np.ndarray, labels: np.ndarray, device: torch.device,
             num_classes: int, batch_size: int = 1000) -> dict:
    """Accuracy, mean loss and per-class accuracy on real images (uint8) — the figures we report."""
    model.train(False)
    correct = np.zeros(num_classes)
    count = np.zeros(num_classes)
    loss_sum = 0.0
    for i in range(0, len(images), batch_size):
        x = to_input(torch.from_numpy(images[i:i + batch_size]).to(device))
        y = torch.from_numpy(labels[i:i + batch_size]).to(device)
        logits = model(x)
        loss_sum += F.cross_entropy(logits, y, reduction="sum").item()
        hit = (logits.argmax(1) == y).cpu().numpy()
        yc = y.cpu().numpy()
        np.add.at(correct, yc, hit)
        np.add.at(count, yc, 1)
    model.train()
    n = int(count.sum())
    per_class = np.where(count > 0, correct / np.maximum(count, 1), np.nan)
    return {"acc": float(correct.sum() / max(n, 1)), "loss": loss_sum / max(n, 1), "n": n,
            "acc_class": [None if math.isnan(a) else round(float(a), 4) for a in per_class]}


def score(model: torch.nn.Module, data: str = BUILTIN, device: str | torch.device | None = None,
          num_classes: int | None = None, batch_size: int = 1000) -> dict:
    """A model of your own (any module that returns logits) on real labelled images: an ``.npz``
    (``images`` uint8 [N,H,W], ``labels``), an MNIST IDX file, or the built-in set. It sees what a
    ``Stream`` yields: float in [0, 1], [B, 1, H, W]. ``evaluate``'s figures (acc, loss, n,
    acc_class); the model's train/eval mode is left as it was."""
    images, labels = load_dataset(data)
    if device is None:
        device = next(model.parameters()).device
    was_training = model.training
    try:
        return evaluate(model, images, labels, torch.device(device), num_classes or int(labels.max()) + 1, batch_size)
    finally:
        model.train(was_training)


def load_model(path: str, device: torch.device) -> tuple[torch.nn.Module, dict]:
    # weights_only: a checkpoint is tensors and plain values; nothing in it is executed
    ck = torch.load(path, map_location=device, weights_only=True)
    mc = ck["model_cfg"]
    model = build(mc["name"], in_channels=ck["in_channels"], num_classes=ck["num_classes"],
                  width=mc["width"], dropout=mc["dropout"], hidden=mc.get("hidden", 128),
                  input_blur=mc.get("input_blur") or 0.0).to(device)
    model.load_state_dict(ck["model"])
    return model.train(False), ck


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="otfgen-eval", description=__doc__)
    ap.add_argument("--checkpoint", required=True, help="checkpoint.pt from a run directory")
    ap.add_argument("--data", default=BUILTIN, help=f".npz (images, labels), an MNIST IDX file, or '{BUILTIN}'")
    ap.add_argument("--device", default="auto")
    args = ap.parse_args(argv)
    try:
        device = pick_device(args.device)
        model, ck = load_model(args.checkpoint, device)
        images, labels = load_dataset(args.data)
    except (DataError, FileNotFoundError, KeyError, RuntimeError, ValueError) as e:
        print(f"otfgen-eval: {e}", file=sys.stderr)
        sys.exit(cli.CANNOT_RUN)
    expected = tuple(ck["image_shape"])
    if images.shape[1:] != expected and images.shape[1:] != expected[:2]:
        print(f"otfgen-eval: images are {images.shape[1:]}, the model was trained on {expected}", file=sys.stderr)
        sys.exit(cli.CANNOT_RUN)
    r = evaluate(model, images, labels, device, ck["num_classes"])
    print(json.dumps({"accuracy": r["acc"], "n": r["n"], "loss": r["loss"], "per_class": r["acc_class"],
                      "checkpoint": args.checkpoint, "data": args.data}))


if __name__ == "__main__":
    main()
