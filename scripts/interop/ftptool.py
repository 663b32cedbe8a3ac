#!/usr/bin/env python3
"""Small stdlib-only helper for scripts/interop (no third-party imports).

Subcommands:
  ports N_CTRL N_RANGES RANGE_SIZE
      Print N_CTRL free loopback TCP ports (one per line, picked by binding
      127.0.0.1:0), then N_RANGES lines "LO HI" of disjoint, currently free
      passive port ranges below the kernel's ephemeral range.
  wait HOST PORT TIMEOUT [PID]
      Poll until the server sends a line starting with "220"; print it.
      Gives up early when process PID has exited.
  feat HOST PORT USER PASS [CAFILE]
      Log in (explicit FTPS with CAFILE) and print the raw FEAT reply.
  quirks HOST PORT USER PASS ROOT [CAFILE]
      Probe behaviours an FTP client has to cope with and print key=value
      lines (MKD of an existing dir, REST+STOR truncation, ...).
  maxconn HOST PORT N
      Open N control connections at once; print the first reply line of each.
  urlpath PATH
      Percent-encode a path for an ftp:// URL (keeps '/').
"""
import ftplib
import io
import os
import random
import socket
import ssl
import sys
import time
import urllib.parse


def cmd_ports(n_ctrl, n_ranges, size):
    n_ctrl, n_ranges, size = int(n_ctrl), int(n_ranges), int(size)
    socks, ctrl = [], []
    for _ in range(n_ctrl):
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        socks.append(s)
        ctrl.append(s.getsockname()[1])
    for s in socks:
        s.close()
    # Passive ranges live below the ephemeral range so that client-side
    # ephemeral ports never collide with them.
    try:
        with open("/proc/sys/net/ipv4/ip_local_port_range") as f:
            eph_lo = int(f.read().split()[0])
    except OSError:
        eph_lo = 32768
    hi_limit = min(eph_lo, 65536) - 1
    lo_limit = 20000 if hi_limit > 21000 else 10000
    taken = set(ctrl)
    ranges = []
    rng = random.Random()
    for _ in range(n_ranges):
        for _attempt in range(500):
            lo = rng.randrange(lo_limit, hi_limit - size)
            ports = range(lo, lo + size)
            if any(p in taken for p in ports):
                continue
            ok = True
            for p in ports:
                s = socket.socket()
                try:
                    s.bind(("127.0.0.1", p))
                except OSError:
                    ok = False
                finally:
                    s.close()
                if not ok:
                    break
            if ok:
                taken.update(ports)
                ranges.append((lo, lo + size - 1))
                break
        else:
            sys.exit("could not find a free passive port range")
    for p in ctrl:
        print(p)
    for lo, hi in ranges:
        print(lo, hi)


def pid_alive(pid):
    try:
        with open("/proc/%s/stat" % pid) as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return False


def cmd_wait(host, port, timeout, pid=None, tls=None):
    """Waits for the 220 greeting; with tls="tls", after a TLS handshake
    (implicit FTPS; the certificate is not checked here)."""
    deadline = time.monotonic() + float(timeout)
    last = "no attempt"
    while time.monotonic() < deadline:
        if pid and not pid_alive(pid):
            last = "process %s exited" % pid
            break
        try:
            with socket.create_connection((host, int(port)), timeout=3) as s:
                if tls == "tls":
                    ctx = ssl.create_default_context()
                    ctx.check_hostname = False
                    ctx.verify_mode = ssl.CERT_NONE
                    s = ctx.wrap_socket(s, server_hostname=host)
                f = s.makefile("rb")
                line = f.readline().decode("utf-8", "replace").rstrip("\r\n")
                if line.startswith("220"):
                    print(line)
                    return 0
                last = "unexpected greeting: %r" % line
        except OSError as e:
            last = str(e)
        time.sleep(0.2)
    print("no 220 greeting from %s:%s (timeout %ss): %s" % (host, port, timeout, last),
          file=sys.stderr)
    return 1


class ReuseFTP_TLS(ftplib.FTP_TLS):
    """FTP_TLS that resumes the control connection's TLS session on data
    connections (vsftpd's require_ssl_reuse=YES refuses data connections
    without it: "522 SSL connection failed: session reuse required").
    Plain ftplib.FTP_TLS does not do this."""

    def ntransfercmd(self, cmd, rest=None):
        conn, size = ftplib.FTP.ntransfercmd(self, cmd, rest)
        if self._prot_p:
            conn = self.context.wrap_socket(conn, server_hostname=self.host,
                                            session=self.sock.session)
        return conn, size


def connect(host, port, user, pw, cafile=None, timeout=30):
    if cafile:
        ctx = ssl.create_default_context(cafile=cafile)
        ftp = ReuseFTP_TLS(context=ctx, timeout=timeout, encoding="utf-8")
        ftp.connect(host, int(port))
        ftp.auth()
        ftp.login(user, pw)
        ftp.prot_p()
    else:
        ftp = ftplib.FTP(timeout=timeout, encoding="utf-8")
        ftp.connect(host, int(port))
        ftp.login(user, pw)
    return ftp


def cmd_feat(host, port, user, pw, cafile=None):
    # FEAT before login (on the plain control connection) ...
    pre = ftplib.FTP(timeout=30, encoding="utf-8")
    pre.connect(host, int(port))
    try:
        print("# FEAT before login:")
        print(reply(pre.sendcmd, "FEAT").replace(" | ", "\n"))
    finally:
        pre.close()
    # ... and after login (over TLS when a CA file is given).
    ftp = connect(host, port, user, pw, cafile)
    try:
        print("# after login:")
        print(ftp.getwelcome())
        try:
            print(ftp.sendcmd("FEAT"))
        except ftplib.Error as e:
            print("FEAT failed: %s" % e)
        try:
            print(ftp.sendcmd("SYST"))
        except ftplib.Error as e:
            print("SYST failed: %s" % e)
    finally:
        try:
            ftp.quit()
        except Exception:
            ftp.close()
    return 0


