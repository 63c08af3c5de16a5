//! Who a request acts for, across zones.
//!
//! A parent forwards a request to a child with the credentials given at zone-add (an admin
//! account of the child that the child's operator created for the parent) and states the
//! original caller in [`api::federation::CALLER_ROLE_HEADER`] and its siblings. The child
//! verifies the parent's token itself, honours the stated identity only from an admin account,
//! and only to narrow it: an admin parent may act as one of its members, never the other way
//! round. So a member's request is scoped to that member's client at every zone it crosses, and a
//! child never trusts an identity it did not verify: at worst a parent's account can do what the
//! child's operator allowed it to do.

use api::federation::{CALLER_CLIENT_HEADER, CALLER_ROLE_HEADER, CALLER_USER_HEADER};
use api::{ErrorCode, Role};

use crate::error::FedError;

/// The caller a zone acts for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    /// `username` for a local account; `username@zone` for a caller who entered elsewhere.
    pub username: String,
    pub role: Role,
    /// The member's client; `None` for admins.
    pub client_id: Option<String>,
}

impl Principal {
    pub fn is_admin(&self) -> bool {
        self.role == Role::Admin
    }

    /// The headers that state this caller to a child. `origin` is the name of the zone the caller
    /// entered through, added to a local username.
    pub fn headers(&self, origin: &str) -> Vec<(String, String)> {
        let user =
            if self.username.contains('@') { self.username.clone() } else { format!("{}@{origin}", self.username) };
        let mut h =
            vec![(CALLER_ROLE_HEADER.to_owned(), self.role.as_str().to_owned()), (CALLER_USER_HEADER.to_owned(), user)];
        if let Some(c) = &self.client_id {
            h.push((CALLER_CLIENT_HEADER.to_owned(), c.clone()));
        }
        h
    }

    /// Whether this caller may see and act on `client_id`'s resources.
    pub fn may_see(&self, client_id: &str) -> bool {
        self.is_admin() || self.client_id.as_deref() == Some(client_id)
    }
}

/// The identity a request states, read from its headers by `get`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stated {
    pub role: Role,
    pub client_id: Option<String>,
    pub user: Option<String>,
}

impl Stated {
    /// The stated identity, `None` when the request states none (it came from a client).
    pub fn from_headers<'a>(get: impl Fn(&str) -> Option<&'a str>) -> Result<Option<Stated>, FedError> {
        let Some(role) = get(CALLER_ROLE_HEADER) else {
            if get(CALLER_CLIENT_HEADER).is_some() || get(CALLER_USER_HEADER).is_some() {
                return Err(bad(format!("{CALLER_CLIENT_HEADER} and {CALLER_USER_HEADER} need {CALLER_ROLE_HEADER}")));
            }
            return Ok(None);
        };
        let role = Role::parse(role.trim())
            .ok_or_else(|| bad(format!("{CALLER_ROLE_HEADER}: {role:?} is not admin or member")))?;
        let client_id = get(CALLER_CLIENT_HEADER).map(|c| c.trim().to_owned());
        if let Some(c) = &client_id {
            if !api::validate::valid_client_id(c) {
                return Err(bad(format!("{CALLER_CLIENT_HEADER}: {c:?} is not a client id")));
            }
        }
        if role == Role::Member && client_id.is_none() {
            return Err(bad(format!("{CALLER_ROLE_HEADER}: member needs {CALLER_CLIENT_HEADER}")));
        }
        let user = get(CALLER_USER_HEADER).map(|u| u.trim().to_owned());
        if let Some(u) = &user {
            let ok = !u.is_empty() && u.len() <= 200 && u.chars().all(|c| c.is_ascii_graphic());
            if !ok {
                return Err(bad(format!("{CALLER_USER_HEADER}: not a user name")));
            }
        }
        Ok(Some(Stated { role, client_id, user }))
    }
}

fn bad(message: String) -> FedError {
    FedError::api(ErrorCode::InvalidField, message)
}

/// Who a request acts for: the verified `account`, narrowed to what the request `stated`.
///
/// Only an admin account may state a caller (a member's request that states one is refused: it
/// would be a member claiming to act for someone else). An admin stating an admin stays admin; an
/// admin stating a member becomes that member.
pub fn effective(account: Principal, stated: Option<Stated>) -> Result<Principal, FedError> {
    let Some(stated) = stated else { return Ok(account) };
    if !account.is_admin() {
        return Err(FedError::api(
            ErrorCode::Forbidden,
            "only an admin account (as a parent zone registers with) may act on behalf of another caller",
        ));
    }
    let username = stated.user.unwrap_or_else(|| account.username.clone());
    Ok(match stated.role {
        Role::Admin => Principal { username, role: Role::Admin, client_id: None },
        Role::Member => Principal { username, role: Role::Member, client_id: stated.client_id },
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use api::CodedError;
    use std::collections::HashMap;

    fn stated(pairs: &[(&str, &str)]) -> Result<Option<Stated>, FedError> {
        let map: HashMap<String, String> = pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        Stated::from_headers(|name| map.get(name).map(String::as_str))
    }

    fn admin() -> Principal {
        Principal { username: "parent-global".into(), role: Role::Admin, client_id: None }
    }

    #[test]
    fn a_member_forwarded_by_an_admin_parent_is_that_member() {
        let alice = Principal { username: "alice".into(), role: Role::Member, client_id: Some("acme".into()) };
        let headers = alice.headers("global");
        let s = stated(&headers.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect::<Vec<_>>()).unwrap();
        let p = effective(admin(), s).unwrap();
        assert_eq!(
            p,
            Principal { username: "alice@global".into(), role: Role::Member, client_id: Some("acme".into()) }
        );
        assert!(p.may_see("acme") && !p.may_see("other"));
        // Forwarded again, the user keeps its origin.
        assert!(p.headers("region1").contains(&(CALLER_USER_HEADER.to_owned(), "alice@global".to_owned())));
    }

    #[test]
    fn a_member_account_cannot_state_anyone() {
        let bob = Principal { username: "bob".into(), role: Role::Member, client_id: Some("b".into()) };
        let s = stated(&[(CALLER_ROLE_HEADER, "admin")]).unwrap();
        assert_eq!(effective(bob.clone(), s).unwrap_err().code(), ErrorCode::Forbidden);
        assert_eq!(effective(bob.clone(), None).unwrap(), bob, "no statement: the account itself");
    }

    #[test]
    fn malformed_statements_are_refused() {
        assert_eq!(stated(&[(CALLER_ROLE_HEADER, "root")]).unwrap_err().code(), ErrorCode::InvalidField);
        assert!(stated(&[(CALLER_ROLE_HEADER, "member")]).is_err(), "a member needs a client");
        assert!(stated(&[(CALLER_CLIENT_HEADER, "acme")]).is_err(), "a client without a role");
        assert!(stated(&[(CALLER_ROLE_HEADER, "member"), (CALLER_CLIENT_HEADER, "a/b")]).is_err());
        assert_eq!(stated(&[]).unwrap(), None);
    }
}
