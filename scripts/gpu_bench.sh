#!/usr/bin/env bash
# Every GPU figure of docs/BENCHMARKS.md in one go, on one CUDA machine. Writes one JSON line per
# measurement to $OUT/bench.jsonl (default ./gpu-bench) and the logs beside it.
#
#   DCGAN_DATA=/path/to/data scripts/gpu_bench.sh            # all of it (not yet timed on a GPU)
#   DCGAN_DATA=/path/to/data scripts/gpu_bench.sh quick      # the GPU tests, throughput and profiles only
#   DCGAN_DATA=/path/to/data scripts/gpu_bench.sh quality    # sampling, time to quality, 20-epoch runs only
# (Where one command may run only a few minutes, run `quick` and `quality` as separate calls.)
set -u
OUT=${OUT:-./gpu-bench}
mkdir -p "$OUT"
export DCGAN_CACHE=${DCGAN_CACHE:-$OUT/cache}
log() { echo "== $*" | tee -a "$OUT/log.txt"; }
bench() { log "dcgan bench $*"; dcgan bench "$@" >>"$OUT/bench.jsonl" 2>>"$OUT/log.txt" || log "FAILED: dcgan bench $*"; }

log "environment"
python -c "import torch; print(torch.__version__, torch.cuda.get_device_name(0))" | tee -a "$OUT/log.txt"
nvidia-smi --query-gpu=name,clocks.sm,clocks.max.sm,power.draw --format=csv | tee -a "$OUT/log.txt"

if [ "${1:-}" != quality ]; then
log "fast-path tests (the CUDA ones run here)"
python -m pytest -q tests/test_fast_path.py tests/test_prepare_stream.py 2>&1 | tail -5 | tee -a "$OUT/log.txt"

# throughput: the fast path (defaults on CUDA), then each part switched off to see what it buys
for b in 64 512 1024; do bench mnist-dcgan-64 --batch $b --steps 300; done
bench mnist-dcgan-64 --batch 64 --steps 200 --baseline
bench mnist-dcgan-64 --batch 64 --no-graphs
bench mnist-dcgan-64 --batch 64 --no-graphs --no-channels-last
bench mnist-dcgan-64 --batch 64 --no-graphs --no-channels-last --precision fp32
for b in 64 512 1024; do bench mnist-cdcgan --batch $b --steps 300; done
bench mnist-cdcgan --batch 64 --steps 200 --baseline
bench mnist-cdcgan --batch 512 --placement stream
bench mnist-dcgan-64 --batch 512 --placement stream
# where the time goes (kernel launches per iteration, top operators), for the analysis of a missed target
bench mnist-dcgan-64 --batch 64 --steps 100 --profile "$OUT/trace-dcgan64-b64.json"
bench mnist-dcgan-64 --batch 1024 --steps 100 --profile "$OUT/trace-dcgan64-b1024.json"
bench mnist-cdcgan --batch 1024 --steps 100 --profile "$OUT/trace-cdcgan-b1024.json"
bench mnist-dcgan-64 --batch 64 --steps 100 --no-graphs --profile "$OUT/trace-dcgan64-b64-eager.json"

fi
[ "${1:-}" = quick ] && exit 0

log "sampling 10,000 images"
dcgan train mnist-cdcgan --steps 200 --out "$OUT/runs/sample-src" --quiet >>"$OUT/log.txt" 2>&1
python - "$OUT/runs/sample-src" <<'EOF' | tee -a "$OUT/bench.jsonl"
import json, sys, time, torch
from dcgan import load_generator
from dcgan.sampling import generate
G, info = load_generator(sys.argv[1], device="cuda")
labels = torch.arange(10000) % 10 if info["data"]["num_classes"] else None
generate(G, 1000, labels=None if labels is None else labels[:1000], seed=0)  # warm-up
torch.cuda.synchronize(); t = time.perf_counter()
out = generate(G, 10000, labels=labels, seed=1)  # uint8 on the CPU, as `dcgan sample` writes them
torch.cuda.synchronize()
print(json.dumps({"measure": "sample_10000", "seconds": time.perf_counter() - t}))
EOF

log "time to quality, 3 seeds each"
for s in 0 1 2; do
  log "mnist-cdcgan --target-fid 5 seed $s"
  dcgan train mnist-cdcgan --seed $s --target-fid 5 --steps 20000 --out "$OUT/runs/ttq-cdcgan-$s" --quiet \
    >>"$OUT/bench.jsonl" 2>>"$OUT/log.txt"
  log "mnist-dcgan --target-fid 8 seed $s"
  dcgan train mnist-dcgan --seed $s --target-fid 8 --steps 20000 --out "$OUT/runs/ttq-dcgan-$s" --quiet \
    >>"$OUT/bench.jsonl" 2>>"$OUT/log.txt"
done

log "20 epochs with default settings: no collapse"
for p in mnist-dcgan-64 mnist-cdcgan; do
  dcgan train $p --steps 18750 --set eval.every_kimg=60 --out "$OUT/runs/long-$p" --quiet \
    >>"$OUT/bench.jsonl" 2>>"$OUT/log.txt"
done
log "done"
