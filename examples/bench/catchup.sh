#!/usr/bin/env bash
# The catch-up from a large archive (README, "Resume"): an archive of
# about MIB MiB (default 1024), written as the server writes it, a server
# on it, and one client that resumes from before its first message
# (`?since=1970-01-01T00:00:00Z`) and reads it all as fast as it can:
#
#   examples/bench/catchup.sh [MIB]
#
# Prints messages/s and the server's RSS (VmRSS) at the start, at its
# peak, at the end and over time: it must stay flat, whatever the
# archive's size. The archive is written to a temporary folder ($TMPDIR,
# else /tmp; it needs MIB MiB free) and removed at the end, however the
# script ends. When it is done, examples/bench/results/catchup/ holds the
# run: the table (table.txt), when and where it ran (run.txt), the load
# generator's JSON reports and the server's log.
set -euo pipefail
MIB=${1:-1024}
source "$(dirname "$0")/lib.sh"
bench_init catchup
WORK=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$OUT" "$WORK"' EXIT

field() { python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))[sys.argv[2]])' "$1" "$2"; }

ARCHIVE=$WORK/archive.jsonl
"$LOADGEN" archive --out "$ARCHIVE" --mib "$MIB" --json >"$OUT/archive.json"
MESSAGES=$(field "$OUT/archive.json" messages)

PORT=$(free_port)
RUST_LOG=warn "$SERVER" --listen "127.0.0.1:$PORT" --archive "$ARCHIVE" \
  --rate 0 2>"$OUT/server.log" &
PID=$!
wait_port "$PORT"
"$LOADGEN" catchup --url "ws://127.0.0.1:$PORT/" --messages "$MESSAGES" \
  --pid "$PID" --json >"$OUT/catchup.json"

echo "examples/bench/catchup.sh $MIB, $(date -u +%FT%TZ), $(git rev-parse --short HEAD 2>/dev/null || echo '?'), $(nproc) cores, $(uname -sr), load average $(cut -d' ' -f1-3 /proc/loadavg)" >"$OUT/run.txt"
python3 - "$OUT" "$RESULTS" <<'PY' | tee "$OUT/table.txt"
import json, sys, os
out, results = sys.argv[1], sys.argv[2]
a = json.load(open(os.path.join(out, "archive.json")))
c = json.load(open(os.path.join(out, "catchup.json")))
n = lambda v: "-" if v is None else f"{v:,}"
mib = lambda kib: "-" if kib is None else f"{kib / 1024:,.1f} MiB"
print(f"archive: {a['bytes'] / 1048576:,.0f} MiB, {n(a['messages'])} messages (written in {a['seconds']} s)")
print(f"catch-up from the start: {n(c['messages'])} messages in {c['seconds']} s: "
      f"{n(round(c['messages_per_s']))} messages/s, {c['mib_per_s']} MiB/s")
print(f"gap notices: {c['gap_notices']} (the cursor is older than the archive), "
      f"out of order or duplicated: {c['out_of_order_or_dup']}")
print(f"server RSS: start {mib(c['server_rss_start_kib'])}, peak {mib(c['server_rss_peak_kib'])}, "
      f"end {mib(c['server_rss_end_kib'])}")
print(f"CPU: server {c['server_cpu_pct']} %, load generator {c['loadgen_cpu_pct']} % of one core")
print(f"{'seconds':>8} {'messages read':>14} {'server RSS':>12}")
for p in c["rss_over_time"]:
    print(f"{p['seconds']:>8} {n(p['messages']):>14} {mib(p['rss_kib']):>12}")
print(f"(raw results in {results})")
PY
rm -rf "$RESULTS" && mkdir -p "$RESULTS" && cp -r "$OUT"/. "$RESULTS"/
