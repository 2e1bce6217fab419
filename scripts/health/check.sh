#!/usr/bin/env bash
# System health (the seed's scripts/health/check.sh): exit 0 ok, 1 warn, 2 critical.
#   scripts/health/check.sh [--gates p99_ms=5,mailbox=1000,slope=1] [--window 5] [--json] [--run-dir DIR]
set -euo pipefail
source "$(dirname "$0")/../_supervise.sh"
exec "$SUPERVISE" health "$@"
