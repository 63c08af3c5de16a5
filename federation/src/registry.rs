//! This zone's children as the gateway sees them: what the last poll learnt, and the credentials
//! to reach them.
//!
//! The registry is a snapshot replaced as a whole (`zone-node` rebuilds it from its database when
//! a child is added, changed, deleted or polled, on every node of the zone), so a request works on
//! one consistent view and never waits for a poll: start-up and requests never block on a child.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, RwLock};

use api::{Aggregate, SubtreeEntry, ZoneStatus};

/// How a gateway logs in to a child. The password never appears in `Debug` output.
#[derive(Clone, PartialEq, Eq)]
pub struct Credentials {
    pub username: String,
    password: String,
}

impl Credentials {
    pub fn new(username: impl Into<String>, password: impl Into<String>) -> Credentials {
        Credentials { username: username.into(), password: password.into() }
    }

    pub fn password(&self) -> &str {
        &self.password
    }
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials").field("username", &self.username).field("password", &"<redacted>").finish()
    }
}

/// One child zone.
#[derive(Debug, Clone, PartialEq)]
pub struct Child {
    /// The child's own zone id.
    pub id: String,
    pub name: String,
    pub api_url: String,
    pub credentials: Credentials,
    /// Online or offline, from polling; disabled is the separate flag below.
    pub online: bool,
    pub disabled: bool,
    pub weight_offset: f64,
    pub weight_scale: f64,
    /// The child's aggregate (its whole subtree) at the last good poll.
    pub capabilities: Aggregate,
    /// The aggregate of the child's own hosts alone, when it reports it (with the subtree's
    /// per-zone aggregates, what [`Registry::merged`] sums per zone id).
    pub own_capabilities: Option<Aggregate>,
    /// The child's generation at the last good poll.
    pub generation: i64,
    /// The zones below the child, at the last good poll.
    pub subtree: Vec<SubtreeEntry>,
}

impl Child {
    /// A child as zone-add registers it: online, enabled, default weights, nothing learnt from a
    /// poll yet (no aggregate, generation 0, no subtree).
    pub fn registered(
        id: impl Into<String>,
        name: impl Into<String>,
        api_url: impl Into<String>,
        credentials: Credentials,
    ) -> Child {
        Child {
            id: id.into(),
            name: name.into(),
            api_url: api_url.into(),
            credentials,
            online: true,
            disabled: false,
            weight_offset: 0.0,
            weight_scale: 1.0,
            capabilities: Aggregate::new(),
            own_capabilities: None,
            generation: 0,
            subtree: Vec::new(),
        }
    }

    /// New placements may go to it.
    pub fn routable(&self) -> bool {
        self.online && !self.disabled
    }

    /// The status shown to operators.
    pub fn status(&self) -> ZoneStatus {
        match (self.disabled, self.online) {
            (true, _) => ZoneStatus::Disabled,
            (false, true) => ZoneStatus::Online,
            (false, false) => ZoneStatus::Offline,
        }
    }
}

/// One consistent view: the children, their aggregates merged per zone id, and where each zone
/// below lies.
#[derive(Debug, Default)]
struct View {
    children: Arc<Vec<Arc<Child>>>,
    merged: Arc<Aggregate>,
    paths: Arc<ZonePaths>,
}

/// Every zone below this one by id: the paths of zone names (from a child down) that reach it;
/// more than one in a diamond.
pub type ZonePaths = HashMap<String, Vec<Vec<String>>>;

/// [`ZonePaths`] of a set of children. Cost: O(subtree entries), paid when the view is replaced,
/// so a lookup that must tell whether one answer lies below another reads a map instead of
/// copying the whole subtree (with its aggregates) per request.
fn paths_by_id(children: &[Arc<Child>]) -> ZonePaths {
    let mut paths = ZonePaths::new();
    for c in children {
        paths.entry(c.id.clone()).or_default().push(vec![c.name.clone()]);
        for e in &c.subtree {
            let mut path = Vec::with_capacity(e.path.len() + 1);
            path.push(c.name.clone());
            path.extend(e.path.iter().cloned());
            paths.entry(e.id.clone()).or_default().push(path);
        }
    }
    paths
}

