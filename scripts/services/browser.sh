#!/usr/bin/env bash
# A headless browser for the console's end-to-end tests (tests/test_console.py): Debian's chromium package,
# driven by Python Playwright (PyPI playwright, in the test extra) through its executable path (Playwright's own
# browser downloads are not used). Installs chromium with apt-get when missing (needs root), checks it starts, and
# writes $OPENCSBS_WORK/env/browser.env with OPENCSBS_TEST_CHROMIUM. Nothing keeps running: stop does nothing.
#
#   scripts/services/browser.sh start|stop
#   OPENCSBS_CHROMIUM=/path/to/chromium scripts/services/browser.sh start   # another chromium binary
set -euo pipefail
cd "$(dirname "$0")/../.."
ROOT=$PWD
WORK=${OPENCSBS_WORK:-$ROOT/.work}
case "${1:-start}" in
  start)
    mkdir -p "$WORK/env"
    BIN=${OPENCSBS_CHROMIUM:-/usr/bin/chromium}
    if [ ! -x "$BIN" ]; then
      export DEBIAN_FRONTEND=noninteractive
      apt-get -o DPkg::Lock::Timeout=600 install -y -q chromium || { apt-get -o DPkg::Lock::Timeout=600 update -q && apt-get -o DPkg::Lock::Timeout=600 install -y -q chromium; }
    fi
    # Readiness: the browser renders a page headless.
    "$BIN" --headless --no-sandbox --disable-gpu --dump-dom 'data:text/html,<p>ok</p>' 2>/dev/null | grep -q '<p>ok</p>'
    echo "export OPENCSBS_TEST_CHROMIUM=$BIN" > "$WORK/env/browser.env"
    echo "chromium ready: $("$BIN" --version 2>/dev/null)"
    ;;
  stop) ;;
  *) echo "usage: $0 start|stop" >&2; exit 2 ;;
esac
