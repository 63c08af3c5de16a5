//! Bounds on password checks, so that logins cannot exhaust a node.
//!
//! Each check runs argon2id, which takes 19 MiB and tens of milliseconds of a core by design. With
//! no bound, 64 parallel wrong logins took a node to 1.95 GB of RSS, and the allocator kept it.
//! Two bounds hold here:
//! - **in flight:** at most [`LoginLimits::checks_in_flight`] password checks run at once per node;
//!   a login that finds them all busy is answered 429 at once instead of queueing (a queue would
//!   only move the flood into memory);
//! - **failures:** at most [`MAX_FAILURES_PER_USER`] failed logins per username and
//!   [`MAX_FAILURES_PER_ADDRESS`] per client address in a [`FAILURE_WINDOW`]; past that, logins for
//!   that username or from that address are answered 429 without a check until the window ends.
//!   A success clears its username's count.
//!
//! The failure limit per username lets someone who knows a username keep its owner from logging in
//! for as long as they keep failing; the per-address limit bounds that from any one address, and
//! tokens already issued keep working. That is the usual trade for stopping password guessing.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use moka::sync::Cache;
use tokio::sync::{OwnedSemaphorePermit, Semaphore, TryAcquireError};

/// How long failures are counted for.
pub const FAILURE_WINDOW: Duration = Duration::from_secs(60);
/// Failed logins for one username within [`FAILURE_WINDOW`] before it is refused.
pub const MAX_FAILURES_PER_USER: u32 = 10;
/// Failed logins from one client address within [`FAILURE_WINDOW`] before it is refused.
pub const MAX_FAILURES_PER_ADDRESS: u32 = 30;
/// Seconds a caller is told to wait when every password check is busy: one check takes well under
/// a second.
const BUSY_RETRY_AFTER_SECS: u64 = 1;
/// Usernames and addresses remembered at most; the oldest are dropped first.
const MAX_TRACKED: u64 = 100_000;

/// Why a login is refused before its password is checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refused {
    /// Every password check slot is busy.
    Busy { retry_after_secs: u64 },
    /// Too many recent failures for this username or from this address.
    TooManyFailures { retry_after_secs: u64 },
}

impl Refused {
    pub fn retry_after_secs(self) -> u64 {
        match self {
            Refused::Busy { retry_after_secs } | Refused::TooManyFailures { retry_after_secs } => retry_after_secs,
        }
    }
}

/// Failures counted since `since`.
#[derive(Debug, Clone, Copy)]
struct Failures {
    since: Instant,
    count: u32,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq)]
enum Key {
    User(String),
    Address(IpAddr),
}

/// The node's login bounds; one per node, shared by every request.
pub struct LoginLimits {
    checks: Arc<Semaphore>,
    checks_in_flight: usize,
    failures: Cache<Key, Failures>,
}

impl LoginLimits {
    /// Bounds that allow `checks_in_flight` password checks at once.
    pub fn new(checks_in_flight: usize) -> LoginLimits {
        let checks_in_flight = checks_in_flight.max(1);
        LoginLimits {
            checks: Arc::new(Semaphore::new(checks_in_flight)),
            checks_in_flight,
            failures: Cache::builder().max_capacity(MAX_TRACKED).time_to_live(FAILURE_WINDOW).build(),
        }
    }

    /// The default: as many checks at once as the machine has cores, between 2 and 4 (at most
    /// 4 × 19 MiB of argon2 memory).
    pub fn for_this_machine() -> LoginLimits {
        let cores = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(2);
        LoginLimits::new(cores.clamp(2, 4))
    }

    pub fn checks_in_flight(&self) -> usize {
        self.checks_in_flight
    }

    /// Admits one password check for `username` from `address`, or says why not. The check may
    /// run while the returned permit is held.
    pub fn admit(&self, username: &str, address: Option<IpAddr>) -> Result<OwnedSemaphorePermit, Refused> {
        let now = Instant::now();
        let over = |key: Key, max: u32| {
            self.failures.get(&key).and_then(|f| {
                let elapsed = now.saturating_duration_since(f.since);
                (f.count >= max && elapsed < FAILURE_WINDOW).then(|| (FAILURE_WINDOW - elapsed).as_secs().max(1))
            })
        };
        let refused = over(Key::User(username.to_owned()), MAX_FAILURES_PER_USER)
            .into_iter()
            .chain(address.and_then(|a| over(Key::Address(a), MAX_FAILURES_PER_ADDRESS)))
            .max();
        if let Some(retry_after_secs) = refused {
            return Err(Refused::TooManyFailures { retry_after_secs });
        }
        match self.checks.clone().try_acquire_owned() {
            Ok(permit) => Ok(permit),
            Err(TryAcquireError::NoPermits | TryAcquireError::Closed) => {
                Err(Refused::Busy { retry_after_secs: BUSY_RETRY_AFTER_SECS })
            }
        }
    }

    /// Counts a failed login against its username and address.
    pub fn failed(&self, username: &str, address: Option<IpAddr>) {
        let now = Instant::now();
        let keys = std::iter::once(Key::User(username.to_owned())).chain(address.map(Key::Address));
        for key in keys {
            self.failures.entry(key).and_upsert_with(|old| match old.map(|e| e.into_value()) {
                Some(f) if now.saturating_duration_since(f.since) < FAILURE_WINDOW => {
                    Failures { since: f.since, count: f.count.saturating_add(1) }
                }
                _ => Failures { since: now, count: 1 },
            });
        }
    }

    /// A successful login clears its username's failures (not its address's: one address may try
    /// many usernames).
    pub fn succeeded(&self, username: &str) {
        self.failures.invalidate(&Key::User(username.to_owned()));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(last: u8) -> Option<IpAddr> {
        Some(IpAddr::from([127, 0, 0, last]))
    }

    #[test]
    fn checks_in_flight_are_bounded_and_freed() {
        let limits = LoginLimits::new(2);
        let a = limits.admit("a", addr(1)).expect("first check");
        let _b = limits.admit("b", addr(1)).expect("second check");
        assert_eq!(limits.admit("c", addr(1)).unwrap_err(), Refused::Busy { retry_after_secs: 1 });
        drop(a);
        drop(limits.admit("c", addr(1)).expect("a slot was freed"));
    }

    #[test]
    fn a_username_is_refused_after_its_failures_and_cleared_by_a_success() {
        let limits = LoginLimits::new(4);
        for i in 0..MAX_FAILURES_PER_USER {
            drop(limits.admit("alice", addr(i as u8)).expect("under the limit"));
            limits.failed("alice", addr(i as u8));
        }
        let refused = limits.admit("alice", addr(200)).unwrap_err();
        assert!(
            matches!(refused, Refused::TooManyFailures { retry_after_secs } if (1..=60).contains(&retry_after_secs))
        );
        // Another username is not affected.
        drop(limits.admit("bob", addr(200)).expect("bob has no failures"));
        limits.succeeded("alice");
        drop(limits.admit("alice", addr(200)).expect("cleared by a success"));
    }

    #[test]
    fn an_address_is_refused_after_its_failures_whatever_the_username() {
        let limits = LoginLimits::new(4);
        for i in 0..MAX_FAILURES_PER_ADDRESS {
            limits.failed(&format!("user{i}"), addr(9));
        }
        assert!(matches!(limits.admit("someone-new", addr(9)), Err(Refused::TooManyFailures { .. })));
        drop(limits.admit("someone-new", addr(10)).expect("another address is not affected"));
        drop(limits.admit("someone-new", None).expect("no address: only the username counts"));
    }
}
