#!/usr/bin/env bash
# The GPU check: the fast path end to end on one CUDA machine, in about 5 minutes.
#
#   DCGAN_DATA=/path/to/data scripts/gpu_check.sh [OUT]        # on a GPU (OUT default ./gpu-check)
#   DEVICE=cpu REHEARSAL=1 DCGAN_DATA=... scripts/gpu_check.sh  # the same commands on a CPU, tiny models
#   (more knobs: RUN_TESTS=0 skips the pytest part, COMPILE=0 the --compile benches, INSTALL=0 the pip
#   install, TRAIN_SECONDS=N the time before the SIGTERM, CHECK_PY="..." the Python that runs the torch
#   commands, python3 by default; tests/test_gpu_check.py rehearses it so, with a warm, forking Python)
#
# It installs the project (pip install --no-deps -e .), then runs, each part under its own time limit
# so that one failure leaves the others' figures:
#   1. the CUDA cases of tests/test_fast_path.py and tests/test_prepare_stream.py (whole files);
#   2. dcgan bench: mnist-dcgan-64 at batch 64, 512, 1024 and mnist-cdcgan at 64, 512, 1024 (the fast
#      path), --baseline at 64 (the same model in a hand-written eager fp32 loop), --no-graphs at 64
#      with a profile (what the graph buys), profiles of the graphed step at batch 64 and at the large
#      batches, streamed data at 512, NCHW instead of channels_last, and --compile (COMPILE=0 skips it);
#   3. dcgan train mnist-cdcgan --seed 0, stopped by SIGTERM TRAIN_SECONDS (60) after launch, then
#      dcgan eval of the checkpoint it wrote (FID, recall, label accuracy);
#   4. sampling 10,000 images from that run (in-process time, and the `dcgan sample` command's wall time).
# Results: OUT/results.jsonl (one JSON object per measurement: {"part": ..., ...}), OUT/log.txt,
# and OUT/details.tar.gz (test report, bench profiles, the run's metrics.jsonl and grids).
set -u
OUT=${1:-${OUT:-./gpu-check}}
OUT=$(mkdir -p "$OUT" && cd "$OUT" && pwd)
DEVICE=${DEVICE:-cuda}
REHEARSAL=${REHEARSAL:-0}
RUN_TESTS=${RUN_TESTS:-1}
TRAIN_SECONDS=${TRAIN_SECONDS:-60}
CHECK_PY=${CHECK_PY:-python3}  # word-split on purpose: CHECK_PY="python3 tests/warm_python.py" in the rehearsal
export DCGAN_CACHE=${DCGAN_CACHE:-$OUT/cache}
export PYTHONUNBUFFERED=1
RESULTS=$OUT/results.jsonl
LOG=$OUT/log.txt
DETAILS=$OUT/details
mkdir -p "$DETAILS"
: >"$RESULTS"
cd "$(dirname "$0")/.."

if [ "$REHEARSAL" = 1 ]; then  # tiny widths and counts: every command runs, in seconds, on a CPU
  TINY=(--set model.g_width=8 --set model.d_width=8 --set model.g_fc=32 --set model.d_fc=32)
  BENCH=(--steps 4 --warmup 1 --windows 2)
  B64=8; B512=16; B1024=32; EVAL_N=200; SAMPLE_N=200; TICKS=(--set train.tick_every=20)
  EVAL_STEPS=40; EVAL_KIMG=1; EVAL_TRAIN_N=200
else
  TINY=()
  BENCH=(--steps 300 --warmup 20 --windows 5)
  B64=64; B512=512; B1024=1024; EVAL_N=10000; SAMPLE_N=10000; TICKS=()
  EVAL_STEPS=3000; EVAL_KIMG=64; EVAL_TRAIN_N=2000
fi

log() { echo "== $(date +%T) $*" | tee -a "$LOG"; }
record() { echo "$1" >>"$RESULTS"; }  # one JSON object
failed() { log "FAILED ($1): $2"; record "{\"part\": \"$2\", \"failed\": true, \"exit\": $1}"; }
# run PART SECONDS CMD...: the command's stdout (JSON lines) tagged with the part into results.jsonl
run() {
  local part=$1 limit=$2; shift 2
  log "$part: $*"
  [ "$1" = dcgan ] && { shift; set -- $CHECK_PY -m dcgan "$@"; }  # timeout runs programs, not shell functions
  timeout -k 10 "$limit" "$@" >"$DETAILS/$part.out" 2>>"$LOG"
  local rc=$?
  python3 - "$part" "$DETAILS/$part.out" >>"$RESULTS" <<'EOF'
import json, sys
part, path = sys.argv[1], sys.argv[2]
for line in open(path):
    line = line.strip()
    if line.startswith("{"):
        try:
            obj = json.loads(line)
        except ValueError:
            continue
        print(json.dumps({"part": part, **obj}))
EOF
  [ $rc -eq 0 ] || failed $rc "$part"
  return $rc
}

