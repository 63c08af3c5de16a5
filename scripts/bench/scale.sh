#!/usr/bin/env bash
# One zone at scale (issue 9): registration time, idle cost with every host reporting,
# capabilities and placement latency, creates/s, and the instance reads (list pages, show, the
# client's zone) with up to 1,000,000 instances inserted in SQL. Builds the release binary, starts
# the nodes and `zone-node agent-sim` on 127.0.0.1 only, prints Markdown tables (progress goes to
# standard error). Arguments go to bench-scale (see tests/bench/scale.rs), e.g.
#   scripts/bench/scale.sh                                  # 1,000 / 10,000 / 100,000 hosts, embedded
#   scripts/bench/scale.sh --hosts 1000 --instances 10000   # a few minutes
#   scripts/bench/scale.sh --hosts 10000 --instances 10000,100000,1000000 --setups embedded,pg1,pg3
set -euo pipefail
cd "$(dirname "$0")/../.."
scripts/ensure-services >/dev/null
cargo build --release -p zone-node -p e2e --bin zone-node --bin bench-scale
export ZONE_NODE_BIN="$PWD/target/release/zone-node"
export ZONE_TEST_LOG="${ZONE_TEST_LOG:-warn}"
exec target/release/bench-scale "$@"
