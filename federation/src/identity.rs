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

use api::federation::{CALLER_CLIENTS_HEADER, CALLER_CLIENT_HEADER, CALLER_ROLE_HEADER, CALLER_USER_HEADER};
use api::{ClientScope, ErrorCode, Role};

use crate::error::FedError;

/// The caller a zone acts for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    /// `username` for a local account; `username@zone` for a caller who entered elsewhere.
    pub username: String,
    pub role: Role,
    /// The member's client; `None` for admins and parents.
    pub client_id: Option<String>,
    /// A parent's clients (role [`Role::Parent`]); `None` for the other roles.
    pub clients: Option<ClientScope>,
}

impl Principal {
    pub fn admin(username: impl Into<String>) -> Principal {
        Principal { username: username.into(), role: Role::Admin, client_id: None, clients: None }
    }

    pub fn member(username: impl Into<String>, client_id: impl Into<String>) -> Principal {
        Principal { username: username.into(), role: Role::Member, client_id: Some(client_id.into()), clients: None }
    }

    pub fn parent(username: impl Into<String>, clients: ClientScope) -> Principal {
        Principal { username: username.into(), role: Role::Parent, client_id: None, clients: Some(clients) }
    }

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
        if let Some(scope) = &self.clients {
            h.push((CALLER_CLIENTS_HEADER.to_owned(), scope.header_value()));
        }
        h
    }

    /// Whether this caller may see and act on `client_id`'s resources.
    pub fn may_see(&self, client_id: &str) -> bool {
        sees(self.role, self.client_id.as_deref(), self.clients.as_ref(), client_id)
    }

    /// What this caller may see, as a cache key: two callers with the same key see the same
    /// instances (empty for admins).
    pub fn visibility_key(&self) -> String {
        match self.role {
            Role::Admin => String::new(),
            Role::Member => format!("member:{}", self.client_id.as_deref().unwrap_or_default()),
            Role::Parent => {
                format!("parent:{}", self.clients.as_ref().map(ClientScope::header_value).unwrap_or_default())
            }
        }
    }
}

/// The identity a request states, read from its headers by `get`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stated {
    pub role: Role,
    pub client_id: Option<String>,
    pub clients: Option<ClientScope>,
    pub user: Option<String>,
}

impl Stated {
    /// The stated identity, `None` when the request states none (it came from a client).
    pub fn from_headers<'a>(get: impl Fn(&str) -> Option<&'a str>) -> Result<Option<Stated>, FedError> {
        let Some(role) = get(CALLER_ROLE_HEADER) else {
            if get(CALLER_CLIENT_HEADER).is_some()
                || get(CALLER_USER_HEADER).is_some()
                || get(CALLER_CLIENTS_HEADER).is_some()
            {
                return Err(bad(format!(
                    "{CALLER_CLIENT_HEADER}, {CALLER_CLIENTS_HEADER} and {CALLER_USER_HEADER} need {CALLER_ROLE_HEADER}"
                )));
            }
            return Ok(None);
        };
        let role = Role::parse(role.trim())
            .ok_or_else(|| bad(format!("{CALLER_ROLE_HEADER}: {role:?} is not admin, member or parent")))?;
        let client_id = get(CALLER_CLIENT_HEADER).map(|c| c.trim().to_owned());
        if let Some(c) = &client_id {
            if !api::validate::valid_client_id(c) {
                return Err(bad(format!("{CALLER_CLIENT_HEADER}: {c:?} is not a client id")));
            }
        }
        if role == Role::Member && client_id.is_none() {
            return Err(bad(format!("{CALLER_ROLE_HEADER}: member needs {CALLER_CLIENT_HEADER}")));
        }
        let clients = get(CALLER_CLIENTS_HEADER)
            .map(|v| ClientScope::from_header(v).map_err(|e| bad(format!("{CALLER_CLIENTS_HEADER}: {e}"))))
            .transpose()?;
        match (role, &clients) {
            (Role::Parent, None) => {
                return Err(bad(format!("{CALLER_ROLE_HEADER}: parent needs {CALLER_CLIENTS_HEADER}")));
            }
            (Role::Admin | Role::Member, Some(_)) => {
                return Err(bad(format!("{CALLER_CLIENTS_HEADER}: only for {CALLER_ROLE_HEADER} parent")));
            }
            _ => {}
        }
        let user = get(CALLER_USER_HEADER).map(|u| u.trim().to_owned());
        if let Some(u) = &user {
            let ok = !u.is_empty() && u.len() <= 200 && u.chars().all(|c| c.is_ascii_graphic());
            if !ok {
                return Err(bad(format!("{CALLER_USER_HEADER}: not a user name")));
            }
        }
        Ok(Some(Stated { role, client_id, clients, user }))
    }
}

fn bad(message: String) -> FedError {
    FedError::api(ErrorCode::InvalidField, message)
}

