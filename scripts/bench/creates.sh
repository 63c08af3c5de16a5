#!/usr/bin/env bash
# 10,000 instance creates through the REST API against agent-sim hosts, on one node (SQLite and
# PostgreSQL) and on three nodes (PostgreSQL + RabbitMQ). Prints wall time, creates/s, latency and
# each node's peak RSS. Arguments go to bench-creates (see tests/bench/creates.rs), e.g.
#   scripts/bench/creates.sh --creates 10000 --hosts 100 --concurrency 64 --setups sqlite,pg1,pg3
set -euo pipefail
cd "$(dirname "$0")/../.."
scripts/ensure-services >/dev/null
cargo build --release -p zone-node -p e2e --bin zone-node --bin bench-creates
export ZONE_NODE_BIN="$PWD/target/release/zone-node"
export ZONE_TEST_LOG="${ZONE_TEST_LOG:-warn}"
exec target/release/bench-creates "$@"
