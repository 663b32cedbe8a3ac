#!/usr/bin/env bash
# ftpdrop vs lftp, rclone and curl across an emulated WAN link (issue 14).
#
#   bash bench/wan.sh                       # 10, 40 and 100 ms; about 25 min here
#   BENCH_RTTS=40 BENCH_RUNS=3 bash bench/wan.sh
#
# This kernel has no `tc netem`: bench/wan_proxy.py, an FTP-aware user-space
# delay link, sits between every tool and vsftpd (control and data
# connections, handshakes included). The tools take turns, the starting one
# rotated each round, against the same server in the same run.
# Writes bench/results/wan/{raw.csv,summary.md,cmds.json,wan-rtt.svg}.
#
# Knobs: those of bench/wan.py (BENCH_RTTS, BENCH_RUNS, BENCH_WORKLOADS,
# BENCH_TOOLS, BENCH_CONNS, BENCH_TLS_RTT), plus BENCH_REV=HEAD (a commit,
# built from a clean snapshot, or "worktree") and
# BENCH_SERVERS_DIR=target/bench-servers. Must run as root (servers.sh).
set -euo pipefail

SCRIPT_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO="$(cd "$SCRIPT_DIR/.." && pwd)"
cd "$REPO"
log() { printf '[wan %(%H:%M:%S)T] %s\n' -1 "$*" >&2; }
die() { printf '[wan] ERROR: %s\n' "$*" >&2; exit 1; }
[ "$(id -u)" = 0 ] || die "must run as root (servers.sh needs it)"

need=()
command -v lftp >/dev/null || need+=(lftp)
command -v rclone >/dev/null || need+=(rclone)
command -v curl >/dev/null || need+=(curl)
if [ "${#need[@]}" -gt 0 ]; then
    log "apt-get install ${need[*]}"
    apt-get update -qq >/dev/null
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${need[@]}" \
        >/dev/null || die "apt-get install ${need[*]} failed"
fi

REV="${BENCH_REV:-HEAD}"
if [ "$REV" = worktree ]; then
    SRC="$REPO"
else
    SHA="$(git rev-parse --verify "$REV^{commit}")" || die "BENCH_REV=$REV is not a commit"
    SRC="$REPO/target/bench-src"
    if [ "$(cat "$SRC/.bench-rev" 2>/dev/null)" != "$SHA" ]; then
        rm -rf "$SRC"; mkdir -p "$SRC"
        git archive "$SHA" | tar -x -m -C "$SRC"
        echo "$SHA" >"$SRC/.bench-rev"
    fi
fi
log "building ftpdrop ($REV) release, CARGO_TARGET_DIR=target/bench"
CARGO_TARGET_DIR="$REPO/target/bench" cargo build --release -q --manifest-path "$SRC/Cargo.toml"
BIN="$REPO/target/bench/release/ftpdrop"

SRV_DIR="${BENCH_SERVERS_DIR:-$REPO/target/bench-servers}"
export FTPDROP_INTEROP_PKGS="${FTPDROP_INTEROP_PKGS:-$REPO/target/interop-pkgs}"
bash "$SRC/scripts/interop/servers.sh" install >/dev/null 2>&1 || bash "$SRC/scripts/interop/servers.sh" install
FTPDROP_PUREFTPD_CHEAP_HASH=0 bash "$SRC/scripts/interop/servers.sh" start "$SRV_DIR" >"$REPO/target/wan-servers.log" 2>&1 \
    || { cat "$REPO/target/wan-servers.log" >&2; die "servers.sh start failed"; }
trap 'bash "$SRC/scripts/interop/servers.sh" stop "$SRV_DIR" >/dev/null 2>&1 || true' EXIT

OUT="$SCRIPT_DIR/results/wan"
python3 "$SCRIPT_DIR/wan.py" "$SRV_DIR/servers.env" "$BIN" "$OUT"
# The picture goes beside BENCHMARKS.md too.
[ -f "$OUT/wan-rtt.svg" ] && cp "$OUT/wan-rtt.svg" "$REPO/wan-rtt.svg"
log "wrote $OUT/summary.md and $OUT/wan-rtt.svg (copied to wan-rtt.svg)"
