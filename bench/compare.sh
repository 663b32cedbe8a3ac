#!/usr/bin/env bash
# ftpdrop vs lftp, rclone and curl on real FTP servers on loopback (issue 5).
#
#   bash bench/compare.sh                 # full run (~6 min on 2 cores, plus the first build)
#   BENCH_QUICK=1 bash bench/compare.sh   # smoke run (~1.5 min): small sizes, fewer runs
#
# Writes bench/results/latest.md (tables) and bench/results/latest/ (raw.csv,
# latency.json, command counts, profiles). Workloads (target/bench-data/),
# per-run logs (target/bench-work/logs/) and ftpdrop state (target/bench-work/)
# stay under target/; servers run under target/bench-servers/.
# Must run as root (servers.sh creates a user and the servers chroot).
#
# Knobs (environment):
#   BENCH_RUNS=5            runs per tool and workload (alternating tools)
#   BENCH_PURE_RUNS=5       runs per tool on pure-ftpd with the argon2 hash
#   BENCH_W1_FILES=1000     W1 file count (in BENCH_W1_DIRS=10 directories)
#   BENCH_W1_SIZE=4096      W1 file size, bytes
#   BENCH_W2_BYTES=1073741824  W2 file size
#   BENCH_LAT_JOBS=20       warm jobs for intake latency (plus one cold)
#   BENCH_10K_ENTRIES=10000 entries of the big-job RSS run (64-byte files)
#   BENCH_10K_RUNS=3        runs of it
#   BENCH_BIG_ENTRIES=110000 entries of the large-job run (a ~16 MiB job file; peak RSS / job size)
#   BENCH_REV=HEAD          commit to build (from a clean snapshot); "worktree" = the work tree
#   BENCH_CONNS=8           connections for ftpdrop, lftp -P, rclone --transfers
#   BENCH_SECTIONS="main pureftpd latency rss10k rssbig profile"   which parts to run
#   BENCH_SERVERS_DIR=target/bench-servers
#   BENCH_RESULTS_DIR=bench/results   where latest.md and latest/ go
set -euo pipefail

SCRIPT_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO="$(cd "$SCRIPT_DIR/.." && pwd)"
cd "$REPO"
TOOL="python3 $SCRIPT_DIR/benchtool.py"

QUICK="${BENCH_QUICK:-0}"
if [ "$QUICK" = 1 ]; then
    RUNS="${BENCH_RUNS:-2}"; PURE_RUNS="${BENCH_PURE_RUNS:-1}"
    W1_FILES="${BENCH_W1_FILES:-200}"; W2_BYTES="${BENCH_W2_BYTES:-$((64 << 20))}"
    LAT_JOBS="${BENCH_LAT_JOBS:-5}"; N10K="${BENCH_10K_ENTRIES:-2000}"; RUNS_10K="${BENCH_10K_RUNS:-1}"
    NBIG="${BENCH_BIG_ENTRIES:-20000}"
else
    RUNS="${BENCH_RUNS:-5}"; PURE_RUNS="${BENCH_PURE_RUNS:-5}"
    W1_FILES="${BENCH_W1_FILES:-1000}"; W2_BYTES="${BENCH_W2_BYTES:-$((1 << 30))}"
    LAT_JOBS="${BENCH_LAT_JOBS:-20}"; N10K="${BENCH_10K_ENTRIES:-10000}"; RUNS_10K="${BENCH_10K_RUNS:-3}"
    NBIG="${BENCH_BIG_ENTRIES:-110000}"
fi
W1_DIRS="${BENCH_W1_DIRS:-10}"
W1_SIZE="${BENCH_W1_SIZE:-4096}"
CONNS="${BENCH_CONNS:-8}"
SECTIONS="${BENCH_SECTIONS:-main pureftpd latency rss10k rssbig profile}"
SRV_DIR="${BENCH_SERVERS_DIR:-$REPO/target/bench-servers}"

WORK="$REPO/target/bench-work"
DATA="$REPO/target/bench-data"
RES_DIR="${BENCH_RESULTS_DIR:-$SCRIPT_DIR/results}"
OUT="$RES_DIR/latest"
BIN="$REPO/target/bench/release/ftpdrop"

