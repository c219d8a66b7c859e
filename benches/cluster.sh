#!/usr/bin/env bash
# The cluster's performance points (issue 15), measured side by side in one
# sitting on loopback against a redis-server this script starts on a free
# port (persistence off) and stops, with the release build.
#
#   fanout  A line's fan-out to 300 receivers at 200 lines/s for 10 s
#           (`pollchat bench -n 300 --rate 200 --duration 10`), three ways,
#           alternating, RUNS times each:
#             single   one node, no --cluster (the reference);
#             linked   one node with --cluster (what the link costs alone);
#             cross    three nodes, 100 receivers each (`--addr` ×3), the
#                      sender on the first: two thirds of the deliveries
#                      cross Redis.
#           Reported: the medians of the runs' p50 and p99, and each p99's
#           difference from single's (the target: cross ≤ single + 1 ms).
#   saturate  Deliveries per second with a window of 64 lines in flight
#           (`--window 64 --duration 10`, 100 receivers in all), one node
#           against two nodes (50 receivers each, the sender on the first),
#           with the CPU seconds of Redis and of each node over the run
#           (utime + stime from /proc/PID/stat).
#   memory  Redis's memory per stream entry: `MEMORY USAGE` of the lobby's
#           stream divided by its `XLEN` after the saturation runs (entries
#           as pollchat writes them, 32-byte payloads), and the retention
#           chosen (`MAXLEN ~ 10000` per room).
#
# Usage: benches/cluster.sh   (about 4 minutes on 2 cores)
# Variables (defaults): RUNS (5), OUT (target/cluster; the report is
# OUT/report.md), REDIS (redis-server on the PATH), PORT (9700: nodes on
# PORT+1..PORT+3).
set -euo pipefail
cd "$(dirname "$0")/.."