/// Who a request acts for: the verified `account`, narrowed to what the request `stated`.
///
/// Only an admin or parent account may state a caller (a member's request that states one is
/// refused: it would be a member claiming to act for someone else), and a statement only ever
/// narrows:
/// - an admin account stating an admin stays admin; stating a member or a parent becomes it;
/// - a parent account (limited to its clients) stays a parent of at most those clients: stating
///   an admin changes nothing, stating a parent keeps the clients both allow
///   ([`ClientScope::intersect`]), stating a member of one of its clients becomes that member,
///   and stating a member of another client leaves a parent of no client, who sees nothing.
pub fn effective(account: Principal, stated: Option<Stated>) -> Result<Principal, FedError> {
    let Some(stated) = stated else { return Ok(account) };
    let username = stated.user.unwrap_or_else(|| account.username.clone());
    match account.role {
        Role::Member => Err(FedError::api(
            ErrorCode::Forbidden,
            "only an admin or parent account (as a parent zone registers with) may act on behalf of another caller",
        )),
        Role::Admin => Ok(match stated.role {
            Role::Admin => Principal::admin(username),
            Role::Member => Principal { username, role: Role::Member, client_id: stated.client_id, clients: None },
            Role::Parent => Principal::parent(username, stated.clients.unwrap_or_default()),
        }),
        Role::Parent => {
            let mine = account.clients.unwrap_or_default();
            Ok(match (stated.role, stated.client_id) {
                (Role::Admin, _) => Principal::parent(username, mine),
                (Role::Parent, _) => Principal::parent(username, mine.intersect(&stated.clients.unwrap_or_default())),
                (Role::Member, Some(client)) if mine.matches(&client) => Principal::member(username, client),
                (Role::Member, _) => Principal::parent(username, ClientScope::default()),
            })
        }
    }
}

/// Whether a caller of `role` (a member of `own_client`, a parent of `clients`) may see and act
/// on `client_id`'s resources: [`Principal::may_see`] for a caller not yet made a principal.
pub fn sees(role: Role, own_client: Option<&str>, clients: Option<&ClientScope>, client_id: &str) -> bool {
    match role {
        Role::Admin => true,
        Role::Member => own_client == Some(client_id),
        Role::Parent => clients.is_some_and(|s| s.matches(client_id)),
    }
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
        Principal::admin("parent-global")
    }

    #[test]
    fn a_member_forwarded_by_an_admin_parent_is_that_member() {
        let alice = Principal::member("alice", "acme");
        let headers = alice.headers("global");
        let s = stated(&headers.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect::<Vec<_>>()).unwrap();
        let p = effective(admin(), s).unwrap();
        assert_eq!(p, Principal::member("alice@global", "acme"));
        assert!(p.may_see("acme") && !p.may_see("other"));
        // Forwarded again, the user keeps its origin.
        assert!(p.headers("region1").contains(&(CALLER_USER_HEADER.to_owned(), "alice@global".to_owned())));
    }

    #[test]
    fn a_member_account_cannot_state_anyone() {
        let bob = Principal::member("bob", "b");
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

    fn scope(p: &[&str]) -> ClientScope {
        ClientScope::parse(p).expect("valid patterns")
    }

    fn pairs(h: &[(String, String)]) -> Vec<(&str, &str)> {
        h.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect()
    }

    /// What a zone whose account is `account` makes of `caller` forwarded by a zone named `origin`.
    fn forwarded(account: &Principal, caller: &Principal, origin: &str) -> Principal {
        let stated = stated(&pairs(&caller.headers(origin))).expect("a forwarded caller's headers parse");
        effective(account.clone(), stated).expect("an admin or parent account may state a caller")
    }

    #[test]
    fn a_parent_account_stays_within_its_clients() {
        let account = Principal::parent("global-parent", scope(&["acme-*"]));
        // The parent's admin: a parent of the account's clients, never an admin.
        let s =
            stated(&[(CALLER_ROLE_HEADER, "admin"), (CALLER_USER_HEADER, "root@global")]).expect("a valid statement");
        let p = effective(account.clone(), s).expect("a parent account may state an admin");
        assert_eq!(p, Principal::parent("root@global", scope(&["acme-*"])));
        assert!(p.may_see("acme-1") && !p.may_see("bob") && !p.is_admin());
        // A member of one of its clients: that member.
        let m = forwarded(&account, &Principal::member("al", "acme-1"), "g");
        assert_eq!(m, Principal::member("al@g", "acme-1"));
        // A member of another client: sees nothing.
        let other = forwarded(&account, &Principal::member("b", "bob"), "g");
        assert!(!other.may_see("bob") && !other.may_see("acme-1"));
        // A wider parent stated through it: narrowed to both.
        let wide = Principal::parent("p", scope(&["*"]));
        let narrowed = forwarded(&account, &wide, "g");
        assert_eq!(narrowed.clients, Some(scope(&["acme-*"])));
        // Its statement survives the next hop unchanged (an admin account below honours it).
        let below = forwarded(&Principal::admin("b"), &narrowed, "x");
        assert_eq!(below.clients, Some(scope(&["acme-*"])));
        assert_eq!(below.role, Role::Parent);
    }

    #[test]
    fn parent_statements_need_their_clients() {
        assert!(stated(&[(CALLER_ROLE_HEADER, "parent")]).is_err(), "a parent needs its clients");
        assert!(stated(&[(CALLER_ROLE_HEADER, "admin"), (CALLER_CLIENTS_HEADER, "a*")]).is_err());
        assert!(stated(&[(CALLER_ROLE_HEADER, "parent"), (CALLER_CLIENTS_HEADER, "a%")]).is_err());
        assert!(stated(&[(CALLER_CLIENTS_HEADER, "a*")]).is_err(), "clients without a role");
        let s = stated(&[(CALLER_ROLE_HEADER, "parent"), (CALLER_CLIENTS_HEADER, "a*,b")]).unwrap().unwrap();
        assert_eq!(s.clients, Some(scope(&["b", "a*"])));
    }
}
