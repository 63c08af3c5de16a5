//! One beat for a process's periodic loops.
//!
//! A zone runs several loops on a period of about a second: heartbeats, the silent-host sweep,
//! polls of its children. Each sleeping for its own period from whenever it last ran, they wake
//! the process at as many moments a second, and on a virtual machine each wake-up (a timer
//! firing, a parked worker thread unparked) costs tens of microseconds of CPU: at rest that was
//! most of what an idle zone spent. [`next`] puts every loop's ticks on one grid (multiples of
//! its period from a process-wide origin), so loops of the same period, or of periods that divide
//! each other, wake together.
//!
//! The origin is the first use plus a random phase, so processes started together (the zones of
//! a tree on one machine, a parent and its children) do not all beat in the same millisecond.

use std::sync::OnceLock;
use std::time::Duration;

use rand::Rng as _;
use tokio::time::Instant;

/// The largest random phase added to the origin.
const MAX_PHASE: Duration = Duration::from_millis(250);

fn origin() -> Instant {
    static ORIGIN: OnceLock<Instant> = OnceLock::new();
    *ORIGIN.get_or_init(|| {
        let phase = rand::thread_rng().gen_range(0..=MAX_PHASE.as_millis() as u64);
        Instant::now() + Duration::from_millis(phase)
    })
}

/// The first tick of the grid of `period` strictly after `after`.
pub fn next_after(after: Instant, period: Duration) -> Instant {
    let origin = origin();
    let period_ns = period.as_nanos().max(1);
    if after < origin {
        return origin;
    }
    let since = after.duration_since(origin).as_nanos();
    let k = since / period_ns + 1;
    // At most u64::MAX ns (584 years) from the origin: saturate instead of overflowing.
    origin + Duration::from_nanos(u64::try_from(k * period_ns).unwrap_or(u64::MAX))
}

/// Sleeps until the next tick of the grid of `period`.
pub async fn next(period: Duration) {
    tokio::time::sleep_until(next_after(Instant::now(), period)).await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ticks_of_one_period_and_of_its_multiples_coincide() {
        let start = origin();
        let second = Duration::from_secs(1);
        let a = next_after(start + Duration::from_millis(10), second);
        let b = next_after(start + Duration::from_millis(990), second);
        assert_eq!(a, b, "loops that last ran at different moments wake together");
        assert_eq!(a, start + second);
        assert_eq!(next_after(a, second), start + 2 * second, "strictly after: a tick never repeats");
        let ten = next_after(start + Duration::from_millis(10), 10 * second);
        assert_eq!(ten, start + 10 * second);
        assert_eq!(next_after(ten - Duration::from_millis(1), second), ten, "a 10 s tick is also a 1 s tick");
    }

    #[test]
    fn a_zero_period_does_not_divide_by_zero() {
        let now = origin() + Duration::from_secs(3);
        assert!(next_after(now, Duration::ZERO) > now);
    }
}
