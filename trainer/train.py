"""The training loop: model, optimiser, periodic validation, feedback, checkpoint, plots.

    otfgen-train [--config RUN/config.json --controller=tcp://…] | [hydra overrides controller.connect=tcp://…]

Writes to the run directory: ``metrics.jsonl`` (``step`` = samples seen, ``train/…``, ``val/…``
keys), ``stream.jsonl`` (each request in the order it was consumed, with a digest of its bytes,
so ``otfgen replay`` can prove it regenerated the same stream), ``checkpoint.pt``,
``val_accuracy.png``, ``curves.png``, ``samples.png`` and, with ``trainer.tensorboard=true``,
``tensorboard/`` (its log lines: ``trainer.log``, written by configs/cli.py).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from otfgen.blender_gen.security import KeysError
from otfgen.configs import cli
from otfgen.configs import schema
from otfgen.configs.schema import BUILTIN, REWARD, STREAM, ConfigError, RunConfig
from otfgen.trainer import plots
from otfgen.trainer.progress import Progress, wanted
from otfgen.trainer.data import DataError, few_per_class, load_dataset
from otfgen.trainer.evaluate import evaluate
from otfgen.trainer.models import build, to_input
from otfgen.trainer.judges import RealSignal, check_select, select
from otfgen.trainer.step import TrainStep, pick_device
from otfgen.trainer.stream import Stream, StreamError

log = logging.getLogger("otfgen.train")
GRID = 64  # samples in each of the start and end grids


def describe_validation(src: str, n: int) -> str:
    """What a validation figure measures, in a few words (the log line and the plot say it)."""
    if src == BUILTIN:
        return f"{n} scikit-learn 8×8 digits upscaled to 28×28 (not MNIST)"
    if src == STREAM:
        return f"{n} held-out generated samples (not real images)"
    return f"{n} real images from {Path(src).name}"


class Board:
    """TensorBoard scalars and sample grids in <run>/tensorboard (``trainer.tensorboard=true``)."""

    def __init__(self, path: Path):
        from torch.utils.tensorboard import SummaryWriter

        self.w = SummaryWriter(str(path))

    def metrics(self, m: dict) -> None:
        step = m["step"]
        for k, v in m.items():
            if k in ("step", "time"):
                continue
            if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v):
                self.w.add_scalar(k, v, step)
            elif isinstance(v, list):  # per-class figures: one scalar per class
                for c, x in enumerate(v):
                    if isinstance(x, (int, float)):
                        self.w.add_scalar(f"{k}/{c}", x, step)

    def grid(self, tag: str, images: np.ndarray, step: int) -> None:
        self.w.add_image(tag, plots.tile(images), step, dataformats="HWC" if images.ndim == 4 else "HW")

    def close(self) -> None:
        self.w.close()


@dataclass(frozen=True)
class Ranks:
    """Data-parallel trainers under torchrun; one rank (0 of 1) otherwise."""

    rank: int = 0
    world: int = 1
    local: int = 0

    @property
    def main(self) -> bool:
        return self.rank == 0


def set_up_device(tc) -> tuple[torch.device, Ranks]:
    """The device, torch's threads, and the data-parallel process group when there are ranks."""
    if tc.threads > 0:
        torch.set_num_threads(tc.threads)
    try:
        device = pick_device(tc.device)
    except ValueError as e:
        raise ConfigError(str(e)) from None
    ranks = Ranks(int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1)),
                  int(os.environ.get("LOCAL_RANK", 0)))
    if ranks.world > 1:  # data-parallel: each rank trains on its own disjoint share of the stream
        import torch.distributed as tdist

        if device.type == "cuda":
            device = torch.device("cuda", ranks.local)
            torch.cuda.set_device(device)
        tdist.init_process_group("nccl" if device.type == "cuda" else "gloo")
        log.info("trainer: rank %d of %d on %s", ranks.rank, ranks.world, device)
    return device, ranks


