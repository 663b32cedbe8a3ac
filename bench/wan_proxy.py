#!/usr/bin/env python3
"""A user-space WAN link for FTP benchmarks (this kernel has no `tc netem`).

  bench/wan_proxy.py UPSTREAM_HOST UPSTREAM_PORT [--rtt-ms 40] [--rate BYTES_PER_S] [--port 0]
                    [--trace FILE]

Listens on 127.0.0.1 (the port is printed on stdout as `listening PORT`)
and forwards to the FTP server, adding half the RTT to every chunk in each
direction. The handshake is timed as TCP's: the server sees the connection
half an RTT after the client's connect (the SYN's way there), and the
client's first bytes reach the server no earlier than one and a half RTTs
after it (SYN, SYN-ACK, then the bytes' own way), whatever the loopback
connect to this proxy told the client. Replies to PASV and EPSV are rewritten so
that data connections cross the same link: each passive port gets a
listener of its own here. Bandwidth is not reduced by the delay (chunks are
pipelined, not stop-and-wait); `--rate` caps each connection, per direction.
"""
import argparse
import asyncio
import re
import sys
import time

PASV = re.compile(rb"^227 .*?\(?(\d+),(\d+),(\d+),(\d+),(\d+),(\d+)\)?")
EPSV = re.compile(rb"^229 .*\(\|\|\|(\d+)\|\)")


class Link:
    def __init__(self, rtt, rate, trace=None):
        self.one_way = rtt / 2.0
        self.rate = rate
        self.trace = trace
        self.t0 = time.monotonic()

    def log(self, conn, direction, data):
        """Control-connection lines, with the time they reach the far end."""
        if not self.trace:
            return
        t = time.monotonic() - self.t0 + self.one_way
        for line in data.split(b"\n"):
            if line.strip():
                text = line.strip().decode("utf-8", "replace")
                if text.startswith("PASS "):
                    text = "PASS ***"
                self.trace.write(f"{t * 1000:10.1f} ms c{conn} {direction} {text}\n")
        self.trace.flush()

    async def handshake(self, client_writer, host, port):
        """The SYN's way to the server, then the upstream connection; returns
        (reader, writer, when the client's first bytes may arrive)."""
        start = time.monotonic()
        await asyncio.sleep(self.one_way)
        try:
            sr, sw = await asyncio.open_connection(host, port)
        except OSError:
            client_writer.close()
            return None, None, 0.0
        return sr, sw, start + 3 * self.one_way

    async def pipe(self, reader, writer, rewrite=None, not_before=0.0, tag=None):
        """Copies reader to writer, each chunk delivered one_way later (and
        not before the monotonic time `not_before`)."""
        queue = asyncio.Queue()

        async def read():
            buf = b""
            while True:
                data = await reader.read(65536)
                if not data:
                    await queue.put((max(time.monotonic() + self.one_way, not_before), None))
                    return
                if tag:
                    self.log(tag[0], tag[1], data)
                if rewrite:
                    buf += data
                    lines = buf.split(b"\n")
                    buf = lines.pop()
                    out = b""
                    for line in lines:
                        out += await rewrite(line + b"\n")
                    data = out
                    if not data:
                        continue
                await queue.put((max(time.monotonic() + self.one_way, not_before), data))

        async def write():
            sent, start = 0, time.monotonic()
            while True:
                due, data = await queue.get()
                wait = due - time.monotonic()
                if wait > 0:
                    await asyncio.sleep(wait)
                if data is None:
                    try:
                        writer.write_eof()
                    except Exception:
                        pass
                    return
                if self.rate:
                    sent += len(data)
                    ahead = start + sent / self.rate - time.monotonic()
                    if ahead > 0:
                        await asyncio.sleep(ahead)
                writer.write(data)
                await writer.drain()

        reading = asyncio.ensure_future(read())
        try:
            await write()
        except (ConnectionError, OSError):
            pass
        finally:
            reading.cancel()
            writer.close()


async def serve(args):
    link = Link(args.rtt_ms / 1000.0, args.rate,
                open(args.trace, "w") if args.trace else None)
    conns = [0]

    async def data_listener(upstream_port):
        async def on_data(cr, cw):
            sr, sw, first = await link.handshake(cw, args.host, upstream_port)
            if sr is None:
                return
            await asyncio.gather(link.pipe(cr, sw, not_before=first), link.pipe(sr, cw), return_exceptions=True)
            server.close()

        server = await asyncio.start_server(on_data, "127.0.0.1", 0)
        return server.sockets[0].getsockname()[1]

    async def rewrite(line):
        m = PASV.match(line)
        if m:
            port = int(m.group(5)) * 256 + int(m.group(6))
            mine = await data_listener(port)
            return b"227 Entering Passive Mode (127,0,0,1,%d,%d).\r\n" % (mine // 256, mine % 256)
        m = EPSV.match(line)
        if m:
            mine = await data_listener(int(m.group(1)))
            return b"229 Entering Extended Passive Mode (|||%d|)\r\n" % mine
        return line

    async def on_control(cr, cw):
        sr, sw, first = await link.handshake(cw, args.host, args.upstream_port)
        if sr is None:
            return
        conns[0] += 1
        n = conns[0]
        await asyncio.gather(link.pipe(cr, sw, not_before=first, tag=(n, "->")),
                             link.pipe(sr, cw, rewrite, tag=(n, "<-")), return_exceptions=True)

    if args.tls_ports:
        # TLS hides the control connection's PASV/EPSV replies from us:
        # the link listens on every passive port of the server instead, on
        # an address of its own, and clients reach the data ports through
        # it (EPSV clients use the control connection's address anyway).
        lo, hi = (int(x) for x in args.tls_ports.split("-"))

        def fixed(port):
            async def on_data(cr, cw):
                sr, sw, first = await link.handshake(cw, args.host, port)
                if sr is None:
                    return
                await asyncio.gather(link.pipe(cr, sw, not_before=first), link.pipe(sr, cw),
                                     return_exceptions=True)
            return on_data

        for port in range(lo, hi + 1):
            await asyncio.start_server(fixed(port), args.listen, port)
        rewrite = None  # replies pass through untouched (and unreadable)
    server = await asyncio.start_server(
        on_control, args.listen, args.port)
    print(f"listening {server.sockets[0].getsockname()[1]}", flush=True)
    async with server:
        await server.serve_forever()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("host")
    ap.add_argument("upstream_port", type=int)
    ap.add_argument("--rtt-ms", type=float, default=40.0)
    ap.add_argument("--rate", type=float, default=0.0)
    ap.add_argument("--port", type=int, default=0)
    ap.add_argument("--trace", help="write control lines, timed, to this file")
    ap.add_argument("--listen", default="127.0.0.1", help="address to listen on")
    ap.add_argument("--tls-ports", help="MIN-MAX: the server's passive ports, for FTPS "
                    "(listen on each, on --listen, which must differ from the server's address)")
    args = ap.parse_args()
    try:
        asyncio.run(serve(args))
    except KeyboardInterrupt:
        sys.exit(0)


if __name__ == "__main__":
    main()
