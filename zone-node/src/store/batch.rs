//! Room for a multi-create, all or nothing: [`Store::place_all`] and [`Store::release_all`].
//!
//! A batch is placed as a set, not one instance after the other. A round reads one bounded sample
//! of up hosts that pass the filters and have room for an instance
//! ([`Store::candidates_with_room`]: single placement's sample, filters and weighing, with each
//! host's free capacity), divides the batch over those hosts, and reserves each host's share of k
//! instances with ONE conditional `UPDATE` of k times the resources (the statement of
//! [`Store::reserve`]): all k or none, never overcommitting the host whatever else places at the
//! same time (PostgreSQL re-checks the condition on the row's latest version, SQLite has one
//! writer). A round's updates go over one pooled connection, and on SQLite in one transaction
//! ([`Store::reserve_each`] says why). A share that lost a race (the update changed nothing) is
//! left for the next round, which reads a fresh sample.
//!
//! The zone's aggregate stays exact: the triggers on `hosts` (migration 0006) count a host's free
//! capacity out at its value before the statement and in at its value after, whatever the
//! statement added, so k instances reserved (or released) at once move the aggregate as k single
//! reservations would.
//!
//! # Spreading
//! Each round gives each sampled host at most ceil(remaining / sampled hosts) instances, best
//! weighted first, and never more than fit on it (the least over vcpus, memory and disk of free /
//! need). Filling the best host first would put a whole batch of small instances on one host (one
//! failure takes all of them, one agent builds all of them); equal shares keep a batch about as
//! spread as single creates, each the best of its own sample, would leave it. A host holding less
//! than its share takes what fits and the rest goes to the next round.
//!
//! Cost: a round is one candidate query (as single placement's) and at most 2 ×
//! [`super::placement::SAMPLE`] (64) conditional updates, one wait for the pool (and on SQLite one
//! for the writer lock, one commit); a batch of 1,000 on a zone with room
//! takes one round, against 1,000 queries and 1,000 updates placed one at a time. More rounds
//! come only when the sampled hosts hold less than the batch, or races take shares. A batch that
//! does not fit gives back what it took, one update per host it reached.
//!
//! Two batches that race for the last room can both be refused although either alone would have
//! fitted: each holds part of the room while the other looks. That is the price of never holding a
//! lock across placements; a refused batch has nothing left behind and may simply be retried.

use std::collections::BTreeMap;
use std::time::Duration;

use api::Resources;
use uuid::Uuid;

use super::placement::{PLACE_ROUNDS, SAMPLE};
use super::{Filter, Result, Store};

/// How often a failed release is tried again, and how long to wait before each retry: a
/// reservation left behind is capacity lost until an operator notices, so a brief database
/// hiccup is worth waiting out.
const RELEASE_RETRIES: [Duration; 2] = [Duration::from_millis(100), Duration::from_millis(1000)];

/// What [`Store::place_all`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BatchPlacement {
    /// A host per instance, in order, each with the instance's resources reserved.
    All(Vec<Uuid>),
    /// Only `fitted` fitted; every reservation taken was given back.
    Short { fitted: usize },
}

/// How many instances of `need` fit in `free`: the least over vcpus, memory and disk of
/// free / need. A resource the instance does not need (0) does not limit it.
fn fit(free: &Resources, need: &Resources) -> usize {
    [(free.vcpus, need.vcpus), (free.memory_mb, need.memory_mb), (free.disk_gb, need.disk_gb)]
        .into_iter()
        .map(|(free, need)| if need <= 0 { usize::MAX } else { usize::try_from(free / need).unwrap_or(0) })
        .min()
        .unwrap_or(usize::MAX)
}

/// `k` instances' worth of `need`. Saturating: a product that large fits no host, so the
/// conditional update refuses it rather than the arithmetic wrapping.
fn times(need: &Resources, k: usize) -> Resources {
    let k = i64::try_from(k).unwrap_or(i64::MAX);
    Resources {
        vcpus: need.vcpus.saturating_mul(k),
        memory_mb: need.memory_mb.saturating_mul(k),
        disk_gb: need.disk_gb.saturating_mul(k),
    }
}

