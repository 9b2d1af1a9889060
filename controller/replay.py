"""``otfgen replay RUN_DIR``: regenerate a run's stream from its parameter log and check the bytes.

The parameter log (params.jsonl) holds, per request, the policy's action and a seed; the trainer's
stream.jsonl holds the order requests were consumed in and a digest of each request's bytes. Replay
draws the same parameters (``ParamSpace.sample``), renders them with the same family, and compares
digests: equal digests mean the training stream was reproduced bit for bit. To keep the images,
``otfgen export`` writes the same regenerated stream to shards.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
from pathlib import Path
from typing import Iterator

import numpy as np

from otfgen.blender_gen import families
from otfgen.configs import cli
from otfgen.blender_gen.space import ParamSpace
from otfgen.controller import paramlog


def stream_logs(run_dir: Path) -> list[Path]:
    """The trainer's consumption logs: stream.jsonl, or one stream.rank<r>.jsonl per DDP rank."""
    single = run_dir / "stream.jsonl"
    return [single] if single.exists() else sorted(run_dir.glob("stream.rank*.jsonl"),
                                                   key=lambda p: int(p.stem.rpartition("rank")[2]))


def consumed_ids(logs: list[Path]) -> Iterator[int]:
    """Request ids in the order the trainer consumed them (read as they are needed)."""
    for path in logs:
        with open(path) as f:
            for line in f:
                if line.strip():
                    yield json.loads(line)["id"]


def recorded_digests(run_dir: Path) -> dict[int, str]:
    """Request id -> digest of the bytes the trainer consumed (from stream.jsonl)."""
    out = {}
    for path in stream_logs(run_dir):
        with open(path) as f:
            for line in f:
                if line.strip():
                    r = json.loads(line)
                    out[r["id"]] = r["digest"]
    return out


def regenerate(run_dir: str | Path) -> Iterator[tuple[int, np.ndarray, np.ndarray, str, dict[str, np.ndarray]]]:
    """(request id, images, labels, digest, params) in the order the trainer consumed them.

    One request is in memory at a time, and per request of the run only its offset in
    params.jsonl: memory does not grow with the run's length (``otfgen export`` relies on it)."""
    run_dir = Path(run_dir)
    header, offsets = paramlog.index(run_dir / "params.jsonl")
    family = families.load(header["family"])
    if hasattr(family, "configure"):  # Blender families: the run's device, samples and grid
        family.configure(dict(header.get("render", {})))
    space = ParamSpace.from_mapping(header["space"])
    logs = stream_logs(run_dir)
    order = consumed_ids(logs) if logs else iter(sorted(offsets))
    with open(run_dir / "params.jsonl", "rb") as f:
        for rid in order:
            if rid not in offsets:
                raise ValueError(f"{run_dir}: request {rid} was consumed but is not in params.jsonl")
            rec = paramlog.record_at(f, offsets[rid])
            params, seeds = space.sample(rec["action"], rec["seed"], rec["n"])
            images, labels = family.render(params, seeds)
            labels = labels.astype(np.int64)
            h = hashlib.blake2b(np.ascontiguousarray(images).data, digest_size=16)
            h.update(np.ascontiguousarray(labels).data)
            yield rid, images, labels, h.hexdigest(), params


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(prog="otfgen replay", description=__doc__.splitlines()[0])
    ap.add_argument("run_dir")
    ap.add_argument("--out", help=argparse.SUPPRESS)  # moved to otfgen export (shards, bounded memory)
    args = ap.parse_args(argv)
    run_dir = Path(args.run_dir)
    if args.out:
        print(f"otfgen replay: --out moved to `otfgen export {run_dir} --out DIR --format npz` (or webdataset), "
              "which writes shards with bounded memory", file=sys.stderr)
        return cli.CANNOT_RUN
    if not (run_dir / "params.jsonl").exists():
        print(f"otfgen replay: {run_dir}/params.jsonl not found", file=sys.stderr)
        return cli.CANNOT_RUN
    header, _ = paramlog.read(run_dir / "params.jsonl")
    if header.get("code") not in (None, families.code_digest()):
        print(f"otfgen replay: warning: the rendering code changed since this run (code {header['code']}, now "
              f"{families.code_digest()}); mismatches may come from that", file=sys.stderr)
    recorded = recorded_digests(run_dir)
    n_req = n_samples = matched = 0
    pixel_bytes = 0
    for rid, images, labels, digest, _ in regenerate(run_dir):
        n_req += 1
        n_samples += len(labels)
        pixel_bytes += images.nbytes + labels.nbytes
        matched += recorded.get(rid) == digest
    log_bytes = (run_dir / "params.jsonl").stat().st_size
    report = {"requests": n_req, "samples": n_samples, "digests_recorded": len(recorded), "matched": matched,
              "mismatched": len(recorded) - matched if recorded else None, "params_bytes": log_bytes,
              "pixel_bytes": pixel_bytes, "storage_ratio": round(pixel_bytes / max(log_bytes, 1), 1)}
    print(json.dumps(report))
    if not recorded:
        # regenerating proves nothing without the digests of what was consumed: say so, and fail
        print(f"otfgen replay: {run_dir} recorded no digests (no stream.jsonl: a Stream.local run, whose loop keeps "
              f"none), so nothing was checked; `otfgen export` still regenerates its {n_samples} samples",
              file=sys.stderr)
        return 1
    return 0 if matched == len(recorded) else 1
