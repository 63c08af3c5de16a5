//! Logins are bounded: a flood of wrong passwords is answered 429 with `Retry-After` instead of
//! running argon2 for each, and repeated failures for one username or from one address are refused.

use std::collections::BTreeMap;

use crate::app::spawn_app;

/// One raw login, without the API client's retries: the status and the `Retry-After` header.
async fn attempt(http: &reqwest::Client, url: &str, username: &str, password: &str) -> (u16, Option<String>, String) {
    let resp = http
        .post(format!("{url}/v1/auth/tokens"))
        .json(&serde_json::json!({ "username": username, "password": password }))
        .send()
        .await
        .expect("the node answers");
    let status = resp.status().as_u16();
    let retry_after = resp.headers().get("retry-after").map(|v| v.to_str().expect("ASCII").to_owned());
    let body: serde_json::Value = resp.json().await.expect("a JSON body");
    let code = body["error"]["code"].as_str().unwrap_or_default().to_owned();
    (status, retry_after, code)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_of_wrong_logins_is_answered_429_and_stops_guessing_from_that_address() {
    let node = spawn_app().await;
    let http = reqwest::Client::new();
    let flood = 100;
    let usernames: Vec<String> = (0..flood).map(|i| format!("guess-{i}")).collect();
    let answers =
        futures::future::join_all(usernames.iter().map(|u| attempt(&http, &node.url, u, "wrong-password"))).await;
    let mut by_status: BTreeMap<u16, usize> = BTreeMap::new();
    for (status, retry_after, code) in &answers {
        *by_status.entry(*status).or_default() += 1;
        match status {
            401 => assert_eq!(code, "invalid_credentials"),
            429 => {
                assert_eq!(code, "too_many_requests");
                let secs: u64 = retry_after.as_deref().expect("Retry-After on a 429").parse().expect("whole seconds");
                assert!((1..=60).contains(&secs), "Retry-After {secs}");
            }
            other => panic!("a wrong login answered {other} ({code}); answers: {by_status:?}"),
        }
    }
    // Busy answers cost no check and count as no failure; checked failures do. Sequential wrong
    // logins from the same address are refused once 30 have failed in the minute.
    let mut failed = by_status.get(&401).copied().unwrap_or_default();
    assert!(failed >= 1, "no password was checked at all: {by_status:?}");
    loop {
        let (status, retry_after, code) = attempt(&http, &node.url, &format!("seq-{failed}"), "wrong-password").await;
        if status == 429 {
            assert_eq!(code, "too_many_requests");
            assert!(retry_after.is_some());
            break;
        }
        assert_eq!((status, code.as_str()), (401, "invalid_credentials"));
        failed += 1;
        assert!(failed <= 30, "{failed} wrong passwords were checked from one address in a minute");
    }
    assert!((30..=34).contains(&failed), "refused after {failed} failures, not 30 (plus the flood's checks in flight)");
    // The address stays refused, even with the right password.
    let (status, retry_after, code) = attempt(&http, &node.url, &node.admin_username, &node.admin_password).await;
    assert_eq!((status, code.as_str()), (429, "too_many_requests"));
    assert!(retry_after.is_some());
    node.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_username_is_refused_after_ten_failures_and_others_are_not() {
    let node = spawn_app().await;
    let http = reqwest::Client::new();
    for i in 0..10 {
        let (status, _, code) = attempt(&http, &node.url, &node.admin_username, "wrong-password").await;
        assert_eq!((status, code.as_str()), (401, "invalid_credentials"), "attempt {i}");
    }
    let (status, retry_after, code) = attempt(&http, &node.url, &node.admin_username, &node.admin_password).await;
    assert_eq!((status, code.as_str()), (429, "too_many_requests"), "the right password after 10 failures");
    let secs: u64 = retry_after.expect("Retry-After").parse().expect("whole seconds");
    assert!((1..=60).contains(&secs), "Retry-After {secs}");
    // Another username from the same address is still checked.
    let (status, _, code) = attempt(&http, &node.url, "someone-else", "wrong-password").await;
    assert_eq!((status, code.as_str()), (401, "invalid_credentials"));
    node.stop().await;
}
