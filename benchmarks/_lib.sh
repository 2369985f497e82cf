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