def reply(fn, *a):
    try:
        r = fn(*a)
        return " | ".join(str(r).splitlines()) if r is not None else "ok"
    except ftplib.Error as e:
        return " | ".join(str(e).splitlines())
    except Exception as e:  # noqa: BLE001
        return "%s: %s" % (type(e).__name__, e)


def cmd_quirks(host, port, user, pw, root, cafile=None):
    out = []
    t0 = time.monotonic()
    try:
        connect(host, port, user, pw + "-wrong", cafile).close()
        out.append(("bad_login", "accepted?!"))
    except (ftplib.Error, OSError) as e:
        out.append(("bad_login", "%s (after %.1fs)" % (str(e).splitlines()[0],
                                                       time.monotonic() - t0)))
    t0 = time.monotonic()
    ftp = connect(host, port, user, pw, cafile)
    out.append(("login_seconds", "%.2f" % (time.monotonic() - t0)))
    d = "quirks-%d" % os.getpid()
    out.append(("mkd_new", reply(ftp.sendcmd, "MKD " + d)))
    out.append(("mkd_existing", reply(ftp.sendcmd, "MKD " + d)))
    name = d + "/rest.bin"
    out.append(("stor_10", reply(ftp.storbinary, "STOR " + name, io.BytesIO(b"0123456789"))))
    # REST 5 + STOR 3 bytes: non-truncating servers leave 10 bytes
    # "01234abc89", truncating ones leave 8 bytes "01234abc".
    out.append(("rest_stor", reply(ftp.storbinary, "STOR " + name, io.BytesIO(b"abc"), 8192,
                                   None, 5)))
    path = os.path.join(root, d, "rest.bin")
    try:
        with open(path, "rb") as f:
            data = f.read()
        out.append(("rest_stor_disk", "%d bytes %r -> %s" % (
            len(data), data, "TRUNCATES" if len(data) == 8 else
            ("keeps-tail" if len(data) == 10 else "unexpected"))))
    except OSError as e:
        out.append(("rest_stor_disk", "cannot read %s: %s" % (path, e)))
    try:
        ftp.voidcmd("TYPE I")
    except ftplib.Error:
        pass
    out.append(("size", reply(ftp.sendcmd, "SIZE " + name)))
    out.append(("appe", reply(ftp.storbinary, "APPE " + name, io.BytesIO(b"Z"))))
    out.append(("size_after_appe", reply(ftp.sendcmd, "SIZE " + name)))
    out.append(("size_missing", reply(ftp.sendcmd, "SIZE " + d + "/nope")))
    out.append(("dele_missing", reply(ftp.sendcmd, "DELE " + d + "/nope")))
    out.append(("cwd_missing", reply(ftp.sendcmd, "CWD " + d + "/nope")))
    out.append(("rnfr_missing", reply(ftp.sendcmd, "RNFR " + d + "/nope")))
    out.append(("mdtm", reply(ftp.sendcmd, "MDTM " + name)))
    out.append(("mfmt", reply(ftp.sendcmd, "MFMT 20200102030405 " + name)))
    out.append(("site_chmod", reply(ftp.sendcmd, "SITE CHMOD 600 " + name)))
    out.append(("hash", reply(ftp.sendcmd, "HASH " + name)))
    out.append(("xsha256", reply(ftp.sendcmd, "XSHA256 " + name)))
    out.append(("opts_utf8_on", reply(ftp.sendcmd, "OPTS UTF8 ON")))
    out.append(("epsv", reply(ftp.sendcmd, "EPSV")))
    # Reconnect: the EPSV above left a pending passive listener.
    try:
        ftp.close()
    except Exception:
        pass
    ftp = connect(host, port, user, pw, cafile)
    out.append(("pasv", reply(ftp.sendcmd, "PASV")))
    try:
        ftp.close()
    except Exception:
        pass
    ftp = connect(host, port, user, pw, cafile)
    out.append(("mlsd", reply(lambda: len(list(ftp.mlsd(d))))))
    out.append(("dele", reply(ftp.sendcmd, "DELE " + name)))
    out.append(("rmd", reply(ftp.sendcmd, "RMD " + d)))
    try:
        ftp.quit()
    except Exception:
        ftp.close()
    for k, v in out:
        print("%s=%s" % (k, v))
    return 0


def cmd_maxconn(host, port, n):
    socks = []
    try:
        for i in range(int(n)):
            s = socket.create_connection((host, int(port)), timeout=10)
            socks.append(s)
            line = s.makefile("rb").readline().decode("utf-8", "replace").rstrip("\r\n")
            print("conn%d %s" % (i + 1, line))
    finally:
        for s in socks:
            s.close()
    return 0


def main(argv):
    if len(argv) < 2:
        print(__doc__, file=sys.stderr)
        return 2
    cmd, args = argv[1], argv[2:]
    if cmd == "ports":
        return cmd_ports(*args) or 0
    if cmd == "wait":
        return cmd_wait(*args)
    if cmd == "feat":
        return cmd_feat(*args)
    if cmd == "quirks":
        return cmd_quirks(*args)
    if cmd == "maxconn":
        return cmd_maxconn(*args)
    if cmd == "urlpath":
        print(urllib.parse.quote(args[0], safe="/"))
        return 0
    print("unknown subcommand %r" % cmd, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv))
