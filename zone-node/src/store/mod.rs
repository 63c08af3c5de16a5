//! The zone's database: SQLite (embedded default) or PostgreSQL, behind one [`Store`] type.
//!
//! Migrations (`migrations/sqlite`, `migrations/postgres`) are embedded in the binary and applied
//! at connect. Every time two nodes compare (heartbeats, leases, token expiry) comes from the
//! database clock, never from a node's clock. Ids are stored as text, times as epoch milliseconds
//! (BIGINT), so both dialects hold the same values.
//!
//! INTERFACE CONTRACT (skeleton): the implementation replaces the `todo!()` bodies; the signatures
//! are what the rest of the node codes against.

use uuid::Uuid;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("database unavailable: {0}")]
    Unavailable(String),
    #[error("{0} already exists")]
    Conflict(String),
    #[error("invalid database url: {0}")]
    InvalidUrl(String),
    #[error("migration failed: {0}")]
    Migration(String),
    #[error("database error: {0}")]
    Other(String),
}

pub type Result<T, E = StoreError> = std::result::Result<T, E>;

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

#[derive(Debug, Clone, PartialEq)]
pub struct ZoneRow {
    pub id: Uuid,
    pub name: String,
    pub created_at_ms: i64,
}

#[derive(Debug, Clone, PartialEq)]
pub struct AccountRow {
    pub username: String,
    pub password_hash: String,
    /// `admin` or `member`.
    pub role: String,
    pub client_id: Option<String>,
    pub created_at_ms: i64,
}

#[derive(Debug, Clone, PartialEq)]
pub struct TokenRow {
    pub username: String,
    pub role: String,
    pub client_id: Option<String>,
    pub expires_at_ms: i64,
    /// True when `expires_at_ms` is at or before the database clock.
    pub expired: bool,
}

#[derive(Debug, Clone, PartialEq)]
pub struct JobRow {
    pub id: i64,
    pub queue: String,
    pub payload: String,
    /// `pending`, `running`, `done` or `failed`.
    pub state: String,
    pub owner: Option<Uuid>,
    pub lease_until_ms: Option<i64>,
    pub result: Option<String>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct ProbeRow {
    pub resource_id: String,
    pub active: i64,
    pub max_active: i64,
    pub completed: i64,
}

/// The database of one zone. Cheap to clone (a pool).
#[derive(Clone)]
pub struct Store {
    _private: (),
}

impl Store {
    /// Connects to `sqlite://...` or `postgres://...` and applies migrations.
    pub async fn connect(url: &str) -> Result<Store> {
        let _ = url;
        todo!()
    }
    /// `sqlite` or `postgres`.
    pub fn backend(&self) -> &'static str {
        todo!()
    }
    pub async fn ping(&self) -> Result<()> {
        todo!()
    }
    /// The database clock, epoch milliseconds.
    pub async fn now_ms(&self) -> Result<i64> {
        todo!()
    }
    pub async fn close(&self) {}

    // --- zone identity ---
    /// The zone's row, created with a new v4 id on first call; `name` updates the stored name.
    pub async fn zone_identity(&self, name: &str) -> Result<ZoneRow> {
        let _ = name;
        todo!()
    }

