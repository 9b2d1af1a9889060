"""``otfgen-eval --checkpoint PATH --data PATH``: accuracy of a trained model on real images, one JSON line."""

from __future__ import annotations

import argparse
import json
import sys

import torch

from trainer.data import BUILTIN, DataError, load_dataset
from trainer.models import build
from trainer.train import evaluate, pick_device


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
        sys.exit(2)
    expected = tuple(ck["image_shape"])
    if images.shape[1:] != expected and images.shape[1:] != expected[:2]:
        print(f"otfgen-eval: images are {images.shape[1:]}, the model was trained on {expected}", file=sys.stderr)
        sys.exit(2)
    r = evaluate(model, images, labels, device, ck["num_classes"])
    print(json.dumps({"accuracy": r["acc"], "n": r["n"], "loss": r["loss"], "per_class": r["acc_class"],
                      "checkpoint": args.checkpoint, "data": args.data}))


if __name__ == "__main__":
    main()
