#!/usr/bin/env bash
# The short-budget SST-2 comparison behind benchmarks/results/lengthdrop-vs-truncation.json (issue 14, variant
# la-full: LengthDrop on the full-depth fine-tuned MiniLM-L6 vs truncation of the same model), 2 seeds.
# Budget cut to fit a 2-core CPU session (the recipes' defaults are the issue's budget):
#   length: 24,000 training sentences x 1 epoch (recipe: all 67,349 x 2); search: 1,000 held-out sentences,
#   4 iterations, no latency timing (recipe: 2,000, 6 iterations, timed). Dev scored with PyTorch fp32 per example.
# Needs the shared teacher runs/sst2-int8/finetune (SLIMFORMER_DATA=../shared/data slimformer compress recipes/sst2-int8.yaml).
# About 2 h on 2 cores (one thread per run, two runs at a time), plus about 1.5 h for the ablation.
#   bash benchmarks/lengthdrop_sst2_short.sh [all|main|ablation]   (default all; JOBS=1: one run at a time, for a
#   machine whose other core is busy)
set -euo pipefail
export SLIMFORMER_DATA="${SLIMFORMER_DATA:-../shared/data}" OMP_NUM_THREADS="${OMP_NUM_THREADS:-1}"
R=runs/issue14
mkdir -p "$R"
PART="${1:-all}"
JOBS="${JOBS:-2}"
bg() { if [ "$JOBS" -gt 1 ]; then "$@" & else "$@"; fi; }
LD="stages.1.length.max_train_examples=24000 stages.1.length.epochs=1 stages.1.length.threads=1"
. benchmarks/_lib.sh
upto_search recipes/quala-sst2-la-full.yaml "$R/quala-sst2-la-full.yaml"  # stages up to the search (timing: lengthdrop_sst2_timing.sh)
upto_search recipes/quala-sst2-la-full-truncation.yaml "$R/quala-sst2-la-full-truncation.yaml"
S() { echo "stages.$1.search.search_examples=1000 stages.$1.search.iterations=4 stages.$1.search.measure_latency=false stages.$1.search.threads=1"; }
if [ "$PART" != ablation ]; then
for seed in 42 43; do
  sfx=$([ "$seed" = 42 ] && echo "" || echo "-seed$seed")
  for d in "quala-sst2-la-full$sfx" "quala-sst2-la-full-truncation$sfx"; do
    mkdir -p "$R/$d" && ln -sfn ../../sst2-int8/finetune "$R/$d/finetune"
  done
  # shellcheck disable=SC2046
  bg slimformer compress "$R"/quala-sst2-la-full.yaml seed=$seed $LD $(S 2) --run-dir "$R/quala-sst2-la-full$sfx"
  # shellcheck disable=SC2046
  slimformer compress "$R"/quala-sst2-la-full-truncation.yaml seed=$seed $(S 1) \
    --run-dir "$R/quala-sst2-la-full-truncation$sfx"
  wait
done
python benchmarks/lengthdrop_vs_truncation.py --allow-pool-mismatch --runtime pytorch \
  --pair sst2 la-full 42 $R/quala-sst2-la-full $R/quala-sst2-la-full-truncation \
  --pair sst2 la-full 43 $R/quala-sst2-la-full-seed43 $R/quala-sst2-la-full-truncation-seed43 --threads 2
fi
# LayerDrop ablation over {0, 0.1, 0.2} (0.2 is the run above), seeds 42 and 43, each against the truncation twin of its
# seed: benchmarks/results/layerdrop-ablation-sst2.json
if [ "$PART" != main ]; then
for seed in 42 43; do
  sfx=$([ "$seed" = 42 ] && echo "" || echo "-seed$seed")
  for ld in 0.0 0.1; do
    d="$R/quala-sst2-la-full-ld$(echo $ld | tr -d .)"; d="${d/ld00/ld0}$sfx"
    mkdir -p "$d" && ln -sfn ../../sst2-int8/finetune "$d/finetune"
    # shellcheck disable=SC2046
    bg slimformer compress "$R"/quala-sst2-la-full.yaml seed=$seed $LD stages.1.length.layer_drop_prob=$ld $(S 2) --run-dir "$d"
  done
  wait
done
pairs=()
for seed in 42 43; do
  sfx=$([ "$seed" = 42 ] && echo "" || echo "-seed$seed")
  pairs+=(--pair sst2 la-full-layerdrop0 $seed "$R/quala-sst2-la-full-ld0$sfx" "$R/quala-sst2-la-full-truncation$sfx")
  pairs+=(--pair sst2 la-full-layerdrop0.1 $seed "$R/quala-sst2-la-full-ld01$sfx" "$R/quala-sst2-la-full-truncation$sfx")
  pairs+=(--pair sst2 la-full-layerdrop0.2 $seed "$R/quala-sst2-la-full$sfx" "$R/quala-sst2-la-full-truncation$sfx")
done
python benchmarks/lengthdrop_vs_truncation.py --allow-pool-mismatch --runtime pytorch "${pairs[@]}" \
  --threads 2 --out benchmarks/results/layerdrop-ablation-sst2.json
# the LayerDrop values against each other at the same configurations (full length and the 0.2 run's front), paired
runs=()
for seed in 42 43; do
  sfx=$([ "$seed" = 42 ] && echo "" || echo "-seed$seed")
  runs+=(--run $seed 0 "$R/quala-sst2-la-full-ld0$sfx" --run $seed 0.1 "$R/quala-sst2-la-full-ld01$sfx")
  runs+=(--run $seed 0.2 "$R/quala-sst2-la-full$sfx")
done
python benchmarks/same_config.py --reference 0.2 "${runs[@]}" --name layerdrop-same-config-sst2 --threads 2
fi
