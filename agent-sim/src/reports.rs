//! The hosts' periodic presence reports: one scheduler for all of them.
//!
//! Host `i` of `n` reports at `i/n` of every interval ([`offset`]), so 100,000 hosts reporting
//! every 60 s send an even 1,667 reports a second instead of a burst every minute. One task walks
//! the hosts in that order and sleeps until each one's turn, instead of a task and a timer per
//! host; each report is sent by a short task of its own, at most `in_flight` at once
//! ([`DEFAULT_REPORTS_IN_FLIGHT`]), so a zone that answers slowly slows the walk down instead of
//! piling up requests. A walk that falls more than a whole interval behind (the zone stalled)
//! skips the rounds it missed rather than sending them all at once when the zone is back.
//!
//! A report carries the host's capabilities only when they changed since the zone last accepted
//! them. A host the zone no longer knows (an operator deleted it) is registered again. A failing
//! zone is logged once when reports start failing and once when they get through again, not
//! once per host.

use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use api::agent::HostReport;
use api::ErrorCode;
use tokio::sync::Semaphore;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::host::SimHost;
use crate::register::register;
use crate::session::ZoneSession;

/// Reports in flight at once: far more than a zone answering in milliseconds ever needs
/// (1,667 reports a second at 10 ms each is 17), few enough not to flood one that stalls.
pub const DEFAULT_REPORTS_IN_FLIGHT: usize = 256;

/// Where host `index` of `n` reports within each interval: spread evenly over it.
pub fn offset(index: usize, n: usize, interval: Duration) -> Duration {
    if n == 0 {
        return Duration::ZERO;
    }
    let nanos = interval.as_nanos() * index as u128 / n as u128;
    Duration::from_nanos(u64::try_from(nanos).unwrap_or(u64::MAX))
}

/// Calls `send(i)` for each of `0..n` once per `interval`, `i` at [`offset`] into every round, and
/// runs what it returns (`None`: nothing to send now) as a task of its own, at most `in_flight` at
/// once. Runs until `stop`, then waits for the sends still running (which should watch `stop`
/// themselves).
pub async fn run_schedule<F, Fut>(n: usize, interval: Duration, in_flight: usize, stop: CancellationToken, send: F)
where
    F: Fn(usize) -> Option<Fut>,
    Fut: Future<Output = ()> + Send + 'static,
{
    if n == 0 || interval.is_zero() {
        stop.cancelled().await;
        return;
    }
    let permits = Arc::new(Semaphore::new(in_flight.max(1)));
    let sends = TaskTracker::new();
    let start = Instant::now();
    let mut round: u32 = 0;
    'rounds: loop {
        let base = start + interval * round;
        for i in 0..n {
            let due = base + offset(i, n, interval);
            if due > Instant::now() {
                tokio::select! {
                    _ = stop.cancelled() => break 'rounds,
                    _ = tokio::time::sleep_until(due) => {}
                }
            } else {
                // Behind schedule, hosts follow each other without a sleep: let the other tasks
                // of this thread run now and then.
                tokio::task::consume_budget().await;
                if stop.is_cancelled() {
                    break 'rounds;
                }
            }
            let permit = tokio::select! {
                _ = stop.cancelled() => break 'rounds,
                p = permits.clone().acquire_owned() => p.expect("the semaphore is never closed"),
            };
            if let Some(work) = send(i) {
                sends.spawn(async move {
                    work.await;
                    drop(permit);
                });
            }
        }
        // The next round, unless whole rounds have passed meanwhile: those are skipped.
        let elapsed = start.elapsed().as_nanos() / interval.as_nanos();
        round = (round + 1).max(u32::try_from(elapsed).unwrap_or(u32::MAX));
    }
    sends.close();
    sends.wait().await;
}

/// Reports every host's presence once per `interval` until `stop`. Hosts not registered yet are
/// skipped until they are, so this may start before registration ends.
pub async fn report_all(
    session: Arc<ZoneSession>,
    hosts: Arc<[Arc<SimHost>]>,
    interval: Duration,
    in_flight: usize,
    stop: CancellationToken,
) {
    let failing = Arc::new(AtomicBool::new(false));
    let n = hosts.len();
    run_schedule(n, interval, in_flight, stop.clone(), |i| {
        let host = &hosts[i];
        let (Some(id), Some(caps)) = (host.host_id(), host.report_due()) else {
            return None;
        };
        Some(send_report(
            session.clone(),
            host.clone(),
            id,
            HostReport { capabilities: caps },
            failing.clone(),
            stop.clone(),
        ))
    })
    .await;
}

