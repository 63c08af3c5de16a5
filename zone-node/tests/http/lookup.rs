//! `GET /v1/clients/{id}/zone` answered from the rendered-answer cache: each change shows at
//! once, and a caller who may not see the client never gets another caller's rendered answer.

use std::time::Duration;

use agent_sim::profile::Profile;
use api::Role;

use crate::app::{small_instance, zone};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rendered_lookup_follows_every_change_and_stays_with_who_may_see_it() {
    let z = zone(1, Profile::Uniform).await;
    let zone_name = z.admin.zone().await.expect("the zone").name;
    // Asked twice: the second answer is the rendered one.
    for _ in 0..2 {
        assert_eq!(z.admin.lowest_zone("acme").await.expect("lookup"), None, "acme has nothing yet");
    }
    let made = z.admin.instance_create(&small_instance("web", "acme")).await.expect("create");
    // At once: the create moved the answers' version.
    for _ in 0..2 {
        let lowest = z.admin.lowest_zone("acme").await.expect("lookup").expect("acme is managed here now");
        assert_eq!((lowest.client_id.as_str(), lowest.zone_name.as_str()), ("acme", zone_name.as_str()));
    }

    // A member of another client asks after the admin's answer was rendered: not hers to know.
    z.admin
        .account_create(&api::AccountCreate {
            username: "other".into(),
            password: "other-password-1".into(),
            role: Role::Member,
            client_id: Some("globex".into()),
            client_ids: None,
        })
        .await
        .expect("a member account");
    let (other, _) = api::Client::new(&z.app.url).login("other", "other-password-1").await.expect("member login");
    assert_eq!(other.lowest_zone("acme").await.expect("lookup"), None, "another client's zone");
    assert_eq!(other.lowest_zone("globex").await.expect("lookup"), None, "her own client has nothing");

    z.admin.instance_delete(&made.id).await.expect("delete");
    let gone = test_support::poll_until(Duration::from_secs(20), Duration::from_millis(50), || async {
        z.admin.lowest_zone("acme").await.expect("lookup").is_none().then_some(())
    })
    .await;
    assert!(gone.is_some(), "acme's lookup still names a zone after its only instance was deleted");
    z.stop().await;
}
