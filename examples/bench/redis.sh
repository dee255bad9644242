#!/usr/bin/env bash
# Through Redis (README, "Several instances (Redis)"): one wschat instance
# next to two sharing one room through Redis, and one connection
# publishing as fast as it can with and without Redis, alternately (one
# instance, two via Redis, two via Redis with one runtime worker each,
# one via Redis; again), PASSES times:
#
#   examples/bench/redis.sh [PASSES]      (default 3)
#
# The loads: 1,000 listeners and 20 publishers as fast as they may (1,000
# messages in flight) and at 100 messages/s (latency), spread evenly over
# the instances; one publisher and one listener, as fast as the publisher
# may (1,000 in flight), and the same with one message in flight at a time
# (each waits for its own to come back: a round trip per message). For
# every load through Redis, `INFO commandstats` counts the appends
# (`XADD`) per script call (`EVALSHA`, one round trip): how many messages
# each round trip carried. Needs redis-server and redis-cli (Debian's
# redis-server). The table's columns: one instance, two via Redis, two via
# Redis with one worker each (TOKIO_WORKER_THREADS=1: each instance its
# share of the machine's cores), one via Redis, and "1 in flight" (one via
# Redis, one message in flight). Takes about 2.5 minutes a pass. When it is done,
# examples/bench/results/redis/ holds the run: the table (table.txt),
# when and where it ran with the machine's load (run.txt), each load's
# JSON report and the servers' log.
set -euo pipefail
PASSES=${1:-3}
source "$(dirname "$0")/lib.sh"
bench_init redis
start_redis

# round_trips [FILE]: writes messages per Redis round trip since the last
# call to FILE, as a JSON report (`messages_per_round_trip`, `round_trips`,
# `xadds`), and starts counting again.
round_trips() {
  if [ -n "${1:-}" ]; then
    redis-cli -p "$REDIS_PORT" INFO commandstats | python3 -c '
import json, re, sys
calls = {m[1]: int(m[2]) for m in re.finditer(r"cmdstat_(\w+):calls=(\d+)", sys.stdin.read())}
trips = calls.get("evalsha", 0) + calls.get("eval", 0)
xadds = calls.get("xadd", 0)
print(json.dumps({"round_trips": trips, "xadds": xadds,
                  "messages_per_round_trip": xadds / trips if trips else None}))' >"$OUT/$1"
  fi
  redis-cli -p "$REDIS_PORT" CONFIG RESETSTAT >/dev/null
}

many() { # load config pass urls...
  local load=$1 config=$2 pass=$3; shift 3
  local urls; urls=$(IFS=,; echo "$*")
  case $load in
    max) fanout "max.$config.$pass.json" --url "$urls" --listeners 1000 --publishers 20 \
           --size 100 --in-flight 1000 --duration 10 ;;
    rate) fanout "rate.$config.$pass.json" --url "$urls" --listeners 1000 --publishers 20 \
           --size 100 --rate 100 --duration 10 ;;
  esac
}

solo() { # config pass in-flight url [pid]
  fanout "solo.$1.$2.json" --url "$4" ${5:+--pid "$5"} --listeners 1 --publishers 1 \
    --size 100 --in-flight "$3" --duration 10
}

for pass in $(seq "$PASSES"); do
  echo "pass $pass: one instance" >&2
  wschat; S=$PID
  many max single "$pass" "$URL"
  many rate single "$pass" "$URL"
  solo single "$pass" 1000 "$URL" "$S"
  stop "$S"

  echo "pass $pass: two instances via Redis" >&2
  redis-cli -p "$REDIS_PORT" CONFIG RESETSTAT >/dev/null
  key=bench$pass
  wschat --redis "redis://127.0.0.1:$REDIS_PORT/" --redis-key "$key"; R1=$PID U1=$URL
  wschat --redis "redis://127.0.0.1:$REDIS_PORT/" --redis-key "$key"; R2=$PID U2=$URL
  round_trips
  many max redis2 "$pass" "$U1" "$U2"
  round_trips "max-redis.redis2.$pass.json"
  many rate redis2 "$pass" "$U1" "$U2"
  round_trips "rate-redis.redis2.$pass.json"
  stop "$R1" "$R2"

  # Two instances on one machine each given its share of the cores: one
  # runtime worker each (tokio's TOKIO_WORKER_THREADS), not two each.
  echo "pass $pass: two instances via Redis, one worker each" >&2
  key=bench1w$pass
  TOKIO_WORKER_THREADS=1 wschat --redis "redis://127.0.0.1:$REDIS_PORT/" --redis-key "$key"; R1=$PID U1=$URL
  TOKIO_WORKER_THREADS=1 wschat --redis "redis://127.0.0.1:$REDIS_PORT/" --redis-key "$key"; R2=$PID U2=$URL
  many max redis2w1 "$pass" "$U1" "$U2"
  many rate redis2w1 "$pass" "$U1" "$U2"
  stop "$R1" "$R2"

  echo "pass $pass: one connection via Redis" >&2
  wschat --redis "redis://127.0.0.1:$REDIS_PORT/" --redis-key "solo$pass"; R=$PID
  round_trips
  solo redis1 "$pass" 1000 "$URL" "$R"
  round_trips "solo-redis.redis1.$pass.json"
  solo serial "$pass" 1 "$URL" "$R"
  round_trips "solo-redis.serial.$pass.json"
  stop "$R"
done

finish "examples/bench/redis.sh $PASSES" --passes "$PASSES" \
  --column "single=1 instance" --column "redis2=2 via Redis" \
  --column "redis2w1=2 via Redis, 1 worker each" \
  --column "redis1=1 via Redis" --column "serial=1 in flight" \
  --ratio redis2/single --ratio redis2w1/single --ratio redis1/single \
  --ratio redis1/serial \
  --row "max:deliveries_per_s:1k listeners, 20 publishers, max: deliveries/s" \
  --row "max:lost:  lost" \
  --row "max-redis:messages_per_round_trip:  messages per Redis round trip" \
  --row "rate:latency_p50_ms:1k listeners, 100 msg/s: p50 ms" \
  --row "rate:latency_p99_ms:1k listeners, 100 msg/s: p99 ms" \
  --row "rate:lost:  lost" \
  --row "solo:publish_rate_per_s:1 publisher, as fast as it may: messages/s" \
  --row "solo:lost:  lost" \
  --row "solo-redis:messages_per_round_trip:  messages per Redis round trip"