log() { printf '[bench %(%H:%M:%S)T] %s\n' -1 "$*" >&2; }
die() { printf '[bench] ERROR: %s\n' "$*" >&2; exit 1; }
has() { [[ " $SECTIONS " == *" $1 "* ]]; }

[ "$(id -u)" = 0 ] || die "must run as root (servers.sh needs it)"

# ------------------------------------------------------------ tools ---
need_pkgs=()
command -v lftp >/dev/null || need_pkgs+=(lftp)
command -v rclone >/dev/null || need_pkgs+=(rclone)
command -v curl >/dev/null || need_pkgs+=(curl)
[ -x /usr/bin/time ] || need_pkgs+=(time)
if has profile; then
    command -v strace >/dev/null || need_pkgs+=(strace)
    command -v perf >/dev/null || need_pkgs+=(linux-perf)
fi
if [ "${#need_pkgs[@]}" -gt 0 ]; then
    log "apt-get install ${need_pkgs[*]}"
    apt-get update -qq >/dev/null
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${need_pkgs[@]}" \
        >/dev/null || die "apt-get install ${need_pkgs[*]} failed"
fi
command -v perf >/dev/null && perf --version >/dev/null 2>&1 || PERF_OK=0
PERF_OK="${PERF_OK:-1}"

# Build a committed revision from a clean snapshot (the work tree may hold
# other people's half-done edits); BENCH_REV=worktree builds the work tree.
REV="${BENCH_REV:-HEAD}"
SNAP="$REPO/target/bench-src"
if [ "$REV" = worktree ]; then
    SRC="$REPO"; REV_DESC="work tree at $(git rev-parse --short HEAD) + $(git status --porcelain -- src Cargo.toml Cargo.lock | wc -l) changed files"
else
    REV_SHA="$(git rev-parse --verify "$REV^{commit}")" || die "BENCH_REV=$REV is not a commit"
    if [ "$(cat "$SNAP/.bench-rev" 2>/dev/null)" != "$REV_SHA" ]; then
        # -m: fresh mtimes, so cargo rebuilds even if an older build of other sources is newer.
        rm -rf "$SNAP"; mkdir -p "$SNAP"
        git archive "$REV_SHA" | tar -x -m -C "$SNAP"
        echo "$REV_SHA" >"$SNAP/.bench-rev"
    fi
    SRC="$SNAP"; REV_DESC="$(git log -1 --format='%h %s' "$REV_SHA")"
fi
log "building ftpdrop ($REV_DESC) release, CARGO_TARGET_DIR=target/bench"
CARGO_TARGET_DIR="$REPO/target/bench" cargo build --release -q --manifest-path "$SRC/Cargo.toml"
[ -x "$BIN" ] || die "no $BIN"
# The server scripts come from the same snapshot; the unpacked server
# packages are shared with the interop tests.
SERVERS_SH="$SRC/scripts/interop/servers.sh"
export FTPDROP_INTEROP_PKGS="${FTPDROP_INTEROP_PKGS:-$REPO/target/interop-pkgs}"

# ---------------------------------------------------------- servers ---
log "starting servers in $SRV_DIR (pure-ftpd with the default argon2 hash)"
bash "$SERVERS_SH" install >/dev/null 2>&1 || bash "$SERVERS_SH" install
# Only the two servers benchmarked must be up (servers.sh status reports
# proftpd-implicit down while it serves, which is not this script's concern).
start_servers() {
    FTPDROP_PUREFTPD_CHEAP_HASH=0 bash "$SERVERS_SH" start "$1" >"$WORK/servers-start.log" 2>&1 \
        && [ "$(bash "$SERVERS_SH" status "$1" 2>/dev/null | grep -cE '^(vsftpd|pureftpd) +up ')" = 2 ]
}
mkdir -p "$WORK" "$DATA"
if ! start_servers "$SRV_DIR"; then
    cat "$WORK/servers-start.log" >&2
    SRV_DIR="$REPO/target/bench-servers-$$"
    log "could not start in the default dir; trying $SRV_DIR"
    start_servers "$SRV_DIR" || { cat "$WORK/servers-start.log" >&2; die "servers.sh start failed"; }
