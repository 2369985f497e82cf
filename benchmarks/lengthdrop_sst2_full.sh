#!/usr/bin/env bash
# Issue 14 at the issue's budget, SST-2, variant la-full: the length stage on all 67,349 sentences for 2 epochs
# (recipes/quala-sst2-la-full.yaml unchanged), seed 42 then 43, each up to its search; then the truncation twins
# with the same search. About 2.5 h of length training per seed on one thread of this 2-core VM. It resumes from
# the length stage's last checkpoint (every 200 steps) when started again, so it can span sessions.
#   bash benchmarks/lengthdrop_sst2_full.sh [SEED ...]   (default: 42 43; two seeds may run side by side, one thread each)
# Afterwards: the driver over runs/issue14-full (benchmarks/lengthdrop_vs_truncation.py --pair ...) and, on an idle
# machine, the export + length_benchmark stages of each recipe.
set -euo pipefail
export SLIMFORMER_DATA="${SLIMFORMER_DATA:-../shared/data}" OMP_NUM_THREADS="${OMP_NUM_THREADS:-1}"
R=runs/issue14-full
mkdir -p "$R"
. benchmarks/_lib.sh
upto_search recipes/quala-sst2-la-full.yaml "$R/quala-sst2-la-full.yaml"
upto_search recipes/quala-sst2-la-full-truncation.yaml "$R/quala-sst2-la-full-truncation.yaml"
SEEDS=("${@:-42 43}")
for seed in ${SEEDS[@]}; do
  sfx=$([ "$seed" = 42 ] && echo "" || echo "-seed$seed")
  for d in "quala-sst2-la-full$sfx" "quala-sst2-la-full-truncation$sfx"; do
    mkdir -p "$R/$d" && ln -sfn ../../sst2-int8/finetune "$R/$d/finetune"
  done
  slimformer compress "$R/quala-sst2-la-full.yaml" seed=$seed stages.1.length.threads=1 stages.2.search.threads=1 \
    --run-dir "$R/quala-sst2-la-full$sfx"
  slimformer compress "$R/quala-sst2-la-full-truncation.yaml" seed=$seed stages.1.search.threads=1 \
    --run-dir "$R/quala-sst2-la-full-truncation$sfx"
done
