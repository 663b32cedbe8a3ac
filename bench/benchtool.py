#!/usr/bin/env python3
"""Helpers for bench/compare.sh (stdlib only).

  benchtool.py gen-files DIR NFILES NDIRS SIZE      tree DIR/dNN/fNNNNN of random files
  benchtool.py job OUT LOCALDIR REMOTE HOST PORT USER PASS
                                                    ftpdrop job: every file under LOCALDIR,
                                                    server_path REMOTE/<its subdir>
  benchtool.py curlcfg OUT LOCALDIR REMOTE HOST PORT    curl -K file: url/upload-file pairs
  benchtool.py tree-check DIR NFILES BYTES          exit 1 unless DIR holds exactly that
  benchtool.py cmdcount LOG START END OUT.json      FTP commands in a vsftpd log slice
  benchtool.py latency ...                          intake latency (see cmd_latency)
  benchtool.py report RESULTS_DIR OUT.md            medians, ratios, targets
"""
import ctypes
import json
import os
import re
import select
import statistics
import struct
import sys
import time
from collections import Counter, defaultdict


# ------------------------------------------------------------------ files ---

def cmd_gen_files(d, nfiles, ndirs, size):
    nfiles, ndirs, size = int(nfiles), int(ndirs), int(size)
    os.makedirs(d, exist_ok=True)
    per = (nfiles + ndirs - 1) // ndirs
    n = 0
    for di in range(ndirs):
        sub = os.path.join(d, f"d{di:02d}")
        os.makedirs(sub, exist_ok=True)
        for fi in range(per):
            if n == nfiles:
                break
            with open(os.path.join(sub, f"f{n:05d}"), "wb") as f:
                f.write(os.urandom(size))
            n += 1


def walk_files(localdir):
    out = []
    for root, dirs, files in os.walk(localdir):
        dirs.sort()
        for name in sorted(files):
            full = os.path.join(root, name)
            rel = os.path.relpath(root, localdir)
            out.append((full, "" if rel == "." else rel))
    return out


def remote_dir(remote, rel):
    parts = [p for p in (remote.strip("/"), rel) if p]
    return "/".join(parts) if parts else "/"


def cmd_job(out, localdir, remote, host, port, user, password):
    server = {"host": host, "port": int(port), "login": user, "password": password}
    entries = [
        {"server": server,
         "file": {"local_path": os.path.abspath(full), "server_path": remote_dir(remote, rel)}}
        for full, rel in walk_files(localdir)
    ]
    with open(out, "w") as f:
        json.dump(entries, f)


def cmd_curlcfg(out, localdir, remote, host, port):
    with open(out, "w") as f:
        for full, rel in walk_files(localdir):
            rdir = remote_dir(remote, rel)
            rdir = "" if rdir == "/" else rdir + "/"
            name = os.path.basename(full)
            f.write(f'url = "ftp://{host}:{port}/{rdir}{name}"\n')
            f.write(f'upload-file = "{os.path.abspath(full)}"\n')


def cmd_tree_check(d, nfiles, nbytes):
    n = b = 0
    stray = []
    for root, _, files in os.walk(d):
        for name in files:
            n += 1
            b += os.path.getsize(os.path.join(root, name))
            if name.startswith("."):
                stray.append(name)
    ok = n == int(nfiles) and b == int(nbytes) and not stray
    if not ok:
        print(f"tree-check {d}: {n} files, {b} bytes, {len(stray)} hidden/temp "
              f"(want {nfiles} files, {nbytes} bytes)", file=sys.stderr)
    sys.exit(0 if ok else 1)


# vsftpd with log_ftp_protocol=YES:
# Sat Nov 21 05:36:20 2026 [pid 15503] [user] FTP command: Client "127.0.0.1", "STOR x"
CMD_RE = re.compile(r'\[pid (\d+)\].*FTP command: Client "[^"]*", "([A-Za-z]+)')


