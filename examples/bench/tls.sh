#!/usr/bin/env bash
# Handshakes per second with and without TLS, in one run: the same
# `wschat-loadgen connect` load (connect, upgrade, close; concurrency 50,
# 10 s) against wschat serving ws://, then wss:// with an ECDSA P-256
# certificate (what certbot issues by default), then wss:// with an RSA 2048
# one, alternately, and a table of medians. Each TLS connection makes a
# full handshake (the load generator resumes no session), as a new
# visitor's browser does.
#
#   examples/bench/tls.sh [PASSES]      (default 3)
#
# Needs cargo and the openssl command-line tool (only to make a throwaway
# authority and certificates; wschat itself uses rustls). wschat runs with
# --max-connections 25000 and RUST_LOG=warn. Takes about 40 s a pass.
# examples/bench/results/tls/ then holds the table (table.txt), when and
# where it ran (run.txt), and each load's JSON report and logs.
set -euo pipefail
PASSES=${1:-3}
source "$(dirname "$0")/lib.sh"
bench_init tls

# A throwaway authority, and a certificate of each key type for 127.0.0.1.
CERTS=$OUT/certs
mkdir -p "$CERTS"
openssl req -x509 -new -nodes -newkey ec -pkeyopt ec_paramgen_curve:P-256 -days 1 \
  -subj "/CN=wschat bench CA" -keyout "$CERTS/ca.key" -out "$CERTS/ca.pem" 2>/dev/null
printf 'subjectAltName=IP:127.0.0.1\nbasicConstraints=critical,CA:FALSE\nextendedKeyUsage=serverAuth\n' \
  >"$CERTS/leaf.ext"
leaf() { # name, then openssl's -newkey arguments
  local name=$1; shift
  openssl req -new -nodes -newkey "$@" -subj "/CN=127.0.0.1" \
    -keyout "$CERTS/$name.key" -out "$CERTS/$name.csr" 2>/dev/null
  openssl x509 -req -in "$CERTS/$name.csr" -CA "$CERTS/ca.pem" -CAkey "$CERTS/ca.key" \
    -CAcreateserial -days 1 -extfile "$CERTS/leaf.ext" -out "$CERTS/$name.pem" 2>/dev/null
}
leaf ec ec -pkeyopt ec_paramgen_curve:P-256
leaf rsa rsa:2048

start() { # plain|ec|rsa -> sets PID, URL, CA
  local port; port=$(free_port)
  local tls=()
  URL="ws://127.0.0.1:$port/"
  CA=()
  if [ "$1" != plain ]; then
    tls=(--tls-cert "$CERTS/$1.pem" --tls-key "$CERTS/$1.key")
    URL="wss://127.0.0.1:$port/"
    CA=(--tls-ca "$CERTS/ca.pem")
  fi
  RUST_LOG=warn "$SERVER" --listen "127.0.0.1:$port" --max-connections 25000 "${tls[@]}" \
    2>"$OUT/$1.log" &
  PID=$!
  wait_port "$port" "$1"
}

SERVERS="plain ec rsa"
for pass in $(seq "$PASSES"); do
  for name in $SERVERS; do
    echo "pass $pass: connect on $name" >&2
    start "$name"
    "$LOADGEN" connect --url "$URL" "${CA[@]}" --pid "$PID" --json \
      --concurrency 50 --duration 10 >"$OUT/connect.$name.$pass.json" \
      2>"$OUT/connect.$name.$pass.err" || echo '{}' >"$OUT/connect.$name.$pass.json"
    stop "$PID"
  done
done

echo "examples/bench/tls.sh $PASSES, $(date -u +%FT%TZ), $(git rev-parse --short HEAD 2>/dev/null || echo '?'), $(nproc) cores, $(uname -sr)" >"$OUT/run.txt"
rm -rf "$CERTS"
python3 - "$OUT" "$PASSES" "$RESULTS" <<'PY' | tee "$OUT/table.txt"
import json, statistics, sys, os
out, passes, results = sys.argv[1], int(sys.argv[2]), sys.argv[3]
rows = [
    ("handshakes_per_s", "connect c=50: handshakes/s"),
    ("server_cpu_us_per_handshake", "server CPU µs/handshake"),
    ("loadgen_cpu_us_per_handshake", "load generator CPU µs/handshake"),
    ("failed", "failed"),
]
def med(name, key):
    vals = []
    for p in range(1, passes + 1):
        try:
            v = json.load(open(os.path.join(out, f"connect.{name}.{p}.json"))).get(key)
        except Exception:
            v = None
        if isinstance(v, (int, float)):
            vals.append(v)
    return statistics.median(vals) if vals else None
fmt = lambda v: "-" if v is None else (f"{v:,.1f}" if isinstance(v, float) else f"{v:,}")
ratio = lambda t, p: f"{t / p:.2f}x" if t is not None and p else "-"
print(f"{'load':<34} {'ws://':>10} {'wss:// P-256':>13} {'P-256/ws':>9} {'wss:// RSA':>11} {'RSA/ws':>8}")
for key, label in rows:
    p, e, r = (med(name, key) for name in ("plain", "ec", "rsa"))
    print(f"{label:<34} {fmt(p):>10} {fmt(e):>13} {ratio(e, p):>9} {fmt(r):>11} {ratio(r, p):>8}")
print(f"(medians of {passes} alternating passes; raw results in {results})")
PY
rm -rf "$RESULTS" && mkdir -p "$RESULTS" && cp -r "$OUT"/. "$RESULTS"/
