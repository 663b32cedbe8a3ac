#!/usr/bin/env python3
"""pyftpdlib with server quirks chosen per login, for ftpdrop's interop tests.

Every user name that starts with "q" is accepted with the configured password;
the dash-separated words after it turn quirks on for that session, e.g.
`q-noepsv-pasvnat`. All users share one root directory.

  noepsv    EPSV answers 502 (and FEAT does not list it): clients must use PASV
  pasvnat   PASV advertises 10.255.255.1, an address nobody can reach
  nofeat    FEAT answers 502
  badfeat   FEAT lines are not indented (RFC 2389 says they must be)
  nornto    RNTO onto an existing file answers 550 (as IIS and others do)
  dropbox   a bank or partner inbox that takes STOR and nothing else: SIZE,
            MDTM, RNFR/RNTO, DELE, APPE, REST and listings answer 502, and a
            STOR to a hidden name (a temp file) answers 553
  iis       as IIS FTP documents it: transfers start with `125 Data connection
            already open; Transfer starting.` (not 150), a rename onto an
            existing name answers `550 Cannot create a file when that file
            already exists.`, and a partial upload is deleted when its data
            connection breaks (keepPartialUploads=false; learn.microsoft.com,
            IIS <ftpServer><fileHandling keepPartialUploads>)
  host      IIS virtual hosts: `HOST <name>` must come before USER, or USER
            answers 530 (RFC 7151; IIS "FTP Site Bindings" with host names)
  protp     (TLS instance) a transfer without `PROT P` answers `521 PROT P
            required` (FileZilla Server's reply)
  oddreplies
            multi-line replies as Windows servers and banners write them:
            the 226, 250 and 257 replies come as several lines, indented
            differently, one not indented at all, one empty (RFC 959 section
            4.2 lets any line but the last be anything)
  cp1251    after login, names are cp1251, as on Russian hosting and Windows
            servers without UTF-8: FEAT does not list UTF8, `OPTS UTF8 ON`
            answers 501, and a doubled 0xFF (Telnet IAC, RFC 854 section 3;
            `я` is 0xFF in cp1251) is read as one byte. Names land on disk
            decoded (as UTF-8), so a name sent as UTF-8 shows as mojibake
  xsha256 xsha1 xmd5 xcrc
            FEAT lists only these hash commands; replies are `250 <HEX>`
  hash      FEAT lists `HASH SHA-1*;MD5;CRC32` (no SHA-256); `OPTS HASH` works
  corrupt   the first upload to each path gets one byte flipped after it is
            stored (size unchanged): only a hash or a read-back notices
  bsdrest   as BSD-derived ftpds: a REST not followed at once by STOR, APPE
            or RETR is forgotten, and the STOR then truncates the file
  noappe    APPE answers 502 "not implemented"
  norest    REST answers 502 "not implemented" (and FEAT does not list it)
  reorder   an event-loop server that answers out of order under load: the
            reply to SIZE comes 20-60 ms late, after the replies to the
            commands sent behind it. A pipelining probe (MKD, RNFR, RNTO,
            RMD) sees every reply in order; a pipelined rename + SIZE +
            next upload does not
  tlsfirst  (TLS instance only) the 150/125 to a transfer command is sent
            only once the data connection's TLS handshake is complete, so a
            client that waits for the 150 before its handshake hangs

With FTPDROP_QUIRKS_TLS=cert.pem:key.pem the server speaks explicit TLS
(AUTH TLS, PROT P; pyOpenSSL), with TLS optional, and is strict as
FileZilla Server 0.9 is: a command sent behind AUTH TLS, PBSZ, PROT, USER
or PASS before its reply ends the session (421), for every login.

Usage: quirky_ftpd.py HOST PORT ROOT PASSWORD PASV_MIN PASV_MAX
"""

import hashlib
import logging
import os
import random
import sys
import threading
import zlib

from pyftpdlib.authorizers import DummyAuthorizer
from pyftpdlib.handlers import FTPHandler
from pyftpdlib.servers import FTPServer

HOST, PORT, ROOT, PASSWORD, PASV_MIN, PASV_MAX = sys.argv[1:7]
TLS = os.environ.get("FTPDROP_QUIRKS_TLS")


