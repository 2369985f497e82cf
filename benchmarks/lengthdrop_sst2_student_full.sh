#!/usr/bin/env bash
# Issue 14 at the issue's budget, SST-2, variant (b) l4 or (c) l3b (the first argument; default l3b): the recipe
# unchanged (recipes/quala-sst2-$V.yaml: distillation 32,000 sentences x 2 epochs, the length stage on all 67,349
# sentences for 2 epochs, the search on 2,000 held-out sentences, 6 iterations), seeds 42 and 43 side by side (one
# thread each), each up to its search; then each seed's truncation twin with the same search.
#   bash benchmarks/lengthdrop_sst2_student_full.sh [l3b|l4]
#   BOUND=0.4 bash benchmarks/lengthdrop_sst2_student_full.sh l3b   # the length stage's length_drop_ratio_bound and
#     both searches' length_drop_ratio set to BOUND (the recipe: 0.3), so smaller configurations are trained and
#     searchable; run folders runs/issue14-full/quala-sst2-$V[-truncation]-train04[-seed43]
# The distilled student is the one of benchmarks/lengthdrop_sst2_student_short.sh (its distill stage is the recipe's,
# with the same `threads=1`, hence the same stage hash): when runs/issue14/quala-sst2-$V[-seed43] holds it, its
# finetune + distill records are reused here instead of distilling again. The length stage checkpoints every 200
# steps and resumes when the script is started again. About 90 min (l3b) of length training per seed on one thread
# of the 2-core VM, two seeds at a time; each search ~10 min.
# Afterwards: benchmarks/lengthdrop_vs_truncation.py --pair sst2 $V SEED runs/issue14-full/quala-sst2-$V[-seed43]
# runs/issue14-full/quala-sst2-$V-truncation[-seed43] ... (docs/results.md has the command).
set -euo pipefail
V="${1:-l3b}"
case "$V" in l3b | l4) ;; *) echo "usage: $0 [l3b|l4]" >&2; exit 2 ;; esac
export SLIMFORMER_DATA="${SLIMFORMER_DATA:-../shared/data}" OMP_NUM_THREADS="${OMP_NUM_THREADS:-1}"
R=runs/issue14-full
SHORT=runs/issue14
BOUND="${BOUND:-}" B="" LB="" SB="" TB=""
if [ -n "$BOUND" ]; then
  case "$BOUND" in 0.[1-9] | 0.[1-9][0-9]) ;; *) echo "BOUND=$BOUND: expected a ratio in (0, 1), e.g. 0.4" >&2; exit 2 ;; esac
  B="-train${BOUND/./}" LB="stages.2.length.length_drop_ratio_bound=$BOUND"
  SB="stages.3.search.length_drop_ratio=$BOUND" TB="stages.2.search.length_drop_ratio=$BOUND"
fi
mkdir -p "$R"
. benchmarks/_lib.sh
upto_search recipes/quala-sst2-$V.yaml "$R/quala-sst2-$V.yaml"
upto_search recipes/quala-sst2-$V-truncation.yaml "$R/quala-sst2-$V-truncation.yaml"
D="stages.1.distill.threads=1"
sfx() { [ "$1" = 42 ] && echo "" || echo "-seed$1"; }
chain() {
  local seed=$1 ld="$R/quala-sst2-$V$B$(sfx "$1")" tr="$R/quala-sst2-$V-truncation$B$(sfx "$1")"
  mkdir -p "$ld" && ln -sfn ../../sst2-int8/finetune "$ld/finetune"
  share_records "$SHORT/quala-sst2-$V$(sfx "$seed")" "$ld" "quala-sst2-$V" finetune distill
  slimformer compress "$R/quala-sst2-$V.yaml" seed="$seed" $D stages.2.length.threads=1 stages.3.search.threads=1 $LB $SB \
    --run-dir "$ld" > "$ld.log" 2>&1
  share_records "$ld" "$tr" "quala-sst2-$V-truncation" finetune distill
  slimformer compress "$R/quala-sst2-$V-truncation.yaml" seed="$seed" $D stages.2.search.threads=1 $TB \
    --run-dir "$tr" > "$tr.log" 2>&1
}
chain 42 &
chain 43 &
wait
