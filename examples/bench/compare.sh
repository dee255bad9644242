#!/usr/bin/env bash
# Runs the same loads against wschat, a Node.js `ws` relay and a bare
# tokio-tungstenite relay (`bare_relay.rs`: wschat's transport without its
# work, the ceiling), alternately, and prints a table of medians with the
# ratios wschat/peer. The fan-out at 1k listeners also runs the bare relay
# with frames as long as wschat's on the wire (wschat adds `tim`, 39
# bytes, to each 100-byte message), to tell the bytes from the work.
#
#   examples/bench/compare.sh [PASSES]      (default 3)
#
# To check that a change loses nothing, name an older build of the server
# in BASELINE (e.g. one built from an earlier commit into its own target
# folder): it runs every load too, as "before", alternating with the
# others, and the table gets a column wschat/before. PEERS picks the other
# servers (default "node bare"; PEERS=bare skips node). Such a run is kept
# in examples/bench/results/compare-baseline/, beside the last full one.
#
#   BASELINE=/tmp/old/release/wschat-server PEERS=bare examples/bench/compare.sh 3
#
# Needs cargo, node and npm (the `ws` package is installed into a temporary
# folder). Servers are started with what the loads need: wschat with
# --rate 0 (no publish limit), --max-connections 25000, --send-queue 65536
# and RUST_LOG=warn (no per-connection log lines). Takes about 6 minutes a
# pass. When it is done, examples/bench/results/compare/ holds the run:
# the table (table.txt), when and where it ran and the machine's load
# (run.txt), each load's JSON report and logs and, with gnuplot
# installed, two charts: deliveries.svg (fan-out at 1k listeners) and
# latency.svg (the latency distribution at 10k listeners).
set -euo pipefail
PASSES=${1:-3}
PEERS=${PEERS:-node bare}
BASELINE=${BASELINE:-}
source "$(dirname "$0")/lib.sh"
bench_init "compare${BASELINE:+-baseline}"
# (From the repository's root, as BASELINE is run.)
if [ -n "$BASELINE" ] && [ ! -x "$BASELINE" ]; then echo "BASELINE=$BASELINE is not a program" >&2; exit 2; fi
BARE=$BIN/bare-relay
NODE_DIR=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$NODE_DIR" "$OUT"' EXIT
if [[ " $PEERS " == *" node "* ]]; then
  (cd "$NODE_DIR" && npm install --silent --no-audit --no-fund ws@8 >/dev/null)
  cp examples/bench/node-relay.js "$NODE_DIR/"
fi

start() { # name -> sets PID, PORT
  PORT=$(free_port)
  case $1 in
    wschat|before)
            binary=$SERVER; [ "$1" = before ] && binary=$BASELINE
            RUST_LOG=warn "$binary" --listen "127.0.0.1:$PORT" --rate 0 --max-connections 25000 \
              --send-queue 65536 2>"$OUT/$1.log" & ;;
    node)   node "$NODE_DIR/node-relay.js" "$PORT" 2>"$OUT/$1.log" & ;;
    bare*)  "$BARE" "127.0.0.1:$PORT" 2>"$OUT/$1.log" & ;;
  esac
  PID=$!
  wait_port "$PORT" "$1"
}

value() { python3 -c "import json,sys; print(json.load(open(sys.argv[1])).get(sys.argv[2]))" "$1" "$2"; }

SOURCES=127.0.0.1,127.0.0.2,127.0.0.3,127.0.0.4
run_load() { # load name server -> json file
  local load=$1 name=$2 file="$OUT/$1.$2.$3.json"
  start "$name"
  local url="ws://127.0.0.1:$PORT/"
  case $load in
    fanout1k) "$LOADGEN" fanout --url "$url" --pid "$PID" --json --listeners 1000 --publishers 1 \
                --size "$([ "$name" = bare139 ] && echo 139 || echo 100)" --in-flight 1000 --duration 10 ;;
    fanout10k) "$LOADGEN" fanout --url "$url" --pid "$PID" --json --sources "$SOURCES" \
                --listeners 10000 --publishers 1 --rate 10 --duration 10 --latency-histogram ;;
    idle10k) "$LOADGEN" idle --url "$url" --pid "$PID" --json --sources "$SOURCES" \
                --connections 10000 --hold 3 ;;
    connect) "$LOADGEN" connect --url "$url" --pid "$PID" --json \
                --concurrency 50 --duration 10 ;;
  esac >"$file" 2>"$OUT/$load.$name.$3.err" || echo '{}' >"$file"
  stop "$PID"
}

LOADS="fanout1k fanout10k idle10k connect"
SERVERS="wschat${BASELINE:+ before} $PEERS"
LOAD_BEFORE=$(cut -d' ' -f1-3 /proc/loadavg)
for pass in $(seq "$PASSES"); do
  for load in $LOADS; do
    servers=$SERVERS
    [ "$load" = fanout1k ] && [[ " $PEERS " == *" bare "* ]] && servers="$SERVERS bare139"
    for name in $servers; do
      echo "pass $pass: $load on $name" >&2
      run_load "$load" "$name" "$pass"
    done
  done
done

