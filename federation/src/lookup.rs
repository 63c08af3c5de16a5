//! The lowest-zone lookup and its cache.
//!
//! The seed's rule: a zone asks its children "do you manage client X?"; several say yes → this
//! zone; exactly one → that child's answer; none → not managed here. This zone's own hosts count
//! as one more source that may say yes ([`Source::Local`]). [`compose`] applies the rule.
//!
//! [`LookupCache`] keeps each source's answer per client, so a repeated lookup asks nobody. It
//! stays coherent through generations: every zone reports a generation that moves whenever
//! ownership in its subtree moves. For each source the cache remembers the generation its answers
//! are valid for (`accounted`):
//! - a poll (or any answer) showing a newer generation than accounted invalidates all of that
//!   source's answers at once (an epoch in the cache key moves, so this costs O(1));
//! - a change that passed through this zone (a create, migrate or delete forwarded to a child)
//!   comes back with the child's new generation and its new answer for the client
//!   ([`api::federation::LOWEST_ZONE_HEADER`]). When the generation moved by exactly one, that
//!   change was the only one: the answer is stored (precomputed) and nothing else is dropped.
//!   Otherwise other changes happened too and the source's other answers are dropped.
//! - an answer fetched while the source changed is not stored (a ticket taken before the fetch
//!   must still be valid), so a slow fetch never overwrites a newer answer.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

use api::LowestZone;

/// Who gives an answer: this zone's own hosts, or a child (by id).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Source {
    Local,
    Child(String),
}

#[derive(Debug, Default, Clone, Copy)]
struct SourceState {
    /// Part of every cache key of the source: bumping it drops all of its answers.
    epoch: u64,
    /// The source's generation the stored answers are valid for.
    accounted: Option<i64>,
    /// Bumped on every change to the source's answers; fetch tickets compare it.
    changes: u64,
}

/// What a fetch must present to store its answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ticket {
    epoch: u64,
    changes: u64,
}

/// Answers per (source, client): `Some(zone)` or `None` for "manages none of its instances".
pub struct LookupCache {
    answers: moka::sync::Cache<(Source, u64, String), Option<LowestZone>>,
    // A std mutex: held for a few map operations, never across an await.
    sources: Mutex<HashMap<Source, SourceState>>,
    /// Moves after every change to what the cache holds (see [`LookupCache::version`]).
    version: AtomicU64,
    /// `federation_lookup_cache_total` by result, registered once: registering looks the label
    /// set up in the recorder's registry, and a lookup reads one answer per source.
    hits: metrics::Counter,
    misses: metrics::Counter,
}

impl LookupCache {
    pub fn new(capacity: u64) -> LookupCache {
        LookupCache {
            answers: moka::sync::Cache::new(capacity),
            sources: Mutex::new(HashMap::new()),
            version: AtomicU64::new(0),
            hits: metrics::counter!("federation_lookup_cache_total", "result" => "hit"),
            misses: metrics::counter!("federation_lookup_cache_total", "result" => "miss"),
        }
    }

    /// A number that moves whenever an answer could change: after every store, drop or
    /// generation change here, and after every replacement of the children
    /// ([`LookupCache::touch`]). Something derived from the answers while the version read
    /// before deriving it is still current is still right. The change is made before the version
    /// moves, so a reader never tags an old derivation with the new version.
    pub fn version(&self) -> u64 {
        self.version.load(Ordering::Acquire)
    }

    /// Moves the [`LookupCache::version`]: after a change here, or to what answers are composed
    /// with (the children).
    pub fn touch(&self) {
        self.version.fetch_add(1, Ordering::Release);
    }

    fn state(&self, source: &Source) -> SourceState {
        self.sources.lock().unwrap_or_else(|e| e.into_inner()).get(source).copied().unwrap_or_default()
    }

    /// The cached answer of `source` for `client`: `None` when not known.
    pub fn get(&self, source: &Source, client: &str) -> Option<Option<LowestZone>> {
        let epoch = self.state(source).epoch;
        let hit = self.answers.get(&(source.clone(), epoch, client.to_owned()));
        if hit.is_some() { &self.hits } else { &self.misses }.increment(1);
        hit
    }

    /// Take before fetching an answer from `source`; present it to [`LookupCache::fetched`].
    pub fn ticket(&self, source: &Source) -> Ticket {
        let s = self.state(source);
        Ticket { epoch: s.epoch, changes: s.changes }
    }