fi
cleanup() {
    [ -n "${DAEMON_PID:-}" ] && kill "$DAEMON_PID" 2>/dev/null || true
    bash "$SERVERS_SH" stop "$SRV_DIR" >/dev/null 2>&1 || true
}
trap cleanup EXIT
set -a; . "$SRV_DIR/servers.env"; set +a
# Prove the instances are ours (the pidfiles under SRV_DIR are alive and answer).
{ bash "$SERVERS_SH" status "$SRV_DIR" || true; } | grep -E '^(vsftpd|pureftpd) ' >&2

# -------------------------------------------------------- workloads ---
W1="$DATA/w1-${W1_FILES}x${W1_SIZE}"
if [ ! -f "$W1.done" ]; then
    log "generating W1: $W1_FILES x $W1_SIZE B in $W1_DIRS dirs"
    rm -rf "$W1"; $TOOL gen-files "$W1" "$W1_FILES" "$W1_DIRS" "$W1_SIZE"; touch "$W1.done"
fi
W1_BYTES=$((W1_FILES * W1_SIZE))

W2="$DATA/w2"
W2_FILE="$W2/big.bin"
if [ ! -f "$W2_FILE" ] || [ "$(stat -c %s "$W2_FILE")" != "$W2_BYTES" ]; then
    log "generating W2: $W2_BYTES bytes"
    rm -rf "$W2"; mkdir -p "$W2"
    head -c "$W2_BYTES" /dev/urandom >"$W2_FILE.tmp" && mv "$W2_FILE.tmp" "$W2_FILE"
fi

# Per-run logs are large (a line per uploaded file): they stay under target/.
LOGS="$WORK/logs"
rm -rf "$OUT" "$LOGS"; mkdir -p "$OUT/cmds" "$LOGS"
RAW="$OUT/raw.csv"
echo "section,workload,server,tool,run,wall_s,maxrss_kb,user_s,sys_s,rc,ok,load1" >"$RAW"

# ftpdrop needs one config and a fresh inbox per run.
ftpdrop_state() {  # ftpdrop_state DIR [CONNS] [keep] -> writes DIR/cfg.json, empty DIR/files DIR/checked
    # keep: DIR/ftpdrop-learned.json stays, as it does for a daemon in service.
    local d="$1" c="${2:-$CONNS}" learned=""
    [ "${3:-}" = keep ] && [ -f "$d/ftpdrop-learned.json" ] && learned="$(cat "$d/ftpdrop-learned.json")"
    rm -rf "$d"; mkdir -p "$d/files" "$d/checked"
    [ -n "$learned" ] && printf '%s\n' "$learned" >"$d/ftpdrop-learned.json"
    cat >"$d/cfg.json" <<EOF
{"inbox": "$d/files", "checked": "$d/checked",
 "max_connections": $c, "max_connections_per_server": $c,
 "max_concurrent_jobs": 1}
EOF
}

# Server prefix -> host/port/user/pass/root/log variables.
srv() {
    local p="FTPDROP_$1"
    local h="${p}_HOST" po="${p}_PORT" u="${p}_USER" pw="${p}_PASS" r="${p}_ROOT" l="${p}_LOG"
    H="${!h}"; P="${!po}"; U="${!u}"; PW="${!pw}"; ROOT="${!r}"; SLOG="${!l}"
    OBS="$(rclone obscure "$PW")"
}

clean_root() { find "$ROOT" -mindepth 1 -delete; sync; }