echo "${BASELINE:+BASELINE=$BASELINE }PEERS=\"$PEERS\" examples/bench/compare.sh $PASSES, $(date -u +%FT%TZ), $(git rev-parse --short HEAD 2>/dev/null || echo '?'), $(nproc) cores, $(uname -sr); load average (1, 5, 15 min) before: $LOAD_BEFORE, after: $(cut -d' ' -f1-3 /proc/loadavg)" >"$OUT/run.txt"
python3 - "$OUT" "$PASSES" "$RESULTS" <<'PY' | tee "$OUT/table.txt"
import json, statistics, sys, os
out, passes, results = sys.argv[1], int(sys.argv[2]), sys.argv[3]
rows = [
    ("fanout1k", "deliveries_per_s", "1k listeners, max rate: deliveries/s", True),
    ("fanout1k", "efficiency", "  the same: deliveries per server CPU-s", True),
    ("fanout1k", "lost", "1k listeners: lost", None),
    ("fanout10k", "latency_p99_ms", "10k listeners, 10 msg/s: p99 ms", False),
    ("fanout10k", "lost", "10k listeners: lost", None),
    ("idle10k", "server_kib_per_connection", "10k idle: server KiB/conn", False),
    ("connect", "handshakes_per_s", "connect c=50: handshakes/s", True),
    ("connect", "server_cpu_us_per_handshake", "connect: server CPU µs/handshake", False),
]
def med(load, name, key):
    vals = []
    for p in range(1, passes + 1):
        path = os.path.join(out, f"{load}.{name}.{p}.json")
        try:
            report = json.load(open(path))
            if key == "efficiency":
                cpu = report.get("server_cpu_pct")
                v = report["deliveries_per_s"] / (cpu / 100) if cpu else None
            else:
                v = report.get(key)
        except Exception:
            v = None
        if isinstance(v, (int, float)):
            vals.append(v)
    return statistics.median(vals) if vals else None
peers = [(name, label) for name, label in (("before", "before"), ("node", "node ws"), ("bare", "bare relay"))
         if any(os.path.exists(os.path.join(out, f"{load}.{name}.1.json")) for load, *_ in rows)]
print(f"{'load':<40} {'wschat':>12}" + "".join(f" {label:>12} {'wschat/' + label.split()[0]:>12}" for _, label in peers))
fmt = lambda v: "-" if v is None else (f"{v:,.1f}" if isinstance(v, float) else f"{v:,}")
ratio = lambda w, p: f"{w / p:.2f}x" if w is not None and p else "-"
for load, key, label, _ in rows:
    w = med(load, "wschat", key)
    cells = "".join(f" {fmt(p):>12} {ratio(w, p):>12}" for p in (med(load, name, key) for name, _ in peers))
    print(f"{label:<40} {fmt(w):>12}{cells}")
b139 = [med("fanout1k", "bare139", k) for k in ("deliveries_per_s", "efficiency")]
w = [med("fanout1k", "wschat", k) for k in ("deliveries_per_s", "efficiency")]
print(f"{'bare relay, 139-byte frames (as long as wschat sends): deliveries/s':<70} {fmt(b139[0]):>12}  wschat/that: {ratio(w[0], b139[0])}")
print(f"{'  the same: deliveries per server CPU-s':<70} {fmt(b139[1]):>12}  wschat/that: {ratio(w[1], b139[1])}")
print(f"(medians of {passes} alternating passes; raw results in {results})")
# Data for the charts.
with open(os.path.join(out, "deliveries.dat"), "w") as f:
    for name, label in (("wschat", "wschat"), ("before", "wschat before"), ("bare", "bare relay"), ("bare139", "bare relay, wschat-sized frames"), ("node", "node ws")):
        v = med("fanout1k", name, "deliveries_per_s")
        if v:
            f.write(f'"{label}" {v / 1e6:.3f}\n')
for name in ("wschat", "before", "node", "bare"):
    hist = {}
    for p in range(1, passes + 1):
        try:
            pairs = json.load(open(os.path.join(out, f"fanout10k.{name}.{p}.json"))).get("latency_histogram_us") or []
        except Exception:
            pairs = []
        for v, c in pairs:
            hist[v] = hist.get(v, 0) + c
    total, seen = sum(hist.values()), 0
    with open(os.path.join(out, f"latency.{name}.dat"), "w") as f:
        for v in sorted(hist):
            seen += hist[v]
            f.write(f"{v / 1000:.3f} {100 * seen / total:.4f}\n")
PY
if command -v gnuplot >/dev/null; then
  # One line per server that ran the load.
  LATENCY_PLOTS=
  for name in wschat before bare node; do
    [ -s "$OUT/latency.$name.dat" ] || continue
    case $name in bare) title="bare relay" ;; node) title="node ws" ;; *) title=$name ;; esac
    LATENCY_PLOTS="${LATENCY_PLOTS:+$LATENCY_PLOTS, }\"$OUT/latency.$name.dat\" using 1:2 with lines lw 2 title \"$title\""
  done
  gnuplot <<GP
set terminal svg size 720,360 dynamic font "sans,12" background "white"
set output "$OUT/deliveries.svg"
set title "1,000 listeners, 1 publisher, 100-byte messages: deliveries/s (millions, medians of $PASSES)"
set style fill solid 0.8 border -1
set boxwidth 0.6
set yrange [0:*]
set grid ytics
unset key
set xtics nomirror noenhanced
plot "$OUT/deliveries.dat" using 0:2:xtic(1) with boxes lc rgb "#4472c4", \
     "" using 0:2:(sprintf("%.2f", \$2)) with labels offset 0,0.8 notitle
set output "$OUT/latency.svg"
set title "10,000 listeners, 10 messages/s: latency distribution (all passes)"
set xlabel "latency, ms (log scale)"
set ylabel "deliveries received within it, %"
set logscale x
set yrange [0:100]
set key bottom right
set grid xtics ytics
plot $LATENCY_PLOTS
GP
fi
rm -rf "$RESULTS" && mkdir -p "$RESULTS" && cp -r "$OUT"/. "$RESULTS"/
