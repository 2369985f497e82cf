# Shell helpers of the benchmark scripts (sourced: . benchmarks/_lib.sh). PYTHON: the interpreter (default python).

# upto_stage RECIPE OUT STAGE: write RECIPE's copy holding its stages up to and with STAGE (its first occurrence) to
# OUT. Stage configs are unchanged, so the copies of one recipe share their stages' resume records: running the copy
# up to `finetune`, then the one up to `length` into the same run folder, trains each stage once.
upto_stage() {
  "${PYTHON:-python}" - "$1" "$2" "$3" <<'PY'
import sys, yaml
r = yaml.safe_load(open(sys.argv[1]))
names = [next(iter(s)) for s in r["stages"]]
r["stages"] = r["stages"][: names.index(sys.argv[3]) + 1]
yaml.safe_dump(r, open(sys.argv[2], "w"), sort_keys=False)
PY
}

# upto_search RECIPE OUT: the copy up to and with `search` (the runs time their picks afterwards, on an idle machine,
# with the full recipe: export + length_benchmark).
upto_search() { upto_stage "$1" "$2" search; }

# share_records DONOR DEST RECIPE STAGE...: start run folder DEST from DONOR's finished STAGE records (e.g. finetune
# distill): each STAGE folder is linked, and DEST/state.json gets those records under RECIPE's name, so a recipe with
# the same stage configs (hence hashes) resumes after them. Does nothing when DEST already has a state.json or DONOR
# lacks one; fails when a STAGE is missing from DONOR's records or not done.
share_records() {
  local donor=$1 dest=$2 recipe=$3 s
  shift 3
  [ -f "$donor/state.json" ] || return 0
  [ -f "$dest/state.json" ] && return 0
  mkdir -p "$dest"
  for s in "$@"; do ln -sfn "$(realpath --relative-to="$dest" "$(readlink -f "$donor/$s")")" "$dest/$s"; done
  "${PYTHON:-python}" - "$donor/state.json" "$dest/state.json" "$recipe" "$@" <<'PY'
import json, sys
donor, dest, recipe, names = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4:]
st = json.load(open(donor))["stages"][: len(names)]
assert [s["name"] for s in st] == names and all(s["status"] == "done" for s in st), (donor, names, st)
json.dump({"recipe": recipe, "stages": st}, open(dest, "w"), indent=2)
PY
}
