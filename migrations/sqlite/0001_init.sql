-- Schema of a zone's database, SQLite dialect (the embedded default).
-- Keep in step with ../postgres/0001_init.sql: the same tables, columns and values on both backends.
-- Ids are TEXT (UUIDs in their hyphenated form), times are BIGINT epoch milliseconds read from
-- `db_clock`, flags are 0/1. Never edit this file once released: add a new numbered migration.

-- The database clock, the only clock two nodes ever compare. This view is the one place the SQLite
-- expression lives; every query reads `(SELECT now_ms FROM db_clock)`, so the query text is the same
-- on both backends. julianday('now') is fixed for the duration of one statement.
CREATE VIEW db_clock AS
    SELECT CAST((julianday('now') - 2440587.5) * 86400000.0 AS INTEGER) AS now_ms;

-- This zone's identity: a single row (`one` = 1), created by the first node that starts.
CREATE TABLE zone (
    one           INTEGER PRIMARY KEY CHECK (one = 1),
    id            TEXT    NOT NULL,
    name          TEXT    NOT NULL,
    created_at_ms BIGINT  NOT NULL
);

-- The ring epoch: bumped in the same transaction as every membership change, so a node that sees
-- an unchanged epoch knows the node set is unchanged.
CREATE TABLE cluster (
    one   INTEGER PRIMARY KEY CHECK (one = 1),
    epoch BIGINT  NOT NULL
);
INSERT INTO cluster (one, epoch) VALUES (1, 0);

-- One row per management node (a v4 UUID per boot).
CREATE TABLE nodes (
    id            TEXT   PRIMARY KEY,
    api_url       TEXT   NOT NULL,
    state         TEXT   NOT NULL CHECK (state IN ('joining', 'alive', 'leaving', 'left', 'dead')),
    joined_at_ms  BIGINT NOT NULL,
    heartbeat_ms  BIGINT NOT NULL,
    applied_epoch BIGINT NOT NULL DEFAULT 0
);

CREATE TABLE accounts (
    username      TEXT   PRIMARY KEY,
    password_hash TEXT   NOT NULL,
    role          TEXT   NOT NULL,
    client_id     TEXT,
    created_at_ms BIGINT NOT NULL
);

-- Bearer tokens: only the SHA-256 (hex) of a token is stored, never the token.
CREATE TABLE tokens (
    hash          TEXT   PRIMARY KEY,
    username      TEXT   NOT NULL REFERENCES accounts (username) ON DELETE CASCADE,
    created_at_ms BIGINT NOT NULL,
    expires_at_ms BIGINT NOT NULL
);
CREATE INDEX tokens_username ON tokens (username);
CREATE INDEX tokens_expires_at ON tokens (expires_at_ms);

-- The database-backed work queue. AUTOINCREMENT so ids are never reused: FIFO is by id.
CREATE TABLE jobs (
    id             INTEGER PRIMARY KEY AUTOINCREMENT,
    queue          TEXT    NOT NULL,
    payload        TEXT    NOT NULL,
    state          TEXT    NOT NULL CHECK (state IN ('pending', 'running', 'done', 'failed')),
    owner          TEXT,
    lease_until_ms BIGINT,
    result         TEXT,
    created_at_ms  BIGINT  NOT NULL
);
CREATE INDEX jobs_queue_state_id ON jobs (queue, state, id);

-- One lock row per queue: the job running on that queue (`job_id`), its owner and lease. A claim
-- takes the row with an upsert that only succeeds when no job holds it under a live lease, which
-- is what keeps one running job per queue zone-wide.
CREATE TABLE job_locks (
    queue          TEXT   PRIMARY KEY,
    holder         TEXT,
    job_id         BIGINT,
    lease_until_ms BIGINT NOT NULL DEFAULT 0
);

-- Diagnostic counters: how many nodes work on a resource at once.
CREATE TABLE probe (
    resource_id TEXT   PRIMARY KEY,
    active      BIGINT NOT NULL,
    max_active  BIGINT NOT NULL,
    completed   BIGINT NOT NULL
);