/// One host per instance from the reservations `(host, k)`: one instance from each reservation in
/// turn while it has any left, so consecutive instances (handed to their builders in order,
/// [`crate::services::batch::BUILD_CONCURRENCY`] at once) land on different hosts.
fn interleave(taken: &[(Uuid, usize)]) -> Vec<Uuid> {
    let mut left: Vec<(Uuid, usize)> = taken.to_vec();
    let mut hosts = Vec::with_capacity(left.iter().map(|(_, k)| k).sum());
    while !left.is_empty() {
        for (host, k) in &mut left {
            hosts.push(*host);
            *k -= 1;
        }
        left.retain(|(_, k)| *k > 0);
    }
    hosts
}

/// The reservations per host: `(host, k)` entries of one host added up.
fn per_host(taken: impl IntoIterator<Item = (Uuid, usize)>) -> BTreeMap<Uuid, usize> {
    let mut hosts: BTreeMap<Uuid, usize> = BTreeMap::new();
    for (host, k) in taken {
        *hosts.entry(host).or_default() += k;
    }
    hosts
}

impl Store {
    /// Reserves room for `count` instances of `resources`, each on an up host that passes
    /// `filters`: all of them or none. Places them as a set, spread over a sample of the best
    /// hosts (see the module docs); when they do not all fit, or the database fails midway, gives
    /// back every reservation already taken before answering. The caller owns the reservations of
    /// [`BatchPlacement::All`] (one host per instance; a host may repeat).
    #[tracing::instrument(skip(self, filters))]
    pub async fn place_all(&self, filters: &[Filter], resources: &Resources, count: usize) -> Result<BatchPlacement> {
        let mut taken: Vec<(Uuid, usize)> = Vec::new();
        let outcome = self.reserve_batch(filters, resources, count, &mut taken).await;
        let fitted: usize = taken.iter().map(|(_, k)| k).sum();
        match outcome {
            Ok(()) if fitted == count => Ok(BatchPlacement::All(interleave(&taken))),
            Ok(()) => {
                self.release_per_host(per_host(taken), resources).await;
                Ok(BatchPlacement::Short { fitted })
            }
            Err(e) => {
                self.release_per_host(per_host(taken), resources).await;
                Err(e)
            }
        }
    }

    /// Reserves up to `count` instances of `resources` in rounds (see the module docs), adding each
    /// reservation to `taken` as it is made, so a caller can give them back whatever happens. Ends
    /// when all are reserved, no sampled host has room, or [`PLACE_ROUNDS`] rounds lost every share
    /// to concurrent placements (as [`Store::place_except`] gives up). A round that reserves
    /// anything makes progress, so there are at most `count + PLACE_ROUNDS` rounds.
    async fn reserve_batch(
        &self,
        filters: &[Filter],
        resources: &Resources,
        count: usize,
        taken: &mut Vec<(Uuid, usize)>,
    ) -> Result<()> {
        let mut remaining = count;
        let mut lost = 0;
        while remaining > 0 {
            let hosts = self.candidates_with_room(filters, resources, 2 * SAMPLE).await?;
            if hosts.is_empty() {
                return Ok(());
            }
            let share = remaining.div_ceil(hosts.len());
            let mut planned = remaining;
            let mut shares: Vec<(Uuid, usize)> = Vec::new();
            for (host, free) in hosts {
                // Zero only when the batch is shared out (or the host's figures were inconsistent
                // with the query's filter).
                let k = fit(&free, resources).min(share).min(planned);
                if k > 0 {
                    shares.push((host, k));
                    planned -= k;
                }
            }
            let updates: Vec<(Uuid, Resources)> = shares.iter().map(|(h, k)| (*h, times(resources, *k))).collect();
            let (reserved, outcome) = self.reserve_each(&updates).await;
            let before = remaining;
            // A share lost to a concurrent placement is left for the next round, which reads the
            // host again. What was reserved before an error is recorded first, to be given back.
            for ((host, k), reserved) in shares.into_iter().zip(reserved) {
                if reserved {
                    taken.push((host, k));
                    remaining -= k;
                }
            }
            outcome?;
            if remaining == before {
                lost += 1;
                if lost >= PLACE_ROUNDS {
                    tracing::warn!(
                        rounds = lost,
                        remaining,
                        "batch placement lost every share to concurrent placements"
                    );
                    return Ok(());
                }
            }
        }
        Ok(())
    }

