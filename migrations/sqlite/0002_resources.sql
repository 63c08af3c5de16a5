-- Zone resources: hosts with typed capabilities, instances, and the zone's generation counter.
-- Keep in step with ../postgres/0002_resources.sql: the same tables, columns and values on both
-- backends. Never edit this file once released: add a new numbered migration.

-- A host (hypervisor) of this zone and its capacity. `*_used` is what placements have reserved;
-- the CHECKs are the last line of defence against overcommit (reservations are conditional
-- UPDATEs that never reach them). `version` grows on every change, for optimistic updates.
CREATE TABLE hosts (
    id                TEXT   PRIMARY KEY,
    name              TEXT   NOT NULL UNIQUE,
    agent_url         TEXT   NOT NULL,
    state             TEXT   NOT NULL CHECK (state IN ('up', 'down')),
    vcpus_total       BIGINT NOT NULL CHECK (vcpus_total >= 0),
    memory_mb_total   BIGINT NOT NULL CHECK (memory_mb_total >= 0),
    disk_gb_total     BIGINT NOT NULL CHECK (disk_gb_total >= 0),
    vcpus_used        BIGINT NOT NULL DEFAULT 0 CHECK (vcpus_used >= 0 AND vcpus_used <= vcpus_total),
    memory_mb_used    BIGINT NOT NULL DEFAULT 0 CHECK (memory_mb_used >= 0 AND memory_mb_used <= memory_mb_total),
    disk_gb_used      BIGINT NOT NULL DEFAULT 0 CHECK (disk_gb_used >= 0 AND disk_gb_used <= disk_gb_total),
    missed_reports    BIGINT NOT NULL DEFAULT 0,
    last_report_ms    BIGINT NOT NULL,
    created_at_ms     BIGINT NOT NULL,
    version           BIGINT NOT NULL DEFAULT 0
);
CREATE INDEX hosts_state ON hosts (state);

-- A host's capabilities as the seed's (string value, float value, type) tuple, so range filters
-- run in SQL on `float_value`. float: float_value set, str_value its text; bool: float_value 0/1
-- and str_value 'true'/'false'; string: str_value set, float_value NULL.
CREATE TABLE host_capabilities (
    host_id     TEXT   NOT NULL REFERENCES hosts (id) ON DELETE CASCADE,
    key         TEXT   NOT NULL,
    kind        TEXT   NOT NULL CHECK (kind IN ('float', 'bool', 'string')),
    str_value   TEXT,
    float_value REAL,
    PRIMARY KEY (host_id, key)
);
CREATE INDEX host_capabilities_key_float ON host_capabilities (key, float_value);
CREATE INDEX host_capabilities_key_str ON host_capabilities (key, str_value);

-- Guest instances. A host with instances cannot be deleted (no cascade: the foreign key refuses).
CREATE TABLE instances (
    id            TEXT   PRIMARY KEY,
    name          TEXT   NOT NULL,
    client_id     TEXT   NOT NULL,
    state         TEXT   NOT NULL,
    host_id       TEXT   REFERENCES hosts (id),
    vcpus         BIGINT NOT NULL CHECK (vcpus >= 0),
    memory_mb     BIGINT NOT NULL CHECK (memory_mb >= 0),
    disk_gb       BIGINT NOT NULL CHECK (disk_gb >= 0),
    error_reason  TEXT,
    version       BIGINT NOT NULL DEFAULT 0,
    created_at_ms BIGINT NOT NULL,
    updated_at_ms BIGINT NOT NULL
);
CREATE INDEX instances_client_id ON instances (client_id);
CREATE INDEX instances_host_id ON instances (host_id);

-- Bumped whenever instance ownership in the zone changes (create, delete, migrate), so parents
-- and owner-lookup caches can tell that their answers may be stale. A single row (`one` = 1).
CREATE TABLE zone_generation (
    one        INTEGER PRIMARY KEY CHECK (one = 1),
    generation BIGINT  NOT NULL
);
INSERT INTO zone_generation (one, generation) VALUES (1, 0);