@dataclass
class RealData:
    """The real images of a run, split so that none serves two purposes: validation (reported),
    the policy's reward split (feedback), and few-real mode's training images."""

    src: str  # what validation measures: a path, BUILTIN, or STREAM (filled from the stream later)
    val_x: np.ndarray | None = None
    val_y: np.ndarray | None = None
    reward_x: np.ndarray | None = None
    reward_y: np.ndarray | None = None
    real: tuple[torch.Tensor, torch.Tensor] | None = None  # few-real mode's images, on the device

    def used(self, wants: str, tc) -> int:
        """Every real image that shaped the model, through training or the policy's feedback; logged."""
        n = (len(self.real[1]) if self.real is not None else 0) + (
            len(self.reward_y) if wants != "none" and tc.real_data != REWARD else 0)  # the same 500 count once
        why = ([f"{len(self.real[1])} trained on"] if self.real is not None else []) + (
            [f"{len(self.reward_y)} in the policy's reward split"] if wants != "none" else [])
        log.info("trainer: real images used: %d (%s)", n, ", ".join(why) or "none")
        return n


def load_real_data(cfg: RunConfig, device: torch.device) -> RealData:
    tc = cfg.trainer
    d = RealData(tc.val_data or cfg.scene.val_data or BUILTIN)
    if d.src != STREAM:
        d.val_x, d.val_y = load_dataset(d.src)
    if tc.real_data and tc.real_data != REWARD:
        rx, ry = load_dataset(tc.real_data)
        pick, rest = few_per_class(ry, tc.real_per_class, cfg.seed)
        d.real = (torch.from_numpy(rx[pick]).to(device), torch.from_numpy(ry[pick]).to(device))
        if d.val_x is not None and Path(tc.real_data).resolve() == Path(d.src).resolve():
            d.val_x, d.val_y = d.val_x[rest], d.val_y[rest]  # never validate on the images trained on
        log.info("trainer: few-real mode: %d real images (%d per class) at %.0f%% of each minibatch",
                 len(pick), tc.real_per_class, 100 * tc.real_fraction)
    if d.val_x is not None:
        log.info("trainer: device %s, validation on %s (%d real images)", device, d.src, len(d.val_y))
    if tc.reward_split > 0:
        if d.val_x is None:
            raise ConfigError("trainer.reward_split needs real validation data (trainer.val_data=PATH)")
        # one fixed split for every run and seed, so every policy is reported on the same images
        order = np.random.default_rng(0).permutation(len(d.val_y))
        k = int(round(len(d.val_y) * tc.reward_split))
        d.reward_x, d.reward_y = d.val_x[order[:k]], d.val_y[order[:k]]
        d.val_x, d.val_y = d.val_x[order[k:]], d.val_y[order[k:]]
        log.info("trainer: %d real images for the policy's feedback, %d held out for reporting", k, len(d.val_y))
    if tc.real_data == REWARD:  # few-real on exactly the images a policy would learn from
        if d.reward_x is None:
            raise ConfigError(f"trainer.real_data={REWARD} needs trainer.reward_split > 0")
        d.real = (torch.from_numpy(d.reward_x).to(device), torch.from_numpy(d.reward_y.astype(np.int64)).to(device))
        log.info("trainer: few-real mode: the %d reward-split images at %.0f%% of each minibatch", len(d.reward_y),
                 100 * tc.real_fraction)
    return d


def check_against_controller(cfg: RunConfig, info: dict, data: RealData, ranks: Ranks) -> None:
    """What the family renders and what the policy needs come from the controller, not from this
    process's config: a trainer started on its own is checked against them here."""
    wants = info["signal"]
    if wants != "none" and data.reward_x is None:
        raise ConfigError(f"policy={cfg.policy.name} needs trainer.reward_split > 0")
    check_select(cfg.trainer.select, wants, cfg.policy.name)
    if wants != "none" and ranks.world > 1:
        raise ConfigError(f"policy={cfg.policy.name} is not supported with trainer.ranks > 1")
    shape = tuple(info["image_shape"])
    if data.val_x is not None and data.val_x.shape[1:] != shape:
        raise DataError(f"validation images from {data.src} are {'×'.join(map(str, data.val_x.shape[1:]))} but "
                        f"scene {cfg.scene.name} renders {'×'.join(map(str, shape))}: pass trainer.val_data=PATH "
                        f"with matching images, or trainer.val_data={STREAM} (held-out generated samples)")


