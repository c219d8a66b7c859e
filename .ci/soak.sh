#!/usr/bin/env bash
# Soak: a pollchat server under `pollchat bench` load plus random churn, for
# a set time. Prints lost lines, server RSS at the start and end of the load,
# and the peak number of open fds; exits non-zero on any loss or on RSS that
# keeps growing.
#
#   .ci/soak.sh [SECONDS]        (default 60; or SOAK_SECONDS)
#
# What runs, all on loopback, every process started here stopped on exit:
# - `pollchat serve --rate 0` (flood control off: the bench's sender paces
#   itself);
# - `pollchat bench`: RECEIVERS clients plus one sender at RATE lines/s for
#   SECONDS; it counts every probe line lost, duplicated or reordered;
# - CHURN_LOOPS shell loops that, from the start of the load to its end,
#   connect, do one random thing (say a line, /nick, /quit, or nothing),
#   hold the connection 0-90 ms without reading, and close it (usually a
#   reset, as unread data is pending).
#
# Pass: the bench lost, duplicated and reordered nothing and no receiver
# was cut off; the server exited 0 on SIGTERM; and RSS did not keep growing.
# "Keeps growing", precisely: RSS is sampled every 0.5 s during the load;
# the first quarter of the samples is warm-up; the run fails if the highest
# RSS in the last quarter exceeds the highest in the second quarter by more
# than RSS_SLACK_KIB. A leak of a few bytes per delivery at the default
# load (10,000 deliveries/s) crosses that within a minute; allocator noise
# does not.
#
# Settings (environment): SOAK_ENGINE (poll), SOAK_RECEIVERS (50),
# SOAK_RATE (200), SOAK_CHURN_LOOPS (8), SOAK_RSS_SLACK_KIB (1024), and
# POLLCHAT_BIN (default: build target/release/pollchat).
set -euo pipefail
cd "$(dirname "$0")/.."

SECONDS_WANTED=${1:-${SOAK_SECONDS:-60}}
ENGINE=${SOAK_ENGINE:-poll}
RECEIVERS=${SOAK_RECEIVERS:-50}
RATE=${SOAK_RATE:-200}
CHURN_LOOPS=${SOAK_CHURN_LOOPS:-8}
RSS_SLACK_KIB=${SOAK_RSS_SLACK_KIB:-1024}
SAMPLE_EVERY=0.5

if ! [[ $SECONDS_WANTED =~ ^[0-9]+$ ]] || ((SECONDS_WANTED < 4)); then
  echo "soak: the duration must be a whole number of seconds, at least 4" >&2
  exit 2
fi

if [[ -n ${POLLCHAT_BIN:-} ]]; then
  BIN=$POLLCHAT_BIN
else
  cargo build --release --quiet
  BIN=${CARGO_TARGET_DIR:-target}/release/pollchat
fi

if ! "$BIN" bench --help >/dev/null 2>&1; then
  echo "soak: $BIN has no 'bench' subcommand (is it a pollchat binary?)" >&2
  exit 2
fi

work=$(mktemp -d)
started=() # every background process we start, stopped on exit
cleanup() {
  local pid
  for pid in "${started[@]}"; do
    kill "$pid" 2>/dev/null || true
  done
  wait 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

rss_kib() { awk '/^VmRSS:/ { print $2 }' "/proc/$1/status"; }
fd_count() { find "/proc/$1/fd" -mindepth 1 -maxdepth 1 2>/dev/null | wc -l; }
json_number() { grep -o "\"$1\": *[0-9.]*" "$work/bench.json" | head -1 | grep -o '[0-9.]*$'; }

# --- the server, on a free port (a few tries, in case of a race) -------------
server=
for _ in 1 2 3 4 5; do
  port=$((20000 + RANDOM % 40000))
  "$BIN" serve --port "$port" --engine "$ENGINE" --rate 0 2>"$work/server.log" &
  server=$!
  for _ in $(seq 100); do
    grep -q "listening on" "$work/server.log" && break
    kill -0 "$server" 2>/dev/null || break
    sleep 0.1
  done
  if grep -q "listening on" "$work/server.log"; then
    started+=("$server")
    break
  fi
  kill "$server" 2>/dev/null || true
  wait "$server" 2>/dev/null || true
  server=
done
if [[ -z $server ]]; then
  echo "soak: the server did not start:" >&2
  cat "$work/server.log" >&2
  exit 2
fi
rss_idle=$(rss_kib "$server")
fds_idle=$(fd_count "$server")

# --- the load ------------------------------------------------------------------
"$BIN" bench --port "$port" -n "$RECEIVERS" --rate "$RATE" \
  --duration "$SECONDS_WANTED" --drain 5 --server-pid "$server" --json \
  >"$work/bench.json" 2>"$work/bench.err" &
bench=$!
started+=("$bench")

# Wait (at most 30 s) until the bench is connected, then a little longer:
# it waits for 0.3 s of quiet and measures the idle server for 1 s before
# it sends, and churn notices would only hold that up.
for _ in $(seq 300); do
  (($(fd_count "$server") >= fds_idle + RECEIVERS + 1)) && break
  kill -0 "$bench" 2>/dev/null || break
  sleep 0.1
done
sleep 1.5

# --- the churn -----------------------------------------------------------------
churn_loop() {
  local n=0 fd
  trap '' PIPE # a refused or closed connection must not end the loop
  while kill -0 "$bench" 2>/dev/null; do
    if exec {fd}<>"/dev/tcp/127.0.0.1/$port"; then
      n=$((n + 1))
      case $((RANDOM % 4)) in
        0) printf 'hello from churn %d\n' "$n" >&"$fd" ;;
        1) printf '/nick c%d_%d\n' "$BASHPID" "$n" >&"$fd" ;;
        2) printf '/quit bye\n' >&"$fd" ;;
        3) ;;
      esac 2>/dev/null || true
      sleep "0.0$((RANDOM % 10))"
      exec {fd}>&-
    fi
  done 2>/dev/null
  echo "$n" >"$work/churn.$BASHPID"
}
churners=()
for _ in $(seq "$CHURN_LOOPS"); do
  churn_loop &
  churners+=($!)
  started+=($!)
