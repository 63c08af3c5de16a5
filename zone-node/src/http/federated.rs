//! What the REST layer adds for federation: the headers that tell a forwarding parent this zone's
//! generation and lowest zone after a change. (Gateway errors become API errors through
//! `From<FedError> for crate::error::Error`.)

use axum::http::{HeaderMap, HeaderName, HeaderValue};

use api::federation::{GENERATION_HEADER, LOWEST_ZONE_HEADER};
use api::LowestZone;

/// The answer headers of a change: [`GENERATION_HEADER`] and [`LOWEST_ZONE_HEADER`], each when
/// known.
pub fn answer_headers(generation: Option<i64>, lowest: Option<&Option<LowestZone>>) -> HeaderMap {
    let mut h = HeaderMap::new();
    if let Some(g) = generation {
        h.insert(HeaderName::from_static(GENERATION_HEADER), HeaderValue::from(g));
    }
    let text = match lowest {
        Some(Some(z)) => serde_json::to_string(z).ok(),
        Some(None) => Some("none".to_owned()),
        None => None,
    };
    // A value with characters a header cannot hold is left out: the parent then asks.
    if let Some(v) = text.and_then(|t| HeaderValue::from_str(&t).ok()) {
        h.insert(HeaderName::from_static(LOWEST_ZONE_HEADER), v);
    }
    h
}