def build_model(cfg: RunConfig, info: dict, device: torch.device, ranks: Ranks):
    """(the network, what the training step calls: its DDP wrapper when data-parallel, the checkpoint's
    model settings)."""
    shape = tuple(info["image_shape"])
    in_ch = shape[2] if len(shape) == 3 else 1
    input_blur = cfg.model.input_blur if cfg.model.input_blur is not None else (cfg.scene.input_blur or 0.0)
    net = build(cfg.model.name, in_channels=in_ch, num_classes=info["num_classes"], width=cfg.model.width,
                dropout=cfg.model.dropout, hidden=cfg.model.hidden, input_blur=input_blur).to(device)
    model = net
    if ranks.world > 1:
        from torch.nn.parallel import DistributedDataParallel

        model = DistributedDataParallel(net, device_ids=[ranks.local] if device.type == "cuda" else None)
    saved = {"model_cfg": {**dataclasses.asdict(cfg.model), "input_blur": input_blur}, "in_channels": in_ch,
             "num_classes": info["num_classes"], "image_shape": list(shape), "family": cfg.scene.name}
    return net, model, saved


def hold_out_from_stream(it, n: int) -> tuple[np.ndarray, np.ndarray]:
    """``trainer.val_data=stream``: the first ``n`` generated samples, never trained on."""
    xs, ys = [], []
    while sum(map(len, ys)) < n:
        b = next(it, None)
        if b is None:
            break
        xs.append(b.images.copy())
        ys.append(b.labels.copy())
    return np.concatenate(xs), np.concatenate(ys)


class Grids:
    """The first GRID generated samples and the latest GRID (what the policy ended on), for samples.png."""

    def __init__(self):
        self.first: list[tuple[np.ndarray, np.ndarray]] = []
        self.last: list[tuple[np.ndarray, np.ndarray]] = []

    def add(self, images: np.ndarray, labels: np.ndarray) -> None:
        k = GRID - sum(len(y) for _, y in self.first)
        if k > 0:
            self.first.append((images[:k].copy(), labels[:k].copy()))
        self.last.append((images[-GRID:].copy(), labels[-GRID:].copy()))
        while sum(len(y) for _, y in self.last[1:]) >= GRID:
            self.last.pop(0)

    def panels(self, seen: int) -> list[tuple[str, np.ndarray, np.ndarray]]:
        (fx, fy), (lx, ly) = ([np.concatenate(a) for a in zip(*part)] for part in (self.first, self.last))
        return [(f"the first {len(fy)} generated samples", fx, fy),
                (f"the last {len(ly[-GRID:])}, up to sample {plots.si(seen)}", lx[-GRID:], ly[-GRID:])]


def learn(net, model, step: TrainStep, signal: RealSignal | None, select_share: float, inputs: torch.Tensor,
          y: torch.Tensor, n_gen: int):
    """One minibatch (its first ``n_gen`` samples generated, the rest few-real images): forward,
    the policy's signal, backward. Returns (per-sample losses, signal or None, generated samples
    trained on)."""
    if signal is not None and select_share < 1.0:
        # score every generated sample in one forward pass without a graph (eval mode: no dropout,
        # and the rejected samples do not enter batch-norm statistics), then forward and backward
        # the kept share only, as RHO-LOSS does: the step costs a no-grad pass plus a quarter of a
        # training step rather than a whole one
        inputs = net.blur(inputs)  # once, for the task model and both judges
        net.train(False)
        with torch.no_grad():
            feats = net.embed(inputs[:n_gen], blurred=True)
            logits = net.head(feats)
            losses = step.loss(logits, y[:n_gen])
        net.train(True)
        sig = signal(feats, logits, y[:n_gen], inputs[:n_gen], blurred=True)
        keep = torch.from_numpy(select(sig, select_share, signal.kind)).to(inputs.device)
        trained = len(keep)
        if n_gen < len(y):  # the real images of few-real mode are always trained on
            keep = torch.cat([keep, torch.arange(n_gen, len(y), device=inputs.device)])
        step.update(step.loss(model(inputs[keep], blurred=True), y[keep]))
        return losses, sig, trained
    if signal is not None:
        feats = net.embed(inputs)
        logits = net.head(feats)
        sig = signal(feats[:n_gen], logits[:n_gen], y[:n_gen], inputs[:n_gen])
    else:
        logits, sig = model(inputs), None
    losses = step.loss(logits, y)
    step.update(losses)
    return losses, sig, n_gen