def cmd_cmdcount(log, start, end, out):
    with open(log, "rb") as f:
        f.seek(int(start))
        data = f.read(int(end) - int(start)).decode("utf-8", "replace")
    verbs = Counter()
    pids = set()
    for line in data.splitlines():
        m = CMD_RE.search(line)
        if m:
            pids.add(m.group(1))
            verbs[m.group(2).upper()] += 1
    with open(out, "w") as f:
        json.dump({"commands": dict(verbs), "total": sum(verbs.values()),
                   "sessions": len(pids)}, f)


# ---------------------------------------------------------------- latency ---

IN_MODIFY, IN_MOVED_TO, IN_CREATE = 0x2, 0x80, 0x100
EV = struct.Struct("iIII")


class Inotify:
    def __init__(self, path):
        self.libc = ctypes.CDLL("libc.so.6", use_errno=True)
        self.fd = self.libc.inotify_init1(os.O_NONBLOCK | os.O_CLOEXEC)
        if self.fd < 0:
            raise OSError(ctypes.get_errno(), "inotify_init1")
        wd = self.libc.inotify_add_watch(self.fd, path.encode(),
                                         IN_MODIFY | IN_MOVED_TO | IN_CREATE)
        if wd < 0:
            raise OSError(ctypes.get_errno(), f"inotify_add_watch {path}")

    def events(self, timeout):
        """[(t_ns, mask, name)], the time taken as soon as read() returns."""
        r, _, _ = select.select([self.fd], [], [], timeout)
        if not r:
            return []
        try:
            data = os.read(self.fd, 1 << 16)
        except BlockingIOError:
            return []
        t = time.time_ns()
        out, off = [], 0
        while off < len(data):
            _, mask, _, ln = EV.unpack_from(data, off)
            name = data[off + EV.size: off + EV.size + ln].rstrip(b"\0").decode()
            out.append((t, mask, name))
            off += EV.size + ln
        return out


def parse_ts(s):
    """RFC 3339 UTC with up to 9 fractional digits -> ns since the epoch."""
    m = re.match(r"(\d{4})-(\d\d)-(\d\d)T(\d\d):(\d\d):(\d\d)(?:\.(\d+))?Z", s)
    if not m:
        return None
    import calendar
    y, mo, d, h, mi, se = (int(x) for x in m.groups()[:6])
    frac = (m.group(7) or "0")[:9].ljust(9, "0")
    return calendar.timegm((y, mo, d, h, mi, se)) * 10**9 + int(frac)


