#!/usr/bin/env bash
# The browser test opens the HTML reports in Debian's headless Chromium: install it when missing.
set -euo pipefail
command -v chromium >/dev/null 2>&1 && exit 0
sudo=""
if [ "$(id -u)" -ne 0 ]; then
  if ! command -v sudo >/dev/null 2>&1; then
    echo "make test needs Chromium for the report browser test: install Debian's chromium package (apt-get install chromium)" >&2
    exit 1
  fi
  sudo="sudo"
fi
echo "installing Debian's chromium for the report browser test (once)" >&2
$sudo env DEBIAN_FRONTEND=noninteractive apt-get update -qq
$sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends chromium
