#!/usr/bin/env bash
# The Debian package and the systemd unit, checked as an operator meets them:
# cargo-deb builds the .deb, dpkg installs it, the installed binary passes
# `check-config` on the installed config, `systemd-analyze verify` accepts
# the unit and `systemd-analyze security` rates its exposure 2.0 or lower.
# Must run as root (dpkg). The package is removed again at the end.
set -euo pipefail
cd "$(dirname "$0")/../.."

log() { printf '[packaging] %s\n' "$*" >&2; }
die() { printf '[packaging] FAIL: %s\n' "$*" >&2; exit 1; }

if ! cargo deb --version >/dev/null 2>&1; then
  log "installing cargo-deb"
  cargo install cargo-deb --locked --version 3.8.0
fi
log "cargo deb"
deb="$(cargo deb --locked 2>/dev/null | tail -n 1)"
[ -f "$deb" ] || die "cargo deb made no package"
log "dpkg -i $deb"
dpkg -i "$deb"
trap 'dpkg --purge ftpdrop >/dev/null 2>&1 || true' EXIT

getent passwd ftpdrop >/dev/null || die "no ftpdrop user after install"
/usr/bin/ftpdrop --version
log "check-config on the installed config"
/usr/bin/ftpdrop check-config --config /etc/ftpdrop/config.json >/dev/null

unit=/lib/systemd/system/ftpdrop.service
log "systemd-analyze verify $unit"
systemd-analyze verify "$unit"
log "systemd-analyze security --offline=true $unit"
report="$(systemd-analyze security --offline=true "$unit" 2>&1)"
score="$(printf '%s\n' "$report" | sed -n 's/.*Overall exposure level for ftpdrop.service: \([0-9.]*\).*/\1/p')"
[ -n "$score" ] || { printf '%s\n' "$report"; die "no exposure score"; }
log "exposure level: $score"
awk -v s="$score" 'BEGIN { exit !(s <= 2.0) }' || { printf '%s\n' "$report"; die "exposure $score is over 2.0"; }
log "ok"
