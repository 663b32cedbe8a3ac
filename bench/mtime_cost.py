#!/usr/bin/env python3
"""What keeping modification times costs (issue 23): `ftpdrop once` with
1000 x 4 KiB files to one server, its default (MFMT where FEAT lists it)
against `"preserve_mtime": false`, runs alternated, medians compared.

Usage: bench/mtime_cost.py SERVERS_ENV PREFIX [RUNS]
(PREFIX as in servers.env: PUREFTPD, PYFTPDLIB, PROFTPD, VSFTPD)."""

import json, os, shutil, statistics, subprocess, sys, tempfile, time

env_file, prefix = sys.argv[1], sys.argv[2]
runs = int(sys.argv[3]) if len(sys.argv) > 3 else 5
env = dict(l.strip().split("=", 1) for l in open(env_file) if "=" in l and not l.startswith("#"))
get = lambda k: env[f"FTPDROP_{prefix}_{k}"].strip('"')
repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
binary = os.path.join(repo, "target/release/ftpdrop")
work = tempfile.mkdtemp(prefix="mtime-cost-")
local = os.path.join(work, "local")
os.makedirs(local)
for i in range(1000):
    with open(os.path.join(local, f"f{i:04}.bin"), "wb") as f:
        f.write(os.urandom(4096))


def once(label, n, keep):
    base = os.path.join(work, f"{label}-{n}")
    server = {"host": get("HOST"), "port": int(get("PORT")), "login": get("USER"), "password": get("PASS")}
    if not keep:
        server["preserve_mtime"] = False
    cfg = {"inbox": f"{base}/files", "checked": f"{base}/checked", "settle_ms": 0,
           "status": {"listen": None}, "servers": {"s": server}}
    os.makedirs(cfg["inbox"])
    with open(f"{base}/cfg.json", "w") as f:
        json.dump(cfg, f)
    remote = f"mtime-cost/{label}-{n}"
    job = [{"server": "s", "file": {"local_path": os.path.join(local, x), "server_path": remote}}
           for x in sorted(os.listdir(local))]
    with open(f"{cfg['inbox']}/job.json", "w") as f:
        json.dump(job, f)
    t = time.monotonic()
    subprocess.run([binary, "once", "--config", f"{base}/cfg.json"], check=True,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    took = time.monotonic() - t
    shutil.rmtree(os.path.join(get("ROOT"), remote), ignore_errors=True)
    return took


times = {"default (MFMT)": [], "preserve_mtime false": []}
for n in range(runs):
    times["default (MFMT)"].append(once("keep", n, True))
    times["preserve_mtime false"].append(once("plain", n, False))
m = {k: statistics.median(v) for k, v in times.items()}
for k, v in times.items():
    print(f"{prefix} {k:22} median {m[k]:.2f} s  runs {' '.join(f'{x:.2f}' for x in v)}")
print(f"{prefix} ratio default/off: {m['default (MFMT)'] / m['preserve_mtime false']:.2f}")
shutil.rmtree(work)
