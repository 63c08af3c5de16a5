//! The zone's database: SQLite (embedded default) or PostgreSQL, behind one [`Store`] type.
//!
//! Migrations (`migrations/sqlite`, `migrations/postgres`) are embedded in the binary and applied
//! at connect. Every time two nodes compare (heartbeats, leases, token expiry) comes from the
//! database clock, never from a node's clock. Ids are stored as text, times as epoch milliseconds
//! (BIGINT), so both dialects hold the same values.
//!
//! # How the two backends share one code path
//! [`Store`] holds a concrete pool per backend (no `sqlx::Any`). Each method writes its SQL once,
//! with `$1` placeholders (SQLite understands them too), and the `with_pool!` macro expands the
//! query code once per pool, so both drivers type-check the same text. The only dialect-specific
//! fragment, the database clock, lives in the `db_clock` view that each backend's first migration
//! creates; queries read `(SELECT now_ms FROM db_clock)`.
//!
//! # Layout
//! - this file: connection, errors, row types, the zone identity
//! - [`nodes`](self::nodes): membership rows and the ring epoch
//! - [`accounts`](self::accounts): accounts and bearer tokens
//! - [`hosts`](self::hosts): hosts, their capabilities, reports and liveness
//! - `aggregate`: the maintained capability aggregate (and its O(hosts) reference)
//! - `generation`: the zone generation counter
//! - `placement`: validated filters, the sampled candidate query, reservations and placing
//! - [`instances`](self::instances): instances, optimistic updates, capacity given back on removal
//! - `batch`: room for a multi-create, all or nothing, placed as a set (k instances on a host in
//!   one conditional update)
//! - [`zones`](self::zones): child zones (federation) and the instance mapping
//! - [`probe`](self::probe): diagnostic concurrency counters
//!
//! # SQLite and concurrency
//! Writers in WAL mode queue on the database lock for up to [`SQLITE_BUSY_TIMEOUT`]. SQLite only
//! honours that wait when a transaction's first statement is a write (a transaction that reads
//! first and then writes fails at once with "database is locked" if another writer got in
//! between), so every multi-statement transaction here starts with a write.

use std::str::FromStr;
use std::time::Duration;

use sqlx::migrate::Migrator;
use sqlx::postgres::{PgConnectOptions, PgConnection, PgPool, PgPoolOptions};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous};
use sqlx::Connection;
use uuid::Uuid;

/// Runs `$body` with `$pool` bound to the concrete pool behind the store. The body is expanded
/// once per backend, so the same query code is compiled against both drivers.
macro_rules! with_pool {
    ($store:expr, |$pool:ident| $body:expr) => {
        match &$store.backend {
            $crate::store::Backend::Sqlite($pool) => $body,
            $crate::store::Backend::Postgres($pool) => $body,
        }
    };
}

pub mod accounts;
mod aggregate;
mod batch;
pub mod enrollment;
mod generation;
pub mod hosts;
pub mod instance_json;
pub mod instances;
pub mod nodes;
mod placement;
pub mod probe;
pub mod zones;

pub use batch::BatchPlacement;
pub use hosts::{HostRow, NewHost, StaleHosts};
pub use instance_json::{JsonPage, PageZone};
pub use instances::{InstanceChange, InstanceRow, NewInstance};
pub use placement::{Filter, Test};
pub use zones::{ChildSnapshot, ChildZoneEdit, ChildZoneRow, NewChildZone, PollOutcome, PollRecord};

/// How long a PostgreSQL connection attempt (and a wait for a pooled connection) may take before
/// the store reports [`StoreError::Unavailable`].
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a SQLite writer waits for another writer to commit before failing.
pub const SQLITE_BUSY_TIMEOUT: Duration = Duration::from_secs(5);
/// How often opening a SQLite file is retried when it is locked by a concurrent opener.
const SQLITE_OPEN_RETRIES: u32 = 5;

/// How long a caller waits for a free pooled SQLite connection. Longer than the busy timeout:
/// on a local file, waiting is always better than failing.
const SQLITE_ACQUIRE_TIMEOUT: Duration = Duration::from_secs(30);
/// Pool size when [`Store::connect`] is used.
pub const DEFAULT_MAX_CONNECTIONS: u32 = 10;

static SQLITE_MIGRATOR: Migrator = sqlx::migrate!("../migrations/sqlite");
static POSTGRES_MIGRATOR: Migrator = sqlx::migrate!("../migrations/postgres");