def train(cfg: RunConfig, controller: str) -> dict:
    tc = cfg.trainer
    run_dir = Path(cfg.run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)

    # -- device, ranks, real data ------------------------------------------------------------------
    device, ranks = set_up_device(tc)
    share = cfg.budget.samples // ranks.world
    torch.manual_seed(cfg.seed)
    data = load_real_data(cfg, device)
    real_gen = torch.Generator(device="cpu").manual_seed(cfg.seed)
    n_real = round(tc.batch_size * tc.real_fraction / max(1e-9, 1 - tc.real_fraction)) if data.real else 0

    # -- the stream, and the logs the run directory keeps ------------------------------------------
    stream_log = open(run_dir / ("stream.jsonl" if ranks.world == 1 else f"stream.rank{ranks.rank}.jsonl"), "w",
                      buffering=1)

    def on_request(rid: int, n: int, digest: str, worker: str) -> None:
        stream_log.write(json.dumps({"id": rid, "n": n, "digest": digest, "worker": worker}) + "\n")

    stream = Stream(controller, bind=tc.bind, keys=cfg.controller.keys, advertise=tc.advertise,
                    batch_size=tc.batch_size, samples=share, queue_size=tc.queue, rank=ranks.rank,
                    world=ranks.world, data_timeout_s=tc.data_timeout_s, on_request=on_request)
    metrics_f = open(run_dir / "metrics.jsonl" if ranks.main else os.devnull, "a", buffering=1)
    board = Board(run_dir / "tensorboard") if tc.tensorboard and ranks.main else None
    history = []

    def record(m: dict) -> None:
        history.append(m)
        metrics_f.write(json.dumps(m) + "\n")
        if board is not None:
            board.metrics(m)
        stream.report_metrics(m)

    with stream:
        stream.start()
        check_against_controller(cfg, stream.info, data, ranks)
        num_classes, wants = stream.info["num_classes"], stream.info["signal"]
        real_used = data.used(wants, tc)

        # -- model, optimiser, the policy's judges ---------------------------------------------------
        net, model, saved = build_model(cfg, stream.info, device, ranks)
        step = TrainStep(model, math.ceil(share / tc.batch_size) + 8, lr=tc.lr, weight_decay=tc.weight_decay)
        grids = Grids()
        signal = None if wants == "none" else RealSignal(wants, net, data.reward_x, data.reward_y, device,
                                                         num_classes, every=tc.signal_every, seed=cfg.seed)
        t_start = time.perf_counter()
        step_time = 0.0
        trained = 0  # generated samples trained on (fewer than consumed with trainer.select < 1)
        loss_ema = None
        val_every = schema.val_interval(tc.val_every, cfg.budget.samples)
        next_val = val_every
        it = stream.iter_batches()
        if data.val_x is None:
            data.val_x, data.val_y = hold_out_from_stream(it, tc.val_stream_samples)
            log.info("trainer: device %s, validation on %d held-out generated samples (trainer.val_data=%s)",
                     device, len(data.val_y), STREAM)
            next_val = stream.consumed * ranks.world + val_every
        measures = describe_validation(data.src, len(data.val_y))
        progress = Progress(cfg.budget.samples, wanted(cfg.launcher.progress) and ranks.main, tc.log_every_s)

        def validate() -> dict:
            m = _validate(net, data.val_x, data.val_y, device, num_classes, stream, t_start, step_time, loss_ema,
                          ranks.world)
            m["real/used"] = real_used
            m["train/trained"] = trained * ranks.world
            return m

        # -- the loop: one minibatch a step, its losses and signal back to the policy ----------------
        while True:
            t0 = time.perf_counter()
            try:
                batch = next(it)
            except StopIteration:
                break
            grids.add(batch.images, batch.labels)
            xb = torch.from_numpy(batch.images.copy()).to(device, non_blocking=True)
            y = torch.from_numpy(batch.labels.copy()).to(device, non_blocking=True)
            n_gen = len(y)
            if n_real:
                j = torch.randint(len(data.real[1]), (n_real,), generator=real_gen).to(device)
                xb, y = torch.cat([xb, data.real[0][j]]), torch.cat([y, data.real[1][j]])
            losses, sig, kept = learn(net, model, step, signal, tc.select, to_input(xb), y, n_gen)
            trained += kept
            per_sample = losses[:n_gen].detach().float().cpu().numpy()
            stream.report_losses(batch, per_sample, sig)
            step_time += time.perf_counter() - t0
            loss_ema = float(per_sample.mean()) if loss_ema is None else 0.98 * loss_ema + 0.02 * float(per_sample.mean())
            seen = stream.consumed * ranks.world
            wait = 100 * stream.wait_s / max(step_time, 1e-9)
            progress.update(seen, f"loss {loss_ema:.3f}, data wait {wait:.0f}%",
                            "trainer: %7d / %d samples (%.0f%%)  loss %.3f  %.0f samples/s  data wait %.1f%%",
                            seen, cfg.budget.samples, 100 * stream.consumed / share, loss_ema,
                            seen / (time.perf_counter() - t_start), wait)
            if stream.consumed >= share:
                # the finished bar is drawn once, ending its line, before the last validation's
                # line and the lines the controller and workers write as they stop
                progress.close()

            # -- validation, and what the policy's judges report --------------------------------------
            if ranks.main and (seen >= next_val or stream.consumed >= share):
                next_val += val_every
                m = validate()
                if data.reward_x is not None:
                    r = evaluate(net, data.reward_x, data.reward_y, device, num_classes)
                    m.update({"reward/acc": r["acc"], "reward/acc_class": r["acc_class"]})
                    if signal is not None and signal.kind == "feature_distance":
                        signal.refresh()  # the real features' mean follows the model at each validation
                if signal is not None:
                    m.update(signal.summary())
                record(m)
                log.info("trainer: %7d samples  loss %.3f  val acc %.4f ± %.4f (1 SE) on %s  %.0f samples/s  "
                         "data wait %.1f%%", m["train/samples"], loss_ema, m["val/acc"], m["val/acc_se"], measures,
                         m["train/samples_per_s"], 100 * m["train/data_wait"])
        progress.close()
        if ranks.main and (not history or history[-1]["train/samples"] != stream.consumed * ranks.world):
            record(validate())
    stream_log.close()
    metrics_f.close()
    if ranks.world > 1:
        import torch.distributed as tdist

        tdist.barrier()
        tdist.destroy_process_group()
        if not ranks.main:
            log.info("trainer: rank %d done: %d samples", ranks.rank, stream.consumed)
            return {}

    # -- checkpoint, plots, the run's verdict --------------------------------------------------------
    seen = stream.consumed * ranks.world
    torch.save({"model": net.state_dict(), **saved, "samples": seen,
                "val": {k: v for k, v in history[-1].items() if k.startswith("val/")}}, run_dir / "checkpoint.pt")
    title = f"{cfg.scene.name}, {cfg.policy.name} policy"
    names = class_names(cfg.scene.name, num_classes)
    plots.accuracy_curve(history, run_dir / "val_accuracy.png", title=title,
                         measures=f"on {measures}\nband: ±1 standard error from n; successive points also move with training")
    plots.curves(history, run_dir / "curves.png", title=title, class_names=names)
    panels = grids.panels(seen)
    plots.labelled_grids(panels, run_dir / "samples.png", class_names=names)
    if board is not None:
        board.grid("samples/first", panels[0][1], 0)
        board.grid("samples/last", panels[1][1], seen)
        board.close()
    final = history[-1]
    if tc.select < 1.0:
        log.info("trainer: trained on %d of the %d generated samples (trainer.select=%g, by the %s signal)",
                 trained, seen, tc.select, wants)
    log.info("trainer: done: %d samples in %.0f s, val acc %.4f ± %.4f (1 SE) on %s; data wait %.1f%% of step time",
             seen, time.perf_counter() - t_start, final["val/acc"], final["val/acc_se"], measures,
             100 * final["train/data_wait"])
    if data.src == BUILTIN:
        log.info("trainer: the standard error is that of the estimate from n images; successive validations "
                 "also move with training. To score this model on real 28×28 MNIST (e.g. t10k-images-idx3-ubyte.gz "
                 "from the MNIST site): otfgen-eval --checkpoint %s --data PATH/t10k-images-idx3-ubyte.gz",
                 run_dir / "checkpoint.pt")
    return final


