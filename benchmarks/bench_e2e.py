"""End-to-end throughput of the closed loop, beside the same training loop on in-memory data.

Runs ``otfgen`` (controller + workers + trainer as processes) for a budget, reads the trainer's
own figures from metrics.jsonl (samples/s, fraction of step time spent waiting for data), then
trains the same model with the same batch size on the same number of samples already in memory,
in this process. The ratio says what streaming costs; the data-wait fraction says whether the
model ever starves (goal: < 2% of step time).

    python benchmarks/bench_e2e.py [--samples 30000] [--workers 2] [--device auto]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]

from otfgen.blender_gen import families  # noqa: E402
from otfgen.trainer.models import build, to_input  # noqa: E402
from otfgen.trainer.step import TrainStep, pick_device  # noqa: E402


def in_memory_baseline(samples: int, batch: int, device: torch.device, threads: int) -> float:
    fam = families.load("mnist2d")
    space = families.default_space("mnist2d")
    params, seeds = space.sample(None, 0, samples)
    images, labels = fam.render(params, seeds)
    x_all, y_all = torch.from_numpy(images), torch.from_numpy(labels)
    if threads:
        torch.set_num_threads(threads)
    model = build("cnn", in_channels=1, num_classes=10).to(device)
    step = TrainStep(model, -(-samples // batch))  # the trainer's own step: same model, loss and optimiser
    t0 = time.perf_counter()
    for i in range(0, samples, batch):
        x = to_input(x_all[i:i + batch].to(device))
        y = y_all[i:i + batch].to(device)
        step(x, y)
    if device.type == "cuda":
        torch.cuda.synchronize()
    return samples / (time.perf_counter() - t0)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--samples", type=int, default=30000)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--threads", type=int, default=0)
    args = ap.parse_args()
    device = pick_device(args.device)
    with tempfile.TemporaryDirectory() as tmp:
        run_dir = Path(tmp) / "run"
        cmd = [sys.executable, "-m", "otfgen.controller.main", f"hydra.run.dir={run_dir}",
               f"budget.samples={args.samples}", f"launcher.workers={args.workers}",
               f"trainer.batch_size={args.batch}", f"trainer.val_every={args.samples}",
               f"trainer.device={args.device}", f"trainer.threads={args.threads}"]
        t0 = time.perf_counter()
        p = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
        wall = time.perf_counter() - t0
        if p.returncode != 0:
            sys.exit(f"otfgen failed:\n{p.stdout[-2000:]}\n{p.stderr[-2000:]}")
        final = [json.loads(line) for line in open(run_dir / "metrics.jsonl")]
        final = [m for m in final if "train/samples_per_s" in m][-1]
    base = in_memory_baseline(args.samples, args.batch, device, args.threads)
    sps = final["train/samples_per_s"]
    print(f"device {device}, {args.workers} workers, batch {args.batch}, {args.samples} samples")
    print(f"{'':34s}{'samples/s':>12s}")
    print(f"{'otfgen stream (trainer clock)':34s}{sps:12.0f}")
    print(f"{'same loop, data in memory':34s}{base:12.0f}")
    print(f"ratio stream / in-memory: {sps / base:.2f}")
    print(f"data wait: {100 * final['train/data_wait']:.2f}% of step time (goal < 2%)")
    print(f"whole run incl. process start-up: {wall:.1f} s wall")


if __name__ == "__main__":
    main()