def cmd_latency(staging, inbox, watch_dir, src_dir, daemon_log, out, njobs,
                host, port, user, password):
    """Renames job files into the inbox of a running `ftpdrop run` one at a time.

    t_rename: time.time_ns() just before rename(2) into the inbox.
    t_create: inotify IN_CREATE of the temp file in the server's directory
              (the server has accepted STOR and opened the file).
    t_first:  first IN_MODIFY of that file: the first data byte written by the server.
    t_done:   IN_MOVED_TO of the final name (RNTO: the entry is published).
    t_claim:  timestamp of the daemon's JSON "claimed job" log line.
    Job 0 is cold (no logged-in session yet); jobs 1..N are warm.
    """
    njobs = int(njobs)
    server = {"host": host, "port": int(port), "login": user, "password": password}
    ino = Inotify(watch_dir)
    jobs = []
    for i in range(njobs + 1):
        name = f"lat-{os.getpid()}-{i:03d}"
        src = os.path.join(src_dir, f"f{i:05d}")
        with open(src, "wb") as f:
            f.write(os.urandom(4096))
        entry = [{"server": server,
                  "file": {"local_path": os.path.abspath(src), "server_path": "lat",
                           "remote_name": f"{name}.bin"}}]
        tmp = os.path.join(staging, f"{name}.json")
        with open(tmp, "w") as f:
            json.dump(entry, f)
            f.flush()
            os.fsync(f.fileno())
        while ino.events(0):  # drain anything stale
            pass
        rec = {"job": name, "cold": i == 0}
        rec["t_rename"] = time.time_ns()
        os.rename(tmp, os.path.join(inbox, f"{name}.json"))
        deadline = time.monotonic() + 60
        while "t_done" not in rec and time.monotonic() < deadline:
            for t, mask, fname in ino.events(1.0):
                if fname.startswith(".ftpdrop-"):
                    if mask & IN_CREATE and "t_create" not in rec:
                        rec["t_create"] = t
                    if mask & IN_MODIFY and "t_first" not in rec:
                        rec["t_first"] = t
                elif fname == f"{name}.bin" and mask & IN_MOVED_TO:
                    rec["t_done"] = t
        jobs.append(rec)
        time.sleep(0.3)
    time.sleep(0.5)
    claims = {}
    with open(daemon_log) as f:
        for line in f:
            try:
                ev = json.loads(line)
            except ValueError:
                continue
            if ev.get("message") == "claimed job":
                jf = os.path.basename(str(ev.get("job_file", "")))
                claims[jf[:-5] if jf.endswith(".json") else jf] = parse_ts(ev.get("timestamp", ""))
    for rec in jobs:
        if claims.get(rec["job"]):
            rec["t_claim"] = claims[rec["job"]]
        for k in ("t_claim", "t_create", "t_first", "t_done"):
            if k in rec:
                rec[k.replace("t_", "ms_")] = (rec[k] - rec["t_rename"]) / 1e6
    with open(out, "w") as f:
        json.dump(jobs, f, indent=1)
    warm = [r for r in jobs if not r["cold"]]
    got = [r["ms_first"] for r in warm if "ms_first" in r]
    print(f"latency: {len(got)}/{len(warm)} warm jobs measured; median rename->first byte "
          f"{statistics.median(got):.1f} ms" if got else "latency: no measurement", file=sys.stderr)


# ----------------------------------------------------------------- report ---

PEERS = ("lftp", "rclone", "curl")


def is_peer(tool):
    return tool.split()[0] in PEERS


def load_raw(path):
    rows = []
    with open(path) as f:
        header = f.readline().strip().split(",")
        for line in f:
            rows.append(dict(zip(header, line.rstrip("\n").split(","))))
    return rows


def fmt(x, nd=2):
    return "–" if x is None else f"{x:.{nd}f}"