class IisAbort:
    """`iis`: an upload whose data connection was reset is aborted, not
    complete (pyftpdlib takes any close for the end of an upload), so its
    partial file is deleted (see `on_incomplete_file_received`)."""

    def handle_close(self):
        # Called from inside the `except` of pyftpdlib's recv on a reset.
        err = sys.exc_info()[1]
        if (
            not self._closed
            and self.receive
            and "iis" in getattr(self.cmd_channel, "quirks", ())
            and isinstance(err, ConnectionResetError)
        ):
            self.transfer_finished = False
            self._resp = ("426 Connection closed; transfer aborted.", logging.getLogger("pyftpdlib").debug)
            self.close()
            return
        super().handle_close()


if TLS:
    from pyftpdlib.handlers import TLS_DTPHandler, TLS_FTPHandler

    BaseHandler = TLS_FTPHandler

    class QuirkDTP(IisAbort, TLS_DTPHandler):
        """Releases a transfer reply held back by `tlsfirst`."""

        def handle_ssl_established(self):
            super().handle_ssl_established()
            held = getattr(self.cmd_channel, "held_reply", None)
            if held:
                self.cmd_channel.held_reply = None
                self.cmd_channel.respond(held)

else:
    from pyftpdlib.handlers import DTPHandler

    BaseHandler = FTPHandler

    class QuirkDTP(IisAbort, DTPHandler):
        pass
UNROUTABLE = "10.255.255.1"
X_COMMANDS = {
    "XSHA256": ("sha256", "xsha256"),
    "XSHA1": ("sha1", "xsha1"),
    "XMD5": ("md5", "xmd5"),
    "XCRC": ("crc32", "xcrc"),
}
HASH_ALGOS = {"SHA-1": "sha1", "MD5": "md5", "CRC32": "crc32"}

_corrupted = set()
_corrupted_lock = threading.Lock()


