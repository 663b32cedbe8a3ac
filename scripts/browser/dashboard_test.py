#!/usr/bin/env python3
"""The dashboard in a real browser (issue 13).

Starts `ftpdrop run` with its status API, drops a job with a big file for
vsftpd capped at 20 MB/s (the interop suite's vsftpd-throttled), opens the
dashboard in headless Debian chromium through its chromedriver (selenium,
with explicit browser and driver paths: nothing is downloaded), and checks
that the entry's progress bar advances and that the job ends done, with the
file whole on the server's disk. Screenshots go to OUT_DIR.

Then an operator's day (issue 25), at 1400 x 900 and at a phone's width:
a partial job with a Cyrillic name, an invalid one, and one retrying
against a dead host that is cancelled with the dashboard's own button. The
page must show decoded names, local times labelled as such, a colour of
its own for partial, the reasons, one line for "1/2 done, 1 failed",
nothing wider than the window, filters, search and the hour's chart.

Then a page on another origin, in the same browser, attacks the API as a
hostile web page would (issue 19): a cross-site POST of a job naming a
local secret, a read of the job list, the live WebSocket. None may work.

Usage: dashboard_test.py SERVERS_ENV FTPDROP_BIN OUT_DIR
"""

import functools
import http.server
import json
import os
import threading
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request

from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By

SIZE = 200 * 1024 * 1024


def fail(msg):
    print(f"FAIL: {msg}", file=sys.stderr)
    sys.exit(1)


def servers_env(path):
    env = {}
    for line in open(path):
        line = line.strip()
        if line and not line.startswith("#") and "=" in line:
            k, v = line.split("=", 1)
            env[k] = v
    return env


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def hostile_page(driver, base, port, work, inbox, checked):
    """A page served from http://localhost:<other port>: another site than
    the API at 127.0.0.1. It tries what a hostile page can without a token."""
    secret = os.path.join(work, "secret.txt")
    with open(secret, "w") as f:
        f.write("do not leak")
    job = json.dumps([{"server": {"host": "127.0.0.1", "port": "2121", "login": "u", "password": "p"},
                       "file": {"local_path": secret, "server_path": "loot"}}])
    page_dir = os.path.join(work, "evil")
    os.makedirs(page_dir)
    with open(os.path.join(page_dir, "index.html"), "w") as f:
        f.write(f"""<!doctype html><title>evil</title><script>
const out = {{}};
(async () => {{
  try {{
    await fetch("{base}/api/jobs", {{method: "POST", mode: "no-cors",
      headers: {{"Content-Type": "text/plain"}}, body: {json.dumps(job)}}});
    out.post = "sent";
  }} catch (e) {{ out.post = "error"; }}
  try {{ const r = await fetch("{base}/api/jobs"); out.read = "read " + r.status; }}
  catch (e) {{ out.read = "blocked"; }}
  await new Promise(done => {{
    const ws = new WebSocket("ws://127.0.0.1:{port}/api/ws");
    ws.onopen = () => {{ out.ws = "open"; done(); }};
    ws.onerror = () => {{ out.ws = "refused"; done(); }};
    setTimeout(() => {{ out.ws = out.ws || "timeout"; done(); }}, 5000);
  }});
  document.title = "result " + JSON.stringify(out);
}})();
</script>""")
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=page_dir)
    evil = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=evil.serve_forever, daemon=True).start()
    try:
        before = set(os.listdir(inbox)) | set(os.listdir(checked))
        driver.get(f"http://localhost:{evil.server_address[1]}/")
        deadline = time.time() + 20
        while not driver.title.startswith("result ") and time.time() < deadline:
            time.sleep(0.2)
        if not driver.title.startswith("result "):
            fail(f"the hostile page did not finish: {driver.title!r}")
        out = json.loads(driver.title[len("result "):])
        time.sleep(1.5)
        after = set(os.listdir(inbox)) | set(os.listdir(checked))
        if after != before:
            fail(f"a cross-site page made a job: {sorted(after - before)}")
        if out.get("read") != "blocked":
            fail(f"a cross-site page read the job list: {out}")
        if out.get("ws") == "open":
            fail(f"a cross-site page opened the live feed: {out}")
        print(f"ok: a page on another origin got nothing: {out}")
    finally:
        evil.shutdown()


