//! A child gives its parent an account of role `parent` limited to some clients (`client_ids`
//! patterns): what the parent, its admins and its members see and do through it is limited to
//! those clients, and the account manages nothing of the child. Real nodes in this process with
//! simulated hosts.

use std::time::Duration;

use agent_sim::profile::Profile;
use api::{AccountCreate, ClientError, ErrorCode, Role, ZoneCreate};

use crate::app::{small_instance, zone};

fn account(username: &str, role: Role, client_id: Option<&str>, client_ids: Option<&[&str]>) -> AccountCreate {
    AccountCreate {
        username: username.into(),
        password: format!("{username}-password-1"),
        role,
        client_id: client_id.map(Into::into),
        client_ids: client_ids.map(|c| c.iter().map(|s| s.to_string()).collect()),
    }
}

fn code(e: ClientError) -> (u16, ErrorCode) {
    match e {
        ClientError::Api { status, code, .. } => (status, code),
        other => panic!("not an API error: {other}"),
    }
}

fn sorted_ids(list: api::InstanceList) -> Vec<String> {
    let mut ids: Vec<String> = list.instances.into_iter().map(|i| i.id).collect();
    ids.sort();
    ids
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_parent_account_sees_and_acts_on_its_clients_only() {
    let (parent, child) = (zone(0, Profile::Uniform).await, zone(2, Profile::Uniform).await);

    // The child's operator: instances of three clients, and an account for the parent limited
    // to the `acme-` clients.
    let acme1 = child.admin.instance_create(&small_instance("a1", "acme-1")).await.expect("acme-1's instance");
    let acme2 = child.admin.instance_create(&small_instance("a2", "acme-2")).await.expect("acme-2's instance");
    let bob = child.admin.instance_create(&small_instance("b1", "bob")).await.expect("bob's instance");
    // Bad accounts are refused with what to fix.
    for (bad, why) in [
        (account("up", Role::Parent, None, None), "client_ids: required"),
        (account("up", Role::Parent, None, Some(&["acme-*x"])), "client_ids:"),
        (account("up", Role::Parent, None, Some(&[])), "client_ids:"),
        (account("up", Role::Parent, Some("acme-1"), Some(&["acme-*"])), "client_id:"),
        (account("up", Role::Member, Some("acme-1"), Some(&["acme-*"])), "client_ids: only"),
    ] {
        let e = child.admin.account_create(&bad).await.unwrap_err();
        let message = e.to_string();
        assert_eq!(code(e), (400, ErrorCode::InvalidField), "{bad:?}");
        assert!(message.contains(why), "{message} (wanted {why:?})");
    }
    let up = account("up", Role::Parent, None, Some(&["acme-*"]));
    let shown = child.admin.account_create(&up).await.expect("the parent account");
    assert_eq!((shown.role, shown.client_ids), (Role::Parent, Some(vec!["acme-*".to_owned()])));

    // The account itself: a parent of the acme clients, managing nothing.
    let (direct, token) = api::Client::new(&child.app.url).login("up", &up.password).await.expect("login as up");
    assert_eq!(token.roles, vec![Role::Parent]);
    assert_eq!(token.client_ids, Some(vec!["acme-*".to_owned()]));
    assert_eq!(code(direct.hosts().await.unwrap_err()), (403, ErrorCode::Forbidden), "hosts");
    assert_eq!(code(direct.accounts().await.unwrap_err()), (403, ErrorCode::Forbidden), "accounts");
    assert_eq!(code(direct.zones(false).await.unwrap_err()), (403, ErrorCode::Forbidden), "zones");
    assert_eq!(code(direct.instance(&bob.id).await.unwrap_err()), (404, ErrorCode::NotFound), "bob's by id");
    assert_eq!(code(direct.instance_delete(&bob.id).await.unwrap_err()), (404, ErrorCode::NotFound));
    assert_eq!(
        code(direct.instance_create(&small_instance("b2", "bob")).await.unwrap_err()),
        (403, ErrorCode::Forbidden),
        "a create for a client outside its patterns"
    );
    assert_eq!(code(direct.instances("client_id=bob").await.unwrap_err()), (403, ErrorCode::Forbidden));
    let mut acme = vec![acme1.id.clone(), acme2.id.clone()];
    acme.sort();
    assert_eq!(sorted_ids(direct.instances("limit=100").await.expect("list")), acme, "the acme clients only");
    // What a parent needs of a child it may do: the watch, the live subtree, the aggregate.
    direct.zone_watch(0, 100).await.expect("the watch");
    direct.zone_with(api::SubtreeView::Live).await.expect("the live subtree");

    // The parent links the child with that account, and sees the same through it.
    let name = child.admin.zone().await.expect("the child's zone").name;
    let link = ZoneCreate { username: "up".into(), password: up.password.clone(), ..child.app.as_child() };
    parent.admin.zone_create(&link).await.expect("zone-add with a parent account");
    let seen = test_support::poll_until(Duration::from_secs(30), Duration::from_millis(100), || async {
        let agg = parent.admin.capabilities().await.ok()?;
        (agg.get(federation::matching::FREE_VCPUS)?.count() == 2).then_some(())
    })
    .await;
    assert!(seen.is_some(), "the parent never saw its child's two hosts");
    let through = parent.admin.instances("limit=100").await.expect("list through the parent");
    assert!(through.unreachable_zones.is_empty(), "{:?}", through.unreachable_zones);
    assert_eq!(sorted_ids(through), acme, "the parent's admin sees the acme clients only");
    assert_eq!(code(parent.admin.instance(&bob.id).await.unwrap_err()), (404, ErrorCode::NotFound));
    assert_eq!(parent.admin.instance(&acme1.id).await.expect("acme-1's through the parent").id, acme1.id);
    assert_eq!(parent.admin.lowest_zone("bob").await.expect("lookup"), None, "bob is nobody's here");
    let lowest = parent.admin.lowest_zone("acme-1").await.expect("lookup").expect("acme-1 is managed");
    assert_eq!(lowest.zone_name, name, "{lowest:?}");

    // Creates through the parent: for an acme client they land in the child; for bob the child
    // refuses, and nothing is made.
    let made = parent.admin.instance_create(&small_instance("a3", "acme-3")).await.expect("acme-3 through the parent");
    assert_eq!(made.zone_path.last(), Some(&name));
    let e = parent.admin.instance_create(&small_instance("b3", "bob")).await.unwrap_err();
    assert_eq!(code(e).1, ErrorCode::Forbidden);
    assert_eq!(child.admin.instances("client_id=bob").await.expect("bob's at the child").instances.len(), 1);
    parent.admin.instance_delete(&made.id).await.expect("acme-3's delete through the parent");

    // The parent's members: one of an acme client sees its own; bob's member sees nothing.
    for (user, client) in [("al", "acme-1"), ("bo", "bob")] {
        parent.admin.account_create(&account(user, Role::Member, Some(client), None)).await.expect("a member");
    }
    let (al, _) = api::Client::new(&parent.app.url).login("al", "al-password-1").await.expect("al");
    assert_eq!(sorted_ids(al.instances("limit=100").await.expect("al's list")), vec![acme1.id.clone()]);
    let (bo, _) = api::Client::new(&parent.app.url).login("bo", "bo-password-1").await.expect("bo");
    assert!(bo.instances("limit=100").await.expect("bo's list").instances.is_empty(), "bob's member sees nothing");
    assert_eq!(code(bo.instance(&bob.id).await.unwrap_err()), (404, ErrorCode::NotFound));

    // Hosts are the child's own business: the parent's host list names the child as unreachable.
    let hosts = parent.admin.hosts().await.expect("hosts through the parent");
    assert!(hosts.hosts.is_empty() && hosts.unreachable_zones == vec![name.clone()], "{hosts:?}");

    // The child's operator ends the link by deleting the account: the parent's polls fail and it
    // marks the child offline.
    child.admin.account_delete("up").await.expect("delete the parent account");
    let offline = test_support::poll_until(Duration::from_secs(30), Duration::from_millis(100), || async {
        let zones = parent.admin.zones(false).await.ok()?;
        zones.zones.iter().any(|z| z.name == name && z.status == api::ZoneStatus::Offline).then_some(())
    })
    .await;
    assert!(offline.is_some(), "the parent still counts on a child whose account is gone");
    assert!(parent.admin.instances("limit=100").await.expect("list").instances.is_empty());

    parent.stop().await;
    child.stop().await;
}
