//! The wall clock as the agent protocol uses it: milliseconds since the Unix epoch, compared with
//! the deadline the zone puts on each task (`X-Zone-Deadline-Ms`).

use std::time::{SystemTime, UNIX_EPOCH};

/// Milliseconds since the Unix epoch by this machine's clock.
pub fn now_ms() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as i64).unwrap_or(0)
}