T0=$(date +%s)
log "environment"
$CHECK_PY - <<'EOF' | tee -a "$LOG" >>"$RESULTS"
import json, platform, torch
cuda = torch.cuda.is_available()
print(json.dumps({"part": "environment", "python": platform.python_version(), "torch": torch.__version__,
                  "cuda": torch.version.cuda, "device": torch.cuda.get_device_name(0) if cuda else "cpu",
                  "multiprocessors": torch.cuda.get_device_properties(0).multi_processor_count if cuda else None}))
EOF
command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,driver_version,clocks.sm,clocks.max.sm,power.draw,memory.total \
  --format=csv 2>&1 | tee -a "$LOG"

log "install"
if [ "${INSTALL:-1}" = 1 ] && ! python3 -m pip install -q --no-deps --no-build-isolation -e . >>"$LOG" 2>&1; then
  log "pip install failed: running from the checkout"
  export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH}
fi
dcgan() { $CHECK_PY -m dcgan "$@"; }  # the installed package or the checkout, the same either way

if [ "$RUN_TESTS" = 1 ]; then
  log "tests: the fast path and the streamed loader (their CUDA cases run here)"
  timeout -k 10 240 python3 -m pytest -q -rs -s tests/test_fast_path.py tests/test_prepare_stream.py \
    --junitxml="$DETAILS/tests.xml" >"$DETAILS/tests.log" 2>&1
  rc=$?
  tail -15 "$DETAILS/tests.log" | tee -a "$LOG"
  python3 - "$DETAILS/tests.xml" "$DETAILS/tests.log" >>"$RESULTS" <<'EOF'
import json, re, sys
import xml.etree.ElementTree as ET
try:
    cases = ET.parse(sys.argv[1]).getroot().iter("testcase")
except (OSError, ET.ParseError):
    cases = []
outcome = {}
for c in cases:
    name = c.get("name")
    kind = next((ch.tag for ch in c if ch.tag in ("failure", "error", "skipped")), "passed")
    outcome[name] = kind
cuda = {n: o for n, o in outcome.items() if "cuda" in n.lower() or "graph" in n.lower()}
printed = re.findall(r"^graphed vs eager.*$", open(sys.argv[2]).read(), re.M)
print(json.dumps({"part": "tests", "passed": sum(o == "passed" for o in outcome.values()),
                  "failed": sorted(n for n, o in outcome.items() if o in ("failure", "error")),
                  "skipped": sorted(n for n, o in outcome.items() if o == "skipped"),
                  "cuda_and_graph_cases": cuda, "printed": printed}))
EOF
  [ $rc -eq 0 ] || failed $rc tests
fi

log "prepare the data (outside the timings)"
dcgan prepare mnist >>"$LOG" 2>&1 && dcgan prepare mnist --resolution 64 >>"$LOG" 2>&1 || failed $? prepare

# throughput: the fast path (the defaults on CUDA), then each part switched off to see what it buys
run bench-dcgan64 120 dcgan bench mnist-dcgan-64 --device "$DEVICE" --batch $B64,$B512,$B1024 "${BENCH[@]}" "${TINY[@]}"
run bench-cdcgan 120 dcgan bench mnist-cdcgan --device "$DEVICE" --batch $B64,$B512,$B1024 "${BENCH[@]}" "${TINY[@]}"
run bench-dcgan64-baseline 120 dcgan bench mnist-dcgan-64 --device "$DEVICE" --batch $B64 --baseline "${BENCH[@]}" "${TINY[@]}"
run bench-dcgan64-graphed-profile 90 dcgan bench mnist-dcgan-64 --device "$DEVICE" --batch $B64 "${BENCH[@]}" "${TINY[@]}" \
  --profile "$DETAILS/trace-dcgan64-b$B64-graphed.json"
