//! The clients a `parent` account may see: a set of client-id patterns.
//!
//! A child zone gives its parent an account of role [`crate::Role::Parent`] limited to some
//! clients, so the parent (and every caller it forwards) sees and acts on those clients'
//! resources only. A pattern is a client id (`acme-1`, that client) or a client-id prefix ending
//! in `*` (`acme-*`, every client whose id starts with `acme-`; `*` alone, every client). Prefixes
//! only, no inner wildcards: two scopes then always intersect into a scope again
//! ([`ClientScope::intersect`]), which is what a zone needs when a limited parent's request
//! crosses a second limited link, and a pattern is cheap to test in SQL (`substr`).

use serde::{Deserialize, Serialize};

/// Patterns per scope: enough for a tenant list, small enough for one header.
pub const MAX_CLIENT_PATTERNS: usize = 64;

/// One pattern: a client id, or a prefix that ends in `*`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ClientPattern {
    Exact(String),
    Prefix(String),
}

impl ClientPattern {
    /// `text` as a pattern: a client id, optionally followed by one `*` (or `*` alone).
    pub fn parse(text: &str) -> Result<ClientPattern, String> {
        let text = text.trim();
        let bad = || {
            format!(
                "{text:?} is not a client-id pattern: use a client id (1 to 128 characters from A-Z, a-z, 0-9, '_', \
                 '.', ':' and '-'), optionally ending in '*' for every client id that starts with it"
            )
        };
        match text.strip_suffix('*') {
            Some(prefix) if prefix.is_empty() || crate::validate::valid_client_id(prefix) => {
                Ok(ClientPattern::Prefix(prefix.to_owned()))
            }
            Some(_) => Err(bad()),
            None if crate::validate::valid_client_id(text) => Ok(ClientPattern::Exact(text.to_owned())),
            None => Err(bad()),
        }
    }

    pub fn matches(&self, client_id: &str) -> bool {
        match self {
            ClientPattern::Exact(id) => id == client_id,
            ClientPattern::Prefix(p) => client_id.starts_with(p.as_str()),
        }
    }

    /// The clients both patterns match, as one pattern (none when they share no client).
    fn intersect(&self, other: &ClientPattern) -> Option<ClientPattern> {
        use ClientPattern::{Exact, Prefix};
        match (self, other) {
            (Exact(a), Exact(b)) => (a == b).then(|| self.clone()),
            (Exact(e), p @ Prefix(_)) | (p @ Prefix(_), Exact(e)) => p.matches(e).then(|| Exact(e.clone())),
            (Prefix(a), Prefix(b)) if a.starts_with(b.as_str()) => Some(self.clone()),
            (Prefix(a), Prefix(b)) if b.starts_with(a.as_str()) => Some(other.clone()),
            (Prefix(_), Prefix(_)) => None,
        }
    }
}

impl std::fmt::Display for ClientPattern {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ClientPattern::Exact(id) => f.write_str(id),
            ClientPattern::Prefix(p) => write!(f, "{p}*"),
        }
    }
}

/// A set of patterns; a client is in the scope when any pattern matches it. The empty scope
/// matches nobody (what is left when a limited parent forwards a member of another client).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default)]
pub struct ClientScope(Vec<ClientPattern>);

impl ClientScope {
    /// Parses a list of patterns as an account states them: 1 to [`MAX_CLIENT_PATTERNS`].
    pub fn parse<S: AsRef<str>>(patterns: &[S]) -> Result<ClientScope, String> {
        if patterns.is_empty() || patterns.len() > MAX_CLIENT_PATTERNS {
            return Err(format!("give 1 to {MAX_CLIENT_PATTERNS} client-id patterns, not {}", patterns.len()));
        }
        let parsed = patterns.iter().map(|p| ClientPattern::parse(p.as_ref())).collect::<Result<Vec<_>, _>>()?;
        Ok(ClientScope::of(parsed))
    }

    /// A scope of `patterns`, sorted and without duplicates.
    pub fn of(mut patterns: Vec<ClientPattern>) -> ClientScope {
        patterns.sort();
        patterns.dedup();
        ClientScope(patterns)
    }

    /// The scope as a header states it: patterns joined by `,` (an empty scope is empty).
    pub fn header_value(&self) -> String {
        self.0.iter().map(ToString::to_string).collect::<Vec<_>>().join(",")
    }

    /// The scope of a header's value (see [`ClientScope::header_value`]); empty is the empty scope.
    pub fn from_header(value: &str) -> Result<ClientScope, String> {
        if value.trim().is_empty() {
            return Ok(ClientScope::default());
        }
        let patterns: Vec<&str> = value.split(',').collect();
        if patterns.len() > MAX_CLIENT_PATTERNS {
            return Err(format!("more than {MAX_CLIENT_PATTERNS} client-id patterns"));
        }
        let parsed = patterns.iter().map(|p| ClientPattern::parse(p)).collect::<Result<Vec<_>, _>>()?;
        Ok(ClientScope::of(parsed))
    }

