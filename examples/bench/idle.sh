#!/usr/bin/env bash
# What an idle connection costs: wschat and the bare relay, alternately,
# each freshly started and holding 10,000 idle connections; prints each
# pass and the medians of the server's RSS per connection, and the ratio
# wschat/bare relay (README, "Where a waiting connection's memory goes").
#
#   examples/bench/idle.sh [PASSES] [HOLD]      (default 5 passes, 5 s)
#
# The figure is `wschat-loadgen idle`'s: (RSS after connecting and holding
# HOLD seconds - RSS before connecting) / connections. The server's RSS is
# also sampled every second meanwhile (rss.*.txt: seconds, VmRSS KiB,
# RssAnon KiB), to show that the figure has settled. Servers are started
# as `compare.sh` starts them. Results go to examples/bench/results/idle/.
set -euo pipefail
PASSES=${1:-5}
HOLD=${2:-5}
source "$(dirname "$0")/lib.sh"
bench_init idle

rss() { awk '/^VmRSS|^RssAnon/ { printf " %s", $2 }' "/proc/$1/status" 2>/dev/null; }

for pass in $(seq "$PASSES"); do
  for name in wschat bare; do
    PORT=$(free_port)
    case $name in
      wschat) RUST_LOG=warn "$BIN/wschat-server" --listen "127.0.0.1:$PORT" --rate 0 \
                --max-connections 25000 --send-queue 65536 2>"$OUT/$name.$pass.log" & ;;
      bare) "$BIN/bare-relay" "127.0.0.1:$PORT" 2>"$OUT/$name.$pass.log" & ;;
    esac
    PID=$!
    for _ in $(seq 100); do (exec 3<>"/dev/tcp/127.0.0.1/$PORT") 2>/dev/null && break; sleep 0.1; done
    ( t=0; while kill -0 "$PID" 2>/dev/null; do echo "$t$(rss "$PID")"; sleep 1; t=$((t + 1)); done ) \
      >"$OUT/rss.$name.$pass.txt" &
    SAMPLER=$!
    "$BIN/wschat-loadgen" idle --url "ws://127.0.0.1:$PORT/" --pid "$PID" --json \
      --sources 127.0.0.1,127.0.0.2,127.0.0.3,127.0.0.4 --connections 10000 --hold "$HOLD" \
      >"$OUT/idle.$name.$pass.json" 2>"$OUT/idle.$name.$pass.err" || echo '{}' >"$OUT/idle.$name.$pass.json"
    kill "$PID" 2>/dev/null || true
    wait "$PID" 2>/dev/null || true
    wait "$SAMPLER" 2>/dev/null || true
    echo "pass $pass, $name: $(cat "$OUT/idle.$name.$pass.json")" >&2
    sleep 1
  done
done

echo "examples/bench/idle.sh $PASSES $HOLD, $(date -u +%FT%TZ), $(git rev-parse --short HEAD 2>/dev/null || echo '?'), $(nproc) cores; load average (1, 5, 15 min) after: $(cut -d' ' -f1-3 /proc/loadavg)" >"$OUT/run.txt"
python3 - "$OUT" "$PASSES" <<'PY' | tee "$OUT/table.txt"
import json, os, statistics, sys
out, passes = sys.argv[1], int(sys.argv[2])
def figures(name):
    vals = []
    for p in range(1, passes + 1):
        try:
            v = json.load(open(os.path.join(out, f"idle.{name}.{p}.json"))).get("server_kib_per_connection")
        except Exception:
            v = None
        if isinstance(v, (int, float)):
            vals.append(v)
    return vals
w, b = figures("wschat"), figures("bare")
print(f"10,000 idle connections, server RSS per connection (KiB), {passes} alternating passes")
print(f"  wschat:     {w}  median {statistics.median(w) if w else '-'}")
print(f"  bare relay: {b}  median {statistics.median(b) if b else '-'}")
if w and b:
    print(f"  wschat/bare relay: {statistics.median(w) / statistics.median(b):.2f}x")
PY
find "$OUT" -size 0 -delete
rm -rf "$RESULTS" && mkdir -p "$RESULTS" && cp -r "$OUT"/. "$RESULTS"/