run bench-dcgan64-large-profile 90 dcgan bench mnist-dcgan-64 --device "$DEVICE" --batch $B1024 "${BENCH[@]}" "${TINY[@]}" \
  --profile "$DETAILS/trace-dcgan64-b$B1024-graphed.json"
run bench-cdcgan-large-profile 90 dcgan bench mnist-cdcgan --device "$DEVICE" --batch $B512 "${BENCH[@]}" "${TINY[@]}" \
  --profile "$DETAILS/trace-cdcgan-b$B512-graphed.json"
run bench-dcgan64-eager-profile 90 dcgan bench mnist-dcgan-64 --device "$DEVICE" --batch $B64 --no-graphs "${BENCH[@]}" \
  "${TINY[@]}" --profile "$DETAILS/trace-dcgan64-b$B64-eager.json"
run bench-cdcgan-stream 90 dcgan bench mnist-cdcgan --device "$DEVICE" --batch $B512 --placement stream "${BENCH[@]}" "${TINY[@]}"
run bench-dcgan64-nchw 90 dcgan bench mnist-dcgan-64 --device "$DEVICE" --batch $B64,$B1024 --no-channels-last "${BENCH[@]}" "${TINY[@]}"
# train.compile (off by default): ~20 s of compiling per process and batch size, then fewer, fused kernels
if [ "${COMPILE:-1}" = 1 ]; then
  run bench-dcgan64-compile 150 dcgan bench mnist-dcgan-64 --device "$DEVICE" --batch $B64,$B1024 --compile "${BENCH[@]}" "${TINY[@]}"
  run bench-cdcgan-compile 150 dcgan bench mnist-cdcgan --device "$DEVICE" --batch $B64,$B512 --compile "${BENCH[@]}" "${TINY[@]}"
fi

# time to quality: the preset's defaults, stopped by SIGTERM TRAIN_SECONDS after launch
RUN=$OUT/runs/cdcgan-${TRAIN_SECONDS}s
rm -rf "$RUN"
log "train mnist-cdcgan --seed 0, SIGTERM after ${TRAIN_SECONDS} s"
t=$(date +%s.%N)
timeout -s TERM -k 60 "$TRAIN_SECONDS" $CHECK_PY -m dcgan train mnist-cdcgan --seed 0 --steps 100000000 --device "$DEVICE" \
  --out "$RUN" "${TINY[@]}" "${TICKS[@]}" >"$DETAILS/train.out" 2>>"$LOG"
