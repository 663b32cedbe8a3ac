#!/usr/bin/env bash
# Runs the README's quick start as written (the block between its
# quickstart markers), against the interop suite's pyftpdlib instead of
# ftp.example.com, in a home folder of its own, and checks that the file
# arrived byte for byte on the server's disk.
#   scripts/quickstart.sh SERVERS_ENV
set -euo pipefail
cd "$(dirname "$0")/.."
repo="$PWD"
env_file="${1:?usage: quickstart.sh SERVERS_ENV}"
set -a; . "$env_file"; set +a

block="$(awk '/<!-- quickstart:begin/{on=1; next} /<!-- quickstart:end/{on=0} on' README.md \
         | sed -e '/^```/d')"
[ -n "$block" ] || { echo "FAIL: no quickstart block in README.md" >&2; exit 1; }
# The reader's server, their port (9180 may be taken here), nothing else.
port="$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')"
block="$(printf '%s\n' "$block" | sed \
  -e "s/ftp.example.com/$FTPDROP_PYFTPDLIB_HOST/" \
  -e "s/\"port\": 21,/\"port\": $FTPDROP_PYFTPDLIB_PORT,/" \
  -e "s/\"login\": \"me\"/\"login\": \"$FTPDROP_PYFTPDLIB_USER\"/" \
  -e "s/\"password\": \"secret\"/\"password\": \"$FTPDROP_PYFTPDLIB_PASS\"/" \
  -e "s/127.0.0.1:9180/127.0.0.1:$port/")"

home="$(mktemp -d)"
rm -rf "$FTPDROP_PYFTPDLIB_ROOT/incoming"
log="$home/quickstart.log"
# A home of its own (for ~/ftpdrop-try), with the toolchain where it was.
export RUSTUP_HOME="${RUSTUP_HOME:-$HOME/.rustup}" CARGO_HOME="${CARGO_HOME:-$HOME/.cargo}"
set +e
(
  set -e
  export HOME="$home"
  cd "$repo"
  # The daemon it starts in the background ends with this shell.
  trap 'kill $(jobs -p) 2>/dev/null; wait' EXIT
  eval "$block"
) >"$log" 2>&1
status=$?
set -e
if [ "$status" -ne 0 ]; then
  cat "$log" >&2
  echo "FAIL: the quick start exited $status" >&2
  exit 1
fi
got="$FTPDROP_PYFTPDLIB_ROOT/incoming/hello.txt"
if ! cmp -s "$got" "$home/ftpdrop-try/hello.txt"; then
  cat "$log" >&2
  echo "FAIL: $got is not the file the quick start made" >&2
  exit 1
fi
grep -q "hello: done" "$log" || { cat "$log" >&2; echo "FAIL: submit --wait did not say done" >&2; exit 1; }
echo "ok: the README's quick start uploaded hello.txt, verified ($(grep -c . "$log") lines of output)"
[ -n "${QUICKSTART_KEEP:-}" ] && cat "$log"
rm -rf "$home" "$FTPDROP_PYFTPDLIB_ROOT/incoming"
