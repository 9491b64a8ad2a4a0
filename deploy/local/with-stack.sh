#!/usr/bin/env bash
# Run a command with the local stack up: start the stack if it is not running, and stop
# it again afterwards only if this script started it (a running `make up` is left alone).
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$root"

started=0
if ! deploy/local/stack.sh status >/dev/null 2>&1; then
  started=1
fi
stop_stack() {
  if [ "$started" = 1 ]; then
    deploy/local/stack.sh down >&2 || true
  fi
}
trap stop_stack EXIT
# Tests and benchmarks query Jaeger: build it in the foreground if needed and wait for it.
SWITCHBOARD_STACK_WAIT_TRACING=1 deploy/local/stack.sh up >&2
"$@"