rc=$?
wall=$(python3 -c "import time; print(round(time.time() - $t, 2))")
python3 - "$RUN" "$rc" "$wall" >>"$RESULTS" <<'EOF'
import json, sys
from pathlib import Path
run, rc, wall = Path(sys.argv[1]), int(sys.argv[2]), float(sys.argv[3])
lines = [json.loads(l) for l in (run / "metrics.jsonl").read_text().splitlines() if l.strip()] if (run / "metrics.jsonl").exists() else []
train = [l for l in lines if l.get("kind", "train") == "train"]
ckpts = sorted(p.name for p in (run / "checkpoints").glob("*.ckpt")) if (run / "checkpoints").is_dir() else []
rates = [l["img_per_s"] for l in train[1:]]  # the first tick holds the warm-up and capture
print(json.dumps({"part": "train-60s", "exit": rc, "wall_s": wall, "ticks": len(train),
                  "step": int(ckpts[-1][5:14]) if ckpts else 0,  # the checkpoint written on the signal
                  "images_seen_last_tick": train[-1]["images_seen"] if train else 0,
                  "elapsed_s": train[-1]["elapsed_s"] if train else None,
                  "tick_img_per_s_median": sorted(rates)[len(rates) // 2] if rates else None,
                  "tick_img_per_s_min": min(rates) if rates else None,
                  "warnings": [l["message"] for l in lines if l.get("kind") == "warning"], "checkpoints": ckpts}))
EOF
[ $rc -eq 124 ] || [ $rc -eq 143 ] || failed $rc train-60s  # 124: timeout's SIGTERM stopped it, as meant

run eval-60s 180 dcgan eval "$RUN" --n $EVAL_N --device "$DEVICE"

log "sampling $SAMPLE_N images"
run sample-10k 120 $CHECK_PY - "$RUN" "$DEVICE" "$SAMPLE_N" <<'EOF'
import json, sys, time
import torch
from dcgan import load_generator
from dcgan.sampling import generate
run, device, n = sys.argv[1], torch.device(sys.argv[2]), int(sys.argv[3])
sync = (lambda: torch.cuda.synchronize(device)) if device.type == "cuda" else (lambda: None)
G, info = load_generator(run, device=device)
labels = torch.arange(n) % G.num_classes if G.num_classes else None
m = min(n, 1000)
generate(G, m, labels=None if labels is None else labels[:m], seed=0)  # warm-up (cuDNN, allocator)
times = []
for seed in (1, 2, 3):
    sync(); t = time.perf_counter()
    images = generate(G, n, labels=labels, seed=seed)  # uint8 on the CPU, as `dcgan sample` writes them
    sync(); times.append(time.perf_counter() - t)
print(json.dumps({"n": n, "seconds": sorted(times)[1], "seconds_all": times, "shape": list(images.shape)}))
EOF
t=$(date +%s.%N)
dcgan sample "$RUN" --n $SAMPLE_N --device "$DEVICE" --out "$DETAILS/samples.npz" >>"$LOG" 2>&1 || failed $? sample-cli
record "{\"part\": \"sample-cli\", \"n\": $SAMPLE_N, \"wall_s\": $(python3 -c "import time; print(round(time.time() - $t, 2))")}"
dcgan sample "$RUN" --n 100 --labels all --device "$DEVICE" --out "$DETAILS/samples.png" >>"$LOG" 2>&1
rm -f "$DETAILS/samples.npz"

# evaluation inside training on this device: every 64k images at n=2,000, best.ckpt kept
run train-with-eval 90 dcgan train mnist-cdcgan --seed 1 --steps $EVAL_STEPS --device "$DEVICE" --quiet \
  --set eval.every_kimg=$EVAL_KIMG --set eval.n=$EVAL_TRAIN_N --out "$OUT/runs/cdcgan-eval" "${TINY[@]}"
grep '"kind": "eval"' "$OUT/runs/cdcgan-eval/metrics.jsonl" 2>/dev/null | python3 -c "
import json, sys
for l in sys.stdin:
    r = json.loads(l)
    print(json.dumps({'part': 'train-with-eval', 'step': r['step'], 'images_seen': r['images_seen'], 'fid': r['fid'],
                      'elapsed_s': r.get('elapsed_s'), 'eval_s': r.get('eval_s')}))" >>"$RESULTS"

log "pack the details"
cp "$RUN/metrics.jsonl" "$DETAILS/train-metrics.jsonl" 2>/dev/null
ls "$RUN"/grids/*.png 2>/dev/null | tail -1 | xargs -r -I{} cp {} "$DETAILS/last-grid.png"
tar -czf "$OUT/details.tar.gz" -C "$OUT" details 2>>"$LOG"
record "{\"part\": \"total\", \"wall_s\": $(( $(date +%s) - T0 ))}"
log "done in $(( $(date +%s) - T0 )) s"
python3 - "$RESULTS" <<'EOF'
import json, sys
for line in open(sys.argv[1]):  # a compact summary for the console
    r = json.loads(line)
    keep = {k: v for k, v in r.items() if k in ("part", "batch", "img_per_s", "baseline_img_per_s", "speedup_vs_baseline",
            "cuda_graphs", "capture_s", "ms_per_iteration", "seconds", "wall_s", "failed", "exit", "step", "ticks",
            "tick_img_per_s_median", "tick_img_per_s_min", "warnings", "passed", "device", "torch")}
    if "fid" in r and "precision_recall" not in r:
        keep.update(fid=r["fid"], images_seen=r.get("images_seen"), eval_s=r.get("eval_s"))
    if "precision_recall" in r:
        keep.update(fid=r["fid"], precision=r["precision_recall"]["precision"], recall=r["precision_recall"]["recall"],
                    label_accuracy=(r.get("label_accuracy") or {}).get("accuracy"),
                    classes_covered=r["classes"]["classes_covered"])
    if "profile" in r:
        prof = r["profile"]
        keep.update(launches_per_iteration=prof["kernel_launches_per_iteration"],
                    graph_launches_per_iteration=prof["graph_launches_per_iteration"],
                    profiled_ms_per_iteration=prof["ms_per_iteration"],
                    top=[(t["op"][:40], round(t["fraction"], 3)) for t in prof["top"][:5]])
    if r["part"] == "tests":
        keep.update(failed=r["failed"], printed=r["printed"], skipped=len(r["skipped"]))
    print(json.dumps({k: round(v, 4) if isinstance(v, float) else v for k, v in keep.items()}))
EOF
