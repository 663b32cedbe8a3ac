#!/usr/bin/env python3
"""ftpdrop, lftp, rclone and curl across an emulated WAN link (issue 14).

  python3 bench/wan.py SERVERS_ENV FTPDROP_BIN OUT_DIR

Run by bench/wan.sh, which installs the tools, builds ftpdrop and starts the
servers. Every tool uploads the same workloads to the same vsftpd through the
same `bench/wan_proxy.py` link (RTT on the control and data connections,
handshakes included), tools alternating and the starting tool rotated each
round. Each run starts from an empty server directory and is checked after:
exactly the expected files and bytes, no temp files. A run that fails the
check is kept in raw.csv with ok=0 and left out of the medians.

Writes OUT_DIR/raw.csv, OUT_DIR/summary.md (medians and ratios),
OUT_DIR/cmds.json (FTP commands per file, from vsftpd's protocol log, first
run of each case) and OUT_DIR/wan-rtt.svg (wall time against RTT per tool).

Knobs (environment): BENCH_RTTS="10 40 100", BENCH_RUNS=3,
BENCH_WORKLOADS="w200 w1000 w256k big64m" (at BENCH_MAIN_RTT=40),
BENCH_SCALE_WORKLOADS="w200 w256k" and BENCH_SCALE_RUNS=2 (at the other
RTTs, for the scaling picture), BENCH_CONNS=8,
BENCH_TLS_RTT=40 (the FTPS case, on vsftpd-tls, "" to skip),
BENCH_TOOLS="ftpdrop ftpdrop-cold lftp rclone curl".

"ftpdrop" is the daemon as it runs in service: it keeps what it learned
about the server (`ftpdrop-learned.json`: pipelining verdicts, cheap logins)
from an earlier job, here from an unmeasured 16-file job through the same
link before each case. "ftpdrop-cold" meets the server for the first time in
every run: no learned facts, so it probes and logs in once before the rest.
"""
import json
import os
import shutil
import statistics
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import benchtool  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)

WORKLOADS = {
    # name: (files, dirs, bytes per file)
    "w200": (200, 4, 4096),
    "w1000": (1000, 10, 4096),
    "w256k": (100, 4, 256 * 1024),
    "big64m": (1, 1, 64 << 20),
    "prime": (16, 1, 4096),
}
LABEL = {
    "w200": "200 x 4 KiB",
    "w1000": "1000 x 4 KiB",
    "w256k": "100 x 256 KiB",
    "big64m": "1 x 64 MiB",
}


def log(msg):
    print(time.strftime("[wan %H:%M:%S] ") + msg, file=sys.stderr, flush=True)


def load_env(path):
    env = {}
    for line in open(path):
        line = line.strip()
        if "=" in line and not line.startswith("#"):
            k, v = line.split("=", 1)
            env[k] = v.strip('"')
    return env


class Proxy:
    def __init__(self, host, port, rtt_ms, tls_ports=None):
        # FTPS: the link cannot read PASV/EPSV replies, so it takes the
        # server's passive ports on an address of its own (see wan_proxy.py).
        self.host = "127.0.0.2" if tls_ports else "127.0.0.1"
        extra = ["--listen", self.host, "--tls-ports", tls_ports] if tls_ports else []
        self.proc = subprocess.Popen(
            [sys.executable, os.path.join(HERE, "wan_proxy.py"), host, str(port),
             "--rtt-ms", str(rtt_ms), *extra],
            stdout=subprocess.PIPE, text=True)
        line = self.proc.stdout.readline().split()
        if len(line) != 2 or line[0] != "listening":
            raise SystemExit(f"wan_proxy did not start: {line}")
        self.port = int(line[1])

    def stop(self):
        self.proc.terminate()
        self.proc.wait()


def gen(data_dir, name):
    files, dirs, size = WORKLOADS[name]
    d = os.path.join(data_dir, name)
    if not os.path.exists(d + ".done"):
        shutil.rmtree(d, ignore_errors=True)
        benchtool.cmd_gen_files(d, files, dirs, size)
        open(d + ".done", "w").close()
    return d