def wait_for(driver, script, what, limit=60):
    deadline = time.time() + limit
    while time.time() < deadline:
        got = driver.execute_script(script)
        if got:
            return got
        time.sleep(0.3)
    fail(f"{what} within {limit} s")


def operator_day(driver, env, work, inbox, out_dir):
    """Partial, invalid and cancelled jobs as the operator sees them."""
    driver.set_window_size(1400, 900)
    good = os.path.join(work, "План отчёт 2024.txt")
    with open(good, "w") as f:
        f.write("отчёт")
    srv = {"host": env["FTPDROP_VSFTPD_HOST"], "port": env["FTPDROP_VSFTPD_PORT"],
           "login": env["FTPDROP_VSFTPD_USER"], "password": env["FTPDROP_VSFTPD_PASS"]}
    remote_dir = f"dashboard-day-{int(time.time())}"
    jobs = {
        "mixed": [{"server": srv, "file": {"local_path": good, "server_path": remote_dir}},
                  {"server": srv, "file": {"local_path": os.path.join(work, "gone.txt"),
                                            "server_path": remote_dir}}],
        "broken": [{"server": {"host": "127.0.0.1"}}],
        "stuck": [{"server": {"host": "127.0.0.1", "port": free_port(), "login": "u", "password": "p"},
                   "file": {"local_path": good, "server_path": "never"}}],
    }
    for name, job in jobs.items():
        tmp = os.path.join(inbox, f".{name}.tmp")
        json.dump(job, open(tmp, "w"))
        os.rename(tmp, os.path.join(inbox, f"{name}.json"))
    states = """
        const out = {};
        for (const r of document.querySelectorAll('tr.job'))
            out[r.dataset.job] = r.querySelector('.state').textContent;
        return out;
    """
    wait_for(driver, f"const s = (() => {{{states}}})(); return s.mixed === 'partial' && s.broken === 'invalid' "
                     "&& s.stuck === 'running' && document.querySelector('tr.job[data-job=stuck] button[data-cancel]')",
             "partial, invalid and a running job with a cancel button")
    # Cancel with the dashboard's own button, as an operator does.
    driver.execute_script("document.querySelector('tr.job[data-job=stuck] button[data-cancel]').click()")
    driver.switch_to.alert.accept()
    wait_for(driver, f"return (() => {{{states}}})().stuck === 'cancelled'", "the cancelled job shown as cancelled")
    look = driver.execute_script("""
        const row = j => document.querySelector(`tr.job[data-job="${j}"]`);
        const bg = el => getComputedStyle(el).backgroundColor;
        const links = [...document.querySelectorAll('tr.entry a')].map(a => a.textContent);
        const count = row('mixed').querySelector('td.count');
        const range = document.createRange();
        range.selectNodeContents(count);
        return {
          partial: bg(row('mixed').querySelector('.state')),
          failed_colour: getComputedStyle(document.documentElement).getPropertyValue('--bad').trim(),
          running_colour: getComputedStyle(document.documentElement).getPropertyValue('--run').trim(),
          partial_bar: row('mixed').querySelector('.bar').className,
          links,
          count_text: count.textContent, count_lines: new Set([...range.getClientRects()].map(r => Math.round(r.top))).size,
          wide: document.documentElement.scrollWidth, window: window.innerWidth,
          head: document.querySelector('thead').textContent,
          time: row('mixed').querySelector('td.when').textContent,
          broken_reason: row('broken').textContent,
          stuck_reason: [...document.querySelectorAll('tr.entry')].map(r => r.textContent).join(' | '),
        };
    """)
    print(f"dashboard at 1400 px: {json.dumps(look, ensure_ascii=False)[:600]}")
    if look["partial_bar"].split() != ["bar", "partial"]:
        fail(f"a partial job's bar is {look['partial_bar']!r}")
    if look["partial"] in ("rgb(214, 69, 69)", "rgb(47, 111, 219)"):
        fail(f"partial has the colour of failed or running: {look['partial']}")
    if not any("План отчёт 2024.txt" in l for l in look["links"]):
        fail(f"the Cyrillic name is not shown decoded: {look['links']}")
    if look["count_text"] != "1/2 done, 1 failed" or look["count_lines"] > 1:
        fail(f"the count reads {look['count_text']!r} on {look['count_lines']} lines")
    if look["wide"] > look["window"]:
        fail(f"the page is {look['wide']} px wide in a {look['window']} px window")
    if "(local)" not in look["head"] or look["time"].endswith("Z") or "T" in look["time"]:
        fail(f"times are not labelled local: head {look['head']!r}, time {look['time']!r}")
    if "entries[0].server.login: missing" not in look["broken_reason"]:
        fail(f"the invalid job shows no reason: {look['broken_reason']!r}")
    driver.save_screenshot(os.path.join(out_dir, "dashboard-1400.png"))
    # Filter by state, then search by name.
    driver.execute_script("const s = document.getElementById('fstate'); s.value = 'cancelled'; s.onchange();")
    wait_for(driver, f"const s = (() => {{{states}}})(); return Object.keys(s).join() === 'stuck'",
             "the state filter shows only the cancelled job", 15)
    driver.execute_script("const s = document.getElementById('fstate'); s.value = ''; s.onchange();"
                          "const q = document.getElementById('fq'); q.value = 'brok'; q.oninput();")
    wait_for(driver, f"const s = (() => {{{states}}})(); return Object.keys(s).join() === 'broken'",
             "the search shows only the job named like it", 15)
    driver.execute_script("const q = document.getElementById('fq'); q.value = ''; q.oninput();")
    note = wait_for(driver, "const t = document.getElementById('chartnote').textContent; "
                            "return /([3-9]|\\d\\d+) jobs ended/.test(t) && t;",
                    "the hour's chart counts the ended jobs", 30)
    print(f"ok: chart {note!r}")
    # Paging through the history, two jobs a page.
    driver.get(driver.current_url.split("?")[0].split("#")[0] + "?page_size=2")
    jobs_shown = f"return Object.keys((() => {{{states}}})()).join()"
    first = wait_for(driver, f"const k = (() => {{{states}}})(); return Object.keys(k).length === 2 "
                             "&& !document.getElementById('older').disabled && Object.keys(k).join()",
                     "a first page of two jobs with an older page", 15)
    driver.execute_script("document.getElementById('older').click()")
    second = wait_for(driver, f"const k = Object.keys((() => {{{states}}})()).join(); "
                              f"return k && k !== {json.dumps(first)} && k", "the older page", 15)
    if set(first.split(",")) & set(second.split(",")):
        fail(f"pages overlap: {first} then {second}")
    driver.execute_script("document.getElementById('newer').click()")
    wait_for(driver, f"return Object.keys((() => {{{states}}})()).join() === {json.dumps(first)}",
             "back to the first page", 15)
    print(f"ok: paging shows {first}, then {second}, then {first} again")
    driver.set_window_size(390, 844)
    time.sleep(1)
    phone = driver.execute_script("return [document.documentElement.scrollWidth, window.innerWidth]")
    driver.save_screenshot(os.path.join(out_dir, "dashboard-phone.png"))
    if phone[0] > phone[1] + 2:
        fail(f"at a phone's width the page is {phone[0]} px wide in {phone[1]}")
    print(f"ok: partial, invalid and cancelled read at a glance at 1400 and {phone[1]} px; "
          f"screenshots dashboard-1400.png, dashboard-phone.png")
    shutil.rmtree(os.path.join(env["FTPDROP_VSFTPD_ROOT"], remote_dir), ignore_errors=True)


