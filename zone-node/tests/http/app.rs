//! [`spawn_app`]: one node in this test process, in zero-to-production's manner.
//!
//! The node is the real [`Application`] on the embedded defaults: its own SQLite file in a temporary
//! directory and its own `memory://` bus (a unique name, so apps in one process never share one).
//! Nothing is spawned and no service is needed, so these tests need no built binary.
//!
//! It lives here and not in the `test-support` crate because it depends on `zone-node`, and
//! `zone-node`'s own tests cannot use a crate that depends on `zone-node` (a dev-dependency cycle
//! links two copies of it, whose types do not match).

use std::collections::BTreeMap;
use std::path::PathBuf;

use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use zone_node::Config;
use zone_node::{Application, Stopped};

/// A node served by this test process. Dropping it stops the node; [`TestApp::stop`] also checks
/// that it stopped cleanly.
pub struct TestApp {
    /// The API's base URL, `http://127.0.0.1:<port>` (`https://` when served over TLS).
    pub url: String,
    pub admin_username: String,
    pub admin_password: String,
    /// The node's SQLite database, for tests that change rows behind its back.
    pub database_url: String,
    stop: CancellationToken,
    served: Option<JoinHandle<anyhow::Result<Stopped>>>,
    /// The settings it was built from, for [`TestApp::spawn_peer`].
    env: BTreeMap<&'static str, String>,
    /// The data directory; `None` for a peer, which uses its first node's.
    _dir: Option<tempfile::TempDir>,
}

/// Builds and serves a node of a zone of its own.
///
/// The port is a reserved free one (`test_support::free_port`) rather than 0: the configuration
/// refuses port 0, because a node's API URL (stored in its membership row at start, and given to
/// agents for their callbacks) must name the port it really listens on.
pub async fn spawn_app() -> TestApp {
    spawn_app_with(&[]).await
}

