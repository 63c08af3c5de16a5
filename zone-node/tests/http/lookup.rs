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

/// The answer sent before the router (`http::clients::answer_rendered`) is the one the router's
/// handler composed, header for header; it is counted in the request metrics; and a token revoked
/// after its lookups were answered that way is refused like anywhere else.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lookup_answered_before_the_router_is_the_handlers_answer_counted_and_checked() {
    let z = zone(1, Profile::Uniform).await;
    z.admin.instance_create(&small_instance("web", "acme")).await.expect("create");
    let (url, http) = (format!("{}/v1/clients/acme/zone", z.app.url), reqwest::Client::new());
    let token = z.app.admin_token().await;
    let ask = |token: String| {
        let (http, url) = (http.clone(), url.clone());
        async move {
            let answer = http.get(&url).bearer_auth(token).send().await.expect("an answer");
            let head: Vec<(String, String)> = answer
                .headers()
                .iter()
                .filter(|(name, _)| *name != "date")
                .map(|(name, value)| (name.to_string(), value.to_str().unwrap_or("?").to_owned()))
                .collect();
            (answer.status(), head, answer.text().await.expect("a body"))
        }
    };
    let composed = ask(token.clone()).await;
    assert_eq!(composed.0, reqwest::StatusCode::OK, "acme's lookup: {composed:?}");
    let counted = |metrics: &str| -> f64 {
        metrics
            .lines()
            .find(|l| {
                l.starts_with("http_requests_total{")
                    && l.contains(r#"route="/v1/clients/{client_id}/zone""#)
                    && l.contains(r#"status="200""#)
            })
            .and_then(|l| l.rsplit(' ').next()?.parse().ok())
            .unwrap_or(0.0)
    };
    let metrics = || async {
        http.get(format!("{}/metrics", z.app.url)).send().await.expect("metrics").text().await.expect("text")
    };
    let before = counted(&metrics().await);
    for _ in 0..3 {
        assert_eq!(ask(token.clone()).await, composed, "a rendered answer differs from the composed one");
    }
    assert_eq!(counted(&metrics().await) - before, 3.0, "the rendered answers are not all counted");

    // A token revoked after its lookups were answered before the router: refused from then on.
    // (The first use puts the token in the node's cache; the second is answered before the router.)
    let revoked = z.app.admin_token().await;
    for _ in 0..2 {
        assert_eq!(ask(revoked.clone()).await.0, reqwest::StatusCode::OK);
    }
    let answer =
        http.delete(format!("{}/v1/auth/tokens", z.app.url)).bearer_auth(&revoked).send().await.expect("logout");
    assert!(answer.status().is_success(), "logout: {}", answer.status());
    let (status, _, body) = ask(revoked).await;
    assert_eq!(status, reqwest::StatusCode::UNAUTHORIZED, "a revoked token still looks up: {body}");
    let (status, _, body) = ask("not-a-token".into()).await;
    assert_eq!(status, reqwest::StatusCode::UNAUTHORIZED, "an unknown token looks up: {body}");
    z.stop().await;
}
