//! Several broker addresses in `ZONE_BUS_URL`, tried in rotation on connect and on reconnect.
//!
//! As oslo.messaging's transport URL: `amqp://user:pass@host1:5672,user:pass@host2:5672/vhost`
//! (one scheme, the vhost and query after the last address), or full URLs separated by commas
//! (`amqp://…/vhost,amqp://…/vhost`). A comma inside a password must be percent-encoded (`%2C`).
//! After losing its broker a node starts with the next address, so a dead broker is tried last.

use std::sync::atomic::{AtomicUsize, Ordering};

use lapin::uri::AMQPUri;

use crate::bus::BusError;

/// One broker address.
pub(super) struct Broker {
    pub uri: AMQPUri,
    /// The URL with its password replaced, for logs and errors.
    pub log_url: String,
}

/// The brokers of `ZONE_BUS_URL` and which one to try first.
pub(super) struct Brokers {
    list: Vec<Broker>,
    first: AtomicUsize,
}

/// The full URLs of a `ZONE_BUS_URL` that may name several brokers.
pub fn split(url: &str) -> Result<Vec<String>, String> {
    let parts: Vec<&str> = url.split(',').map(str::trim).collect();
    if parts.len() == 1 {
        return Ok(vec![url.to_owned()]);
    }
    if parts.iter().all(|p| p.contains("://")) {
        return Ok(parts.into_iter().map(str::to_owned).collect());
    }
    // oslo.messaging's form: the scheme on the first address, the vhost and query on the last.
    let (scheme, first) = parts[0].split_once("://").ok_or("the first address has no scheme (amqp://)")?;
    let last = parts[parts.len() - 1];
    let (last_host, suffix) = match last.find(['/', '?']) {
        Some(i) => (&last[..i], &last[i..]),
        None => (last, ""),
    };
    let mut hosts = vec![first];
    hosts.extend(&parts[1..parts.len() - 1]);
    hosts.push(last_host);
    hosts
        .into_iter()
        .map(|h| {
            if h.is_empty() || h.contains("://") || h.contains('/') {
                Err(format!("{:?} is not a broker address (user:password@host:port)", crate::redact::redact_url(h)))
            } else {
                Ok(format!("{scheme}://{h}{suffix}"))
            }
        })
        .collect()
}

impl Brokers {
    /// Parses every address of `url`; `heartbeat_s` where an address sets none.
    pub fn parse(url: &str, heartbeat_s: u16) -> Result<Brokers, BusError> {
        let urls = split(url).map_err(|e| BusError::InvalidUrl(format!("{}: {e}", crate::redact::redact_url(url))))?;
        let mut list = Vec::with_capacity(urls.len());
        for u in urls {
            let log_url = crate::redact::redact_url(&u);
            let mut uri: AMQPUri = u.parse().map_err(|e: String| BusError::InvalidUrl(format!("{log_url}: {e}")))?;
            if uri.query.heartbeat.is_none() {
                uri.query.heartbeat = Some(heartbeat_s);
            }
            list.push(Broker { uri, log_url });
        }
        Ok(Brokers { list, first: AtomicUsize::new(0) })
    }

    /// Every broker, the one to try first first.
    pub fn in_order(&self) -> impl Iterator<Item = (usize, &Broker)> {
        let start = self.first.load(Ordering::Relaxed) % self.list.len();
        (0..self.list.len()).map(move |k| {
            let i = (start + k) % self.list.len();
            (i, &self.list[i])
        })
    }

    /// Remembers that broker `i` took the connection: tried first next time.
    pub fn connected(&self, i: usize) {
        self.first.store(i, Ordering::Relaxed);
    }

    /// The connection to broker `i` was lost: start the next round with the one after it.
    pub fn lost(&self, i: usize) {
        self.first.store((i + 1) % self.list.len(), Ordering::Relaxed);
    }

    /// Every address, redacted, for messages.
    pub fn describe(&self) -> String {
        self.list.iter().map(|b| b.log_url.as_str()).collect::<Vec<_>>().join(",")
    }

    pub fn len(&self) -> usize {
        self.list.len()
    }

    pub fn uri(&self, i: usize) -> AMQPUri {
        self.list[i].uri.clone()
    }

    pub fn log_url(&self, i: usize) -> &str {
        &self.list[i].log_url
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_list_of_brokers_reads_in_both_forms() {
        assert_eq!(split("amqp://u:p@h1:5672/%2f").unwrap(), ["amqp://u:p@h1:5672/%2f"]);
        assert_eq!(
            split("amqp://u:p@h1:5672,u:q@h2:5673/vh?heartbeat=5").unwrap(),
            ["amqp://u:p@h1:5672/vh?heartbeat=5", "amqp://u:q@h2:5673/vh?heartbeat=5"]
        );
        assert_eq!(split("amqps://a@h1/v, amqps://b@h2/v").unwrap(), ["amqps://a@h1/v", "amqps://b@h2/v"]);
        assert!(split("amqp://u:p@h1:5672,/vh").is_err());
        assert!(split("u:p@h1,u:p@h2/vh").is_err(), "no scheme");
    }

    #[test]
    fn after_a_loss_the_next_broker_is_tried_first() {
        let b = Brokers::parse("amqp://h1,h2,h3/%2f", 10).unwrap();
        let order = |b: &Brokers| b.in_order().map(|(i, _)| i).collect::<Vec<_>>();
        assert_eq!(order(&b), [0, 1, 2]);
        b.lost(0);
        assert_eq!(order(&b), [1, 2, 0]);
        b.connected(2);
        assert_eq!(order(&b), [2, 0, 1]);
        assert_eq!(b.len(), 3);
        assert!(b.describe().contains("h3"));
    }
}
