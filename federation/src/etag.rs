//! The `ETag` of what a parent reads of a zone (`GET /v1/zone`, and the `digest` of a watch).
//!
//! One definition, so a zone's answer and anything that stands in for a zone (the in-process
//! zones of `bench-nova`) compute the same tag from the same parts.

use api::{Aggregate, ChildSummary, SubtreeEntry, SubtreeView};
use sha2::{Digest, Sha256};

/// Everything a poll records of a zone: the tag covers exactly these, not the nodes'
/// heartbeats, which move every second without changing anything a parent keeps.
pub struct ViewParts<'a> {
    pub zone_id: &'a str,
    pub view: Option<SubtreeView>,
    pub generation: i64,
    pub own: &'a Aggregate,
    pub capabilities: &'a Aggregate,
    pub children: &'a [ChildSummary],
    pub subtree: Option<&'a [SubtreeEntry]>,
}

/// A weak `ETag` (equal answers may differ in the heartbeats): the SHA-256 of the JSON of the
/// parts, truncated to 128 bits. Cost: one serialization of the answer.
pub fn weak(parts: &ViewParts<'_>) -> String {
    let body = serde_json::to_vec(&(
        parts.zone_id,
        parts.view.map(|v| v.as_str()),
        parts.generation,
        parts.own,
        parts.capabilities,
        parts.children,
        parts.subtree,
    ))
    .unwrap_or_default();
    let digest = Sha256::digest(&body);
    let hex: String = digest[..16].iter().map(|b| format!("{b:02x}")).collect();
    format!("W/\"{hex}\"")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_tag_moves_with_what_a_parent_records() {
        let agg = Aggregate::new();
        let parts = |generation| ViewParts {
            zone_id: "z",
            view: Some(SubtreeView::Cached),
            generation,
            own: &agg,
            capabilities: &agg,
            children: &[],
            subtree: Some(&[]),
        };
        let a = weak(&parts(1));
        assert!(a.starts_with("W/\"") && a.len() == 3 + 32 + 1, "{a}");
        assert_eq!(a, weak(&parts(1)));
        assert_ne!(a, weak(&parts(2)));
    }
}
