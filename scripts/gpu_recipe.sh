#!/usr/bin/env bash
# The MNIST recipe check on one CUDA machine (about 4 minutes on an H100): the fast-path and stabiliser
# CUDA tests, then for mnist-cdcgan and mnist-dcgan the preset's recipe and the previous one (BEFORE)
# over 3 seeds at 256k images (dcgan eval at n=10,000 against the test split; the recipe runs also
# evaluate themselves every 32k images, for the late/best ratio), then the recipe 4x as long.
#
#   DCGAN_DATA=/path/to/data BEFORE="--set optim.lr_decay=0 ..." scripts/gpu_recipe.sh [OUT]
#   DEVICE=cpu REHEARSAL=1 ... scripts/gpu_recipe.sh      # the same commands on a CPU, tiny
#
# The runs go to WORK (default OUT/work); each sweep's table.json is copied to OUT/<sweep>.json as soon as
# it is done, so a part cut short by a time limit leaves the ones before it; OUT/grids.tgz at the end.
set -u
OUT=${1:-${OUT:-./gpu-recipe}}
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)
WORK=${WORK:-$OUT/work}
mkdir -p "$WORK"
DEVICE=${DEVICE:-cuda}
BEFORE=${BEFORE:-}
export PYTHONUNBUFFERED=1 DCGAN_CACHE=${DCGAN_CACHE:-$OUT/cache}
cd "$(dirname "$0")/.."
log() { echo "== $(date +%T) $*" | tee -a "$OUT/log.txt"; }
done_sweep() { cp "$WORK/$1/table.json" "$OUT/$1.json" 2>/dev/null && cat "$WORK/$1/table.md" | tee -a "$OUT/log.txt"; }
python3 -m pip install -q --no-deps --no-build-isolation -e . >/dev/null 2>&1 || export PYTHONPATH=$PWD

if [ "${REHEARSAL:-0}" = 1 ]; then
  TINY=(--set model.g_width=8 --set model.d_width=8 --set model.g_fc=32 --set model.d_fc=32)
  KIMG=2; LONG=4; N=200; EVAL=(--set eval.every_kimg=0.5 --set eval.n=200); LONG_EVAL=(--set eval.every_kimg=1 --set eval.n=200)
else
  TINY=()
  KIMG=256; LONG=1024; N=10000; EVAL=(--set eval.every_kimg=32 --set eval.n=10000); LONG_EVAL=(--set eval.every_kimg=128 --set eval.n=10000)
fi

if [ "${RUN_TESTS:-1}" = 1 ]; then
  log "CUDA tests of the fast path and the stabilisers"
  timeout -k 5 120 python3 -m pytest -q -s -p no:cacheprovider tests/test_fast_path.py tests/test_stabilisers.py \
    -k "cuda or graphed" 2>&1 | tail -12 | tee -a "$OUT/log.txt"
fi
for preset in mnist-cdcgan mnist-dcgan; do
  log "$preset: the recipe, 3 seeds, ${KIMG}k images"
  python3 -m dcgan sweep $preset --seeds 3 --kimg $KIMG --n $N --device "$DEVICE" "${EVAL[@]}" "${TINY[@]}" \
    --out "$WORK/$preset-recipe" >>"$OUT/log.txt" 2>&1; done_sweep $preset-recipe
  log "$preset: before the recipe ($BEFORE), 3 seeds, ${KIMG}k images"
  python3 -m dcgan sweep $preset --seeds 3 --kimg $KIMG --n $N --device "$DEVICE" $BEFORE "${TINY[@]}" \
    --out "$WORK/$preset-before" >>"$OUT/log.txt" 2>&1; done_sweep $preset-before
done
for preset in mnist-cdcgan mnist-dcgan; do
  log "$preset: the recipe 4x as long (${LONG}k images), seed 0"
  python3 -m dcgan sweep $preset --seeds 1 --kimg $LONG --n $N --device "$DEVICE" "${LONG_EVAL[@]}" "${TINY[@]}" \
    --out "$WORK/$preset-long" >>"$OUT/log.txt" 2>&1; done_sweep $preset-long
done
(cd "$WORK" && tar -czf "$OUT/grids.tgz" */grids 2>/dev/null)
log "done"
