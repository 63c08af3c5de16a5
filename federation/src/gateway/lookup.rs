//! The lowest zone managing all of a client's instances (`GET /v1/clients/{id}/zone`): the
//! seed's rule over this zone's answer and its children's, each cached per source and
//! generation.
//!
//! Cost: O(children) cache reads; only children whose answer is not cached are asked, in
//! parallel under the scatter deadline. At rest (everything cached) a lookup makes no request.

use std::sync::Arc;

use api::LowestZone;

use super::{Gateway, Lookup, RequestContext};
use crate::error::FedError;
use crate::lookup::{compose, Source};
use crate::registry::Child;
use crate::scatter::gather;

/// A child's lowest-zone answer as this zone repeats it: only a zone the child is or holds (in
/// its polled subtree, at the path it lists), with the API URL registered for that zone (this
/// zone's zone-add for the child itself, the child's for a zone below it), never the URL the
/// answer carries. An answer naming a zone not known below the child becomes the child itself:
/// the client is managed somewhere below it, and the child, at the URL registered here,
/// forwards. So a child can send this zone's clients nowhere but into its own subtree.
pub(crate) fn vouched(child: &Child, answer: Option<LowestZone>) -> Option<LowestZone> {
    let a = answer?;
    let itself = |a: LowestZone| LowestZone {
        zone_id: child.id.clone(),
        zone_name: child.name.clone(),
        api_url: child.api_url.clone(),
        path: vec![child.name.clone()],
        ..a
    };
    if a.zone_id == child.id {
        return Some(itself(a));
    }
    let listed = child.subtree.iter().find(|e| {
        e.id == a.zone_id && a.path.first() == Some(&child.name) && a.path.get(1..) == Some(e.path.as_slice())
    });
    match listed.and_then(|e| e.api_url.clone().map(|url| (e.name.clone(), url))) {
        Some((name, url)) => Some(LowestZone { zone_name: name, api_url: url, ..a }),
        None => {
            tracing::warn!(child = %child.name, zone = %a.zone_id, "a child named a zone it does not list below it; using the child");
            Some(itself(a))
        }
    }
}

impl Gateway {
    /// The children to ask about `client`'s resources: those whose answer for the client is a
    /// zone (asking the ones whose answer is not known), and the names of those that could not
    /// be asked.
    pub(super) async fn child_answers(
        &self,
        ctx: &RequestContext,
        client: &str,
    ) -> (Vec<(Arc<Child>, Option<LowestZone>)>, Vec<String>) {
        let mut known = Vec::new();
        let mut ask = Vec::new();
        let mut unreachable = Vec::new();
        for c in self.registry.children().iter() {
            match self.lookups.get(&Source::Child(c.id.clone()), client) {
                Some(answer) => known.push((c.clone(), answer)),
                None if c.online => ask.push(c.clone()),
                None => unreachable.push(c.name.clone()),
            }
        }
        if !ask.is_empty() {
            let path = ctx.path.through(&self.me.id);
            let answers = gather(&ask, self.settings.scatter_deadline, |child| {
                let path = &path;
                async move {
                    let source = Source::Child(child.id.clone());
                    let ticket = self.lookups.ticket(&source);
                    let hop = self.hop(&ctx.caller, path, self.settings.scatter_deadline);
                    let answer = self.transport.lowest_zone(&child, &hop, client).await?;
                    let value = vouched(&child, answer.value);
                    self.lookups.fetched(&source, client, ticket, answer.generation, value.clone());
                    Ok(value)
                }
            })
            .await;
            for (child, answer) in answers {
                match answer {
                    Ok(a) => known.push((child, a)),
                    Err(e) => {
                        tracing::warn!(child = %child.name, error = %e, "child zone did not answer a client lookup");
                        unreachable.push(child.name.clone());
                    }
                }
            }
        }
        (known, unreachable)
    }

    /// This zone's own answer for `client`, from the cache or the database.
    async fn local_answer(&self, client: &str) -> Result<bool, FedError> {
        if let Some(a) = self.lookups.get(&Source::Local, client) {
            return Ok(a.is_some());
        }
        let ticket = self.lookups.ticket(&Source::Local);
        let yes = self.local.has_client(client).await?;
        self.lookups.fetched(&Source::Local, client, ticket, None, yes.then(|| self.here(client)));
        Ok(yes)
    }