# Builds the command line of TOOL for WORKLOAD into the array CMD.
make_cmd() {
    local tool="$1" wl="$2" st="$WORK/state"
    case "$tool:$wl" in
        ftpdrop:*|ftpdrop\ c=*:*|ftpdrop-cold:*)
            # "ftpdrop" keeps what it learned about the server from earlier
            # runs, as a daemon in service does; "ftpdrop-cold" meets the
            # server for the first time (probes, a first login alone).
            local c="$CONNS" keep=keep
            [[ "$tool" == "ftpdrop c="* ]] && c="${tool#ftpdrop c=}"
            [ "$tool" = ftpdrop-cold ] && keep="" && st="$WORK/state-cold"
            ftpdrop_state "$st" "$c" $keep
            cp "$WORK/job-$wl-$SRV.json" "$st/files/job.json"
            touch -d '-1 min' "$st/files/job.json"  # settled: `once` claims it at once
            CMD=("$BIN" once --config "$st/cfg.json") ;;
        lftp\ -P*:W1)
            local n="${tool#lftp -P}"
            CMD=(lftp -u "$U,$PW" -p "$P" "$H" -e "set cmd:fail-exit yes; set ftp:ssl-allow no; set net:max-retries 2; mirror -R --parallel=$n --no-perms $W1 w1; quit") ;;
        lftp*:W2)
            CMD=(lftp -u "$U,$PW" -p "$P" "$H" -e "set cmd:fail-exit yes; set ftp:ssl-allow no; set net:max-retries 2; put $W2_FILE -o big.bin; quit") ;;
        rclone:W1)
            CMD=(rclone copy "$W1" ":ftp,host=$H,port=$P,user=$U,pass=$OBS:w1" --transfers "$CONNS" -q --config /dev/null) ;;
        rclone:W2)
            CMD=(rclone copyto "$W2_FILE" ":ftp,host=$H,port=$P,user=$U,pass=$OBS:big.bin" -q --config /dev/null) ;;
        curl:W1)
            CMD=(curl -sS --disable-epsv --user "$U:$PW" --ftp-create-dirs -K "$WORK/curl-W1-$SRV.cfg") ;;
        curl:W2)
            CMD=(curl -sS --disable-epsv --user "$U:$PW" -T "$W2_FILE" "ftp://$H:$P/big.bin") ;;
        *) die "no command for $tool:$wl" ;;
    esac
}

# run_case SECTION WORKLOAD TOOL RUN: one timed run against a clean server dir.
run_case() {
    local section="$1" wl="$2" tool="$3" run="$4"
    local tag="$section-$wl-$SRVNAME-${tool// /_}-$run"
    clean_root
    make_cmd "$tool" "$wl"
    local tf="$LOGS/$tag.time" lf="$LOGS/$tag.log" off0=0 off1 rc=0
    [ -f "$SLOG/vsftpd.log" ] && off0="$(stat -c %s "$SLOG/vsftpd.log")"
    /usr/bin/time -f "%e %M %U %S" -o "$tf" -- "${CMD[@]}" >"$lf" 2>&1 || rc=$?
    local wall rss us ss ok=1
    read -r wall rss us ss < <(tail -n1 "$tf")
    if [ "$wl" = W1 ]; then
        $TOOL tree-check "$ROOT/w1" "$W1_FILES" "$W1_BYTES" 2>>"$lf" || ok=0
    else
        $TOOL tree-check "$ROOT" 1 "$W2_BYTES" 2>>"$lf" || ok=0
    fi
    [ "$rc" = 0 ] || ok=0
    if [ "$run" = 1 ] && [ -f "$SLOG/vsftpd.log" ]; then
        off1="$(stat -c %s "$SLOG/vsftpd.log")"
        $TOOL cmdcount "$SLOG/vsftpd.log" "$off0" "$off1" \
            "$OUT/cmds/$section-$wl-$SRVNAME-${tool// /_}.json"
    fi
    local load; load="$(cut -d' ' -f1 /proc/loadavg)"
    echo "$section,$wl,$SRVNAME,$tool,$run,$wall,$rss,$us,$ss,$rc,$ok,$load" >>"$RAW"
    log "$section $wl $SRVNAME $(printf '%-9s' "$tool") run $run: ${wall}s ${rss}KiB rc=$rc ok=$ok load=$load"
    [ "$ok" = 1 ] || { log "  (see $lf)"; tail -n 5 "$lf" >&2; }
}

