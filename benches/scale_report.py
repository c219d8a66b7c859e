#!/usr/bin/env python3
"""docs/scale.md and docs/scale.svg from what benches/scale.sh measured.

    python3 benches/scale_report.py OUT DOCS

OUT holds the runs: p1-ENGINE-N.json (a `pollchat bench --json` report)
with p1-ENGINE-N.exit.json (did the server exit, what capped it), and
p2-N.json with p2-N.setup.json and p2-N.samples (one line a second:
unix_ms, RSS KiB and CPU ticks of the nodes, of Redis and of the bench,
TCP socket memory in pages, slab KiB). Stdlib only.
"""

import json
import math
import os
import re
import sys

OUT, DOCS = sys.argv[1], sys.argv[2]
TICK = os.sysconf("SC_CLK_TCK")
PAGE = os.sysconf("SC_PAGE_SIZE")


def load(name):
    try:
        with open(os.path.join(OUT, name)) as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def text(name):
    try:
        with open(os.path.join(OUT, name)) as f:
            return f.read().strip()
    except OSError:
        return ""


def runs(prefix):
    found = []
    for name in os.listdir(OUT):
        m = re.fullmatch(prefix + r"(\d+)\.json", name)
        if m:
            found.append(int(m.group(1)))
    return sorted(found)


def resource(err):
    """The resource a failed run names, from the bench's error line."""
    lowered = err.lower()
    for needle, what in [
        ("too many open files", "open files (RLIMIT_NOFILE or fs.file-max)"),
        ("cannot assign requested address", "ephemeral ports (add --source addresses)"),
        ("address already in use", "ephemeral ports (add --source addresses)"),
        ("cannot allocate memory", "memory"),
        ("no buffer space", "kernel socket memory (tcp_mem)"),
        ("connect timeout", "time: not everyone connected before --connect-timeout"),
        ("closed connection", "a server refused or dropped clients (see its log)"),
    ]:
        if needle in lowered:
            return what
    return err.splitlines()[0] if err else "unknown (no report, no error)"


def ms(us):
    return us / 1000.0


def part1_rows(engine):
    rows, points = [], []
    for n in runs(f"p1-{engine}-"):
        r = load(f"p1-{engine}-{n}.json")
        ex = load(f"p1-{engine}-{n}.exit.json") or {}
        if r is None:
            err = text(f"p1-{engine}-{n}.err")
            rows.append(f"| {n:,} | stopped: {resource(err)} | | | | | | |")
            continue
        m = r.get("memory") or {}
        sd = r.get("shutdown") or {}
        join = m.get("join_cpu_seconds", 0.0)
        f = r["fanout_us"]
        rows.append(
            f"| {n:,} | {m.get('bytes_per_connection', 0):.0f} | "
            f"{ms(f['p50']):.1f} / {ms(f['p99']):.1f} | {m.get('idle_cpu_percent', 0):.1f} | "
            f"{r['connect_seconds']:.2f} s, CPU {join:.2f} s ({1e6 * join / max(n, 1):.0f} µs/join) | "
            f"{r['lost']} of {r['sent'] * r['receivers']:,} | "
            f"{sd.get('told', 0):,}/{sd.get('closed', 0):,} in {sd.get('seconds', 0):.2f} s, "
            f"exited: {ex.get('exited', '?')} | {r['receivers_disconnected']} |"
        )
        points.append((n, m.get("bytes_per_connection", 0), ms(f["p99"])))
    # What capped the server, from its listening line:
    # "listening on ADDR (engine: poll; at most N clients, ...)".
    cap = ""
    if runs(f"p1-{engine}-"):
        log = text(f"p1-{engine}-{runs(f'p1-{engine}-')[-1]}.log")
        m = re.search(r"\(engine: \w+; (.*)\)$", log, re.MULTILINE)
        cap = m.group(1) if m else ""
    return rows, points, cap


def samples(n):
    rows = []
    for line in text(f"p2-{n}.samples").splitlines():
        parts = line.split()
        if len(parts) == 9:
            rows.append([int(x) for x in parts])
    return rows


def cpu_in(rows, window, column):
    """Percent of one core used by a group over the load window."""
    start, end = window
    inside = [r for r in rows if start - 1000 <= r[0] <= end + 1000]
    if len(inside) < 2:
        return 0.0
    a, b = inside[0], inside[-1]
    span = (b[0] - a[0]) / 1000.0
    return 100.0 * (b[column] - a[column]) / TICK / span if span > 0 else 0.0


