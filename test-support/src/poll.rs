//! Waiting for a condition by polling it: the harness never sleeps a fixed time to "let things settle".
//!
//! A condition is an async closure whose answer is an [`Outcome`]: `bool`, `Option<T>` or
//! `Result<T, E>`. A `Result`'s error is kept as the last observation and reported when the wait times
//! out, so a failure says what was seen ("node 1 lists 3 alive nodes") and not just "timed out".

use std::fmt;
use std::future::Future;
use std::time::{Duration, Instant};

/// The interval tests use unless they have a reason to poll faster or slower.
pub const DEFAULT_POLL_INTERVAL: Duration = Duration::from_millis(100);

/// What one evaluation of a polled condition says: done with a value, or not yet (with an optional
/// description of what was observed).
pub trait Outcome {
    type Value;
    fn into_outcome(self) -> Result<Self::Value, Option<String>>;
}

impl Outcome for bool {
    type Value = ();
    fn into_outcome(self) -> Result<(), Option<String>> {
        if self {
            Ok(())
        } else {
            Err(None)
        }
    }
}

impl<T> Outcome for Option<T> {
    type Value = T;
    fn into_outcome(self) -> Result<T, Option<String>> {
        self.ok_or(None)
    }
}

impl<T, E: fmt::Display> Outcome for Result<T, E> {
    type Value = T;
    fn into_outcome(self) -> Result<T, Option<String>> {
        self.map_err(|e| Some(e.to_string()))
    }
}

/// A wait that ran out of time.
#[derive(Debug, Clone)]
pub struct TimedOut {
    pub waited: Duration,
    pub attempts: u32,
    /// What the last attempt observed, when the condition said.
    pub last: Option<String>,
}

impl fmt::Display for TimedOut {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "timed out after {:.1?} ({} attempts)", self.waited, self.attempts)?;
        if let Some(last) = &self.last {
            write!(f, "; last observation: {last}")?;
        }
        Ok(())
    }
}

impl std::error::Error for TimedOut {}

/// Evaluates `condition` every `interval` until it is done, and returns its value; `None` when
/// `timeout` passed first. Use [`poll_until_detailed`] (or the e2e harness's `Cluster::wait_until`,
/// which panics with a full report) to learn what the condition saw last.
///
/// ```no_run
/// # use std::time::Duration;
/// # async fn count_nodes() -> Option<usize> { None }
/// # async fn f() {
/// let nodes = test_support::poll_until(Duration::from_secs(10), Duration::from_millis(100), || async {
///     count_nodes().await.filter(|n| *n == 3)
/// })
/// .await
/// .expect("the zone never listed three nodes");
/// # }
/// ```
pub async fn poll_until<F, Fut, O>(timeout: Duration, interval: Duration, condition: F) -> Option<O::Value>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = O>,
    O: Outcome,
{
    poll_until_detailed(timeout, interval, condition).await.ok()
}

/// Like [`poll_until`], with a [`TimedOut`] report (attempts, time waited, last observation) when the
/// condition did not hold in time.
///
/// The condition always runs at least once, and once more at the deadline, so a short timeout cannot
/// miss a condition that just became true. One evaluation is not cut short: a condition that does I/O
/// should bound it (the API client has its own timeouts).
pub async fn poll_until_detailed<F, Fut, O>(
    timeout: Duration,
    interval: Duration,
    mut condition: F,
) -> Result<O::Value, TimedOut>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = O>,
    O: Outcome,
{
    let start = Instant::now();
    let deadline = start + timeout;
    let mut attempts = 0;
    loop {
        attempts += 1;
        let last = match condition().await.into_outcome() {
            Ok(value) => return Ok(value),
            Err(last) => last,
        };
        let now = Instant::now();
        if now >= deadline {
            return Err(TimedOut { waited: now - start, attempts, last });
        }
        tokio::time::sleep(interval.min(deadline - now)).await;
    }
}
