#!/usr/bin/env python3
"""What the status machinery costs: the small-file workload with the status
API on (and a live SSE subscriber plus a poller of /api/jobs and /metrics,
as a dashboard and Prometheus would be) against the same build with the API
off (`status.listen: null`).

  bench/status_overhead.py SERVERS_ENV [--files 1000] [--size 4096] [--rounds 5]

Each round starts a real `ftpdrop run` (release build), drops one job of
`--files` entries for the interop suite's vsftpd on loopback, and times the
job from its claim to its final receipt (the receipt's own timestamps). Rounds alternate off/on. Prints the medians
and their ratio, and writes bench/results/status-overhead.md. Every file is
checked on the server's disk.
"""
import argparse
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BIN = os.path.join(REPO, "target", "release", "ftpdrop")


def env_file(path):
    out = {}
    for line in open(path):
        if "=" in line and not line.lstrip().startswith("#"):
            k, v = line.strip().split("=", 1)
            out[k] = v
    return out


def parse_ts(text):
    from datetime import datetime
    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    p = s.getsockname()[1]
    s.close()
    return p


def watchers(base, stop):
    """A live SSE reader and a poller, as a dashboard and a scraper would be."""
    def sse():
        try:
            with urllib.request.urlopen(base + "/api/events", timeout=60) as r:
                while not stop.is_set():
                    if not r.readline():
                        return
        except Exception:
            pass

    def poll():
        while not stop.is_set():
            for path in ("/api/jobs?limit=30", "/metrics"):
                try:
                    urllib.request.urlopen(base + path, timeout=5).read()
                except Exception:
                    pass
            time.sleep(1)

    ts = [threading.Thread(target=sse, daemon=True), threading.Thread(target=poll, daemon=True)]
    for t in ts:
        t.start()
    return ts


def one_round(env, api_on, files, data_dir):
    work = tempfile.mkdtemp(prefix="ftpdrop-statusbench-")
    inbox, checked = os.path.join(work, "files"), os.path.join(work, "checked")
    os.makedirs(inbox)
    os.makedirs(checked)
    port = free_port()
    cfg = os.path.join(work, "config.json")
    json.dump({"inbox": inbox, "checked": checked, "settle_ms": 20,
               "max_connections": 8, "max_connections_per_server": 8,
               "status": {"listen": f"127.0.0.1:{port}" if api_on else None}}, open(cfg, "w"))
    proc = subprocess.Popen([BIN, "run", "--config", cfg, "--log-level", "warn"],
                            stderr=open(os.path.join(work, "log"), "w"))
    stop = threading.Event()
    base = f"http://127.0.0.1:{port}"
    if api_on:
        for _ in range(100):
            try:
                urllib.request.urlopen(base + "/ready", timeout=1)
                break
            except Exception:
                time.sleep(0.05)
        watchers(base, stop)
    else:
        time.sleep(0.5)
    remote = f"statusbench-{'on' if api_on else 'off'}-{int(time.time() * 1000)}"
    job = [{"server": {"host": env["FTPDROP_VSFTPD_HOST"], "port": env["FTPDROP_VSFTPD_PORT"],
                       "login": env["FTPDROP_VSFTPD_USER"], "password": env["FTPDROP_VSFTPD_PASS"]},
            "file": {"local_path": os.path.join(data_dir, name), "server_path": remote}}
           for name in sorted(os.listdir(data_dir))]
    tmp = os.path.join(inbox, ".job.tmp")
    json.dump(job, open(tmp, "w"))
    start = time.monotonic()
    os.rename(tmp, os.path.join(inbox, "job.json"))
    receipt = os.path.join(checked, "job.report.json")
    while True:
        try:
            r = json.load(open(receipt))
            if r["state"] != "running":
                break
        except Exception:
            pass
        time.sleep(0.05)
    # The daemon's own clock, claim to final receipt: the harness's polling
    # (and its Python threads) do not enter the figure.
    took = (parse_ts(r["finished_at"]) - parse_ts(r["claimed_at"]))
    stop.set()
    proc.terminate()
    proc.wait(30)
    if r["state"] != "done":
        sys.exit(f"round failed: {r['state']}")
    root = os.path.join(env["FTPDROP_VSFTPD_ROOT"], remote)
    if len(os.listdir(root)) != len(job):
        sys.exit(f"{root}: {len(os.listdir(root))} files, expected {len(job)}")
    shutil.rmtree(root, ignore_errors=True)
    shutil.rmtree(work, ignore_errors=True)
    return took


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("env")
    ap.add_argument("--files", type=int, default=1000)
    ap.add_argument("--size", type=int, default=4096)
    ap.add_argument("--rounds", type=int, default=5)
    a = ap.parse_args()
    env = env_file(a.env)
    data = tempfile.mkdtemp(prefix="ftpdrop-statusbench-data-")
    for i in range(a.files):
        with open(os.path.join(data, f"f{i:05d}.bin"), "wb") as f:
            f.write(os.urandom(a.size))
    times = {False: [], True: []}
    ratios = []
    for r in range(a.rounds):
        pair = {}
        for on in ((False, True) if r % 2 == 0 else (True, False)):
            t = one_round(env, on, a.files, data)
            times[on].append(t)
            pair[on] = t
            print(f"round {r + 1}: API {'on ' if on else 'off'} {t:.2f} s", flush=True)
        ratios.append(pair[True] / pair[False])
    off, on = statistics.median(times[False]), statistics.median(times[True])
    # The machine is shared and drifts during a run: each round's two runs
    # are back to back, so the median of the per-round ratios is the figure.
    table = (f"| {a.files} × {a.size} B to vsftpd, 8 connections | median of {a.rounds} |\n"
             f"| --- | --- |\n"
             f"| API off (`status.listen: null`) | {off:.2f} s |\n"
             f"| API on, SSE subscriber, /api/jobs and /metrics polled every second | {on:.2f} s |\n"
             f"| ratio on/off, median of the rounds' ratios | **{statistics.median(ratios):.3f}** |\n"
             f"| ratio of the medians | {on / off:.3f} |\n")
    print(table)
    os.makedirs(os.path.join(REPO, "bench", "results"), exist_ok=True)
    open(os.path.join(REPO, "bench", "results", "status-overhead.md"), "w").write(table)
    shutil.rmtree(data, ignore_errors=True)


if __name__ == "__main__":
    main()