def class_names(family: str, num_classes: int) -> list[str] | None:
    """The family's names for its classes (its ``CLASSES``), where it has them for every class."""
    from otfgen.blender_gen import families

    try:
        names = getattr(families.load(family), "CLASSES", None)
    except families.UnknownFamily:  # a family the controller knows but this process cannot load
        return None
    return list(names) if names and len(names) == num_classes else None


def _validate(model, val_x, val_y, device, num_classes, stream: Stream, t_start, step_time, loss_ema,
              world: int = 1) -> dict:
    """Validation figures; sample counts are of all ranks (each consumes the same share)."""
    ev = evaluate(model, val_x, val_y, device, num_classes)
    elapsed = time.perf_counter() - t_start
    return {"step": stream.consumed * world, "train/samples": stream.consumed * world, "train/loss": loss_ema, "train/elapsed_s": round(elapsed, 2),
            "train/samples_per_s": stream.consumed * world / max(elapsed, 1e-9),
            "train/data_wait": stream.wait_s / max(step_time, 1e-9),
            "train/duplicates": stream.duplicates, "train/rejected": stream.rejects.total,
            "val/acc": ev["acc"], "val/acc_se": round(plots.standard_error(ev["acc"], ev["n"]), 5),
            "val/loss": ev["loss"], "val/n": ev["n"], "val/acc_class": ev["acc_class"],
            "time": time.time()}


