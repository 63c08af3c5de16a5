//! This zone's own answer: the children summary and subtree of `GET /v1/zone`, and the
//! aggregate of `GET /v1/capabilities`.
//!
//! Cost: the summary and the polled subtree are O(children) and O(subtree entries) copies of the
//! registry (each entry with its zone's own aggregate, O(keys)); the aggregate is one local query
//! plus an O(keys) merge of the children's part, which the registry merged per zone id when it
//! was replaced (O(subtree entries × keys), once per change, not per request); the live subtree is
//! one request per child, in parallel under the scatter deadline, bounded by
//! `SUBTREE_MAX_ENTRIES`.

use api::{Aggregate, ChildSummary, SubtreeEntry};

use super::{Gateway, RequestContext};
use crate::error::FedError;
use crate::scatter::gather;

impl Gateway {
    /// `GET /v1/zone`'s children.
    pub fn children_summary(&self) -> Vec<ChildSummary> {
        self.registry
            .children()
            .iter()
            .map(|c| ChildSummary { id: c.id.clone(), name: c.name.clone(), status: c.status() })
            .collect()
    }

    /// Every zone below this one, as last polled.
    pub fn subtree(&self) -> Vec<SubtreeEntry> {
        self.registry.subtree()
    }

    /// Every zone below this one, asked afresh of each reachable child (which asks its own, and so
    /// on; the zone path stops a walk that loops). A child that does not answer contributes what
    /// it last reported. Used by zone-add, so a registration made a moment ago anywhere below is
    /// seen, where a poll would be up to an interval behind per level.
    pub async fn live_subtree(&self, ctx: &RequestContext) -> Vec<SubtreeEntry> {
        let children = self.registry.children();
        let path = ctx.path.through(&self.me.id);
        let answers = gather(&children, self.settings.scatter_deadline, |child| {
            let path = &path;
            async move {
                let hop = self.hop(&ctx.caller, path, self.settings.scatter_deadline);
                let info = self.transport.zone_info(&child, &hop, Some(api::SubtreeView::Live)).await?;
                Ok(info.subtree.unwrap_or_default())
            }
        })
        .await;
        let mut out = Vec::new();
        for (child, answer) in answers {
            let own = if child.routable() { child.own_capabilities.clone() } else { None };
            out.push(SubtreeEntry {
                id: child.id.clone(),
                name: child.name.clone(),
                path: vec![child.name.clone()],
                capabilities: own,
                api_url: Some(child.api_url.clone()),
            });
            let below = match answer {
                Ok(below) => below,
                Err(e) => {
                    tracing::debug!(child = %child.name, error = %e, "no live subtree; using the polled one");
                    child.subtree.clone()
                }
            };
            for e in below {
                let mut p = vec![child.name.clone()];
                p.extend(e.path);
                let capabilities = if child.routable() { e.capabilities } else { None };
                out.push(SubtreeEntry { id: e.id, name: e.name, path: p, capabilities, api_url: e.api_url });
            }
        }
        out.truncate(api::federation::SUBTREE_MAX_ENTRIES);
        out
    }

    /// This zone's aggregate: its own up hosts merged with its online, enabled children's, per
    /// zone id (a zone reached through two children counts once).
    pub async fn aggregate(&self) -> Result<Aggregate, FedError> {
        Ok(self.aggregates().await?.1)
    }

    /// This zone's own hosts' aggregate and its whole aggregate (what `GET /v1/zone` reports as
    /// `own_capabilities` and `capabilities`), with one local read.
    pub async fn aggregates(&self) -> Result<(Aggregate, Aggregate), FedError> {
        Ok(self.with_children(self.local.aggregate().await?))
    }

    /// `own` (this zone's hosts' aggregate, read by the caller) and it merged with the children's.
    pub fn with_children(&self, own: Aggregate) -> (Aggregate, Aggregate) {
        let mut agg = own.clone();
        api::merge_aggregates(&mut agg, &self.registry.merged());
        (own, agg)
    }
}
