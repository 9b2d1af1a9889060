"""Summary of a benchmarks/gpu_suite.sh run: reads its stage files, writes summary.md.

    python3 benchmarks/gpu_summary.py OUT_DIR [--header FILE] [--notes FILE]

Each stage file OUT_DIR/<stage>.txt holds blocks written by the suite:
``=== BEGIN <label> ...``, the command's output, ``=== END <label> rc=N wall=Ss``, or
``=== SKIP <label>: why``. Figures are read from the benchmark scripts' own output (bench_e2e's
text lines, bench_blender's and scaling's JSON, the suite's loop3d JSON); anything missing is
shown as "-" and the block's status says why. Standard library only.
"""

from __future__ import annotations

import argparse
import json
import re
from pathlib import Path

STAGES = ("probe", "blender", "loop2d", "scaling3d", "loop3d")
CPU_LOOP3D_ACC = 77.0  # README: digits3d, 40,000 samples, CPU render, 1,000 real MNIST digits


def blocks(out: Path) -> dict[str, dict]:
    found: dict[str, dict] = {}
    for stage in STAGES:
        f = out / f"{stage}.txt"
        if not f.exists():
            continue
        cur = None
        for line in f.read_text(errors="replace").splitlines():
            m = re.match(r"=== BEGIN (\S+)", line)
            if m:
                cur = found[m.group(1)] = {"stage": stage, "lines": [], "status": "running (no END line)"}
                continue
            m = re.match(r"=== END (\S+) rc=(-?\d+) wall=([\d.]+)s", line)
            if m and m.group(1) in found:
                rc = int(m.group(2))
                found[m.group(1)].update(rc=rc, wall=float(m.group(3)), status=(
                    "ok" if rc == 0 else "timed out" if rc in (124, 137) else f"failed (rc {rc})"))
                cur = None
                continue
            m = re.match(r"=== SKIP (\S+): (.*)", line)
            if m:
                found[m.group(1)] = {"stage": stage, "lines": [], "status": f"skipped: {m.group(2)}"}
                cur = None
                continue
            if cur is not None:
                cur["lines"].append(line)
    return found


def jsons(block: dict | None) -> list:
    out = []
    for line in (block or {}).get("lines", []):
        line = line.strip()
        if line[:1] in "{[":
            try:
                out.append(json.loads(line))
            except ValueError:
                pass
    return out


def grab(block: dict | None, pattern: str) -> float | None:
    for line in (block or {}).get("lines", []):
        m = re.search(pattern, line)
        if m:
            return float(m.group(1))
    return None


