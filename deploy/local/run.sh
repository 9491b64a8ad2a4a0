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
if [ -t 0 ]; then
  echo "Chatting with Switchboard (simulator unless OPENAI_API_KEY/ANTHROPIC_API_KEY are set)." >&2
  echo "Ctrl-D or /quit to leave; everything this run started stops then." >&2
  echo "Web chat demo: http://127.0.0.1:15080/  (OpenAI-compatible API: http://127.0.0.1:15080/v1)" >&2
fi
.venv/bin/python -m switchboard.chat_cli
