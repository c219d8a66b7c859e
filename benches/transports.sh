#!/usr/bin/env bash
# The TLS and WebSocket figures of docs/performance.md (issues 12 and 13),
# measured side by side in one sitting on loopback: for each figure, RUNS
# alternating runs of each link (plain lines, TLS lines, WebSocket) against
# fresh servers, and the median of each.
#
#   - binary size and idle RSS: the lean build (--no-default-features),
#     the default build with TLS unused, and with a certificate loaded; and
#     the build without the web front, for what the `web` feature costs;
#   - RSS per idle connection at 1,000 clients, per link;
#   - fan-out at N=100, 200 msgs/s: p99 of each link's room against plain;
#   - saturated fan-out at N=100: server CPU per delivery, against plain.
#
# Each engine in ENGINES gets its own rows; LINKS picks the links (wss,
# WebSocket over TLS, is left out by default to keep the sitting short).
#
# Usage: benches/transports.sh   (RUNS=5 ENGINES="poll threaded"
# LINKS="plain tls ws" by default; about 18 minutes on 2 cores)
set -euo pipefail
cd "$(dirname "$0")/.."

RUNS=${RUNS:-5}
ENGINES=${ENGINES:-poll threaded}
LINKS=${LINKS:-plain tls ws}
# PARTS=latency (say) runs only that part of the sitting, without the report.
PARTS=${PARTS:-sizes idle idle1000 latency saturated}
has() { [[ " $PARTS " == *" $1 "* ]]; }
OUT=${OUT:-target/transports-bench}
PORT=${PORT:-9409}
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true

echo "== building (default, lean, and without the web front)"
cargo build --release --quiet --bin pollchat
CARGO_TARGET_DIR=target/lean cargo build --release --quiet --no-default-features --bin pollchat
CARGO_TARGET_DIR=target/noweb cargo build --release --quiet --no-default-features --features tls --bin pollchat
BIN=target/release/pollchat
LEAN=target/lean/release/pollchat
NOWEB=target/noweb/release/pollchat

rm -rf "$OUT" && mkdir -p "$OUT"
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 30 \
    -subj /CN=localhost -addext subjectAltName=DNS:localhost,IP:127.0.0.1 \
    -addext basicConstraints=critical,CA:FALSE \
    -keyout "$OUT/key.pem" -out "$OUT/cert.pem" 2>/dev/null
TLS_FLAGS=(--tls-cert "$OUT/cert.pem" --tls-key "$OUT/key.pem")

SERVER_PID=
# Start a server ($@ with PORT, TLSPORT and WEBPORT substituted) on fresh
# ports and wait until its plain port (or TLS port) listens.
start_server() {
    PORT=$((PORT + 3))
    local args=("${@//TLSPORT/$((PORT + 1))}")
    args=("${args[@]//WEBPORT/$((PORT + 2))}")
    args=("${args[@]//PORT/$PORT}")
    "${args[@]}" -q --rate 0 --max-clients 20000 >/dev/null 2>"$OUT/server.err" &
    SERVER_PID=$!
    # Listening is checked with ss, not by connecting: a probe connection
    # would be a client, and the idle figures must have had none.
    for _ in $(seq 100); do
        if [ -n "$(ss -ltnH "( sport = :$PORT or sport = :$((PORT + 1)) )")" ]; then
            return 0
        fi
        sleep 0.05
    done
    echo "transports.sh: server did not start: $(cat "$OUT/server.err")" >&2
    exit 1
}
stop_server() {
    kill "$SERVER_PID" 2>/dev/null || true
    wait "$SERVER_PID" 2>/dev/null || true
}
rss_kib() { awk '/VmRSS/ {print $2}' "/proc/$1/status"; }

echo "== sizes"
{
    echo "{\"default_bytes\": $(stat -c %s "$BIN"), \"lean_bytes\": $(stat -c %s "$LEAN"), \"noweb_bytes\": $(stat -c %s "$NOWEB")}"
} > "$OUT/sizes.json"

has idle && echo "== idle RSS ($RUNS runs each)"
for run in $(seq "$RUNS"); do
    has idle || break
    for engine in $ENGINES; do
        for case in lean default default-tls default-web; do
            case $case in
                lean) start_server "$LEAN" serve --engine "$engine" --port PORT ;;
                default) start_server "$BIN" serve --engine "$engine" --port PORT ;;
                default-tls) start_server "$BIN" serve --engine "$engine" --port PORT --tls-port TLSPORT "${TLS_FLAGS[@]}" ;;
                default-web) start_server "$BIN" serve --engine "$engine" --port PORT --web-port WEBPORT ;;
            esac
            sleep 1
            echo "{\"engine\": \"$engine\", \"case\": \"$case\", \"rss_kib\": $(rss_kib "$SERVER_PID")}" >> "$OUT/idle.jsonl"
            stop_server
        done
    done
done

# bench against a fresh server: $1 = engine, $2 = plain|tls|ws|wss, the
# rest bench flags. The server has a TLS port and an https web port, except
# for ws: with the certificate the web port would speak https, so a ws run
# gets a server with a plain web port instead.
bench_case() {
    local engine=$1 link=$2
    shift 2
    if [ "$link" = ws ]; then
        start_server "$BIN" serve --engine "$engine" --port PORT --web-port WEBPORT
    else
        start_server "$BIN" serve --engine "$engine" --port PORT --tls-port TLSPORT \
            "${TLS_FLAGS[@]}" --web-port WEBPORT
    fi
    local target=(--port "$PORT")
    case $link in
        tls) target=(--port "$((PORT + 1))" --tls --ca "$OUT/cert.pem") ;;
        ws) target=(--ws "ws://127.0.0.1:$((PORT + 2))/ws") ;;
        wss) target=(--ws "wss://localhost:$((PORT + 2))/ws" --ca "$OUT/cert.pem") ;;
    esac
    "$BIN" bench "${target[@]}" --server-pid "$SERVER_PID" --json "$@" \
        | python3 -c "import json,sys; r=json.load(sys.stdin); r['link']='$link'; r['engine']='$engine'; print(json.dumps(r))"
    stop_server
}

