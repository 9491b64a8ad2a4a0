#!/usr/bin/env bash
# Installs Debian's `chromium` for the web widget's browser test (tests/e2e/test_web_widget.py),
# which Playwright drives by its path; Playwright's own browser download needs hosts that CI
# cannot reach. Does nothing when it is there already.
set -euo pipefail
chromium="${SWITCHBOARD_E2E_CHROMIUM:-/usr/bin/chromium}"
if [ -x "$chromium" ]; then
  exit 0
fi
if ! command -v apt-get >/dev/null 2>&1; then
  echo "$chromium is missing and there is no apt-get: install Chromium and set SWITCHBOARD_E2E_CHROMIUM" >&2
  exit 1
fi
sudo=""
if [ "$(id -u)" != 0 ]; then sudo="sudo"; fi
echo "installing Debian's chromium for the browser test" >&2
$sudo apt-get update -qq >&2
DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends chromium >&2
