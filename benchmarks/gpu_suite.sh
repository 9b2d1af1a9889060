#!/usr/bin/env bash
# Every GPU figure of otfgen in one call: the 2D loop with the trainer on CUDA, the Blender
# families under OptiX, and a short digits3d loop scored on real MNIST digits (issue 20).
#
# On the device machine (one H200, 16 cores), after the bpy-gpu kit is unpacked
# (../shared/device/bpy-gpu/README.md: chunks c0..c(N-1) sent first, then, in the last call):
#     bash .gpu/cN/unpack.sh && . /tmp/bpy311/env.sh && bash benchmarks/gpu_suite.sh
# with the run's timeout_s at least GPU_SUITE_DEADLINE_S + 60 (unpacking takes ~30 s). Carry a
# folder with mnist_dev_5k.npz and mnist_dev.npz (shared/data/ in the checkout is found by itself;
# else set GPU_SUITE_MNIST=path/to/mnist_dev_5k.npz).
# On a CPU, the same stages with tiny budgets (trainer and Cycles on the CPU, 1-2 workers):
#     GPU_SUITE_DRY=1 OUT=/tmp/gpu_dry nice -n 19 bash benchmarks/gpu_suite.sh
#
# Stages, in this order (each step has its own timeout; a step that fails or times out is recorded
# and the next one runs; a step that would start too close to the deadline is skipped):
#   probe      environment (nvidia-smi, torch, bpy), then the first Cycles frames of digits3d and
#              shapes3d (benchmarks/gpu_probe.py). If kernels were compiled (slow first frame, or
#              new files in the kernel caches), ~/.nv/ComputeCache and /var/tmp/OptixCache_$USER
#              are saved as $OUT/h200-kernel-cache.tar.zst (paths relative to /, as unpack.sh
#              restores the H100 one). The probe may use all the time left: every Blender figure
#              needs its kernels, and a compile killed half-way leaves nothing to save.
#   blender    bench_blender.py per family on the render device (images/s of one worker process,
#              per-frame split: update+post, sync+BVH, path tracing, read-back; vs one render per
#              image), then the same on the CPU of the same machine for the GPU/CPU ratio.
#   loop2d     bench_e2e.py: mnist2d, trainer on CUDA, 2 / 4 / 8 workers: samples/s, data-wait
#              share, ratio to the same training loop on pre-rendered data in memory (bench_e2e's
#              baseline; it moves each batch to the GPU per step, as the trainer does).
#   scaling3d  scaling.py per family and worker count (1, 4): the whole loop's samples/s with
#              Blender workers on the GPU; per worker = samples/s / workers.
#   loop3d     otfgen scene=digits3d, ~40k samples (as docs/experiments.md's CPU run:
#              request_size 63, trainer.val_data real MNIST), its accuracy on mnist_dev_5k.npz and,
#              with otfgen-eval, on the first 1,000 (mnist_dev.npz), beside the CPU run's 77.0%.
# Out: $OUT/<stage>.txt (raw output of each step between "=== BEGIN/END label" lines),
# $OUT/summary.md (benchmarks/gpu_summary.py), and the kernel cache if saved: at most 7 files,
# since the device returns at most 8. Scratch (run directories, shims) lives in a temp dir.
#
# Interpreters: the trainer side (controller, trainer, bench_e2e, scaling) runs under $GPU_SUITE_PY
# (the device's python3: torch + CUDA); Blender workers and bench_blender under $GPU_SUITE_BPY
# (the kit's python3.11 wrapper: bpy, no torch). The loops reach Blender through
# launcher.blender=<shim>, a stand-in for a Blender executable that runs entry.py under
# $GPU_SUITE_BPY. The dry run keeps that split: its trainer-side Python cannot import bpy and its
# Blender-side Python cannot import torch.
#
# Settings (environment; defaults: device run / GPU_SUITE_DRY=1):
#   OUT                      results folder (a new temp dir)
#   GPU_SUITE_DEADLINE_S     whole script, seconds (450 / 600); GPU_SUITE_RESERVE_S kept for the end (15)
#   GPU_SUITE_TRAINER_DEVICE cuda / cpu;   GPU_SUITE_RENDER_DEVICE optix / cpu
#   GPU_SUITE_PY, GPU_SUITE_BPY   python3, python3.11 / .venv/bin/python for both
#   GPU_SUITE_MNIST          real digits for loop3d (shared/data/mnist_dev_5k.npz, else ../shared/…)
#   GPU_SUITE_MNIST1K        first 1,000 of them (mnist_dev.npz beside it)
#   E2E_WORKERS "2 4 8" / "1 2";  E2E_SAMPLES 200000 / 1024;  E2E_TIMEOUT 45 / 150 s per run;  E2E_ARGS ""
#                            (bench_e2e's baseline copies each batch to the GPU as the trainer does; a flag
#                            that preloads the data there would go in E2E_ARGS)
#   BL_SPP 4;  BL_FRAMES 30 / 1;  BL_NAIVE 40 / 2;  BL_TIMEOUT 45 / 90;  CPU_FRAMES 2 / 1;  CPU_NAIVE 4 / 2
#   SC_WORKERS "1 4" / "1 2";  SC_SAMPLES_DIGITS3D 6300 / 126;  SC_SAMPLES_SHAPES3D 2520 / 126;  SC_TIMEOUT 45 / 90
#   L3_SAMPLES 40000 / 1260;  L3_WORKERS 8 / 2;  L3_TIMEOUT 150 / 150
#   STAGE_<NAME>_S           budget of a whole stage (BLENDER 100 / 150, LOOP2D 100 / 320, SCALING3D 150 / 240,
#                            LOOP3D 170 / 200)
#   GPU_SUITE_SAVE_CACHE     auto (save when the probe compiled), 1 (always), 0 (never)
#   GPU_SUITE_CACHE_DIRS     "$HOME/.nv/ComputeCache /var/tmp/OptixCache_$(id -un)"
set -u
cd "$(dirname "$0")/.." || exit 1
ROOT=$PWD
DRY=${GPU_SUITE_DRY:-0}
OUT=${OUT:-$(mktemp -d /tmp/gpu_suite.XXXXXX)}
mkdir -p "$OUT" || exit 1
OUT=$(cd "$OUT" && pwd)
rm -f "$OUT"/{probe,blender,loop2d,scaling3d,loop3d}.txt "$OUT"/summary.md
WORK=$(mktemp -d /tmp/gpu_suite_work.XXXXXX)
trap 'rm -rf "$WORK"' EXIT
# The checkout is the package otfgen (pyproject.toml's package-dir): where it is not installed, a
# folder holding a link named otfgen to it puts it on the path.
mkdir -p "$WORK/pkg" && ln -s "$ROOT" "$WORK/pkg/otfgen"
export PYTHONPATH=$WORK/pkg${PYTHONPATH:+:$PYTHONPATH}
NOTES=$WORK/notes.txt
: >"$NOTES"
note() { echo "- $*" >>"$NOTES"; echo "[gpu_suite] $*"; }

