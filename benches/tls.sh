#!/usr/bin/env bash
# The TLS figures of docs/performance.md (issue 12), measured side by side
# in one sitting on loopback: for each figure, RUNS alternating runs of the
# plain and the TLS case against fresh servers, and the median of each.
#
#   - binary size and idle RSS: the lean build (--no-default-features),
#     the default build with TLS unused, and with a certificate loaded;
#   - RSS per idle connection at 1,000 clients, plain and TLS;
#   - fan-out at N=100, 200 msgs/s: p99 of the TLS room against the plain;
#   - saturated fan-out at N=100: server CPU per delivery, TLS against plain.
#
# Usage: benches/tls.sh   (RUNS=5 by default; about 6 minutes on 2 cores)
set -euo pipefail
cd "$(dirname "$0")/.."

RUNS=${RUNS:-5}
OUT=${OUT:-target/tls-bench}
PORT=${PORT:-9409}
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true

echo "== building (default and lean)"
cargo build --release --quiet --bin pollchat
CARGO_TARGET_DIR=target/lean cargo build --release --quiet --no-default-features --bin pollchat
BIN=target/release/pollchat
LEAN=target/lean/release/pollchat

rm -rf "$OUT" && mkdir -p "$OUT"
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 30 \
    -subj /CN=localhost -addext subjectAltName=DNS:localhost,IP:127.0.0.1 \
    -addext basicConstraints=critical,CA:FALSE \
    -keyout "$OUT/key.pem" -out "$OUT/cert.pem" 2>/dev/null
TLS_FLAGS=(--tls-cert "$OUT/cert.pem" --tls-key "$OUT/key.pem")

SERVER_PID=
# Start a server ($@ with PORT and TLSPORT substituted) on fresh ports and
# wait until its plain port (or TLS port) accepts.
start_server() {
    PORT=$((PORT + 2))
    local args=("${@//TLSPORT/$((PORT + 1))}")
    args=("${args[@]//PORT/$PORT}")
    "${args[@]}" -q --rate 0 --max-clients 20000 >/dev/null 2>"$OUT/server.err" &
    SERVER_PID=$!
    for _ in $(seq 100); do
        if (exec 3<>"/dev/tcp/127.0.0.1/$PORT") 2>/dev/null || (exec 3<>"/dev/tcp/127.0.0.1/$((PORT + 1))") 2>/dev/null; then
            sleep 0.5 # let the accepted probe connection go
            return 0
        fi
        sleep 0.05
    done
    echo "tls.sh: server did not start: $(cat "$OUT/server.err")" >&2
    exit 1
}
stop_server() {
    kill "$SERVER_PID" 2>/dev/null || true
    wait "$SERVER_PID" 2>/dev/null || true
}
rss_kib() { awk '/VmRSS/ {print $2}' "/proc/$1/status"; }

echo "== sizes"
{
    echo "{\"default_bytes\": $(stat -c %s "$BIN"), \"lean_bytes\": $(stat -c %s "$LEAN")}"
} > "$OUT/sizes.json"

echo "== idle RSS ($RUNS runs each)"
for run in $(seq "$RUNS"); do
    for case in lean default default-tls; do
        case $case in
            lean) start_server "$LEAN" serve --port PORT ;;
            default) start_server "$BIN" serve --port PORT ;;
            default-tls) start_server "$BIN" serve --port PORT --tls-port TLSPORT "${TLS_FLAGS[@]}" ;;
        esac
        sleep 1
        echo "{\"case\": \"$case\", \"rss_kib\": $(rss_kib "$SERVER_PID")}" >> "$OUT/idle.jsonl"
        stop_server
    done
done

# bench against a fresh TLS-enabled server: $1 = plain|tls, the rest bench flags.
bench_case() {
    local link=$1
    shift
    start_server "$BIN" serve --port PORT --tls-port TLSPORT "${TLS_FLAGS[@]}"
    local target=(--port "$PORT")
    if [ "$link" = tls ]; then
        target=(--port "$((PORT + 1))" --tls --ca "$OUT/cert.pem")
    fi
    "$BIN" bench "${target[@]}" --server-pid "$SERVER_PID" --json "$@" \
        | python3 -c "import json,sys; r=json.load(sys.stdin); r['link']='$link'; print(json.dumps(r))"
    stop_server
}

