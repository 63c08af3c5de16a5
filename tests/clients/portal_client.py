#!/usr/bin/env python3
"""Sends one request to a zone's API portal over RabbitMQ and prints the reply.

Written only from docs/wire-format.md (it uses no project code), as the worked example of a
program in another language joining the bus. Needs pika (python3 -m pip install pika).

Prints one JSON line: {"status": "ok" | "error", "body": <reply body>, "correlation_id": ...}
Exit status: 0 on a reply (ok or error), 1 on timeout, 2 on usage or missing pika,
3 when no node serves the portal (the broker returned the message: unroutable).
"""

import argparse
import json
import sys
import time
import uuid

try:
    import pika
    import pika.exceptions
except ImportError:
    print("pika is not installed: python3 -m pip install pika", file=sys.stderr)
    sys.exit(2)

DIRECT_REPLY_TO = "amq.rabbitmq.reply-to"
BUS_VERSION = 1


def request_properties(kind, resource, message_id, correlation_id, timeout_s, bus_version=BUS_VERSION):
    """The properties of a request (docs/wire-format.md §3): a reply on direct reply-to, a deadline."""
    timeout_ms = int(timeout_s * 1000)
    headers = {
        "x-bus-version": bus_version,
        "x-deadline": int(time.time() * 1000) + timeout_ms,
        "x-hops": 0,
    }
    if resource:
        headers["x-resource-id"] = resource
    return pika.BasicProperties(
        content_type="application/json",
        message_id=message_id,
        correlation_id=correlation_id,
        reply_to=DIRECT_REPLY_TO,
        type=kind,
        expiration=str(timeout_ms),
        headers=headers,
    )


def parse_reply(properties, body):
    """A reply as {"status": "ok" | "error", "body": <the JSON body, or its text>}."""
    headers = properties.headers or {}
    status = headers.get("x-status", "ok")
    if isinstance(status, bytes):
        status = status.decode()
    try:
        parsed = json.loads(body) if body else None
    except ValueError:
        parsed = body.decode("utf-8", "replace")
    return {"status": status, "body": parsed}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", default="amqp://guest:guest@127.0.0.1:5672/%2f")
    parser.add_argument("--prefix", required=True, help="the zone's bus prefix (ZONE_BUS_PREFIX)")
    parser.add_argument("--kind", default="echo", help="the message kind (AMQP type)")
    parser.add_argument("--body", default="{}", help="the JSON body, sent as is")
    parser.add_argument("--resource", help="x-resource-id header")
    parser.add_argument("--timeout", type=float, default=10.0, help="seconds to wait for the reply")
    parser.add_argument("--bus-version", type=int, default=BUS_VERSION, help="x-bus-version to send (tests)")
    parser.add_argument(
        "--message-id",
        default=None,
        help="the message id (a UUID; default a new one): sending a request again with the same id "
        "gets the first run's reply without running it again",
    )
    args = parser.parse_args()

    connection = pika.BlockingConnection(pika.URLParameters(args.url))
    channel = connection.channel()
    # Publisher confirms + mandatory: an unroutable request raises UnroutableError at once.
    channel.confirm_delivery()

    correlation_id = uuid.uuid4().hex
    reply = {}

    def on_reply(_channel, _method, properties, body):
        if properties.correlation_id != correlation_id:
            return  # a late reply to some earlier request: not ours
        reply.update(parse_reply(properties, body), correlation_id=correlation_id)

    # Direct reply-to: consume the pseudo-queue (no_ack) on the channel that publishes, first.
    channel.basic_consume(queue=DIRECT_REPLY_TO, on_message_callback=on_reply, auto_ack=True)

    message_id = args.message_id or str(uuid.uuid4())
    properties = request_properties(
        args.kind, args.resource, message_id, correlation_id, args.timeout, args.bus_version
    )
    try:
        channel.basic_publish(
            exchange="",
            routing_key=f"{args.prefix}.message.api.portal",
            body=args.body.encode(),
            properties=properties,
            mandatory=True,
        )
    except pika.exceptions.UnroutableError:
        print(json.dumps({"status": "unroutable", "body": None, "correlation_id": correlation_id}))
        connection.close()
        return 3

    end = time.monotonic() + args.timeout
    while not reply and time.monotonic() < end:
        connection.process_data_events(time_limit=0.05)
    connection.close()
    if not reply:
        print(json.dumps({"status": "timeout", "body": None, "correlation_id": correlation_id}))
        return 1
    print(json.dumps(reply))
    return 0


if __name__ == "__main__":
    sys.exit(main())
