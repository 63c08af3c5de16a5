#!/usr/bin/env python3
"""How soon a parent zone notices a child die or hang, and come back, at the product's defaults.

Starts a parent and a child zone (release zone-node, embedded, loopback only), adds the child,
then either kills it (`kill`: SIGKILL, then a restart on the same data) or freezes it (`stop`:
SIGSTOP, then SIGCONT), and prints the seconds until the parent's `GET /v1/zones` says offline,
then online.

Usage: scripts/bench/liveness.py kill|stop [runs]   (ZONE_NODE_BIN: default target/release/zone-node)
"""
import http.client
import json
import os
import signal
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
BIN = os.environ.get("ZONE_NODE_BIN", os.path.join(ROOT, "target/release/zone-node"))
PASSWORD = "liveness-pass-123"
PARENT_PORT, CHILD_PORT = 27201, 27202


def start(name, port, data):
    env = dict(os.environ, ZONE_NAME=name, ZONE_LISTEN=f"127.0.0.1:{port}", ZONE_API_URL=f"http://127.0.0.1:{port}",
               ZONE_DATA_DIR=data, ZONE_ADMIN_USERNAME="admin", ZONE_ADMIN_PASSWORD=PASSWORD, ZONE_LOG="warn")
    log = open(os.path.join(data, "node.log"), "a")
    return subprocess.Popen([BIN], env=env, stdout=log, stderr=subprocess.STDOUT)


def call(port, method, path, body=None, token=None):
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    headers = {"content-type": "application/json"}
    if token:
        headers["authorization"] = "Bearer " + token
    conn.request(method, path, json.dumps(body) if body else None, headers)
    resp = conn.getresponse()
    return resp.status, resp.read()


def login(port):
    for _ in range(400):
        try:
            status, body = call(port, "POST", "/v1/auth/tokens", {"username": "admin", "password": PASSWORD})
            if status == 201:
                return json.loads(body)["token"]
        except OSError:
            pass
        time.sleep(0.05)
    sys.exit(f"the zone on port {port} did not start")


def wait_status(token, want):
    started = time.time()
    while True:
        _, body = call(PARENT_PORT, "GET", "/v1/zones", token=token)
        if json.loads(body)["zones"][0]["status"] == want:
            return time.time() - started
        time.sleep(0.02)


def run(mode):
    with tempfile.TemporaryDirectory() as p_dir, tempfile.TemporaryDirectory() as c_dir:
        parent, child = start("parent", PARENT_PORT, p_dir), start("child", CHILD_PORT, c_dir)
        try:
            token = login(PARENT_PORT)
            login(CHILD_PORT)
            body = {"api_url": f"http://127.0.0.1:{CHILD_PORT}", "username": "admin", "password": PASSWORD}
            status, answer = call(PARENT_PORT, "POST", "/v1/zones", body, token)
            if status != 201:
                sys.exit(f"zone-add failed: {status} {answer!r}")
            time.sleep(7)  # past a full poll interval: the child is watched and polled
            if mode == "kill":
                child.kill()
                offline = wait_status(token, "offline")
                child.wait()
                child = start("child", CHILD_PORT, c_dir)
                login(CHILD_PORT)
                back = wait_status(token, "online")
                print(f"kill -9: offline after {offline:.2f} s; restarted: online after {back:.2f} s")
            else:
                child.send_signal(signal.SIGSTOP)
                offline = wait_status(token, "offline")
                child.send_signal(signal.SIGCONT)
                back = wait_status(token, "online")
                print(f"SIGSTOP: offline after {offline:.2f} s; SIGCONT: online after {back:.2f} s")
        finally:
            child.send_signal(signal.SIGCONT)
            child.kill()
            parent.kill()


if __name__ == "__main__":
    if len(sys.argv) < 2 or sys.argv[1] not in ("kill", "stop"):
        sys.exit(__doc__)
    for _ in range(int(sys.argv[2]) if len(sys.argv) > 2 else 1):
        run(sys.argv[1])
