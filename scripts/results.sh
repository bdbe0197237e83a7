# Machine-readable results of the benchmark scripts, for scripts/report.sh (sourced, not run).
# A script opens its table, adds rows and closes it; the file is replaced only at close, so a run
# that fails keeps the last complete results. Files: $RESULTS_DIR/<name>.csv (default
# docs/benchmarks/data), a `# date: what` line, a header line, then rows.
RESULTS_DIR="${RESULTS_DIR:-docs/benchmarks/data}"

results_open() { # $1 = name, $2 = comma-separated header, $3 = what was run (one line)
  mkdir -p "$RESULTS_DIR"
  results_file="$RESULTS_DIR/$1.csv"
  { echo "# $(date -u +%F): $3"; echo "$2"; } >"$results_file.tmp"
}

results_row() { # $@ = the row's fields
  local IFS=,
  echo "$*" >>"$results_file.tmp"
}

results_close() { mv "$results_file.tmp" "$results_file"; echo "results: $results_file" >&2; }
