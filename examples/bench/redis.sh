#!/usr/bin/env bash
# Throughput and latency of one wschat instance next to two instances
# sharing one room through Redis, and what the archive costs (--archive,
# and --archive-fsync at 100 publishers), in the same run:
#
#   examples/bench/redis.sh
#
# Needs redis-server (Debian's redis-server). Servers get --rate 0,
# --max-connections 25000, --send-queue 65536 and RUST_LOG=warn. When it
# is done, examples/bench/results/redis/ holds the run: the table
# (table.txt), when and where it ran (run.txt), each load's JSON report and
# the servers' log.
set -euo pipefail
cd "$(dirname "$0")/../.."
RESULTS=examples/bench/results/redis
cargo build --release -q -p wschat-server -p wschat-bench
BIN=${CARGO_TARGET_DIR:-target}/release
SERVER=$BIN/wschat-server
LOADGEN=$BIN/wschat-loadgen
OUT=$(mktemp -d)
DISK=$(mktemp -d) # the archives, not kept
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$OUT" "$DISK"' EXIT
LOAD_BEFORE=$(cut -d' ' -f1-3 /proc/loadavg)

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_port() { for _ in $(seq 100); do (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return; sleep 0.1; done; echo "port $1 never opened" >&2; exit 1; }

REDIS_PORT=$(free_port)
redis-server --port "$REDIS_PORT" --bind 127.0.0.1 --save "" --appendonly no >/dev/null &
wait_port "$REDIS_PORT"

instance() { # port [redis key | archive | fsync] -> starts a server, PID in $PID
  local extra=()
  case ${2:-} in
    "") ;;
    archive) extra=(--archive "$DISK/$1.jsonl") ;;
    fsync) extra=(--archive "$DISK/$1.jsonl" --archive-fsync) ;;
    *) extra=(--redis "redis://127.0.0.1:$REDIS_PORT/" --redis-key "$2") ;;
  esac
  RUST_LOG=warn "$SERVER" --listen "127.0.0.1:$1" --rate 0 --max-connections 25000 \
    --send-queue 65536 "${extra[@]}" 2>>"$OUT/servers.log" &
  PID=$!
  wait_port "$1"
}

max100() { # name url -> 100 publishers as fast as they may, 1,000 in flight
  "$LOADGEN" fanout --url "$2" --json --listeners 100 --publishers 100 --size 100 \
    --in-flight 1000 --duration 10 >"$OUT/$1.max100.json" 2>/dev/null
}

run() { # name urls...
  local name=$1; shift
  local urls; urls=$(IFS=,; echo "$*")
  "$LOADGEN" fanout --url "$urls" --json --listeners 1000 --publishers 20 --size 100 \
    --in-flight 1000 --duration 10 >"$OUT/$name.max.json" 2>/dev/null
  "$LOADGEN" fanout --url "$urls" --json --listeners 1000 --publishers 20 --size 100 \
    --rate 100 --duration 10 >"$OUT/$name.rate.json" 2>/dev/null
}

P1=$(free_port); instance "$P1"; S1=$PID
run single "ws://127.0.0.1:$P1/"
max100 single "ws://127.0.0.1:$P1/"
kill "$S1"
P2=$(free_port); P3=$(free_port); instance "$P2" bench; R2=$PID; instance "$P3" bench; R3=$PID
run redis2 "ws://127.0.0.1:$P2/" "ws://127.0.0.1:$P3/"
kill "$R2" "$R3"
P4=$(free_port); instance "$P4" archive; A=$PID
run archive "ws://127.0.0.1:$P4/"
max100 archive "ws://127.0.0.1:$P4/"
kill "$A"
P5=$(free_port); instance "$P5" fsync
max100 fsync "ws://127.0.0.1:$P5/"

echo "examples/bench/redis.sh, $(date -u +%FT%TZ), $(git rev-parse --short HEAD 2>/dev/null || echo '?'), $(nproc) cores, $(uname -sr); load average (1, 5, 15 min) before: $LOAD_BEFORE, after: $(cut -d' ' -f1-3 /proc/loadavg); archives on $(df --output=source "$DISK" | tail -1)" >"$OUT/run.txt"
python3 - "$OUT" "$RESULTS" <<'PY' | tee "$OUT/table.txt"
import json, sys, os
out, results = sys.argv[1], sys.argv[2]
def get(name, kind, key):
    try:
        return json.load(open(os.path.join(out, f"{name}.{kind}.json"))).get(key)
    except Exception:
        return None
rows = [
    ("max", "deliveries_per_s", "1k listeners, 20 publishers, max: deliveries/s"),
    ("max", "lost", "  lost"),
    ("rate", "latency_p50_ms", "1k listeners, 100 msg/s: p50 ms"),
    ("rate", "latency_p99_ms", "1k listeners, 100 msg/s: p99 ms"),
    ("rate", "lost", "  lost"),
]
fmt = lambda v: "-" if v is None else (f"{v:,.1f}" if isinstance(v, float) else f"{v:,}")
ratio = lambda a, b: f"{a / b:.2f}x" if a is not None and b else "-"
print(f"{'load':<46} {'1 instance':>14} {'2 via Redis':>14} {'ratio':>7} {'--archive':>14} {'ratio':>7}")
for kind, key, label in rows:
    one, two, arch = (get(n, kind, key) for n in ("single", "redis2", "archive"))
    print(f"{label:<46} {fmt(one):>14} {fmt(two):>14} {ratio(two, one):>7} {fmt(arch):>14} {ratio(arch, one):>7}")
print()
print(f"{'100 listeners, 100 publishers, max':<46} {'1 instance':>14} {'--archive':>14} {'+fsync':>14} {'fsync/archive':>13}")
for key, label in (("publish_rate_per_s", "  messages/s"), ("deliveries_per_s", "  deliveries/s"), ("lost", "  lost")):
    one, arch, sync = (get(n, "max100", key) for n in ("single", "archive", "fsync"))
    print(f"{label:<46} {fmt(one):>14} {fmt(arch):>14} {fmt(sync):>14} {ratio(sync, arch):>13}")
print(f"(listeners and publishers spread evenly over the instances; raw results in {results})")
PY
rm -rf "$RESULTS" && mkdir -p "$RESULTS" && cp -r "$OUT"/. "$RESULTS"/
