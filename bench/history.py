#!/usr/bin/env python3
"""The history index at scale (issue 24): a `checked/` folder of N ended
jobs (a claimed job file and its receipt each), then a real `ftpdrop run`
(release build) over it.

  bench/history.py [--jobs 1000000] [--work DIR] [--requests 300]

Measures, for a first start (no index: it is built from the receipts) and
a second start (the index is there):
- start to `ready` (the intake claims new jobs), from the daemon's JSON log;
- start to `history index level with the receipts`;
- an invalid job dropped at `ready`: drop to its final receipt, while the
  index catches up beside it;
- once level, `GET /api/jobs?limit=50`, `?state=failed&limit=50` and a
  walk of `after=` pages: p50 and p99 over --requests each;
- the dashboard's first paint and first rows in headless Chromium, when
  selenium (target/browser-venv) and chromium are there.

Writes bench/results/history.md. The folder is kept (--work) so that a
second run skips the generation.
"""
import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import threading
import time
import urllib.request

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BIN = os.path.join(REPO, "target", "release", "ftpdrop")


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    p = s.getsockname()[1]
    s.close()
    return p


def generate(checked, n):
    """N ended jobs, a third failed, newest first by name order reversed."""
    have = len([f for f in os.listdir(checked) if f.endswith(".report.json")])
    if have >= n:
        return
    now = time.time()
    job = json.dumps([{"server": {"host": "ftp.example.net", "login": "u", "password": "[redacted]"},
                       "file": {"local_path": "/srv/out/a.bin", "server_path": "/in"}}])
    for i in range(have, n):
        name = f"hist{i:07d}"
        failed = i % 3 == 0
        end = now - (n - i)  # one a second, oldest first
        ts = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(end)) + ".000Z"
        state = "failed" if failed else "done"
        receipt = {
            "job": name, "job_file": os.path.join(checked, name + ".json"), "state": state,
            "claimed_at": ts, "updated_at": ts, "finished_at": ts,
            "entries": [{"index": 0, "state": state, "server": f"ftp{i % 50}.example.net:21",
                         "local_path": "/srv/out/a.bin", "remote_path": "/in/a.bin",
                         "bytes": 4096, "sha256": None, "verification": ["size"],
                         "attempts": 1, "elapsed_ms": 12,
                         "error": "550 Permission denied" if failed else None}],
        }
        with open(os.path.join(checked, name + ".json"), "w") as f:
            f.write(job)
        p = os.path.join(checked, name + ".report.json")
        with open(p, "w") as f:
            json.dump(receipt, f)
        os.utime(p, (end, end))
        if i % 100_000 == 0:
            print(f"  generated {i}", file=sys.stderr)


def pct(xs, p):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(p / 100 * (len(xs) - 1))))]


TOKEN = {}


def timed_get(base, path):
    req = urllib.request.Request(base + path, headers={"Authorization": "Bearer " + TOKEN["t"]})
    t = time.perf_counter()
    with urllib.request.urlopen(req, timeout=60) as r:
        body = r.read()
    return time.perf_counter() - t, json.loads(body)


def api_figures(base, requests):
    out = {}
    for label, path in [("list limit=50", "/api/jobs?limit=50"),
                        ("state=failed limit=50", "/api/jobs?state=failed&limit=50")]:
        times = [timed_get(base, path)[0] for _ in range(requests)]
        out[label] = times
    times, after = [], ""
    for _ in range(requests):
        t, page = timed_get(base, f"/api/jobs?limit=50&after={after}")
        times.append(t)
        if not page:
            break
        after = page[-1]["job"]
    out["page walk (after=), limit=50"] = times
    return out


def dashboard_paint(binary, cfg):
    venv_py = os.path.join(REPO, "target", "browser-venv", "bin", "python")
    if not os.path.exists(venv_py):
        return None
    script = r"""
import subprocess, sys, tempfile, time
from selenium import webdriver
from selenium.webdriver.chrome.service import Service
opts = webdriver.ChromeOptions()
opts.binary_location = "/usr/bin/chromium"
for a in ["--headless", "--no-sandbox", "--disable-gpu", "--window-size=1400,900",
          f"--user-data-dir={tempfile.mkdtemp()}"]:
    opts.add_argument(a)
d = webdriver.Chrome(service=Service("/usr/bin/chromedriver"), options=opts)
url = subprocess.run([sys.argv[1], "dashboard", "--config", sys.argv[2]], check=True,
                     capture_output=True, text=True).stdout.strip()
best = None
for _ in range(3):
    d.get("about:blank")
    t = time.perf_counter()
    d.get(url)
    while not d.execute_script("return document.querySelectorAll('tr.job').length"):
        time.sleep(0.01)
    rows = time.perf_counter() - t
    fcp = d.execute_script(
        "const e = performance.getEntriesByName('first-contentful-paint')[0]; return e ? e.startTime : null")
    best = min(best or 1e9, rows)
    print(f"{fcp} {rows}")
d.quit()
"""
    r = subprocess.run([venv_py, "-c", script, binary, cfg], capture_output=True, text=True,
                       env={**os.environ, "SE_OFFLINE": "true"})
    if r.returncode != 0:
        print(r.stderr[-2000:], file=sys.stderr)
        return None
    runs = [tuple(float(x) if x != "None" else None for x in l.split()) for l in r.stdout.split("\n") if l]
    return runs


