//! The view of the children: replacing it after a change or a poll (dropping the cached answers
//! it invalidates), zone-add's checks on a new child, and one poll.
//!
//! Cost: replacing the view is O(children); a check or a poll is one request plus an
//! O(subtree entries) scan for this zone (the loop check).

use std::time::Duration;

use api::{Conditional, ErrorCode, ZoneInfo};

use super::{Gateway, PollOutcome, RequestContext};
use crate::error::FedError;
use crate::identity::Principal;
use crate::lookup::Source;
use crate::path::ZonePath;
use crate::registry::{Child, Credentials};

impl Gateway {
    /// Replaces the children (from the database, after a change or a poll), and drops cached
    /// answers of children whose generation moved or that are gone.
    pub fn set_children(&self, children: Vec<Child>) {
        let generations: Vec<(String, i64)> = children.iter().map(|c| (c.id.clone(), c.generation)).collect();
        for removed in self.registry.replace(children) {
            self.lookups.forget(&Source::Child(removed));
        }
        // Answers are composed with the children's names, subtrees and paths.
        self.lookups.touch();
        for (id, g) in generations {
            self.lookups.observe(&Source::Child(id), g);
        }
    }

    /// This zone's generation as stored (changes made by other nodes of the zone show here).
    pub fn observe_own_generation(&self, generation: i64) {
        self.lookups.observe(&Source::Local, generation);
    }

    /// Moves whenever a lowest-zone answer of this zone could change (a cached answer stored or
    /// dropped, a generation moved, the children replaced): a rendering of an answer made while
    /// the version read before it is still current is still this zone's answer.
    pub fn lookup_version(&self) -> u64 {
        self.lookups.version()
    }

    /// This zone's generation as this node last knew it (from the database or its own changes):
    /// what a lookup answer is valid for. Never newer than the stored one.
    pub fn own_generation(&self) -> Option<i64> {
        self.lookups.accounted(&Source::Local)
    }

    /// zone-add and zone-update: logs in to the zone at `api_url` and reads it, refusing a zone
    /// that is this one, already a child, or whose subtree holds this zone (a loop).
    pub async fn inspect(
        &self,
        ctx: &RequestContext,
        api_url: &str,
        credentials: &Credentials,
        updating: Option<&str>,
    ) -> Result<ZoneInfo, FedError> {
        // No path: the checks below say what is wrong in words an operator can act on ("a zone
        // cannot be its own child") rather than the child refusing a looping request.
        let path = ZonePath::empty();
        let hop = self.hop(&ctx.caller, &path, self.settings.scatter_deadline);
        let info = self.transport.inspect(api_url, credentials, &hop).await?;
        if info.id == self.me.id {
            return Err(FedError::api(
                ErrorCode::ZoneLoop,
                format!("the zone at {api_url} is zone {} itself; a zone cannot be its own child", self.me.name),
            ));
        }
        if let Some(entry) = info.subtree.iter().flatten().find(|e| e.id == self.me.id) {
            let mut loop_path = vec![self.me.name.clone(), info.name.clone()];
            loop_path.extend(entry.path.iter().cloned());
            return Err(FedError::api(
                ErrorCode::ZoneLoop,
                format!(
                    "zone {} has this zone below it, so adding it would make a loop: {}",
                    info.name,
                    loop_path.join(" -> ")
                ),
            ));
        }
        match updating {
            Some(id) if id != info.id => {
                return Err(FedError::api(
                    ErrorCode::Conflict,
                    format!(
                    "the zone at {api_url} is zone {} ({}), not the child being updated ({id}); add it as a new child",
                    info.name, info.id
                ),
                ))
            }
            _ => {}
        }
        if updating.is_none() {
            if let Some(existing) = self.registry.get(&info.id) {
                return Err(FedError::api(
                    ErrorCode::Conflict,
                    format!("zone {} ({}) is already a child of this zone, as {}", info.name, info.id, existing.name),
                ));
            }
        }
        Ok(info)
    }

    /// Polls one child: its zone with its subtree, checked to be the registered zone and not
    /// to hold this zone below it.
    pub async fn poll(&self, child: &Child, timeout: Duration) -> PollOutcome {
        self.poll_if_changed(child, timeout, None).await.0
    }

    /// [`Gateway::poll`], conditional on the child's answer having changed since `etag`
    /// ([`PollOutcome::Unchanged`] when it has not), with the answer's new `ETag`.
    pub async fn poll_if_changed(
        &self,
        child: &Child,
        timeout: Duration,
        etag: Option<&str>,
    ) -> (PollOutcome, Option<String>) {
        let caller = self.as_parent();
        let path = ZonePath::empty().through(&self.me.id);
        let hop = self.hop(&caller, &path, timeout);
        let (info, etag) = match self.transport.zone_if_changed(child, &hop, etag).await {
            Ok(Conditional::Modified { value, etag }) => (value, etag),
            Ok(Conditional::NotModified) => return (PollOutcome::Unchanged, etag.map(str::to_owned)),
            Err(e) => return (PollOutcome::Failed(e.to_string()), None),
        };
        (self.check_poll(child, info), etag)
    }

    /// Holds a watch on `child` (`GET /v1/zone/watch`): answers when its generation passes
    /// `since`, or after about `wait` with its generation as it is.
    pub async fn watch(
        &self,
        child: &Child,
        since: i64,
        wait: Duration,
        timeout: Duration,
    ) -> Result<api::ZoneWatch, FedError> {
        let caller = self.as_parent();
        let path = ZonePath::empty().through(&self.me.id);
        let hop = self.hop(&caller, &path, wait + timeout);
        self.transport.watch(child, &hop, since, wait).await
    }

    /// Who this zone is when it polls or watches a child on its own account.
    fn as_parent(&self) -> Principal {
        Principal::admin(format!("zone:{}", self.me.name))
    }

    /// A polled answer, checked to be the registered zone and not to hold this zone below it.
    fn check_poll(&self, child: &Child, info: ZoneInfo) -> PollOutcome {
        if info.id != child.id {
            return PollOutcome::Failed(format!(
                "the zone at {} is now zone {} ({}), not {} ({}); delete this child and add that zone if it is meant",
                child.api_url, info.name, info.id, child.name, child.id
            ));
        }
        if let Some(entry) = info.subtree.iter().flatten().find(|e| e.id == self.me.id) {
            let mut loop_path = vec![self.me.name.clone(), child.name.clone()];
            loop_path.extend(entry.path.iter().cloned());
            return PollOutcome::Failed(format!(
                "loop: this zone is below its child {} ({}); remove one of those registrations",
                child.name,
                loop_path.join(" -> ")
            ));
        }
        PollOutcome::Answered(Box::new(info))
    }
}