    /// The lowest zone managing all of `client`'s instances (the seed's rule), asking only
    /// children whose answer is not cached. A member may only ask about its own client.
    pub async fn lowest_zone(&self, ctx: &RequestContext, client: &str) -> Result<Lookup, FedError> {
        if !ctx.caller.may_see(client) {
            return Ok(Lookup { answer: None, unreachable: Vec::new() });
        }
        let local = self.local_answer(client).await?;
        let (answers, mut unreachable) = self.child_answers(ctx, client).await;
        let pairs: Vec<(&str, Option<&LowestZone>)> =
            answers.iter().map(|(c, a)| (c.name.as_str(), a.as_ref())).collect();
        let mut answer = self.compose(client, local, &pairs);
        unreachable.sort();
        if let Some(a) = &mut answer {
            a.unreachable_zones.extend(unreachable.iter().cloned());
        }
        Ok(Lookup { answer, unreachable })
    }

    /// This zone's answer for `client` from cached answers alone (`None` when one is missing):
    /// what a change tells the zone that forwarded it.
    pub(super) fn answer_now(&self, client: &str, local: Option<bool>) -> Option<Option<LowestZone>> {
        let local = match local {
            Some(b) => b,
            None => self.lookups.get(&Source::Local, client)?.is_some(),
        };
        let children = self.registry.children();
        let mut answers = Vec::with_capacity(children.len());
        for c in children.iter() {
            answers.push((c.name.as_str(), self.lookups.get(&Source::Child(c.id.clone()), client)?));
        }
        let pairs: Vec<(&str, Option<&LowestZone>)> = answers.iter().map(|(n, a)| (*n, a.as_ref())).collect();
        Some(self.compose(client, local, &pairs))
    }

    /// [`compose`] with this zone's subtree as what tells whether one answer lies below
    /// another. Cost: one map probe per pair of differing answers ([`crate::registry::ZonePaths`],
    /// built when the registry is replaced), paid only when several children say yes.
    fn compose(&self, client: &str, local: bool, pairs: &[(&str, Option<&LowestZone>)]) -> Option<LowestZone> {
        let differ = {
            let mut ids = pairs.iter().filter_map(|(_, a)| a.map(|a| a.zone_id.as_str()));
            let first = ids.next();
            ids.any(|id| Some(id) != first)
        };
        let paths = if differ && !local { Some(self.registry.paths()) } else { None };
        let covers = |a: &LowestZone, b: &LowestZone| {
            let below = paths.as_ref().and_then(|p| p.get(&b.zone_id));
            below.is_some_and(|ps| ps.iter().any(|p| p.len() > a.path.len() && p.starts_with(&a.path)))
        };
        compose(&self.me_ref(), client, local, pairs, &covers)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::registry::Credentials;
    use api::SubtreeEntry;

    fn child() -> Child {
        let mut c = Child::registered("id-dc1", "dc1", "https://dc1.registered", Credentials::new("admin", "pw"));
        c.subtree = vec![SubtreeEntry {
            id: "id-huddle".into(),
            name: "huddle".into(),
            path: vec!["huddle".into()],
            capabilities: None,
            api_url: Some("https://huddle.registered-by-dc1".into()),
        }];
        c
    }

    fn claim(zone_id: &str, name: &str, path: &[&str]) -> LowestZone {
        LowestZone {
            client_id: "acme".into(),
            zone_id: zone_id.into(),
            zone_name: name.into(),
            api_url: "https://attacker.example".into(),
            path: path.iter().map(|s| s.to_string()).collect(),
            unreachable_zones: vec![],
        }
    }

    #[test]
    fn a_childs_answer_keeps_its_zone_and_gets_the_registered_url() {
        let c = child();
        assert_eq!(vouched(&c, None), None);
        let itself = vouched(&c, Some(claim("id-dc1", "dc1", &["dc1"]))).expect("an answer naming the child is kept");
        assert_eq!((itself.zone_id.as_str(), itself.api_url.as_str()), ("id-dc1", "https://dc1.registered"));
        let below =
            vouched(&c, Some(claim("id-huddle", "huddle", &["dc1", "huddle"]))).expect("a listed zone below is kept");
        assert_eq!((below.zone_id.as_str(), below.api_url.as_str()), ("id-huddle", "https://huddle.registered-by-dc1"));
        assert_eq!(below.path, ["dc1", "huddle"]);
    }

    #[test]
    fn a_zone_the_child_does_not_hold_becomes_the_child() {
        let c = child();
        for bogus in [
            claim("id-elsewhere", "elsewhere", &["dc1", "elsewhere"]),
            // A listed zone at a path the child does not list is not vouched for either.
            claim("id-huddle", "huddle", &["dc1", "other", "huddle"]),
        ] {
            let a = vouched(&c, Some(bogus)).expect("an unvouched answer becomes the child, not nothing");
            assert_eq!((a.zone_id.as_str(), a.api_url.as_str()), ("id-dc1", "https://dc1.registered"));
            assert_eq!(a.path, ["dc1"]);
        }
    }
}
