#!/usr/bin/env bash
# Install Debian's Chromium for the real-browser test (tests/browser/).
# Run as root. Idempotent: does nothing when /usr/bin/chromium already exists.
# Playwright drives it with executable_path="/usr/bin/chromium"; no browser download.
set -euo pipefail

if [ -x /usr/bin/chromium ]; then
    echo "install-browser: /usr/bin/chromium is already there: $(/usr/bin/chromium --version 2>/dev/null || true)"
    exit 0
fi
if [ "$(id -u)" != 0 ]; then
    echo "install-browser: must run as root to apt-get install chromium" >&2
    exit 1
fi
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq chromium >/dev/null
echo "install-browser: installed $(/usr/bin/chromium --version 2>/dev/null || echo chromium)"