/// Sends one report and acts on the answer.
async fn send_report(
    session: Arc<ZoneSession>,
    host: Arc<SimHost>,
    id: String,
    report: HostReport,
    failing: Arc<AtomicBool>,
    stop: CancellationToken,
) {
    let call = session.call(|c| {
        let (id, report, c) = (&id, &report, host.authorized(c));
        async move { c.host_report(id, report).await }
    });
    // A stop does not wait for a report to a zone that does not answer.
    let sent = tokio::select! {
        _ = stop.cancelled() => return,
        sent = call => sent,
    };
    match sent {
        Ok(()) => {
            if let Some(caps) = &report.capabilities {
                host.reported(caps);
            }
            if failing.swap(false, Ordering::Relaxed) {
                tracing::info!("reports reach the zone again");
            }
        }
        Err(e) if e.code() == Some(ErrorCode::NotFound) => {
            tracing::warn!(host = %host.name, id, "the zone no longer knows this host; registering it again");
            if let Err(error) = register(&session, &host, None).await {
                tracing::warn!(host = %host.name, error = format!("{error:#}"), "cannot register the host again");
            }
        }
        Err(e) => {
            if !failing.swap(true, Ordering::Relaxed) {
                tracing::warn!(host = %host.name, error = %e, "reports fail; logged again when they get through");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use super::*;

    #[test]
    fn offsets_spread_the_hosts_evenly_over_the_interval() {
        let interval = Duration::from_secs(60);
        assert_eq!(offset(0, 100_000, interval), Duration::ZERO);
        assert_eq!(offset(50_000, 100_000, interval), Duration::from_secs(30));
        assert_eq!(offset(99_999, 100_000, interval), Duration::from_micros(59_999_400));
        assert_eq!(offset(3, 4, Duration::from_millis(100)), Duration::from_millis(75));
    }

    /// Runs a schedule of `n` under paused time until `until`, recording (index, when) of each
    /// send; a send started at `t` takes `takes(index, t)`. Also returns the most sends seen
    /// running at once.
    async fn record(
        n: usize,
        interval: Duration,
        in_flight: usize,
        takes: impl Fn(usize, Duration) -> Duration,
        until: Duration,
    ) -> (Vec<(usize, Duration)>, usize) {
        let start = Instant::now();
        let log = Arc::new(Mutex::new(Vec::new()));
        let running = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let most = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let stop = CancellationToken::new();
        let schedule = run_schedule(n, interval, in_flight, stop.clone(), |i| {
            let (log, running, most) = (log.clone(), running.clone(), most.clone());
            let at = start.elapsed();
            let takes = takes(i, at);
            Some(async move {
                log.lock().unwrap().push((i, at));
                let now = running.fetch_add(1, Ordering::SeqCst) + 1;
                most.fetch_max(now, Ordering::SeqCst);
                tokio::time::sleep(takes).await;
                running.fetch_sub(1, Ordering::SeqCst);
            })
        });
        let stopper = async {
            tokio::time::sleep(until).await;
            stop.cancel();
        };
        tokio::join!(schedule, stopper);
        let log = log.lock().unwrap().clone();
        (log, most.load(Ordering::SeqCst))
    }

    const MS: Duration = Duration::from_millis(1);

    #[tokio::test(start_paused = true)]
    async fn every_host_reports_once_per_round_at_its_own_offset() {
        let interval = Duration::from_secs(1);
        let (log, _) = record(4, interval, 16, |_, _| MS, Duration::from_millis(2_900)).await;
        let expected: Vec<(usize, Duration)> =
            (0..3).flat_map(|round| (0..4).map(move |i| (i, interval * round + interval * i as u32 / 4))).collect();
        // Three rounds: 0..2.9 s holds the sends at 0, 0.25, ..., 2.75 s, one per host per round.
        assert_eq!(log, expected);
    }

    #[tokio::test(start_paused = true)]
    async fn never_more_than_in_flight_sends_at_once() {
        let (log, most) = record(10, Duration::from_secs(1), 3, |_, _| 2_500 * MS, Duration::from_secs(20)).await;
        assert_eq!(most, 3);
        assert!((0..10).all(|h| log.iter().any(|(i, _)| *i == h)), "every host reported: {log:?}");
    }

    #[tokio::test(start_paused = true)]
    async fn a_walk_that_fell_rounds_behind_skips_them_instead_of_bursting() {
        // One slot, and the very first send stalls 5 s: every other host of round 0 waits for it.
        // Rounds 1 to 4 have passed when round 0 ends; they are skipped, not sent back to back.
        let stall = |i: usize, at: Duration| if i == 0 && at.is_zero() { 5_000 * MS } else { MS };
        let (log, _) = record(10, Duration::from_secs(1), 1, stall, Duration::from_millis(7_950)).await;
        for host in 0..10 {
            let times: Vec<Duration> = log.iter().filter(|(i, _)| *i == host).map(|(_, t)| *t).collect();
            for second in 0..8u64 {
                let from = Duration::from_secs(second);
                let within = times.iter().filter(|t| **t >= from && **t < from + Duration::from_secs(1)).count();
                // The late report of round 0 and the one of the current round, at most.
                assert!(within <= 2, "host {host} reported {within} times in second {second}: {times:?}");
            }
        }
        // And the schedule goes on: rounds 5, 6 and 7 reach every host.
        let late = log.iter().filter(|(_, t)| *t >= Duration::from_secs(6)).count();
        assert_eq!(late, 20, "{log:?}");
    }
}
