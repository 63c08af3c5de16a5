//! Routing down the tree: which of this zone's own hosts and its children may take a request,
//! in which order.
//!
//! Candidates are this zone's own hosts (when its aggregate may satisfy the request) and every
//! routable child (online, not disabled) whose aggregate may satisfy it ([`crate::matching`]).
//! Each gets a score in [0, 1], its free memory relative to the roomiest candidate, and is ranked
//! `weight_offset + weight_scale × score`, as Nova zones did to make zones comparable (this zone's
//! own hosts have offset 0 and scale 1). The host itself is chosen by the lowest zone, as late as
//! possible: a parent picks a child, never a host below it.

use std::sync::Arc;

use api::{Aggregate, Requirement, Resources};

use crate::matching::{free_memory_mb, may_satisfy};
use crate::registry::Child;

/// Where a request may go.
#[derive(Debug, Clone)]
pub enum Target {
    /// This zone's own hosts.
    Local,
    Child(Arc<Child>),
}

#[derive(Debug, Clone)]
pub struct Candidate {
    pub target: Target,
    pub rank: f64,
}

impl Candidate {
    pub fn name<'a>(&'a self, own_name: &'a str) -> &'a str {
        match &self.target {
            Target::Local => own_name,
            Target::Child(c) => &c.name,
        }
    }
}

/// The candidates for a request, best first. Ties go to this zone's own hosts (fewer hops), then
/// by name, so the order is deterministic.
pub fn candidates(
    own: &Aggregate,
    children: &[Arc<Child>],
    requirements: &[Requirement],
    resources: &Resources,
) -> Vec<Candidate> {
    let mut found: Vec<(Target, f64, f64, f64)> = Vec::new();
    if may_satisfy(own, requirements, resources) {
        found.push((Target::Local, free_memory_mb(own), 0.0, 1.0));
    }
    for c in children.iter().filter(|c| c.routable()) {
        if may_satisfy(&c.capabilities, requirements, resources) {
            found.push((Target::Child(c.clone()), free_memory_mb(&c.capabilities), c.weight_offset, c.weight_scale));
        }
    }
    let roomiest = found.iter().map(|f| f.1).fold(0.0_f64, f64::max);
    let mut ranked: Vec<Candidate> = found
        .into_iter()
        .map(|(target, free, offset, scale)| {
            let score = if roomiest > 0.0 { free / roomiest } else { 0.0 };
            Candidate { target, rank: offset + scale * score }
        })
        .collect();
    ranked.sort_by(|a, b| {
        b.rank.total_cmp(&a.rank).then_with(|| match (&a.target, &b.target) {
            (Target::Local, Target::Local) => std::cmp::Ordering::Equal,
            (Target::Local, _) => std::cmp::Ordering::Less,
            (_, Target::Local) => std::cmp::Ordering::Greater,
            (Target::Child(x), Target::Child(y)) => x.name.cmp(&y.name),
        })
    });
    ranked
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::matching::{FREE_DISK_GB, FREE_MEMORY_MB, FREE_VCPUS};
    use crate::registry::tests::child;
    use api::{AggregateEntry, Op};

    fn room(mem: f64, hv: &str) -> Aggregate {
        let f = |v: f64| AggregateEntry::Float { min: v, max: v, sum: v, count: 1 };
        let mut a = Aggregate::new();
        a.insert(FREE_VCPUS.into(), f(8.0));
        a.insert(FREE_MEMORY_MB.into(), f(mem));
        a.insert(FREE_DISK_GB.into(), f(100.0));
        a.insert("hypervisor".into(), AggregateEntry::String { values: vec![hv.into()], count: 1, truncated: false });
        a
    }

    fn names(c: &[Candidate]) -> Vec<String> {
        c.iter().map(|c| c.name("me").to_owned()).collect()
    }

    #[test]
    fn only_children_that_may_satisfy_in_rank_order() {
        let mut a = child("a", "dc-a");
        a.capabilities = room(1000.0, "kvm");
        let mut b = child("b", "dc-b");
        b.capabilities = room(4000.0, "kvm");
        let mut x = child("x", "dc-xen");
        x.capabilities = room(8000.0, "xen");
        let mut off = child("o", "dc-off");
        off.capabilities = room(9000.0, "kvm");
        off.online = false;
        let kids: Vec<Arc<Child>> = [a, b, x, off].into_iter().map(Arc::new).collect();
        let kvm = vec![Requirement { key: "hypervisor".into(), op: Op::Eq, value: Some("kvm".into()) }];
        let c = candidates(&Aggregate::new(), &kids, &kvm, &Resources::default());
        assert_eq!(names(&c), ["dc-b", "dc-a"], "roomiest first; xen and offline children are not candidates");
        assert_eq!(c[0].rank, 1.0);
        assert_eq!(c[1].rank, 0.25);
    }

    #[test]
    fn offset_and_scale_reorder_and_local_wins_ties() {
        let mut a = child("a", "dc-a");
        a.capabilities = room(1000.0, "kvm");
        a.weight_offset = 2.0;
        let mut b = child("b", "dc-b");
        b.capabilities = room(1000.0, "kvm");
        b.weight_scale = 0.0;
        let kids: Vec<Arc<Child>> = [a, b].into_iter().map(Arc::new).collect();
        let c = candidates(&room(1000.0, "kvm"), &kids, &[], &Resources::default());
        assert_eq!(names(&c), ["dc-a", "me", "dc-b"]);
        let mut disabled = (*kids[0]).clone();
        disabled.disabled = true;
        let c = candidates(&room(1000.0, "kvm"), &[Arc::new(disabled)], &[], &Resources::default());
        assert_eq!(names(&c), ["me"], "disabled children are skipped");
    }
}
