//! Who a request is: a token can be revoked on every node of the zone, and guards use the
//! verified account, not a caller a parent states.

use std::time::Duration;

use api::federation::{CALLER_ROLE_HEADER, CALLER_USER_HEADER};
use reqwest::StatusCode;

use crate::app::spawn_app;

/// The status of `GET /v1/zone` at `url` with `token`.
async fn zone_status(http: &reqwest::Client, url: &str, token: &str) -> StatusCode {
    http.get(format!("{url}/v1/zone")).bearer_auth(token).send().await.expect("GET /v1/zone").status()
}

/// `DELETE /v1/auth/tokens` revokes the token it carries: refused at once on the node that
/// revoked it and, through the `auth.tokens_revoked` event, on the zone's other node, which had
/// just verified (and cached) it. Other tokens of the same account keep working.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revoked_token_is_refused_on_every_node_and_others_keep_working() {
    let a = spawn_app().await;
    let b = a.spawn_peer().await;
    let http = api::http::client_builder().build().expect("an HTTP client");
    let (token, other) = (a.admin_token().await, a.admin_token().await);
    assert_eq!(zone_status(&http, &a.url, &token).await, StatusCode::OK);
    assert_eq!(zone_status(&http, &b.url, &token).await, StatusCode::OK, "the peer verifies and caches it");

    let revoked = http.delete(format!("{}/v1/auth/tokens", a.url)).bearer_auth(&token).send().await.expect("DELETE");
    assert_eq!(revoked.status(), StatusCode::NO_CONTENT);
    assert_eq!(zone_status(&http, &a.url, &token).await, StatusCode::UNAUTHORIZED, "refused at once where revoked");
    let on_peer = test_support::poll_until(Duration::from_secs(5), Duration::from_millis(20), || async {
        (zone_status(&http, &b.url, &token).await == StatusCode::UNAUTHORIZED).then_some(())
    })
    .await;
    assert!(on_peer.is_some(), "the peer still accepts a revoked token");
    assert_eq!(zone_status(&http, &a.url, &other).await, StatusCode::OK);
    assert_eq!(zone_status(&http, &b.url, &other).await, StatusCode::OK);

    // Revoking needs a valid token: the revoked one gets 401, no token gets 401.
    let again = http.delete(format!("{}/v1/auth/tokens", a.url)).bearer_auth(&token).send().await.unwrap();
    assert_eq!(again.status(), StatusCode::UNAUTHORIZED);
    let anonymous = http.delete(format!("{}/v1/auth/tokens", a.url)).send().await.unwrap();
    assert_eq!(anonymous.status(), StatusCode::UNAUTHORIZED);
    b.stop().await;
    a.stop().await;
}

/// The "cannot delete yourself" guard checks the verified account: stating another caller (as a
/// parent does for the user it forwards for) does not let an admin delete its own account.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stated_caller_does_not_lift_the_guard_on_deleting_yourself() {
    let app = spawn_app().await;
    let http = api::http::client_builder().build().expect("an HTTP client");
    let token = app.admin_token().await;
    let answer = http
        .delete(format!("{}/v1/accounts/{}", app.url, app.admin_username))
        .bearer_auth(&token)
        .header(CALLER_ROLE_HEADER, "admin")
        .header(CALLER_USER_HEADER, "someone-else")
        .send()
        .await
        .expect("DELETE /v1/accounts");
    assert_eq!(answer.status(), StatusCode::CONFLICT);
    let body: serde_json::Value = answer.json().await.expect("an error body");
    assert_eq!(body["error"]["code"], "invalid_state", "{body}");
    assert_eq!(zone_status(&http, &app.url, &token).await, StatusCode::OK, "the account and its token remain");
    app.stop().await;
}
