#!/usr/bin/env bash
# Issue 14, SQuAD variants (b) l4 and (c) l3b at the issue's budget, on the GPU machine of the `device` tool: the
# recipes recipes/quala-squad-{l4,l3b}[-truncation].yaml up to their searches, with the issue-budget teacher that
# benchmarks/lengthdrop_squad_device.sh trained (runs/issue14-full/quala-squad-la-full/finetune), then the paired dev
# comparison (benchmarks/lengthdrop_vs_truncation.py, int8 ONNX Runtime on the device's CPU cores).
# Per variant and seed: distill (all 8,174 questions x 2 epochs) -> round -> length stage (same) -> round -> search;
# the truncation twin shares the student (its finetune + distill records) and searches it as soon as it is rounded.
# Weights never travel back (4 students and 4 LengthDrop models are ~140 MB packed); the results, the run folders'
# records, fronts and logs do. Every model is rounded to fp16 before anything trains from, searches on or scores it,
# as in benchmarks/lengthdrop_squad_device.sh, so the run folders recreate here bit for bit from the same command.
# Here (this machine):  bash benchmarks/device_prepare.sh squad-teacher      (.dev/: wheels, the teacher, SQuAD dev)
# Device, call 1:       run(command="DEADLINE=540 bash benchmarks/lengthdrop_squad_students_device.sh train",
#                           carry=[".dev"], timeout_s=590)
# Device, call 2 (at once, while the machine is warm; it resumes whatever call 1 left unfinished, then compares):
#                       run(command="DEADLINE=300 bash benchmarks/lengthdrop_squad_students_device.sh compare",
#                           carry=[".dev"], timeout_s=330)
# Back here, per call:  bash benchmarks/device_collect.sh DIR     (DIR: the call's files_at)
# VARIANTS / SEEDS (environment) narrow the work: VARIANTS="l3b" SEEDS="42 43" bash ... train
set -uo pipefail
PHASE=${1:-train}
case "$PHASE" in train | compare) ;; *) echo "usage: $0 train|compare" >&2; exit 2 ;; esac
T0=$(date +%s)
DEADLINE=${DEADLINE:-540}           # seconds after start: unfinished jobs are stopped, then the results are packed
OUT=${OUT:-/tmp/device-out}; mkdir -p "$OUT"
VARIANTS=${VARIANTS:-l4 l3b} SEEDS=${SEEDS:-42 43}
left() { echo $(( DEADLINE - ($(date +%s) - T0) )); }
log() { echo "[$(( $(date +%s) - T0 ))s] $*"; }
export PYTHON=${PYTHON:-python3} PYTHONUNBUFFERED=1 SLIMFORMER_DATA=.dev/data TOKENIZERS_PARALLELISM=false
export PYTHONPATH=$PWD/src:$PWD/.dev/pkg       # slimformer from this tree; minilm-l6 = .dev/minilm (never loaded)
if [ -z "${NO_WHEELS:-}" ]; then                 # pydantic, and tokenizers 0.23.3 (0.23.2 drops SQuAD windows)
  [ -d /tmp/site/pydantic ] || $PYTHON -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target /tmp/site .dev/whl/*.whl || exit 3
  export PYTHONPATH=/tmp/site:$PYTHONPATH
fi
nvidia-smi -L 2>/dev/null; $PYTHON -c "import torch, transformers, tokenizers; print('torch', torch.__version__, 'cuda', torch.cuda.is_available(), 'transformers', transformers.__version__, 'tokenizers', tokenizers.__version__)"
. benchmarks/_lib.sh
R=runs/issue14-full; mkdir -p "$R"
TEACHER=$R/quala-squad-la-full/finetune
if [ ! -f $TEACHER/model.safetensors ]; then
  mkdir -p $TEACHER && cp -a .dev/teacher_files/. $TEACHER/ && $PYTHON benchmarks/device_transfer.py unpack .dev/teacher $TEACHER || exit 4
fi
sfx() { [ "$1" = 42 ] && echo "" || echo "-seed$1"; }
compress() {  # stopped at the deadline (timeout 0 would mean no limit)
  local t; t=$(left); [ "$t" -gt 5 ] || { echo "deadline reached: $*"; return 124; }
  timeout "$t" $PYTHON -m slimformer.cli compress "$@"
}
F="stages.0.finetune.threads=1" D="stages.1.distill.threads=1" L="stages.2.length.threads=1"
S="stages.3.search.threads=1" TS="stages.2.search.threads=1"
if [ -n "${SMOKE:-}" ]; then  # a few steps and examples each, to check the script itself (in a scratch checkout)
  D="$D stages.1.distill.max_steps=2 stages.1.distill.max_train_examples=64 stages.1.distill.max_eval_examples=16"
  L="$L stages.2.length.max_steps=2 stages.2.length.max_train_examples=64 stages.2.length.max_eval_examples=16"
  q="search_examples=16 population=2 mutation_size=2 crossover_size=2 iterations=1"
  S="$S $(for k in $q; do printf 'stages.3.search.%s ' $k; done)"; TS="$TS $(for k in $q; do printf 'stages.2.search.%s ' $k; done)"
  CMP_SMOKE="--max-eval-examples 24 --budgets 2"
fi
round() { [ -f "$1/.rounded" ] || { $PYTHON benchmarks/device_transfer.py round "$1" > /dev/null && touch "$1/.rounded"; }; }
twin() {  # variant seed: the truncation twin searches the LengthDrop run's student (shared finetune + distill records)
  local v=$1 seed=$2 ld=$R/quala-squad-$1$(sfx $2) tr=$R/quala-squad-$1-truncation$(sfx $2)
  share_records $ld $tr quala-squad-$v-truncation finetune distill  # the same configs, hence hashes, in the twin
  compress $R/quala-squad-$v-truncation.yaml seed=$seed $F $D $TS --run-dir $tr
}
pipeline() {  # variant seed: distill, round, (twin), length, round, search
  local v=$1 seed=$2 d=$R/quala-squad-$1$(sfx $2)
  mkdir -p $d && ln -sfn ../quala-squad-la-full/finetune $d/finetune
  compress $R/squad-$v-distill.yaml seed=$seed $F $D --run-dir $d || return 1
  round $d/distill
  twin $v $seed > "$OUT/twin-$v-$seed.log" 2>&1 &
  compress $R/squad-$v-len.yaml seed=$seed $F $D $L --run-dir $d || { wait; return 1; }
  round $d/length
  compress $R/quala-squad-$v.yaml seed=$seed $F $D $L $S --run-dir $d
  wait
}
for v in $VARIANTS; do
  upto_stage recipes/quala-squad-$v.yaml $R/squad-$v-distill.yaml distill
  upto_stage recipes/quala-squad-$v.yaml $R/squad-$v-len.yaml length
  upto_search recipes/quala-squad-$v.yaml $R/quala-squad-$v.yaml
  upto_search recipes/quala-squad-$v-truncation.yaml $R/quala-squad-$v-truncation.yaml
done
for v in $VARIANTS; do for seed in $SEEDS; do  # every stage resumes: call 2 finishes what call 1 left
  log "$v seed $seed: distill, length, search (+ twin search)"; pipeline $v $seed > "$OUT/$v-$seed.log" 2>&1 &
done; done
wait
if [ "$PHASE" = compare ]; then
  pairs=()
  for v in $VARIANTS; do for seed in $SEEDS; do
    ld=$R/quala-squad-$v$(sfx $seed) tr=$R/quala-squad-$v-truncation$(sfx $seed)
    [ -f $ld/search/front.json ] && [ -f $tr/search/front.json ] && pairs+=(--pair squad $v $seed $ld $tr)
  done; done
  if [ ${#pairs[@]} -gt 0 ]; then
    log "dev comparison: $(( ${#pairs[@]} / 6 )) pairs"
    name=lengthdrop-vs-truncation-squad-students-issue-budget
    [ "$(left)" -gt 30 ] && timeout "$(left)" $PYTHON benchmarks/lengthdrop_vs_truncation.py "${pairs[@]}" --jobs $(( ${#pairs[@]} / 6 )) ${CMP_SMOKE:-} \
      --threads "$(nproc --all)" --out benchmarks/results/$name.json --plots benchmarks/plots/squad-students-issue-budget \
      --trained-on "the lent GPU machine of the device tool (benchmarks/lengthdrop_squad_students_device.sh); weights rounded to fp16 before use (benchmarks/device_transfer.py)" \
      > "$OUT/compare.log" 2>&1 || log "comparison failed or cut"
    runs=(); for v in $VARIANTS; do for seed in $SEEDS; do runs+=(--run $R/quala-squad-$v$(sfx $seed)); done; done
    $PYTHON benchmarks/learning_curves.py "${runs[@]}" --name learning-curves-squad-students-issue-budget \
      --trained-on "the lent GPU machine of the device tool" >> "$OUT/compare.log" 2>&1 || log "learning curves failed"
  fi
fi
log "packing"
# the run folders without weights, checkpoints or graphs; the results files and plots; the logs: one file
tar czf "$OUT/runs.tgz" --exclude='*.safetensors' --exclude='checkpoint-*' --exclude='*.onnx' --exclude='*.onnx.data' \
  $R/quala-squad-l4* $R/quala-squad-l3b* $R/squad-l*.yaml \
  benchmarks/results/*squad-students-issue-budget*.json benchmarks/plots/squad-students-issue-budget \
  benchmarks/plots/learning-curves-squad-students-issue-budget.png "$OUT"/*.log \
  2>/dev/null
rm -f "$OUT"/*.log
ls -la "$OUT"; du -sh "$OUT"
log "done"