/// [`spawn_app`] with settings (environment variables) added or replaced.
pub async fn spawn_app_with(settings: &[(&'static str, &str)]) -> TestApp {
    let id = test_support::net::short_id();
    let dir = tempfile::tempdir().expect("create a temporary directory");
    let admin_password = format!("test-{id}");
    let data_dir: PathBuf = dir.path().join("data");
    let env: BTreeMap<&str, String> = [
        ("ZONE_NAME", format!("http-{id}")),
        ("ZONE_LISTEN", format!("127.0.0.1:{}", test_support::free_port())),
        ("ZONE_DATA_DIR", data_dir.display().to_string()),
        ("ZONE_BUS_URL", format!("memory://http-{id}")),
        ("ZONE_ADMIN_PASSWORD", admin_password),
    ]
    .into_iter()
    .chain(settings.iter().map(|(k, v)| (*k, (*v).to_owned())))
    .collect();
    serve(env, Some(dir)).await
}

async fn serve(env: BTreeMap<&'static str, String>, dir: Option<tempfile::TempDir>) -> TestApp {
    let config = Config::load(None, &|var| env.get(var).cloned()).expect("the test configuration is valid");
    let admin_username = config.admin.username.clone();
    let admin_password = env["ZONE_ADMIN_PASSWORD"].clone();
    let database_url = config.database_url().to_owned();
    // `http://127.0.0.1:<port>`, or `https://` with ZONE_TLS_CERT_FILE (the API URL's default).
    let url = config.api_url().to_owned();
    let app = Application::build(config).await.expect("the app builds");
    let stop = app.shutdown_token();
    let served = tokio::spawn(app.run_until_stopped());
    // Serving starts before the node is a member that takes work (it joins in the background), so
    // a test would otherwise race the join on a busy machine.
    let http = api::http::client_builder().build().expect("an HTTP client");
    let ready =
        test_support::poll_until(std::time::Duration::from_secs(30), std::time::Duration::from_millis(20), || {
            let probe = http.get(format!("{url}/readyz")).send();
            async move { probe.await.ok().filter(|r| r.status().is_success()).map(|_| ()) }
        })
        .await;
    assert!(ready.is_some(), "the node at {url} was not ready within 30 s");
    TestApp { url, admin_username, admin_password, database_url, stop, served: Some(served), env, _dir: dir }
}

impl TestApp {
    /// Another node of this node's zone: the same SQLite database and the same in-process bus,
    /// its own port. Keep this node alive at least as long: it owns the data directory.
    pub async fn spawn_peer(&self) -> TestApp {
        let mut env = self.env.clone();
        env.insert("ZONE_LISTEN", format!("127.0.0.1:{}", test_support::free_port()));
        serve(env, None).await
    }

    /// The zone-add body that registers this node's zone as a child, with its admin account, weight
    /// offset 0 and scale 1; tests change a field with `..child.as_child()`.
    pub fn as_child(&self) -> api::ZoneCreate {
        api::ZoneCreate {
            name: None,
            api_url: self.url.clone(),
            username: self.admin_username.clone(),
            password: self.admin_password.clone(),
            weight_offset: 0.0,
            weight_scale: 1.0,
            disabled: false,
            insecure_http: false,
        }
    }

    /// An API client logged in as the zone's admin.
    pub async fn client(&self) -> api::Client {
        let (client, _) = api::Client::new(&self.url)
            .login(&self.admin_username, &self.admin_password)
            .await
            .unwrap_or_else(|e| panic!("cannot log in as {}: {e}", self.admin_username));
        client
    }

    /// A fresh admin bearer token.
    pub async fn admin_token(&self) -> String {
        let (_, token) =
            api::Client::new(&self.url).login(&self.admin_username, &self.admin_password).await.expect("admin login");
        token.token
    }

    /// Ages a bearer token so the node sees it as expired, by setting its expiry in the database
    /// (tokens are stored as the SHA-256 hex of the token). Panics when the token is not there.
    pub async fn expire_token(&self, token: &str) {
        use sha2::Digest;
        use sqlx::Connection;
        let hash: String = hex::encode(sha2::Sha256::digest(token.as_bytes()));
        let mut conn = sqlx::SqliteConnection::connect(&self.database_url)
            .await
            .unwrap_or_else(|e| panic!("cannot open the app's database {}: {e}", self.database_url));
        let updated = sqlx::query("UPDATE tokens SET expires_at_ms = 1 WHERE hash = $1")
            .bind(&hash)
            .execute(&mut conn)
            .await
            .expect("expire a token")
            .rows_affected();
        let _ = conn.close().await;
        assert_eq!(updated, 1, "the token to expire is not in the app's database");
    }

    /// Stops the node and checks that it stopped as asked.
    pub async fn stop(mut self) {
        self.stop.cancel();
        let served = self.served.take().expect("served until now");
        let stopped = served.await.expect("the app's task ended").expect("the app stopped cleanly");
        assert_eq!(stopped, Stopped::Shutdown);
    }
}

impl Drop for TestApp {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

/// A zone of one node with `hosts` simulated hosts (the `agent-sim` crate) of `profile` (uniform: 32 vcpus, 128 GiB;
/// big: 256 vcpus, 512 GiB).
pub struct Zone {
    pub app: TestApp,
    pub admin: api::Client,
    _hosts: Option<agent_sim::SimHandle>,
    /// Stops the simulated hosts when the zone is dropped.
    _stop_hosts: tokio_util::sync::DropGuard,
}

pub async fn zone(hosts: usize, profile: agent_sim::profile::Profile) -> Zone {
    let app = spawn_app().await;
    let admin = app.client().await;
    let stop_hosts = CancellationToken::new();
    let sim = if hosts == 0 {
        None
    } else {
        let config = agent_sim::SimConfig {
            zone_url: app.url.clone(),
            credentials: agent_sim::Credentials::Password {
                username: app.admin_username.clone(),
                password: secrecy::SecretString::from(app.admin_password.clone()),
            },
            hosts,
            latency: std::time::Duration::from_millis(5),
            fail_rate: 0.0,
            profile,
            name_prefix: "h".into(),
            report_interval: std::time::Duration::from_secs(1),
            register_concurrency: agent_sim::register::DEFAULT_REGISTER_CONCURRENCY,
            control_token: None,
            listen: "127.0.0.1:0".parse().unwrap(),
            advertise_url: None,
            capabilities: BTreeMap::new(),
        };
        Some(agent_sim::run(config, stop_hosts.clone()).await.expect("the simulated hosts start"))
    };
    Zone { app, admin, _hosts: sim, _stop_hosts: stop_hosts.drop_guard() }
}

impl Zone {
    pub async fn stop(self) {
        self.app.stop().await;
    }
}

/// The smallest instance a test creates: `name` for `client`, 1 vCPU, 512 MiB, 1 GB, no
/// requirements.
pub fn small_instance(name: &str, client: &str) -> api::InstanceCreate {
    api::InstanceCreate {
        name: name.into(),
        client_id: Some(client.into()),
        requirements: vec![],
        resources: api::Resources { vcpus: 1, memory_mb: 512, disk_gb: 1 },
        count: None,
    }
}
