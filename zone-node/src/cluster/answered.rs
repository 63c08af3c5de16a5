//! The replies of resource tasks by message id, so that a message delivered twice runs once.
//!
//! Two ways bring the same message to a resource's owner again:
//! - the portal is consumed with acknowledgements, so a message taken by a node that lost its
//!   broker connection before acknowledging is delivered again, to some node;
//! - a bus client that lost its reply (its broker node died) sends the same message, with the same
//!   `message_id`, again (docs/wire-format.md, "Retrying").
//!
//! Both reach the owner, whose serial work queue runs them one after the other, so the second
//! finds the first's reply here and is answered with it without running again.
//!
//! Kept per node and in memory, for [`KEEP`]: a duplicate that reaches another owner (the ring
//! changed between the two deliveries) or comes later runs again. Only successful replies are
//! remembered: an error changed nothing, or says to try again, so its message may run again.

use std::time::Duration;

use uuid::Uuid;

/// How long a reply is kept: longer than any deadline a caller may set, so every retry of a
/// message finds it.
pub const KEEP: Duration = Duration::from_secs(10 * 60);
/// How many bytes of replies a service keeps at most (the oldest go first).
const MAX_BYTES: u64 = 64 * 1024 * 1024;

/// The successful replies of one resource service, by message id.
pub struct Answered {
    replies: moka::sync::Cache<Uuid, Vec<u8>>,
}

impl Answered {
    pub fn new() -> Answered {
        let replies = moka::sync::Cache::builder()
            .max_capacity(MAX_BYTES)
            .weigher(|_, reply: &Vec<u8>| weight(reply))
            .time_to_live(KEEP)
            .build();
        Answered { replies }
    }

    /// The reply the message `id` got, if it succeeded here within [`KEEP`].
    pub fn get(&self, id: &Uuid) -> Option<Vec<u8>> {
        self.replies.get(id)
    }

    pub fn remember(&self, id: Uuid, reply: Vec<u8>) {
        self.replies.insert(id, reply);
    }
}

impl Default for Answered {
    fn default() -> Self {
        Answered::new()
    }
}

/// A reply's weight: its bytes plus the entry's own (id, tags), so that tiny replies count too.
fn weight(reply: &[u8]) -> u32 {
    u32::try_from(reply.len() + 64).unwrap_or(u32::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_remembered_reply_is_found_by_its_id_only() {
        let answered = Answered::new();
        let (a, b) = (Uuid::new_v4(), Uuid::new_v4());
        answered.remember(a, b"{\"n\":1}".to_vec());
        answered.remember(b, b"{\"n\":2}".to_vec());
        assert_eq!(answered.get(&a).as_deref(), Some(&b"{\"n\":1}"[..]));
        assert_eq!(answered.get(&b).as_deref(), Some(&b"{\"n\":2}"[..]));
        assert_eq!(answered.get(&Uuid::new_v4()), None);
    }
}
