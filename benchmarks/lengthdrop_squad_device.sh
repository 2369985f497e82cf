#!/usr/bin/env bash
# Issue 14, SQuAD la-full at the issue's budget on the GPU machine of the `device` tool (one call, < 10 min): the
# same recipes and overrides as benchmarks/lengthdrop_squad_full.sh (so the run folders resume here, on the CPU,
# for export, length_benchmark and benchmarks/lengthdrop_vs_truncation.py), only faster:
#   teacher (finetune, 2 epochs, all 8,174 questions), then side by side on the one GPU: the length stage + search of
#   seeds 42 and 43, and the truncation twin's search of each seed (the teacher itself).
# Weights travel as fp16 (benchmarks/device_transfer.py): the base encoder arrives rounded, and every model is
# rounded before anything trains from, searches on or is evaluated with it, so what comes back is what was used.
# Here (this machine):  bash benchmarks/device_prepare.sh        (.dev/: wheels, the base encoder, SQuAD dev)
# Device run:            run(command="bash benchmarks/lengthdrop_squad_device.sh", carry=[".dev"], timeout_s=590)
# Back here:             bash benchmarks/device_collect.sh DIR    (DIR: the run's files_at)
set -uo pipefail
T0=$(date +%s)
DEADLINE=${DEADLINE:-540}           # seconds after start: unfinished jobs are stopped, then everything is packed
OUT=${OUT:-/tmp/device-out}; mkdir -p "$OUT"
left() { echo $(( DEADLINE - ($(date +%s) - T0) )); }
log() { echo "[$(( $(date +%s) - T0 ))s] $*"; }
export PYTHON=${PYTHON:-python3} PYTHONUNBUFFERED=1 SLIMFORMER_DATA=.dev/data TOKENIZERS_PARALLELISM=false
export PYTHONPATH=$PWD/src:$PWD/.dev/pkg      # slimformer from this tree; minilm-l6 = .dev/minilm (.dev/pkg)
if [ -z "${NO_WHEELS:-}" ]; then                # pydantic, and tokenizers 0.23.3 (0.23.2 drops SQuAD windows)
  $PYTHON -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .dev/whl/*.whl || exit 3
  export PYTHONPATH=/tmp/site:$PYTHONPATH
fi
nvidia-smi -L 2>/dev/null; $PYTHON -c "import torch, transformers, tokenizers; print('torch', torch.__version__, 'cuda', torch.cuda.is_available(), 'transformers', transformers.__version__, 'tokenizers', tokenizers.__version__)"
[ -f .dev/minilm/model.safetensors ] || { $PYTHON benchmarks/device_transfer.py unpack .dev/base .dev/minilm && cp .dev/base_files/* .dev/minilm/; } || exit 4
. benchmarks/_lib.sh
R=runs/issue14-full; mkdir -p "$R"
LA=recipes/quala-squad-la-full.yaml TR=recipes/quala-squad-la-full-truncation.yaml
upto_stage $LA "$R/squad-ft.yaml" finetune; upto_stage $LA "$R/squad-len.yaml" length
upto_search $LA "$R/quala-squad-la-full.yaml"; upto_search $TR "$R/quala-squad-la-full-truncation.yaml"
F="stages.0.finetune.threads=1" L="stages.1.length.threads=1" S="stages.2.search.threads=1" TS="stages.1.search.threads=1"
if [ -n "${SMOKE:-}" ]; then  # a few steps and examples each, to check the script itself (in a scratch checkout)
  F="$F stages.0.finetune.max_steps=2 stages.0.finetune.max_train_examples=64 stages.0.finetune.max_eval_examples=16"
  L="$L stages.1.length.max_steps=2 stages.1.length.max_train_examples=64 stages.1.length.max_eval_examples=16"
  q="search_examples=16 population=2 mutation_size=2 crossover_size=2 iterations=1"
  S="$S $(for k in $q; do printf 'stages.2.search.%s ' $k; done)"; TS="$TS $(for k in $q; do printf 'stages.1.search.%s ' $k; done)"
fi
compress() {  # stopped at the deadline (timeout 0 would mean no limit)
  local t; t=$(left); [ "$t" -gt 5 ] || { echo "deadline reached: $*"; return 124; }
  timeout "$t" $PYTHON -m slimformer.cli compress "$@"
}
T=$R/quala-squad-la-full
log "teacher"
compress "$R/squad-ft.yaml" seed=42 $F --run-dir $T > "$OUT/teacher.log" 2>&1 || { log "teacher failed"; tail -30 "$OUT/teacher.log"; }
if [ -f $T/finetune/eval_results.json ] && [ ! -f $T/finetune/.rounded ]; then
  $PYTHON benchmarks/device_transfer.py round $T/finetune && touch $T/finetune/.rounded
fi
lengthdrop() {  # seed: length stage, round its model, search
  local seed=$1 d=$T; [ "$1" = 42 ] || d=$T-seed$1
  if [ "$seed" != 42 ]; then mkdir -p $d && ln -sfn ../quala-squad-la-full/finetune $d/finetune; fi
  compress "$R/squad-len.yaml" seed=$seed $F $L --run-dir $d || return 1
  [ -f $d/length/.rounded ] || { $PYTHON benchmarks/device_transfer.py round $d/length && touch $d/length/.rounded; }
  compress "$R/quala-squad-la-full.yaml" seed=$seed $F $L $S --run-dir $d
}
twin() {
  local seed=$1 d=$R/quala-squad-la-full-truncation; [ "$1" = 42 ] || d=$d-seed$1
  mkdir -p $d && ln -sfn ../quala-squad-la-full/finetune $d/finetune
  compress "$R/quala-squad-la-full-truncation.yaml" seed=$seed $F $TS --run-dir $d
}
if [ -f $T/finetune/.rounded ]; then
  for s in 42 43; do
    log "length + search, seed $s"; lengthdrop $s > "$OUT/la-full-$s.log" 2>&1 &
    log "truncation search, seed $s"; twin $s > "$OUT/twin-$s.log" 2>&1 &
  done
  wait
fi
log "packing"
base=.dev/minilm
pk() { $PYTHON benchmarks/device_transfer.py pack "$@"; }
[ -f $T/finetune/.rounded ] && pk $T/finetune "$OUT/teacher" --ref $base
[ -f $T/length/.rounded ] && pk $T/length "$OUT/len42" --ref $T/finetune
[ -f $T-seed43/length/.rounded ] && pk $T-seed43/length "$OUT/len43" --ref $T/finetune
# the transfer holds 64 MiB: the second seed's model stays behind if the three do not fit (its run folder still comes)
if [ "$(du -cb "$OUT"/*.part* 2>/dev/null | tail -1 | cut -f1)" -gt $(( 62 * 1024 * 1024 )) ]; then
  log "len43 left out (size)"; rm -f "$OUT"/len43.*
fi
# everything else of the run folders (no weights, checkpoints or graphs), the pack headers and the logs, in one file
tar czf "$OUT/runs.tgz" --exclude='*.safetensors' --exclude='checkpoint-*' --exclude='*.onnx' --exclude='*.onnx.data' \
  $R "$OUT"/*.json "$OUT"/*.log 2>/dev/null
rm -f "$OUT"/*.json "$OUT"/*.log
ls -la "$OUT"; du -sh "$OUT"
log "done"