# alternate SECTION WORKLOAD RUNS TOOL...: tools interleaved, starting tool rotated each run.
alternate() {
    local section="$1" wl="$2" runs="$3"; shift 3
    local tools=("$@") n="$#" r i
    for r in $(seq 1 "$runs"); do
        for i in $(seq 0 $((n - 1))); do
            run_case "$section" "$wl" "${tools[$(((i + r - 1) % n))]}" "$r"
        done
    done
}

# One unmeasured ftpdrop W1 run against the current server: what a daemon in
# service knows of a server it met before (see make_cmd).
prime() {
    clean_root
    make_cmd ftpdrop W1
    "${CMD[@]}" >"$LOGS/prime-$SRVNAME.log" 2>&1 || log "priming run failed (see $LOGS/prime-$SRVNAME.log)"
    clean_root
}

prepare_server() {  # prepare_server ENVPREFIX NAME
    SRV="$1"; SRVNAME="$2"; srv "$1"
    $TOOL job "$WORK/job-W1-$SRV.json" "$W1" w1 "$H" "$P" "$U" "$PW"
    $TOOL job "$WORK/job-W2-$SRV.json" "$W2" "" "$H" "$P" "$U" "$PW"
    $TOOL curlcfg "$WORK/curl-W1-$SRV.cfg" "$W1" w1 "$H" "$P"
}

export REV_DESC
python3 - "$OUT/meta.json" <<EOF
import json, sys, subprocess, os
def v(cmd):
    try: return subprocess.run(cmd, shell=True, capture_output=True, text=True).stdout.splitlines()[0]
    except Exception: return "?"
json.dump({
  "date": subprocess.run(["date", "-u", "+%FT%TZ"], capture_output=True, text=True).stdout.strip(),
  "command": "${BENCH_CMDLINE:-bash bench/compare.sh} (BENCH_QUICK=$QUICK)",
  "built": os.environ["REV_DESC"],
  "ftpdrop": "$BIN", "quick": "$QUICK", "runs": "$RUNS main, $PURE_RUNS pure-ftpd",
  "w1": "$W1_FILES files x $W1_SIZE B in $W1_DIRS dirs", "w1_files": $W1_FILES,
  "w2_bytes": $W2_BYTES, "entries_10k": $N10K,
  "host": f"{os.cpu_count()} cpus, " + v("grep -m1 'model name' /proc/cpuinfo | cut -d: -f2").strip(),
  "versions": "; ".join([v("lftp --version | head -1"), v("rclone version | head -1"),
                         v("curl --version | head -1 | cut -d' ' -f1-2"),
                         "vsftpd " + v("dpkg-query -W -f='\${Version}' vsftpd"),
                         v("cat target/interop-pkgs/pure-ftpd/.ftpdrop-installed")]),
  "load_before": open("/proc/loadavg").read().strip(),
}, open(sys.argv[1], "w"))
EOF

# ------------------------------------------------------------- main ---
if has main; then
    prepare_server VSFTPD vsftpd
    prime
    log "main: W1 ($W1_FILES x $W1_SIZE B) on vsftpd, $RUNS runs each"
    alternate main W1 "$RUNS" ftpdrop "lftp -P$CONNS" rclone curl ftpdrop-cold
    log "main: W2 ($W2_BYTES B) on vsftpd, $RUNS runs each"
    alternate main W2 "$RUNS" ftpdrop "lftp put" rclone curl
fi

# --------------------------------------------------------- pureftpd ---
if has pureftpd; then
    prepare_server PUREFTPD pureftpd
    log "pureftpd: W1 with the argon2 login hash, $PURE_RUNS runs each"
    # "ftpdrop c=1": the same binary with max_connections 1, i.e. what a pool
    # that does not open logins in parallel could reach at best.
    prime
    alternate pureftpd W1 "$PURE_RUNS" ftpdrop "lftp -P1" "lftp -P$CONNS" "ftpdrop c=1"
fi

