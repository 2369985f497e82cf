#!/usr/bin/env bash
# Issue 14 at the issue's budget, SQuAD v1.1 (article split of dev-v1.1.json), variant la-full: the teacher on all
# 8,174 train questions for 2 epochs (fine-tuned once, in the seed-42 LengthDrop run, and linked into the others),
# the length stage on all of them for 2 epochs, then the search; then the truncation twin with the same search.
# recipes/quala-squad-la-full.yaml unchanged, up to its search (time the picks afterwards, on an idle machine).
#   bash benchmarks/lengthdrop_squad_full.sh [SEED ...]   (default: 42 43; start 42 first: it trains the teacher)
# Estimated on this 2-core VM, one thread: teacher ~1.5-2 h, length ~6 h per seed, search ~6 h per run (2,000 questions), so it
# spans sessions: every stage resumes from its last checkpoint when the same command is started again.
# On a lent GPU (`device`): benchmarks/lengthdrop_squad_device.sh runs the same recipes and overrides in one ~9-min call.
# Afterwards: python benchmarks/lengthdrop_vs_truncation.py --pair squad la-full 42 runs/issue14-full/quala-squad-la-full
#   runs/issue14-full/quala-squad-la-full-truncation --pair ... (and the seed-43 pair).
set -euo pipefail
export SLIMFORMER_DATA="${SLIMFORMER_DATA:-../shared/data}" OMP_NUM_THREADS="${OMP_NUM_THREADS:-1}"
R=runs/issue14-full
mkdir -p "$R"
. benchmarks/_lib.sh
upto_search recipes/quala-squad-la-full.yaml "$R/quala-squad-la-full.yaml"
upto_search recipes/quala-squad-la-full-truncation.yaml "$R/quala-squad-la-full-truncation.yaml"
SEEDS=("${@:-42 43}")
for seed in ${SEEDS[@]}; do
  sfx=$([ "$seed" = 42 ] && echo "" || echo "-seed$seed")
  if [ "$seed" != 42 ]; then  # the teacher is the seed-42 run's (finetune pins seed 42)
    [ -f "$R/quala-squad-la-full/finetune/slimformer.json" ] || {
      echo "the teacher $R/quala-squad-la-full/finetune is not trained yet: run seed 42 first" >&2; exit 2; }
    mkdir -p "$R/quala-squad-la-full$sfx" && ln -sfn ../quala-squad-la-full/finetune "$R/quala-squad-la-full$sfx/finetune"
  fi
  slimformer compress "$R/quala-squad-la-full.yaml" seed=$seed stages.0.finetune.threads=1 stages.1.length.threads=1 \
    stages.2.search.threads=1 --run-dir "$R/quala-squad-la-full$sfx"
  d="$R/quala-squad-la-full-truncation$sfx"
  mkdir -p "$d" && ln -sfn ../quala-squad-la-full/finetune "$d/finetune"
  slimformer compress "$R/quala-squad-la-full-truncation.yaml" seed=$seed stages.1.search.threads=1 --run-dir "$d"
done