#[derive(Debug, Clone, thiserror::Error)]
pub enum StoreError {
    #[error("database unavailable: {0}")]
    Unavailable(String),
    #[error("{0} already exists")]
    Conflict(String),
    #[error("invalid database url: {0}")]
    InvalidUrl(String),
    #[error("migration failed: {0}")]
    Migration(String),
    /// The row is still referenced (a host with instances on it).
    #[error("{0}")]
    InUse(String),
    #[error("database error: {0}")]
    Other(String),
}

pub type Result<T, E = StoreError> = std::result::Result<T, E>;

impl api::CodedError for StoreError {
    fn code(&self) -> api::ErrorCode {
        match self {
            StoreError::Conflict(_) => api::ErrorCode::Conflict,
            StoreError::InUse(_) => api::ErrorCode::InvalidState,
            StoreError::Unavailable(_) => api::ErrorCode::StoreUnavailable,
            StoreError::InvalidUrl(_) | StoreError::Migration(_) | StoreError::Other(_) => api::ErrorCode::Internal,
        }
    }

    /// Conflicts and rows in use are the caller's to act on; database failures stay in the log.
    fn public_message(&self) -> String {
        match self {
            StoreError::Conflict(what) => format!("{what} already exists"),
            StoreError::InUse(_) => self.to_string(),
            StoreError::Unavailable(_) => "the zone's database is unavailable; try again".into(),
            _ => "internal error; the node's log has the details".into(),
        }
    }
}

impl From<sqlx::Error> for StoreError {
    /// Connection and pool failures become [`StoreError::Unavailable`], everything else
    /// [`StoreError::Other`]. Unique violations are mapped by the caller, which knows what
    /// conflicted. sqlx's messages carry no bound values, so no secret reaches the text.
    fn from(e: sqlx::Error) -> Self {
        use sqlx::Error as E;
        match &e {
            E::PoolTimedOut | E::PoolClosed | E::Io(_) | E::Tls(_) | E::WorkerCrashed => {
                StoreError::Unavailable(e.to_string())
            }
            E::Database(d) if is_transient(d.as_ref()) => StoreError::Unavailable(e.to_string()),
            _ => StoreError::Other(e.to_string()),
        }
    }
}

/// True for database errors that say the database cannot serve us right now, rather than that
/// the request was wrong.
fn is_transient(d: &(dyn sqlx::error::DatabaseError + 'static)) -> bool {
    if d.try_downcast_ref::<sqlx::sqlite::SqliteError>().is_some() {
        // SQLITE_BUSY (5) and SQLITE_LOCKED (6), in any extended form: another writer held the
        // database for longer than the busy timeout.
        let code: i64 = d.code().and_then(|c| c.parse().ok()).unwrap_or(0);
        return matches!(code & 0xff, 5 | 6);
    }
    // PostgreSQL SQLSTATE classes 08 (connection exception), 53 (insufficient resources, such as
    // too many connections) and 57P (the server is shutting down or restarting).
    let code = d.code().unwrap_or_default();
    code.starts_with("08") || code.starts_with("53") || code.starts_with("57P")
}

/// Bumps the zone generation (see [`Store::generation`]). Run inside the transaction of the change
/// that causes it, so the change and the bump commit together or not at all. Every writer takes
/// the `zone_generation` row last, after the rows it changes, so bumps never deadlock.
const BUMP_GENERATION: &str = "UPDATE zone_generation SET generation = generation + 1 WHERE one = 1";

/// Marks SQL text built at run time as safe to run. sqlx 0.9 takes only `&'static str` unless told:
/// every dynamic statement here is assembled from constant fragments and numbered `$n`
/// placeholders (client values are always bound), so none can be shaped by input.
fn assembled(sql: &str) -> sqlx::AssertSqlSafe<&str> {
    sqlx::AssertSqlSafe(sql)
}

/// True when `e` is a unique-constraint violation.
fn is_unique_violation(e: &sqlx::Error) -> bool {
    e.as_database_error().is_some_and(|d| d.is_unique_violation())
}

/// Parses a UUID read back from a text column.
fn parse_uuid(what: &str, s: &str) -> Result<Uuid> {
    Uuid::parse_str(s).map_err(|e| StoreError::Other(format!("bad {what} id {s:?} in database: {e}")))
}

/// A management node's row.
#[derive(Debug, Clone, PartialEq)]
pub struct NodeRow {
    pub id: Uuid,
    pub api_url: String,
    /// `joining`, `alive`, `leaving`, `left` or `dead`.
    pub state: String,
    pub joined_at_ms: i64,
    pub heartbeat_ms: i64,
    /// The highest ring epoch this node has applied and drained for.
    pub applied_epoch: i64,
}

/// The membership view read in one go: rows plus the ring epoch and the database clock.
#[derive(Debug, Clone)]
pub struct Membership {
    pub epoch: i64,
    pub now_ms: i64,
    pub nodes: Vec<NodeRow>,
}

/// This zone's identity, shared by all of its nodes.
#[derive(Debug, Clone, PartialEq)]
pub struct ZoneRow {
    pub id: Uuid,
    pub name: String,
    pub created_at_ms: i64,
}

/// An account. `password_hash` is an argon2id PHC string (see [`crate::auth`]).
#[derive(Clone, PartialEq)]
pub struct AccountRow {
    pub username: String,
    pub password_hash: String,
    /// `admin`, `member` or `parent`.
    pub role: String,
    pub client_id: Option<String>,
    /// A `parent` account's clients (column `client_ids`, migration 0011, in the form of
    /// [`api::ClientScope::header_value`]).
    pub client_ids: Option<api::ClientScope>,
    pub created_at_ms: i64,
}

// By hand, so the password hash never reaches a log line through `{:?}`.
impl std::fmt::Debug for AccountRow {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AccountRow")
            .field("username", &self.username)
            .field("password_hash", &"<redacted>")
            .field("role", &self.role)
            .field("client_id", &self.client_id)
            .field("client_ids", &self.client_ids)
            .field("created_at_ms", &self.created_at_ms)
            .finish()
    }
}

