//! Lists across the subtree (`GET /v1/instances`, `GET /v1/hosts`): every child asked at once
//! with one deadline, pages merged by id, the silent children named.
//!
//! Cost: O(children) requests in parallel, each for about `limit / sources` items; the merge sorts
//! about `limit` items. A list for one client asks only the children that hold it (from the
//! lookup cache).

use std::sync::Arc;

use api::{HostList, Instance, InstanceList};

use super::{Gateway, RequestContext};
use crate::error::FedError;
use crate::registry::Child;
use crate::scatter::{gather, merge, per_source_limit, SourcePage};
use crate::transport::ListQuery;

impl Gateway {
    /// The children a list must ask: all reachable ones, or for one client only those that hold
    /// it; and the names of those it cannot ask.
    async fn list_sources(&self, ctx: &RequestContext, client: Option<&str>) -> (Vec<Arc<Child>>, Vec<String>) {
        match client {
            Some(client) => {
                let (answers, unreachable) = self.child_answers(ctx, client).await;
                (answers.into_iter().filter(|(_, a)| a.is_some()).map(|(c, _)| c).collect(), unreachable)
            }
            None => {
                let (online, offline): (Vec<Arc<Child>>, Vec<Arc<Child>>) =
                    self.registry.children().iter().cloned().partition(|c| c.online);
                (online, offline.into_iter().map(|c| c.name.clone()).collect())
            }
        }
    }

    /// A page of instances across this zone and its subtree, sorted by id.
    pub async fn instances(&self, ctx: &RequestContext, query: &ListQuery) -> Result<InstanceList, FedError> {
        if self.registry.is_empty() {
            return self.local.instances(&ctx.caller, query).await;
        }
        let (children, mut unreachable) = self.list_sources(ctx, query.client_id.as_deref()).await;
        let per = ListQuery { limit: per_source_limit(query.limit, children.len() + 1), ..query.clone() };
        let path = ctx.path.through(&self.me.id);
        let (own, answers) = tokio::join!(
            self.local.instances(&ctx.caller, &per),
            gather(&children, self.settings.scatter_deadline, |child| {
                let (path, per) = (&path, &per);
                async move {
                    let hop = self.hop(&ctx.caller, path, self.settings.scatter_deadline);
                    self.transport.instances(&child, &hop, per).await
                }
            })
        );
        let own = own?;
        let mut pages = vec![SourcePage { more: own.next_marker.is_some(), items: own.instances }];
        for (child, answer) in answers {
            match answer {
                Ok(mut list) => {
                    for i in &mut list.instances {
                        self.prefix(&mut i.zone_path);
                    }
                    unreachable.extend(list.unreachable_zones.iter().map(|z| format!("{}/{z}", child.name)));
                    pages.push(SourcePage { more: list.next_marker.is_some(), items: list.instances });
                }
                Err(e) => {
                    tracing::warn!(child = %child.name, error = %e, "child zone did not answer a list");
                    unreachable.push(child.name.clone());
                }
            }
        }
        let (instances, next_marker) = merge(pages, query.limit, |i: &Instance| i.id.as_str());
        unreachable.sort();
        unreachable.dedup();
        Ok(InstanceList { instances, unreachable_zones: unreachable, next_marker })
    }

    /// A page of hosts across this zone and its subtree, sorted by id.
    pub async fn hosts(&self, ctx: &RequestContext, query: &ListQuery) -> Result<HostList, FedError> {
        if self.registry.is_empty() {
            return self.local.hosts(&ctx.caller, query).await;
        }
        let (children, mut unreachable) = self.list_sources(ctx, None).await;
        let per = ListQuery { limit: per_source_limit(query.limit, children.len() + 1), ..query.clone() };
        let path = ctx.path.through(&self.me.id);
        let (own, answers) = tokio::join!(
            self.local.hosts(&ctx.caller, &per),
            gather(&children, self.settings.scatter_deadline, |child| {
                let (path, per) = (&path, &per);
                async move {
                    let hop = self.hop(&ctx.caller, path, self.settings.scatter_deadline);
                    self.transport.hosts(&child, &hop, per).await
                }
            })
        );
        let own = own?;
        let mut pages = vec![SourcePage { more: own.next_marker.is_some(), items: own.hosts }];
        for (child, answer) in answers {
            match answer {
                Ok(mut list) => {
                    for h in &mut list.hosts {
                        self.prefix(&mut h.zone_path);
                    }
                    unreachable.extend(list.unreachable_zones.iter().map(|z| format!("{}/{z}", child.name)));
                    pages.push(SourcePage { more: list.next_marker.is_some(), items: list.hosts });
                }
                Err(e) => {
                    tracing::warn!(child = %child.name, error = %e, "child zone did not answer a host list");
                    unreachable.push(child.name.clone());
                }
            }
        }
        let (hosts, next_marker) = merge(pages, query.limit, |h: &api::Host| h.id.as_str());
        unreachable.sort();
        unreachable.dedup();
        Ok(HostList { hosts, unreachable_zones: unreachable, next_marker })
    }
}