def fmt(v, spec: str = ".0f", suffix: str = "") -> str:
    return "-" if v is None else f"{v:{spec}}{suffix}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("out")
    ap.add_argument("--header", help="a text file to put first (the suite's settings)")
    ap.add_argument("--notes", help="a text file of notes from the suite (kernel cache, deadline)")
    args = ap.parse_args()
    out = Path(args.out)
    b = blocks(out)
    md = ["# gpu_suite summary", ""]
    if args.header and Path(args.header).exists():
        md += ["```", Path(args.header).read_text().rstrip(), "```", ""]

    md += ["## Stages", "", "| stage | step | status | wall s |", "|---|---|---|---|"]
    for label, blk in b.items():
        md.append(f"| {blk['stage']} | {label} | {blk['status']} | {fmt(blk.get('wall'), '.1f')} |")
    md.append("")

    probe = [j for j in jsons(b.get("first-render")) if isinstance(j, dict)]
    if probe:
        md += ["## First render (kernel compile check)", ""]
        for j in probe:
            if "cycles_devices" in j:
                md.append(f"- bpy {j['bpy']} (Python {j['python']}); Cycles devices: {', '.join(j['cycles_devices']) or 'none'}")
            elif "family" in j:
                md.append(f"- {j['family']} on {j['device']}: first frame {j['first_frame_s']} s, second "
                          f"{j['second_frame_s']} s ({j['cells']} cells, {j['samples']} sample/px)")
        md.append("")

    rows = []
    for label in sorted((k for k in b if k.startswith("e2e-w")), key=lambda k: int(k[5:])):
        blk = b[label]
        rows.append((int(label[5:]), grab(blk, r"otfgen stream \(trainer clock\)\s+(\d+)"),
                     grab(blk, r"data wait: ([\d.]+)%"), grab(blk, r"same loop, data in memory\s+(\d+)"),
                     grab(blk, r"ratio stream / in-memory: ([\d.]+)"), blk["status"]))
    if rows:
        header = Path(args.header).read_text() if args.header and Path(args.header).exists() else ""
        dev = next((m.group(1) for blk in b.values() for line in blk["lines"]
                    for m in [re.match(r"device (\S+), \d+ workers", line)] if m),
                   next(iter(re.findall(r"trainer: \S+ on (\S+)", header)), "?"))
        md += [f"## 2D loop (mnist2d, trainer on {dev}; benchmarks/bench_e2e.py)", "",
               "| workers | stream samples/s | data wait | in-memory samples/s | stream / in-memory | status |",
               "|---|---|---|---|---|---|"]
        for w, sps, wait, base, ratio, st in rows:
            md.append(f"| {w} | {fmt(sps)} | {fmt(wait, '.2f', '%')} | {fmt(base)} | {fmt(ratio, '.2f')} | {st} |")
        md.append("")

    bench = {}
    for label, blk in b.items():
        if label.startswith("bench-"):
            js = [j for j in jsons(blk) if isinstance(j, dict) and "images_per_s" in j]
            bench[label] = js[-1] if js else None
    if bench:
        md += ["## Blender, one worker process (benchmarks/bench_blender.py)", "",
               "| family | run | device | spp | images/s | naive images/s | grid / naive | update+post ms | "
               "sync+BVH ms | path tracing ms | read-back ms |", "|---|---|---|---|---|---|---|---|---|---|---|"]
        for label, j in bench.items():
            fam, role = label.split("-")[1], {"gpu": "render device", "cpu": "CPU"}.get(label.split("-")[-1], "?")
            if j is None:
                md.append(f"| {fam} | {role} | - | - | - | - | - | - | - | - | - |  ({b[label]['status']})")
                continue
            md.append(f"| {fam} | {role} | {j['device']} | {j['samples']} | {j['images_per_s']} | "
                      f"{j['naive_images_per_s']} | {j['ratio']}× | {j['ms_update_post']} | {j['ms_sync']} | "
                      f"{j['ms_trace']} | {j['ms_readback']} |")
        for fam in ("digits3d", "shapes3d"):
            gpu, cpu = bench.get(f"bench-{fam}-gpu"), bench.get(f"bench-{fam}-cpu")
            if gpu and cpu and cpu["images_per_s"]:
                md.append(f"\n{fam}: render device ({gpu['device']}) / CPU of the same machine = "
                          f"{gpu['images_per_s'] / cpu['images_per_s']:.2f}× images/s per worker process")
        md.append("")

    scal = []
    for label, blk in b.items():
        if label.startswith("scaling-"):
            js = [j for j in jsons(blk) if isinstance(j, list)]
            scal.append((label.split("-")[1], js[-1] if js else None, blk["status"]))
    if scal:
        md += ["## Blender families in the whole loop (benchmarks/scaling.py)", "",
               "| family | workers | samples/s | per worker | data wait | status |", "|---|---|---|---|---|---|"]
        for fam, rows_, st in scal:
            for r in rows_ or [None]:
                if r is None:
                    md.append(f"| {fam} | - | - | - | - | {st} |")
                else:
                    md.append(f"| {fam} | {r['workers']} | {r['samples_per_s']:.0f} | "
                              f"{r['samples_per_s'] / r['workers']:.0f} | {100 * r['data_wait']:.1f}% | {st} |")
        md.append("")

    loop = [j for j in jsons(b.get("loop3d-result")) if isinstance(j, dict) and "loop3d" in j]
    ev = [j for j in jsons(b.get("loop3d-eval1k")) if isinstance(j, dict) and "accuracy" in j]
    if "loop3d" in b:
        md += ["## digits3d loop (otfgen scene=digits3d)", ""]
        if loop:
            j = loop[-1]["loop3d"]
            acc = j.get("val_acc")
            md.append(f"- {j.get('samples')} samples, {j.get('workers')} workers, render {j.get('render')}, "
                      f"trainer {j.get('trainer')}: {fmt(j.get('samples_per_s'))} samples/s, data wait "
                      f"{fmt(None if j.get('data_wait') is None else 100 * j['data_wait'], '.1f', '%')}, "
                      f"wall {fmt(j.get('wall_s'), '.0f', ' s')}")
            md.append(f"- accuracy on {j.get('val_n')} real digits ({j.get('val_data')}): "
                      f"{fmt(None if acc is None else 100 * acc, '.1f', '%')}")
        if ev:
            md.append(f"- accuracy on the first {ev[-1]['n']} ({ev[-1]['data']}): {100 * ev[-1]['accuracy']:.1f}% "
                      f"(README, CPU render, 40,000 samples, same 1,000 digits: {CPU_LOOP3D_ACC}%)")
        if not loop:
            md.append(f"- no result: {b['loop3d']['status']}")
        md.append("")

    if args.notes and Path(args.notes).exists():
        md += ["## Notes", "", Path(args.notes).read_text().rstrip(), ""]
    (out / "summary.md").write_text("\n".join(md) + "\n")
    print("\n".join(md))


if __name__ == "__main__":
    main()