/// The current set of children. Cheap to read: a request clones one `Arc`.
#[derive(Debug)]
pub struct Registry {
    // A std lock: held only to swap or clone an Arc, never across an await.
    view: RwLock<View>,
    /// Bumped on every replacement, so requests in flight learn of a child going offline.
    replaced: tokio::sync::watch::Sender<u64>,
}

impl Default for Registry {
    fn default() -> Registry {
        Registry { view: RwLock::default(), replaced: tokio::sync::watch::Sender::new(0) }
    }
}

/// The routable children's aggregates merged **per zone id**: each zone's own hosts counted once,
/// however many paths lead to it (a diamond: root → region → dc and root → dc). A child that
/// does not report its own aggregate counts as its whole subtree, once, and its subtree's zones
/// are taken as counted. Zones whose path is offline or disabled carry no aggregate in the
/// subtree and count only through another path. Min/max, any/all and string values are the
/// same either way; it is sums and counts that a second path would inflate.
///
/// Cost: O(subtree entries × keys), paid when the view is replaced, not per request.
fn merge_per_zone(children: &[Arc<Child>]) -> Aggregate {
    let mut seen: HashSet<&str> = HashSet::new();
    let mut agg = Aggregate::new();
    for c in children.iter().filter(|c| c.routable()) {
        match &c.own_capabilities {
            Some(own) => {
                if seen.insert(&c.id) {
                    api::merge_aggregates(&mut agg, own);
                }
                for e in &c.subtree {
                    if let Some(caps) = &e.capabilities {
                        if seen.insert(&e.id) {
                            api::merge_aggregates(&mut agg, caps);
                        }
                    }
                }
            }
            None => {
                if seen.insert(&c.id) {
                    api::merge_aggregates(&mut agg, &c.capabilities);
                }
                seen.extend(c.subtree.iter().map(|e| e.id.as_str()));
            }
        }
    }
    agg
}

impl Registry {
    pub fn new() -> Registry {
        Registry::default()
    }

    /// Replaces the whole set (sorted by name), returning the ids that were there before and are
    /// not any more.
    pub fn replace(&self, mut children: Vec<Child>) -> Vec<String> {
        children.sort_by(|a, b| a.name.cmp(&b.name));
        let new: Arc<Vec<Arc<Child>>> = Arc::new(children.into_iter().map(Arc::new).collect());
        let merged = Arc::new(merge_per_zone(&new));
        let paths = Arc::new(paths_by_id(&new));
        let mut guard = self.view.write().unwrap_or_else(|e| e.into_inner());
        let removed =
            guard.children.iter().filter(|old| !new.iter().any(|c| c.id == old.id)).map(|c| c.id.clone()).collect();
        *guard = View { children: new, merged, paths };
        drop(guard);
        self.replaced.send_modify(|n| *n += 1);
        removed
    }

    /// A receiver that sees every replacement of the view (a poll recorded, a child added...).
    pub fn replacements(&self) -> tokio::sync::watch::Receiver<u64> {
        self.replaced.subscribe()
    }

    /// Resolves once child `id` is offline or gone from the registry (never, while it is online).
    pub async fn went_offline(&self, id: &str) {
        let mut replaced = self.replaced.subscribe();
        loop {
            if self.get(id).is_none_or(|c| !c.online) {
                return;
            }
            if replaced.changed().await.is_err() {
                return std::future::pending().await;
            }
        }
    }

    /// All children, by name.
    pub fn children(&self) -> Arc<Vec<Arc<Child>>> {
        self.view.read().unwrap_or_else(|e| e.into_inner()).children.clone()
    }

    /// The routable children's aggregates, merged per zone id (see [`merge_per_zone`]).
    pub fn merged(&self) -> Arc<Aggregate> {
        self.view.read().unwrap_or_else(|e| e.into_inner()).merged.clone()
    }