# ---------------------------------------------------------- latency ---
if has latency; then
    prepare_server VSFTPD vsftpd
    clean_root
    mkdir -p "$ROOT/lat"; chown "$(stat -c %U "$ROOT")": "$ROOT/lat"
    st="$WORK/latency"; ftpdrop_state "$st"; mkdir -p "$st/staging" "$st/src"
    log "latency: ftpdrop run, $LAT_JOBS warm jobs + 1 cold"
    "$BIN" run --config "$st/cfg.json" --log-format json --log-level debug \
        2>"$LOGS/latency-daemon.log" >/dev/null &
    DAEMON_PID=$!
    for _ in $(seq 1 100); do
        grep -q 'watching for job files' "$LOGS/latency-daemon.log" 2>/dev/null && break
        sleep 0.05
    done
    $TOOL latency "$st/staging" "$st/files" "$ROOT/lat" "$st/src" "$LOGS/latency-daemon.log" \
        "$OUT/latency.json" "$LAT_JOBS" "$H" "$P" "$U" "$PW"
    kill -TERM "$DAEMON_PID"; wait "$DAEMON_PID" || true; DAEMON_PID=
fi

# ----------------------------------------------------------- rss10k ---
if has rss10k; then
    prepare_server VSFTPD vsftpd
    W10K="$DATA/w10k-$N10K"
    if [ ! -f "$W10K.done" ]; then
        log "generating $N10K tiny files"
        rm -rf "$W10K"; $TOOL gen-files "$W10K" "$N10K" 100 64; touch "$W10K.done"
    fi
    $TOOL job "$WORK/job-10k.json" "$W10K" w10k "$H" "$P" "$U" "$PW"
    log "rss10k: one job of $N10K entries ($(stat -c %s "$WORK/job-10k.json") B job file), $RUNS_10K runs"
    for run in $(seq 1 "$RUNS_10K"); do
        clean_root
        ftpdrop_state "$WORK/state"
        cp "$WORK/job-10k.json" "$WORK/state/files/job.json"; touch -d '-1 min' "$WORK/state/files/job.json"
        rc=0
        /usr/bin/time -f "%e %M %U %S" -o "$LOGS/rss10k-$run.time" -- \
            "$BIN" once --config "$WORK/state/cfg.json" >"$LOGS/rss10k-$run.log" 2>&1 || rc=$?
        read -r wall rss us ss < <(tail -n1 "$LOGS/rss10k-$run.time")
        ok=1; $TOOL tree-check "$ROOT/w10k" "$N10K" $((N10K * 64)) 2>>"$LOGS/rss10k-$run.log" || ok=0
        [ "$rc" = 0 ] || ok=0
        echo "rss10k,${N10K}x64B,vsftpd,ftpdrop,$run,$wall,$rss,$us,$ss,$rc,$ok,$(cut -d' ' -f1 /proc/loadavg)" >>"$RAW"
        log "rss10k run $run: ${wall}s ${rss}KiB rc=$rc ok=$ok"
    done
fi

# ----------------------------------------------------------- rssbig ---
# One job file as large as an operator may send (~16 MiB): its peak cost
# must be a small multiple of its size (issue 19).
if has rssbig; then
    prepare_server VSFTPD vsftpd
    WBIG="$DATA/wbig-$NBIG"
    if [ ! -f "$WBIG.done" ]; then
        log "generating $NBIG tiny files"
        rm -rf "$WBIG"; $TOOL gen-files "$WBIG" "$NBIG" 100 8; touch "$WBIG.done"
    fi
    $TOOL job "$WORK/job-big.json" "$WBIG" wbig "$H" "$P" "$U" "$PW"
    big_bytes=$(stat -c %s "$WORK/job-big.json")
    echo "{\"entries\": $NBIG, \"job_bytes\": $big_bytes}" >"$OUT/rssbig.json"
    log "rssbig: one job of $NBIG entries ($big_bytes B job file)"
    clean_root
    ftpdrop_state "$WORK/state"
    # The default cap is 16 MiB; the run measures a job at about that size.
    python3 - "$WORK/state/cfg.json" "$big_bytes" <<'PY'