def part2_rows():
    rows, mem_rows, points, stops = [], [], [], []
    for n in runs("p2-"):
        r = load(f"p2-{n}.json")
        setup = load(f"p2-{n}.setup.json") or {}
        s = samples(n)
        if r is None:
            err = text(f"p2-{n}.err")
            stops.append((n, resource(err), err))
            rows.append(f"| {n:,} | {setup.get('nodes', '?')} | {setup.get('workers', '?')} | stopped: {resource(err)} | | | | |")
            continue
        f = r["fanout_us"]
        w = r.get("load_window_unix_ms", [0, 0])
        rows.append(
            f"| {n:,} | {setup.get('nodes')} | {r['workers']} | {r['receivers']:,} | "
            f"{r['lost']} of {r['sent'] * r['receivers']:,} | "
            + (f"{ms(f['p50']) / 1000:.2f} / {ms(f['p99']) / 1000:.2f} ({f['count']} of {r['sent']} lines) | "
               if f["count"] else f"none: 0 of {r['sent']} lines reached everyone | ")
            + f"{r['connect_seconds']:.0f} s | {r['machine_idle_cpu_percent']:.1f}% |"
        )
        if s:
            base, peak = s[0], [max(col) for col in zip(*s)]
            per = lambda col, unit: (peak[col] - base[col]) * unit / n  # noqa: E731
            nodes_b = per(1, 1024)
            redis_b = per(3, 1024)
            bench_b = r.get("bench_rss_bytes", 0) / n
            kernel_b = per(7, PAGE) + per(8, 1024)
            mem_rows.append(
                f"| {n:,} | {nodes_b:.0f} | {bench_b:.0f} | {redis_b:.1f} | "
                f"{per(7, PAGE):.0f} + {per(8, 1024):.0f} | "
                f"{nodes_b + bench_b + redis_b + kernel_b:,.0f} | "
                f"{cpu_in(s, w, 2):.0f}% / {cpu_in(s, w, 4):.0f}% / {cpu_in(s, w, 6):.0f}% |"
            )
            points.append((n, nodes_b, ms(f["p99"]) if f["count"] else None))
        if r["lost"] or f["count"] < r["sent"]:
            stops.append((n, short_of(n, r, s), ""))
    return rows, mem_rows, points, stops


def short_of(n, r, s):
    """Why a run that connected everyone still missed lines: the nodes'
    own log lines about their Redis link, and how busy the machine was."""
    lost_link = unreachable = 0
    for name in os.listdir(OUT):
        if re.fullmatch(f"p2-{n}-node\\d+\\.log", name):
            log = text(name)
            lost_link += log.count("link lost")
            unreachable += log.count("Redis unreachable")
    busy = r["machine_idle_cpu_percent"]
    return (
        f"{r['lost']:,} of {r['sent'] * r['receivers']:,} deliveries missed the {r['sent']}-line run and its drain; "
        f"{r['fanout_us']['count']} of {r['sent']} lines reached everyone. The nodes logged {lost_link} Redis "
        f"link losses (no reply within 3 s) and {unreachable} 'Redis unreachable'; the machine was "
        f"{busy:.0f}% busy before the first line, still working through the join storm: CPU (2 cores for "
        f"{r['workers']} bench workers, the nodes and Redis)"
    )


