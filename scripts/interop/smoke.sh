#!/usr/bin/env bash
# Smoke test for the servers started by servers.sh start [DIR].
# Uploads a file with a Cyrillic name into a nested, not yet existing
# directory on each server with curl, checks the bytes under that server's
# ROOT, and records FEAT (DIR/<server>/feat.txt) and protocol quirks
# (DIR/<server>/quirks.txt).
set -euo pipefail

SCRIPT_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO_DIR="$(cd "$SCRIPT_DIR/../.." && pwd)"
DIR="${1:-${FTPDROP_INTEROP_DIR:-$REPO_DIR/target/interop}}"
DIR="$(cd "$DIR" && pwd)"
ENV_FILE="$DIR/servers.env"
[ -f "$ENV_FILE" ] || { echo "no $ENV_FILE: run servers.sh start first" >&2; exit 1; }

command -v curl >/dev/null || {
    apt-get update -qq >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -q curl >/dev/null; }
PY="$(command -v "${FTPDROP_PYTHON:-python3}" || command -v python3)"

# servers.env has plain KEY=value lines (no spaces in values).
set -a
# shellcheck disable=SC1090
. "$ENV_FILE"
set +a

SERVERS=(vsftpd:VSFTPD vsftpd-tls:VSFTPDTLS vsftpd-limited:VSFTPDLIMITED
         vsftpd-tls12:VSFTPDTLS12 vsftpd-implicit:VSFTPDIMPLICIT
         pureftpd:PUREFTPD proftpd:PROFTPD pyftpdlib:PYFTPDLIB pyquirks:PYQUIRKS)
NAME="План отчёт.txt"
REL="smoke/вложенная/dir2"
WORK="$(mktemp -d)"
trap 'rm -rf "$WORK"' EXIT
printf 'ftpdrop smoke %s\nстрока два\n' "$(date +%s%N)" >"$WORK/payload"
URLPATH="$("$PY" "$SCRIPT_DIR/ftptool.py" urlpath "$REL/$NAME")"

fail=0
for entry in "${SERVERS[@]}"; do
    name="${entry%%:*}"; p="FTPDROP_${entry##*:}"
    host="${p}_HOST"; port="${p}_PORT"; user="${p}_USER"; pass="${p}_PASS"; root="${p}_ROOT"
    host="${!host}"; port="${!port}"; user="${!user}"; pass="${!pass}"; root="${!root}"
    tls=()
    cafile=()
    scheme=ftp
    case "$name" in
        vsftpd-tls|vsftpd-tls12)
            tls=(--ssl-reqd --cacert "$FTPDROP_TLS_CA")
            cafile=("$FTPDROP_TLS_CA") ;;
        vsftpd-implicit)
            # ftptool.py speaks explicit TLS only: no FEAT/quirks files here.
            tls=(--cacert "$FTPDROP_TLS_CA")
            scheme=ftps ;;
    esac
    # FEAT (after login) + quirks, informational.
    if [ "$scheme" = ftp ]; then
        "$PY" "$SCRIPT_DIR/ftptool.py" feat "$host" "$port" "$user" "$pass" "${cafile[@]}" \
            >"$DIR/$name/feat.txt" 2>&1 || true
        "$PY" "$SCRIPT_DIR/ftptool.py" quirks "$host" "$port" "$user" "$pass" "$root" \
            "${cafile[@]}" >"$DIR/$name/quirks.txt" 2>&1 || true
    fi

    rc=0
    curl -sS --max-time 60 --ftp-create-dirs "${tls[@]}" --user "$user:$pass" \
        -T "$WORK/payload" "$scheme://$host:$port/$URLPATH" >"$DIR/$name/smoke-curl.log" 2>&1 || rc=$?
    target="$root/$REL/$NAME"
    if [ "$rc" != 0 ]; then
        echo "FAIL $name: curl exit $rc: $(tr '\n' ' ' <"$DIR/$name/smoke-curl.log")"
        fail=1
    elif ! cmp -s "$WORK/payload" "$target"; then
        echo "FAIL $name: uploaded bytes not found at $target"
        ls -laR "$root" | head -n 30 >&2 || true
        fail=1
    else
        echo "ok   $name: $(stat -c %s "$target") bytes at ${target#"$DIR"/}"
    fi
done

# vsftpd-limited: max_per_ip=2, so the third connection from 127.0.0.1 gets 421.
lim="$("$PY" "$SCRIPT_DIR/ftptool.py" maxconn "$FTPDROP_VSFTPDLIMITED_HOST" \
      "$FTPDROP_VSFTPDLIMITED_PORT" 3 2>&1 || true)"
echo "$lim" >"$DIR/vsftpd-limited/maxconn.txt"
if echo "$lim" | grep -q '^conn3 421'; then
    echo "ok   vsftpd-limited: 3rd connection refused: $(grep '^conn3' <<<"$lim" | cut -c7-)"
else
    echo "FAIL vsftpd-limited: 3rd connection not refused with 421: $(tr '\n' ' ' <<<"$lim")"
    fail=1
fi

# proftpd must advertise mod_digest's commands.
if grep -q 'HASH' "$DIR/proftpd/feat.txt" && grep -q 'XSHA256' "$DIR/proftpd/feat.txt"; then
    echo "ok   proftpd: FEAT advertises HASH and XSHA256 (mod_digest)"
else
    echo "FAIL proftpd: FEAT lacks HASH/XSHA256 (see $DIR/proftpd/feat.txt)"
    fail=1
fi

if [ "$fail" = 0 ]; then echo "smoke: all servers passed"; else echo "smoke: FAILED"; fi
exit "$fail"
