# Sourced by the operational scripts: run `supervise` from the project's .venv when there is one.
# (The scripts are thin wrappers of the CLI; every option they take is the CLI's.)
_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
if [ -x "$_root/.venv/bin/supervise" ]; then
    SUPERVISE="$_root/.venv/bin/supervise"
elif command -v supervise >/dev/null 2>&1; then
    SUPERVISE="supervise"
else
    echo "$(basename "$0"): no supervise: run \`make venv\` in $_root (or install the package)" >&2
    exit 3
fi
