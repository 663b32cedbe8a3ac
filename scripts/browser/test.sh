#!/usr/bin/env bash
# The dashboard in headless Debian chromium (see dashboard_test.py).
#   scripts/browser/test.sh SERVERS_ENV
# Installs chromium and chromium-driver (Debian) and selenium (PyPI, in
# target/browser-venv) if missing; builds the debug binary; screenshots go
# to target/dashboard/.
set -euo pipefail
cd "$(dirname "$0")/../.."
SELENIUM_VERSION=4.38.0
env_file="${1:?usage: test.sh SERVERS_ENV}"
missing=()
for p in chromium chromium-driver; do
  dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p")
done
if [ "${#missing[@]}" -gt 0 ]; then
  apt-get update -qq >/dev/null
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${missing[@]}" >/dev/null
fi
venv=target/browser-venv
if ! "$venv/bin/python" -c "import selenium, sys; sys.exit(selenium.__version__ != '$SELENIUM_VERSION')" 2>/dev/null; then
  rm -rf "$venv"
  python3 -m venv "$venv"
  "$venv/bin/python" -m pip install -q --disable-pip-version-check "selenium==$SELENIUM_VERSION"
fi
cargo build --locked -q
# Selenium must not look for (or download) a browser or driver of its own.
export SE_OFFLINE=true
"$venv/bin/python" scripts/browser/dashboard_test.py "$env_file" target/debug/ftpdrop target/dashboard