def start(work, cfg):
    log = open(os.path.join(work, "daemon.log"), "w")
    t0 = time.perf_counter()
    p = subprocess.Popen([BIN, "run", "--config", cfg, "--log-format", "json"],
                         stderr=subprocess.PIPE, stdout=log, text=True)
    marks = {}
    done = threading.Event()

    def read():
        for line in p.stderr:
            log.write(line)
            try:
                m = json.loads(line).get("message", "")
            except ValueError:
                continue
            if m == "ready" and "ready" not in marks:
                marks["ready"] = time.perf_counter() - t0
            if m.startswith("history index") and "level" not in marks:
                marks["level"] = time.perf_counter() - t0
                done.set()
    threading.Thread(target=read, daemon=True).start()
    return p, t0, marks, done


def run_once(work, cfg, inbox, checked, base, requests, label, binary):
    p, t0, marks, level = start(work, cfg)
    while "ready" not in marks:
        if p.poll() is not None:
            sys.exit(f"the daemon exited: {p.returncode}; see {work}/daemon.log")
        time.sleep(0.005)
    # A new job at ready: claimed and settled while the index catches up.
    # Invalid (no entries) so that it needs no server, and whole JSON: a
    # truncated file waits `incomplete_grace_ms` in case it is still written.
    probe = f"probe{int(time.time() * 1000)}"
    t = time.perf_counter()
    with open(os.path.join(inbox, f".{probe}.tmp"), "w") as f:
        f.write("{}")
    os.rename(os.path.join(inbox, f".{probe}.tmp"), os.path.join(inbox, f"{probe}.json"))
    receipt = os.path.join(checked, f"{probe}.report.json")
    while not os.path.exists(receipt):
        time.sleep(0.002)
    new_job = time.perf_counter() - t
    was_level = "level" in marks
    level.wait(1800)
    TOKEN["t"] = open(os.path.join(work, "ftpdrop-api-token")).read().split()[0]
    figures = api_figures(base, requests)
    paint = dashboard_paint(binary, cfg)
    p.terminate()
    p.wait(60)
    return {"label": label, "ready": marks.get("ready"), "level": marks.get("level"),
            "new_job": new_job, "new_job_before_level": not was_level,
            "api": figures, "paint": paint}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--jobs", type=int, default=1_000_000)
    ap.add_argument("--work", default=os.path.join(REPO, "target", "history-bench"))
    ap.add_argument("--requests", type=int, default=300)
    a = ap.parse_args()
    subprocess.run(["cargo", "build", "--release", "--locked", "-q"], cwd=REPO, check=True)
    inbox, checked = os.path.join(a.work, "files"), os.path.join(a.work, "checked")
    os.makedirs(inbox, exist_ok=True)
    os.makedirs(checked, exist_ok=True)
    t = time.time()
    generate(checked, a.jobs)
    print(f"folder ready in {time.time() - t:.0f} s", file=sys.stderr)
    index = os.path.join(checked, "ftpdrop-history.sqlite")
    for suffix in ["", "-wal", "-shm"]:
        if os.path.exists(index + suffix):
            os.remove(index + suffix)
    port = free_port()
    cfg = os.path.join(a.work, "config.json")
    json.dump({"inbox": inbox, "checked": checked, "retention_days": 0,
               "status": {"listen": f"127.0.0.1:{port}"}}, open(cfg, "w"))
    base = f"http://127.0.0.1:{port}"
    token_file = os.path.join(a.work, "ftpdrop-api-token")
    runs = [run_once(a.work, cfg, inbox, checked, base, a.requests, "first start (no index)", BIN),
            run_once(a.work, cfg, inbox, checked, base, a.requests, "second start (index there)", BIN)]
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO,
                            capture_output=True, text=True).stdout.strip()
    lines = [f"# History index at {a.jobs:,} ended jobs (commit {commit})", "",
             f"`bench/history.py --jobs {a.jobs}`: {a.jobs:,} job files and receipts in one "
             "`checked/`; a release `ftpdrop run` over it; 2 cores, shared.", "",
             "| Start | ready (intake) | index level | new job at ready → receipt |",
             "|---|---|---|---|"]
    for r in runs:
        lines.append(f"| {r['label']} | {r['ready']:.2f} s | {r['level']:.1f} s | "
                     f"{r['new_job'] * 1000:.0f} ms{' (before the index was level)' if r['new_job_before_level'] else ''} |")
    lines += ["", "| Start | Request | n | p50 | p99 |", "|---|---|---|---|---|"]
    for r in runs:
        for k, v in r["api"].items():
            lines.append(f"| {r['label']} | `{k}` | {len(v)} | {pct(v, 50) * 1000:.1f} ms | "
                         f"{pct(v, 99) * 1000:.1f} ms |")
    for r in runs:
        if r["paint"]:
            fcp = ", ".join(f"{x[0]:.0f} ms" if x[0] is not None else "n/a" for x in r["paint"])
            rows = ", ".join(f"{x[1] * 1000:.0f} ms" for x in r["paint"])
            lines.append(f"\nDashboard ({r['label']}), 3 loads in headless Chromium: "
                         f"first contentful paint {fcp}; first job rows shown {rows}.")
    text = "\n".join(lines) + "\n"
    os.makedirs(os.path.join(REPO, "bench", "results"), exist_ok=True)
    open(os.path.join(REPO, "bench", "results", "history.md"), "w").write(text)
    print(text)


if __name__ == "__main__":
    main()
