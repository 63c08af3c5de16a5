#!/usr/bin/env python3
"""Failover benchmark: how long after `kill -9` of one node of a three-node zone (PostgreSQL,
RabbitMQ, default heartbeat 1 s / dead after 5 s) its peers evict it and serve its resources.

Prints, per run: time to eviction (seen in GET /v1/zone) and time until every one of 50 resources
the dead node owned answers a probe again through a survivor. Standard library only.

Usage: scripts/bench/failover.py [--runs 3] [--bin target/release/zone-node]
"""

import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
import uuid

PG_ADMIN = os.environ.get("ZONE_TEST_PG_URL", "postgres://postgres@127.0.0.1:5432/postgres")
AMQP = os.environ.get("ZONE_TEST_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/%2f")
PASSWORD = "bench-password-1"


def http(method, url, body=None, token=None, timeout=10):
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(url, data=data, method=method)
    if data is not None:
        req.add_header("content-type", "application/json")
    if token:
        req.add_header("authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return r.status, json.loads(r.read() or b"null")
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read() or b"null")
    except (urllib.error.URLError, ConnectionError, TimeoutError) as e:
        return None, str(e)


def psql(sql):
    subprocess.run(["psql", PG_ADMIN, "-qc", sql], check=True, capture_output=True)


def start_node(binary, db_url, prefix, port, workdir):
    env = dict(os.environ)
    env.update({
        "ZONE_NAME": "failover", "ZONE_LISTEN": f"127.0.0.1:{port}", "ZONE_DATABASE_URL": db_url,
        "ZONE_BUS_URL": AMQP, "ZONE_BUS_PREFIX": prefix, "ZONE_ADMIN_PASSWORD": PASSWORD,
        "ZONE_DATA_DIR": os.path.join(workdir, str(port)), "ZONE_LOG": "warn",
    })
    log = open(os.path.join(workdir, f"node-{port}.log"), "w")
    return subprocess.Popen([binary], env=env, stdout=log, stderr=log)


def wait_ready(port, timeout=30):
    end = time.time() + timeout
    while time.time() < end:
        status, _ = http("GET", f"http://127.0.0.1:{port}/readyz", timeout=2)
        if status == 200:
            return
        time.sleep(0.1)
    raise SystemExit(f"node on port {port} not ready within {timeout} s")


def one_run(binary, base_port):
    db = "bench_failover_" + uuid.uuid4().hex[:8]
    psql(f"CREATE DATABASE {db}")
    db_url = PG_ADMIN.rsplit("/", 1)[0] + "/" + db
    prefix = "bench_" + uuid.uuid4().hex[:8]
    ports = [base_port, base_port + 1, base_port + 2]
    procs = []
    with tempfile.TemporaryDirectory() as workdir:
        try:
            for port in ports:
                procs.append(start_node(binary, db_url, prefix, port, workdir))
                wait_ready(port)
            url0 = f"http://127.0.0.1:{ports[0]}"
            _, tok = http("POST", url0 + "/v1/auth/tokens", {"username": "admin", "password": PASSWORD})
            token = tok["token"]
            _, z2 = http("GET", f"http://127.0.0.1:{ports[2]}/v1/zone", token=token)
            victim = z2["node_id"]
            resources = [str(uuid.uuid4()) for _ in range(2000)]
            _, owners = http("POST", url0 + "/v1/zone/owners", {"resources": resources}, token=token)
            mine = [r for r, o in zip(resources, owners["owners"]) if o == victim][:50]
            killed = time.monotonic()
            procs[2].send_signal(signal.SIGKILL)
            procs[2].wait()
            evicted = None
            while evicted is None and time.monotonic() - killed < 60:
                _, z = http("GET", url0 + "/v1/zone", token=token)
                if any(n["id"] == victim and n["state"] == "dead" for n in z["nodes"]):
                    evicted = time.monotonic() - killed
                time.sleep(0.05)
            pending = set(mine)
            while pending and time.monotonic() - killed < 60:
                for r in list(pending):
                    status, _ = http("POST", f"http://127.0.0.1:{ports[len(pending) % 2]}/v1/zone/probe/{r}", {"hold_ms": 0}, token=token)
                    if status == 200:
                        pending.discard(r)
                time.sleep(0.05)
            served = time.monotonic() - killed if not pending else None
            return evicted, served
        finally:
            for p in procs:
                if p.poll() is None:
                    p.terminate()
                    try:
                        p.wait(10)
                    except subprocess.TimeoutExpired:
                        p.kill()
            psql(f"DROP DATABASE IF EXISTS {db} WITH (FORCE)")


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--bin", default=os.path.join(os.path.dirname(__file__), "../../target/release/zone-node"))
    ap.add_argument("--port", type=int, default=18400)
    args = ap.parse_args()
    rows = []
    for i in range(args.runs):
        evicted, served = one_run(os.path.abspath(args.bin), args.port + 10 * i)
        rows.append((evicted, served))
        print(f"run {i + 1}: evicted after {evicted:.2f} s, all 50 of its resources served again after {served:.2f} s", flush=True)
    ev = [r[0] for r in rows]
    sv = [r[1] for r in rows]
    print(f"median: evicted {statistics.median(ev):.2f} s [{min(ev):.2f}-{max(ev):.2f}], served again {statistics.median(sv):.2f} s [{min(sv):.2f}-{max(sv):.2f}] (heartbeat 1 s, dead after 5 s)")


if __name__ == "__main__":
    sys.exit(main())
