//! Where a request would land (`POST /v1/placements`), and what creates share with it: this
//! zone's own aggregate (memoised for ranking) and the answer when nothing fits.
//!
//! Cost: ranking is O(children × requirements) over aggregates already in memory; then one
//! request per candidate tried, in rank order, until one accepts (usually the first).

use std::time::{Duration, Instant};

use api::{Aggregate, CodedError, ErrorCode, Placement, PlacementRequest};

use super::{Gateway, RequestContext};
use crate::error::FedError;
use crate::route::{candidates, Target};

/// How long this zone's own aggregate is reused when ranking candidates: ranking is a hint (the
/// zone that is chosen makes the exact decision), so it need not cost three queries per create.
const OWN_AGGREGATE_TTL: Duration = Duration::from_millis(500);

impl Gateway {
    pub(super) async fn own_aggregate(&self) -> Result<Aggregate, FedError> {
        {
            let memo = self.own_aggregate.lock().unwrap_or_else(|e| e.into_inner());
            if let Some((at, agg)) = memo.as_ref() {
                if at.elapsed() < OWN_AGGREGATE_TTL {
                    return Ok(agg.clone());
                }
            }
        }
        let agg = self.local.aggregate().await?;
        *self.own_aggregate.lock().unwrap_or_else(|e| e.into_inner()) = Some((Instant::now(), agg.clone()));
        Ok(agg)
    }

    pub(super) fn nowhere(&self, refusals: &[String]) -> FedError {
        if refusals.is_empty() {
            FedError::api(
                ErrorCode::NoValidHost,
                format!(
                    "no host of zone {} or of its online, enabled child zones meets the requirements with the resources free",
                    self.me.name
                ),
            )
        } else {
            FedError::api(
                ErrorCode::NoValidHost,
                format!("no zone below {} could take it: {}", self.me.name, refusals.join("; ")),
            )
        }
    }

    /// Where a create would land, creating nothing.
    pub async fn placement(&self, ctx: &RequestContext, req: &PlacementRequest) -> Result<Placement, FedError> {
        if self.registry.is_empty() {
            return self.local.placement(&ctx.caller, req).await;
        }
        let own = self.own_aggregate().await?;
        let children = self.registry.children();
        let path = ctx.path.through(&self.me.id);
        let mut refusals = Vec::new();
        for candidate in candidates(&own, &children, &req.requirements, &req.resources) {
            let answer = match &candidate.target {
                Target::Local => self.local.placement(&ctx.caller, req).await,
                Target::Child(child) => {
                    let hop = self.hop(&ctx.caller, &path, self.settings.scatter_deadline);
                    self.transport.placement(child, &hop, req).await.map(|mut p| {
                        self.prefix(&mut p.zone_path);
                        p
                    })
                }
            };
            match answer {
                Err(e) if e.is_refusal() || e.code() == ErrorCode::Timeout => {
                    refusals.push(format!("{}: {e}", candidate.name(&self.me.name)))
                }
                other => return other,
            }
        }
        Err(self.nowhere(&refusals))
    }
}
