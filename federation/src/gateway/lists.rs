//! Lists across the subtree (`GET /v1/instances`, `GET /v1/hosts`): every child asked at once
//! with one deadline, pages merged by id, the silent children named.
//!
//! Cost: O(children) requests in parallel, each for about `limit / sources` items; the merge sorts
//! about `limit` items. A list for one client asks only the children that hold it (from the
//! lookup cache).

use std::sync::Arc;

use api::{HostList, RawInstance, RawInstanceList};

use tracing::Instrument;

use super::{ChildPage, Gateway, Prefetch, ReadAhead, ReadAheadKey, RequestContext};
use crate::error::FedError;
use crate::path::ZonePath;
use crate::registry::Child;
use crate::scatter::{gather, merge, merge_keeping_rest, per_source_limit, SourcePage};
use crate::transport::{Hop, ListQuery};

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
    ///
    /// Read-ahead: from the second page of a walk on, each child is asked for a whole `limit`
    /// after the marker instead of its share, and what the page could not hold is kept
    /// ([`ReadAhead`]) for the pages that follow, while the child's generation stays the same. A
    /// walk of n pages over c children then costs about c × n × share / limit child requests
    /// instead of c × n: measured, a child's fixed cost per request (HTTP, the token, a read
    /// transaction after the last report batch) outweighed its cost per instance.
    ///
    /// Prefetch: while a walk's client reads a page, each child's next `limit` items after those
    /// kept are already being read ([`Prefetch`]), so the children's work runs beside the
    /// parent's and the client's instead of between their pages. A walk holds at most two
    /// `limit`s per child; a caller who asks one page pays for none of this, and a walk left
    /// midway leaves one `limit` per child read for nothing.
    ///
    /// The instances are passed on as JSON text ([`api::RawInstance`]): a gateway decodes none.
    pub async fn instances(&self, ctx: &RequestContext, query: &ListQuery) -> Result<RawInstanceList, FedError> {
        if self.registry.is_empty() {
            return raw(&self.local.instances(&ctx.caller, query).await?);
        }
        let (children, mut unreachable) = self.list_sources(ctx, query.client_id.as_deref()).await;
        let share = per_source_limit(query.limit, children.len() + 1);
        let per = ListQuery { limit: share, ..query.clone() };
        // The first page of a walk asks for shares only: a caller who wants one page pays for one.
        let walking = query.marker.is_some();
        let ahead = ListQuery { limit: query.limit.max(share), ..query.clone() };
        let path = ctx.path.through(&self.me.id);
        let visibility = ctx.caller.visibility_key();
        let key = |child: &Child, marker: Option<&str>| ReadAheadKey {
            child: child.id.clone(),
            visibility: visibility.clone(),
            client: query.client_id.clone(),
            marker: marker.map(str::to_owned),
        };
        // Children whose kept items serve this page, and the rest to ask. The kept items' reads
        // ahead run in the background already: waiting for one after another costs the longest.
        let mut kept: Vec<Option<ReadAhead>> = Vec::with_capacity(children.len());
        for child in &children {
            let held = query
                .marker
                .as_deref()
                .and_then(|m| self.read_ahead.remove(&key(child, Some(m))))
                .and_then(|r| r.lock().ok().and_then(|mut r| r.take()));
            kept.push(match held {
                Some(held) => held.for_next_page(child.generation, share).await,
                None => None,
            });
        }
        let to_ask: Vec<Arc<Child>> =
            children.iter().zip(&kept).filter(|(_, k)| k.is_none()).map(|(c, _)| c.clone()).collect();
        let (own, answers) = tokio::join!(
            self.local.instances(&ctx.caller, &per),
            gather(&to_ask, self.settings.scatter_deadline, |child| {
                let (path, q) = (&path, if walking { &ahead } else { &per });
                async move {
                    let hop = self.hop(&ctx.caller, path, self.settings.scatter_deadline);
                    self.transport.instances(&child, &hop, q).await
                }
            })
        );
        let own = raw(&own?)?;
        let mut answers = answers.into_iter();
        let mut pages = vec![SourcePage { more: own.next_marker.is_some(), items: own.instances }];
        // Where each page after the first came from.
        let mut sources: Vec<PageSource> = Vec::with_capacity(children.len());
        for (child, held) in children.iter().zip(kept) {
            if let Some(held) = held {
                unreachable.extend(held.unreachable.iter().cloned());
                pages.push(held.page);
                sources.push(PageSource {
                    child: child.clone(),
                    generation: held.generation,
                    below: held.unreachable,
                    running: held.next,
                });
                continue;
            }
            let (asked, answer) = answers.next().expect("one answer per child asked");
            debug_assert_eq!(asked.id, child.id);
            match answer {
                Ok(list) => {
                    let (page, below) = child_page(&self.me.name, &child.name, list);
                    unreachable.extend(below.iter().cloned());
                    pages.push(page);
                    sources.push(PageSource {
                        child: child.clone(),
                        generation: asked.generation,
                        below,
                        running: None,
                    });
                }
                Err(e) => {
                    tracing::warn!(child = %child.name, error = %e, "child zone did not answer a list");
                    unreachable.push(child.name.clone());
                }
            }
        }
        let (instances, next_marker, rests) = merge_keeping_rest(pages, query.limit, RawInstance::id);
        if let Some(next) = &next_marker {
            // rests[0] is this zone's own: cheap to read again.
            for (PageSource { child, generation, below, running }, rest) in
                sources.into_iter().zip(rests.into_iter().skip(1))
            {
                let next_read = match running {
                    Some(running) => Some(running),
                    None if walking && rest.more => {
                        // After the last item the child sent: the rest's last, or when the
                        // page took them all, the page's last (a child with more sent items up
                        // to at least the page's end).
                        let after = rest.items.last().map_or_else(|| next.clone(), |i| i.id().to_owned());
                        let q = ListQuery { marker: Some(after), ..ahead.clone() };
                        Some(self.prefetch(ctx, &child, &path, q))
                    }
                    None => None,
                };
                if rest.items.is_empty() && rest.more && next_read.is_none() {
                    continue;
                }
                let held = ReadAhead { generation, page: rest, unreachable: below, next: next_read };
                self.read_ahead.insert(key(&child, Some(next)), Arc::new(std::sync::Mutex::new(Some(held))));
            }
        }
        unreachable.sort();
        unreachable.dedup();
        Ok(RawInstanceList { instances, unreachable_zones: unreachable, next_marker })
    }

    /// Starts reading `child`'s page for `query` in the background, bounded by the scatter
    /// deadline, for a walk's page to come ([`Prefetch`]).
    fn prefetch(&self, ctx: &RequestContext, child: &Arc<Child>, path: &ZonePath, query: ListQuery) -> Prefetch {
        let (transport, child, path) = (self.transport.clone(), child.clone(), path.clone());
        let (caller, me, deadline) = (ctx.caller.clone(), self.me.name.clone(), self.settings.scatter_deadline);
        let read = async move {
            let hop = Hop { path: &path, caller: &caller, origin: &me, timeout: deadline };
            match tokio::time::timeout(deadline, transport.instances(&child, &hop, &query)).await {
                Ok(list) => Ok(child_page(&me, &child.name, list?)),
                Err(_) => Err(FedError::Timeout { zone: child.name.clone(), after_ms: deadline.as_millis() as u64 }),
            }
        };
        Prefetch::spawn(read.instrument(tracing::Span::current()))
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

/// Where a page of a list came from: its child, the child's generation when the page was read, the
/// zones below it that did not answer then, and the read of its next items if one is running.
struct PageSource {
    child: Arc<Child>,
    generation: i64,
    below: Vec<String>,
    running: Option<Prefetch>,
}

/// A child's answer as this zone passes it on: this zone's name in front of every `zone_path`,
/// and the zones below the child that did not answer named from here (`child/zone`).
fn child_page(me: &str, child: &str, mut list: RawInstanceList) -> ChildPage {
    for i in &mut list.instances {
        if !i.prefix_zone_path(me) {
            tracing::warn!(child, id = i.id(), "a child listed an instance without a zone_path");
        }
    }
    let below = list.unreachable_zones.iter().map(|z| format!("{child}/{z}")).collect();
    (SourcePage { more: list.next_marker.is_some(), items: list.instances }, below)
}

/// This zone's own page as JSON text.
fn raw(list: &api::InstanceList) -> Result<RawInstanceList, FedError> {
    RawInstanceList::from_list(list).map_err(|e| FedError::internal(format!("cannot encode an instance: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn held(generation: i64, items: usize, more: bool) -> ReadAhead {
        let instance = |n: usize| api::Instance {
            id: format!("{n:04}"),
            name: "vm".into(),
            client_id: "a".into(),
            state: "running".into(),
            host_id: None,
            zone_id: "z".into(),
            zone_path: vec!["z".into()],
            resources: api::Resources { vcpus: 1, memory_mb: 1, disk_gb: 1 },
            requirements: vec![],
            error_reason: None,
            version: 1,
            created_at: String::new(),
            updated_at: String::new(),
        };
        ReadAhead {
            generation,
            page: SourcePage {
                items: (0..items)
                    .map(|n| RawInstance::from_instance(&instance(n)).expect("an instance encodes"))
                    .collect(),
                more,
            },
            unreachable: vec![],
            next: None,
        }
    }

    #[test]
    fn kept_items_serve_only_an_unchanged_child_and_only_when_they_fill_its_share() {
        assert!(held(7, 12, true).serves(7, 12));
        assert!(!held(7, 12, true).serves(8, 12), "the child changed since: read it again");
        assert!(!held(7, 11, true).serves(7, 12), "too few to fill the share, and more to come");
        assert!(held(7, 3, false).serves(7, 12), "all the child has");
        assert!(held(7, 0, false).serves(7, 12), "the child is done");
    }

    fn ids(r: &ReadAhead) -> Vec<&str> {
        r.page.items.iter().map(RawInstance::id).collect()
    }

    #[tokio::test]
    async fn kept_items_short_of_a_share_take_the_childs_next_items_read_meanwhile() {
        let read = |items: usize, more: bool| {
            let page = held(0, items, more).page;
            Prefetch::spawn(async move { Ok((page, vec!["c/below".to_string()])) })
        };
        // Two kept, a share of 5, the next three read: all five, and what the read said after them.
        let mut short = held(7, 2, true);
        short.next = Some(read(3, false));
        let filled = short.for_next_page(7, 5).await.expect("filled to the share");
        assert_eq!(ids(&filled), ["0000", "0001", "0000", "0001", "0002"]);
        assert!(!filled.page.more);
        assert_eq!(filled.unreachable, ["c/below"]);
        // Enough kept: the read ahead stays for a later page.
        let mut enough = held(7, 5, true);
        enough.next = Some(read(3, true));
        let kept = enough.for_next_page(7, 5).await.expect("serves as it is");
        assert_eq!((kept.page.items.len(), kept.next.is_some()), (5, true));
        // The child changed since, or its read failed, or none runs: the child is asked.
        let mut changed = held(7, 2, true);
        changed.next = Some(read(3, false));
        assert!(changed.for_next_page(8, 5).await.is_none());
        let mut failed = held(7, 2, true);
        failed.next = Some(Prefetch::spawn(async { Err(FedError::Timeout { zone: "c".into(), after_ms: 1 }) }));
        assert!(failed.for_next_page(7, 5).await.is_none());
        assert!(held(7, 2, true).for_next_page(7, 5).await.is_none());
    }
}
