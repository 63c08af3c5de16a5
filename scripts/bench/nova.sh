#!/usr/bin/env bash
# The Nova design's tree, simulated with the real federation crate (issue 10, item 5): 1 global zone,
# 5 regions, 25 DCs, 5,000 huddles of 200 hosts, 3,000,000 clients and 60,000,000 instances in one
# process (the gateways real, the huddles models; no HTTP, no database, nothing on the network).
# Builds the release binary and runs it; prints Markdown tables (progress goes to standard error).
# Arguments go to bench-nova (see tests/bench/nova/main.rs), e.g.
#   scripts/bench/nova.sh                     # the full size: about 3 minutes, 5 GiB at the peak
#   scripts/bench/nova.sh --scale 0.01        # seconds
#   scripts/bench/nova.sh --json --poll-ms 0  # answers through JSON, watches only
set -euo pipefail
cd "$(dirname "$0")/../.."
cargo build --release -p e2e --bin bench-nova
target_dir=${CARGO_TARGET_DIR:-$PWD/target}
echo "# $(date -u +%FT%TZ) on $(nproc) cores, $(uname -r), $(git rev-parse --short HEAD)"
exec "$target_dir/release/bench-nova" "$@"
