//! Host enrollment: an admin makes an enrollment token, agents register their hosts with it and
//! get a credential that allows only their own host's report and update; `agent-sim` runs on an
//! enrollment token alone.

use std::collections::BTreeMap;
use std::time::Duration;

use agent_sim::profile::Profile;
use agent_sim::{Credentials, SimConfig};
use api::agent::HostReport;
use api::{Client, EnrollmentTokenCreate, ErrorCode, HostEnroll, HostUpdate, Resources};
use secrecy::SecretString;
use sqlx::Connection;
use tokio_util::sync::CancellationToken;

use crate::app::spawn_app;

fn enroll_body(token: &str, name: &str) -> HostEnroll {
    HostEnroll {
        enrollment_token: token.into(),
        name: name.into(),
        agent_url: format!("http://127.0.0.1:9/{name}"),
        capabilities: BTreeMap::new(),
        resources: Resources { vcpus: 8, memory_mb: 8192, disk_gb: 100 },
        agent_token: None,
    }
}

fn tokens(max_uses: i64) -> EnrollmentTokenCreate {
    EnrollmentTokenCreate { expires_in_secs: Some(600), max_uses: Some(max_uses) }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_enrolled_host_acts_for_itself_only_and_a_token_is_used_at_most_max_uses_times() {
    let app = spawn_app().await;
    let admin = app.client().await;
    let anonymous = Client::new(&app.url);
    let made = admin.enrollment_token_create(&tokens(2)).await.expect("an enrollment token");
    assert_eq!(made.max_uses, 2);

    let a = anonymous.host_enroll(&enroll_body(&made.token, "enrolled-a")).await.expect("first use");
    let b = anonymous.host_enroll(&enroll_body(&made.token, "enrolled-b")).await.expect("second use");
    let third = anonymous.host_enroll(&enroll_body(&made.token, "enrolled-c")).await.expect_err("used up");
    assert_eq!((third.status(), third.code()), (Some(401), Some(ErrorCode::InvalidToken)), "{third}");

    // A's credential reports and updates A, and does nothing else.
    let as_a = anonymous.with_token(&a.credential);
    as_a.host_report(&a.host.id, &HostReport::default()).await.expect("A reports for itself");
    let update =
        HostUpdate { capabilities: Some(BTreeMap::from([("rack".into(), "r1".into())])), ..Default::default() };
    as_a.host_update(&a.host.id, &update).await.expect("A updates itself");
    let denied = as_a.host_report(&b.host.id, &HostReport::default()).await.expect_err("A reports for B");
    assert_eq!(denied.code(), Some(ErrorCode::Forbidden), "{denied}");
    for (what, err) in [
        ("list hosts", as_a.hosts().await.map(|_| ()).expect_err("a host lists hosts")),
        ("read the zone", as_a.zone().await.map(|_| ()).expect_err("a host reads the zone")),
        ("delete itself", as_a.host_delete(&a.host.id).await.expect_err("a host deletes itself")),
        (
            "make tokens",
            as_a.enrollment_token_create(&tokens(1)).await.map(|_| ()).expect_err("a host makes enrollment tokens"),
        ),
    ] {
        assert_eq!(err.code(), Some(ErrorCode::Forbidden), "{what}: {err}");
    }
    // An operator still manages the enrolled host; deleting it ends its credential.
    admin.host_delete(&b.host.id).await.expect("an admin deletes an enrolled host");
    let gone = anonymous.with_token(&b.credential).host_report(&b.host.id, &HostReport::default()).await;
    assert_eq!(gone.expect_err("a deleted host's credential").code(), Some(ErrorCode::InvalidToken));

    // Only hashes are stored.
    let mut db = sqlx::SqliteConnection::connect(&app.database_url).await.expect("open the database");
    let stored: Vec<(Option<String>,)> =
        sqlx::query_as("SELECT credential_hash FROM hosts").fetch_all(&mut db).await.expect("hosts");
    assert!(stored.iter().all(|(h,)| h.as_deref() != Some(a.credential.as_str())), "a credential stored in clear");
    let kept: Vec<(String,)> =
        sqlx::query_as("SELECT token_hash FROM enrollment_tokens").fetch_all(&mut db).await.expect("tokens");
    assert!(kept.iter().all(|(h,)| *h != made.token), "an enrollment token stored in clear");
    let _ = db.close().await;
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_costs_no_use_and_expired_or_unknown_tokens_are_refused() {
    let app = spawn_app().await;
    let admin = app.client().await;
    let anonymous = Client::new(&app.url);
    for bad in [
        EnrollmentTokenCreate { expires_in_secs: Some(10), max_uses: None },
        EnrollmentTokenCreate { expires_in_secs: None, max_uses: Some(0) },
    ] {
        let err = admin.enrollment_token_create(&bad).await.expect_err("out of range");
        assert_eq!(err.code(), Some(ErrorCode::InvalidField), "{err}");
    }
    let once = admin.enrollment_token_create(&tokens(1)).await.expect("a one-use token");
    let mut invalid = HostEnroll { name: "bad host name with spaces".into(), ..enroll_body(&once.token, "good-name") };
    let err = anonymous.host_enroll(&invalid).await.expect_err("a bad name");
    assert_eq!(err.status(), Some(400), "{err}");
    invalid.name = "good-name".into();
    anonymous.host_enroll(&invalid).await.expect("the refused request took no use");

    let unknown = anonymous.host_enroll(&enroll_body("no-such-token", "x1")).await.expect_err("unknown");
    assert_eq!(unknown.code(), Some(ErrorCode::InvalidToken), "{unknown}");
    let expiring = admin.enrollment_token_create(&tokens(5)).await.expect("a token");
    let mut db = sqlx::SqliteConnection::connect(&app.database_url).await.expect("open the database");
    sqlx::query("UPDATE enrollment_tokens SET expires_at_ms = 1 WHERE id = $1")
        .bind(&expiring.id)
        .execute(&mut db)
        .await
        .expect("age the token");
    let _ = db.close().await;
    let expired = anonymous.host_enroll(&enroll_body(&expiring.token, "x2")).await.expect_err("expired");
    assert_eq!(expired.code(), Some(ErrorCode::InvalidToken), "{expired}");
    app.stop().await;
}

/// `agent-sim` with an enrollment token and no account: its hosts register, report and are up.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agent_sim_runs_on_an_enrollment_token_alone() {
    let app = spawn_app().await;
    let admin = app.client().await;
    let made = admin.enrollment_token_create(&tokens(3)).await.expect("a token for three hosts");
    let stop = CancellationToken::new();
    let config = SimConfig {
        zone_url: app.url.clone(),
        credentials: Credentials::Enrollment(SecretString::from(made.token)),
        hosts: 3,
        latency: Duration::from_millis(5),
        fail_rate: 0.0,
        profile: Profile::Uniform,
        name_prefix: "enrolled".into(),
        report_interval: Duration::from_millis(200),
        register_concurrency: agent_sim::register::DEFAULT_REGISTER_CONCURRENCY,
        control_token: None,
        listen: "127.0.0.1:0".parse().unwrap(),
        advertise_url: None,
        capabilities: BTreeMap::new(),
    };
    let sim = agent_sim::run(config, stop.clone()).await.expect("the simulator enrolls its hosts");
    let up = test_support::poll_until(Duration::from_secs(10), Duration::from_millis(100), || async {
        let hosts = admin.hosts().await.ok()?.hosts;
        (hosts.len() == 3 && hosts.iter().all(|h| h.state == "up")).then_some(hosts)
    })
    .await
    .expect("three enrolled hosts up");
    assert!(up.iter().all(|h| h.name.starts_with("enrolled-")));
    // Reports keep them up past the zone's silence limit (3 × the 1 s default interval).
    tokio::time::sleep(Duration::from_secs(4)).await;
    let still = admin.hosts().await.expect("hosts").hosts;
    assert!(still.iter().all(|h| h.state == "up"), "enrolled hosts went down: {still:?}");

    // The agent tokens (what the zone presents to the agents) are stored sealed, and opened for
    // the call: an instance builds (agent-sim refuses a task without its token).
    let mut db = sqlx::SqliteConnection::connect(&app.database_url).await.expect("open the database");
    let stored: Vec<(Option<String>,)> =
        sqlx::query_as("SELECT agent_token FROM hosts").fetch_all(&mut db).await.expect("hosts");
    let _ = db.close().await;
    assert_eq!(stored.len(), 3);
    assert!(stored.iter().all(|(t,)| t.as_deref().is_some_and(|t| t.starts_with("v1:"))), "{stored:?}");
    let made = admin
        .instance_create(&crate::app::small_instance("on-an-enrolled-host", "acme"))
        .await
        .expect("an instance on an enrolled host");
    assert_eq!(made.state, "running", "{made:?}");
    stop.cancel();
    drop(sim);
    app.stop().await;
}