if [ "$DRY" = 1 ]; then
  : "${GPU_SUITE_DEADLINE_S:=600}" "${GPU_SUITE_TRAINER_DEVICE:=cpu}" "${GPU_SUITE_RENDER_DEVICE:=cpu}"
  venv=$ROOT/.venv/bin/python; [ -x "$venv" ] || venv=$(command -v python3)
  : "${GPU_SUITE_PY:=$venv}" "${GPU_SUITE_BPY:=$venv}" "${GPU_SUITE_SPLIT:=1}"
  : "${E2E_WORKERS:=1 2}" "${E2E_SAMPLES:=1024}" "${E2E_TIMEOUT:=150}"
  : "${BL_FRAMES:=1}" "${BL_NAIVE:=2}" "${BL_TIMEOUT:=90}" "${CPU_FRAMES:=1}" "${CPU_NAIVE:=2}"
  : "${SC_WORKERS:=1 2}" "${SC_SAMPLES_DIGITS3D:=126}" "${SC_SAMPLES_SHAPES3D:=126}" "${SC_TIMEOUT:=90}"
  : "${L3_SAMPLES:=1260}" "${L3_WORKERS:=2}" "${L3_TIMEOUT:=150}"
  # a shared 2-core machine: the stages take longer than their device budgets
  : "${STAGE_BLENDER_S:=150}" "${STAGE_LOOP2D_S:=320}" "${STAGE_SCALING3D_S:=240}" "${STAGE_LOOP3D_S:=200}"
