#!/usr/bin/env bash
# Bus RPC benchmark, side by side with the peers in one session: this project's bus over the local
# RabbitMQ (amqp://, echo server in its own process) and in-process (memory://), OpenStack
# oslo.messaging RPC, and a pika client with direct reply-to. 200-byte payload everywhere.
#
#   scripts/bench-bus.sh            # REPEAT=1 N=5000 CONC_CALLS=10000 CONC=64
#
# Env: PEERS (peer scripts, default ../shared/peers next to the repo), BENCH_DIR (work dir with the
# peers' venv and the JSON results, default ${TMPDIR:-/tmp}/zone-bench-bus), REPEAT, N, CONC_CALLS,
# CONC, ZONE_TEST_AMQP_URL (default amqp://guest:guest@127.0.0.1:5672/%2f; the peers use AMQP_HOST
# and AMQP_PORT / TRANSPORT_URL, derived from 127.0.0.1:5672). Needs python3 with venv and pip.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
PEERS=${PEERS:-$ROOT/../shared/peers}
[[ -d $PEERS ]] || PEERS=/work/shared/peers
BENCH_DIR=${BENCH_DIR:-${TMPDIR:-/tmp}/zone-bench-bus}
REPEAT=${REPEAT:-1}
N=${N:-5000}
CONC_CALLS=${CONC_CALLS:-10000}
CONC=${CONC:-64}
export ZONE_TEST_AMQP_URL=${ZONE_TEST_AMQP_URL:-amqp://guest:guest@127.0.0.1:5672/%2f}

mkdir -p "$BENCH_DIR/results"
# The peers are copied, never written in place (their folder is shared).
mkdir -p "$BENCH_DIR/peers"
cp "$PEERS"/oslo_rpc_bench.py "$PEERS"/pika_rpc_bench.py "$PEERS"/requirements.txt "$BENCH_DIR/peers/"
if [[ ! -x $BENCH_DIR/peers/venv/bin/python ]]; then
    echo "creating the peers' venv in $BENCH_DIR/peers/venv"
    python3 -m venv "$BENCH_DIR/peers/venv"
    "$BENCH_DIR/peers/venv/bin/pip" install -q -r "$BENCH_DIR/peers/requirements.txt"
fi
PY=$BENCH_DIR/peers/venv/bin/python

echo "building bus_bench (release)"
(cd "$ROOT" && cargo build --release -q -p zone-node --example bus_bench)
BENCH_BIN=$ROOT/target/release/examples/bus_bench

rm -f "$BENCH_DIR"/results/*.json
for run in $(seq 1 "$REPEAT"); do
    echo "run $run/$REPEAT: bus"
    "$BENCH_BIN" --n "$N" --conc-calls "$CONC_CALLS" --conc "$CONC" --json "$BENCH_DIR/results/bus_run$run.json"
    echo "run $run/$REPEAT: pika"
    (cd "$BENCH_DIR/peers" && "$PY" pika_rpc_bench.py all --n "$N" --conc-calls "$CONC_CALLS" --conc "$CONC" \
        --json "$BENCH_DIR/results/pika_run$run.json" >"$BENCH_DIR/results/pika_run$run.log" 2>&1)
    echo "run $run/$REPEAT: oslo.messaging"
    (cd "$BENCH_DIR/peers" && "$PY" oslo_rpc_bench.py all --n "$N" --conc-calls "$CONC_CALLS" --conc "$CONC" \
        --json "$BENCH_DIR/results/oslo_run$run.json" >"$BENCH_DIR/results/oslo_run$run.log" 2>&1)
done

echo
echo "date: $(date -u +%FT%TZ)"
echo "machine: $(nproc) cpus, $(free -g | awk '/Mem:/{print $2}') GiB, kernel $(uname -r), load $(cut -d' ' -f1-3 /proc/loadavg)"
echo "rabbitmq: $(dpkg-query -W -f='${Version}' rabbitmq-server 2>/dev/null || echo unknown)"
python3 - "$BENCH_DIR/results" "$CONC" <<'PY'
import glob, json, os, statistics, sys
results, conc = sys.argv[1], sys.argv[2]
rows = [
    ("zone-node bus, amqp://", "bus_run*.json", ("amqp", "sequential"), "sequential, 1 in flight"),
    ("zone-node bus, amqp://", "bus_run*.json", ("amqp", "concurrent"), f"{conc} in flight, 1 connection"),
    ("zone-node bus, memory://", "bus_run*.json", ("memory", "sequential"), "sequential, 1 in flight"),
    ("zone-node bus, memory://", "bus_run*.json", ("memory", "concurrent"), f"{conc} in flight"),
    ("pika, direct reply-to", "pika_run*.json", ("sequential",), "sequential, 1 in flight"),
    ("pika, direct reply-to", "pika_run*.json", ("pipelined",), f"pipelined, window {conc}"),
    ("oslo.messaging RPC", "oslo_run*.json", ("sequential",), "sequential, 1 in flight"),
    ("oslo.messaging RPC", "oslo_run*.json", ("concurrent",), f"{conc} threads, 1 RPCClient"),
]
def get(path, keys):
    with open(path) as f:
        v = json.load(f)
    for k in keys:
        v = v[k]
    return v
print(f"| system | mode | calls/s | p50 ms | p99 ms |")
print(f"|---|---|---|---|---|")
for system, pattern, keys, mode in rows:
    files = sorted(glob.glob(os.path.join(results, pattern)))
    if not files:
        continue
    vals = [get(p, keys) for p in files]
    med = lambda k: statistics.median(v[k] for v in vals)
    span = "" if len(vals) == 1 else f" [{min(v['calls_per_s'] for v in vals):.0f}-{max(v['calls_per_s'] for v in vals):.0f}]"
    print(f"| {system} | {mode} | {med('calls_per_s'):.0f}{span} | {med('p50_ms'):.3f} | {med('p99_ms'):.3f} |")
PY
