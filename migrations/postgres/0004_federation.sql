-- Federation: the child zones this zone polls and routes to, and the gateway's instance mapping.
-- Keep in step with ../sqlite/0004_federation.sql: the same tables, columns and values on both
-- backends. Ids are TEXT (UUIDs), times BIGINT epoch milliseconds from `db_clock`, flags 0/1.
-- Never edit this file once released: add a new numbered migration.

-- A child zone. `id` is the child's own zone id (its `GET /v1/zone`), so registering the same
-- zone twice under two names is refused by the primary key, and loop checks compare ids.
-- `password_sealed` is the child's admin password sealed with this zone's secret key
-- (`v1:<key id>:<base64>`, see zone-node/src/secrets.rs); the plaintext is never stored.
-- `status` is what polling saw ('online' | 'offline'); `disabled` is the operator's switch and
-- is kept apart, so re-enabling a child restores whatever polling knows about it.
-- `capabilities` (JSON of api::Aggregate), `generation` and `subtree` (JSON of
-- Vec<api::SubtreeEntry>) are the child's answer to its last good poll: kept as JSON text because
-- they are read and written whole, never queried by field.
CREATE TABLE child_zones (
    id                   TEXT    PRIMARY KEY,
    name                 TEXT    NOT NULL UNIQUE,
    api_url              TEXT    NOT NULL,
    username             TEXT    NOT NULL,
    password_sealed      TEXT    NOT NULL,
    weight_offset        DOUBLE PRECISION NOT NULL DEFAULT 0,
    weight_scale         DOUBLE PRECISION NOT NULL DEFAULT 1 CHECK (weight_scale >= 0),
    disabled             INTEGER NOT NULL DEFAULT 0 CHECK (disabled IN (0, 1)),
    status               TEXT    NOT NULL DEFAULT 'offline' CHECK (status IN ('online', 'offline')),
    consecutive_failures BIGINT  NOT NULL DEFAULT 0 CHECK (consecutive_failures >= 0),
    last_seen_ms         BIGINT,
    last_error           TEXT,
    capabilities         TEXT    NOT NULL DEFAULT '{}',
    generation           BIGINT  NOT NULL DEFAULT 0,
    subtree              TEXT    NOT NULL DEFAULT '[]',
    created_at_ms        BIGINT  NOT NULL,
    updated_at_ms        BIGINT  NOT NULL,
    version              BIGINT  NOT NULL DEFAULT 0
);

-- The gateway's instance mapping: which child holds an instance this zone routed (or found by
-- asking its children), so show, action and delete by id go straight to it. Deleting the child
-- deletes its routes: they would point at nothing. `client_id` lets a client's list ask only the
-- children that hold that client's instances.
CREATE TABLE instance_routes (
    instance_id   TEXT   PRIMARY KEY,
    child_id      TEXT   NOT NULL REFERENCES child_zones (id) ON DELETE CASCADE,
    client_id     TEXT   NOT NULL,
    created_at_ms BIGINT NOT NULL
);
CREATE INDEX instance_routes_child_id ON instance_routes (child_id);
CREATE INDEX instance_routes_client_id ON instance_routes (client_id);
