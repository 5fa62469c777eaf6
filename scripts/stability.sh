#!/usr/bin/env bash
# Proof of stability: the integration suite (on 17) and the smoke suite (on
# 15 and 18) run ARK_RUNS times in a row (default 5), each exactly as
# `make test` runs it, with cargo test's full parallelism. Builds happen once,
# before the first run, so every run has the same load. A run's output goes
# to $ARK_STABILITY_LOGS/<run>-<suite>.log; the summary names every failure.
#
#   make stability            (after make install-all)
#   ARK_RUNS=10 make stability
set -uo pipefail
cd "$(dirname "$0")/.."
runs=${ARK_RUNS:-5}
logs=${ARK_STABILITY_LOGS:-/var/tmp/pg_ark-stability}
rm -rf "$logs" && mkdir -p "$logs"
suites=(integration smoke15 smoke18)
declare -A failed passed
for s in "${suites[@]}"; do failed[$s]=0 passed[$s]=0; done

run_suite() {
  case "$1" in
    integration) make --no-print-directory integration ;;
    smoke15) make --no-print-directory smoke-15 ;;
    smoke18) make --no-print-directory smoke-18 ;;
  esac
}

echo "== building the test binaries once"
cargo test --release --locked -p pg_ark_tests --no-run >"$logs/build.log" 2>&1 \
  || { tail -30 "$logs/build.log"; exit 1; }
for r in $(seq 1 "$runs"); do
  for s in "${suites[@]}"; do
    start=$(date +%s)
    if run_suite "$s" >"$logs/$r-$s.log" 2>&1; then
      passed[$s]=$((passed[$s] + 1)); verdict=ok
    else
      failed[$s]=$((failed[$s] + 1)); verdict=FAILED
    fi
    echo "run $r $s: $verdict in $(($(date +%s) - start)) s"
    if [ "$verdict" = FAILED ]; then
      grep -E '^test .* FAILED$|panicked at' "$logs/$r-$s.log" | head -10 | sed 's/^/    /'
    fi
  done
done
total_p=0 total_f=0
for s in "${suites[@]}"; do
  echo "$s: ${passed[$s]} of $runs green"
  total_p=$((total_p + passed[$s])); total_f=$((total_f + failed[$s]))
done
echo "stability: $total_p passed, $total_f failed"
[ "$total_f" = 0 ]
