#!/usr/bin/env bash
# Everything the project and its whole test suite need, on a fresh Debian machine:
# Debian's Chromium for the browser tests (Playwright's own browser download cannot work
# on these machines), then eventstore with every extra (`dev` installs them all).
set -euo pipefail
cd "$(dirname "$0")/.."
if ! command -v chromium >/dev/null 2>&1; then
    sudo=""
    [ "$(id -u)" -eq 0 ] || sudo=sudo
    $sudo apt-get update -qq
    $sudo apt-get install -y -qq chromium
fi
python -m pip install -e '.[dev]'