/// What a bearer token grants: its account's identity and its expiry.
#[derive(Debug, Clone, PartialEq)]
pub struct TokenRow {
    pub username: String,
    pub role: String,
    pub client_id: Option<String>,
    pub client_ids: Option<api::ClientScope>,
    pub expires_at_ms: i64,
    /// True when `expires_at_ms` is at or before the database clock.
    pub expired: bool,
}

/// Diagnostic counters of one resource: how many workers were inside it at once.
#[derive(Debug, Clone, PartialEq)]
pub struct ProbeRow {
    pub resource_id: String,
    pub active: i64,
    pub max_active: i64,
    pub completed: i64,
}

/// The concrete pool behind a [`Store`].
#[derive(Clone)]
pub(crate) enum Backend {
    Sqlite(SqlitePool),
    Postgres(PgPool),
}

/// The database of one zone. Cheap to clone (a pool).
#[derive(Clone)]
pub struct Store {
    backend: Backend,
    /// Counts this process's committed generation bumps (see [`Store::generation_moves`]).
    moved: std::sync::Arc<tokio::sync::watch::Sender<u64>>,
    /// The last aggregate read by [`Store::aggregate_at`], with the generation read before it.
    aggregate_at: std::sync::Arc<std::sync::Mutex<Option<(i64, api::Aggregate)>>>,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store").field("backend", &self.backend()).finish_non_exhaustive()
    }
}

#[derive(sqlx::FromRow)]
struct RawZone {
    id: String,
    name: String,
    created_at_ms: i64,
}

/// Takes an exclusive OS lock on `<database file>.migrate-lock`, waiting for it off the async
/// workers; the lock is released when the returned file is dropped (or the process dies).
async fn lock_file(database: std::path::PathBuf) -> Result<std::fs::File> {
    let mut path = database.into_os_string();
    path.push(".migrate-lock");
    let path = std::path::PathBuf::from(path);
    tokio::task::spawn_blocking(move || {
        let file = std::fs::OpenOptions::new().create(true).truncate(false).write(true).open(&path)?;
        file.lock()?;
        Ok::<_, std::io::Error>(file)
    })
    .await
    .map_err(|e| StoreError::Migration(format!("migration lock task failed: {e}")))?
    .map_err(|e| StoreError::Migration(format!("cannot lock the migration lock file: {e}")))
}

impl Store {
    fn over(backend: Backend) -> Store {
        Store {
            backend,
            moved: std::sync::Arc::new(tokio::sync::watch::channel(0).0),
            aggregate_at: std::sync::Arc::default(),
        }
    }

    /// Ticks after every change this process committed that bumped the zone generation (or may
    /// have: a tick only says "read the generation again"). What `GET /v1/zone/watch` waits on,
    /// so a waiting watch reads the database once per change, never in a loop. Bumps made by
    /// other nodes of the zone do not tick here (they reach this node over the bus).
    pub fn generation_moves(&self) -> tokio::sync::watch::Receiver<u64> {
        self.moved.subscribe()
    }

    /// Call after committing a transaction that bumped the generation.
    fn generation_moved(&self) {
        self.moved.send_modify(|n| *n = n.wrapping_add(1));
    }