def main(argv: list[str] | None = None) -> None:
    """``python -m otfgen.trainer.train --config RUN/config.json [--controller=tcp://…]``: how a
    launcher starts the trainer, on a configuration it composed and checked. ``otfgen-train`` with
    Hydra overrides composes one first (otfgen.controller.main.train_main) and calls ``run``."""
    path, flags, overrides, _ = cli.split_argv(sys.argv[1:] if argv is None else argv)
    unexpected = overrides + [f"--{k}" for k in flags if k != "controller"]
    if unexpected or not path:
        print(f"otfgen.trainer.train: takes --config RUN/config.json [--controller=tcp://HOST:PORT]"
              f"{f', not {unexpected[0]}' if unexpected else ''}; for Hydra overrides run otfgen-train", file=sys.stderr)
        raise SystemExit(cli.CANNOT_RUN)
    controller = flags.get("controller")
    run(schema.load(path), controller)


def run(cfg: RunConfig, controller: str | None = None) -> None:
    """Train against ``controller`` (else controller.connect, else RUN/endpoints.json) and exit with
    the process's code: an expected error is one line and exit code 2."""
    cli.setup_logging()
    controller = controller or cfg.controller.connect
    if not controller:
        endpoints = Path(cfg.run_dir) / "endpoints.json"
        if endpoints.exists():
            controller = json.loads(endpoints.read_text())["controller"]
    if not controller:
        raise SystemExit("otfgen-train: no controller: pass controller.connect=tcp://HOST:PORT")
    cli.exit_with(lambda: train(cfg, controller) and None, (ConfigError, DataError, StreamError, KeysError), log)


if __name__ == "__main__":
    main()