    pub fn matches(&self, client_id: &str) -> bool {
        self.0.iter().any(|p| p.matches(client_id))
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn patterns(&self) -> &[ClientPattern] {
        &self.0
    }

    /// The clients in both scopes. Bounded by [`MAX_CLIENT_PATTERNS`]: pairs that cannot overlap
    /// drop out, and what remains is no wider than either side.
    pub fn intersect(&self, other: &ClientScope) -> ClientScope {
        let mut out: Vec<ClientPattern> =
            self.0.iter().flat_map(|a| other.0.iter().filter_map(move |b| a.intersect(b))).collect();
        out.sort();
        out.dedup();
        // A pattern that a prefix of the set covers adds nothing: drop it. What remains can still
        // exceed the bound in theory (many exact ids under one wide prefix on each side); the
        // truncation then narrows, never widens.
        let covered = |p: &ClientPattern, all: &[ClientPattern]| {
            all.iter().any(|q| q != p && matches!(q, ClientPattern::Prefix(_)) && q.intersect(p).as_ref() == Some(p))
        };
        let mut kept: Vec<ClientPattern> = out.iter().filter(|p| !covered(p, &out)).cloned().collect();
        kept.truncate(MAX_CLIENT_PATTERNS);
        ClientScope(kept)
    }

    /// The patterns as text, as an account shows them.
    pub fn to_strings(&self) -> Vec<String> {
        self.0.iter().map(ToString::to_string).collect()
    }
}

impl Serialize for ClientScope {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.to_strings().serialize(s)
    }
}

impl<'de> Deserialize<'de> for ClientScope {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<ClientScope, D::Error> {
        let list = Vec::<String>::deserialize(d)?;
        ClientScope::parse(&list).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scope(p: &[&str]) -> ClientScope {
        ClientScope::parse(p).expect("valid patterns")
    }

    #[test]
    fn patterns_parse_as_ids_or_prefixes() {
        assert_eq!(ClientPattern::parse("acme-1"), Ok(ClientPattern::Exact("acme-1".into())));
        assert_eq!(ClientPattern::parse("acme-*"), Ok(ClientPattern::Prefix("acme-".into())));
        assert_eq!(ClientPattern::parse("*"), Ok(ClientPattern::Prefix(String::new())));
        for bad in ["", "a*b", "a**", "a b", "a,b", "%", "a_%*"] {
            assert!(ClientPattern::parse(bad).is_err(), "{bad:?} parsed");
        }
        assert!(ClientScope::parse::<&str>(&[]).is_err());
        let many: Vec<String> = (0..=MAX_CLIENT_PATTERNS).map(|i| format!("c{i}")).collect();
        assert!(ClientScope::parse(&many).is_err());
    }

    #[test]
    fn a_scope_matches_its_clients_only() {
        let s = scope(&["acme-*", "bob"]);
        assert!(s.matches("acme-1") && s.matches("acme-") && s.matches("bob"));
        assert!(!s.matches("bobby") && !s.matches("acm") && !s.matches("ACME-1"));
        assert!(!ClientScope::default().matches("acme-1"));
        assert!(scope(&["*"]).matches("anyone"));
    }

    #[test]
    fn scopes_intersect_to_what_both_allow() {
        assert_eq!(scope(&["acme-*"]).intersect(&scope(&["acme-eu-*"])), scope(&["acme-eu-*"]));
        assert_eq!(scope(&["acme-*"]).intersect(&scope(&["acme-1", "bob"])), scope(&["acme-1"]));
        assert!(scope(&["acme-*"]).intersect(&scope(&["bob-*"])).is_empty());
        assert_eq!(scope(&["*"]).intersect(&scope(&["x", "y-*"])), scope(&["x", "y-*"]));
        // Covered patterns drop out: "a*" ∩ {"ab*", "a*"} is "a*", not both.
        assert_eq!(scope(&["a*"]).intersect(&scope(&["ab*", "a*"])), scope(&["a*"]));
        // Whatever the pair, the result is no wider than either side.
        let (a, b) = (scope(&["a*", "b1", "c*"]), scope(&["ab*", "b*", "cd"]));
        let both = a.intersect(&b);
        for id in ["ab1", "b1", "b2", "cd", "c", "a1", "x"] {
            assert_eq!(both.matches(id), a.matches(id) && b.matches(id), "{id}");
        }
    }

    #[test]
    fn a_scope_survives_its_header() {
        let s = scope(&["acme-*", "bob", "*"]);
        assert_eq!(ClientScope::from_header(&s.header_value()), Ok(s));
        assert_eq!(ClientScope::from_header(""), Ok(ClientScope::default()));
        assert!(ClientScope::from_header("a,b c").is_err());
    }
}
