#!/usr/bin/env python3
"""What each pollchat engine costs, measured side by side in one run.

The figures in docs/engines.md come from this script:

    cargo build --release && python3 benches/engines.py

It starts `pollchat serve` once per engine and per scenario, on loopback,
with `--rate 0`, and drives it from this one Python process (stdlib only,
one thread, an epoll loop):

- threads: /proc/PID/status `Threads` with 0, 100 and 1,000 idle clients;
- memory: server RSS growth per idle client at 1,000 clients (and, for
  what RSS does not show, the growth of the kernel's thread stacks);
- fan-out: 100 receivers, 1 sender at 200 lines/s; latency from the send
  until the last receiver has the line, p50 and p99;
- saturated: the same room with the sender as fast as the receivers keep
  up (at most WINDOW lines ahead of the slowest), deliveries per second;
- one client stops reading: 10 receivers keep reading while an 11th does
  not; does everyone else get every line, and what happens to the stalled
  one.

The client is Python, so the latencies include its own time to read 100
sockets, the same for both engines. The machine is shared: compare the
engines within one run, not runs with each other.
"""

import argparse
import os
import selectors
import socket
import statistics
import subprocess
import sys
import tempfile
import time

WINDOW = 2000  # lines the saturating sender may be ahead of the slowest receiver


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """`pollchat serve` as a child process; stderr goes to a temp file."""

    def __init__(self, binary, engine, *args):
        self.port = free_port()
        self.log = tempfile.TemporaryFile()
        self.proc = subprocess.Popen(
            [binary, "serve", "--port", str(self.port), "--engine", engine,
             "--rate", "0", *args],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=self.log)
        deadline = time.monotonic() + 10
        while True:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                break
            except OSError:
                if time.monotonic() > deadline or self.proc.poll() is not None:
                    raise SystemExit(f"pollchat serve --engine {engine} did not start")
                time.sleep(0.02)

    def status(self, key):
        with open(f"/proc/{self.proc.pid}/status") as f:
            for line in f:
                if line.startswith(key):
                    return int(line.split()[1])
        raise KeyError(key)

    def cpu_seconds(self):
        """User + system CPU time so far (/proc/PID/stat fields 14, 15)."""
        with open(f"/proc/{self.proc.pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def stop(self):
        self.proc.terminate()
        self.proc.wait(timeout=10)


def kernel_stack_kib():
    with open("/proc/meminfo") as f:
        for line in f:
            if line.startswith("KernelStack:"):
                return int(line.split()[1])
    return 0


def connect(port, n):
    """n clients, each past its welcome line; then drain the join notices."""
    socks = []
    for _ in range(n):
        s = socket.create_connection(("127.0.0.1", port))
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        socks.append(s)
    for s in socks:
        s.settimeout(20)
        buf = b""
        while b"\n" not in buf:
            chunk = s.recv(4096)
            if not chunk:
                raise SystemExit("server closed a new client")
            buf += chunk
    drain(socks)
    return socks


def drain(socks, quiet=0.3):
    """Read whatever is pending until nothing arrives for `quiet` seconds."""
    sel = selectors.DefaultSelector()
    for s in socks:
        s.setblocking(False)
        sel.register(s, selectors.EVENT_READ)
    while True:
        events = sel.select(quiet)
        if not events:
            break
        for key, _ in events:
            try:
                key.fileobj.recv(65536)
            except BlockingIOError:
                pass
    sel.close()


def wait_for(check, what, seconds=20):
    deadline = time.monotonic() + seconds
    while not check():
        if time.monotonic() > deadline:
            raise SystemExit(f"timed out waiting for {what}")
        time.sleep(0.05)


def settle(read, seconds=10):
    """Wait until `read()` gives the same value five times 50 ms apart."""
    deadline = time.monotonic() + seconds
    last, same = None, 0
    while same < 5 and time.monotonic() < deadline:
        value = read()
        same = same + 1 if value == last else 0
        last = value
        time.sleep(0.05)
    return last


def idle_costs(binary, engine):
    """Threads at 0/100/1,000 clients; RSS and kernel stack per idle client."""
    srv = Server(binary, engine, "--max-clients", "5000")
    try:
        for s in connect(srv.port, 1):  # warm up: first client's lazy set-up
            s.close()
        settle(lambda: srv.status("Threads:"))
        threads0, rss0, kstack0 = srv.status("Threads:"), srv.status("VmRSS:"), kernel_stack_kib()
        hundred = connect(srv.port, 100)
        threads100 = srv.status("Threads:")
        rest = connect(srv.port, 900)
        time.sleep(0.5)
        threads1000, rss1000, kstack1000 = srv.status("Threads:"), srv.status("VmRSS:"), kernel_stack_kib()
        for s in hundred + rest:
            s.close()
        wait_for(lambda: srv.status("Threads:") == threads0, "threads back to baseline")
        return {
            "threads": (threads0, threads100, threads1000),
            "rss_idle_kib": rss0,
            "rss_per_client_b": (rss1000 - rss0) * 1024 / 1000,
            "kstack_per_client_b": (kstack1000 - kstack0) * 1024 / 1000,
        }
    finally:
        srv.stop()


class Room:
    """`receivers` reading clients and one sender, on one epoll loop."""

    def __init__(self, port, receivers, stalled=0):
        self.receivers = connect(port, receivers)
        self.stalled = connect(port, stalled)
        self.sender = connect(port, 1)[0]
        drain(self.receivers + self.stalled + [self.sender])
        self.sel = selectors.DefaultSelector()
        for i, s in enumerate(self.receivers):
            self.sel.register(s, selectors.EVENT_READ, i)
        self.partial = [b""] * receivers
        self.counts = [0] * receivers
        self.ends_in_x = [False] * receivers

    def poll(self, timeout, on_line=None):
        """Read what is ready; count lines, and report each with its time."""
        for key, _ in self.sel.select(timeout):
            i = key.data
            try:
                data = key.fileobj.recv(65536)
            except BlockingIOError:
                continue
            if not data:
                raise SystemExit("a reading client was disconnected")
            now = time.perf_counter()
            if on_line is None:
                # Count payload lines (`...x`), not notices (`* user3 left`);
                # a chunk may end between the x and its newline.
                self.counts[i] += data.count(b"x\n") + (
                    self.ends_in_x[i] and data.startswith(b"\n"))
                self.ends_in_x[i] = data.endswith(b"x")
                continue
            data = self.partial[i] + data
            *lines, self.partial[i] = data.split(b"\n")
            self.counts[i] += len(lines)
            for line in lines:
                on_line(line, now)

    def close(self):
        self.sel.close()
        for s in self.receivers + self.stalled + [self.sender]:
            s.close()


def fan_out_latency(binary, engine, receivers=100, rate=200, lines=1000):
    """p50/p99 from the send until the last receiver has the line."""
    srv = Server(binary, engine)
    room = Room(srv.port, receivers)
    try:
        sent_at, waiting, latencies = {}, {}, []

        def on_line(line, now):
            seq = int(line.rsplit(b" ", 1)[1])
            waiting[seq] -= 1
            if waiting[seq] == 0:
                latencies.append(now - sent_at[seq])

        start = time.perf_counter()
        seq = 0
        deadline = start + lines / rate + 20
        while len(latencies) < lines:
            now = time.perf_counter()
            if now > deadline:
                raise SystemExit("fan-out run did not finish")
            if seq < lines and now >= start + seq / rate:
                waiting[seq] = receivers
                sent_at[seq] = time.perf_counter()
                room.sender.send(b"%d\n" % seq)
                seq += 1
            next_send = start + seq / rate if seq < lines else now + 1
            room.poll(max(0.0, next_send - time.perf_counter()), on_line)
        q = statistics.quantiles(latencies, n=100)
        return {"p50_ms": q[49] * 1e3, "p99_ms": q[98] * 1e3}
    finally:
        room.close()
        srv.stop()


def saturate(room, seconds):
    """Send as fast as every reader keeps up; returns (lines sent, seconds)."""
    room.sender.setblocking(False)
    line = b"x" * 24 + b"\n"
    batch = line * 100
    out = b""
    sent = 0
    start = time.perf_counter()
    while time.perf_counter() - start < seconds:
        if not out and sent - min(room.counts) < WINDOW:
            out = batch
            sent += 100
        if out:
            try:
                out = out[room.sender.send(out):]
            except BlockingIOError:
                pass
        room.poll(0 if out or sent - min(room.counts) < WINDOW else 0.01)
    deadline = time.perf_counter() + 20
    while min(room.counts) < sent and time.perf_counter() < deadline:
        room.poll(0.1)
    return sent, time.perf_counter() - start


def saturated(binary, engine, receivers=100, seconds=3):
    """Deliveries/s, and the server's CPU time per million deliveries."""
    srv = Server(binary, engine)
    room = Room(srv.port, receivers)
    try:
        cpu0 = srv.cpu_seconds()
        sent, elapsed = saturate(room, seconds)
        delivered = sum(room.counts)
        return {"deliveries_per_s": delivered / elapsed,
                "cpu_s_per_million": (srv.cpu_seconds() - cpu0) / delivered * 1e6,
                "missing": sent * receivers - delivered}
    finally:
        room.close()
        srv.stop()


def one_stops_reading(binary, engine, receivers=10, seconds=3):
    """10 readers and one client that never reads, under a saturating sender."""
    srv = Server(binary, engine)
    room = Room(srv.port, receivers, stalled=1)
    try:
        sent, elapsed = saturate(room, seconds)
        stalled = room.stalled[0]
        stalled.setblocking(True)
        stalled.settimeout(20)
        got, tail = 0, b""
        while True:  # what it was sent before the server hung up
            try:
                chunk = stalled.recv(1 << 20)
            except ConnectionResetError:
                break
            if not chunk:
                break
            got += len(chunk)
            tail = (tail + chunk)[-200:]
        return {"expected": sent * receivers,
                "missing": sent * receivers - sum(room.counts),
                "deliveries_per_s": sum(room.counts) / elapsed,
                "stalled_kib": got / 1024,
                "stalled_told": b"! disconnected: too slow to read" in tail}
    finally:
        room.close()
        srv.stop()


def median_of(runs):
    """Per key, the median over the runs (numbers only; the rest from run 1)."""
    out = {}
    for key, first in runs[0].items():
        if isinstance(first, dict):
            out[key] = median_of([r[key] for r in runs])
        elif isinstance(first, (int, float)) and not isinstance(first, bool):
            out[key] = statistics.median(r[key] for r in runs)
        else:
            out[key] = first
    return out


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--bin", default="target/release/pollchat")
    parser.add_argument("--repeats", type=int, default=3,
                        help="run everything this often, engines alternating; report medians")
    args = parser.parse_args()
    if not os.path.exists(args.bin):
        raise SystemExit(f"{args.bin} not found: run `cargo build --release` first")
    engines = ("poll", "threaded")
    runs = {engine: [] for engine in engines}
    for run in range(1, args.repeats + 1):
        for engine in engines:
            print(f"{engine}: run {run} of {args.repeats}", file=sys.stderr)
            runs[engine].append({
                **idle_costs(args.bin, engine),
                **fan_out_latency(args.bin, engine),
                "saturated": saturated(args.bin, engine),
                "stalled": one_stops_reading(args.bin, engine),
            })
    results = {engine: median_of(runs[engine]) for engine in engines}
    rows = [
        ("threads at 0 / 100 / 1,000 clients",
         lambda r: " / ".join(f"{n:,}" for n in r["threads"])),
        ("server RSS, no clients", lambda r: f"{r['rss_idle_kib'] / 1024:.1f} MiB"),
        ("RSS per idle client (1,000 clients)", lambda r: f"{r['rss_per_client_b']:,.0f} B"),
        ("kernel thread stacks per client (not in RSS)",
         lambda r: f"{r['kstack_per_client_b']:,.0f} B"),
        ("fan-out to 100, 200 lines/s: p50", lambda r: f"{r['p50_ms']:.2f} ms"),
        ("fan-out to 100, 200 lines/s: p99", lambda r: f"{r['p99_ms']:.2f} ms"),
        ("saturated, 100 receivers: deliveries/s",
         lambda r: f"{r['saturated']['deliveries_per_s']:,.0f} "
                   f"({r['saturated']['missing']:.0f} missing)"),
        ("saturated: server CPU per million deliveries",
         lambda r: f"{r['saturated']['cpu_s_per_million']:.3f} s"),
        ("1 of 11 stops reading: deliveries/s to the other 10",
         lambda r: f"{r['stalled']['deliveries_per_s']:,.0f} ({r['stalled']['missing']:.0f} "
                   f"of {r['stalled']['expected']:,.0f} missing)"),
        ("1 of 11 stops reading: what it got before the cut-off",
         lambda r: f"{r['stalled']['stalled_kib']:,.0f} KiB, "
                   + ("then `! disconnected: too slow to read`" if r["stalled"]["stalled_told"]
                      else "no notice (its socket was full)")),
    ]
    print(f"median of {args.repeats} runs per engine, engines alternating")
    print()
    print("| measure | poll | threaded |")
    print("|---|---|---|")
    for name, show in rows:
        print(f"| {name} | {show(results['poll'])} | {show(results['threaded'])} |")


if __name__ == "__main__":
    main()
