#!/usr/bin/env bash
# Samples the CPU of a running benchmark's zone node and agent-sim every 0.5 s, with the last line
# of the benchmark's progress log as the phase, so CPU can be split by phase afterwards:
#   target/release/bench-scale ... 2> /tmp/bench.err &
#   scripts/bench/sample.sh /tmp/bench.err > /tmp/samples.txt &
# Each line: epoch seconds | phase | node=<utime+stime ticks> sim=<ticks> total=<all CPUs' ticks>
# busy=<non-idle ticks>. Ticks are 1/100 s (USER_HZ); differences between two lines give the
# share of a core (node, sim) or of the machine (busy/total). Stop it with kill.
set -euo pipefail
log=${1:?usage: $0 BENCH_PROGRESS_LOG}
ticks() { [ -n "$1" ] && awk '{print $14+$15}' "/proc/$1/stat" 2>/dev/null || true; }
while true; do
    node=$(pgrep -f "zone-node serve" | head -1 || true)
    sim=$(pgrep -f "zone-node agent-sim" | head -1 || true)
    read -r total busy < <(awk '/^cpu /{print $2+$3+$4+$5+$6+$7+$8, $2+$3+$4+$7+$8}' /proc/stat)
    echo "$(date +%s.%N) | $(tail -1 "$log" 2>/dev/null | cut -c1-40) | node=$(ticks "$node") sim=$(ticks "$sim") total=$total busy=$busy"
    sleep 0.5
done
