#!/usr/bin/env python3
"""Server memory with 100 slow readers behind a 2 MB burst.

    cargo build --release && python3 benches/slow_readers.py [BINARY ...]

For each pollchat binary given (default: target/release/pollchat), and each
engine, it starts `pollchat serve --rate 0` (plus any EXTRA flags after
`--`), connects 100 readers, each behind a small TCP window (SO_RCVBUF
4 KiB, TCP_MAXSEG 536) and reading at most 64 KiB/s, as on a slow link,
then one sender pastes 2 MB (1,000 lines of 2,000 bytes) at once. It
samples the server's RSS every 50 ms until every reader has everything or
has been cut off, and prints one row per run: RSS before the burst, peak
RSS, and how many readers got every line in order.

A server that keeps one queue per reader holds the burst once per reader
behind it (100 x 2 MB); one that keeps it once, in a shared log, holds it
once. Standard library only; loopback only; every server is stopped.
"""

import argparse
import os
import socket
import subprocess
import sys
import threading
import time

READERS = 100
LINES = 1000
LINE_BYTES = 2000
RATE = 64 * 1024  # bytes per second per reader


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def rss_kib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def small_window(port):
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_MAXSEG, 536)
    s.connect(("127.0.0.1", port))
    s.settimeout(20)
    return s


def read_line(sock, buf):
    while b"\n" not in buf:
        chunk = sock.recv(4096)
        if not chunk:
            raise EOFError
        buf += chunk
    line, _, rest = buf.partition(b"\n")
    return line, rest


def slow_reader(sock, result, index):
    """Read at RATE until LINES chat lines arrived in order, or the end."""
    start, taken, buf, want = time.monotonic(), 0, b"", 0
    try:
        while want < LINES:
            due = start + taken / RATE
            if due > time.monotonic():
                time.sleep(due - time.monotonic())
            chunk = sock.recv(RATE // 10)
            if not chunk:
                break
            taken += len(chunk)
            buf += chunk
            while b"\n" in buf:
                line, _, buf = buf.partition(b"\n")
                if line.startswith(b"<sender> "):
                    number = int(line[9:].split(b":", 1)[0])
                    if number != want:
                        raise ValueError(f"line {number}, expected {want}")
                    want += 1
    except (OSError, EOFError, ValueError):
        pass
    result[index] = want


def run(binary, engine, extra):
    port = free_port()
    server = subprocess.Popen(
        [binary, "serve", "-q", "--rate", "0", "--engine", engine,
         "--port", str(port), *extra],
        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 10
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)
        sender = socket.create_connection(("127.0.0.1", port), timeout=20)
        buf = b""
        _, buf = read_line(sender, buf)  # welcome
        sender.sendall(b"/nick sender\n")
        readers = []
        for _ in range(READERS):
            r = small_window(port)
            readers.append(r)
            while True:  # the sender hears each join: all are in the room
                line, buf = read_line(sender, buf)
                if line.endswith(b" joined"):
                    break
        time.sleep(0.5)  # let the join notices drain before measuring
        before = rss_kib(server.pid)
        got = [0] * READERS
        threads = [threading.Thread(target=slow_reader, args=(r, got, i))
                   for i, r in enumerate(readers)]
        for t in threads:
            t.start()
        paste = b"".join(b"%d:%s\n" % (i, b"z" * (LINE_BYTES - 8))
                         for i in range(LINES))
        sender.sendall(paste)
        peak = before
        limit = time.monotonic() + 120
        while any(t.is_alive() for t in threads) and time.monotonic() < limit:
            peak = max(peak, rss_kib(server.pid))
            time.sleep(0.05)
        for r in readers:
            r.close()
        whole = sum(1 for g in got if g == LINES)
        return before, peak, whole
    finally:
        server.kill()
        server.wait()


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("binaries", nargs="*", default=["target/release/pollchat"])
    ap.add_argument("--engines", default="poll,threaded")
    ap.add_argument("--extra", default="", help="more serve flags, space-separated")
    args = ap.parse_args()
    print("| binary | engine | flags | RSS before | peak RSS | growth | readers with every line |")
    print("|---|---|---|---:|---:|---:|---:|")
    for binary in args.binaries:
        for engine in args.engines.split(","):
            extra = args.extra.split()
            before, peak, whole = run(binary, engine, extra)
            print(f"| {binary} | {engine} | {' '.join(extra) or 'defaults'} | "
                  f"{before / 1024:.1f} MiB | {peak / 1024:.1f} MiB | "
                  f"{(peak - before) / 1024:.1f} MiB | {whole} of {READERS} |",
                  flush=True)


if __name__ == "__main__":
    sys.exit(main())