    /// Stores an answer fetched with `ticket`, which the source gave at `generation` (when it
    /// said). Not stored when the source changed since the ticket or the answer is older than
    /// what is known; a newer generation drops the source's other answers first.
    pub fn fetched(
        &self,
        source: &Source,
        client: &str,
        ticket: Ticket,
        generation: Option<i64>,
        answer: Option<LowestZone>,
    ) {
        let mut sources = self.sources.lock().unwrap_or_else(|e| e.into_inner());
        let st = sources.entry(source.clone()).or_default();
        let unchanged = ticket.epoch == st.epoch && ticket.changes == st.changes;
        if let Some(g) = generation {
            match st.accounted {
                Some(a) if g < a => return,
                Some(a) if g == a => {}
                _ => {
                    if st.accounted.is_some() {
                        st.epoch += 1;
                        st.changes += 1;
                    }
                    st.accounted = Some(g);
                }
            }
        }
        if unchanged {
            self.answers.insert((source.clone(), st.epoch, client.to_owned()), answer);
        }
        self.touch();
    }

    /// A source's generation as polled (or read from the database, for [`Source::Local`]): a
    /// newer one than accounted drops the source's answers.
    pub fn observe(&self, source: &Source, generation: i64) {
        let mut sources = self.sources.lock().unwrap_or_else(|e| e.into_inner());
        let st = sources.entry(source.clone()).or_default();
        match st.accounted {
            Some(a) if generation <= a => {}
            _ => {
                st.epoch += 1;
                st.changes += 1;
                st.accounted = Some(generation);
                self.touch();
            }
        }
    }

    /// A change about `client` passed through to `source`, which answered with its new
    /// `generation` and, when it could tell, its new `answer` for the client.
    pub fn changed(&self, source: &Source, client: &str, generation: Option<i64>, answer: Option<Option<LowestZone>>) {
        let mut sources = self.sources.lock().unwrap_or_else(|e| e.into_inner());
        let st = sources.entry(source.clone()).or_default();
        let newest = match (generation, st.accounted) {
            (Some(g), Some(a)) if g == a + 1 => {
                // Ours was the only change: the other answers still hold.
                st.accounted = Some(g);
                true
            }
            (Some(g), a) if a.is_none_or(|a| g > a) => {
                st.epoch += 1;
                st.accounted = Some(g);
                true
            }
            // An answer older than what is known, or of unknown age: keep nothing for the client.
            _ => false,
        };
        st.changes += 1;
        let key = (source.clone(), st.epoch, client.to_owned());
        match answer {
            Some(a) if newest => self.answers.insert(key, a),
            _ => self.answers.invalidate(&key),
        }
        self.touch();
    }

    /// This zone changed its own generation (to `generation`) for a change it made itself, which
    /// does not alter the source's answers (a create forwarded to a child bumps this zone's
    /// generation, not what its own hosts hold).
    pub fn own_bump(&self, source: &Source, generation: i64) {
        let mut sources = self.sources.lock().unwrap_or_else(|e| e.into_inner());
        let st = sources.entry(source.clone()).or_default();
        match st.accounted {
            Some(a) if generation == a + 1 => st.accounted = Some(generation),
            Some(a) if generation <= a => {}
            _ => {
                st.epoch += 1;
                st.changes += 1;
                st.accounted = Some(generation);
                self.touch();
            }
        }
    }

    /// The generation `source`'s answers hold for, when known.
    pub fn accounted(&self, source: &Source) -> Option<i64> {
        self.state(source).accounted
    }

    /// Drops everything about a source (a child that was deleted).
    pub fn forget(&self, source: &Source) {
        let mut sources = self.sources.lock().unwrap_or_else(|e| e.into_inner());
        let st = sources.entry(source.clone()).or_default();
        st.epoch += 1;
        st.changes += 1;
        st.accounted = None;
        self.touch();
    }
}

/// This zone as a lowest-zone answer.
#[derive(Debug, Clone)]
pub struct Me<'a> {
    pub id: &'a str,
    pub name: &'a str,
    pub api_url: &'a str,
}

