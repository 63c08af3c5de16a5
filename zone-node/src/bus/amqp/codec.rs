//! AMQP properties and headers ↔ [`Message`], [`Event`] and replies (docs/wire-format.md is the
//! reference).
//!
//! Kept apart from the connection code so that what goes on the wire can be read, and tested,
//! in one place: every property and header the transport writes is written here, and every one
//! it reads is read here, whichever width or string type a client in another language chose.

use lapin::types::{AMQPValue, FieldTable, LongString, ShortString};
use lapin::BasicProperties;
use uuid::Uuid;

use crate::bus::envelope::{headers, is_json, now_ms, BUS_VERSION, REPLY_KIND};
use crate::bus::{Event, Message};

const JSON: &str = "application/json";

fn header<'a>(props: &'a BasicProperties, name: &str) -> Option<&'a AMQPValue> {
    props.headers().as_ref()?.inner().get(name)
}

/// A header as text, whichever string type the sender used.
pub(super) fn header_str<'a>(props: &'a BasicProperties, name: &str) -> Option<&'a str> {
    match header(props, name)? {
        AMQPValue::LongString(s) => std::str::from_utf8(s.as_bytes()).ok(),
        AMQPValue::ShortString(s) => Some(s.as_str()),
        _ => None,
    }
}

/// A header as an integer, whichever integer type the sender used (clients in other languages
/// pick the width themselves).
pub(super) fn header_int(props: &BasicProperties, name: &str) -> Option<i64> {
    match header(props, name)? {
        AMQPValue::ShortShortInt(v) => Some(i64::from(*v)),
        AMQPValue::ShortShortUInt(v) => Some(i64::from(*v)),
        AMQPValue::ShortInt(v) => Some(i64::from(*v)),
        AMQPValue::ShortUInt(v) => Some(i64::from(*v)),
        AMQPValue::LongInt(v) => Some(i64::from(*v)),
        AMQPValue::LongUInt(v) => Some(i64::from(*v)),
        AMQPValue::LongLongInt(v) => Some(*v),
        AMQPValue::Timestamp(v) => i64::try_from(*v).ok(),
        AMQPValue::LongString(s) => std::str::from_utf8(s.as_bytes()).ok()?.trim().parse().ok(),
        AMQPValue::ShortString(s) => s.as_str().trim().parse().ok(),
        _ => None,
    }
}

fn put_str(table: &mut FieldTable, name: &str, value: &str) {
    table.insert(ShortString::from(name), AMQPValue::LongString(LongString::from(value)));
}

fn put_int(table: &mut FieldTable, name: &str, value: i64) {
    table.insert(ShortString::from(name), AMQPValue::LongLongInt(value));
}

/// The envelope version a message says it is written in (absent: this one).
pub(super) fn version(props: &BasicProperties) -> i64 {
    header_int(props, headers::VERSION).unwrap_or(BUS_VERSION)
}

/// A property as an owned string, if present.
pub(super) fn prop(value: &Option<ShortString>) -> Option<String> {
    value.as_ref().map(|s| s.as_str().to_owned())
}

/// The properties of a request (call, send or forward).
pub(super) fn request_properties(
    msg: &Message,
    message_id: &str,
    correlation_id: Option<&str>,
    reply_to: Option<&str>,
) -> BasicProperties {
    let mut table = FieldTable::default();
    put_int(&mut table, headers::VERSION, BUS_VERSION);
    put_int(&mut table, headers::HOPS, i64::from(msg.hops));
    if let Some(resource) = &msg.resource_id {
        put_str(&mut table, headers::RESOURCE_ID, resource);
    }
    if let Some(trace) = &msg.trace {
        put_str(&mut table, headers::TRACEPARENT, trace);
    }
    let mut props = BasicProperties::default()
        .with_content_type(ShortString::from(JSON))
        .with_message_id(ShortString::from(message_id))
        .with_type(ShortString::from(msg.kind.as_str()));
    if let Some(deadline) = msg.deadline_ms {
        put_int(&mut table, headers::DEADLINE, deadline);
        // Let the broker drop a request nobody waits for any more instead of delivering it.
        let remaining = (deadline - now_ms()).max(1);
        props = props.with_expiration(ShortString::from(remaining.to_string()));
    }
    if let Some(corr) = correlation_id {
        props = props.with_correlation_id(ShortString::from(corr));
    }
    if let Some(reply_to) = reply_to {
        props = props.with_reply_to(ShortString::from(reply_to));
    }
    props.with_headers(table)
}

/// The properties of a reply: `x-status` says whether the body is the answer or an `ErrorBody`.
pub(super) fn reply_properties(ok: bool, correlation_id: Option<&str>) -> BasicProperties {
    let mut table = FieldTable::default();
    put_int(&mut table, headers::VERSION, BUS_VERSION);
    put_str(&mut table, headers::STATUS, if ok { "ok" } else { "error" });
    let mut props = BasicProperties::default()
        .with_content_type(ShortString::from(JSON))
        .with_type(ShortString::from(REPLY_KIND))
        .with_headers(table);
    if let Some(corr) = correlation_id {
        props = props.with_correlation_id(ShortString::from(corr));
    }
    props
}

