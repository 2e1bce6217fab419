#!/usr/bin/env bash
# Load testing (the seed's bench/run_stress_tests.sh): sustained mixed load, TCP load, restarts, watching cost.
#   bench/run_stress_tests.sh [--quick] [other `supervise bench` options]
set -euo pipefail
source "$(dirname "$0")/../scripts/_supervise.sh"
exec "$SUPERVISE" bench sustained tcp_sustained_10k restart observe observe_crash_loop "$@"
