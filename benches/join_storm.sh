#!/usr/bin/env bash
# Issue 14's performance points, measured side by side in one sitting on
# loopback: two (or more) pollchat binaries, each engine, RUNS alternating
# runs each against fresh servers, and the median of each.
#
#   storm   5,000 clients (N) connect at once. Measured per run: the
#           server's CPU seconds over the storm (utime + stime of
#           /proc/PID/stat, clock ticks → s), the wall time from the first
#           connect to the last `* Welcome` (and to the last byte), the
#           notice lines all clients received (lines starting with `* `
#           other than the welcome: ~N²/2 = 12.5 million when every join is
#           announced to everyone), and the server's RSS after.
#           Settle rule: a run ends when every client has its welcome and
#           then nothing has arrived for 1 s. Only what arrived until then is
#           counted: a server that replaces join notices with a summary sent
#           at most every 30 s (`--quiet-above`) is not waited for, so its
#           summaries may or may not fall inside the count.
#           Clients connect as fast as the server welcomes them: at most 256
#           opened and not yet welcomed (below the 1024 listen backlog, so no
#           SYN is dropped and retried a second later).
#   fanout  `pollchat bench -n 100 --rate 200 --duration 10` (as
#           benches/compare.sh and transports.sh): median fan-out p50 and p99
#           per binary, against the first binary. The same bench client (the
#           first binary's, or BENCH=) drives every server.
#   memory  1,000 clients (ROOMS), client i sends `/join #room{i}`, 20 lines
#           of 2,000 bytes and `/who`; the server's RSS growth from "1,000
#           clients connected" to "every /who answered, 1 s quiet", per room,
#           against the bound 20 × 2048 bytes (the default --history and
#           --max-line), split at "every /join answered" into empty room and
#           history. A server without rooms answers client 0's `/join`
#           with `! unknown command`: then no lines are sent (in one room
#           they would fan out to everyone) and the row says "no rooms".
#
# The clients are benches/tools/room_load.rs (built here). Every server is
# `BIN serve -q --port P --engine E --rate 0 --max-clients 10000
# $SERVE_FLAGS`, killed when its run ends and, on any exit, by a trap.
#
# Usage:
#   BINS="before=/work/bin-base/pollchat after=target/release/pollchat" \
#       benches/join_storm.sh
# Variables (defaults): BINS ("after=$CARGO_TARGET_DIR/release/pollchat",
# label=path, the first is the reference of the ratios), ENGINES ("poll
# threaded"), PARTS ("storm fanout memory"), RUNS (3; fanout: 5), N (5000),
# FANOUT_N (100), ROOMS (1000), SERVE_FLAGS (""), TIMEOUT (600 s per run),
# OUT (target/join_storm; the report is OUT/report.md), PORT (9609).
# On 2 cores: the poll engine's storm takes seconds; the old threaded
# engine's about 200 s a run; fanout 12 s a run.
set -euo pipefail
cd "$(dirname "$0")/.."

TARGET=${CARGO_TARGET_DIR:-target}
BINS=${BINS:-after=$TARGET/release/pollchat}
ENGINES=${ENGINES:-poll threaded}
PARTS=${PARTS:-storm fanout memory}
STORM_RUNS=${RUNS:-3}
FANOUT_RUNS=${RUNS:-5}
N=${N:-5000}
FANOUT_N=${FANOUT_N:-100}
ROOMS=${ROOMS:-1000}
SERVE_FLAGS=${SERVE_FLAGS:-}
TIMEOUT=${TIMEOUT:-600}
OUT=${OUT:-target/join_storm}
PORT=${PORT:-9609}
has() { [[ " $PARTS " == *" $1 "* ]]; }

# Each client and each server connection is a descriptor (N of each).
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
if [ "$(ulimit -n)" -lt $((N + 200)) ]; then
    echo "join_storm.sh: open-file limit $(ulimit -n) is below N + 200 = $((N + 200))" >&2
    exit 1
