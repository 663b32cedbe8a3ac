#!/usr/bin/env bash
# Segmented upload vs single-stream clients on a rate-capped server.
#
#   bash bench/segmented.sh
#
# Uploads one 400 MiB file to `vsftpd-throttled` (vsftpd with
# local_max_rate=20000000, i.e. 20 MB/s per connection, lock_upload_files=NO)
# with ftpdrop (default settings: one stream, split into up to 4 segments
# once it proves slow, after segment_after_ms = 1 s), curl -T
# and lftp `put`, alternating the tools, SEG_RUNS runs each. Every upload is
# compared byte for byte with the local file (outside the timing). Prints
# the medians and ratios and writes them to bench/results/segmented.md.
#
# Needs the interop servers (they include vsftpd-throttled):
#   sudo FTPDROP_PUREFTPD_CHEAP_HASH=1 bash scripts/interop/servers.sh start target/interop
# and a release build (built here if missing: cargo build --release).
#
# Knobs: SEG_RUNS=3, SEG_BYTES=419430400, FTPDROP_INTEROP_ENV=<servers.env>,
# SEG_RESULTS=bench/results/segmented.md
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$REPO"
RUNS="${SEG_RUNS:-3}"
BYTES="${SEG_BYTES:-$((400 << 20))}"
ENV_FILE="${FTPDROP_INTEROP_ENV:-$REPO/target/interop/servers.env}"
RESULTS="${SEG_RESULTS:-$REPO/bench/results/segmented.md}"
WORK="$REPO/target/segbench"
BIN="$REPO/target/release/ftpdrop"

[ -f "$ENV_FILE" ] || { echo "no $ENV_FILE: start the interop servers first" >&2; exit 1; }
set -a; . "$ENV_FILE"; set +a
HOST="$FTPDROP_VSFTPDTHROTTLED_HOST" PORT="$FTPDROP_VSFTPDTHROTTLED_PORT"
USER_="$FTPDROP_VSFTPDTHROTTLED_USER" PASS="$FTPDROP_VSFTPDTHROTTLED_PASS"
ROOT="$FTPDROP_VSFTPDTHROTTLED_ROOT"
[ -x "$BIN" ] || cargo build --release -q

mkdir -p "$WORK"
LOCAL="$WORK/seg-$BYTES.bin"
if [ "$(stat -c %s "$LOCAL" 2>/dev/null || echo 0)" != "$BYTES" ]; then
    echo "making $LOCAL" >&2
    head -c "$BYTES" /dev/urandom >"$LOCAL"
fi
# The remote directory, made on disk as the FTP user owns the root.
REMOTE_DIR="$ROOT/segbench"
mkdir -p "$REMOTE_DIR"
chown --reference="$ROOT" "$REMOTE_DIR"

now() { date +%s.%N; }

run_ftpdrop() {  # run_ftpdrop N -> remote file
    local d="$WORK/ftpdrop-$1"
    rm -rf "$d"; mkdir -p "$d/files" "$d/checked"
    printf '{"inbox": "%s", "checked": "%s", "settle_ms": 0}\n' "$d/files" "$d/checked" >"$d/cfg.json"
    printf '[{"server": {"host": "%s", "port": %s, "login": "%s", "password": "%s"}, "file": {"local_path": "%s", "server_path": "segbench/ftpdrop"}}]\n' \
        "$HOST" "$PORT" "$USER_" "$PASS" "$LOCAL" >"$d/files/seg.json"
    "$BIN" once --config "$d/cfg.json" >"$d/log.txt" 2>&1
    SEGMENTS="$(grep -o '"segments": [0-9]*' "$d/checked/seg.report.json" | grep -o '[0-9]*$' || echo 1)"
    REMOTE="$REMOTE_DIR/ftpdrop/$(basename "$LOCAL")"
}

run_curl() {
    curl -sS --ftp-pasv -T "$LOCAL" "ftp://$USER_:$PASS@$HOST:$PORT/segbench/curl.bin"
    REMOTE="$REMOTE_DIR/curl.bin"
}

run_lftp() {
    lftp -u "$USER_,$PASS" -p "$PORT" \
        -e "set net:max-retries 1; set cmd:fail-exit yes; put $LOCAL -o segbench/lftp.bin; bye" "$HOST" >/dev/null
    REMOTE="$REMOTE_DIR/lftp.bin"
}