else
  : "${GPU_SUITE_DEADLINE_S:=450}" "${GPU_SUITE_TRAINER_DEVICE:=cuda}" "${GPU_SUITE_RENDER_DEVICE:=optix}"
  : "${GPU_SUITE_PY:=python3}" "${GPU_SUITE_BPY:=python3.11}" "${GPU_SUITE_SPLIT:=0}"
  : "${E2E_WORKERS:=2 4 8}" "${E2E_SAMPLES:=200000}" "${E2E_TIMEOUT:=45}"
  : "${BL_FRAMES:=30}" "${BL_NAIVE:=40}" "${BL_TIMEOUT:=45}" "${CPU_FRAMES:=2}" "${CPU_NAIVE:=4}"
  : "${SC_WORKERS:=1 4}" "${SC_SAMPLES_DIGITS3D:=6300}" "${SC_SAMPLES_SHAPES3D:=2520}" "${SC_TIMEOUT:=45}"
  : "${L3_SAMPLES:=40000}" "${L3_WORKERS:=8}" "${L3_TIMEOUT:=150}"
fi
: "${E2E_ARGS:=}" "${GPU_SUITE_RESERVE_S:=15}" "${BL_SPP:=4}" "${GPU_SUITE_SAVE_CACHE:=auto}"
: "${STAGE_BLENDER_S:=100}" "${STAGE_LOOP2D_S:=100}" "${STAGE_SCALING3D_S:=150}" "${STAGE_LOOP3D_S:=170}"
: "${GPU_SUITE_CACHE_DIRS:=$HOME/.nv/ComputeCache /var/tmp/OptixCache_$(id -un)}"
: "${GPU_SUITE_CACHE_NAME:=h200-kernel-cache}"
DEADLINE=$GPU_SUITE_DEADLINE_S RESERVE=$GPU_SUITE_RESERVE_S
TDEV=$GPU_SUITE_TRAINER_DEVICE RDEV=$GPU_SUITE_RENDER_DEVICE
for f in "${GPU_SUITE_MNIST:-}" shared/data/mnist_dev_5k.npz ../shared/data/mnist_dev_5k.npz; do
  [ -n "$f" ] && [ -f "$f" ] && { MNIST=$(cd "$(dirname "$f")" && pwd)/$(basename "$f"); break; }
done
MNIST=${MNIST:-}
MNIST1K=${GPU_SUITE_MNIST1K:-${MNIST:+$(dirname "$MNIST")/mnist_dev.npz}}
[ -n "$MNIST1K" ] && [ ! -f "$MNIST1K" ] && MNIST1K=

# --- interpreters -----------------------------------------------------------------------------
PY=$(command -v "$GPU_SUITE_PY" || echo "$GPU_SUITE_PY")
BPY=$(command -v "$GPU_SUITE_BPY" || echo "$GPU_SUITE_BPY")
mkdir -p "$WORK/bin"
if [ "$GPU_SUITE_SPLIT" = 1 ]; then  # the device's split on one Python: no bpy trainer-side, no torch Blender-side
  mkdir -p "$WORK/nobpy" "$WORK/notorch"
  echo "import sys; sys.modules['bpy'] = None  # gpu_suite dry run: as on the device, no bpy here" >"$WORK/nobpy/sitecustomize.py"
  echo "import sys; sys.modules['torch'] = None  # gpu_suite dry run: as on the device, no torch here" >"$WORK/notorch/sitecustomize.py"
  printf '#!/bin/sh\nexport PYTHONPATH=%s${PYTHONPATH:+:$PYTHONPATH}\nexec %s "$@"\n' "$WORK/nobpy" "$PY" >"$WORK/bin/py-trainer"
  printf '#!/bin/sh\nexport PYTHONPATH=%s:%s\nexec %s "$@"\n' "$WORK/notorch" "$WORK/pkg" "$BPY" >"$WORK/bin/py-blender"
  chmod +x "$WORK/bin/py-trainer" "$WORK/bin/py-blender"
  PY=$WORK/bin/py-trainer BPY=$WORK/bin/py-blender
