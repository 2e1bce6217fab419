#!/usr/bin/env bash
# Quick profile (the seed's scripts/profile/fprof.sh): a flame graph of one worker, or of all with --all.
#   scripts/profile/profile.sh WORKER [--duration 10] [--engine py-spy|yappi] [--run-dir DIR]
#   scripts/profile/profile.sh --all [--duration 10]
set -euo pipefail
source "$(dirname "$0")/../_supervise.sh"
exec "$SUPERVISE" profile "$@"
