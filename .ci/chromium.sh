#!/usr/bin/env bash
# Debian's chromium for tests/test_report.py, which renders `cachelab report`'s HTML in headless Chromium.
# Installs the package (apt-get, non-interactive) unless /usr/bin/chromium exists. Needs root or sudo.
set -euo pipefail
if [ -x /usr/bin/chromium ]; then
    exit 0
fi
if [ "$(id -u)" = 0 ]; then
    as_root() { "$@"; }
else
    as_root() { sudo "$@"; }
fi
echo "chromium.sh: installing Debian's chromium package" >&2
as_root apt-get update -qq
as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends chromium
/usr/bin/chromium --version >&2
