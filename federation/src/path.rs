//! The path of zones a forwarded request has crossed ([`api::federation::ZONE_PATH_HEADER`]).
//!
//! Zone-add refuses a child whose subtree holds this zone, but two operators adding each other's
//! zones at the same moment, or a subtree that changes after the check, can still close a loop.
//! Every forwarded request therefore carries the ids of the zones it crossed; a zone refuses a
//! request that already crossed it, or that has made as many hops as the limit allows. A loop
//! thus costs one refused request, never a request bouncing until something times out.

use crate::error::FedError;

/// Most entries a path header may hold, whatever the configured hop limit: a bound on the work
/// a malformed header can cause.
pub const MAX_PATH_ENTRIES: usize = 64;

/// Zone ids crossed so far, the zone the request entered first.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ZonePath(Vec<String>);

impl ZonePath {
    /// The path of a request that came straight from a client.
    pub fn empty() -> ZonePath {
        ZonePath(Vec::new())
    }

    /// Parses the header value: comma-separated zone ids. An id is 1 to 64 characters of
    /// `[A-Za-z0-9-]` (zone ids are UUIDs).
    pub fn parse(header: Option<&str>) -> Result<ZonePath, FedError> {
        let Some(text) = header.map(str::trim).filter(|t| !t.is_empty()) else {
            return Ok(ZonePath::empty());
        };
        let ids: Vec<String> = text.split(',').map(|s| s.trim().to_owned()).collect();
        if ids.len() > MAX_PATH_ENTRIES {
            return Err(FedError::HopLimit(format!(
                "the request has crossed {} zones, more than any hop limit allows ({MAX_PATH_ENTRIES})",
                ids.len()
            )));
        }
        for id in &ids {
            let ok = !id.is_empty() && id.len() <= 64 && id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-');
            if !ok {
                return Err(FedError::api(
                    api::ErrorCode::InvalidField,
                    format!("{}: {id:?} is not a zone id", api::federation::ZONE_PATH_HEADER),
                ));
            }
        }
        Ok(ZonePath(ids))
    }

    /// Checks that zone `me` may take the request: it has not crossed `me` yet, and fewer than
    /// `hop_limit` zones forwarded it.
    pub fn admit(&self, me: &str, hop_limit: usize) -> Result<(), FedError> {
        if let Some(at) = self.0.iter().position(|z| z == me) {
            return Err(FedError::Loop(format!(
                "the request came back to zone {me} after crossing {} (zones {}): the federation has a loop; \
                 remove one of the zone registrations that close it",
                self.0.len() - at,
                self.0[at..].join(" -> ")
            )));
        }
        if self.0.len() >= hop_limit {
            return Err(FedError::HopLimit(format!(
                "the request has crossed {} zones, the hop limit of zone {me} is {hop_limit}",
                self.0.len()
            )));
        }
        Ok(())
    }

    /// The path a zone `me` sends onwards: this one with `me` at the end.
    pub fn through(&self, me: &str) -> ZonePath {
        let mut ids = self.0.clone();
        ids.push(me.to_owned());
        ZonePath(ids)
    }

    pub fn header_value(&self) -> String {
        self.0.join(",")
    }

    pub fn ids(&self) -> &[String] {
        &self.0
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use api::CodedError;

    #[test]
    fn parse_and_round_trip() {
        assert_eq!(ZonePath::parse(None).unwrap(), ZonePath::empty());
        assert_eq!(ZonePath::parse(Some("  ")).unwrap(), ZonePath::empty());
        let p = ZonePath::parse(Some("a-1, b-2")).unwrap();
        assert_eq!(p.ids(), ["a-1", "b-2"]);
        assert_eq!(p.through("c").header_value(), "a-1,b-2,c");
        assert_eq!(ZonePath::parse(Some("a,,b")).unwrap_err().code(), api::ErrorCode::InvalidField);
        assert_eq!(ZonePath::parse(Some("a;drop")).unwrap_err().code(), api::ErrorCode::InvalidField);
        let long = vec!["z"; MAX_PATH_ENTRIES + 1].join(",");
        assert_eq!(ZonePath::parse(Some(&long)).unwrap_err().code(), api::ErrorCode::HopLimitExceeded);
    }

    #[test]
    fn loops_and_hop_limits_are_refused() {
        let p = ZonePath::parse(Some("g,r1,dc1")).unwrap();
        assert!(p.admit("h1", 8).is_ok());
        let e = p.admit("r1", 8).unwrap_err();
        assert_eq!(e.code(), api::ErrorCode::ZoneLoop);
        assert!(e.to_string().contains("r1 -> dc1"), "{e}");
        assert_eq!(p.admit("h1", 3).unwrap_err().code(), api::ErrorCode::HopLimitExceeded);
        assert!(ZonePath::empty().admit("g", 1).is_ok(), "a client's request is always admitted");
    }
}
