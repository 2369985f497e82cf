# Shell helpers of the benchmark scripts (sourced: . benchmarks/_lib.sh).

# upto_search RECIPE OUT: write RECIPE's copy holding its stages up to and with `search` to OUT (the runs time their
# picks afterwards, on an idle machine, with the full recipe: export + length_benchmark).
upto_search() {
  python - "$1" "$2" <<'PY'
import sys, yaml
r = yaml.safe_load(open(sys.argv[1]))
names = [next(iter(s)) for s in r["stages"]]
r["stages"] = r["stages"][: names.index("search") + 1]
yaml.safe_dump(r, open(sys.argv[2], "w"), sort_keys=False)
PY
}