def cmd_report(results_dir, out):
    rows = load_raw(os.path.join(results_dir, "raw.csv"))
    meta = {}
    mp = os.path.join(results_dir, "meta.json")
    if os.path.exists(mp):
        meta = json.load(open(mp))
    groups = defaultdict(lambda: defaultdict(list))
    order = []
    for r in rows:
        key = (r["section"], r["workload"], r["server"])
        if key not in groups:
            order.append(key)
        groups[key][r["tool"]].append(r)

    lines = []
    w = lines.append
    w("# ftpdrop benchmark results")
    w("")
    for k in ("date", "command", "built", "ftpdrop", "host", "quick", "runs",
              "w1", "w2_bytes", "versions", "load_before", "load_after"):
        if k in meta:
            w(f"- {k}: `{meta[k]}`")
    w("")
    w("Wall time is `/usr/bin/time` %e (seconds, 10 ms resolution), median over the runs that "
      "uploaded everything correctly (n ok / n); RSS is the median peak RSS (%M). "
      "`ratio` = tool median / best peer median (lftp, rclone, curl; < 1 is faster than the best peer). "
      "CPU = median user+sys seconds of the client process. load1 = median 1-minute load average "
      "after the runs (the machine has 2 cores and is shared).")
    w("")
    med = {}
    for key in order:
        section, workload, server = key
        tools = groups[key]
        stats = {}
        for tool, rs in tools.items():
            good = [r for r in rs if r["ok"] == "1"]
            walls = [float(r["wall_s"]) for r in good]
            rss = [int(r["maxrss_kb"]) for r in good]
            cpu = [float(r["user_s"]) + float(r["sys_s"]) for r in good]
            stats[tool] = {
                "n": len(rs), "ok": len(good),
                "med": statistics.median(walls) if walls else None,
                "min": min(walls) if walls else None,
                "max": max(walls) if walls else None,
                "rss": statistics.median(rss) / 1024 if rss else None,
                "rss_max": max(rss) / 1024 if rss else None,
                "cpu": statistics.median(cpu) if cpu else None,
                "load": statistics.median(float(r["load1"]) for r in rs),
            }
            med[(section, workload, server, tool)] = stats[tool]
        peers = [s["med"] for t, s in stats.items() if is_peer(t) and s["med"] is not None]
        best = min(peers) if peers else None
        w(f"## {section}: {workload} on {server}")
        w("")
        w("| tool | median s | min–max s | ratio to best peer | peak RSS MiB (median / max) | CPU s | ok | load1 |")
        w("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
        for tool in tools:
            s = stats[tool]
            ratio = s["med"] / best if (best and s["med"] is not None) else None
            w(f"| {tool} | {fmt(s['med'])} | {fmt(s['min'])}–{fmt(s['max'])} | {fmt(ratio)} | "
              f"{fmt(s['rss'], 1)} / {fmt(s['rss_max'], 1)} | {fmt(s['cpu'])} | {s['ok']}/{s['n']} | {s['load']:.1f} |")
        w("")
        counts = []
        for tool in tools:
            p = os.path.join(results_dir, "cmds", f"{section}-{workload}-{server}-{tool.replace(' ', '_')}.json")
            if os.path.exists(p):
                c = json.load(open(p))
                counts.append((tool, c))
        if counts:
            w("FTP commands the server received in the first run (vsftpd protocol log):")
            w("")
            w("| tool | logins | commands | per file | breakdown |")
            w("| --- | ---: | ---: | ---: | --- |")
            nfiles = int(meta.get("w1_files", 1000)) if workload.startswith("W1") else 1
            for tool, c in counts:
                bd = ", ".join(f"{k} {v}" for k, v in sorted(c["commands"].items(), key=lambda kv: -kv[1]))
                w(f"| {tool} | {c['commands'].get('USER', 0)} | {c['total']} | {c['total'] / nfiles:.1f} | {bd} |")
            w("")

    lat = None
    lp = os.path.join(results_dir, "latency.json")
    if os.path.exists(lp):
        lat = json.load(open(lp))
        warm = [r for r in lat if not r["cold"]]
        cold = [r for r in lat if r["cold"]]
        w("## Intake latency (`ftpdrop run`, vsftpd, one 4 KiB entry per job)")
        w("")
        w("Milliseconds after rename(2) into the inbox; warm = a logged-in session is idle in the pool.")
        w("")
        w("| milestone | warm median | warm min–max | cold (job 0) |")
        w("| --- | ---: | ---: | ---: |")
        for k, label in (("ms_claim", "claimed (daemon log)"), ("ms_create", "server opened file (STOR accepted)"),
                         ("ms_first", "first data byte on the server"), ("ms_done", "published (RNTO)")):
            vals = [r[k] for r in warm if k in r]
            c = [r[k] for r in cold if k in r]
            w(f"| {label} | {fmt(statistics.median(vals) if vals else None, 1)} | "
              f"{fmt(min(vals) if vals else None, 1)}–{fmt(max(vals) if vals else None, 1)} | "
              f"{fmt(c[0] if c else None, 1)} |")
        w(f"\n{len([r for r in warm if 'ms_first' in r])}/{len(warm)} warm jobs measured.\n")

    # Targets from the issue.
    def g(section, workload, server, tool):
        s = med.get((section, workload, server, tool))
        return s if s and s["med"] is not None else None

    w("## Targets")
    w("")
    w("| target | measured | met? |")
    w("| --- | --- | --- |")
    ft = g("main", "W1", "vsftpd", "ftpdrop")
    lf = g("main", "W1", "vsftpd", "lftp -P8")
    if ft and lf:
        sp = lf["med"] / ft["med"]
        w(f"| W1 small files ≥ 1.5× faster than lftp -P8 (8 connections) | ftpdrop {fmt(ft['med'])} s vs "
          f"lftp {fmt(lf['med'])} s: {sp:.2f}× | {'yes' if sp >= 1.5 else 'NO'} |")
    f2 = g("main", "W2", "vsftpd", "ftpdrop")
    c2 = g("main", "W2", "vsftpd", "curl")
    if f2 and c2:
        r = f2["med"] / c2["med"]
        w(f"| W2 within 1.05× of curl | ftpdrop {fmt(f2['med'])} s vs curl {fmt(c2['med'])} s: "
          f"{r:.3f}× | {'yes' if r <= 1.05 else 'NO'} |")
    if f2:
        w(f"| peak RSS ≤ 32 MiB for W2 ({meta.get('w2_bytes', '?')} bytes) | "
          f"{fmt(f2['rss'], 1)} MiB median, {fmt(f2['rss_max'], 1)} MiB max | "
          f"{'yes' if f2['rss_max'] <= 32 else 'NO'} |")
    k = [s for (sec, _, _, t), s in med.items() if sec == "rss10k" and t == "ftpdrop" and s["med"] is not None]
    if k:
        s = k[0]
        w(f"| peak RSS ≤ 64 MiB for one job of {meta.get('entries_10k', 10000)} entries | "
          f"{fmt(s['rss_max'], 1)} MiB ({fmt(s['med'])} s) | {'yes' if s['rss_max'] <= 64 else 'NO'} |")
    b = [s for (sec, _, _, t), s in med.items() if sec == "rssbig" and t == "ftpdrop" and s["med"] is not None]
    big_meta = os.path.join(results_dir, "rssbig.json")
    if b and os.path.exists(big_meta):
        s, job_bytes = b[0], json.load(open(big_meta))["job_bytes"]
        ratio = s["rss_max"] * (1 << 20) / job_bytes
        w(f"| peak RSS ≤ 10 × the job file for one {job_bytes / (1 << 20):.1f} MiB job (was 35 ×) | "
          f"{fmt(s['rss_max'], 1)} MiB = {ratio:.1f} × ({fmt(s['med'])} s, {s['ok']}/{s['n']} complete) | "
          f"{'yes' if ratio <= 10 and s['ok'] == s['n'] else 'NO'} |")
    if lat:
        vals = [r["ms_first"] for r in lat if not r["cold"] and "ms_first" in r]
        if vals:
            m = statistics.median(vals)
            w(f"| intake latency ≤ 20 ms median (rename → first STOR byte) | {m:.1f} ms "
              f"(n={len(vals)}) | {'yes' if m <= 20 else 'NO'} |")
    fp = g("pureftpd", "W1", "pureftpd", "ftpdrop")
    l1 = g("pureftpd", "W1", "pureftpd", "lftp -P1")
    if fp and l1:
        w(f"| pure-ftpd (argon2 hash) W1 never slower than lftp -P1 | ftpdrop median {fmt(fp['med'])} s "
          f"(worst {fmt(fp['max'])}; {fp['ok']}/{fp['n']} runs complete) vs lftp -P1 median {fmt(l1['med'])} s (best {fmt(l1['min'])}) | "
          f"{'yes' if fp['max'] <= l1['min'] and fp['ok'] == fp['n'] else ('median only' if fp['med'] <= l1['med'] else 'NO')} |")
    w("")
    text = "\n".join(lines) + "\n"
    with open(out, "w") as f:
        f.write(text)
    sys.stdout.write(text)


def main():
    if len(sys.argv) < 2:
        print(__doc__, file=sys.stderr)
        sys.exit(2)
    cmd, args = sys.argv[1], sys.argv[2:]
    fn = {"gen-files": cmd_gen_files, "job": cmd_job, "curlcfg": cmd_curlcfg,
          "tree-check": cmd_tree_check, "cmdcount": cmd_cmdcount,
          "latency": cmd_latency, "report": cmd_report}.get(cmd)
    if fn is None:
        print(__doc__, file=sys.stderr)
        sys.exit(2)
    fn(*args)


if __name__ == "__main__":
    main()