    /// Connects to `sqlite://...` or `postgres://...` and applies migrations.
    pub async fn connect(url: &str) -> Result<Store> {
        Self::connect_with(url, DEFAULT_MAX_CONNECTIONS).await
    }

    /// [`Store::connect`] with a pool of at most `max_connections` connections.
    ///
    /// SQLite: `sqlite://path` (or `sqlite:path`); the file and its parent directory are created
    /// if missing. `sqlite::memory:` gives a private in-memory database on a single connection,
    /// for tests. PostgreSQL: `postgres://` or `postgresql://`.
    pub async fn connect_with(url: &str, max_connections: u32) -> Result<Store> {
        let max_connections = max_connections.max(1);
        let store = if url.starts_with("sqlite:") {
            Self::connect_sqlite(url, max_connections).await?
        } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            Self::connect_postgres(url, max_connections).await?
        } else {
            // Only the scheme: the rest of a URL may hold a password.
            let scheme = url.split_once(':').map_or("(none)", |(s, _)| s);
            return Err(StoreError::InvalidUrl(format!(
                "unsupported scheme {scheme:?}: expected sqlite://… or postgres://…"
            )));
        };
        store.migrate().await?;
        tracing::info!(backend = store.backend(), "database ready");
        Ok(store)
    }

    async fn connect_sqlite(url: &str, max_connections: u32) -> Result<Store> {
        let opts = SqliteConnectOptions::from_str(url)
            .map_err(|e| StoreError::InvalidUrl(e.to_string()))?
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            // NORMAL is the usual pairing with WAL: durable across a process crash, and a power
            // loss can only lose the last commits, never corrupt the file.
            .synchronous(SqliteSynchronous::Normal)
            .busy_timeout(SQLITE_BUSY_TIMEOUT)
            .foreign_keys(true);
        let in_memory = url.contains(":memory:") || url.contains("mode=memory");
        // No ping before each acquire (sqlx's default): the database is a file in this process,
        // so the ping checks nothing, and it cost a round trip to the connection's worker thread
        // per query, half the hand-offs of an idle zone's periodic reads.
        let mut pool = SqlitePoolOptions::new().acquire_timeout(SQLITE_ACQUIRE_TIMEOUT).test_before_acquire(false);
        if in_memory {
            // Each connection to `:memory:` would see its own database, and the shared cache sqlx
            // uses instead reports table locks without waiting: keep one connection, forever.
            pool = pool.max_connections(1).min_connections(1).idle_timeout(None).max_lifetime(None);
        } else {
            let path = opts.get_filename();
            if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
                std::fs::create_dir_all(dir)
                    .map_err(|e| StoreError::Unavailable(format!("cannot create {}: {e}", dir.display())))?;
            }
            pool = pool.max_connections(max_connections);
        }
        let path = opts.get_filename().display().to_string();
        // Switching a fresh file to WAL takes an exclusive lock that does not wait on the busy
        // handler, so processes opening the same new file at the same instant can see "database
        // is locked" once. A few short retries settle it; anything else fails at once.
        let mut attempt = 0;
        let pool = loop {
            match pool.clone().connect_with(opts.clone()).await {
                Ok(pool) => break pool,
                Err(e) if attempt < SQLITE_OPEN_RETRIES && e.to_string().contains("locked") => {
                    attempt += 1;
                    tracing::debug!(attempt, error = %e, "sqlite database locked while opening; retrying");
                    tokio::time::sleep(Duration::from_millis(50 * u64::from(attempt))).await;
                }
                Err(e) => return Err(StoreError::Unavailable(format!("cannot open sqlite database {path}: {e}"))),
            }
        };
        if !in_memory {
            // Password hashes and sealed child passwords live here: owner only. SQLite creates
            // its -wal and -shm files with the database file's mode.
            for suffix in ["", "-wal", "-shm"] {
                let file = format!("{path}{suffix}");
                if std::path::Path::new(&file).exists() {
                    crate::files::restrict(std::path::Path::new(&file), 0o600)
                        .map_err(|e| StoreError::Unavailable(format!("cannot make {file} private: {e}")))?;
                }
            }
        }
        Ok(Store::over(Backend::Sqlite(pool)))
    }

    async fn connect_postgres(url: &str, max_connections: u32) -> Result<Store> {
        // sqlx's parse errors do not echo the URL, so the password stays out of the message.
        let opts = PgConnectOptions::from_str(url).map_err(|e| StoreError::InvalidUrl(e.to_string()))?;
        // No JIT: every query here is short, and the placement query's cost estimate (a walk of
        // the hosts' index that stops early) is high enough to make PostgreSQL compile it, which
        // took 300 ms of a 3 ms query.
        let opts = opts.options([("jit", "off")]);
        let target = format!(
            "postgres at {}:{}/{}",
            opts.get_host(),
            opts.get_port(),
            opts.get_database().unwrap_or("(default database)")
        );
        // One direct connection first: a pool that cannot connect only reports that it timed
        // out, while this reports why (refused, unknown host, authentication failed).
        match tokio::time::timeout(CONNECT_TIMEOUT, PgConnection::connect_with(&opts)).await {
            Ok(Ok(conn)) => {
                let _ = conn.close().await;
            }
            Ok(Err(e)) => return Err(StoreError::Unavailable(format!("cannot connect to {target}: {e}"))),
            Err(_) => {
                return Err(StoreError::Unavailable(format!(
                    "cannot connect to {target}: no answer within {CONNECT_TIMEOUT:?}"
                )))
            }
        }
        let pool = PgPoolOptions::new()
            .max_connections(max_connections)
            .acquire_timeout(CONNECT_TIMEOUT)
            .connect_with(opts)
            .await
            .map_err(|e| StoreError::Unavailable(format!("cannot connect to {target}: {e}")))?;
        Ok(Store::over(Backend::Postgres(pool)))
    }

    /// Applies the embedded migrations. PostgreSQL serialises concurrent migrators with an
    /// advisory lock; SQLite has none, so nodes (or pools) opening the same fresh file at once
    /// take an exclusive OS lock on `<file>.migrate-lock` around the migrator instead.
    async fn migrate(&self) -> Result<()> {
        let err = |e: sqlx::migrate::MigrateError| StoreError::Migration(e.to_string());
        match &self.backend {
            Backend::Sqlite(pool) => {
                let file = pool.connect_options().get_filename().to_path_buf();
                // sqlx names an in-memory database `file:sqlx-in-memory-N`: no file to lock (locking
                // it would leave a stray `file:…migrate-lock`, a name Windows checkouts cannot hold).
                let name = file.to_string_lossy();
                let in_memory = name.is_empty() || name.contains(":memory:") || name.starts_with("file:");
                let _lock = if in_memory { None } else { Some(lock_file(file).await?) };
                SQLITE_MIGRATOR.run(pool).await.map_err(err)?;
            }
            Backend::Postgres(pool) => POSTGRES_MIGRATOR.run(pool).await.map_err(err)?,
        }
        Ok(())
    }

    /// `sqlite` or `postgres`.
    pub fn backend(&self) -> &'static str {
        match self.backend {
            Backend::Sqlite(_) => "sqlite",
            Backend::Postgres(_) => "postgres",
        }
    }

    /// A round trip to the database (for readiness checks).
    #[tracing::instrument(level = "debug", skip(self))]
    pub async fn ping(&self) -> Result<()> {
        with_pool!(self, |pool| sqlx::query("SELECT 1").execute(pool).await.map(|r| r.rows_affected()))?;
        Ok(())
    }

    /// The database clock, epoch milliseconds.
    #[tracing::instrument(level = "debug", skip(self))]
    pub async fn now_ms(&self) -> Result<i64> {
        let now: i64 =
            with_pool!(self, |pool| { sqlx::query_scalar("SELECT now_ms FROM db_clock").fetch_one(pool).await })?;
        Ok(now)
    }

    /// Closes the pool, waiting for connections in use to be returned.
    pub async fn close(&self) {
        with_pool!(self, |pool| pool.close().await)
    }

    // --- zone identity ---

    /// The zone's row, created with a new v4 id on first call; `name` updates the stored name.
    ///
    /// One upsert, so nodes starting together on a fresh database all get the first one's id.
    #[tracing::instrument(level = "debug", skip(self))]
    pub async fn zone_identity(&self, name: &str) -> Result<ZoneRow> {
        const SQL: &str = "INSERT INTO zone (one, id, name, created_at_ms) \
             VALUES (1, $1, $2, (SELECT now_ms FROM db_clock)) \
             ON CONFLICT (one) DO UPDATE SET name = excluded.name \
             RETURNING id, name, created_at_ms";
        let new_id = Uuid::new_v4().to_string();
        let raw: RawZone =
            with_pool!(self, |pool| { sqlx::query_as(SQL).bind(&new_id).bind(name).fetch_one(pool).await })?;
        Ok(ZoneRow { id: parse_uuid("zone", &raw.id)?, name: raw.name, created_at_ms: raw.created_at_ms })
    }
}
