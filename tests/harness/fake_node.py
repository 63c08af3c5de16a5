#!/usr/bin/env python3
"""A stand-in for `zone-node serve`, used only by the harness's own smoke tests.

It speaks the small part of the node's contract the harness relies on, so the harness can be tested
before (and independently of) the real node: it reads the same ZONE_* variables, answers /healthz,
/readyz (503 for FAKE_NODE_READY_DELAY_MS after start, then 200), POST /v1/auth/tokens and GET /v1/zone,
and exits 0 on SIGTERM. Nodes of one zone find each other through a directory (FAKE_NODE_REGISTRY) in
which each node refreshes a file every heartbeat; a node whose file is older than ZONE_DEAD_AFTER_MS is
listed as dead.
"""
import json
import os
import signal
import sys
import threading
import time
import uuid
from datetime import datetime, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

NODE_ID = str(uuid.uuid4())
STARTED = time.monotonic()
HOST, PORT = os.environ["ZONE_LISTEN"].rsplit(":", 1)
API_URL = os.environ["ZONE_API_URL"]
ZONE = os.environ.get("ZONE_NAME", "default")
ADMIN = (os.environ.get("ZONE_ADMIN_USERNAME", "admin"), os.environ.get("ZONE_ADMIN_PASSWORD", ""))
HEARTBEAT_S = int(os.environ.get("ZONE_HEARTBEAT_INTERVAL_MS", "1000")) / 1000
DEAD_AFTER_S = int(os.environ.get("ZONE_DEAD_AFTER_MS", "5000")) / 1000
READY_DELAY_S = int(os.environ.get("FAKE_NODE_READY_DELAY_MS", "300")) / 1000
REGISTRY = os.environ.get("FAKE_NODE_REGISTRY") or os.path.join(os.environ["ZONE_DATA_DIR"], "registry")
TOKEN = "fake-" + NODE_ID
JOINED_AT = datetime.now(timezone.utc).isoformat()


def now_iso(ts=None):
    return datetime.fromtimestamp(ts or time.time(), timezone.utc).isoformat()


def heartbeat():
    os.makedirs(REGISTRY, exist_ok=True)
    path = os.path.join(REGISTRY, NODE_ID)
    with open(path + ".tmp", "w") as f:
        json.dump({"api_url": API_URL, "joined_at": JOINED_AT}, f)
    os.replace(path + ".tmp", path)


def heartbeat_loop():
    while True:
        heartbeat()
        time.sleep(HEARTBEAT_S)


def nodes():
    out = []
    for name in sorted(os.listdir(REGISTRY)):
        if name.endswith(".tmp"):
            continue
        path = os.path.join(REGISTRY, name)
        try:
            mtime = os.path.getmtime(path)
            with open(path) as f:
                info = json.load(f)
        except (OSError, ValueError):
            continue
        alive = time.time() - mtime < DEAD_AFTER_S
        out.append({"id": name, "state": "alive" if alive else "dead", "api_url": info["api_url"],
                    "last_heartbeat": now_iso(mtime), "joined_at": info["joined_at"]})
    return out


class Handler(BaseHTTPRequestHandler):
    def log_message(self, fmt, *args):
        sys.stderr.write("fake-node %s: %s\n" % (NODE_ID[:8], fmt % args))

    def answer(self, status, body):
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def error(self, status, code, message):
        self.answer(status, {"error": {"code": code, "message": message}})

    def do_GET(self):
        if self.path == "/healthz":
            self.answer(200, {"status": "ok"})
        elif self.path == "/readyz":
            ok = time.monotonic() - STARTED >= READY_DELAY_S
            check = {"ok": ok}
            self.answer(200 if ok else 503, {"status": "ready" if ok else "not_ready",
                                             "database": check, "bus": check, "membership": check})
        elif self.path == "/v1/zone":
            if self.headers.get("authorization") != "Bearer " + TOKEN:
                return self.error(401, "unauthenticated", "missing or invalid token")
            self.answer(200, {"id": "zone-" + ZONE, "name": ZONE, "api_url": API_URL, "node_id": NODE_ID, "nodes": nodes(),
                              "capabilities": {}, "children": [], "generation": 0, "ring_epoch": 0})
        else:
            self.error(404, "not_found", "no route " + self.path)

    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("content-length") or 0))
        if self.path != "/v1/auth/tokens":
            return self.error(404, "not_found", "no route " + self.path)
        try:
            req = json.loads(body)
        except ValueError:
            return self.error(400, "invalid_request", "body is not JSON")
        if (req.get("username"), req.get("password")) != ADMIN:
            return self.error(401, "invalid_credentials", "wrong username or password")
        self.answer(200, {"token": TOKEN, "expires_at": now_iso(time.time() + 3600), "roles": ["admin"],
                          "client_id": None, "api_url": API_URL})


def main():
    server = ThreadingHTTPServer((HOST, int(PORT)), Handler)
    server.daemon_threads = True

    def on_term(signum, frame):
        sys.stderr.write("fake-node %s: SIGTERM, shutting down\n" % NODE_ID[:8])
        threading.Thread(target=server.shutdown, daemon=True).start()

    signal.signal(signal.SIGTERM, on_term)
    heartbeat()
    threading.Thread(target=heartbeat_loop, daemon=True).start()
    sys.stderr.write("fake-node %s: serving %s on %s:%s\n" % (NODE_ID[:8], ZONE, HOST, PORT))
    sys.stderr.flush()
    server.serve_forever()
    os.remove(os.path.join(REGISTRY, NODE_ID))
    sys.stderr.write("fake-node %s: stopped\n" % NODE_ID[:8])


if __name__ == "__main__":
    main()