def svg(series):
    """Two log-log panels: server RSS per client, and fan-out p99, vs N."""
    width, height, pad = 900, 360, 60
    panel = (width - 3 * pad) // 2
    colours = {"poll, one process": "#1f77b4", "threaded, one process": "#d62728", "cluster (nodes through Redis)": "#2ca02c"}
    xs = [p[0] for pts in series.values() for p in pts] or [1000, 1000000]
    x0, x1 = math.log10(min(xs)) - 0.1, math.log10(max(xs)) + 0.1
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" font-family="sans-serif" font-size="12">',
           '<rect width="100%" height="100%" fill="white"/>']
    for k, (title, idx, unit) in enumerate([("server RSS per client (bytes)", 1, ""), ("fan-out p99: the last client has the line (ms)", 2, "")]):
        left = pad + k * (panel + pad)
        top, bottom = 40, height - 60
        ys = [max(p[idx], 1e-3) for pts in series.values() for p in pts if p[idx] is not None] or [1, 10]
        y0, y1 = math.floor(math.log10(min(ys))), math.ceil(math.log10(max(ys)))
        if y0 == y1:
            y1 += 1
        px = lambda x: left + (math.log10(x) - x0) / (x1 - x0) * panel  # noqa: E731
        py = lambda y: bottom - (math.log10(max(y, 1e-3)) - y0) / (y1 - y0) * (bottom - top)  # noqa: E731
        out.append(f'<text x="{left}" y="24" font-weight="bold">{title}</text>')
        out.append(f'<line x1="{left}" y1="{bottom}" x2="{left + panel}" y2="{bottom}" stroke="black"/>')
        out.append(f'<line x1="{left}" y1="{top}" x2="{left}" y2="{bottom}" stroke="black"/>')
        for e in range(y0, y1 + 1):
            y = py(10 ** e)
            out.append(f'<line x1="{left}" y1="{y:.1f}" x2="{left + panel}" y2="{y:.1f}" stroke="#ddd"/>')
            out.append(f'<text x="{left - 6}" y="{y + 4:.1f}" text-anchor="end">{10 ** e:g}</text>')
        for n in [1000, 10000, 100000, 1000000]:
            if x0 <= math.log10(n) <= x1:
                x = px(n)
                out.append(f'<text x="{x:.1f}" y="{bottom + 16}" text-anchor="middle">{n:,}</text>')
        out.append(f'<text x="{left + panel / 2}" y="{bottom + 34}" text-anchor="middle">clients (N, log scale)</text>')
        for name, pts in series.items():
            pts = [p for p in pts if p[idx] is not None]
            if not pts:
                continue
            c = colours[name]
            path = " ".join(f"{px(p[0]):.1f},{py(p[idx]):.1f}" for p in pts)
            out.append(f'<polyline points="{path}" fill="none" stroke="{c}" stroke-width="2"/>')
            for p in pts:
                out.append(f'<circle cx="{px(p[0]):.1f}" cy="{py(p[idx]):.1f}" r="3.5" fill="{c}"/>')
    for i, (name, c) in enumerate(colours.items()):
        out.append(f'<rect x="{pad + i * 260}" y="{height - 18}" width="12" height="12" fill="{c}"/>')
        out.append(f'<text x="{pad + i * 260 + 18}" y="{height - 8}">{name}</text>')
    out.append("</svg>")
    return "\n".join(out) + "\n"


poll_rows, poll_pts, poll_cap = part1_rows("poll")
thr_rows, thr_pts, thr_cap = part1_rows("threaded")
p2_rows, p2_mem, p2_pts, p2_stops = part2_rows()

head1 = ("| N | server RSS per client (B) | fan-out p50 / p99 (ms) | idle CPU (%) | join storm: "
         "connect time, server CPU | lost | SIGTERM: told/closed, last closed, exit | cut off |\n"
         "|---|---|---|---|---|---|---|---|")
md = [
    "# pollchat at scale",
    "",
    "Generated by `benches/scale.sh` (then `benches/scale_report.py`); do not edit by hand.",
    "Loopback, one 2-core 24 GB virtual machine, release build; 20 lines 1 s apart",
    "(`pollchat bench --messages 20 --rate 1`). Fan-out is the time from a line's send until the",
    "last client has it. RSS per client is the server's growth from empty to everyone",
    "connected, divided by the clients.",
    "",
    "## Part 1: one process at its open-file limit",
    "",
    f"### poll engine ({poll_cap})" if poll_cap else "### poll engine",
    "",
    head1,
    *poll_rows,
    "",
    f"### threaded engine ({thr_cap})" if thr_cap else "### threaded engine",
    "",
    head1,
    *thr_rows,
    "",
    "## Part 2: one room across nodes through one Redis",
    "",
    "| N | nodes | bench workers | connected | lost | fan-out p50 / p99 (s) | connect time | machine CPU, everyone idle |",
    "|---|---|---|---|---|---|---|---|",
    *p2_rows,
    "",
    "Memory per client at the peak (growth from before the first connect), and CPU while the 20",
    "lines went out (percent of one core; the machine has two):",
    "",
    "| N | nodes' RSS (B) | bench RSS (B) | Redis RSS (B) | kernel: TCP buffers + slab (B) | all | CPU nodes / Redis / bench |",
    "|---|---|---|---|---|---|---|",
    *p2_mem,
    "",
    "The kernel's share counts both ends of each connection (the bench's sockets are on the",
    "same machine) and everything else the slab grew by meanwhile.",
    "",
]
if p2_stops:
    md += ["## What stopped a run", ""]
    for n, what, err in p2_stops:
        said = f" The bench said: `{err.splitlines()[0]}`" if err else ""
        md += [f"- N = {n:,}: {what}.{said}"]
    md.append("")
md += ["![RSS per client and fan-out p99 against N](scale.svg)", ""]

with open(os.path.join(DOCS, "scale.md"), "w") as f:
    f.write("\n".join(md))
with open(os.path.join(DOCS, "scale.svg"), "w") as f:
    f.write(svg({"poll, one process": poll_pts, "threaded, one process": thr_pts,
                 "cluster (nodes through Redis)": p2_pts}))
