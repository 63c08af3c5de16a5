#!/usr/bin/env python3
"""Runs probe.run requests through a zone's API portal on a RabbitMQ cluster, retrying each one
with the same message id until it gets a reply, across broker nodes that may die meanwhile.

Written from docs/wire-format.md ("Retrying"): a client that lost its reply (its broker node died,
or the portal queue went with it) sends the same message, with the same message_id, again; the
resource's owner answers a message it already ran with the first run's reply. An error reply whose
code says to try again (docs/api.md: the owner is away or reconnecting, so nothing was done) is
retried the same way: for a moment after a broker node dies, a node whose connection moved has not
declared its queues yet, and a request forwarded to it is answered `unroutable`.

One thread per resource, each with its own connection, sends --count requests to its resource one
after the other. A thread starts on broker --urls[i % n] and moves to the next address whenever its
connection fails.

Prints one JSON line per request as it ends: {"resource", "seq", "message_id", "status", "body",
"attempts", "seconds"}, status "ok" or "error" (the reply's), or "gave_up" when no reply came
within --give-up seconds; then {"done": true}. Exit status 0, or 2 on usage or missing pika.
"""

import argparse
import json
import sys
import threading
import time
import uuid

# The wire format as the one-request client writes it (it exits 2 when pika is missing).
from portal_client import DIRECT_REPLY_TO, parse_reply, pika, request_properties


# Error codes that say the request was not carried out and may be sent again (docs/api.md).
RETRY_CODES = {"unroutable", "node_unavailable", "bus_unavailable", "ring_unstable", "node_fenced"}


def says_retry(reply):
    """True for an error reply whose code says to send the request again."""
    if reply is None or reply.get("status") != "error" or not isinstance(reply.get("body"), dict):
        return False
    error = reply["body"].get("error")
    return isinstance(error, dict) and error.get("code") in RETRY_CODES


class Link:
    """One connection to some broker of the list, made again on the next one when it fails."""

    def __init__(self, urls, start):
        self.urls = urls
        self.next = start
        self.connection = None
        self.channel = None
        self.replies = {}

    def ensure(self):
        if self.connection is not None and self.connection.is_open:
            return
        url = self.urls[self.next % len(self.urls)]
        self.next += 1
        params = pika.URLParameters(url)
        params.socket_timeout = 2
        params.blocked_connection_timeout = 5
        self.connection = pika.BlockingConnection(params)
        self.channel = self.connection.channel()
        self.channel.confirm_delivery()
        self.channel.basic_consume(queue=DIRECT_REPLY_TO, on_message_callback=self.on_reply, auto_ack=True)

    def drop(self):
        try:
            if self.connection is not None and self.connection.is_open:
                self.connection.close()
        except Exception:  # noqa: BLE001 - the connection is broken already
            pass
        self.connection = None

    def on_reply(self, _channel, _method, properties, body):
        self.replies[properties.correlation_id] = parse_reply(properties, body)

    def call(self, prefix, resource, message_id, timeout):
        """One attempt: the reply, or None when none came (any failure on the way)."""
        correlation_id = uuid.uuid4().hex
        properties = request_properties("probe.run", resource, message_id, correlation_id, timeout)
        try:
            self.ensure()
            self.channel.basic_publish(
                exchange="",
                routing_key=f"{prefix}.message.api.portal",
                body=b'{"hold_ms":20}',
                properties=properties,
                mandatory=True,
            )
            end = time.monotonic() + timeout
            while correlation_id not in self.replies and time.monotonic() < end:
                self.connection.process_data_events(time_limit=0.05)
        except pika.exceptions.UnroutableError:
            return None  # no portal queue right now (the zone is reconnecting)
        except Exception:  # noqa: BLE001 - connection lost, refused, closed by the broker...
            self.drop()
            return None
        return self.replies.pop(correlation_id, None)


PRINT = threading.Lock()


def emit(entry):
    with PRINT:
        print(json.dumps(entry), flush=True)


def run_resource(args, urls, index, resource):
    link = Link(urls, index)
    for seq in range(1, args.count + 1):
        message_id = str(uuid.uuid4())
        started = time.monotonic()
        attempts = 0
        reply = None
        while (reply is None or says_retry(reply)) and time.monotonic() - started < args.give_up:
            attempts += 1
            reply = link.call(args.prefix, resource, message_id, args.timeout)
            if reply is None or says_retry(reply):
                time.sleep(0.1)
        entry = {
            "resource": resource,
            "seq": seq,
            "message_id": message_id,
            "attempts": attempts,
            "seconds": round(time.monotonic() - started, 3),
        }
        entry.update(reply or {"status": "gave_up", "body": None})
        emit(entry)
    link.drop()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--urls", required=True, help="broker URLs separated by commas")
    parser.add_argument("--prefix", required=True, help="the zone's bus prefix (ZONE_BUS_PREFIX)")
    parser.add_argument("--resources", required=True, help="resource ids separated by commas")
    parser.add_argument("--count", type=int, default=50, help="requests per resource")
    parser.add_argument("--timeout", type=float, default=2.0, help="seconds to wait for one attempt's reply")
    parser.add_argument("--give-up", type=float, default=60.0, help="seconds to keep trying one request")
    args = parser.parse_args()

    urls = [u.strip() for u in args.urls.split(",") if u.strip()]
    resources = [r for r in args.resources.split(",") if r]
    threads = [
        threading.Thread(target=run_resource, args=(args, urls, i, r), daemon=True) for i, r in enumerate(resources)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    emit({"done": True})
    return 0


if __name__ == "__main__":
    sys.exit(main())
