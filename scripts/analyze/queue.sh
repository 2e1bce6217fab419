#!/usr/bin/env bash
# Queue analysis (the seed's scripts/analyze/queue.sh): the deepest mailboxes and queue components.
#   scripts/analyze/queue.sh [--top 10] [--json] [--run-dir DIR]
set -euo pipefail
source "$(dirname "$0")/../_supervise.sh"
exec "$SUPERVISE" queues "$@"
