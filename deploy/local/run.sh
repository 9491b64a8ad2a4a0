#!/usr/bin/env bash
# `make run`: bring up whatever is not running, open the chat, then stop what this run
# started. Set-up output goes to stderr so that piped runs print only the replies.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$root"

started_stack=0
started_services=0
deploy/local/stack.sh status >/dev/null 2>&1 || started_stack=1
deploy/local/services.sh status >/dev/null 2>&1 || started_services=1
cleanup() {
  if [ "$started_services" = 1 ]; then deploy/local/services.sh down >&2 || true; fi
  if [ "$started_stack" = 1 ]; then deploy/local/stack.sh down >&2 || true; fi
}
trap cleanup EXIT

deploy/local/stack.sh up >&2
deploy/local/services.sh up >&2
if [ -t 0 ] && { [ "$started_stack" = 1 ] || [ "$started_services" = 1 ]; }; then
  echo "Leaving the chat stops everything this run started." >&2
fi
# On a terminal the client opens with a banner: what runs where, and three messages to try.
.venv/bin/python -m switchboard.chat_cli