def command(tool, wl, src, work, srv, h, port, conns, tls):
    """The command line of `tool` uploading workload `wl` (in `src`) to
    remote dir `wl` on the server behind `h`:`port`."""
    u, pw = srv["user"], srv["pass"]
    single = WORKLOADS[wl][0] == 1
    one = os.path.join(src, "d00", sorted(os.listdir(os.path.join(src, "d00")))[0])
    if tool.startswith("ftpdrop"):
        st = os.path.join(work, tool + "-state")
        learned = os.path.join(st, "ftpdrop-learned.json")
        kept = open(learned, "rb").read() if tool == "ftpdrop" and os.path.exists(learned) else None
        shutil.rmtree(st, ignore_errors=True)
        os.makedirs(os.path.join(st, "files"))
        os.makedirs(os.path.join(st, "checked"))
        if kept is not None:
            open(learned, "wb").write(kept)
        with open(os.path.join(st, "cfg.json"), "w") as f:
            json.dump({"inbox": st + "/files", "checked": st + "/checked",
                       "max_connections": conns, "max_connections_per_server": conns,
                       "max_concurrent_jobs": 1}, f)
        job = os.path.join(st, "files", "job.json")
        benchtool.cmd_job(job, src, wl, h, port, u, pw)
        if tls:
            entries = json.load(open(job))
            for e in entries:
                e["server"].update({"tls": "explicit", "insecure_skip_verify": True})
            json.dump(entries, open(job, "w"))
        old = time.time() - 60
        os.utime(job, (old, old))  # settled: `once` claims it at once
        return [srv["bin"], "once", "--config", os.path.join(st, "cfg.json")]
    if tool == "lftp":
        # EPSV under TLS: data connections go to the control connection's
        # address, through the link (PASV would name the server's own).
        ssl = ("set ftp:ssl-force true; set ftp:ssl-protect-data true; "
               "set ssl:verify-certificate no; set ftp:prefer-epsv yes" if tls
               else "set ftp:ssl-allow no")
        what = (f"mkdir -p {wl}; put {one} -o {wl}/{os.path.basename(one)}" if single
                else f"mirror -R --parallel={conns} --no-perms {src} {wl}")
        return ["lftp", "-u", f"{u},{pw}", "-p", str(port), h, "-e",
                f"set cmd:fail-exit yes; {ssl}; set net:max-retries 2; {what}; quit"]
    if tool == "rclone":
        obs = subprocess.run(["rclone", "obscure", pw], capture_output=True,
                             text=True, check=True).stdout.strip()
        extra = ",explicit_tls=true,no_check_certificate=true" if tls else ""
        remote = f":ftp,host={h},port={port},user={u},pass={obs}{extra}:{wl}"
        if single:
            return ["rclone", "copyto", one, remote + "/" + os.path.basename(one), "-q",
                    "--config", "/dev/null"]
        return ["rclone", "copy", src, remote, "--transfers", str(conns), "-q",
                "--config", "/dev/null"]
    if tool == "curl":
        cfg = os.path.join(work, f"curl-{wl}.cfg")
        benchtool.cmd_curlcfg(cfg, src, wl, h, port)
        ssl = ["--ssl-reqd", "-k", "--ftp-skip-pasv-ip"] if tls else []
        # --disable-epsv: curl 7.88's EPSV stalls 1 s before some data
        # connections (BENCHMARKS.md); -Z: its parallel mode, `conns` at once.
        par = [] if single else ["-Z", "--parallel-max", str(conns)]
        return ["curl", "-sS", "--disable-epsv", *ssl, *par, "--user", f"{u}:{pw}",
                "--ftp-create-dirs", "-K", cfg]
    raise SystemExit(f"unknown tool {tool}")


def clean(root):
    for name in os.listdir(root):
        p = os.path.join(root, name)
        if os.path.isdir(p) and not os.path.islink(p):
            shutil.rmtree(p)
        else:
            os.unlink(p)
    subprocess.run(["sync"])


def tree_ok(d, files, size):
    n = b = 0
    stray = 0
    for r, _, names in os.walk(d):
        for name in names:
            n += 1
            b += os.path.getsize(os.path.join(r, name))
            stray += name.startswith(".")
    return n == files and b == files * size and not stray


