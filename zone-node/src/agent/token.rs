//! Agent tokens at rest: the bearer token the zone presents to a host's agent must be replayed, so
//! it cannot be hashed; it is sealed with the zone's secret key, like a child zone's password, with
//! the host's id as associated data (a ciphertext copied to another host's row does not open).
//!
//! Sealing needs a key every node of the zone holds. On SQLite (one node, or nodes sharing its
//! data directory) that is the node's own; on PostgreSQL only `ZONE_SECRET_KEY` or
//! `ZONE_SECRET_KEY_FILE` is. A PostgreSQL zone without one stores agent tokens as given, and says
//! so once at start: sealing them with one node's key would leave the others unable to call the
//! agents. Tokens stored before sealing existed (no `v1:` prefix) are read as they are.

use uuid::Uuid;

use crate::secrets::{KeySource, SecretError, SecretKey};

/// Whether this zone seals agent tokens: its key is shared by every node that reads them.
pub fn sealing(key: &SecretKey, backend: &str) -> bool {
    backend != "postgres" || matches!(key.source(), KeySource::Environment | KeySource::File(_) | KeySource::Inline)
}

/// The stored form of `token` for host `host`.
pub fn seal(key: &SecretKey, backend: &str, host: Uuid, token: &str) -> Result<String, SecretError> {
    if sealing(key, backend) {
        key.seal(host, token)
    } else {
        Ok(token.to_owned())
    }
}

/// The token stored for host `host`: opened when sealed, as stored when not.
pub fn open(key: &SecretKey, host: Uuid, stored: &str) -> Result<String, SecretError> {
    if stored.starts_with("v1:") {
        key.open(host, &format!("host {host}"), stored).map(|s| s.expose().to_owned())
    } else {
        Ok(stored.to_owned())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sealed_token_opens_for_its_host_only_and_a_clear_one_reads_as_stored() {
        let key = SecretKey::generate().expect("a key");
        let (host, other) = (Uuid::new_v4(), Uuid::new_v4());
        let stored = seal(&key, "sqlite", host, "agent-token-0123456789").unwrap();
        assert!(stored.starts_with("v1:") && !stored.contains("agent-token"), "{stored}");
        assert_eq!(open(&key, host, &stored).unwrap(), "agent-token-0123456789");
        assert!(open(&key, other, &stored).is_err(), "a ciphertext copied to another host opened");
        assert_eq!(open(&key, host, "legacy-clear-token").unwrap(), "legacy-clear-token");
    }
}