fi

LABELS=()
PATHS=()
for entry in $BINS; do
    label=${entry%%=*}
    path=${entry#*=}
    if [ "$label" = "$entry" ] || [ -z "$label" ] || [ ! -x "$path" ]; then
        echo "join_storm.sh: BINS entry '$entry': want label=path to an executable pollchat" >&2
        exit 1
    fi
    LABELS+=("$label")
    PATHS+=("$(realpath "$path")")
done
BENCH=${BENCH:-${PATHS[0]}}

echo "== building benches/tools/room_load.rs"
cargo build --release --quiet --example room_load
TOOL=$TARGET/release/examples/room_load

mkdir -p "$OUT"
for part in $PARTS; do
    rm -f "$OUT/$part.jsonl"
done

# Every server started, for the trap; SERVER_PID is the current one.
SERVER_PID=
ALL_PIDS=()
stop_server() {
    if [ -n "$SERVER_PID" ]; then
        kill "$SERVER_PID" 2>/dev/null || true
        wait "$SERVER_PID" 2>/dev/null || true
        SERVER_PID=
    fi
}
cleanup() {
    for pid in "${ALL_PIDS[@]}"; do
        kill "$pid" 2>/dev/null || true
    done
    for pid in "${ALL_PIDS[@]}"; do
        wait "$pid" 2>/dev/null || true
    done
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# start_server BIN ENGINE: on a fresh port; listening is checked with ss,
# not by connecting (a probe connection would be a client that joins).
start_server() {
    PORT=$((PORT + 1))
    # shellcheck disable=SC2086 # SERVE_FLAGS is a list of flags
    "$1" serve -q --port "$PORT" --engine "$2" --rate 0 --max-clients 10000 $SERVE_FLAGS \
        >/dev/null 2>"$OUT/server.err" &
    SERVER_PID=$!
    ALL_PIDS+=("$SERVER_PID")
    for _ in $(seq 100); do
        if ! kill -0 "$SERVER_PID" 2>/dev/null; then
            break
        fi
        if [ -n "$(ss -ltnH "( sport = :$PORT )")" ]; then
            return 0
        fi
        sleep 0.05
    done
    echo "join_storm.sh: $1 --engine $2 did not start: $(head -c 300 "$OUT/server.err")" >&2
    exit 1
}

# record PART LABEL ENGINE RUN JSON: one row of OUT/PART.jsonl.
record() {
    # One line: `bench --json` prints its report across lines.
    local json
    json=$(printf '%s' "$5" | tr -d '\n')
    if [ "${json:0:1}" != "{" ]; then
        json='{"completed": false, "first_error": "no report from the client tool"}'
    fi
    echo "{\"bin\": \"$2\", \"engine\": \"$3\", \"run\": $4, ${json#\{}" >> "$OUT/$1.jsonl"
}

# one PART RUN: every engine × binary once, side by side.
one() {
    local part=$1 run=$2 engine i json
    for engine in $ENGINES; do
        for i in "${!PATHS[@]}"; do
            start_server "${PATHS[$i]}" "$engine"
            json=
            case $part in
                storm)
                    json=$("$TOOL" storm --port "$PORT" -n "$N" --server-pid "$SERVER_PID" \
                        --timeout "$TIMEOUT" --clk-tck "$(getconf CLK_TCK)" 2>"$OUT/tool.err") || true
                    ;;
                memory)
                    json=$("$TOOL" memory --port "$PORT" -n "$ROOMS" --server-pid "$SERVER_PID" \
                        --timeout "$TIMEOUT" 2>"$OUT/tool.err") || true
                    ;;
                fanout)
                    json=$(timeout "$TIMEOUT" "$BENCH" bench --port "$PORT" --json \
                        --server-pid "$SERVER_PID" -n "$FANOUT_N" --rate 200 --duration 10 \
                        2>"$OUT/tool.err") || true
                    ;;
            esac
            if ! kill -0 "$SERVER_PID" 2>/dev/null; then
                echo "   (the server exited during the run)" >&2
            fi
            stop_server
            record "$part" "${LABELS[$i]}" "$engine" "$run" "$json"
            if [ "$part" = fanout ]; then
                echo "   $part ${LABELS[$i]} $engine run $run: $(tail -1 "$OUT/$part.jsonl" | python3 -c \
                    "import json,sys; r=json.load(sys.stdin); f=r.get('fanout_us') or {}; print('p50 %.0f us, p99 %.0f us, lost %s' % (f.get('p50', -1), f.get('p99', -1), r.get('lost')))")"
            else
                echo "   $part ${LABELS[$i]} $engine run $run: $(tail -1 "$OUT/tool.err" 2>/dev/null)"
            fi
            # Let the kernel retire the last run's sockets.
            sleep 2
        done
    done
}

