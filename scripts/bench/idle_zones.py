#!/usr/bin/env python3
"""What idle embedded zones cost: N single zones (release zone-node, embedded, loopback only, no
host, no child), left alone for 10 s, then `perf stat` over all of them for SECONDS.

Prints the CPU per zone (task-clock, every thread, in % of one core) and the context switches per
zone and second: at rest those two move together, since nearly all an idle zone spends is waking up.

Usage: scripts/bench/idle_zones.py [N=10] [SECONDS=60] [KEY=VALUE ...]   (settings for every zone;
ZONE_NODE_BIN: default target/release/zone-node)
"""
import os
import shutil
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
BIN = os.environ.get("ZONE_NODE_BIN", os.path.join(ROOT, "target/release/zone-node"))
FIRST_PORT = 27300


def main():
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 10
    secs = int(sys.argv[2]) if len(sys.argv) > 2 else 60
    extra = dict(kv.split("=", 1) for kv in sys.argv[3:])
    if shutil.which("perf") is None:
        sys.exit("perf is missing: apt-get install -y linux-perf")
    dirs, procs = [], []
    try:
        for i in range(n):
            data = tempfile.mkdtemp(prefix="zone-idle-")
            dirs.append(data)
            port = FIRST_PORT + i
            env = dict(os.environ, ZONE_NAME=f"idle{i}", ZONE_LISTEN=f"127.0.0.1:{port}",
                       ZONE_API_URL=f"http://127.0.0.1:{port}", ZONE_DATA_DIR=data, ZONE_ADMIN_USERNAME="admin",
                       ZONE_ADMIN_PASSWORD="idle-zones-pass-1", ZONE_LOG="warn", **extra)
            log = open(os.path.join(data, "node.log"), "w")
            procs.append(subprocess.Popen([BIN], env=env, stdout=log, stderr=subprocess.STDOUT))
        time.sleep(10)
        dead = [p.pid for p in procs if p.poll() is not None]
        if dead:
            sys.exit(f"zones exited early (pids {dead}); see node.log in {dirs}")
        pids = ",".join(str(p.pid) for p in procs)
        out = subprocess.run(["perf", "stat", "-x,", "-e", "task-clock,context-switches", "-p", pids, "sleep", str(secs)],
                             capture_output=True, text=True).stderr
        values = {line.split(",")[2]: float(line.split(",")[0]) for line in out.splitlines() if line.count(",") > 3}
        cpu_ms, switches = values["task-clock"], values["context-switches"]
        settings = " with " + ", ".join(f"{k}={v}" for k, v in extra.items()) if extra else ""
        print(f"{n} idle zones{settings} over {secs} s: {cpu_ms / secs / 10 / n:.3f} % of one core per zone, "
              f"{switches / secs / n:.1f} context switches per zone and second")
    finally:
        for p in procs:
            p.terminate()
        for p in procs:
            p.wait()
        for d in dirs:
            shutil.rmtree(d, ignore_errors=True)


if __name__ == "__main__":
    main()