fi
# launcher.blender=SHIM: the launcher runs `SHIM --background --factory-startup --python-exit-code 2
# --python blender_gen/blender/entry.py -- ARGS`; the shim runs entry.py under the bpy Python as
# Blender would: through runpy, so that entry.py's folder (it holds a cycles.py) is not put first
# on sys.path, where it would hide Blender's own `cycles` add-on.
SHIM=$WORK/bin/blender-shim
cat >"$SHIM" <<EOF
#!/bin/sh
# stands in for a Blender executable: run the --python script under $BPY with the args after --
entry=
while [ \$# -gt 0 ]; do
  case "\$1" in --python) entry=\$2; shift 2 ;; --) shift; break ;; *) shift ;; esac
done
exec "$BPY" -c 'import runpy, sys; e = sys.argv[1]; sys.argv = [e, "--", *sys.argv[2:]]; runpy.run_path(e, run_name="__main__")' "\$entry" "\$@"
EOF
chmod +x "$SHIM"
# a child started with PYTHONPATH=<one folder> alone would hide the kit's pyzmq and
# hydra-core (/tmp/site312 on PYTHONPATH after env.sh) from the device's python3: list them in a
# .pth file of that Python's site-packages instead.
if [ -n "${PYTHONPATH:-}" ] && ! PYTHONPATH=$WORK/pkg "$PY" -c 'import zmq, hydra, yaml' 2>/dev/null; then
  sp=$("$PY" -c 'import site; print(site.getsitepackages()[0])' 2>/dev/null)
  if [ -n "$sp" ] && echo "$PYTHONPATH" | tr ':' '\n' | grep -v '^$' >"$sp/otfgen_gpu_suite.pth" 2>/dev/null; then
    note "wrote $sp/otfgen_gpu_suite.pth (PYTHONPATH entries) so that bench_e2e's child finds pyzmq and hydra"
  elif "$PY" -m venv --without-pip "$WORK/venv" 2>/dev/null; then  # read-only site-packages: a venv that sees both
    sp2=$("$WORK/venv/bin/python" -c 'import site; print(site.getsitepackages()[0])')
    { echo "$PYTHONPATH" | tr ':' '\n'; "$PY" -c 'import site; print("\n".join(site.getsitepackages()))'; } \
      | grep -v '^$' >"$sp2/otfgen_gpu_suite.pth"
    PY=$WORK/venv/bin/python
    note "site-packages of $GPU_SUITE_PY not writable: trainer side runs under $PY (a venv listing its packages and PYTHONPATH)"
  else
    note "could not make pyzmq/hydra visible without PYTHONPATH: bench_e2e's loop may fail"
  fi
fi