{
    echo "date: $(date -u +%FT%TZ)"
    echo "cpu: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ //') ($(nproc) cores); kernel $(uname -r)"
    for i in "${!PATHS[@]}"; do
        echo "${LABELS[$i]}: ${PATHS[$i]} ($(stat -c %s "${PATHS[$i]}") bytes, sha256 $(sha256sum "${PATHS[$i]}" | cut -c1-12))"
    done
    echo "servers: serve -q --rate 0 --max-clients 10000 $SERVE_FLAGS; engines: $ENGINES"
} > "$OUT/machine.txt"
cat "$OUT/machine.txt"

if has storm; then
    echo "== storm: $N clients, $STORM_RUNS runs each"
    for r in $(seq "$STORM_RUNS"); do one storm "$r"; done
fi
if has fanout; then
    echo "== fanout: bench -n $FANOUT_N --rate 200 --duration 10, $FANOUT_RUNS runs each"
    for r in $(seq "$FANOUT_RUNS"); do one fanout "$r"; done
fi
if has memory; then
    echo "== memory: $ROOMS rooms, $STORM_RUNS runs each"
    for r in $(seq "$STORM_RUNS"); do one memory "$r"; done
fi

python3 - "$OUT" "$PARTS" "${LABELS[@]}" <<'PY' | tee "$OUT/report.md"
import json, os, statistics, sys

out, parts, labels = sys.argv[1], sys.argv[2].split(), sys.argv[3:]
ref = labels[0]
print("# Issue 14 measurements (benches/join_storm.sh)\n")
print("```")
print(open(f"{out}/machine.txt").read().rstrip())
print("```\n")

def rows(part):
    path = f"{out}/{part}.jsonl"
    if part not in parts or not os.path.exists(path):
        return []
    return [json.loads(l) for l in open(path) if l.strip()]

def engines_of(rs):
    order = ["poll", "threaded"]
    return sorted({r["engine"] for r in rs}, key=lambda e: (order.index(e) if e in order else 9, e))

def med(values):
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None

def fmt(v, spec):
    return "–" if v is None else format(v, spec)

def ratio(a, b):
    return "–" if a is None or b in (None, 0) else f"{a / b:.3f}"

def table(rs, cols, ok):
    """cols: (header, key function, format[, aggregate: median]); one row
    per binary × engine, then the ratios of each other binary to the first."""
    print("| binary | engine | runs ok | " + " | ".join(c[0] for c in cols) + " |")
    print("|---|---|---:|" + "---:|" * len(cols))
    meds = {}
    for e in engines_of(rs):
        for b in labels:
            mine = [r for r in rs if r["bin"] == b and r["engine"] == e]
            good = [r for r in mine if ok(r)]
            meds[b, e] = [(c[3] if len(c) > 3 else med)([v for r in good if (v := c[1](r)) is not None] or [None]) for c in cols]
            cells = " | ".join(fmt(v, c[2]) for v, c in zip(meds[b, e], cols))
            print(f"| {b} | {e} | {len(good)}/{len(mine)} | {cells} |")
    for b in labels[1:]:
        for e in engines_of(rs):
            cells = " | ".join(ratio(x, y) for x, y in zip(meds[b, e], meds[ref, e]))
            print(f"| **{b} ÷ {ref}** | {e} | | {cells} |")
    print()