# RUNS alternating plain/TLS runs of one bench into $OUT/$1.jsonl.
side_by_side() {
    local name=$1
    shift
    echo "== $name: bench $* ($RUNS runs each)"
    for run in $(seq "$RUNS"); do
        for link in plain tls; do
            bench_case "$link" "$@" >> "$OUT/$name.jsonl"
        done
    done
}
side_by_side idle1000 -n 1000 --messages 0
side_by_side latency -n 100 --rate 200 --duration 10
side_by_side saturated -n 100 --window 64 --duration 10

python3 - "$OUT" <<'PY' | tee "$OUT/tls.md"
import json, statistics, sys
out = sys.argv[1]
def rows(name):
    return [json.loads(l) for l in open(f"{out}/{name}") if l.strip()]
med = statistics.median
sizes = json.load(open(f"{out}/sizes.json"))
idle = rows("idle.jsonl")
def idle_mib(case):
    return med([r["rss_kib"] for r in idle if r["case"] == case]) / 1024
print("| build | binary | idle RSS (median) | target |")
print("|---|---:|---:|---|")
print(f"| lean (`--no-default-features`) | {sizes['lean_bytes']/1e6:.2f} MB | {idle_mib('lean'):.2f} MiB | ≤ 1.5 MB, ≤ 2.8 MiB |")
print(f"| default, TLS unused | {sizes['default_bytes']/1e6:.2f} MB | {idle_mib('default'):.2f} MiB | ≤ 2.3 MB, ≤ 3.2 MiB |")
print(f"| default, certificate loaded | | {idle_mib('default-tls'):.2f} MiB | |")
print()
def by(rs, link):
    return [r for r in rs if r["link"] == link]
i1000 = rows("idle1000.jsonl")
bpc = {l: med([r["memory"]["bytes_per_connection"] for r in by(i1000, l)]) for l in ("plain", "tls")}
print("| per idle connection at 1,000 (median) | plain | TLS | target |")
print("|---|---:|---:|---|")
print(f"| server RSS | {bpc['plain']:.0f} B | {bpc['tls']/1024:.1f} KiB | TLS ≤ 16 KiB |")
print()
lat = rows("latency.jsonl")
def m(rs, f):
    return med([f(r) for r in rs])
p99 = {l: m(by(lat, l), lambda r: r["fanout_us"]["p99"]) for l in ("plain", "tls")}
p50 = {l: m(by(lat, l), lambda r: r["fanout_us"]["p50"]) for l in ("plain", "tls")}
lost = {l: sum(r["lost"] for r in by(lat, l)) for l in ("plain", "tls")}
print("| fan-out to N=100 at 200 msgs/s (median of runs) | plain | TLS | TLS ÷ plain | target |")
print("|---|---:|---:|---:|---|")
print(f"| p50, send → last receiver | {p50['plain']:.0f} µs | {p50['tls']:.0f} µs | {p50['tls']/p50['plain']:.2f} | |")
print(f"| p99, send → last receiver | {p99['plain']:.0f} µs | {p99['tls']:.0f} µs | {p99['tls']/p99['plain']:.2f} | ≤ 1.3 |")
print(f"| lost (all runs) | {lost['plain']} | {lost['tls']} | | 0 |")
print()
sat = rows("saturated.jsonl")
def cpu_per_delivery(r):
    return r["memory"]["load_cpu_percent"] / 100 * 1e6 / r["deliveries_per_second"]
dps = {l: m(by(sat, l), lambda r: r["deliveries_per_second"]) for l in ("plain", "tls")}
cpd = {l: m(by(sat, l), cpu_per_delivery) for l in ("plain", "tls")}
bench = {l: m(by(sat, l), lambda r: r["bench_cpu_percent"]) for l in ("plain", "tls")}
print("| saturated, N=100, window 64 (median of runs) | plain | TLS | TLS ÷ plain |")
print("|---|---:|---:|---:|")
print(f"| deliveries/s | {dps['plain']:.0f} | {dps['tls']:.0f} | {dps['tls']/dps['plain']:.2f} |")
print(f"| server CPU per delivery | {cpd['plain']:.2f} µs | {cpd['tls']:.2f} µs | {cpd['tls']/cpd['plain']:.2f} |")
print(f"| bench CPU (one thread) | {bench['plain']:.0f}% | {bench['tls']:.0f}% | |")
PY