impl Me<'_> {
    /// This zone as the lowest zone of `client`.
    pub fn here(&self, client: &str) -> LowestZone {
        LowestZone {
            client_id: client.to_owned(),
            zone_id: self.id.to_owned(),
            zone_name: self.name.to_owned(),
            api_url: self.api_url.to_owned(),
            path: vec![self.name.to_owned()],
            unreachable_zones: Vec::new(),
        }
    }
}

/// The seed's rule over this zone's own answer and its children's (`(child name, answer)`).
///
/// Several children saying yes means this zone, unless they name zones that one of the answers
/// holds: in a diamond (root → region → dc and root → dc) the region and the dc both answer
/// "dc", or the region answers "region" and the dc "dc", and the lowest zone holding every
/// instance is below this one. `covers(a, b)` says whether zone `b` lies below zone `a` (by
/// this zone's view of its subtree, answers' paths starting at the child).
pub fn compose(
    me: &Me<'_>,
    client: &str,
    local: bool,
    children: &[(&str, Option<&LowestZone>)],
    covers: &dyn Fn(&LowestZone, &LowestZone) -> bool,
) -> Option<LowestZone> {
    let yes: Vec<(&str, &LowestZone)> = children.iter().filter_map(|(c, a)| a.map(|a| (*c, a))).collect();
    if local {
        return Some(me.here(client));
    }
    // The lowest answer that holds every other one (the only one, when one child said yes).
    let holds_all = |a: &LowestZone| yes.iter().all(|(_, b)| b.zone_id == a.zone_id || covers(a, b));
    if yes.is_empty() {
        return None;
    }
    let Some((child, below)) = yes.iter().filter(|(_, a)| holds_all(a)).max_by_key(|(_, a)| a.path.len()) else {
        return Some(me.here(client));
    };
    let mut path = Vec::with_capacity(below.path.len() + 1);
    path.push(me.name.to_owned());
    path.extend(below.path.iter().cloned());
    let unreachable_zones = below.unreachable_zones.iter().map(|z| format!("{child}/{z}")).collect();
    Some(LowestZone { path, unreachable_zones, ..(*below).clone() })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn zone(name: &str, path: &[&str]) -> LowestZone {
        LowestZone {
            client_id: "acme".into(),
            zone_id: format!("id-{name}"),
            zone_name: name.into(),
            api_url: format!("http://{name}"),
            path: path.iter().map(|s| s.to_string()).collect(),
            unreachable_zones: vec![],
        }
    }

    const ME: Me<'static> = Me { id: "id-g", name: "global", api_url: "http://g" };
    const NONE: fn(&LowestZone, &LowestZone) -> bool = |_, _| false;

    #[test]
    fn in_a_diamond_the_lowest_zone_holding_every_answer_wins() {
        // global → region1 → dc1, and global → dc1 directly.
        let via_region = zone("dc1", &["region1", "dc1"]);
        let direct = zone("dc1", &["dc1"]);
        let one = compose(&ME, "acme", false, &[("dc1", Some(&direct)), ("region1", Some(&via_region))], &NONE);
        assert_eq!(one.unwrap().zone_name, "dc1", "the same zone by two paths is one answer");
        // The client also has instances in dc2, under region1 only: region1 holds both.
        let region = zone("region1", &["region1"]);
        let covers = |a: &LowestZone, b: &LowestZone| a.zone_name == "region1" && b.zone_name == "dc1";
        let both = compose(&ME, "acme", false, &[("dc1", Some(&direct)), ("region1", Some(&region))], &covers);
        assert_eq!(both.unwrap().path, ["global", "region1"]);
        let apart = compose(&ME, "acme", false, &[("dc1", Some(&direct)), ("region1", Some(&region))], &NONE);
        assert_eq!(apart.unwrap().zone_name, "global", "answers that do not hold each other: this zone");
    }

    #[test]
    fn the_seed_rule() {
        let dc1 = zone("dc1", &["region1", "dc1"]);
        let r2 = zone("region2", &["region2"]);
        assert_eq!(compose(&ME, "acme", false, &[("region1", None), ("region2", None)], &NONE), None);
        let one = compose(&ME, "acme", false, &[("region1", Some(&dc1)), ("region2", None)], &NONE).unwrap();
        assert_eq!(
            (one.zone_name.as_str(), one.path.clone()),
            ("dc1", vec!["global".into(), "region1".into(), "dc1".into()])
        );
        let two = compose(&ME, "acme", false, &[("region1", Some(&dc1)), ("region2", Some(&r2))], &NONE).unwrap();
        assert_eq!((two.zone_name.as_str(), two.path.clone()), ("global", vec!["global".to_string()]));
        let mine_and_one = compose(&ME, "acme", true, &[("region1", Some(&dc1))], &NONE).unwrap();
        assert_eq!(mine_and_one.zone_id, "id-g", "own hosts and a child: this zone");
        assert_eq!(compose(&ME, "acme", true, &[], &NONE).unwrap().zone_name, "global");
    }

    #[test]
    fn answers_are_cached_and_a_newer_generation_drops_them() {
        let c = LookupCache::new(100);
        let s = Source::Child("r1".into());
        assert_eq!(c.get(&s, "acme"), None);
        let t = c.ticket(&s);
        c.fetched(&s, "acme", t, Some(5), Some(zone("dc1", &["region1", "dc1"])));
        let t = c.ticket(&s);
        c.fetched(&s, "other", t, Some(5), None);
        assert_eq!(c.get(&s, "acme").unwrap().unwrap().zone_name, "dc1");
        assert_eq!(c.get(&s, "other"), Some(None), "a cached 'not managed'");
        c.observe(&s, 5);
        assert!(c.get(&s, "acme").is_some(), "same generation: still valid");
        c.observe(&s, 6);
        assert_eq!(c.get(&s, "acme"), None, "the child changed: dropped");
        assert_eq!(c.get(&Source::Local, "acme"), None);
    }

    #[test]
    fn a_change_that_was_the_only_one_is_precomputed() {
        let c = LookupCache::new(100);
        let s = Source::Child("r1".into());
        let t = c.ticket(&s);
        c.fetched(&s, "acme", t, Some(5), None);
        let t = c.ticket(&s);
        c.fetched(&s, "beta", t, Some(5), None);
        // A create for acme passed through; the child reports generation 6 and its new answer.
        c.changed(&s, "acme", Some(6), Some(Some(zone("dc1", &["region1", "dc1"]))));
        assert_eq!(c.get(&s, "acme").unwrap().unwrap().zone_name, "dc1", "precomputed");
        assert_eq!(c.get(&s, "beta"), Some(None), "the only change: other answers kept");
        // A poll at 6 changes nothing; an older poll result is ignored.
        c.observe(&s, 6);
        c.observe(&s, 4);
        assert!(c.get(&s, "beta").is_some());
        // Two more changes happened while ours did: everything else is dropped.
        c.changed(&s, "acme", Some(9), Some(None));
        assert_eq!(c.get(&s, "acme"), Some(None));
        assert_eq!(c.get(&s, "beta"), None);
        // A change reported without its answer forgets that client.
        c.changed(&s, "acme", Some(10), None);
        assert_eq!(c.get(&s, "acme"), None);
    }

    #[test]
    fn a_fetch_overtaken_by_a_change_is_not_stored() {
        let c = LookupCache::new(100);
        let s = Source::Child("r1".into());
        c.observe(&s, 1);
        let slow = c.ticket(&s);
        c.changed(&s, "acme", Some(2), Some(Some(zone("dc1", &["r1", "dc1"]))));
        // The slow fetch started before the change and answers what was true then.
        c.fetched(&s, "acme", slow, None, None);
        assert_eq!(c.get(&s, "acme").unwrap().unwrap().zone_name, "dc1", "the newer answer stays");
        // An answer from an older generation is never stored.
        let t = c.ticket(&s);
        c.fetched(&s, "zed", t, Some(1), None);
        assert_eq!(c.get(&s, "zed"), None);
    }

    #[test]
    fn own_bumps_keep_answers_and_forget_drops_them() {
        let c = LookupCache::new(100);
        c.observe(&Source::Local, 3);
        let t = c.ticket(&Source::Local);
        c.fetched(&Source::Local, "acme", t, Some(3), Some(zone("g", &["g"])));
        c.own_bump(&Source::Local, 4);
        assert!(c.get(&Source::Local, "acme").is_some());
        c.observe(&Source::Local, 4);
        assert!(c.get(&Source::Local, "acme").is_some(), "the bump was ours");
        c.forget(&Source::Local);
        assert_eq!(c.get(&Source::Local, "acme"), None);
    }
}