def digest(path, algo):
    if algo == "crc32":
        crc = 0
        with open(path, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                crc = zlib.crc32(block, crc)
        return "%08x" % (crc & 0xFFFFFFFF)
    h = hashlib.new(algo)
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


class QuirkAuthorizer(DummyAuthorizer):
    def validate_authentication(self, username, password, handler):
        if username.startswith("q") and not self.has_user(username):
            self.add_user(username, PASSWORD, ROOT, perm="elradfmwMT")
        return super().validate_authentication(username, password, handler)


proto = dict(BaseHandler.proto_cmds)
proto["HOST"] = dict(perm=None, auth=False, arg=True, help="Syntax: HOST <SP> host-name.")
for _cmd in list(X_COMMANDS) + ["HASH"]:
    proto[_cmd] = dict(perm="r", auth=True, arg=True, help=f"Syntax: {_cmd} <SP> file-name.")


class QuirkHandler(BaseHandler):
    proto_cmds = proto
    quirks = frozenset()
    hash_algo = "SHA-1"
    held_reply = None

    DROPBOX_REFUSES = ("SIZE", "MDTM", "MFMT", "RNFR", "RNTO", "DELE", "APPE", "REST",
                       "LIST", "NLST", "MLSD", "MLST", "HASH", "XSHA256", "XSHA1",
                       "XMD5", "XCRC", "SITE")

    def pre_process_command(self, line, cmd, arg):
        if "bsdrest" in self.quirks and cmd not in ("REST", "STOR", "APPE", "RETR"):
            self._restart_position = 0
        if "dropbox" in self.quirks:
            if cmd in self.DROPBOX_REFUSES:
                self.respond(f"502 {cmd} is not allowed in this drop box.")
                return
            if cmd == "STOR" and os.path.basename(arg.rstrip("/")).startswith("."):
                self.respond("553 Hidden names are not allowed in this drop box.")
                return
        super().pre_process_command(line, cmd, arg)

    def ftp_REST(self, line):
        if "norest" in self.quirks:
            self.respond("502 Command 'REST' not implemented.")
            return
        super().ftp_REST(line)

    def ftp_APPE(self, file):
        if "noappe" in self.quirks:
            self.respond("502 Command 'APPE' not implemented.")
            return
        return super().ftp_APPE(file)

    host_sent = None

    def _strict(self, cmd):
        """(TLS instance) Anything pipelined behind `cmd` before its reply
        ends the session, as FileZilla Server 0.9 does after AUTH TLS."""
        if TLS and getattr(self, "ac_in_buffer", b""):
            self.respond(f"421 A command was sent behind {cmd} before its reply; disconnecting.")
            self.close_when_done()
            return True
        return False

    def ftp_AUTH(self, line):
        if not self._strict("AUTH"):
            super().ftp_AUTH(line)

    def ftp_PBSZ(self, line):
        if not self._strict("PBSZ"):
            super().ftp_PBSZ(line)

    def ftp_PROT(self, line):
        if not self._strict("PROT"):
            super().ftp_PROT(line)

    def ftp_PASS(self, line):
        if not self._strict("PASS"):
            super().ftp_PASS(line)

    @staticmethod
    def _quirks_of(user):
        return frozenset(user.split("-")[1:])

    def ftp_HOST(self, line):
        self.host_sent = line
        self.respond(f"220 Host {line} accepted.")

    def ftp_USER(self, line):
        if self._strict("USER"):
            return
        if "host" in self._quirks_of(line) and not self.host_sent:
            self.respond("530 Valid hostname is expected.")
            return
        super().ftp_USER(line)

    def respond(self, resp, logfun=None):
        if "iis" in self.quirks and resp.startswith("150"):
            resp = "125 Data connection already open; Transfer starting."
        if "oddreplies" in self.quirks and resp[:4] in ("226 ", "250 ", "257 "):
            code = resp[:3]
            resp = (f"{code}-Odd but valid, as RFC 959 allows:\r\n"
                    "   indented by three\r\n"
                    "not indented at all\r\n"
                    "\r\n"
                    f" {code} indented, with the code: not the last line\r\n"
                    + resp)
        if logfun is None:
            return super().respond(resp)
        return super().respond(resp, logfun)

    def on_incomplete_file_received(self, file):
        if "iis" in self.quirks:
            try:
                os.remove(file)
            except OSError:
                pass

    def ftp_STOR(self, file, mode="w"):
        if "protp" in self.quirks and not getattr(self, "_prot", False):
            self.respond("521 PROT P required.")
            return
        if "tlsfirst" not in self.quirks or not self._prot:
            return super().ftp_STOR(file, mode)
        # Hold the 150/125 until the data connection's handshake is done.
        real, held = self.respond, []

        def capture(resp, logfun=None):
            if resp[:3] in ("150", "125"):
                held.append(resp)
            else:
                real(resp)

        self.respond = capture
        try:
            result = super().ftp_STOR(file, mode)
        finally:
            del self.respond
        if held:
            dc = self.data_channel
            if dc is not None and not dc._ssl_accepting and dc._ssl_established:
                self.respond(held[0])
            else:
                self.held_reply = held[0]
        return result

    def on_login(self, username):
        self.quirks = frozenset(username.split("-")[1:])
        if "cp1251" in self.quirks:
            self.encoding = "cp1251"
            self.unicode_errors = "strict"
        if "pasvnat" in self.quirks:
            self.masquerade_address = UNROUTABLE

    def decode(self, bytes):
        if "cp1251" in self.quirks:
            bytes = bytes.replace(b"\xff\xff", b"\xff")
        return super().decode(bytes)

    def ftp_EPSV(self, line):
        if "noepsv" in self.quirks:
            self.respond("502 EPSV not implemented.")
            return
        super().ftp_EPSV(line)

    def ftp_FEAT(self, line):
        if "nofeat" in self.quirks:
            self.respond("502 Command not implemented.")
            return
        feats = ["TVFS", "EPRT"]
        if "dropbox" not in self.quirks:
            feats += ["MDTM", "SIZE"]
        if "cp1251" not in self.quirks:
            feats.append("UTF8")
        if "norest" not in self.quirks:
            feats.append("REST STREAM")
        if "noepsv" not in self.quirks:
            feats.append("EPSV")
        for cmd, (_, quirk) in X_COMMANDS.items():
            if quirk in self.quirks:
                feats.append(cmd)
        if "hash" in self.quirks:
            feats.append("HASH SHA-1*;MD5;CRC32")
        indent = "" if "badfeat" in self.quirks else " "
        self.push("211-Features supported:\r\n")
        self.push("".join(f"{indent}{f}\r\n" for f in sorted(feats)))
        self.respond("211 End FEAT.")

    def ftp_OPTS(self, line):
        if line.upper().startswith("UTF8") and "cp1251" in self.quirks:
            self.respond("501 UTF8 is not supported.")
            return
        if line.upper().startswith("HASH") and "hash" in self.quirks:
            algo = line[4:].strip().upper()
            if not algo:
                self.respond(f"200 {self.hash_algo}")
            elif algo in HASH_ALGOS:
                self.hash_algo = algo
                self.respond(f"200 {algo}")
            else:
                self.respond("501 Unknown algorithm, current selection not changed.")
            return
        super().ftp_OPTS(line)

    def _x_hash(self, cmd, path):
        algo, quirk = X_COMMANDS[cmd]
        if quirk not in self.quirks:
            self.respond(f'500 Command "{cmd}" not understood.')
            return
        if not os.path.isfile(path):
            self.respond("550 No such file.")
            return
        self.respond("250 " + digest(path, algo).upper())

    def ftp_XSHA256(self, path):
        self._x_hash("XSHA256", path)

    def ftp_XSHA1(self, path):
        self._x_hash("XSHA1", path)

    def ftp_XMD5(self, path):
        self._x_hash("XMD5", path)

    def ftp_XCRC(self, path):
        self._x_hash("XCRC", path)

    def ftp_HASH(self, path):
        if "hash" not in self.quirks:
            self.respond('500 Command "HASH" not understood.')
            return
        if not os.path.isfile(path):
            self.respond("550 No such file.")
            return
        size = os.path.getsize(path)
        hexd = digest(path, HASH_ALGOS[self.hash_algo])
        self.respond(f"213 {self.hash_algo} 0-{size} {hexd} {self.fs.fs2ftp(path)}")

    def ftp_SIZE(self, path):
        if "reorder" not in self.quirks:
            return super().ftp_SIZE(path)
        real, held = self.respond, []
        self.respond = lambda resp, logfun=None: held.append(resp)
        try:
            super().ftp_SIZE(path)
        finally:
            del self.respond

        def late():
            if not self._closed:
                for resp in held:
                    real(resp)

        self.ioloop.call_later(random.uniform(0.02, 0.06), late, _errback=self.handle_error)

    def ftp_RNTO(self, path):
        if "iis" in self.quirks and self._rnfr and os.path.exists(path):
            self._rnfr = None
            self.respond("550 Cannot create a file when that file already exists.")
            return
        if "nornto" in self.quirks and self._rnfr and os.path.exists(path):
            self._rnfr = None
            self.respond("550 Cannot rename: the target exists.")
            return
        return super().ftp_RNTO(path)

    def on_file_received(self, file):
        if "corrupt" not in self.quirks:
            return
        with _corrupted_lock:
            if file in _corrupted:
                return
            _corrupted.add(file)
        size = os.path.getsize(file)
        if size == 0:
            return
        with open(file, "r+b") as f:
            f.seek(size // 2)
            b = f.read(1)
            f.seek(size // 2)
            f.write(bytes([b[0] ^ 0xFF]))


def main():
    authorizer = QuirkAuthorizer()
    QuirkHandler.authorizer = authorizer
    QuirkHandler.passive_ports = range(int(PASV_MIN), int(PASV_MAX) + 1)
    QuirkHandler.banner = "ftpdrop interop pyftpdlib-quirks ready"
    QuirkHandler.permit_foreign_addresses = False
    QuirkHandler.dtp_handler = QuirkDTP
    if TLS:
        QuirkHandler.certfile, QuirkHandler.keyfile = TLS.split(":")
    server = FTPServer((HOST, int(PORT)), QuirkHandler)
    server.max_cons = 256
    server.serve_forever()


if __name__ == "__main__":
    main()
