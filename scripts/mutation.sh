#!/usr/bin/env bash
# Mutation testing of the modules where a silent error costs most (docs/MUTATION.md). Not part of CI:
# a full run takes ~15 minutes on 2 CPU cores.
#
#   scripts/mutation.sh                          all six modules
#   scripts/mutation.sh dcgan/checkpoint.py ...  only these (paths or dotted names: dcgan.checkpoint)
#
# Uses mutmut (installs the pinned version when it is missing: pip install -e '.[mutation]' does the
# same), configured in pyproject.toml [tool.mutmut]: the tree is copied to mutants/ (git-ignored), only
# the modules below are mutated, and each mutant runs the selected tests that reach its function.
# Prints killed / timeout / suspicious / survived / no tests / total and the score per module and
# overall, and writes every surviving mutant with its diff to mutants/survivors.txt (MUTATION_SURVIVORS
# overrides the path).
#
# Environment: MUTATION_JOBS (parallel mutants, default: the CPU count), MUTATION_KEEP=1 (reuse mutants/
# from the last run: unchanged mutants keep their results; default: start afresh), DCGAN_DATA (real
# MNIST, as for the tests; made absolute, since the tests run inside mutants/).
set -euo pipefail

cd "$(dirname "$0")/.."
ROOT=$(pwd)
MUTMUT_VERSION=3.8.1
ALL_MODULES=(
    dcgan/metrics/stats.py
    dcgan/training/ema.py
    dcgan/training/health.py
    dcgan/checkpoint.py
    dcgan/data/loader.py
    dcgan/sampling.py
)

PY=${PYTHON:-python}
if [[ "$($PY -c 'import importlib.metadata as m; print(m.version("mutmut"))' 2>/dev/null || true)" != "$MUTMUT_VERSION" ]]; then
    echo "mutation: installing mutmut==$MUTMUT_VERSION" >&2
    $PY -m pip install -q "mutmut==$MUTMUT_VERSION"
fi

modules=()
for arg in "${@:-${ALL_MODULES[@]}}"; do
    path=$arg
    [[ $path == *.py ]] || path="${path//.//}.py"
    found=0
    for m in "${ALL_MODULES[@]}"; do [[ $m == "$path" ]] && found=1; done
    if (( ! found )); then
        echo "mutation: $arg is not one of the configured modules: ${ALL_MODULES[*]}" >&2
        exit 2
    fi
    modules+=("$path")
done

# mutmut takes mutant names (globs): all six modules need none (and then, with MUTATION_KEEP=1, only the
# mutants without a result yet run: an interrupted run goes on where it stopped)
patterns=()
(( ${#modules[@]} == ${#ALL_MODULES[@]} )) || for m in "${modules[@]}"; do
    dotted=${m%.py}
    patterns+=("${dotted//\//.}.*")
done

JOBS=${MUTATION_JOBS:-$($PY -c 'import os; print(len(os.sched_getaffinity(0)))')}  # before OMP_NUM_THREADS: nproc reads it
# one thread per test process: mutmut forks a worker per mutant from a process that has imported torch
export OMP_NUM_THREADS=1 MKL_NUM_THREADS=1
if [[ -n "${DCGAN_DATA:-}" ]]; then
    export DCGAN_DATA=$(cd "$ROOT" && realpath -m "$DCGAN_DATA")
fi
[[ "${MUTATION_KEEP:-0}" == 1 ]] || rm -rf mutants

start=$(date +%s)
mkdir -p mutants
# the whole output in mutants/mutmut.log; on the terminal: the phases, and the progress line now and then
$PY -m mutmut run --max-children "$JOBS" ${patterns[@]+"${patterns[@]}"} 2>&1 | tee mutants/mutmut.log | tr '\r' '\n' | awk '
    /🎉/ && !/ dcgan\./ { if (++n % 200 == 1) print; last = $0; next }
    /^[⠋⠙⠹⠸⠼⠴⠦⠧⠇⠏]/ || /^(🎉|🙁|⏰|🤔|🫥|🔇|🧙) dcgan\./ || /^$/ { next }
    { print } END { if (last) print last }'
wall=$(( $(date +%s) - start ))

SURVIVORS=${MUTATION_SURVIVORS:-mutants/survivors.txt}
$PY - "$SURVIVORS" "$wall" "${modules[@]}" <<'EOF'
import json
import sys
from pathlib import Path

from mutmut.mutation.diff_apply import get_diff_for_mutant
from mutmut.stats import status_by_exit_code

out, wall, modules = Path(sys.argv[1]), int(sys.argv[2]), sys.argv[3:]
cols = ("killed", "timeout", "suspicious", "survived", "no tests", "total", "score")
print(f"\nmutation testing, mutmut, {wall // 60} min {wall % 60} s wall\n")
print(f"{'module':28s}" + "".join(f"{c:>11s}" for c in cols))
totals = dict.fromkeys(cols[:-1], 0)
survivors = []
for path in modules:
    meta = Path("mutants") / (path + ".meta")
    codes = json.loads(meta.read_text())["exit_code_by_key"] if meta.exists() else {}
    counts = dict.fromkeys(cols[:-1], 0)
    for name, code in sorted(codes.items()):
        status = status_by_exit_code[code]
        key = status if status in counts else ("killed" if status == "caught by type check" else "suspicious")
        counts[key] += 1
        counts["total"] += 1
        if status in ("survived", "no tests", "suspicious", "not checked"):
            survivors.append((path, name, status))
    for k in counts:
        totals[k] += counts[k]
    score = (counts["killed"] + counts["timeout"]) / counts["total"] if counts["total"] else float("nan")
    print(f"{path:28s}" + "".join(f"{counts[c]:>11d}" for c in cols[:-1]) + f"{score:>11.1%}")
score = (totals["killed"] + totals["timeout"]) / totals["total"] if totals["total"] else float("nan")
print(f"{'all':28s}" + "".join(f"{totals[c]:>11d}" for c in cols[:-1]) + f"{score:>11.1%}")
print("\nscore = (killed + timeout) / total; timeouts are mutants the tests stopped by running too long")

out.parent.mkdir(parents=True, exist_ok=True)
with open(out, "w") as f:
    for path, name, status in survivors:
        f.write(f"# {name}: {status}\n")
        try:
            f.write(get_diff_for_mutant(name, path=path).rstrip() + "\n\n")
        except Exception as e:  # noqa: BLE001 - the list matters more than one diff
            f.write(f"(no diff: {e})\n\n")
print(f"{len(survivors)} surviving mutants (with their diffs) in {out}")
EOF