# --- steps ------------------------------------------------------------------------------------
now() { echo "${EPOCHREALTIME:-$(date +%s.%N)}"; }
T0=$(now)
elapsed() { awk -v a="$T0" -v b="$(now)" 'BEGIN { printf "%d", b - a }'; }
STAGE= STAGE_END=0
stage() {  # stage NAME BUDGET_S
  STAGE=$1; STAGE_END=$(( $(elapsed) + $2 ))
  echo "[gpu_suite] t=$(elapsed)s stage $STAGE (budget $2 s, deadline ${DEADLINE} s)"
}
skip() { echo "=== SKIP $1: $2" >>"$OUT/$STAGE.txt"; note "skipped $STAGE/$1: $2"; }
step() {  # step LABEL LIMIT_S NEED_S CMD...: run CMD under timeout, capped by stage budget and deadline
  local label=$1 limit=$2 need=$3; shift 3
  local f=$OUT/$STAGE.txt t=$(elapsed)
  local left=$(( DEADLINE - RESERVE - t )) sleft=$(( STAGE_END - t ))
  (( sleft < left )) && left=$sleft
  if (( left < need )); then skip "$label" "${left} s left in stage/deadline at t=${t}s, needs ${need} s"; return 0; fi
  (( limit > left )) && limit=$left
  echo "[gpu_suite] t=${t}s $label (timeout ${limit}s)"
  printf '=== BEGIN %s (timeout %ss, t=%ss) $ %s\n' "$label" "$limit" "$t" "$*" >>"$f"
  local a b rc
  a=$(now)
  PYTHONUNBUFFERED=1 timeout -k 10 "$limit" "$@" >>"$f" 2>&1 </dev/null
  rc=$?
  b=$(now)
  echo "=== END $label rc=$rc wall=$(awk -v a="$a" -v b="$b" 'BEGIN { printf "%.1f", b - a }')s" >>"$f"
  (( rc == 0 )) || note "$STAGE/$label: rc $rc$( ((rc == 124 || rc == 137)) && echo " (timed out after ${limit} s)")"
  return 0
}

cat >"$WORK/header.txt" <<EOF
mode: $([ "$DRY" = 1 ] && echo "DRY (CPU, tiny budgets)" || echo device) | $(date -u +%Y-%m-%dT%H:%M:%SZ) | host $(hostname 2>/dev/null || cat /proc/sys/kernel/hostname) | $(nproc) cores
commit: $(git rev-parse --short HEAD 2>/dev/null || echo "${GPU_SUITE_COMMIT:-unknown}")
trainer: $GPU_SUITE_PY on $TDEV | Blender: $GPU_SUITE_BPY on $RDEV | deadline ${DEADLINE} s
loop2d: workers $E2E_WORKERS, $E2E_SAMPLES samples | blender: $BL_SPP spp, $BL_FRAMES frames, naive $BL_NAIVE, CPU $CPU_FRAMES frames
scaling3d: workers $SC_WORKERS, digits3d $SC_SAMPLES_DIGITS3D / shapes3d $SC_SAMPLES_SHAPES3D samples
loop3d: $L3_SAMPLES samples, $L3_WORKERS workers, val ${MNIST:-none (built-in digits)}, 1k ${MNIST1K:-none}
EOF
cat "$WORK/header.txt"

# --- probe: environment, first render, kernel cache -------------------------------------------
STAGE=probe STAGE_END=$DEADLINE
step env 60 5 bash -c "
  echo '# nvidia-smi'; nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm --format=csv 2>&1 || echo 'no nvidia-smi'
  echo '# cpu'; nproc; free -g 2>/dev/null | head -2
  echo '# trainer python'; '$PY' -c 'import sys, torch, zmq, hydra, numpy; print(sys.version.split()[0], \"torch\", torch.__version__, \"cuda\", torch.cuda.is_available(), torch.cuda.get_device_name(0) if torch.cuda.is_available() else \"-\", \"numpy\", numpy.__version__, \"pyzmq\", zmq.__version__)'
  echo '# blender python'; '$BPY' -c 'import sys, bpy, numpy, zmq; print(sys.version.split()[0], \"bpy\", bpy.app.version_string, \"numpy\", numpy.__version__)' 2>&1 | grep -v '^$' | tail -3
  echo '# kernel caches'; for d in $GPU_SUITE_CACHE_DIRS; do du -sh \"\$d\" 2>/dev/null || echo \"\$d: none\"; done"
touch "$WORK/cache-marker"
sleep 1
probe_a=$(now)
step first-render $(( DEADLINE - RESERVE )) 20 "$BPY" benchmarks/gpu_probe.py --device "$RDEV"
probe_s=$(awk -v a="$probe_a" -v b="$(now)" 'BEGIN { printf "%d", b - a }')
first_s=$(grep -o '"first_frame_s": [0-9.]*' "$OUT/probe.txt" 2>/dev/null | awk '{ if ($2 > m) m = $2 } END { printf "%d", m }')
if ! grep -q '"probe_total_s"' "$OUT/probe.txt"; then  # killed or failed: maybe still compiling kernels
  first_s=$probe_s
  note "first render did not finish (${probe_s} s): if it was compiling kernels, give the next call a larger GPU_SUITE_DEADLINE_S (the compile must end inside one call; the kit's README says ~8 min cold)"