# RUNS alternating runs of each link of one bench into $OUT/$1.jsonl.
side_by_side() {
    local name=$1
    shift
    has "$name" || return 0
    echo "== $name: bench $* ($RUNS runs each)"
    for run in $(seq "$RUNS"); do
        for engine in $ENGINES; do
            for link in $LINKS; do
                bench_case "$engine" "$link" "$@" >> "$OUT/$name.jsonl"
            done
        done
    done
}
side_by_side idle1000 -n 1000 --messages 0
side_by_side latency -n 100 --rate 200 --duration 10
side_by_side saturated -n 100 --window 64 --duration 10

has saturated || { echo "partial sitting ($PARTS): $OUT/*.jsonl"; exit 0; }
python3 - "$OUT" $LINKS <<'PY' | tee "$OUT/transports.md"
import json, statistics, sys
out = sys.argv[1]
def rows(name):
    return [json.loads(l) for l in open(f"{out}/{name}") if l.strip()]
med = statistics.median
sizes = json.load(open(f"{out}/sizes.json"))
idle = rows("idle.jsonl")
engines = sorted({r["engine"] for r in idle}, key=["poll", "threaded"].index)
def idle_mib(engine, case):
    return med([r["rss_kib"] for r in idle if r["case"] == case and r["engine"] == engine]) / 1024
links = sys.argv[2:]
names = {"plain": "plain", "tls": "TLS", "ws": "WebSocket", "wss": "WebSocket + TLS"}
print("| build | binary | " + " | ".join(f"idle RSS, {e}" for e in engines) + " | target |")
print("|---|---:|" + "---:|" * len(engines) + "---|")
for case, label, size, target in [
    ("lean", "lean (`--no-default-features`)", sizes["lean_bytes"], "≤ 1.5 MB, ≤ 2.8 MiB"),
    ("default", "default, TLS and web unused", sizes["default_bytes"], "≤ 2.3 MB, ≤ 3.2 MiB"),
    ("default-tls", "default, certificate loaded", None, ""),
    ("default-web", "default, web port open", None, ""),
]:
    cells = " | ".join(f"{idle_mib(e, case):.2f} MiB" for e in engines)
    print(f"| {label} | {f'{size/1e6:.2f} MB' if size else ''} | {cells} | {target} |")
growth = sizes["default_bytes"] - sizes["noweb_bytes"]
print(f"| without `web` (`--no-default-features --features tls`) | {sizes['noweb_bytes']/1e6:.2f} MB | | the `web` feature: +{growth/1000:.1f} KB |")
print()
def of(rs, engine, link):
    return [r for r in rs if r["engine"] == engine and r["link"] == link]
def m(rs, f):
    return med([f(r) for r in rs])
i1000, lat, sat = rows("idle1000.jsonl"), rows("latency.jsonl"), rows("saturated.jsonl")
def cpu_per_delivery(r):
    return r["memory"]["load_cpu_percent"] / 100 * 1e6 / r["deliveries_per_second"]
others = [l for l in links if l != "plain"]
print("| median of runs | engine | " + " | ".join(names[l] for l in links) + " | " + " | ".join(f"{names[l]} ÷ plain" for l in others) + " |")
print("|---|---|" + "---:|" * (len(links) + len(others)))
def row(label, rs, e, f, fmt, ratio=True):
    vals = {l: m(of(rs, e, l), f) for l in links}
    cells = " | ".join(fmt(vals[l]) for l in links)
    ratios = " | ".join(f"{vals[l]/vals['plain']:.2f}" if ratio else "" for l in others)
    print(f"| {label} | {e} | {cells} | {ratios} |")
for e in engines:
    row("RSS per idle connection at 1,000", i1000, e, lambda r: r["memory"]["bytes_per_connection"], lambda v: f"{v/1024:.1f} KiB", False)
for e in engines:
    for q in ("p50", "p99"):
        row(f"fan-out {q}, N=100, 200 msgs/s", lat, e, lambda r, q=q: r["fanout_us"][q], lambda v: f"{v:.0f} µs")
    lost = {l: sum(r["lost"] for r in of(lat, e, l)) for l in links}
    print(f"| lost (all runs) | {e} | " + " | ".join(str(lost[l]) for l in links) + " | " + " | ".join("" for _ in others) + " |")
for e in engines:
    row("saturated deliveries/s, N=100, window 64", sat, e, lambda r: r["deliveries_per_second"], lambda v: f"{v:.0f}")
    row("server CPU per delivery, saturated", sat, e, cpu_per_delivery, lambda v: f"{v*1000:.0f} ns")
    row("bench CPU (one thread), saturated", sat, e, lambda r: r["bench_cpu_percent"], lambda v: f"{v:.0f}%", False)
print()
print("Targets: TLS p99 ÷ plain ≤ 1.3, TLS ≤ 16 KiB per idle connection (issue 12); WebSocket p99 ÷ plain ≤ 1.2, WebSocket ≤ 8 KiB per idle connection, `web` well under 100 KB (issue 13).")
PY
