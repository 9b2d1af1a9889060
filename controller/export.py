"""``otfgen export``: keep what a run made — its stream regenerated into shards on disk.

    otfgen export RUN_DIR --out DIR [--format webdataset|npz] [--shard-size N]

The run's ``params.jsonl`` is replayed as ``otfgen replay`` does (same parameters, same family,
same bytes, in the order the trainer consumed them; each request's digest is checked against
``stream.jsonl``) and written shard by shard, so memory stays that of one request (webdataset)
or one shard (npz), whatever the run's length.

- ``webdataset``: ``DIR/shard-000000.tar`` …, each sample three members sharing one key:
  ``<key>.png`` (the image, lossless), ``<key>.cls`` (the class as decimal text) and
  ``<key>.json`` (request id, position in the request, the sample's scene parameters). Readable
  with the ``webdataset`` package or plain ``tarfile``.
- ``npz``: ``DIR/shard-000000.npz`` …, each with ``images`` (uint8 [S, H, W(, C)]), ``labels``
  (int64 [S]), ``request`` and ``index`` (where each sample came from) and ``param_<name>`` per
  scene parameter (choice parameters as the index of the choice).

``DIR/index.json`` lists the shards, their sample counts and the run's family, shape and classes.
Exit code 0 when every request's digest matched the run's record, 1 when one did not (the shards
are written either way), 2 for bad arguments.
"""

from __future__ import annotations

import argparse
import io
import json
import logging
import os
import sys
import tarfile
import time
from pathlib import Path

import numpy as np

from otfgen.blender_gen import families
from otfgen.configs import cli
from otfgen.blender_gen.space import ParamSpace
from otfgen.controller import paramlog, replay

log = logging.getLogger("otfgen.export")

FORMATS = ("webdataset", "npz")


class _TarShards:
    """Samples appended one at a time; a new tar every ``size`` samples (nothing buffered)."""

    suffix = ".tar"

    def __init__(self, out: Path, size: int, space: ParamSpace):
        self.out, self.size, self.space = out, size, space
        self.tar: tarfile.TarFile | None = None
        self.shards: list[dict] = []

    def _add(self, tar: tarfile.TarFile, name: str, data: bytes) -> None:
        info = tarfile.TarInfo(name)
        info.size, info.mode, info.mtime = len(data), 0o644, 0  # mtime 0: the same run gives the same bytes
        tar.addfile(info, io.BytesIO(data))

    def add(self, key: int, image: np.ndarray, label: int, meta: dict) -> None:
        from PIL import Image

        if self.tar is None:
            self.shards.append({"name": f"shard-{len(self.shards):06d}{self.suffix}", "samples": 0})
            # plain ustar: short names, no pax headers (a third of the time per member otherwise)
            tmp = self.out / (self.shards[-1]["name"] + ".tmp")
            self.tar = tarfile.open(tmp, "w", format=tarfile.USTAR_FORMAT)
        buf = io.BytesIO()
        Image.fromarray(image).save(buf, format="PNG", compress_level=1)
        k = f"{key:09d}"
        self._add(self.tar, f"{k}.png", buf.getvalue())
        self._add(self.tar, f"{k}.cls", str(int(label)).encode())
        self._add(self.tar, f"{k}.json", json.dumps(meta, separators=(",", ":")).encode())
        self.shards[-1]["samples"] += 1
        if self.shards[-1]["samples"] == self.size:
            self.close()

    def close(self) -> None:
        if self.tar is not None:
            self.tar.close()
            self.tar = None
            name = self.out / self.shards[-1]["name"]
            os.replace(name.with_name(name.name + ".tmp"), name)  # a shard appears whole or not at all


class _NpzShards:
    """One shard's arrays preallocated and filled; written as one .npz when full."""

    suffix = ".npz"

    def __init__(self, out: Path, size: int, space: ParamSpace):
        self.out, self.size, self.space = out, size, space
        self.buf: dict[str, np.ndarray] | None = None
        self.fill = 0
        self.shards: list[dict] = []

    def add_batch(self, rid: int, images: np.ndarray, labels: np.ndarray,
                  params: dict[str, np.ndarray]) -> None:
        i = 0
        while i < len(labels):
            if self.buf is None:
                self.buf = {"images": np.empty((self.size,) + images.shape[1:], np.uint8),
                            "labels": np.empty(self.size, np.int64), "request": np.empty(self.size, np.int64),
                            "index": np.empty(self.size, np.int64)}
                for p in self.space:
                    self.buf[f"param_{p.name}"] = np.empty(self.size, p.dtype)
                self.fill = 0
            take = min(self.size - self.fill, len(labels) - i)
            sl = slice(self.fill, self.fill + take)
            self.buf["images"][sl] = images[i:i + take]
            self.buf["labels"][sl] = labels[i:i + take]
            self.buf["request"][sl] = rid
            self.buf["index"][sl] = np.arange(i, i + take)
            for p in self.space:
                self.buf[f"param_{p.name}"][sl] = params[p.name][i:i + take]
            self.fill += take
            i += take
            if self.fill == self.size:
                self.close()

    def close(self) -> None:
        if self.buf is None or self.fill == 0:
            return
        name = f"shard-{len(self.shards):06d}{self.suffix}"
        tmp = self.out / (name + ".tmp")
        with open(tmp, "wb") as f:
            np.savez_compressed(f, **{k: v[:self.fill] for k, v in self.buf.items()})
        os.replace(tmp, self.out / name)
        self.shards.append({"name": name, "samples": self.fill})
        self.buf = None  # the next shard allocates afresh: the last one may be shorter


