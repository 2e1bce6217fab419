#!/usr/bin/env bash
# Core operations (the seed's bench/run_core_benchmarks.sh): registry, queue, pool, session, beside raw pyzmq.
#   bench/run_core_benchmarks.sh [--quick] [other `supervise bench` options]
set -euo pipefail
source "$(dirname "$0")/../scripts/_supervise.sh"
exec "$SUPERVISE" bench core_ops_100k raw "$@"