    /// Where each zone below lies (see [`ZonePaths`]).
    pub fn paths(&self) -> Arc<ZonePaths> {
        self.view.read().unwrap_or_else(|e| e.into_inner()).paths.clone()
    }

    pub fn get(&self, id: &str) -> Option<Arc<Child>> {
        self.children().iter().find(|c| c.id == id).cloned()
    }

    pub fn is_empty(&self) -> bool {
        self.children().is_empty()
    }

    /// Every zone below this one: each child, then its subtree with the child's name in front,
    /// at most [`api::federation::SUBTREE_MAX_ENTRIES`]. Each entry carries its zone's own
    /// aggregate when it counts through this path (the child is routable; see
    /// [`SubtreeEntry::capabilities`]).
    pub fn subtree(&self) -> Vec<SubtreeEntry> {
        let mut out = Vec::new();
        for c in self.children().iter() {
            let counts = c.routable();
            let own = if counts { c.own_capabilities.clone() } else { None };
            out.push(SubtreeEntry {
                id: c.id.clone(),
                name: c.name.clone(),
                path: vec![c.name.clone()],
                capabilities: own,
                api_url: Some(c.api_url.clone()),
            });
            for e in &c.subtree {
                let mut path = Vec::with_capacity(e.path.len() + 1);
                path.push(c.name.clone());
                path.extend(e.path.iter().cloned());
                let capabilities = if counts { e.capabilities.clone() } else { None };
                out.push(SubtreeEntry {
                    id: e.id.clone(),
                    name: e.name.clone(),
                    path,
                    capabilities,
                    api_url: e.api_url.clone(),
                });
            }
        }
        out.truncate(api::federation::SUBTREE_MAX_ENTRIES);
        out
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub fn child(id: &str, name: &str) -> Child {
        Child::registered(id, name, format!("http://{name}"), Credentials::new("admin", "secret-password"))
    }

    /// region1 (r1) with dc1 (d1) below it.
    fn region_with_dc() -> Child {
        let mut region = child("r1", "region1");
        region.subtree = vec![SubtreeEntry {
            id: "d1".into(),
            name: "dc1".into(),
            path: vec!["dc1".into()],
            capabilities: None,
            api_url: None,
        }];
        region
    }

    #[test]
    fn replace_reports_removed_children_and_subtree_prefixes_names() {
        let r = Registry::new();
        assert!(r.replace(vec![child("r2", "region2"), region_with_dc()]).is_empty());
        assert_eq!(r.children()[0].name, "region1", "sorted by name");
        let names: Vec<Vec<String>> = r.subtree().into_iter().map(|e| e.path).collect();
        assert_eq!(
            names,
            vec![vec!["region1".to_string()], vec!["region1".into(), "dc1".into()], vec!["region2".into()]]
        );
        assert_eq!(r.replace(vec![child("r2", "region2")]), vec!["r1".to_string()]);
        assert!(r.get("r1").is_none() && r.get("r2").is_some());
    }

    #[test]
    fn paths_name_every_way_to_a_zone_and_follow_replace() {
        let r = Registry::new();
        // A diamond: dc1 also directly below this zone.
        r.replace(vec![region_with_dc(), child("d1", "dc1")]);
        let paths = r.paths();
        let mut to_dc: Vec<Vec<String>> = paths["d1"].clone();
        to_dc.sort();
        assert_eq!(to_dc, vec![vec!["dc1".to_string()], vec!["region1".into(), "dc1".into()]]);
        assert_eq!(paths["r1"], vec![vec!["region1".to_string()]]);
        r.replace(vec![child("r2", "region2")]);
        assert!(r.paths().get("d1").is_none(), "a removed child's zones are gone");
    }

    #[test]
    fn status_and_debug_hide_the_password() {
        let mut c = child("1", "dc1");
        assert_eq!(c.status(), ZoneStatus::Online);
        c.online = false;
        assert_eq!(c.status(), ZoneStatus::Offline);
        c.disabled = true;
        assert_eq!(c.status(), ZoneStatus::Disabled);
        assert!(!c.routable());
        assert!(!format!("{c:?}").contains("secret-password"));
    }
}
