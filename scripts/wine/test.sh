#!/usr/bin/env bash
# The Windows binary, for real, under wine: `validate` and `once` upload a
# job whose local_path is a Windows path (Z:\..., wine's view of /) to the
# interop suite's vsftpd on loopback; then the same binary as a Windows
# service: `service install`, `net start`, a job dropped into its inbox,
# `net stop`. Every upload is checked byte for byte on the server's disk.
#
#   scripts/wine/test.sh SERVERS_ENV
#
# Needs wine (Debian's wine64), gcc-mingw-w64-x86-64 and the rustup target
# x86_64-pc-windows-gnu; .ci/run installs them. Prints what wine printed.
set -euo pipefail
cd "$(dirname "$0")/../.."
REPO="$PWD"
ENV_FILE="${1:?usage: test.sh servers.env}"
# shellcheck disable=SC1090
source "$ENV_FILE"

log() { printf '[wine] %s\n' "$*" >&2; }
die() { printf '[wine] FAIL: %s\n' "$*" >&2; exit 1; }

export WINEPREFIX="$REPO/target/wine-prefix" WINEDEBUG=-all WINEDLLOVERRIDES="mscoree,mshtml="
EXE="$REPO/target/x86_64-pc-windows-gnu/release/ftpdrop.exe"

log "building $EXE"
cargo build --locked --release --target x86_64-pc-windows-gnu 2>&1 | tail -n 2

if [ ! -f "$WINEPREFIX/system.reg" ]; then
  log "creating the wine prefix"
  wine wineboot -i >/dev/null 2>&1 || true
fi
# Wine 8 lacks bcryptprimitives.dll (ProcessPrng), which Rust's std
# imports: a shim, built here, for this prefix only.
x86_64-w64-mingw32-gcc -O2 -shared -o "$REPO/target/bcryptprimitives.dll" \
  scripts/wine/bcryptprimitives.c scripts/wine/bcryptprimitives.def -ladvapi32
cp "$REPO/target/bcryptprimitives.dll" "$WINEPREFIX/drive_c/windows/system32/"
wine "$EXE" --version

WORK="$(mktemp -d /tmp/ftpdrop-wine.XXXXXX)"
trap 'wine "$EXE" service uninstall >/dev/null 2>&1 || true; wineserver -k 2>/dev/null || true; rm -rf "$WORK"' EXIT
winpath() { printf 'Z:%s' "$(printf '%s' "$1" | tr / '\\')"; }
REMOTE="wine-$(date +%s)-$$"
mkdir -p "$WORK/data"
head -c 3000000 /dev/urandom > "$WORK/data/План отчёт.bin"
head -c 70000 /dev/urandom > "$WORK/data/second.bin"

job() { # job FILE REMOTE_DIR -> a job file's JSON
  python3 - "$1" "$2" <<'PY'
import json, os, sys
env = os.environ
print(json.dumps([{
    "server": {"host": env["FTPDROP_VSFTPD_HOST"], "port": env["FTPDROP_VSFTPD_PORT"],
               "login": env["FTPDROP_VSFTPD_USER"], "password": env["FTPDROP_VSFTPD_PASS"]},
    "file": {"local_path": sys.argv[1], "server_path": sys.argv[2]}}], ensure_ascii=False))
PY
}
export FTPDROP_VSFTPD_HOST FTPDROP_VSFTPD_PORT FTPDROP_VSFTPD_USER FTPDROP_VSFTPD_PASS

config() { # config DIR -> a config whose folders are under DIR
  python3 - "$(winpath "$1")" <<'PY'
import json, sys
d = sys.argv[1]
print(json.dumps({"inbox": d + "\\files", "checked": d + "\\checked", "settle_ms": 200,
                  "status": {"listen": "127.0.0.1:0"},
                  "sweep_interval_ms": 500, "log": {"dir": d + "\\logs"}}))
PY
}

state_of() { # state_of RECEIPT
  python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["state"])' "$1" 2>/dev/null || echo none
}

check_bytes() { # check_bytes LOCAL REMOTE_REL
  cmp "$1" "$FTPDROP_VSFTPD_ROOT/$2" || die "$2 differs from $1 on the server's disk"
  log "byte-identical on the server: $2"
}