def main():
    env_path, binary, out = sys.argv[1:4]
    env = load_env(env_path)
    rtts = [float(x) for x in os.environ.get("BENCH_RTTS", "10 40 100").split()]
    runs = int(os.environ.get("BENCH_RUNS", "3"))
    wls = os.environ.get("BENCH_WORKLOADS", "w200 w1000 w256k big64m").split()
    tools = os.environ.get("BENCH_TOOLS", "ftpdrop ftpdrop-cold lftp rclone curl").split()
    conns = int(os.environ.get("BENCH_CONNS", "8"))
    tls_rtt = os.environ.get("BENCH_TLS_RTT", "40")
    os.makedirs(out, exist_ok=True)
    work = os.path.join(REPO, "target", "bench-wan")
    data = os.path.join(REPO, "target", "bench-data", "wan")
    os.makedirs(work, exist_ok=True)
    os.makedirs(data, exist_ok=True)
    logs = os.path.join(work, "logs")
    shutil.rmtree(logs, ignore_errors=True)
    os.makedirs(logs)

    def server(prefix):
        p = f"FTPDROP_{prefix}_"
        return {"host": env[p + "HOST"], "port": int(env[p + "PORT"]), "user": env[p + "USER"],
                "pass": env[p + "PASS"], "root": env[p + "ROOT"], "log": env[p + "LOG"],
                "pasv": f'{env[p + "PASV_MIN"]}-{env[p + "PASV_MAX"]}', "bin": binary}

    main_rtt = float(os.environ.get("BENCH_MAIN_RTT", "40"))
    scale_wls = os.environ.get("BENCH_SCALE_WORKLOADS", "w200 w256k").split()
    scale_runs = int(os.environ.get("BENCH_SCALE_RUNS", "2"))
    cases = [(rtt, wl, "VSFTPD", False) for rtt in rtts
             for wl in (wls if rtt == main_rtt else [w for w in scale_wls if w in wls])]
    if tls_rtt:
        cases.append((float(tls_rtt), "w200", "VSFTPDTLS", True))
    raw = open(os.path.join(out, "raw.csv"), "w")
    raw.write("rtt_ms,workload,tls,tool,run,wall_s,rc,ok\n")
    rows, cmds = [], {}
    for rtt, wl, prefix, tls in cases:
        srv = server(prefix)
        src = gen(data, wl)
        files, _, size = WORKLOADS[wl]
        proxy = Proxy(srv["host"], srv["port"], rtt, srv["pasv"] if tls else None)
        try:
            if "ftpdrop" in tools:
                # What a daemon in service knows of a server it met before.
                clean(srv["root"])
                subprocess.run(command("ftpdrop", "prime", gen(data, "prime"), work, srv,
                                       proxy.host, proxy.port, conns, tls),
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=True)
            for r in range(runs if rtt == main_rtt or tls else scale_runs):
                for i in range(len(tools)):
                    tool = tools[(i + r) % len(tools)]
                    clean(srv["root"])
                    cmd = command(tool, wl, src, work, srv, proxy.host, proxy.port, conns, tls)
                    vlog = os.path.join(srv["log"], "vsftpd.log")
                    off0 = os.path.getsize(vlog) if os.path.exists(vlog) else 0
                    tag = f"{int(rtt)}ms-{wl}{'-tls' if tls else ''}-{tool}-{r + 1}"
                    t0 = time.monotonic()
                    with open(os.path.join(logs, tag + ".log"), "w") as lf:
                        rc = subprocess.run(cmd, stdout=lf, stderr=subprocess.STDOUT).returncode
                    wall = time.monotonic() - t0
                    ok = rc == 0 and tree_ok(os.path.join(srv["root"], wl), files, size)
                    if r == 0 and os.path.exists(vlog):
                        cc = os.path.join(work, "cc.json")
                        benchtool.cmd_cmdcount(vlog, off0, os.path.getsize(vlog), cc)
                        c = json.load(open(cc))
                        c["per_file"] = round(c["total"] / files, 2)
                        cmds[f"{int(rtt)}ms {wl}{' tls' if tls else ''} {tool}"] = c
                    raw.write(f"{rtt:g},{wl},{int(tls)},{tool},{r + 1},{wall:.3f},{rc},{int(ok)}\n")
                    raw.flush()
                    rows.append((rtt, wl, tls, tool, wall, ok))
                    log(f"{rtt:g} ms {wl}{' tls' if tls else ''} {tool:8} run {r + 1}: "
                        f"{wall:.2f} s rc={rc} ok={int(ok)}")
        finally:
            proxy.stop()
    json.dump(cmds, open(os.path.join(out, "cmds.json"), "w"), indent=1, sort_keys=True)
    summarize(rows, tools, rtts, wls, out)


def median_of(rows, rtt, wl, tls, tool):
    xs = [r[4] for r in rows if r[:4] == (rtt, wl, tls, tool) and r[5]]
    return statistics.median(xs) if xs else None


