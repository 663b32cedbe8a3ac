#!/usr/bin/env python3
"""A user-space WAN link for FTP benchmarks (this kernel has no `tc netem`).

  bench/wan_proxy.py UPSTREAM_HOST UPSTREAM_PORT [--rtt-ms 40] [--rate BYTES_PER_S] [--port 0]

Listens on 127.0.0.1 (the port is printed on stdout as `listening PORT`)
and forwards to the FTP server, adding half the RTT to every chunk in each
direction. The connection's own handshake costs one RTT before anything
flows, as SYN and SYN-ACK would. Replies to PASV and EPSV are rewritten so
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
    def __init__(self, rtt, rate):
        self.one_way = rtt / 2.0
        self.rate = rate

    async def pipe(self, reader, writer, rewrite=None):
        """Copies reader to writer, each chunk delivered one_way later."""
        queue = asyncio.Queue()

        async def read():
            buf = b""
            while True:
                data = await reader.read(65536)
                if not data:
                    await queue.put((time.monotonic() + self.one_way, None))
                    return
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
                await queue.put((time.monotonic() + self.one_way, data))

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
    link = Link(args.rtt_ms / 1000.0, args.rate)

    async def data_listener(upstream_port):
        async def on_data(cr, cw):
            await asyncio.sleep(link.one_way * 2)  # the handshake
            try:
                sr, sw = await asyncio.open_connection(args.host, upstream_port)
            except OSError:
                cw.close()
                return
            await asyncio.gather(link.pipe(cr, sw), link.pipe(sr, cw), return_exceptions=True)
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
        await asyncio.sleep(link.one_way * 2)  # the handshake
        try:
            sr, sw = await asyncio.open_connection(args.host, args.upstream_port)
        except OSError:
            cw.close()
            return
        await asyncio.gather(link.pipe(cr, sw), link.pipe(sr, cw, rewrite), return_exceptions=True)

    server = await asyncio.start_server(on_control, "127.0.0.1", args.port)
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
    args = ap.parse_args()
    try:
        asyncio.run(serve(args))
    except KeyboardInterrupt:
        sys.exit(0)


if __name__ == "__main__":
    main()