def which(*names):
    for n in names:
        p = shutil.which(n)
        if p:
            return p
    fail(f"none of {names} is installed (apt-get install chromium chromium-driver)")


def main():
    env_path, binary, out_dir = sys.argv[1:4]
    env = servers_env(env_path)
    os.makedirs(out_dir, exist_ok=True)
    work = tempfile.mkdtemp(prefix="ftpdrop-dash-")
    inbox, checked = os.path.join(work, "files"), os.path.join(work, "checked")
    os.makedirs(inbox)
    os.makedirs(checked)
    port = free_port()
    cfg = os.path.join(work, "config.json")
    json.dump({"inbox": inbox, "checked": checked, "settle_ms": 50,
               "status": {"listen": f"127.0.0.1:{port}"}}, open(cfg, "w"))
    log = open(os.path.join(out_dir, "dashboard-daemon.log"), "w")
    daemon = subprocess.Popen([binary, "run", "--config", cfg], stderr=log)
    base = f"http://127.0.0.1:{port}"
    driver = None
    try:
        deadline = time.time() + 20
        while True:
            try:
                if urllib.request.urlopen(base + "/ready", timeout=2).status == 200:
                    break
            except Exception:
                pass
            if time.time() > deadline:
                fail("the daemon's /ready never answered 200")
            time.sleep(0.1)

        local = os.path.join(work, "big.bin")
        with open(local, "wb") as f:
            block = os.urandom(1024 * 1024)
            for i in range(SIZE // len(block)):
                f.write(block[:-8] + i.to_bytes(8, "big"))
        remote_dir = f"dashboard-{int(time.time())}"
        job = [{"server": {"host": env["FTPDROP_VSFTPDTHROTTLED_HOST"],
                           "port": env["FTPDROP_VSFTPDTHROTTLED_PORT"],
                           "login": env["FTPDROP_VSFTPDTHROTTLED_USER"],
                           "password": env["FTPDROP_VSFTPDTHROTTLED_PASS"]},
                "file": {"local_path": local, "server_path": remote_dir}}]

        opts = webdriver.ChromeOptions()
        opts.binary_location = which("chromium", "chromium-browser")
        for a in ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update",
                  "--disable-sync", "--window-size=1280,760",
                  f"--user-data-dir={tempfile.mkdtemp(prefix='chromium-')}"]:
            opts.add_argument(a)
        driver = webdriver.Chrome(service=Service(which("chromedriver")), options=opts)
        # As an operator opens it: the address `ftpdrop dashboard` prints,
        # the API token in its fragment.
        url = subprocess.run([binary, "dashboard", "--config", cfg], check=True,
                             capture_output=True, text=True).stdout.strip()
        if not url.startswith(base + "/#token="):
            fail(f"ftpdrop dashboard printed {url!r}")
        driver.get(url)
        if "token=" in driver.current_url:
            fail("the token stays in the address bar")
        if driver.title != "ftpdrop":
            fail(f"page title {driver.title!r}")

        tmp = os.path.join(inbox, ".big.tmp")
        json.dump(job, open(tmp, "w"))
        os.rename(tmp, os.path.join(inbox, "big.json"))

        seen, shot, state = [], False, ""
        deadline = time.time() + 90
        # Read in one script: the page re-renders its rows on every event, so
        # element handles found a moment earlier go stale.
        probe = """
            const bar = document.querySelector('tr.entry .bar');
            const st = document.querySelector('tr.job .state');
            return [bar ? Number(bar.dataset.sent) : null,
                    bar ? bar.querySelector('i').style.width : '',
                    st ? st.textContent : ''];
        """
        while time.time() < deadline:
            sent, width, state = driver.execute_script(probe)
            if sent is not None:
                if not seen or sent != seen[-1]:
                    seen.append(sent)
                if not shot and SIZE * 0.3 < sent < SIZE * 0.8:
                    driver.save_screenshot(os.path.join(out_dir, "dashboard.png"))
                    shot = True
                    print(f"progress screenshot at {sent} bytes ({width})")
            if state == "done" and seen and seen[-1] == SIZE:
                break
            time.sleep(0.4)
        driver.save_screenshot(os.path.join(out_dir, "dashboard-done.png"))
        moving = [b for b in seen if 0 < b < SIZE]
        if len(moving) < 3:
            fail(f"the progress bar did not advance: values seen {seen}")
        if sorted(seen) != seen:
            fail(f"the progress bar went back: {seen}")
        if state != "done" or seen[-1] != SIZE:
            fail(f"the job did not show done: state {state!r}, last bytes {seen[-1:]}")
        if not shot:
            fail("no screenshot in the middle of the upload")
        on_disk = os.path.join(env["FTPDROP_VSFTPDTHROTTLED_ROOT"], remote_dir, "big.bin")
        if os.path.getsize(on_disk) != SIZE:
            fail(f"{on_disk}: {os.path.getsize(on_disk)} bytes, expected {SIZE}")
        print(f"ok: the bar showed {len(moving)} intermediate values, then done; "
              f"screenshots in {out_dir}")
        shutil.rmtree(os.path.join(env["FTPDROP_VSFTPDTHROTTLED_ROOT"], remote_dir), ignore_errors=True)
        operator_day(driver, env, work, inbox, out_dir)
        hostile_page(driver, base, port, work, inbox, checked)
    finally:
        if driver:
            driver.quit()
        daemon.terminate()
        try:
            daemon.wait(20)
        except subprocess.TimeoutExpired:
            daemon.kill()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
