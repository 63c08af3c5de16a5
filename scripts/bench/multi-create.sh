#!/usr/bin/env bash
# Multi-create on one node: BATCHES creates of count 1,000 (1 vcpu, 512 MB, 10 GB), one after the
# other, then STREAMS of them at once (each stream ROUNDS of them in turn), against
# agent-sim --hosts HOSTS --profile big --latency-ms 0 (a big host holds 256 such instances).
# Embedded (SQLite, in-process bus) by default; PGDB=<new database name> runs the node on
# PostgreSQL (the database is created and dropped). Prints each batch's time and how many of its
# instances run. Needs curl, bc and python3.
#   scripts/bench/multi-create.sh              BATCHES=10 STREAMS=4 PGDB=zt_bench scripts/bench/multi-create.sh
#   HOSTS=5000 BATCHES=0 STREAMS=4 ROUNDS=250 scripts/bench/multi-create.sh   # 1,000,000 instances
set -euo pipefail
cd "$(dirname "$0")/../.."
[ -z "${PGDB:-}" ] || scripts/ensure-services >/dev/null
cargo build --release -p zone-node --bin zone-node
BIN="${CARGO_TARGET_DIR:-$PWD/target}/release/zone-node"
DIR=$(mktemp -d)
PORT=${PORT:-18931}
BATCHES=${BATCHES:-10}
STREAMS=${STREAMS:-4}
ROUNDS=${ROUNDS:-1}
HOSTS=${HOSTS:-100}
if [ -n "${PGDB:-}" ]; then
  createdb -h 127.0.0.1 -U postgres "$PGDB"
  export ZONE_DATABASE_URL="postgres://postgres@127.0.0.1:5432/$PGDB"
fi
export ZONE_NAME=bench ZONE_LISTEN=127.0.0.1:$PORT ZONE_DATA_DIR=$DIR ZONE_ADMIN_PASSWORD=bench-pass-123 ZONE_LOG=${ZONE_LOG:-warn,zone_node::services::batch=info}
"$BIN" serve > "$DIR/node.log" 2>&1 & NODE=$!
export ZONE_URL=http://127.0.0.1:$PORT ZONE_USERNAME=admin ZONE_PASSWORD=bench-pass-123
cleanup() {
  kill $SIM $NODE 2>/dev/null || true; wait 2>/dev/null || true; rm -rf "$DIR"
  if [ -n "${PGDB:-}" ]; then dropdb -h 127.0.0.1 -U postgres "$PGDB"; fi
}
trap cleanup EXIT
for _ in $(seq 100); do curl -sf "$ZONE_URL/healthz" >/dev/null && break; sleep 0.1; done
"$BIN" agent-sim --hosts "$HOSTS" --profile big --latency-ms 0 > "$DIR/sim.log" 2>&1 & SIM=$!
for _ in $(seq 3000); do
  # Up hosts as the aggregate counts them (host-list answers a page of at most 1,000).
  n=$(curl -sf -H "authorization: Bearer $("$BIN" login 2>/dev/null | tail -1)" "$ZONE_URL/v1/capabilities" \
    | python3 -c 'import json,sys; print(json.load(sys.stdin)["capacity.free-vcpus"]["count"])' 2>/dev/null || echo 0)
  [ "$n" = "$HOSTS" ] && break; sleep 0.2
done
echo "hosts up: $n"
TOKEN=$("$BIN" login 2>/dev/null | tail -1)
create() { # name: one POST of 1,000, prints seconds and how many are running
  local t0 t1 body
  t0=$(date +%s.%N)
  body=$(curl -sf -m 120 -H "authorization: Bearer $TOKEN" -H 'content-type: application/json' \
    -d "{\"name\":\"$1\",\"client_id\":\"c-$1\",\"count\":1000,\"resources\":{\"vcpus\":1,\"memory_mb\":512,\"disk_gb\":10}}" \
    "$ZONE_URL/v1/instances")
  t1=$(date +%s.%N)
  echo "$1 $(echo "$t1 - $t0" | bc) s, running: $(echo "$body" | grep -o '"state":"running"' | wc -l)"
}
S=$(date +%s.%N)
for i in $(seq "$BATCHES"); do create "seq$i"; done
E=$(date +%s.%N)
echo "sequential: $BATCHES x 1000 in $(echo "$E - $S" | bc) s"
S=$(date +%s.%N)
PIDS=()
stream() { for r in $(seq "$ROUNDS"); do create "par$1-$r"; done; }
for i in $(seq "$STREAMS"); do stream "$i" > "$DIR/stream$i.log" & PIDS+=($!); done
wait "${PIDS[@]}"
E=$(date +%s.%N)
cat "$DIR"/stream*.log | tail -n 8
total=$((STREAMS * ROUNDS * 1000))
running=$(cat "$DIR"/stream*.log | sed -E 's/.*running: ([0-9]+).*/\1/' | paste -sd+ | bc)
echo "parallel: $STREAMS streams x $ROUNDS x 1000 = $total in $(echo "$E - $S" | bc) s ($(echo "$total / ($E - $S)" | bc)/s), running: $running"
echo "error lines in the node log: $(grep -ci error "$DIR/node.log" || true)"
# Where the time went, per batch: placement alone, placement and insert, and the whole (the node's
# own figures).
grep "multi-create done" "$DIR/node.log" | sed -E 's/.*(reserved_ms=[0-9]+) (placed_ms=[0-9]+) (total_ms=[0-9]+).*/\1 \2 \3/' || true
