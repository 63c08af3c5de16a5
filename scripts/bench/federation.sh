#!/usr/bin/env bash
# Federation benchmarks, side by side with the nginx peer in the same session:
#   1. nginx direct and one proxy hop (../shared/peers/nginx/nginx.conf), wrk at 1 and 32 connections;
#   2. one gateway hop: GET /v1/instances/{id} at a parent against the child directly;
#   3. lowest-zone lookups through a 4-level tree of 69 zones (cold, then cached at 1 and 32
#      connections), beside a bare axum server and nginx answering the same body under the same tree;
#   4. listing 10,000 instances from each of 10 children at their parent;
#   5. trees of 101 and 31 zones at default settings: convergence, staleness, CPU and memory at rest.
# Usage: scripts/bench/federation.sh [hop|lookup|list|tree|nginx ...]   (default: all five)
# Env: PEERS (default ../shared/peers), WRK_DUR seconds (10), REPEAT (3), ZONE_ENV (K=V,K=V: settings
# every zone of hop, lookup and list gets, e.g. ZONE_WORKER_THREADS=1; the zones get none of the
# caller's own ZONE_* variables).
set -euo pipefail
cd "$(dirname "$0")/../.."
root=$PWD
PEERS=${PEERS:-$root/../shared/peers}
WRK_DUR=${WRK_DUR:-10}
REPEAT=${REPEAT:-3}
what=("$@")
[[ ${#what[@]} -gt 0 ]] || what=(nginx hop lookup list tree)
command -v wrk >/dev/null || { echo "wrk is missing: apt-get install -y wrk" >&2; exit 1; }
cargo build --release -p zone-node -p e2e --bin zone-node --bin bench-federation
export ZONE_NODE_BIN="$root/target/release/zone-node"
export ZONE_TEST_LOG="${ZONE_TEST_LOG:-warn}"
echo "# $(date -u +%FT%TZ) on $(nproc) cores, $(uname -r)"

for w in "${what[@]}"; do
  case "$w" in
    nginx)
      command -v nginx >/dev/null || { echo "nginx is missing: apt-get install -y nginx" >&2; exit 1; }
      # The peers folder is read-only: run nginx from a copy of its configuration.
      ngx=$(mktemp -d)
      cp "$PEERS"/nginx/*.conf "$ngx/"
      mkdir -p "$ngx/run" "$ngx/logs" "$ngx/tmp"
      nginx -p "$ngx/" -e logs/error.log -c nginx.conf
      # The hop in a process of its own (18091 -> 18080), like a gateway in front of a zone.
      nginx -p "$ngx/" -e logs/hop_error.log -c nginx_hop_only.conf
      trap 'kill -QUIT "$(cat "$ngx/run/nginx.pid")" "$(cat "$ngx/run/nginx_hop.pid")" 2>/dev/null || true' EXIT
      for p in 18080 18081 18091; do
        for _ in $(seq 1 50); do curl -fs "http://127.0.0.1:$p/" >/dev/null && break; sleep 0.1; done
      done
      echo "| nginx | connections | req/s (each run) | p50 (each run) | p99 (each run) |"
      echo "|---|---|---|---|---|"
      for p in 18080 18081 18091; do
        for c in 1 32; do
          rps=(); p50=(); p99=()
          for _ in $(seq 1 "$REPEAT"); do
            out=$(wrk -t1 -c"$c" -d"${WRK_DUR}s" --latency "http://127.0.0.1:$p/")
            rps+=("$(awk '/Requests\/sec/{print $2}' <<<"$out")")
            p50+=("$(awk '$1=="50%"{print $2}' <<<"$out")")
            p99+=("$(awk '$1=="99%"{print $2}' <<<"$out")")
          done
          case $p in 18080) label=direct ;; 18081) label="1 hop, same worker" ;; *) label="1 hop, own process" ;; esac
          echo "| $label | c=$c | ${rps[*]} | ${p50[*]} | ${p99[*]} |"
        done
      done
      kill -QUIT "$(cat "$ngx/run/nginx.pid")" "$(cat "$ngx/run/nginx_hop.pid")"; trap - EXIT
      ;;
    hop) target/release/bench-federation hop --duration "$WRK_DUR" --repeat "$REPEAT" --zone-env "${ZONE_ENV:-}" ;;
    lookup) target/release/bench-federation lookup --duration "$WRK_DUR" --zone-env "${ZONE_ENV:-}" ;;
    list) target/release/bench-federation list --zone-env "${ZONE_ENV:-}" ;;
    # 1 → 4 → 16 → 80 (101 zones, issue 10 item 6), then the 31-zone tree of item 3 at rest.
    tree) target/release/bench-federation tree --fanout 4,4,5
          target/release/bench-federation tree --fanout 2,2,2,2 --changes 20 ;;
    *) echo "unknown benchmark $w: hop, lookup, list, tree or nginx" >&2; exit 2 ;;
  esac
done
