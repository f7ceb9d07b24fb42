#!/usr/bin/env bash
# The long GPU measurements, beyond scripts/gpu_check.sh (which takes ~6 minutes): time to quality
# over 3 seeds and 20-epoch runs with the default settings. Each run is minutes on an H100; give
# the whole script about 30 minutes. Writes one JSON line per run to $OUT/long.jsonl and the logs.
#
#   DCGAN_DATA=/path/to/data scripts/gpu_long.sh [OUT]
set -u
OUT=${1:-${OUT:-./gpu-long}}
mkdir -p "$OUT"
export DCGAN_CACHE=${DCGAN_CACHE:-$OUT/cache}
log() { echo "== $(date +%T) $*" | tee -a "$OUT/log.txt"; }

log "time to quality, 3 seeds each"
for s in 0 1 2; do
  log "mnist-cdcgan --target-fid 5 seed $s"
  dcgan train mnist-cdcgan --seed $s --target-fid 5 --steps 50000 --out "$OUT/runs/ttq-cdcgan-$s" --quiet \
    >>"$OUT/long.jsonl" 2>>"$OUT/log.txt"
  log "mnist-dcgan --target-fid 8 seed $s"
  dcgan train mnist-dcgan --seed $s --target-fid 8 --steps 50000 --out "$OUT/runs/ttq-dcgan-$s" --quiet \
    >>"$OUT/long.jsonl" 2>>"$OUT/log.txt"
done

log "20 epochs with default settings: no collapse"
for p in mnist-dcgan-64 mnist-cdcgan; do
  dcgan train $p --steps 18750 --set eval.every_kimg=60 --out "$OUT/runs/long-$p" --quiet \
    >>"$OUT/long.jsonl" 2>>"$OUT/log.txt"
done
log "done"