fi

save_cache() {  # save_cache WHY
  local rels=() d z
  for d in $GPU_SUITE_CACHE_DIRS; do [ -e "$d" ] && rels+=("${d#/}"); done
  if [ ${#rels[@]} = 0 ]; then note "kernel cache: none of $GPU_SUITE_CACHE_DIRS exists, nothing saved"; return; fi
  z=$(command -v zstd || { [ -x /tmp/pay/zstd ] && echo /tmp/pay/zstd; })
  local out=$OUT/$GPU_SUITE_CACHE_NAME.tar
  rm -f "$out".zst "$out".gz
  if [ -n "$z" ]; then tar -C / -cf - "${rels[@]}" | "$z" -q -T0 -15 -o "$out.zst"; out=$out.zst
  else tar -C / -czf "$out.gz" "${rels[@]}"; out=$out.gz; fi
  note "kernel cache saved ($1): $(basename "$out"), $(du -h "$out" | cut -f1) from ${rels[*]} (restore: cd / && zstd -dc FILE | tar -xf -)"
  [ "$(stat -c %s "$out")" -gt $((16 * 1024 * 1024)) ] && note "kernel cache file is over 16 MiB: the device will not return it"
  touch "$WORK/cache-saved"
}
new_cache_files() { find $GPU_SUITE_CACHE_DIRS -type f -newer "${1:-$WORK/cache-marker}" 2>/dev/null | wc -l; }
check_cache() {  # after the probe and at the end: save when kernels were compiled
  local n; n=$(new_cache_files)
  if [ -e "$WORK/cache-saved" ]; then  # saved after the probe: again only if a later stage compiled more
    [ "$(new_cache_files "$WORK/cache-saved")" = 0 ] || save_cache "new cache files after the first save"
  elif [ "$GPU_SUITE_SAVE_CACHE" = 1 ]; then save_cache "GPU_SUITE_SAVE_CACHE=1"
  elif [ "$GPU_SUITE_SAVE_CACHE" != 0 ] && (( n > 0 || first_s >= 20 )); then
    save_cache "slowest first frame ${first_s} s, $n new or changed cache files"
  elif [ ! -e "$WORK/cache-noted" ]; then
    note "kernel cache: not saved (GPU_SUITE_SAVE_CACHE=$GPU_SUITE_SAVE_CACHE, slowest first frame ${first_s} s, $n new cache files)"
    touch "$WORK/cache-noted"
  fi
}
check_cache
note "probe: ${probe_s} s for the first frames of both families on $RDEV (slowest first frame ${first_s} s)"

# --- blender: one worker process per family, GPU then CPU -------------------------------------
stage blender "$STAGE_BLENDER_S"
for fam in digits3d shapes3d; do
  step "bench-$fam-gpu" "$BL_TIMEOUT" 10 "$BPY" benchmarks/bench_blender.py --family "$fam" --device "$RDEV" \
    --samples "$BL_SPP" --frames "$BL_FRAMES" --naive "$BL_NAIVE"
done
for fam in digits3d shapes3d; do
  step "bench-$fam-cpu" "$BL_TIMEOUT" 10 "$BPY" benchmarks/bench_blender.py --family "$fam" --device cpu \
    --samples "$BL_SPP" --frames "$CPU_FRAMES" --naive "$CPU_NAIVE"
done

# --- loop2d: mnist2d, trainer on CUDA, against the same loop on data in GPU memory ------------
stage loop2d "$STAGE_LOOP2D_S"
for w in $E2E_WORKERS; do
  # shellcheck disable=SC2086  # E2E_ARGS: extra bench_e2e.py flags, split on spaces
  step "e2e-w$w" "$E2E_TIMEOUT" 15 "$PY" benchmarks/bench_e2e.py --workers "$w" --samples "$E2E_SAMPLES" --device "$TDEV" $E2E_ARGS
done

# --- scaling3d: whole loop with Blender workers, 1 and 4 workers ------------------------------
stage scaling3d "$STAGE_SCALING3D_S"
common=(scene.render.device="$RDEV" trainer.device="$TDEV" controller.request_size=63 launcher.blender="$SHIM")
for fam in digits3d shapes3d; do
  n=$SC_SAMPLES_DIGITS3D extra=()
  [ "$fam" = shapes3d ] && n=$SC_SAMPLES_SHAPES3D extra=(trainer.val_stream_samples=63)
  for w in $SC_WORKERS; do
    step "scaling-$fam-w$w" "$SC_TIMEOUT" 15 "$PY" benchmarks/scaling.py --workers "$w" --samples "$n" \
      scene="$fam" "${common[@]}" "${extra[@]}"
  done
done

# --- loop3d: digits3d, ~40k samples, scored on real MNIST ----------------------------------
stage loop3d "$STAGE_LOOP3D_S"
rd=$WORK/loop3d
val=(); [ -n "$MNIST" ] && val=(trainer.val_data="$MNIST")
[ -n "$MNIST" ] || note "loop3d: no real MNIST file (set GPU_SUITE_MNIST): validated on the built-in 8x8 digits"
step loop3d "$L3_TIMEOUT" 30 "$PY" -m otfgen.controller.main hydra.run.dir="$rd" scene=digits3d \
  budget.samples="$L3_SAMPLES" launcher.workers="$L3_WORKERS" launcher.progress=false "${common[@]}" "${val[@]}"
[ -f "$rd/metrics.jsonl" ] || skip loop3d-result "no metrics.jsonl from the loop"
[ -f "$rd/metrics.jsonl" ] && step loop3d-result 20 2 "$PY" -c '
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1] + "/metrics.jsonl")]
t = [r for r in rows if "train/samples_per_s" in r][-1]
v = [r for r in rows if "val/acc" in r][-1]
print(json.dumps({"loop3d": {"samples": t.get("train/samples"), "workers": int(sys.argv[2]), "render": sys.argv[3],
    "trainer": sys.argv[4], "samples_per_s": t["train/samples_per_s"], "data_wait": t["train/data_wait"],
    "wall_s": t.get("train/elapsed_s"), "val_acc": v["val/acc"], "val_n": v.get("val/n"), "val_data": sys.argv[5]}}))
