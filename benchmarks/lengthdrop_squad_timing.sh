#!/usr/bin/env bash
# Issue 14, SQuAD la-full at the issue's budget: the int8 report and the speed targets (run on an idle machine, after
# benchmarks/lengthdrop_squad_full.sh or, on the lent GPU, benchmarks/lengthdrop_squad_device.sh + device_collect.sh).
# 1. Each seed's LengthDrop run finishes its recipe: `export` (the pick's int8 graph) and `length_benchmark` (the
#    front's configurations re-scored on 1,000 dev questions with the int8 graph, the teachers, timings), resuming
#    the earlier stages with the overrides they ran with. The front without LengthDrop is not re-scored here
#    (truncation=false): benchmarks/lengthdrop_vs_truncation.py compares the two on all of dev, with paired tests.
# 2. benchmarks/quala_timing.py re-times the seed-42 pick against the teachers in 10 interleaved rounds and states the
#    issue's SQuAD targets (>= 1.5x the int8 teacher's bs-32 throughput, >= 8x eager fp32, <= 1.0 F1 loss):
#    benchmarks/results/quala-targets-squad-issue-budget.json.
#   bash benchmarks/lengthdrop_squad_timing.sh [SEED ...]     (default: 42; the targets are timed on seed 42's pick)
set -euo pipefail
export SLIMFORMER_DATA="${SLIMFORMER_DATA:-../shared/data}"
R=runs/issue14-full T=runs/issue14-full/quala-squad-la-full
SEEDS=("${@:-42}")
for seed in "${SEEDS[@]}"; do
  d=$T; [ "$seed" = 42 ] || d=$T-seed$seed
  [ -f "$d/search/front.json" ] || { echo "$d: no finished search; skipped"; continue; }
  slimformer compress recipes/quala-squad-la-full.yaml seed="$seed" stages.0.finetune.threads=1 \
    stages.1.length.threads=1 stages.2.search.threads=1 stages.4.length_benchmark.teacher=$T/finetune \
    stages.4.length_benchmark.truncation=false --run-dir "$d" --rerun-from length_benchmark
done
[ -f "$T/report.json" ] && python benchmarks/quala_timing.py --run "$T" --out benchmarks/results/quala-targets-squad-issue-budget.json
