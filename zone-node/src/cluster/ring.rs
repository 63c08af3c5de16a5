//! The consistent-hashing ring of a zone's management nodes.
//!
//! Built on the `hashring` crate with virtual nodes. Only stable strings are hashed: a virtual
//! node is `"<node-uuid>#<replica>"` and a key is the resource id text, both written to the
//! hasher as raw bytes (see [`RingKey`]), so every build and every node computes the same owner.

use std::hash::{Hash, Hasher};

use hashring::HashRing;
use uuid::Uuid;

/// A string hashed as its bytes and nothing else (std's `str` hash appends a 0xff terminator,
/// an implementation detail we do not want the wire to depend on).
#[derive(Debug, Clone, PartialEq, Eq)]
struct RingKey(String);

impl Hash for RingKey {
    fn hash<H: Hasher>(&self, state: &mut H) {
        state.write(self.0.as_bytes());
    }
}

/// A virtual node: its hashed text and the node it stands for.
#[derive(Debug, Clone)]
struct VNode {
    key: RingKey,
    node: Uuid,
}

impl Hash for VNode {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.key.hash(state)
    }
}

/// An immutable ring over a set of nodes. Rebuilt (cheaply) whenever membership changes.
#[derive(Clone)]
pub struct Ring {
    ring: HashRing<VNode>,
    nodes: Vec<Uuid>,
}

impl std::fmt::Debug for Ring {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ring").field("nodes", &self.nodes).finish()
    }
}

impl Ring {
    /// A ring of `nodes`, each with `virtual_nodes` points.
    pub fn new(nodes: impl IntoIterator<Item = Uuid>, virtual_nodes: u32) -> Ring {
        let mut nodes: Vec<Uuid> = nodes.into_iter().collect();
        nodes.sort();
        nodes.dedup();
        let mut ring = HashRing::new();
        for node in &nodes {
            for replica in 0..virtual_nodes {
                ring.add(VNode { key: RingKey(format!("{node}#{replica}")), node: *node });
            }
        }
        Ring { ring, nodes }
    }

    /// The node that owns `key`, or `None` on an empty ring.
    pub fn owner(&self, key: &str) -> Option<Uuid> {
        self.ring.get(&RingKey(key.to_owned())).map(|v| v.node)
    }

    /// The nodes on the ring, sorted.
    pub fn nodes(&self) -> &[Uuid] {
        &self.nodes
    }

    pub fn contains(&self, node: Uuid) -> bool {
        self.nodes.binary_search(&node).is_ok()
    }

    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ids(n: usize) -> Vec<Uuid> {
        (0..n).map(|i| Uuid::from_u128(0x1234_5678_0000_4000_8000_0000_0000_0000 + i as u128)).collect()
    }

    #[test]
    fn same_members_same_owners_whatever_the_order() {
        let nodes = ids(3);
        let a = Ring::new(nodes.clone(), 128);
        let b = Ring::new(nodes.iter().rev().copied(), 128);
        for i in 0..2000 {
            let key = Uuid::from_u128(i * 7919).to_string();
            assert_eq!(a.owner(&key), b.owner(&key));
        }
    }

    const PINNED: [usize; 8] = [2, 0, 2, 2, 1, 0, 1, 0];

    #[test]
    fn owners_are_pinned_across_builds() {
        // Pinned values: if these change, every running zone would disagree with a new build.
        let ring = Ring::new(ids(3), 128);
        let owners: Vec<usize> = (1..=8u128)
            .map(|i| Uuid::from_u128(0x0000_0000_0000_4000_8000_0000_0000_0000 + i).to_string())
            .map(|k| ids(3).iter().position(|n| Some(*n) == ring.owner(&k)).unwrap())
            .collect();
        assert_eq!(owners, PINNED, "ring placement changed: nodes of different builds would disagree");
    }

    #[test]
    fn adding_a_fourth_node_moves_about_a_quarter() {
        let three = Ring::new(ids(3), 128);
        let four = Ring::new(ids(4), 128);
        let new = ids(4)[3];
        let keys: Vec<String> =
            (0..10_000u128).map(|i| Uuid::from_u128(i.wrapping_mul(0x9E37_79B9_7F4A_7C15)).to_string()).collect();
        let mut moved = 0;
        for k in &keys {
            let before = three.owner(k).unwrap();
            let after = four.owner(k).unwrap();
            if before != after {
                assert_eq!(after, new, "a key moved between two old nodes");
                moved += 1;
            }
        }
        let share = moved as f64 / keys.len() as f64;
        assert!((0.20..=0.30).contains(&share), "new node took {share}");
    }

    #[test]
    fn empty_ring_has_no_owner() {
        assert_eq!(Ring::new([], 128).owner("x"), None);
    }
}
