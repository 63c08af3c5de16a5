//! Room for a multi-create, all or nothing: [`Store::place_all`] and [`Store::release_all`].
//!
//! Built only on [`Store::place`] and [`Store::release`], so every reservation is the same
//! conditional `UPDATE` that never overcommits a host, whatever else places at the same time, and
//! whatever placement does inside (sampling, maintained aggregates) applies to a batch unchanged.
//!
//! Cost: O(count) placements, one after the other (each one candidate query and one conditional
//! update); a batch that does not fit also releases what it took, O(placed) updates.
//!
//! Two batches that race for the last room can both be refused although either alone would have
//! fitted: each holds part of the room while the other looks. That is the price of never holding a
//! lock across placements; a refused batch has nothing left behind and may simply be retried.

use std::time::Duration;

use api::Resources;
use uuid::Uuid;

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

impl Store {
    /// Reserves room for `count` instances of `resources`, each on an up host that passes
    /// `filters`: all of them or none. Places them one at a time ([`Store::place`], best host
    /// first, so a batch spreads as single creates do); when one finds no host, or the database
    /// fails midway, gives back every reservation already taken ([`Store::release_all`]) before
    /// answering. The caller owns the reservations of [`BatchPlacement::All`].
    #[tracing::instrument(skip(self, filters))]
    pub async fn place_all(&self, filters: &[Filter], resources: &Resources, count: usize) -> Result<BatchPlacement> {
        let mut hosts = Vec::with_capacity(count);
        for _ in 0..count {
            match self.place(filters, resources).await {
                Ok(Some(host)) => hosts.push(host),
                Ok(None) => {
                    let fitted = hosts.len();
                    self.release_all(&hosts, resources).await;
                    return Ok(BatchPlacement::Short { fitted });
                }
                Err(e) => {
                    self.release_all(&hosts, resources).await;
                    return Err(e);
                }
            }
        }
        Ok(BatchPlacement::All(hosts))
    }

    /// Gives back `resources` on each of `hosts` (one reservation per entry, a host may repeat),
    /// retrying a release the database failed a couple of times. What still fails is logged:
    /// the caller cannot do better, and its own answer (the batch refused) stays right.
    #[tracing::instrument(skip(self, hosts), fields(count = hosts.len()))]
    pub async fn release_all(&self, hosts: &[Uuid], resources: &Resources) {
        for host in hosts {
            let mut outcome = self.release(*host, resources).await;
            for wait in RELEASE_RETRIES {
                if outcome.is_ok() {
                    break;
                }
                tokio::time::sleep(wait).await;
                outcome = self.release(*host, resources).await;
            }
            match outcome {
                Ok(true) => {}
                Ok(false) => {
                    tracing::warn!(host = %host, "host held less than a batch reservation; nothing released")
                }
                Err(e) => {
                    tracing::error!(host = %host, error = %e, "could not release a batch reservation; it stays reserved")
                }
            }
        }
    }
}