def summarize(rows, tools, rtts, wls, out):
    lines = ["# ftpdrop across an emulated WAN link", "",
             "Median wall time in seconds (runs that failed the server-side check are left out);",
             "the ratio is ftpdrop's time over the peer's (below 1: ftpdrop is faster).", ""]
    cases = sorted({(r[0], r[1], r[2]) for r in rows}, key=lambda c: (c[2], c[1], c[0]))
    peers = [t for t in tools if not t.startswith("ftpdrop")]
    head = "| RTT | workload | " + " | ".join(tools) + " | " + " | ".join(
        f"ftpdrop/{p}" for p in peers) + " | ftpdrop/best peer | cold/best peer |"
    lines += [head, "|" + "---|" * (head.count("|") - 1)]
    for rtt, wl, tls in cases:
        med = {t: median_of(rows, rtt, wl, tls, t) for t in tools}
        n_ok = {t: sum(1 for r in rows if r[:4] == (rtt, wl, tls, t) and r[5]) for t in tools}
        n_all = {t: sum(1 for r in rows if r[:4] == (rtt, wl, tls, t)) for t in tools}
        cells = [f"{med[t]:.2f}" + ("" if n_ok[t] == n_all[t] else f" ({n_ok[t]}/{n_all[t]} ok)")
                 if med[t] is not None else "failed" for t in tools]
        f = med.get("ftpdrop")
        ratios = [f"{f / med[p]:.2f}" if f and med[p] else "-" for p in peers]
        best = min((med[p] for p in peers if med[p]), default=None)
        overall = f"{f / best:.2f}" if f and best else "-"
        c = med.get("ftpdrop-cold")
        cold = f"{c / best:.2f}" if c and best else "-"
        lines.append(f"| {rtt:g} ms | {LABEL[wl]}{' FTPS' if tls else ''} | " + " | ".join(cells)
                     + " | " + " | ".join(ratios) + f" | {overall} | {cold} |")
    open(os.path.join(out, "summary.md"), "w").write("\n".join(lines) + "\n")
    print("\n".join(lines))
    if len(rtts) > 1:
        scaled = [w for w in wls if all(any(r[:3] == (t, w, False) for r in rows) for t in rtts)]
        svg(rows, tools, rtts, scaled, os.path.join(out, "wan-rtt.svg"))


def svg(rows, tools, rtts, wls, path):
    """Wall time against RTT, one panel per workload, one line per tool."""
    colours = {"ftpdrop": "#d62728", "ftpdrop-cold": "#ff9896", "lftp": "#1f77b4", "rclone": "#2ca02c", "curl": "#9467bd"}
    pw, ph, ml, mt, gap = 300, 220, 50, 40, 30
    width = ml + len(wls) * (pw + gap) + 20
    height = mt + ph + 70
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
           f'font-family="sans-serif" font-size="11">',
           f'<rect width="{width}" height="{height}" fill="white"/>',
           f'<text x="{width / 2}" y="16" text-anchor="middle" font-size="14">'
           f'Wall time against round-trip time (vsftpd behind bench/wan_proxy.py, 8 connections)</text>']
    xmax = max(rtts)
    for k, wl in enumerate(wls):
        x0 = ml + k * (pw + gap)
        meds = {t: [(r, median_of(rows, r, wl, False, t)) for r in rtts] for t in tools}
        ymax = max([m for t in tools for _, m in meds[t] if m] + [0.1]) * 1.1
        out.append(f'<text x="{x0 + pw / 2}" y="{mt - 8}" text-anchor="middle" '
                   f'font-size="12">{LABEL[wl]}</text>')
        out.append(f'<rect x="{x0}" y="{mt}" width="{pw}" height="{ph}" fill="none" stroke="#888"/>')
        for i in range(5):
            v = ymax * i / 4
            y = mt + ph - ph * i / 4
            out.append(f'<text x="{x0 - 4}" y="{y + 4}" text-anchor="end">{v:.1f}</text>')
            out.append(f'<line x1="{x0}" x2="{x0 + pw}" y1="{y}" y2="{y}" stroke="#eee"/>')
        for r in rtts:
            x = x0 + pw * r / xmax
            out.append(f'<text x="{x}" y="{mt + ph + 14}" text-anchor="middle">{r:g}</text>')
        out.append(f'<text x="{x0 + pw / 2}" y="{mt + ph + 30}" text-anchor="middle">RTT (ms)</text>')
        if k == 0:
            out.append(f'<text x="12" y="{mt + ph / 2}" transform="rotate(-90 12 {mt + ph / 2})" '
                       f'text-anchor="middle">wall time (s)</text>')
        for t in tools:
            pts = [(x0 + pw * r / xmax, mt + ph - ph * m / ymax) for r, m in meds[t] if m]
            if pts:
                out.append('<polyline fill="none" stroke-width="2" stroke="%s" points="%s"/>' % (
                    colours.get(t, "#000"), " ".join(f"{x:.1f},{y:.1f}" for x, y in pts)))
                for x, y in pts:
                    out.append(f'<circle cx="{x:.1f}" cy="{y:.1f}" r="3" fill="{colours.get(t, "#000")}"/>')
    for i, t in enumerate(tools):
        x = ml + i * 110
        y = mt + ph + 52
        out.append(f'<rect x="{x}" y="{y - 9}" width="14" height="10" fill="{colours.get(t, "#000")}"/>')
        out.append(f'<text x="{x + 18}" y="{y}">{t}{" -P8" if t == "lftp" else ""}</text>')
    out.append("</svg>")
    open(path, "w").write("\n".join(out) + "\n")


if __name__ == "__main__":
    main()