TARGET=${CARGO_TARGET_DIR:-target}
BIN=$TARGET/release/pollchat
RUNS=${RUNS:-5}
OUT=${OUT:-$TARGET/cluster}
REDIS=${REDIS:-$(command -v redis-server || true)}
PORT=${PORT:-9700}
[ -n "$REDIS" ] || { echo "cluster.sh: no redis-server (apt-get install -y redis-server)" >&2; exit 2; }
cargo build --release -q
mkdir -p "$OUT"
rm -f "$OUT"/*.json

pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; }
trap cleanup EXIT

RPORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
"$REDIS" --port "$RPORT" --bind 127.0.0.1 --save '' --appendonly no >/dev/null 2>&1 &
rpid=$!
pids+=("$rpid")
for _ in $(seq 100); do redis-cli -p "$RPORT" ping >/dev/null 2>&1 && break; sleep 0.05; done
redis() { redis-cli -p "$RPORT" "$@"; }

cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }

# start_nodes COUNT CLUSTER(yes|no): nodes on PORT+1.., their pids in $nodes.
start_nodes() {
  nodes=()
  for i in $(seq "$1"); do
    local flags=(serve -q --port $((PORT + i)) --rate 0 --max-clients 10000)
    [ "$2" = yes ] && flags+=(--cluster "redis://127.0.0.1:$RPORT" --node "n$i")
    "$BIN" "${flags[@]}" 2>"$OUT/node$i.log" &
    nodes+=($!)
    pids+=($!)
  done
  for i in $(seq "$1"); do
    for _ in $(seq 100); do
      (exec 3<>/dev/tcp/127.0.0.1/$((PORT + i))) 2>/dev/null && break
      sleep 0.05
    done
  done
  # A linked node has its link up within a round trip; give it that.
  [ "$2" = yes ] && sleep 0.5
  return 0
}
stop_nodes() { for p in "${nodes[@]}"; do kill "$p" 2>/dev/null || true; wait "$p" 2>/dev/null || true; done; }
addrs() { for i in $(seq "$1"); do printf -- '--addr 127.0.0.1:%d ' $((PORT + i)); done; }

echo "== fanout: 300 receivers, 200 lines/s, 10 s; $RUNS runs each, alternating"
for run in $(seq "$RUNS"); do
  for way in single linked cross; do
    case $way in
      single) start_nodes 1 no; a=$(addrs 1) ;;
      linked) start_nodes 1 yes; a=$(addrs 1) ;;
      cross) start_nodes 3 yes; a=$(addrs 3) ;;
    esac
    # shellcheck disable=SC2086
    "$BIN" bench $a -n 300 --rate 200 --duration 10 --json >"$OUT/fanout-$way-$run.json" 2>/dev/null || true
    stop_nodes
    redis flushall >/dev/null
  done
done

echo "== saturate: window 64, 100 receivers, 10 s; $RUNS runs each"
for run in $(seq "$RUNS"); do
  for n in 1 2; do
    start_nodes "$n" yes
    r0=$(cpu_ticks "$rpid"); n0=(); for p in "${nodes[@]}"; do n0+=("$(cpu_ticks "$p")"); done
    # shellcheck disable=SC2086
    "$BIN" bench $(addrs "$n") -n 100 --window 64 --duration 10 --json >"$OUT/sat-$n-$run.json" 2>/dev/null || true
    r1=$(cpu_ticks "$rpid"); cpu="redis=$(( r1 - r0 ))"
    for i in "${!nodes[@]}"; do cpu="$cpu node$((i + 1))=$(( $(cpu_ticks "${nodes[$i]}") - n0[i] ))"; done
    echo "$cpu" >"$OUT/sat-$n-$run.cpu"
    if [ "$n" = 2 ] && [ "$run" = "$RUNS" ]; then
      echo "$(redis xlen 'pc:#lobby:log') $(redis memory usage 'pc:#lobby:log' samples 0)" >"$OUT/stream.txt"
    fi
    stop_nodes
    redis flushall >/dev/null
  done
done

python3 - "$OUT" "$RUNS" <<'EOF'
import json, os, statistics, sys
out, runs = sys.argv[1], int(sys.argv[2])
tick = os.sysconf("SC_CLK_TCK")
def load(name):
    with open(os.path.join(out, name)) as f:
        return json.load(f)
med = statistics.median
lines = ["# Cluster figures (benches/cluster.sh)", ""]
lines += ["## Fan-out, 300 receivers, 200 lines/s, 10 s", "",
          f"Medians of {runs} alternating runs; ms.", "",
          "| way | p50 | p99 | p99 − single's | lost |", "|---|---:|---:|---:|---:|"]
p99 = {}
for way in ["single", "linked", "cross"]:
    rs = [load(f"fanout-{way}-{r}.json") for r in range(1, runs + 1)]
    p50s = [r["fanout_us"]["p50"] / 1000 for r in rs]
    p99s = [r["fanout_us"]["p99"] / 1000 for r in rs]
    p99[way] = med(p99s)
    lost = sum(r["lost"] for r in rs)
    diff = "" if way == "single" else f"{p99[way] - p99['single']:+.2f}"
    lines.append(f"| {way} | {med(p50s):.2f} | {p99[way]:.2f} | {diff} | {lost} |")
    lines.append(f"|  (p99 per run) | | {' '.join(f'{x:.2f}' for x in p99s)} | | |")
lines += ["", "## Saturation, window 64, 100 receivers, 10 s", "",
          "| nodes | deliveries/s (median) | ratio to 1 node | CPU s per run (median): Redis, nodes |",
          "|---|---:|---:|---|"]
base = None
for n in [1, 2]:
    rs = [load(f"sat-{n}-{r}.json") for r in range(1, runs + 1)]
    dps = med(r["deliveries_per_second"] for r in rs)
    base = base or dps
    cpus = []
    for r in range(1, runs + 1):
        with open(os.path.join(out, f"sat-{n}-{r}.cpu")) as f:
            cpus.append(dict(kv.split("=") for kv in f.read().split()))
    keys = cpus[0].keys()
    cpu = ", ".join(f"{k} {med(int(c[k]) for c in cpus) / tick:.2f}" for k in keys)
    lines.append(f"| {n} | {dps:,.0f} | {dps / base:.2f} | {cpu} |")
with open(os.path.join(out, "stream.txt")) as f:
    xlen, usage = (int(x) for x in f.read().split())
lines += ["", "## Redis memory per stream entry", "",
          f"`MEMORY USAGE pc:#lobby:log SAMPLES 0` = {usage:,} bytes for XLEN {xlen:,} entries: "
          f"{usage / max(xlen, 1):.1f} bytes per entry (32-byte payload lines as pollchat writes them). "
          "Retention: `MAXLEN ~ 10000` per room, so a busy room holds at most about "
          f"{usage / max(xlen, 1) * 10000 / 1e6:.1f} MB in Redis."]
report = "\n".join(lines) + "\n"
with open(os.path.join(out, "report.md"), "w") as f:
    f.write(report)
print(report)
EOF
