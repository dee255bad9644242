# What the benchmark scripts share (each of them sources it): building,
# ports, starting servers and Redis, recording the machine's load, and
# the table of medians of the pass-alternating ones (passes.py).
# Sourced, not run: the script sets `set -euo pipefail` first.

# bench_init NAME: goes to the repository's root, builds, and sets BIN,
# SERVER, LOADGEN, OUT (a temporary folder, removed at exit, with every
# server and load generator started from the script stopped), RESULTS
# (examples/bench/results/NAME) and UPTIME_BEFORE.
bench_init() {
  cd "$(dirname "$0")/../.."
  RESULTS=examples/bench/results/$1
  ulimit -n "$(ulimit -Hn)"
  cargo build --release -q -p wschat-server -p wschat-bench
  BIN=${CARGO_TARGET_DIR:-target}/release
  SERVER=$BIN/wschat-server
  LOADGEN=$BIN/wschat-loadgen
  OUT=$(mktemp -d)
  trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$OUT"' EXIT
  UPTIME_BEFORE=$(uptime)
}

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

# wait_port PORT [NAME]: waits until PORT takes connections (NAME's, for
# the message when it never does, which ends the script).
wait_port() {
  for _ in $(seq 300); do (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return; sleep 0.1; done
  echo "${2:+$2: }port $1 never opened" >&2
  exit 1
}

# start_redis [ARGS...]: a throwaway redis-server without persistence,
# with ARGS; sets REDIS_PORT and REDIS_PID.
start_redis() {
  REDIS_PORT=$(free_port)
  redis-server --port "$REDIS_PORT" --bind 127.0.0.1 --save "" --appendonly no "$@" \
    >"$OUT/redis.log" &
  REDIS_PID=$!
  wait_port "$REDIS_PORT"
}

# wschat [ARGS...]: starts wschat-server with what benchmark loads need
# (--rate 0, --max-connections 25000, --send-queue 65536, RUST_LOG=warn)
# and ARGS on a free port; sets PID and URL, and logs to servers.log.
wschat() {
  local port; port=$(free_port)
  RUST_LOG=warn "$SERVER" --listen "127.0.0.1:$port" --rate 0 --max-connections 25000 \
    --send-queue 65536 "$@" 2>>"$OUT/servers.log" &
  PID=$!
  URL="ws://127.0.0.1:$port/"
  wait_port "$port"
}

# stop PID...: ends those servers and waits for them.
stop() {
  kill "$@" 2>/dev/null || true
  for pid in "$@"; do wait "$pid" 2>/dev/null || true; done
  sleep 1
}

# fanout FILE ARGS...: one `wschat-loadgen fanout --json` load; its report
# goes to $OUT/FILE ({} if it failed), its errors to FILE's .err.
fanout() {
  local file=$1; shift
  "$LOADGEN" fanout --json "$@" >"$OUT/$file" 2>"$OUT/${file%.json}.err" \
    || echo '{}' >"$OUT/$file"
}

# finish COMMAND PASSES.PY-ARGS...: writes run.txt (the command, when, the
# commit, the machine, its load before and after), prints the table of
# medians (table.txt) and replaces $RESULTS with the run.
finish() {
  local command=$1; shift
  {
    echo "$command, $(date -u +%FT%TZ), $(git rev-parse --short HEAD 2>/dev/null || echo '?'), $(nproc) cores, $(uname -sr)"
    echo "uptime before: $UPTIME_BEFORE"
    echo "uptime after:  $(uptime)"
  } >"$OUT/run.txt"
  python3 examples/bench/passes.py "$OUT" "$RESULTS" "$@" | tee "$OUT/table.txt"
  rm -rf "$RESULTS" && mkdir -p "$RESULTS" && cp -r "$OUT"/. "$RESULTS"/
}
