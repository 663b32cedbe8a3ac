#!/usr/bin/env python3
"""Throughput with 1, 2 and 3 ftpdrop instances sharing one inbox, on one machine.

  bench/workers.py SERVERS_ENV [--jobs 300] [--size 1048576] [--rounds 3]

Every instance is a real `ftpdrop run` (release build) on the same inbox
and `checked/`; jobs of one file each go to the interop suite's vsftpd on
loopback. The wall time runs from the moment the jobs are in the inbox to
the last final receipt; rounds alternate 1, 2, 3 instances. Prints a
Markdown table of medians and writes it to bench/results/workers.md.
Every file is checked on the server's disk.
"""
import argparse
import filecmp
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BIN = os.path.join(REPO, "target", "release", "ftpdrop")


def env_file(path):
    out = {}
    for line in open(path):
        if "=" in line and not line.lstrip().startswith("#"):
            k, v = line.strip().split("=", 1)
            out[k] = v
    return out


def one_round(env, n, jobs, size, data):
    work = tempfile.mkdtemp(prefix="ftpdrop-workers-")
    inbox, checked = os.path.join(work, "files"), os.path.join(work, "checked")
    os.makedirs(inbox)
    os.makedirs(checked)
    remote = f"workers-{n}-{int(time.time() * 1000)}"
    cfg = os.path.join(work, "config.json")
    json.dump({"inbox": inbox, "checked": checked, "settle_ms": 20, "sweep_interval_ms": 200,
               "max_concurrent_jobs": 4, "max_connections": 8, "max_connections_per_server": 8,
               "takeover_interval_secs": 1, "status": {"listen": "127.0.0.1:0"}}, open(cfg, "w"))
    procs = [subprocess.Popen([BIN, "run", "--config", cfg, "--log-level", "warn"],
                              stderr=open(os.path.join(work, f"log{i}"), "w"))
             for i in range(n)]
    time.sleep(0.5)  # every instance watching before the jobs come
    server = {"host": env["FTPDROP_VSFTPD_HOST"], "port": env["FTPDROP_VSFTPD_PORT"],
              "login": env["FTPDROP_VSFTPD_USER"], "password": env["FTPDROP_VSFTPD_PASS"]}
    for i in range(jobs):
        tmp = os.path.join(inbox, f".j{i:04d}.tmp")
        json.dump([{"server": server, "file": {"local_path": os.path.join(data, f"f{i:04d}"),
                                                "server_path": f"{remote}/d{i % 8}"}}], open(tmp, "w"))
    start = time.monotonic()
    for i in range(jobs):
        os.rename(os.path.join(inbox, f".j{i:04d}.tmp"), os.path.join(inbox, f"j{i:04d}.json"))
    pending = set(range(jobs))
    while pending:
        for i in list(pending):
            try:
                r = json.load(open(os.path.join(checked, f"j{i:04d}.report.json")))
            except (OSError, ValueError):
                continue
            if r["state"] != "running":
                if r["state"] != "done":
                    sys.exit(f"job {i} ended {r['state']}")
                pending.discard(i)
        if time.monotonic() - start > 600:
            sys.exit(f"{len(pending)} jobs not done in 600 s")
        time.sleep(0.02)
    wall = time.monotonic() - start
    for p in procs:
        p.terminate()
    for p in procs:
        p.wait(30)
    root = os.path.join(env["FTPDROP_VSFTPD_ROOT"], remote)
    for i in range(jobs):
        if not filecmp.cmp(os.path.join(data, f"f{i:04d}"), os.path.join(root, f"d{i % 8}", f"f{i:04d}"), shallow=False):
            sys.exit(f"f{i:04d} differs on the server")
    shutil.rmtree(root, ignore_errors=True)
    shutil.rmtree(work, ignore_errors=True)
    return wall


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("servers_env")
    ap.add_argument("--jobs", type=int, default=300)
    ap.add_argument("--size", type=int, default=1 << 20)
    ap.add_argument("--rounds", type=int, default=3)
    a = ap.parse_args()
    env = env_file(a.servers_env)
    subprocess.run(["cargo", "build", "--release", "--locked"], cwd=REPO, check=True)
    data = tempfile.mkdtemp(prefix="ftpdrop-workers-data-")
    for i in range(a.jobs):
        with open(os.path.join(data, f"f{i:04d}"), "wb") as f:
            f.write(os.urandom(a.size))
    times = {1: [], 2: [], 3: []}
    for r in range(a.rounds):
        for n in (1, 2, 3):
            t = one_round(env, n, a.jobs, a.size, data)
            times[n].append(t)
            print(f"round {r + 1}: {n} instance(s): {t:.2f} s", flush=True)
    shutil.rmtree(data, ignore_errors=True)
    mib = a.jobs * a.size / (1 << 20)
    lines = [f"{a.jobs} jobs of one {a.size // 1024} KiB file each, to vsftpd on loopback; "
             f"median of {a.rounds} alternating rounds; every file checked on the server's disk.", "",
             "| instances | wall time | jobs/s | MiB/s | vs 1 instance |", "|---|---|---|---|---|"]
    base = statistics.median(times[1])
    for n in (1, 2, 3):
        m = statistics.median(times[n])
        lines.append(f"| {n} | {m:.2f} s | {a.jobs / m:.0f} | {mib / m:.0f} | {base / m:.2f}x |")
    text = "\n".join(lines) + "\n"
    print(text)
    os.makedirs(os.path.join(REPO, "bench", "results"), exist_ok=True)
    open(os.path.join(REPO, "bench", "results", "workers.md"), "w").write(text)


if __name__ == "__main__":
    main()