import json, sys
c = json.load(open(sys.argv[1])); c["max_job_bytes"] = max(int(sys.argv[2]), 16 << 20) + 4096
json.dump(c, open(sys.argv[1], "w"))
PY
    cp "$WORK/job-big.json" "$WORK/state/files/job.json"; touch -d '-1 min' "$WORK/state/files/job.json"
    rc=0
    /usr/bin/time -f "%e %M %U %S" -o "$LOGS/rssbig.time" -- \
        "$BIN" once --config "$WORK/state/cfg.json" >"$LOGS/rssbig.log" 2>&1 || rc=$?
    read -r wall rss us ss < <(tail -n1 "$LOGS/rssbig.time")
    ok=1; $TOOL tree-check "$ROOT/wbig" "$NBIG" $((NBIG * 8)) 2>>"$LOGS/rssbig.log" || ok=0
    [ "$rc" = 0 ] || ok=0
    echo "rssbig,${NBIG}x8B,vsftpd,ftpdrop,1,$wall,$rss,$us,$ss,$rc,$ok,$(cut -d' ' -f1 /proc/loadavg)" >>"$RAW"
    log "rssbig: ${wall}s ${rss}KiB for a ${big_bytes} B job, rc=$rc ok=$ok"
fi

# ---------------------------------------------------------- profile ---
# Where ftpdrop's time goes: syscall counts and CPU profile of one W1 and one
# W2 run (not timed for the table; strace/perf slow the process down).
if has profile; then
    prepare_server VSFTPD vsftpd
    P_OUT="$OUT/profile"; mkdir -p "$P_OUT"
    for wl in W1 W2; do
        clean_root; make_cmd ftpdrop "$wl"
        timeout 120 strace -f -c -o "$P_OUT/strace-ftpdrop-$wl.txt" "${CMD[@]}" >/dev/null 2>&1 || true
        # (curl is left out of W1 here: under strace its transfers stall for
        # 1 s each, seconds become minutes.)
        for tool in "lftp -P$CONNS" curl; do
            [ "$wl" = W2 ] && [ "$tool" != curl ] && continue
            [ "$wl" = W1 ] && [ "$tool" = curl ] && continue
            clean_root; make_cmd "$tool" "$wl"
            timeout 120 strace -f -c -o "$P_OUT/strace-${tool%% *}-$wl.txt" "${CMD[@]}" >/dev/null 2>&1 || true
        done
        if [ "$PERF_OK" = 1 ]; then
            clean_root; make_cmd ftpdrop "$wl"
            timeout 120 perf stat -o "$P_OUT/perfstat-ftpdrop-$wl.txt" -e task-clock,context-switches,cpu-migrations,page-faults \
                -- "${CMD[@]}" >/dev/null 2>&1 || true
            clean_root; make_cmd ftpdrop "$wl"
            timeout 120 perf record -q -F 999 -g -o "$P_OUT/perf-ftpdrop-$wl.data" -- "${CMD[@]}" >/dev/null 2>&1 || true
            perf report -q -i "$P_OUT/perf-ftpdrop-$wl.data" --no-children --sort dso,symbol --stdio -g none \
                2>/dev/null | head -n 40 >"$P_OUT/perf-ftpdrop-$wl.txt" || true
            rm -f "$P_OUT/perf-ftpdrop-$wl.data"
            clean_root; make_cmd curl "$wl"
            timeout 120 perf stat -o "$P_OUT/perfstat-curl-$wl.txt" -e task-clock,context-switches,cpu-migrations,page-faults \
                -- "${CMD[@]}" >/dev/null 2>&1 || true
        fi
    done
    clean_root
fi

python3 - "$OUT/meta.json" <<'EOF'
import json, sys
m = json.load(open(sys.argv[1])); m["load_after"] = open("/proc/loadavg").read().strip()
json.dump(m, open(sys.argv[1], "w"))
EOF
$TOOL report "$OUT" "$RES_DIR/latest.md" >/dev/null
log "wrote $RES_DIR/latest.md"
cat "$RES_DIR/latest.md"