log "validate and once, local_path $(winpath "$WORK/data/План отчёт.bin")"
mkdir -p "$WORK/once/files"
config "$WORK/once" > "$WORK/once/config.json"
job "$(winpath "$WORK/data/План отчёт.bin")" "$REMOTE/once" > "$WORK/once/files/one.json"
wine "$EXE" validate "$(winpath "$WORK/once/files/one.json")"
sleep 1
wine "$EXE" once --config "$(winpath "$WORK/once/config.json")" --log-file "$(winpath "$WORK/once/once.log")"
[ "$(state_of "$WORK/once/checked/one.report.json")" = done ] || die "once: $(cat "$WORK/once/checked/one.report.json")"
check_bytes "$WORK/data/План отчёт.bin" "$REMOTE/once/План отчёт.bin"
ls "$WORK/once/" | grep -q '^once.log' || die "no log file from --log-file"

log "as a Windows service"
mkdir -p "$WORK/svc"
config "$WORK/svc" > "$WORK/svc/config.json"
# A service left by an interrupted earlier run of this script.
wine "$EXE" service uninstall >/dev/null 2>&1 || true
wine "$EXE" service install --config "$(winpath "$WORK/svc/config.json")"
# In a prefix created moments ago, wine's service manager has been seen to
# answer "Could not get handle to service" to the first start right after
# the install, and yet start the service: a failed start is followed by a
# look at the service's state, and only a service that is neither starting
# nor running is started again ("Service already running" is a failure to
# `net start`, not to this test).
started=no
for _ in $(seq 1 10); do
  if wine net start ftpdrop; then started=yes; break; fi
  status="$(wine "$EXE" service status 2>/dev/null | tr -d '\r' || true)"
  log "net start failed; the service is: ${status:-unknown}"
  case "$status" in
    Running|StartPending) started=yes; break ;;
  esac
  sleep 1
done
[ "$started" = yes ] || die "net start ftpdrop failed"
wine "$EXE" service status
for _ in $(seq 1 60); do
  ls "$WORK/svc/ftpdrop-instances/"*.json >/dev/null 2>&1 && break
  sleep 0.5
done
# Handed over by `submit`, which first asks whether an instance runs on
# these folders: the service holds its advertisement's lock.
job "$(winpath "$WORK/data/second.bin")" "$REMOTE/svc" > "$WORK/two.json"
wine "$EXE" submit --config "$(winpath "$WORK/svc/config.json")" "$(winpath "$WORK/two.json")"
for _ in $(seq 1 120); do
  [ "$(state_of "$WORK/svc/checked/two.report.json")" = done ] && break
  sleep 0.5
done
[ "$(state_of "$WORK/svc/checked/two.report.json")" = done ] || {
  cat "$WORK"/svc/logs/* >&2 || true
  die "the service did not finish the job"
}
check_bytes "$WORK/data/second.bin" "$REMOTE/svc/second.bin"
wine net stop ftpdrop
for _ in $(seq 1 20); do
  status="$(wine "$EXE" service status | tr -d '\r')"
  [ "$status" = Stopped ] && break
  sleep 0.5
done
[ "$status" = Stopped ] || die "service status after net stop: $status"
grep -h "shutting down\|stopped" "$WORK"/svc/logs/* | tail -n 3
left="$(ls -A "$WORK/svc/ftpdrop-instances")"
[ -z "$left" ] || die "advertisement left after a clean stop: $left"
# What a killed instance leaves: its advertisement and a lock file that
# nobody holds. `submit` must see that no instance runs (a process id
# alone cannot tell on Windows).
printf '{"pid":4,"addr":"127.0.0.1:9"}' > "$WORK/svc/ftpdrop-instances/4-1.json"
: > "$WORK/svc/ftpdrop-instances/4-1.lock"
if out="$(wine "$EXE" submit --config "$(winpath "$WORK/svc/config.json")" "$(winpath "$WORK/two.json")" 2>&1)"; then
  die "submit handed a job to an instance that had ended: $out"
fi
printf '%s\n' "$out" | grep -q "no ftpdrop daemon runs" || die "submit: $out"
log "submit saw the ended instance's free lock: refused"
wine "$EXE" service uninstall
rm -rf "${FTPDROP_VSFTPD_ROOT:?}/$REMOTE"
log "ok: once and the service uploaded byte-identical files; the service stopped cleanly"
