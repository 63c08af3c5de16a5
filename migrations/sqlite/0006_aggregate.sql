-- The zone's capability aggregate, maintained as hosts change instead of recomputed per read.
-- Keep in step with ../postgres/0006_aggregate.sql: the same tables, values and trigger behaviour.
--
-- What is counted: every capability of every *up* host, and each up host's free capacity under
-- kind 'capacity' (keys capacity.free-vcpus, capacity.free-memory-mb, capacity.free-disk-gb).
-- `aggregate_values` keeps how many up hosts hold each (key, kind, value), so min/max stay right
-- when the host holding the extreme leaves (the next value's row is still there, found by index),
-- and string keys list their distinct values. `aggregate_keys` keeps the count and the float sum
-- per (key, kind) (bools: the number of true values), so a read costs O(keys), not O(hosts).
-- Rows reaching zero hosts are deleted, which also resets any float rounding in a sum.
--
-- Triggers do the bookkeeping in the statement that changes a host, so every writer (any node,
-- any code path) keeps it right without an extra round trip: host_capabilities rows on insert,
-- update and delete; hosts on insert, on a change of state or capacity, and on delete.
CREATE TABLE aggregate_values (
    key         TEXT   NOT NULL,
    kind        TEXT   NOT NULL,
    value       TEXT   NOT NULL,
    float_value DOUBLE PRECISION,
    hosts       BIGINT NOT NULL,
    PRIMARY KEY (key, kind, value)
);
CREATE INDEX aggregate_values_float ON aggregate_values (key, kind, float_value);

CREATE TABLE aggregate_keys (
    key   TEXT             NOT NULL,
    kind  TEXT             NOT NULL,
    hosts BIGINT           NOT NULL,
    sum   DOUBLE PRECISION NOT NULL,
    PRIMARY KEY (key, kind)
);

-- Start from what is there.
INSERT INTO aggregate_values (key, kind, value, float_value, hosts)
SELECT c.key, c.kind, COALESCE(c.str_value, ''), MIN(c.float_value), COUNT(*)
FROM host_capabilities c JOIN hosts h ON h.id = c.host_id
WHERE h.state = 'up' GROUP BY c.key, c.kind, COALESCE(c.str_value, '');
INSERT INTO aggregate_values (key, kind, value, float_value, hosts)
SELECT 'capacity.free-vcpus', 'capacity', CAST(vcpus_total - vcpus_used AS TEXT), vcpus_total - vcpus_used, COUNT(*)
FROM hosts WHERE state = 'up' GROUP BY vcpus_total - vcpus_used;
INSERT INTO aggregate_values (key, kind, value, float_value, hosts)
SELECT 'capacity.free-memory-mb', 'capacity', CAST(memory_mb_total - memory_mb_used AS TEXT), memory_mb_total - memory_mb_used, COUNT(*)
FROM hosts WHERE state = 'up' GROUP BY memory_mb_total - memory_mb_used;
INSERT INTO aggregate_values (key, kind, value, float_value, hosts)
SELECT 'capacity.free-disk-gb', 'capacity', CAST(disk_gb_total - disk_gb_used AS TEXT), disk_gb_total - disk_gb_used, COUNT(*)
FROM hosts WHERE state = 'up' GROUP BY disk_gb_total - disk_gb_used;
INSERT INTO aggregate_keys (key, kind, hosts, sum)
SELECT key, kind, SUM(hosts), COALESCE(SUM(float_value * hosts), 0) FROM aggregate_values GROUP BY key, kind;

-- One change to the aggregate: `delta` hosts (+1 or -1) gained or lost (key, kind, value).
-- Writing to this view runs the bookkeeping once, wherever the change comes from. The keys row
-- is written first: under PostgreSQL its row lock orders concurrent changes to one key.
CREATE VIEW aggregate_changes AS
SELECT key, kind, value, float_value, hosts AS delta FROM aggregate_values WHERE 0;

CREATE TRIGGER aggregate_apply INSTEAD OF INSERT ON aggregate_changes
BEGIN
    INSERT INTO aggregate_keys (key, kind, hosts, sum)
    VALUES (NEW.key, NEW.kind, NEW.delta, COALESCE(NEW.float_value, 0) * NEW.delta)
    ON CONFLICT (key, kind) DO UPDATE SET hosts = hosts + excluded.hosts, sum = sum + excluded.sum;
    INSERT INTO aggregate_values (key, kind, value, float_value, hosts)
    VALUES (NEW.key, NEW.kind, NEW.value, NEW.float_value, NEW.delta)
    ON CONFLICT (key, kind, value) DO UPDATE SET hosts = hosts + excluded.hosts;
    DELETE FROM aggregate_values WHERE key = NEW.key AND kind = NEW.kind AND value = NEW.value AND hosts <= 0;
    DELETE FROM aggregate_keys WHERE key = NEW.key AND kind = NEW.kind AND hosts <= 0;
END;

-- A capability counts while its host is up.
CREATE TRIGGER host_capabilities_aggregate_insert AFTER INSERT ON host_capabilities
WHEN EXISTS (SELECT 1 FROM hosts WHERE id = NEW.host_id AND state = 'up')
BEGIN
    INSERT INTO aggregate_changes (key, kind, value, float_value, delta)
    VALUES (NEW.key, NEW.kind, COALESCE(NEW.str_value, ''), NEW.float_value, 1);
END;

CREATE TRIGGER host_capabilities_aggregate_update AFTER UPDATE ON host_capabilities
WHEN EXISTS (SELECT 1 FROM hosts WHERE id = NEW.host_id AND state = 'up')
BEGIN
    INSERT INTO aggregate_changes (key, kind, value, float_value, delta)
    VALUES (OLD.key, OLD.kind, COALESCE(OLD.str_value, ''), OLD.float_value, -1);
    INSERT INTO aggregate_changes (key, kind, value, float_value, delta)
    VALUES (NEW.key, NEW.kind, COALESCE(NEW.str_value, ''), NEW.float_value, 1);
END;

-- When a host is deleted its row is gone before the cascade reaches here, so this does not
-- fire for that case; the hosts delete trigger below counts those capabilities out.
CREATE TRIGGER host_capabilities_aggregate_delete AFTER DELETE ON host_capabilities
WHEN EXISTS (SELECT 1 FROM hosts WHERE id = OLD.host_id AND state = 'up')
BEGIN
    INSERT INTO aggregate_changes (key, kind, value, float_value, delta)
    VALUES (OLD.key, OLD.kind, COALESCE(OLD.str_value, ''), OLD.float_value, -1);
END;

-- A host's free capacity counts while it is up; its capabilities follow its state.
CREATE TRIGGER hosts_aggregate_insert AFTER INSERT ON hosts
WHEN NEW.state = 'up'
BEGIN
    INSERT INTO aggregate_changes (key, kind, value, float_value, delta) VALUES
        ('capacity.free-vcpus', 'capacity', CAST(NEW.vcpus_total - NEW.vcpus_used AS TEXT), NEW.vcpus_total - NEW.vcpus_used, 1),
        ('capacity.free-memory-mb', 'capacity', CAST(NEW.memory_mb_total - NEW.memory_mb_used AS TEXT), NEW.memory_mb_total - NEW.memory_mb_used, 1),
        ('capacity.free-disk-gb', 'capacity', CAST(NEW.disk_gb_total - NEW.disk_gb_used AS TEXT), NEW.disk_gb_total - NEW.disk_gb_used, 1);
END;

CREATE TRIGGER hosts_aggregate_update
AFTER UPDATE OF state, vcpus_total, memory_mb_total, disk_gb_total, vcpus_used, memory_mb_used, disk_gb_used ON hosts
WHEN OLD.state IS NOT NEW.state
  OR OLD.vcpus_total IS NOT NEW.vcpus_total OR OLD.vcpus_used IS NOT NEW.vcpus_used
  OR OLD.memory_mb_total IS NOT NEW.memory_mb_total OR OLD.memory_mb_used IS NOT NEW.memory_mb_used
  OR OLD.disk_gb_total IS NOT NEW.disk_gb_total OR OLD.disk_gb_used IS NOT NEW.disk_gb_used
BEGIN
    INSERT INTO aggregate_changes (key, kind, value, float_value, delta)
    SELECT * FROM (VALUES
        ('capacity.free-vcpus', 'capacity', CAST(OLD.vcpus_total - OLD.vcpus_used AS TEXT), OLD.vcpus_total - OLD.vcpus_used, -1),
        ('capacity.free-memory-mb', 'capacity', CAST(OLD.memory_mb_total - OLD.memory_mb_used AS TEXT), OLD.memory_mb_total - OLD.memory_mb_used, -1),
        ('capacity.free-disk-gb', 'capacity', CAST(OLD.disk_gb_total - OLD.disk_gb_used AS TEXT), OLD.disk_gb_total - OLD.disk_gb_used, -1))
    WHERE OLD.state = 'up';
    INSERT INTO aggregate_changes (key, kind, value, float_value, delta)
    SELECT * FROM (VALUES
        ('capacity.free-vcpus', 'capacity', CAST(NEW.vcpus_total - NEW.vcpus_used AS TEXT), NEW.vcpus_total - NEW.vcpus_used, 1),
        ('capacity.free-memory-mb', 'capacity', CAST(NEW.memory_mb_total - NEW.memory_mb_used AS TEXT), NEW.memory_mb_total - NEW.memory_mb_used, 1),
        ('capacity.free-disk-gb', 'capacity', CAST(NEW.disk_gb_total - NEW.disk_gb_used AS TEXT), NEW.disk_gb_total - NEW.disk_gb_used, 1))
    WHERE NEW.state = 'up';
    INSERT INTO aggregate_changes (key, kind, value, float_value, delta)
    SELECT key, kind, COALESCE(str_value, ''), float_value, CASE WHEN NEW.state = 'up' THEN 1 ELSE -1 END
    FROM host_capabilities WHERE host_id = NEW.id AND OLD.state IS NOT NEW.state;
END;

CREATE TRIGGER hosts_aggregate_delete BEFORE DELETE ON hosts
WHEN OLD.state = 'up'
BEGIN
    INSERT INTO aggregate_changes (key, kind, value, float_value, delta) VALUES
        ('capacity.free-vcpus', 'capacity', CAST(OLD.vcpus_total - OLD.vcpus_used AS TEXT), OLD.vcpus_total - OLD.vcpus_used, -1),
        ('capacity.free-memory-mb', 'capacity', CAST(OLD.memory_mb_total - OLD.memory_mb_used AS TEXT), OLD.memory_mb_total - OLD.memory_mb_used, -1),
        ('capacity.free-disk-gb', 'capacity', CAST(OLD.disk_gb_total - OLD.disk_gb_used AS TEXT), OLD.disk_gb_total - OLD.disk_gb_used, -1);
    INSERT INTO aggregate_changes (key, kind, value, float_value, delta)
    SELECT key, kind, COALESCE(str_value, ''), float_value, -1 FROM host_capabilities WHERE host_id = OLD.id;
END;

-- The silent-host sweep reads up hosts by report age: an index range, not a scan of every host.
CREATE INDEX hosts_state_last_report ON hosts (state, last_report_ms);

-- Placement samples up hosts in id order from a random id (store/placement.rs): an index range
-- on (state, id). It replaces the index on state alone, a prefix of both new ones.
DROP INDEX hosts_state;
CREATE INDEX hosts_state_id ON hosts (state, id);