done

# --- watch the server until the bench is done -----------------------------------
rss=()
fds_peak=0
while kill -0 "$bench" 2>/dev/null; do
  kill -0 "$server" 2>/dev/null || break
  rss+=("$(rss_kib "$server")")
  fds=$(fd_count "$server")
  ((fds > fds_peak)) && fds_peak=$fds
  sleep "$SAMPLE_EVERY"
done
bench_status=0
wait "$bench" || bench_status=$?
for pid in "${churners[@]}"; do
  wait "$pid" || true
done
churned=$(cat "$work"/churn.* 2>/dev/null | awk '{ n += $1 } END { print n + 0 }')

failures=()
server_status=0
if kill -0 "$server" 2>/dev/null; then
  kill -TERM "$server"
  wait "$server" || server_status=$?
  ((server_status == 0)) || failures+=("the server exited $server_status on SIGTERM")
else
  wait "$server" || server_status=$?
  failures+=("the server died during the run (status $server_status)")
fi

# --- verdict ---------------------------------------------------------------------
echo "soak: ${SECONDS_WANTED} s on the $ENGINE engine: $RECEIVERS receivers at $RATE lines/s, $CHURN_LOOPS churn loops"
if [[ ! -s $work/bench.json ]] || ((bench_status == 2)); then
  echo "soak: the bench could not run (status $bench_status):" >&2
  cat "$work/bench.err" >&2
  exit 1
fi
sent=$(json_number sent)
deliveries=$(json_number deliveries)
lost=$(json_number lost)
duplicated=$(json_number duplicated)
reordered=$(json_number reordered)
cut=$(json_number receivers_disconnected)
echo "  sent $sent lines, $deliveries deliveries: lost $lost, duplicated $duplicated, reordered $reordered; receivers cut off $cut"
echo "  churn: $churned connections came and went"
((lost == 0)) || failures+=("$lost deliveries lost")
((duplicated == 0)) || failures+=("$duplicated deliveries duplicated")
((reordered == 0)) || failures+=("$reordered deliveries reordered")
((cut == 0)) || failures+=("$cut receivers cut off")
((churned > 0)) || failures+=("no churn connection was made")

n=${#rss[@]}
if ((n < 8)); then
  failures+=("only $n RSS samples")
else
  quarter=$((n / 4))
  max_of() { printf '%s\n' "${rss[@]:$1:$2}" | sort -n | tail -1; }
  second=$(max_of "$quarter" "$quarter")
  last=$(max_of $((n - quarter)) "$quarter")
  peak=$(printf '%s\n' "${rss[@]}" | sort -n | tail -1)
  echo "  RSS (KiB): idle $rss_idle; load start ${rss[0]}; end ${rss[n - 1]}; peak $peak"
  echo "  RSS growth: highest in the 2nd quarter $second KiB, in the last $last KiB ($((last - second)) KiB; limit $RSS_SLACK_KIB)"
  ((last - second <= RSS_SLACK_KIB)) || failures+=("RSS kept growing: +$((last - second)) KiB")
fi
echo "  peak fds: $fds_peak (idle $fds_idle)"

if ((${#failures[@]} > 0)); then
  printf 'soak: FAIL: %s\n' "${failures[@]}"
  exit 1
fi
echo "soak: PASS"
