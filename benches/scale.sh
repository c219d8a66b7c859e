#!/usr/bin/env bash
# Issue 16, from a clean clone: how far one machine goes.
#
#   part 1  One server at its open-file limit. For each N in PART1 (poll
#           engine) and THREADED (threaded engine, up to its own ceiling):
#           a fresh server, then `pollchat bench -n N --messages 20 --rate 1
#           --server-pid PID --then-stop PID`: its RSS per client, a line's
#           fan-out to all N (p50/p99 of 20 lines, 1 s apart), its CPU when
#           everyone is idle, the join storm (server CPU from the first
#           connect to everyone settled, and per join), then SIGTERM: how
#           many were told, how fast the last was closed, whether it exited.
#   part 2  One room across nodes: for each N in PART2, Redis (persistence
#           off) and ceil(N / PER_NODE) nodes with --cluster, and
#           ceil(N / PER_WORKER) bench workers (`--workers`, receivers spread
#           over the nodes and over SOURCES), 20 lines 1 s apart. A sampler
#           reads every second the RSS and CPU of the nodes, Redis and the
#           bench, /proc/net/sockstat and the slab from /proc/meminfo; the
#           report takes the peaks, and the CPU during the load.
#
# It writes OUT/*.json and OUT/*.samples, then docs/scale.md and
# docs/scale.svg (RSS per client and fan-out time against N). It changes no
# system setting; if a run cannot connect everyone, the report says which
# resource ran out (ports, files, memory) with the bench's error.
#
# Usage: benches/scale.sh   (about 25 minutes on 2 cores, 24 GB)
# Variables (defaults): PART1 ("1000 5000 10000 19900"), THREADED ("1000
# 5000 8000"), PART2 ("100000 250000 500000 1000000"; empty to skip),
# PER_NODE (19900), PER_WORKER (19900), SOURCES (127.0.0.2-127.0.0.101),
# CONNECT_RATE (3000 joins a second in all, part 2), DRAIN (60: seconds
# part 2 waits for the last lines), KEEP (unset: start afresh),
# PORT (21000: nodes on PORT+1..), OUT (target/scale), DOCS (docs).
set -euo pipefail
cd "$(dirname "$0")/.."

TARGET=${CARGO_TARGET_DIR:-target}
BIN=$TARGET/release/pollchat
PART1=${PART1-1000 5000 10000 19900}
THREADED=${THREADED-1000 5000 8000}
PART2=${PART2-100000 250000 500000 1000000}
PER_NODE=${PER_NODE:-19900}
PER_WORKER=${PER_WORKER:-19900}
SOURCES=${SOURCES:-127.0.0.2-127.0.0.101}
PORT=${PORT:-21000}
CONNECT_RATE=${CONNECT_RATE:-3000}
DRAIN=${DRAIN:-60}
OUT=${OUT:-$TARGET/scale}
DOCS=${DOCS:-docs}
REDIS=${REDIS:-$(command -v redis-server || true)}
if [ -n "$PART2" ] && [ -z "$REDIS" ]; then
  echo "scale.sh: part 2 needs redis-server (apt-get install -y redis-server)" >&2
  exit 2