    // --- membership ---
    /// Inserts this node in state `joining` (or `alive` when `alive` is true), stamped with the
    /// database clock, and bumps the ring epoch. Returns the new epoch.
    pub async fn node_join(&self, id: Uuid, api_url: &str, alive: bool) -> Result<i64> {
        let _ = (id, api_url, alive);
        todo!()
    }
    /// Stamps the heartbeat with the database clock. Returns false when the row is missing or in a
    /// state that means this node must stop (`dead`, `left`): it was evicted.
    pub async fn node_heartbeat(&self, id: Uuid) -> Result<bool> {
        let _ = id;
        todo!()
    }
    /// Moves the node from one of `from` to `to`, bumping the epoch. False if it was in none of them.
    pub async fn node_transition(&self, id: Uuid, from: &[&str], to: &str) -> Result<bool> {
        let _ = (id, from, to);
        todo!()
    }
    /// Records that `id` has applied (and drained for) `epoch`; never lowers it.
    pub async fn node_ack_epoch(&self, id: Uuid, epoch: i64) -> Result<()> {
        let _ = (id, epoch);
        todo!()
    }
    /// Marks `dead` every `joining`/`alive`/`leaving` node whose heartbeat is older than
    /// `dead_after_ms` by the database clock, bumping the epoch once if any. Returns them.
    pub async fn nodes_evict_stale(&self, dead_after_ms: i64) -> Result<Vec<Uuid>> {
        let _ = dead_after_ms;
        todo!()
    }
    /// All node rows, with the epoch and the database clock, read in one transaction.
    pub async fn membership(&self) -> Result<Membership> {
        todo!()
    }
    /// Deletes `dead`/`left` rows whose heartbeat is older than `older_than_ms`.
    pub async fn nodes_purge(&self, older_than_ms: i64) -> Result<u64> {
        let _ = older_than_ms;
        todo!()
    }

    // --- accounts ---
    /// Conflict when the username exists.
    pub async fn account_create(&self, row: &AccountRow) -> Result<AccountRow> {
        let _ = row;
        todo!()
    }
    /// Creates the account only if no account of that username exists; true if created.
    pub async fn account_create_if_absent(&self, row: &AccountRow) -> Result<bool> {
        let _ = row;
        todo!()
    }
    pub async fn account_get(&self, username: &str) -> Result<Option<AccountRow>> {
        let _ = username;
        todo!()
    }
    pub async fn accounts(&self) -> Result<Vec<AccountRow>> {
        todo!()
    }
    /// Deletes the account and its tokens; false if absent.
    pub async fn account_delete(&self, username: &str) -> Result<bool> {
        let _ = username;
        todo!()
    }

    // --- tokens (only their SHA-256 is stored) ---
    pub async fn token_insert(&self, token_hash: &str, username: &str, ttl_ms: i64) -> Result<i64> {
        let _ = (token_hash, username, ttl_ms);
        todo!()
    }
    pub async fn token_lookup(&self, token_hash: &str) -> Result<Option<TokenRow>> {
        let _ = token_hash;
        todo!()
    }
    pub async fn tokens_purge_expired(&self) -> Result<u64> {
        todo!()
    }

    // --- database-backed work queue ---
    pub async fn job_enqueue(&self, queue: &str, payload: &str) -> Result<i64> {
        let _ = (queue, payload);
        todo!()
    }
    /// Claims the oldest pending job of `queue` for `node` with a lease, but only when no other
    /// job of that queue is running under a live lease: one job per queue at a time, zone-wide.
    pub async fn job_claim(&self, queue: &str, node: Uuid, lease_ms: i64) -> Result<Option<JobRow>> {
        let _ = (queue, node, lease_ms);
        todo!()
    }
    pub async fn job_renew(&self, id: i64, node: Uuid, lease_ms: i64) -> Result<bool> {
        let _ = (id, node, lease_ms);
        todo!()
    }
    pub async fn job_finish(&self, id: i64, node: Uuid, ok: bool, result: &str) -> Result<bool> {
        let _ = (id, node, ok, result);
        todo!()
    }
    pub async fn job_get(&self, id: i64) -> Result<Option<JobRow>> {
        let _ = id;
        todo!()
    }
    /// Queue names with pending jobs.
    pub async fn job_queues_pending(&self) -> Result<Vec<String>> {
        todo!()
    }

    // --- probe (diagnostic counters) ---
    /// Increments `active` (and `max_active` if exceeded) of the resource; returns `active`.
    pub async fn probe_enter(&self, resource_id: &str) -> Result<i64> {
        let _ = resource_id;
        todo!()
    }
    /// Decrements `active`, increments `completed`; returns `completed`.
    pub async fn probe_exit(&self, resource_id: &str) -> Result<i64> {
        let _ = resource_id;
        todo!()
    }
    pub async fn probe_stats(&self) -> Result<Vec<ProbeRow>> {
        todo!()
    }
}
