#!/usr/bin/env bash
# The broken-link soak (issue 26): ftpdrop with its defaults (short
# timeouts and backoff aside) sends SOAK_JOBS jobs (200) of 1-3 files, 4 KiB
# to 16 MiB, to vsftpd (upload lock on) through the tests' fault proxy,
# which resets 10 % of connections and silences 5 % (nothing passes, nothing
# closes, for 30 s), control and data alike.
#
#   bash bench/soak.sh              # about 10 minutes here
#   SOAK_JOBS=50 bash bench/soak.sh
#
# Checks that every job ends done, byte for byte, with no temp file left,
# no 421 from the server, and at most twice the per-server limit of
# sessions at the server; writes the curve of the server's sessions (held
# for this client, given-up ones included) and of the daemon's open files
# to bench/results/soak/curve.csv, and the summary to summary.md.
set -euo pipefail
SCRIPT_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO="$(cd "$SCRIPT_DIR/.." && pwd)"
cd "$REPO"
[ "$(id -u)" = 0 ] || { echo "[soak] must run as root (servers.sh needs it)" >&2; exit 1; }
out="bench/results/soak"
mkdir -p "$out"
servers="${SOAK_SERVERS_DIR:-target/soak-servers}"
bash scripts/interop/servers.sh install >&2
bash scripts/interop/servers.sh start "$servers" >&2
trap 'bash scripts/interop/servers.sh stop "$servers" >&2 || true' EXIT
set -a; . "$servers/servers.env"; set +a
export FTPDROP_INTEROP_REQUIRED=1 FTPDROP_INTEROP_ENV="$REPO/$servers/servers.env"
export SOAK_CURVE="$REPO/$out/curve.csv" SOAK_JOBS="${SOAK_JOBS:-200}"
started=$(date +%s)
cargo test --release --test interop soak_broken_link -- --ignored --nocapture 2>&1 | tee "$out/run.log" | grep -E '^soak:|panicked|FAILED' >&2
python3 - "$out" "$(git rev-parse --short HEAD)" "$started" <<'PY'
import csv, sys, time
out, rev, started = sys.argv[1], sys.argv[2], int(sys.argv[3])
rows = list(csv.DictReader(open(f"{out}/curve.csv")))
sessions = [int(r["server_sessions"]) for r in rows]
files = [int(r["open_files"]) for r in rows]
summary = next((l for l in open(f"{out}/run.log") if l.startswith("soak: ")), "soak: FAILED\n")
hist = {}
for s in sessions:
    hist[s] = hist.get(s, 0) + 1
with open(f"{out}/summary.md", "w") as f:
    f.write(f"# Broken-link soak, {rev}, {time.strftime('%Y-%m-%d %H:%M', time.gmtime(started))} UTC\n\n")
    f.write(summary[len("soak: "):] + "\n")
    f.write(f"- server sessions held for ftpdrop: max {max(sessions)}, samples every 100 ms: {len(rows)}\n")
    f.write("- time at each count: " + ", ".join(f"{k}: {v/10:.1f} s" for k, v in sorted(hist.items())) + "\n")
    f.write(f"- daemon open files: first {files[0]}, max {max(files)}, last {files[-1]}\n")
print(open(f"{out}/summary.md").read())
PY