fi
cargo build --release -q
mkdir -p "$OUT"
# KEEP=1 keeps earlier runs' results (to redo one part).
[ -n "${KEEP:-}" ] || rm -f "$OUT"/*.json "$OUT"/*.samples "$OUT"/*.err "$OUT"/*.log
# Every client is a file, in the servers and in the bench.
ulimit -n "$(ulimit -Hn)"

pids=()
cleanup() {
  for p in "${pids[@]}"; do kill -9 "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
}
trap cleanup EXIT

# wait_listening LOG: until the server logged its listening line (10 s).
wait_listening() {
  for _ in $(seq 200); do
    grep -q "listening on" "$1" 2>/dev/null && return 0
    sleep 0.05
  done
  echo "scale.sh: no server started (see $1)" >&2
  exit 2
}

# wait_gone PID SECONDS: 0 if the process ended within SECONDS.
wait_gone() {
  for _ in $(seq $(($2 * 20))); do
    kill -0 "$1" 2>/dev/null || return 0
    sleep 0.05
  done
  return 1
}

echo "== part 1: one server, 20 lines 1 s apart, then SIGTERM"
for engine in poll threaded; do
  sizes=$PART1
  [ "$engine" = threaded ] && sizes=$THREADED
  for n in $sizes; do
    log=$OUT/p1-$engine-$n.log
    "$BIN" serve --engine "$engine" --port "$PORT" --rate 0 --max-clients 20000 2>"$log" &
    spid=$!
    pids+=("$spid")
    wait_listening "$log"
    "$BIN" bench --port "$PORT" -n "$n" --messages 20 --rate 1 --duration 30 --drain 10 \
      --connect-rate 20000 --connect-timeout 300 \
      --server-pid "$spid" --then-stop "$spid" --json \
      >"$OUT/p1-$engine-$n.json" 2>"$OUT/p1-$engine-$n.err" || true
    # The flush bound is 1 s; the exit is allowed 2 more for the last
    # threads to be joined.
    if wait_gone "$spid" 3; then exited=yes; else exited=no; kill -9 "$spid" 2>/dev/null || true; fi
    wait "$spid" 2>/dev/null || true
    echo "{\"exited\": \"$exited\"}" >"$OUT/p1-$engine-$n.exit.json"
    echo "   $engine N=$n done (exited: $exited)"
  done
done

# sample FILE STOPFILE PIDS...: every second, until STOPFILE exists, one
# line: unix_ms, then for each group (nodes, redis, bench) RSS in KiB and
# CPU ticks, then the TCP socket memory in pages and the slab in KiB.
sample() {
  local file=$1 stop=$2
  while [ ! -e "$stop" ]; do
    local now bench
    now=$(date +%s%3N)
    bench=$(pgrep -f "$BIN bench" | tr '\n' ' ' || true)
    {
      printf '%s' "$now"
      for group in "$node_pids" "$redis_pid" "$bench"; do
        # One awk per group: a fork per process would starve under load.
        local status=() stat=()
        for p in $group; do status+=("/proc/$p/status"); stat+=("/proc/$p/stat"); done
        printf ' %s %s' \
          "$(awk '/^VmRSS:/ {s += $2} END {print s + 0}' "${status[@]}" 2>/dev/null || echo 0)" \
          "$(awk '{s += $14 + $15} END {print s + 0}' "${stat[@]}" 2>/dev/null || echo 0)"
      done
      printf ' %s %s\n' "$(awk '/^TCP:/ {print $NF}' /proc/net/sockstat)" \
        "$(awk '/^Slab:/ {print $2}' /proc/meminfo)"
    } >>"$file"
    sleep 1
  done
}

echo "== part 2: one room across nodes through Redis"
for n in $PART2; do
  nodes=$(((n + 1 + PER_NODE - 1) / PER_NODE))
  workers=$(((n + PER_WORKER - 1) / PER_WORKER))
  rport=$PORT
  # Redis first in line for the CPU: on one 2-core machine a hundred busy
  # processes share it, and a Redis starved for more than the link's 3 s
  # reply bound has every node drop its link and re-claim its names (in a
  # real deployment Redis has its own machine). The bench is not slowed:
  # lines it leaves unread cost the kernel a buffer each.
  nice -n -5 "$REDIS" --port "$rport" --bind 127.0.0.1 --save '' --appendonly no \
    --maxclients 10000 >"$OUT/p2-$n-redis.log" 2>&1 &
  redis_pid=$!
  pids+=("$redis_pid")
  for _ in $(seq 100); do redis-cli -p "$rport" ping >/dev/null 2>&1 && break; sleep 0.05; done
  node_pids=""
  addrs=()
  for i in $(seq "$nodes"); do
    log=$OUT/p2-$n-node$i.log
    "$BIN" serve -q --port $((PORT + i)) --rate 0 --max-clients 20000 \
      --cluster "redis://127.0.0.1:$rport" --node "n$i" 2>"$log" &
    node_pids="$node_pids $!"
    pids+=($!)
    addrs+=(--addr "127.0.0.1:$((PORT + i))")
  done
  for i in $(seq "$nodes"); do
    for _ in $(seq 200); do
      (exec 3<>/dev/tcp/127.0.0.1/$((PORT + i))) 2>/dev/null && break
      sleep 0.05
    done
  done
  sleep 1 # every node's link up (a round trip) before anyone joins
  stop=$OUT/p2-$n.stop
  rm -f "$stop"
  sample "$OUT/p2-$n.samples" "$stop" &
  sampler=$!
  echo "   N=$n: $nodes nodes, $workers bench workers"
  # CONNECT_RATE joins a second in all, shared by the workers: every join
  # is also a stream entry that every node reads, and a name claim in Redis.
  "$BIN" bench "${addrs[@]}" -n "$n" --workers "$workers" --source "$SOURCES" \
    --messages 20 --rate 1 --duration 30 --drain "$DRAIN" \
    --connect-rate $(((CONNECT_RATE + workers - 1) / workers)) --connect-timeout 1200 \
    --server-pid "$(echo "$node_pids" | awk '{print $1}')" --json \
    >"$OUT/p2-$n.json" 2>"$OUT/p2-$n.err" || true
  touch "$stop"
  wait "$sampler" 2>/dev/null || true
  echo "{\"nodes\": $nodes, \"workers\": $workers, \"redis_used_memory\": $(redis-cli -p "$rport" info memory | awk -F: '/^used_memory:/ {print $2+0}')}" \
    >"$OUT/p2-$n.setup.json"
  for p in $node_pids; do kill "$p" 2>/dev/null || true; done
  for p in $node_pids; do wait "$p" 2>/dev/null || true; done
  kill "$redis_pid" 2>/dev/null || true
  wait "$redis_pid" 2>/dev/null || true
  echo "   N=$n done: $(head -c 300 "$OUT/p2-$n.err" | tr '\n' ' ')"
done

python3 benches/scale_report.py "$OUT" "$DOCS"
echo "wrote $DOCS/scale.md and $DOCS/scale.svg"
# Whatever stopped a run, named here too.
sed -n '/^## What stopped a run/,/^!\[/p' "$DOCS/scale.md" | grep -v '^!\['
