#!/usr/bin/env bash
# The chaos run, longer than the suite's: three nodes on PostgreSQL and RabbitMQ with simulated
# hosts under creates, actions, deletes and probes, a node kill -9'd and restarted every 4 s, one
# paused past dead_after; then every invariant of tests/e2e/chaos.rs is checked and its summary
# line printed (`chaos: ...`).
# Usage: scripts/bench/chaos.sh [SECONDS] [RUNS]   (defaults: 300 seconds, 1 run)
set -euo pipefail
cd "$(dirname "$0")/../.."
secs=${1:-300}
runs=${2:-1}
[[ $secs =~ ^[0-9]+$ && $runs =~ ^[0-9]+$ ]] || { echo "usage: $0 [SECONDS] [RUNS]" >&2; exit 2; }
scripts/ensure-services
cargo build -p zone-node --bins
echo "# $(date -u +%FT%TZ) on $(nproc) cores, $(uname -r): $runs run(s) of ${secs}s"
for run in $(seq 1 "$runs"); do
  log=$(mktemp)
  if ZONE_CHAOS_SECS=$secs cargo test -p e2e --test e2e -- --exact chaos::chaos_of_kills_and_a_pause_leaves_every_invariant_standing --nocapture >"$log" 2>&1; then
    echo "run $run: passed: $(grep -m1 '^chaos:' "$log")"
  else
    echo "run $run: FAILED; the test's output is in $log" >&2
    grep -m1 '^chaos:' "$log" || true
    tail -n 40 "$log" >&2
    exit 1
  fi
  rm -f "$log"
done