def _meta(space: ParamSpace, rid: int, i: int, params: dict[str, np.ndarray]) -> dict:
    out = {}
    for p in space:
        v = params[p.name][i]
        out[p.name] = p.choices[int(v)] if p.kind == "choice" else (int(v) if p.kind == "int" else float(v))
    return {"request": rid, "index": i, "params": out}


def export(run_dir: Path, out: Path, fmt: str, shard_size: int) -> dict:
    header, _ = paramlog.read(run_dir / "params.jsonl")
    if header.get("code") not in (None, families.code_digest()):
        log.warning("the rendering code changed since this run (code %s, now %s); mismatches may come from that",
                    header["code"], families.code_digest())
    space = ParamSpace.from_mapping(header["space"])
    family = families.load(header["family"])
    out.mkdir(parents=True, exist_ok=True)
    writer = (_TarShards if fmt == "webdataset" else _NpzShards)(out, shard_size, space)
    recorded = replay.recorded_digests(run_dir)
    key = n_req = matched = 0
    t0 = last = time.monotonic()
    for rid, images, labels, digest, params in replay.regenerate(run_dir):
        if fmt == "webdataset":
            for i in range(len(labels)):
                writer.add(key + i, images[i], labels[i], _meta(space, rid, i, params))
        else:
            writer.add_batch(rid, images, labels, params)
        key += len(labels)
        n_req += 1
        matched += recorded.get(rid) == digest
        if time.monotonic() - last > 10:
            last = time.monotonic()
            log.info("exported %d samples (%d requests) in %.0f s", key, n_req, last - t0)
    writer.close()
    index = {"format": fmt, "run": str(run_dir), "family": header["family"], "samples": key, "requests": n_req,
             "image_shape": list(family.IMAGE_SHAPE), "num_classes": int(family.NUM_CLASSES),
             "classes": list(getattr(family, "CLASSES", [])) or None, "space": header["space"],
             "shards": writer.shards}
    (out / "index.json").write_text(json.dumps(index, indent=1))
    return {"out": str(out), "format": fmt, "samples": key, "requests": n_req, "shards": len(writer.shards),
            "digests_recorded": len(recorded), "matched": matched,
            "mismatched": len(recorded) - matched if recorded else None, "seconds": round(time.monotonic() - t0, 1)}


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(prog="otfgen export", description=__doc__.splitlines()[0],
                                 epilog="Formats: webdataset (tar shards of <key>.png/.cls/.json) or npz (one .npz "
                                        "of images, labels, request, index, param_<name> per shard).")
    ap.add_argument("run_dir", help="a run directory (with params.jsonl)")
    ap.add_argument("--out", required=True, help="directory for the shards and index.json (new or empty)")
    ap.add_argument("--format", default="webdataset", choices=FORMATS, help="shard format (default webdataset)")
    ap.add_argument("--shard-size", type=int, default=10_000, help="samples per shard (default 10000)")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    run_dir, out = Path(args.run_dir), Path(args.out)
    problem = None
    if not (run_dir / "params.jsonl").exists():
        problem = f"{run_dir}/params.jsonl not found"
    elif args.shard_size < 1:
        problem = "--shard-size must be >= 1"
    elif out.exists() and (not out.is_dir() or any(out.iterdir())):
        problem = f"--out {out} exists and is not an empty directory"
    if problem:
        print(f"otfgen export: {problem}", file=sys.stderr)
        return cli.CANNOT_RUN
    try:
        report = export(run_dir, out, args.format, args.shard_size)
    except (ValueError, families.UnknownFamily) as e:
        print(f"otfgen export: {e}", file=sys.stderr)
        return cli.CANNOT_RUN
    print(json.dumps(report))
    return 0 if not report["mismatched"] else 1
