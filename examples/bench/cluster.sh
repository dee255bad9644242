#!/usr/bin/env bash
# Past one process: CONNECTIONS connections in one room, held by INSTANCES
# wschat instances sharing it through a local redis-server, the load
# spread over one load generator process per instance, each from its own
# loopback source address. Together the generators publish one message a
# second for SECONDS; every connection must receive every message.
#
#   examples/bench/cluster.sh [CONNECTIONS] [INSTANCES] [SECONDS]
#                              (default 100000 7 60)
#
# Why so many processes: the open-file limit (`ulimit -Hn`, 20,000 on the
# machine this was written on) caps what one process holds, on both ends,
# and one source address has about 28,000 ephemeral ports. Needs
# redis-server (Debian's redis-server). Instances get --rate 0,
# --max-connections above their share and RUST_LOG=warn. When it is done,
# examples/bench/results/cluster/ holds the run: the table (table.txt),
# when and where it ran (run.txt), each generator's JSON report, the
# memory samples (memory.txt) and the servers' logs.
set -euo pipefail
CONNECTIONS=${1:-100000}
INSTANCES=${2:-7}
SECONDS_=${3:-60}
# Seconds the generators get to connect before publishing starts.
LEAD=${LEAD:-$((30 + CONNECTIONS / 1000))}
# Seconds between starting one generator and the next.
STAGGER=${STAGGER:-$((CONNECTIONS / INSTANCES / 2000))}
source "$(dirname "$0")/lib.sh"
bench_init cluster

rss_kib() { awk '/^VmRSS:/ {print $2}' "/proc/$1/status"; }
sum_rss() { local t=0; for p in "$@"; do t=$((t + $(rss_kib "$p"))); done; echo "$t"; }

# Each generator holds its share of listeners and one publisher.
PER=$(((CONNECTIONS + INSTANCES - 1) / INSTANCES))
LISTENERS=$((PER - 1))
TOTAL=$((PER * INSTANCES))
# (Also above what the load opens at once: a tenth of it may be mid-handshake.)
MAX_CONN=19000
if [ "$PER" -gt $(($(ulimit -n) - 100)) ]; then
  echo "$PER connections per process is above the open-file limit $(ulimit -n): use more instances" >&2
  exit 1
fi

start_redis --maxclients 1000

PIDS=() URLS=()
for i in $(seq "$INSTANCES"); do
  port=$(free_port)
  # A long --handshake-timeout: with every process on the same cores,
  # a handshake may wait seconds for its turn.
  RUST_LOG=warn "$SERVER" --listen "127.0.0.1:$port" --rate 0 --max-connections "$MAX_CONN" \
    --handshake-timeout 60 \
    --redis "redis://127.0.0.1:$REDIS_PORT/" --redis-key cluster 2>>"$OUT/servers.log" &
  PIDS+=($!) URLS+=("ws://127.0.0.1:$port/")
  wait_port "$port"
done
sleep 1
BEFORE=$(sum_rss "${PIDS[@]}")

START_AT=$(($(date +%s) + LEAD))
RATE=$(python3 -c "print(1 / $INSTANCES)")
GENS=()
for i in $(seq 0 $((INSTANCES - 1))); do
  # One source address per generator, none shared: 127.0.0.10, .11, ...
  "$LOADGEN" fanout --url "${URLS[$i]}" --sources "127.0.0.$((10 + i))" --json \
    --listeners "$LISTENERS" --publishers 1 --publisher-offset "$i" \
    --total-publishers "$INSTANCES" --rate "$RATE" --duration "$SECONDS_" --drain 10 \
    --start-at "$START_AT" --latency-histogram >"$OUT/gen$i.json" 2>"$OUT/gen$i.err" &
  GENS+=($!)
  # One generator connecting at a time goes faster than all at once.
  sleep "$STAGGER"
done

# Memory once everyone is connected and the minute has begun.
sleep $((START_AT - $(date +%s) + 5))
{
  echo "instances' RSS before the load: $BEFORE KiB"
  for p in "${PIDS[@]}"; do echo "instance $p: $(rss_kib "$p") KiB"; done
  echo "redis-server: $(rss_kib "$REDIS_PID") KiB"
  for p in "${GENS[@]}"; do echo "generator $p: $(rss_kib "$p") KiB"; done
} >"$OUT/memory.txt"
DURING=$(sum_rss "${PIDS[@]}")
echo "instances' RSS with the load: $DURING KiB" >>"$OUT/memory.txt"
UPTIME_DURING=$(uptime)

FAILED=0
for p in "${GENS[@]}"; do wait "$p" || FAILED=$((FAILED + 1)); done

echo "examples/bench/cluster.sh $CONNECTIONS $INSTANCES $SECONDS_, $(date -u +%FT%TZ), $(git rev-parse --short HEAD 2>/dev/null || echo '?'), $(nproc) cores, $(uname -sr); load during the run: ${UPTIME_DURING#*load average: }" >"$OUT/run.txt"
python3 - "$OUT" "$INSTANCES" "$TOTAL" "$BEFORE" "$DURING" "$FAILED" "$RESULTS" <<'PY' | tee "$OUT/table.txt"
import json, os, sys
out, n, total, before, during, failed, results = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5]), int(sys.argv[6]), sys.argv[7]
reports = []
for i in range(n):
    try:
        reports.append(json.load(open(os.path.join(out, f"gen{i}.json"))))
    except Exception:
        reports.append({})
def total_of(key):
    return sum(r.get(key) or 0 for r in reports)
listeners = total_of("listeners")
published = total_of("published")
deliveries = total_of("deliveries")
# Every listener must have received every message of every generator.
expected = published * listeners
hist = {}
for r in reports:
    for v, c in r.get("latency_histogram_us") or []:
        hist[v] = hist.get(v, 0) + c
def quantile(q):
    count = sum(hist.values())
    if not count:
        return None
    seen = 0
    for v in sorted(hist):
        seen += hist[v]
        if seen >= q * count:
            return v / 1000
late = max((r.get("late_start_s") or 0) for r in reports)
rows = [
    ("instances (one redis-server between them)", n),
    ("connections in the room (listeners + publishers)", f"{listeners + n:,} of {total:,}"),
    ("messages published (1/s over all generators)", published),
    ("deliveries expected (published x listeners)", f"{expected:,}"),
    ("deliveries received", f"{deliveries:,}"),
    ("lost (expected - received, plus gaps seen)", f"{expected - deliveries + total_of('lost'):,}"),
    ("out of order or duplicated", total_of("out_of_order_or_dup")),
    ("listeners the server closed", total_of("listeners_closed")),
    ("latency p50 / p99 / max, ms", f"{quantile(0.5)} / {quantile(0.99)} / {quantile(1.0)}"),
    ("instances' RSS per connection", f"{(during - before) / max(listeners + n, 1):.2f} KiB"),
    ("instances' RSS, all", f"{during / 1024:,.1f} MiB"),
    ("generators that failed / started late (s)", f"{failed} / {late}"),
]
for label, value in rows:
    print(f"{label:<52} {value}")
print(f"(raw results in {results})")
PY
rm -rf "$RESULTS" && mkdir -p "$RESULTS" && cp -r "$OUT"/. "$RESULTS"/
