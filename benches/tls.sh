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
# Each engine in ENGINES gets its own rows.
#
# Usage: benches/tls.sh   (RUNS=5 ENGINES="poll threaded" by default; about
# 12 minutes on 2 cores)
set -euo pipefail
cd "$(dirname "$0")/.."

RUNS=${RUNS:-5}
ENGINES=${ENGINES:-poll threaded}
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
# wait until its plain port (or TLS port) listens.
start_server() {
    PORT=$((PORT + 2))
    local args=("${@//TLSPORT/$((PORT + 1))}")
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
    for engine in $ENGINES; do
        for case in lean default default-tls; do
            case $case in
                lean) start_server "$LEAN" serve --engine "$engine" --port PORT ;;
                default) start_server "$BIN" serve --engine "$engine" --port PORT ;;
                default-tls) start_server "$BIN" serve --engine "$engine" --port PORT --tls-port TLSPORT "${TLS_FLAGS[@]}" ;;
            esac
            sleep 1
            echo "{\"engine\": \"$engine\", \"case\": \"$case\", \"rss_kib\": $(rss_kib "$SERVER_PID")}" >> "$OUT/idle.jsonl"
            stop_server
        done
    done
done

# bench against a fresh TLS-enabled server: $1 = engine, $2 = plain|tls,
# the rest bench flags.
bench_case() {
    local engine=$1 link=$2
    shift 2
    start_server "$BIN" serve --engine "$engine" --port PORT --tls-port TLSPORT "${TLS_FLAGS[@]}"
    local target=(--port "$PORT")
    if [ "$link" = tls ]; then
        target=(--port "$((PORT + 1))" --tls --ca "$OUT/cert.pem")
    fi
    "$BIN" bench "${target[@]}" --server-pid "$SERVER_PID" --json "$@" \
        | python3 -c "import json,sys; r=json.load(sys.stdin); r['link']='$link'; r['engine']='$engine'; print(json.dumps(r))"
    stop_server
}

# RUNS alternating plain/TLS runs of one bench into $OUT/$1.jsonl.
side_by_side() {
    local name=$1
    shift
    echo "== $name: bench $* ($RUNS runs each)"
    for run in $(seq "$RUNS"); do
        for engine in $ENGINES; do
            for link in plain tls; do
                bench_case "$engine" "$link" "$@" >> "$OUT/$name.jsonl"
            done
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
engines = sorted({r["engine"] for r in idle}, key=["poll", "threaded"].index)
def idle_mib(engine, case):
    return med([r["rss_kib"] for r in idle if r["case"] == case and r["engine"] == engine]) / 1024
print("| build | binary | " + " | ".join(f"idle RSS, {e}" for e in engines) + " | target |")
print("|---|---:|" + "---:|" * len(engines) + "---|")
for case, label, size, target in [
    ("lean", "lean (`--no-default-features`)", sizes["lean_bytes"], "≤ 1.5 MB, ≤ 2.8 MiB"),
    ("default", "default, TLS unused", sizes["default_bytes"], "≤ 2.3 MB, ≤ 3.2 MiB"),
    ("default-tls", "default, certificate loaded", None, ""),
]:
    cells = " | ".join(f"{idle_mib(e, case):.2f} MiB" for e in engines)
    print(f"| {label} | {f'{size/1e6:.2f} MB' if size else ''} | {cells} | {target} |")
print()
def of(rs, engine, link):
    return [r for r in rs if r["engine"] == engine and r["link"] == link]
def m(rs, f):
    return med([f(r) for r in rs])
i1000, lat, sat = rows("idle1000.jsonl"), rows("latency.jsonl"), rows("saturated.jsonl")
def cpu_per_delivery(r):
    return r["memory"]["load_cpu_percent"] / 100 * 1e6 / r["deliveries_per_second"]
print("| median of runs | engine | plain | TLS | TLS ÷ plain | target |")
print("|---|---|---:|---:|---:|---|")
for e in engines:
    p, t = (m(of(i1000, e, l), lambda r: r["memory"]["bytes_per_connection"]) for l in ("plain", "tls"))
    print(f"| RSS per idle connection at 1,000 | {e} | {p/1024:.1f} KiB | {t/1024:.1f} KiB | | TLS ≤ 16 KiB |")
for e in engines:
    for q, target in (("p50", ""), ("p99", "≤ 1.3")):
        p, t = (m(of(lat, e, l), lambda r: r["fanout_us"][q]) for l in ("plain", "tls"))
        print(f"| fan-out {q}, N=100, 200 msgs/s | {e} | {p:.0f} µs | {t:.0f} µs | {t/p:.2f} | {target} |")
    p, t = (sum(r["lost"] for r in of(lat, e, l)) for l in ("plain", "tls"))
    print(f"| lost (all runs) | {e} | {p} | {t} | | 0 |")
for e in engines:
    p, t = (m(of(sat, e, l), lambda r: r["deliveries_per_second"]) for l in ("plain", "tls"))
    print(f"| saturated deliveries/s, N=100, window 64 | {e} | {p:.0f} | {t:.0f} | {t/p:.2f} | |")
    p, t = (m(of(sat, e, l), cpu_per_delivery) for l in ("plain", "tls"))
    print(f"| server CPU per delivery, saturated | {e} | {p*1000:.0f} ns | {t*1000:.0f} ns | {t/p:.2f} | report |")
    p, t = (m(of(sat, e, l), lambda r: r["bench_cpu_percent"]) for l in ("plain", "tls"))
    print(f"| bench CPU (one thread), saturated | {e} | {p:.0f}% | {t:.0f}% | | |")
PY