    /// Gives back `resources` on each of `hosts` (one reservation per entry, a host may repeat):
    /// one update per host for all of its entries, retrying a release the database failed a
    /// couple of times. What still fails is logged: the caller cannot do better, and its own
    /// answer (the batch refused) stays right.
    #[tracing::instrument(skip(self, hosts), fields(count = hosts.len()))]
    pub async fn release_all(&self, hosts: &[Uuid], resources: &Resources) {
        self.release_per_host(per_host(hosts.iter().map(|h| (*h, 1))), resources).await;
    }

    /// Gives back k reservations of `resources` on each host of `hosts`, each host in one update
    /// ([`Store::release`] of k times the resources). A host holding less than that (someone gave
    /// part of it back already, or the host is gone) is released one reservation at a time instead,
    /// as much as it holds, as releasing them one by one always did.
    async fn release_per_host(&self, hosts: BTreeMap<Uuid, usize>, resources: &Resources) {
        for (host, k) in hosts {
            match self.release_retrying(host, &times(resources, k)).await {
                Ok(true) => {}
                Ok(false) => {
                    let mut released = 0;
                    while released < k {
                        match self.release_retrying(host, resources).await {
                            Ok(true) => released += 1,
                            Ok(false) => break,
                            Err(e) => {
                                tracing::error!(host = %host, error = %e, "could not release a batch reservation; it stays reserved");
                                break;
                            }
                        }
                    }
                    tracing::warn!(host = %host, released, of = k, "host held less than a batch's reservations; released what it held");
                }
                Err(e) => {
                    tracing::error!(host = %host, count = k, error = %e, "could not release a batch's reservations; they stay reserved")
                }
            }
        }
    }

    /// [`Store::release`], tried again after each of [`RELEASE_RETRIES`] while the database fails.
    async fn release_retrying(&self, host: Uuid, resources: &Resources) -> Result<bool> {
        let mut outcome = self.release(host, resources).await;
        for wait in RELEASE_RETRIES {
            if outcome.is_ok() {
                break;
            }
            tokio::time::sleep(wait).await;
            outcome = self.release(host, resources).await;
        }
        outcome
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn res(vcpus: i64, memory_mb: i64, disk_gb: i64) -> Resources {
        Resources { vcpus, memory_mb, disk_gb }
    }

    #[test]
    fn fit_is_the_least_over_the_resources_and_ignores_what_is_not_needed() {
        assert_eq!(fit(&res(8, 4096, 100), &res(2, 512, 10)), 4, "vcpus limit");
        assert_eq!(fit(&res(8, 1000, 100), &res(1, 512, 10)), 1, "memory limits");
        assert_eq!(fit(&res(8, 4096, 25), &res(1, 512, 10)), 2, "disk limits");
        assert_eq!(fit(&res(8, 4096, 0), &res(1, 512, 0)), 8, "disk not needed");
        assert_eq!(fit(&res(0, 0, 0), &res(0, 0, 0)), usize::MAX, "nothing needed: unbounded");
        assert_eq!(fit(&res(-1, 4096, 100), &res(1, 512, 10)), 0, "an overcommitted host fits nothing");
        assert_eq!(times(&res(1, 512, 10), 16), res(16, 8192, 160));
        assert_eq!(times(&res(1, i64::MAX / 2, 0), 3), res(3, i64::MAX, 0), "saturates, never wraps");
    }

    #[test]
    fn reservations_are_interleaved_and_grouped_per_host() {
        let (a, b, c) = (Uuid::from_u128(1), Uuid::from_u128(2), Uuid::from_u128(3));
        assert_eq!(interleave(&[(a, 3), (b, 1), (c, 2)]), [a, b, c, a, c, a]);
        assert!(interleave(&[]).is_empty());
        assert_eq!(per_host([(a, 3), (b, 1), (a, 2)]), BTreeMap::from([(a, 5), (b, 1)]));
    }
}
