#!/usr/bin/env bash
# A headless browser for the HTML report's test (tests/test_html_report.py): Debian's Chromium, driven from
# Python by Playwright through executable_path. Playwright's own browser download is never run (it is not
# reachable from here, and Debian's build is the one tested); only its Python package (which carries its
# driver) is installed, into the active venv. Idempotent: what is present already is left as it is.
#
#   scripts/install-browser.sh          install Chromium (apt) and playwright (pip, into the active venv)
#   PYTEST_INFER_CHROMIUM=/path/...     the tests use this browser instead of the one found on PATH
set -euo pipefail

export PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1

if ! command -v chromium >/dev/null; then
  export DEBIAN_FRONTEND=noninteractive
  # Another apt-get may hold the locks for a while (another install script on the same machine): wait for it.
  for i in 1 2 3 4 5 6 7 8 9 10; do
    if apt-get -o DPkg::Lock::Timeout=300 update -qq; then break; fi
    [[ $i == 10 ]] && { echo "install-browser.sh: apt-get update failed" >&2; exit 1; }
    sleep 15
  done
  # fonts-liberation: text in the screenshots is drawn with a real font, not boxes.
  apt-get -o DPkg::Lock::Timeout=600 install -y -qq --no-install-recommends chromium fonts-liberation >/dev/null
fi
if [[ -x /usr/lib/chromium/chromium ]]; then /usr/lib/chromium/chromium --version; else chromium --version; fi

if ! python -c "import playwright" 2>/dev/null; then
  python -m pip install -q "playwright>=1.40"
fi
python -c "from importlib.metadata import version; print('playwright', version('playwright'))"
