#!/usr/bin/env bash
# What the archive costs (README, "Archive"): one wschat instance without
# an archive, with `--archive` and with `--archive --archive-fsync`,
# alternately (none, archive, fsync; again), PASSES times:
#
#   examples/bench/archive.sh [PASSES]      (default 3)
#
# The loads: 1,000 listeners and 20 publishers as fast as they may (1,000
# messages in flight), and 100 listeners and 100 publishers as fast as
# they may. Each reports deliveries/s, also per second of the server's
# CPU (steadier on a shared machine), and messages/s. The table's columns:
# none (no archive), archive (--archive), fsync (--archive
# --archive-fsync). The archives go to a
# temporary folder ($TMPDIR, else /tmp: run.txt says on which device) and
# are removed at the end. Takes about 90 s a pass. When it is done,
# examples/bench/results/archive/ holds the run: the table (table.txt),
# when and where it ran with the machine's load (run.txt), each load's
# JSON report and the servers' log.
set -euo pipefail
PASSES=${1:-3}
source "$(dirname "$0")/lib.sh"
bench_init archive
DISK=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$OUT" "$DISK"' EXIT

for pass in $(seq "$PASSES"); do
  for config in none archive fsync; do
    echo "pass $pass: $config" >&2
    case $config in
      none) wschat ;;
      archive) wschat --archive "$DISK/$pass.jsonl" ;;
      fsync) wschat --archive "$DISK/$pass.fsync.jsonl" --archive-fsync ;;
    esac
    fanout "max.$config.$pass.json" --url "$URL" --pid "$PID" --listeners 1000 \
      --publishers 20 --size 100 --in-flight 1000 --duration 10
    fanout "max100.$config.$pass.json" --url "$URL" --pid "$PID" --listeners 100 \
      --publishers 100 --size 100 --in-flight 1000 --duration 10
    stop "$PID"
  done
  rm -f "$DISK"/*
done

finish "examples/bench/archive.sh $PASSES (archives on $(df --output=source "$DISK" | tail -1))" \
  --passes "$PASSES" \
  --column "none=none" --column "archive=archive" --column "fsync=fsync" \
  --ratio archive/none --ratio fsync/archive --ratio fsync/none \
  --row "max:deliveries_per_s:1k listeners, 20 publishers, max: deliveries/s" \
  --row "max:efficiency:  deliveries per server CPU-s" \
  --row "max:publish_rate_per_s:  messages/s" \
  --row "max:lost:  lost" \
  --row "max100:publish_rate_per_s:100 listeners, 100 publishers, max: messages/s" \
  --row "max100:deliveries_per_s:  deliveries/s" \
  --row "max100:efficiency:  deliveries per server CPU-s" \
  --row "max100:lost:  lost"