declare -A TIMES
echo "uploading $((BYTES >> 20)) MiB to vsftpd-throttled (20 MB/s per connection), $RUNS runs each" >&2
for i in $(seq 1 "$RUNS"); do
    for tool in ftpdrop curl lftp; do
        rm -rf "${REMOTE_DIR:?}"/ftpdrop "$REMOTE_DIR"/curl.bin "$REMOTE_DIR"/lftp.bin
        sync
        SEGMENTS=1
        t0="$(now)"
        "run_$tool" "$i"
        t1="$(now)"
        secs="$(echo "$t1 - $t0" | bc -l)"
        cmp -s "$LOCAL" "$REMOTE" || { echo "$tool run $i: $REMOTE differs from $LOCAL" >&2; exit 1; }
        TIMES[$tool]="${TIMES[$tool]:-} $secs"
        extra=""; [ "$tool" = ftpdrop ] && extra=" ($SEGMENTS segments)"
        printf '  run %d  %-8s %6.2f s%s, identical\n' "$i" "$tool" "$secs" "$extra" >&2
    done
done
rm -rf "${REMOTE_DIR:?}"/ftpdrop "$REMOTE_DIR"/curl.bin "$REMOTE_DIR"/lftp.bin

median() { tr ' ' '\n' | grep . | sort -g | awk '{a[NR]=$1} END {print (NR%2 ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2)}'; }
M_F="$(echo "${TIMES[ftpdrop]}" | median)"
M_C="$(echo "${TIMES[curl]}" | median)"
M_L="$(echo "${TIMES[lftp]}" | median)"
mbs() { echo "$BYTES / $1 / 1000000" | bc -l; }

{
    echo "# Segmented upload on a rate-capped server"
    echo
    echo "Written by \`bash bench/segmented.sh\` on $(date -u +%FT%TZ), commit $(git rev-parse --short HEAD)$(git diff --quiet -- src || echo ' + local changes'),"
    echo "$(nproc) CPUs. One $((BYTES >> 20)) MiB file to vsftpd 3.0.3 on loopback with"
    echo "\`local_max_rate=20000000\` (20 MB/s per connection) and \`lock_upload_files=NO\`;"
    echo "tools alternated, $RUNS runs each, wall time of the whole command (ftpdrop: start,"
    echo "login, segment probe, upload, SIZE check, rename). Every upload was compared"
    echo "byte for byte with the local file."
    echo
    echo "| tool | command | runs (s) | median (s) | MB/s | ftpdrop faster by |"
    echo "| --- | --- | --- | --- | --- | --- |"
    printf '| ftpdrop | `ftpdrop once` (defaults: split after 1 s into 4 segments) | %s | %.2f | %.1f | |\n' \
        "$(echo ${TIMES[ftpdrop]} | xargs printf '%.2f\n' | paste -sd, | sed 's/,/, /g')" "$M_F" "$(mbs "$M_F")"
    printf '| curl | `curl -T` | %s | %.2f | %.1f | %.2f× |\n' \
        "$(echo ${TIMES[curl]} | xargs printf '%.2f\n' | paste -sd, | sed 's/,/, /g')" "$M_C" "$(mbs "$M_C")" "$(echo "$M_C / $M_F" | bc -l)"
    printf '| lftp | `lftp -e "put"` | %s | %.2f | %.1f | %.2f× |\n' \
        "$(echo ${TIMES[lftp]} | xargs printf '%.2f\n' | paste -sd, | sed 's/,/, /g')" "$M_L" "$(mbs "$M_L")" "$(echo "$M_L / $M_F" | bc -l)"
    echo
    echo "curl and lftp \`put\` use one data connection, so the server's per-connection"
    echo "cap bounds them. ftpdrop starts the same way, one stream; after 1 s (the"
    echo "default segment_after_ms) the rest would still take more than 2 s at 20 MB/s,"
    echo "so the stream stops at a boundary and the rest goes as four ranges of the temp"
    echo "file at once over four sessions (REST offset + STOR), after a once-per-server"
    echo "probe found that vsftpd keeps such writes. The bound is 1 s at 20 MB/s, then"
    echo "4 × 20 MB/s: about 5.9 s plus the probe."
} >"$RESULTS.tmp"
mv "$RESULTS.tmp" "$RESULTS"
cat "$RESULTS"
