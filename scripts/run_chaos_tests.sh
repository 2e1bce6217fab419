#!/usr/bin/env bash
# The seed's bench/run_chaos_tests.sh ("Failure injection"), as a thin wrapper of `supervise chaos`.
#
#   scripts/run_chaos_tests.sh [CONFIG]          # default: the built-in default tree
#
# Runs kill, stop and exception faults at 1, 5 and 10 faults/s under the tree's load, each for
# $DURATION seconds (default 60), with the gates --max-lost 0; then checks that no process of the
# tree outlived it.  Reports (table + JSON) and decision logs land in $OUT (default ./chaos-reports).
# Environment: DURATION, RATES ("1 5 10"), FAULTS ("kill,stop,exception"), SEED (default 1),
# SUPERVISE (default: `supervise`, else `python -m supervisor_tree.cli`).
set -euo pipefail

CONFIG=${1:-}
DURATION=${DURATION:-60}
RATES=${RATES:-"1 5 10"}
FAULTS=${FAULTS:-kill,stop,exception}
SEED=${SEED:-1}
OUT=${OUT:-chaos-reports}
if [[ -z "${SUPERVISE:-}" ]]; then
  if command -v supervise >/dev/null; then SUPERVISE=supervise; else SUPERVISE="python3 -m supervisor_tree.cli"; fi
fi
mkdir -p "$OUT"

failed=0
for rate in $RATES; do
  run_dir=$(mktemp -d "${TMPDIR:-/dev/shm}/chaos-XXXXXX")
  echo "== $FAULTS at $rate faults/s for ${DURATION}s (seed $SEED; run dir $run_dir)"
  # shellcheck disable=SC2086  # $SUPERVISE may be a command with arguments
  if ! $SUPERVISE chaos ${CONFIG:+"$CONFIG"} --run-dir "$run_dir" --duration "$DURATION" --rate "$rate" \
      --faults "$FAULTS" --seed "$SEED" --max-lost 0 \
      --report "$OUT/chaos-${rate}per-s.json" --log "$OUT/chaos-${rate}per-s.jsonl" | tee "$OUT/chaos-${rate}per-s.txt"; then
    failed=1
  fi
  # No orphans: every process of the tree has its run dir on its command line.
  left=$(pgrep -f -- "$run_dir" || true)
  if [[ -n "$left" ]]; then
    echo "ORPHANS after the run at $rate/s: $left"; failed=1
  else
    echo "no process of the tree is left"
  fi
  rm -rf "$run_dir"
done
exit $failed