/// Whether a reply says it carries an error body.
pub(super) fn is_error_reply(props: &BasicProperties) -> bool {
    header_str(props, headers::STATUS).is_some_and(|s| s == "error")
}

/// The properties of an event (its kind is also the routing key).
pub(super) fn event_properties(event: &Event) -> BasicProperties {
    let mut table = FieldTable::default();
    put_int(&mut table, headers::VERSION, BUS_VERSION);
    put_str(&mut table, headers::SOURCE, &event.source.to_string());
    BasicProperties::default()
        .with_content_type(ShortString::from(JSON))
        .with_message_id(ShortString::from(Uuid::new_v4().to_string()))
        .with_type(ShortString::from(event.kind.as_str()))
        .with_headers(table)
}

/// The node that published an event (nil when a foreign publisher left `x-source` out).
pub(super) fn event_source(props: &BasicProperties) -> Option<Uuid> {
    header_str(props, headers::SOURCE).and_then(|s| Uuid::parse_str(s).ok())
}

/// Reads a request into a [`Message`], or says why it is malformed. `message_id` is the wire id,
/// kept by the caller for the reply.
pub(super) fn decode_request(props: &BasicProperties, message_id: &str, body: Vec<u8>) -> Result<Message, String> {
    let version = version(props);
    if version != BUS_VERSION {
        return Err(format!("unsupported x-bus-version {version} (this node speaks {BUS_VERSION})"));
    }
    let Some(kind) = prop(props.kind()).filter(|k| !k.is_empty()) else {
        return Err("missing AMQP type (the message kind)".into());
    };
    if !is_json(&body) {
        return Err(format!("the body of {kind} is not JSON"));
    }
    // A foreign client may use any string as message_id; keep it on the wire (the reply sink) and
    // give the handler a UUID: the same one when it is a UUID.
    let id = Uuid::parse_str(message_id).unwrap_or_else(|_| Uuid::new_v4());
    let hops = header_int(props, headers::HOPS).map_or(0, |h| u32::try_from(h).unwrap_or(0));
    Ok(Message {
        id,
        kind,
        resource_id: header_str(props, headers::RESOURCE_ID).map(str::to_owned),
        deadline_ms: header_int(props, headers::DEADLINE),
        trace: header_str(props, headers::TRACEPARENT).map(str::to_owned),
        hops,
        body,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_ints_of_any_width() {
        let mut table = FieldTable::default();
        table.insert("a".into(), AMQPValue::LongInt(7));
        table.insert("b".into(), AMQPValue::ShortShortUInt(3));
        table.insert("c".into(), AMQPValue::LongString("42".into()));
        table.insert("d".into(), AMQPValue::Boolean(true));
        let props = BasicProperties::default().with_headers(table);
        assert_eq!(header_int(&props, "a"), Some(7));
        assert_eq!(header_int(&props, "b"), Some(3));
        assert_eq!(header_int(&props, "c"), Some(42));
        assert_eq!(header_int(&props, "d"), None);
        assert_eq!(header_int(&props, "missing"), None);
    }

    #[test]
    fn request_round_trip() {
        let msg = Message::new("probe.run", br#"{"a":1}"#.to_vec())
            .with_resource("r1")
            .with_trace("00-abc-def-01")
            .with_deadline_ms(now_ms() + 60_000);
        let id = msg.id.to_string();
        let props = request_properties(&msg, &id, Some("c1"), Some("amq.rabbitmq.reply-to"));
        let back = decode_request(&props, &id, msg.body.clone()).expect("decodes");
        assert_eq!((back.id, back.kind.as_str(), back.hops), (msg.id, "probe.run", 0));
        assert_eq!(back.resource_id.as_deref(), Some("r1"));
        assert_eq!(back.trace.as_deref(), Some("00-abc-def-01"));
        assert_eq!(back.deadline_ms, msg.deadline_ms);
        assert!(props.expiration().is_some(), "a request with a deadline expires on the broker");
    }

    #[test]
    fn malformed_requests_are_refused() {
        let msg = Message::new("probe.run", b"{".to_vec());
        let props = request_properties(&msg, "m", None, None);
        assert!(decode_request(&props, "m", b"{".to_vec()).unwrap_err().contains("not JSON"));
        let untyped = BasicProperties::default();
        assert!(decode_request(&untyped, "m", b"{}".to_vec()).unwrap_err().contains("missing AMQP type"));
    }

    #[test]
    fn reply_status() {
        assert!(is_error_reply(&reply_properties(false, None)));
        assert!(!is_error_reply(&reply_properties(true, Some("c"))));
    }
}