storm = rows("storm")
if storm:
    n = storm[0]["clients"]
    print(f"## Join storm: {n} clients connecting at once (medians)\n")
    print("Counted until every client was welcomed and then 1 s passed with nothing received.\n")
    table(storm, [
        ("server CPU s", lambda r: r.get("server_cpu_s"), ".2f"),
        ("wall to last welcome s", lambda r: r.get("wall_to_last_welcome_s"), ".2f"),
        ("wall to last byte s", lambda r: r.get("wall_to_last_byte_s"), ".2f"),
        ("notices received", lambda r: r.get("notices"), ",.0f"),
        ("MB received", lambda r: r.get("bytes", 0) / 1e6, ".1f"),
        ("server RSS after MiB", lambda r: (r.get("server_rss_kib") or 0) / 1024 or None, ".1f"),
        ("client tool CPU s", lambda r: r.get("tool_cpu_s"), ".2f"),
    ], lambda r: r.get("completed") and r.get("welcomed") == r.get("clients") and r.get("lost") == 0)
    bad = [r for r in storm if not (r.get("completed") and r.get("lost") == 0)]
    for r in bad:
        print(f"- incomplete: {r['bin']} {r['engine']} run {r['run']}: welcomed {r.get('welcomed')}, lost {r.get('lost')}, {r.get('first_error')}")
    if bad:
        print()

fan = rows("fanout")
if fan:
    print("## Fan-out, N=100, 200 msgs/s, 10 s (`pollchat bench`, medians)\n")
    table(fan, [
        ("p50 µs", lambda r: r["fanout_us"]["p50"], ".0f"),
        ("p99 µs", lambda r: r["fanout_us"]["p99"], ".0f"),
        ("p99, quietest run µs", lambda r: r["fanout_us"]["p99"], ".0f", lambda v: min(v) if v != [None] else None),
        ("p99.9 µs", lambda r: r["fanout_us"]["p99_9"], ".0f"),
        ("server CPU % under load", lambda r: (r.get("memory") or {}).get("load_cpu_percent"), ".1f"),
    ], lambda r: "fanout_us" in r)
    for b in labels:
        for e in engines_of(fan):
            lost = sum(r.get("lost", 0) for r in fan if r["bin"] == b and r["engine"] == e)
            if lost:
                print(f"- {b} {e}: {lost} probes lost over all runs")
    print()

mem = rows("memory")
if mem:
    rooms = mem[0]["clients"]
    print(f"## Memory: {rooms} rooms, {mem[0]['lines_per_room']} lines of {mem[0]['line_bytes']} bytes each (medians)\n")
    done = [r for r in mem if r.get("completed")]
    if done:
        table(done, [
            ("RSS connected MiB", lambda r: r["rss_connected_kib"] / 1024, ".1f"),
            ("RSS rooms joined MiB", lambda r: (r.get("rss_joined_kib") or 0) / 1024 or None, ".1f"),
            ("RSS filled MiB", lambda r: r["rss_filled_kib"] / 1024, ".1f"),
            ("per room bytes", lambda r: r.get("per_room_bytes"), ",.0f"),
            ("of which empty room", lambda r: r.get("per_room_empty_bytes"), ",.0f"),
            ("of which history", lambda r: r.get("per_room_history_bytes"), ",.0f"),
            ("per room ÷ bound (20 × 2048)", lambda r: r.get("per_room_over_bound"), ".3f"),
        ], lambda r: True)
    for r in mem:
        if not r.get("completed"):
            print(f"- {r['bin']} {r['engine']} run {r['run']}: {r.get('why') or r.get('first_error') or 'incomplete'}")
    print()
PY
echo "report: $OUT/report.md"
