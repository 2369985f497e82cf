#!/usr/bin/env bash
# Issue 14, variant (b) l4 or (c) l3b on SST-2 (the first argument; default l3b), 2 seeds, at the short budget of
# benchmarks/lengthdrop_sst2_short.sh: a 4-layer student from teacher layers [0, 2, 3, 5] (l4) or a 3-layer one from
# [0, 2, 5] (l3b, keeps the bottom layer), with LengthDrop vs truncation of the same student.
#   bash benchmarks/lengthdrop_sst2_student_short.sh l3b; bash benchmarks/lengthdrop_sst2_student_short.sh l4
# The driver at the end rewrites benchmarks/results/lengthdrop-vs-truncation.json with every SST-2 pair found
# (the la-full pairs of benchmarks/lengthdrop_sst2_short.sh included).
# Budget cut to fit a 2-core CPU session (the recipes' defaults are the issue's budget):
#   distill: as the recipe (32,000 sentences x 2 epochs); length: 24,000 sentences x 1 epoch (recipe: all 67,349 x 2);
#   search: 1,000 held-out sentences, 4 iterations, no latency timing (recipe: 2,000, 6 iterations, timed).
# Stages up to the search only (export + length_benchmark time the picks; run them on an idle machine afterwards:
#   slimformer compress recipes/quala-sst2-$V.yaml <the same overrides> --run-dir runs/issue14/quala-sst2-$V).
# The truncation twin shares the finetune and distill records of the LengthDrop run (same stage hashes): the student is
# trained once per seed. Needs the shared teacher runs/sst2-int8/finetune (recipes/sst2-int8.yaml).
# About 70 min (l3b) / 85 min (l4) on 2 cores (one thread per run, two runs at a time).
set -euo pipefail
V="${1:-l3b}"
case "$V" in l3b | l4) ;; *) echo "usage: $0 [l3b|l4]" >&2; exit 2 ;; esac
export SLIMFORMER_DATA="${SLIMFORMER_DATA:-../shared/data}" OMP_NUM_THREADS="${OMP_NUM_THREADS:-1}"
R=runs/issue14
D="stages.1.distill.threads=1"
LD="stages.2.length.max_train_examples=24000 stages.2.length.epochs=1 stages.2.length.threads=1"
S() { echo "stages.$1.search.search_examples=1000 stages.$1.search.iterations=4 stages.$1.search.measure_latency=false stages.$1.search.threads=1"; }
. benchmarks/_lib.sh
upto_search recipes/quala-sst2-$V.yaml "$R/quala-sst2-$V.yaml"
upto_search recipes/quala-sst2-$V-truncation.yaml "$R/quala-sst2-$V-truncation.yaml"
sfx() { [ "$1" = 42 ] && echo "" || echo "-seed$1"; }
for seed in 42 43; do
  d="$R/quala-sst2-$V$(sfx $seed)"
  mkdir -p "$d" && ln -sfn ../../sst2-int8/finetune "$d/finetune"
  # shellcheck disable=SC2046
  slimformer compress "$R/quala-sst2-$V.yaml" seed=$seed $D $LD $(S 3) --run-dir "$d" > "$d.log" 2>&1 &
done
wait
for seed in 42 43; do
  ld="$R/quala-sst2-$V$(sfx $seed)" tr="$R/quala-sst2-$V-truncation$(sfx $seed)"
  share_records "$ld" "$tr" "quala-sst2-$V-truncation" finetune distill  # the same configs, hence hashes, in the twin
  # shellcheck disable=SC2046
  slimformer compress "$R/quala-sst2-$V-truncation.yaml" seed=$seed $D $(S 2) --run-dir "$tr" > "$tr.log" 2>&1 &
done
wait
pairs=()
for v in la-full l4 l3b; do for seed in 42 43; do
  ld="$R/quala-sst2-$v$(sfx $seed)" tr="$R/quala-sst2-$v-truncation$(sfx $seed)"
  [ -f "$ld/search/front.json" ] && [ -f "$tr/search/front.json" ] && pairs+=(--pair sst2 "$v" "$seed" "$ld" "$tr")
done; done
python benchmarks/lengthdrop_vs_truncation.py --allow-pool-mismatch --runtime pytorch "${pairs[@]}" --threads 2