' "$rd" "$L3_WORKERS" "$RDEV" "$TDEV" "${MNIST:-built-in digits}"
if [ -z "$MNIST1K" ]; then skip loop3d-eval1k "no mnist_dev.npz beside $MNIST (set GPU_SUITE_MNIST1K)"
elif [ ! -f "$rd/checkpoint.pt" ]; then skip loop3d-eval1k "no checkpoint.pt from the loop"
else
  step loop3d-eval1k 60 5 "$PY" -m otfgen.trainer.evaluate --checkpoint "$rd/checkpoint.pt" --data "$MNIST1K" --device "$TDEV"
fi

# --- end: kernel cache compiled after the probe, summary --------------------------------------
check_cache
note "total: $(elapsed) s of the ${DEADLINE} s deadline"
if ! timeout 60 "$PY" benchmarks/gpu_summary.py "$OUT" --header "$WORK/header.txt" --notes "$NOTES" >/dev/null 2>"$WORK/summary.err"; then
  { echo "# gpu_suite summary (gpu_summary.py failed: $(tail -1 "$WORK/summary.err"))"; echo '```'
    cat "$WORK/header.txt"; grep -h '^=== \(END\|SKIP\)' "$OUT"/*.txt; echo '```'; cat "$NOTES"; } >"$OUT/summary.md"
fi
cat "$OUT/summary.md"
echo "[gpu_suite] results in $OUT: $(cd "$OUT" && ls | tr '\n' ' ')"
