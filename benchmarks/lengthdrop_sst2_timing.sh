#!/usr/bin/env bash
# Issue 14, SST-2: the int8 report and the speed targets of the short-budget LengthDrop runs (run this on an idle
# machine, after benchmarks/lengthdrop_sst2_short.sh and benchmarks/lengthdrop_sst2_student_short.sh).
# 1. Each run folder given (default: the seed-42 LengthDrop runs of la-full, l4 and l3b that exist) finishes its
#    recipe: `export` (the pick's int8 graph) and `length_benchmark` (every front configuration re-scored on dev with
#    the int8 graph, with and without LengthDrop; teachers; timings), resuming the earlier stages with the overrides
#    they ran with (length_benchmark always reruns: this script re-measures).
# 2. benchmarks/quala_timing.py re-times each pick against the teachers in 10 interleaved rounds and states the
#    issue's targets: benchmarks/results/quala-targets.json.
#   bash benchmarks/lengthdrop_sst2_timing.sh [la-full|l4|l3b ...]
#   bash benchmarks/lengthdrop_sst2_timing.sh --issue-budget     # la-full of benchmarks/lengthdrop_sst2_full.sh
#     (runs/issue14-full, the recipe's own budget): benchmarks/results/quala-targets-issue-budget.json
#   OUT=benchmarks/results/quala-targets-issue-budget-l3b.json bash benchmarks/lengthdrop_sst2_timing.sh --issue-budget l3b
#     # a student of benchmarks/lengthdrop_sst2_student_full.sh
#   SEED=43 bash benchmarks/lengthdrop_sst2_timing.sh [...]   # step 1 only, for the seed-43 runs: the second seed of
#     the same-configuration paired tests in each report (the speed targets are timed on the seed-42 picks)
# About 8 min per run plus 2 min of timing per run, 2 threads.
set -euo pipefail
export SLIMFORMER_DATA="${SLIMFORMER_DATA:-../shared/data}"
R=runs/issue14
OUT_SET="${OUT:-}"
OUT="${OUT:-benchmarks/results/quala-targets.json}"
FULL=0
SEED="${SEED:-42}"
SFX=$([ "$SEED" = 42 ] && echo "" || echo "-seed$SEED")
if [ "${1:-}" = --issue-budget ]; then FULL=1 R=runs/issue14-full OUT="${OUT_SET:-benchmarks/results/quala-targets-issue-budget.json}"; shift; fi
S() { echo "stages.$1.search.search_examples=1000 stages.$1.search.iterations=4 stages.$1.search.measure_latency=false stages.$1.search.threads=1"; }
variants=("$@")
[ ${#variants[@]} -gt 0 ] || { [ $FULL = 1 ] && variants=(la-full); } || variants=(la-full l4 l3b)
runs=()
for v in "${variants[@]}"; do
  d="$R/quala-sst2-$v$SFX"
  [ -f "$d/search/front.json" ] || { echo "$d: no finished search; skipped"; continue; }
  case "$FULL:$v" in
    1:la-full) o="stages.1.length.threads=1 stages.2.search.threads=1 stages.4.length_benchmark.teacher=$d/finetune" ;;
    1:l4 | 1:l3b) o="stages.1.distill.threads=1 stages.2.length.threads=1 stages.3.search.threads=1" ;;
    0:la-full) o="stages.1.length.max_train_examples=24000 stages.1.length.epochs=1 stages.1.length.threads=1 $(S 2)
               stages.4.length_benchmark.teacher=$d/finetune" ;;
    0:l4 | 0:l3b) o="stages.1.distill.threads=1 stages.2.length.max_train_examples=24000 stages.2.length.epochs=1
                 stages.2.length.threads=1 $(S 3)" ;;
    *) echo "unknown variant $v (la-full, l4, l3b)" >&2; exit 2 ;;
  esac
  # shellcheck disable=SC2086
  slimformer compress "recipes/quala-sst2-$v.yaml" seed=$SEED $o --run-dir "$d" --rerun-from length_benchmark
  runs+=(--run "$d")
done
if [ "$SEED" != 42 ]; then echo "seed $SEED: reports written; the speed targets are timed on the seed-42 picks"; exit 0; fi
python benchmarks/quala_timing.py "${runs[@]}" --out "$OUT"
