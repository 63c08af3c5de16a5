-- The zone's capability aggregate, maintained as hosts change instead of recomputed per read.
-- Keep in step with ../sqlite/0006_aggregate.sql: the same tables, values and trigger behaviour.
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
--
-- Unlike SQLite's, these triggers run once per *statement*, over its transition tables, and
-- apply the net change per key in one sorted upsert: PostgreSQL keeps every version of a row
-- updated again and again in one transaction, so row-level bookkeeping made a statement touching
-- n hosts cost O(n^2) on a key's row (100,000 hosts inserted in one statement took minutes). The
-- sorted order also means concurrent writers take the aggregate's row locks in one order.
CREATE TABLE aggregate_values (
    key         TEXT   NOT NULL,
    kind        TEXT   NOT NULL,
    value       TEXT   COLLATE "C" NOT NULL,
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

-- Applies a set of changes: `deltas[i]` hosts (+1 or -1, or their net sum) gained or lost
-- (keys[i], kinds[i], vals[i]) with float value floats[i]. Net per key, sorted, one upsert each
-- for keys and values, then the rows left at zero hosts go.
CREATE FUNCTION aggregate_apply(keys TEXT[], kinds TEXT[], vals TEXT[], floats DOUBLE PRECISION[], deltas BIGINT[])
RETURNS void LANGUAGE plpgsql AS $$
BEGIN
    IF keys IS NULL OR cardinality(keys) = 0 THEN
        RETURN;
    END IF;
    INSERT INTO aggregate_keys AS k (key, kind, hosts, sum)
    SELECT c.key, c.kind, SUM(c.delta), SUM(COALESCE(c.f, 0) * c.delta)
    FROM unnest(keys, kinds, floats, deltas) AS c(key, kind, f, delta)
    GROUP BY c.key, c.kind ORDER BY c.key, c.kind
    ON CONFLICT (key, kind) DO UPDATE SET hosts = k.hosts + excluded.hosts, sum = k.sum + excluded.sum;
    INSERT INTO aggregate_values AS v (key, kind, value, float_value, hosts)
    SELECT c.key, c.kind, c.value, MIN(c.f), SUM(c.delta)
    FROM unnest(keys, kinds, vals, floats, deltas) AS c(key, kind, value, f, delta)
    GROUP BY c.key, c.kind, c.value ORDER BY c.key, c.kind, c.value
    ON CONFLICT (key, kind, value) DO UPDATE SET hosts = v.hosts + excluded.hosts;
    DELETE FROM aggregate_values v USING unnest(keys, kinds, vals) AS c(key, kind, value)
    WHERE v.key = c.key AND v.kind = c.kind AND v.value = c.value AND v.hosts <= 0;
    DELETE FROM aggregate_keys k USING unnest(keys, kinds) AS c(key, kind)
    WHERE k.key = c.key AND k.kind = c.kind AND k.hosts <= 0;
END $$;

-- Capabilities count while their host is up. When a host is deleted its row is gone before the
-- cascade reaches these, so they do not count its capabilities out twice: the hosts delete
-- trigger below does.
CREATE FUNCTION host_capabilities_aggregate_insert() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM aggregate_apply(array_agg(n.key), array_agg(n.kind), array_agg(COALESCE(n.str_value, '')),
                            array_agg(n.float_value), array_agg(1::BIGINT))
    FROM new_caps n JOIN hosts h ON h.id = n.host_id WHERE h.state = 'up';
    RETURN NULL;
END $$;
CREATE FUNCTION host_capabilities_aggregate_update() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM aggregate_apply(array_agg(c.key), array_agg(c.kind), array_agg(c.value), array_agg(c.f), array_agg(c.delta))
    FROM (
        SELECT o.key, o.kind, COALESCE(o.str_value, '') AS value, o.float_value AS f, -1::BIGINT AS delta
        FROM old_caps o JOIN hosts h ON h.id = o.host_id WHERE h.state = 'up'
        UNION ALL
        SELECT n.key, n.kind, COALESCE(n.str_value, ''), n.float_value, 1
        FROM new_caps n JOIN hosts h ON h.id = n.host_id WHERE h.state = 'up'
    ) c;
    RETURN NULL;
END $$;
CREATE FUNCTION host_capabilities_aggregate_delete() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM aggregate_apply(array_agg(o.key), array_agg(o.kind), array_agg(COALESCE(o.str_value, '')),
                            array_agg(o.float_value), array_agg(-1::BIGINT))
    FROM old_caps o JOIN hosts h ON h.id = o.host_id WHERE h.state = 'up';
    RETURN NULL;
END $$;
CREATE TRIGGER host_capabilities_aggregate_insert AFTER INSERT ON host_capabilities
REFERENCING NEW TABLE AS new_caps FOR EACH STATEMENT EXECUTE FUNCTION host_capabilities_aggregate_insert();
CREATE TRIGGER host_capabilities_aggregate_update AFTER UPDATE ON host_capabilities
REFERENCING OLD TABLE AS old_caps NEW TABLE AS new_caps FOR EACH STATEMENT EXECUTE FUNCTION host_capabilities_aggregate_update();
CREATE TRIGGER host_capabilities_aggregate_delete AFTER DELETE ON host_capabilities
REFERENCING OLD TABLE AS old_caps FOR EACH STATEMENT EXECUTE FUNCTION host_capabilities_aggregate_delete();

-- A host's free capacity counts while it is up; its capabilities follow its state.
CREATE FUNCTION hosts_aggregate_insert() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM aggregate_apply(array_agg(c.key), array_agg(c.kind), array_agg(c.value), array_agg(c.f), array_agg(c.delta))
    FROM (
    SELECT 'capacity.free-vcpus', 'capacity', CAST(n.vcpus_total - n.vcpus_used AS TEXT), CAST(n.vcpus_total - n.vcpus_used AS DOUBLE PRECISION), 1::BIGINT FROM new_hosts n WHERE n.state = 'up'
    UNION ALL
    SELECT 'capacity.free-memory-mb', 'capacity', CAST(n.memory_mb_total - n.memory_mb_used AS TEXT), CAST(n.memory_mb_total - n.memory_mb_used AS DOUBLE PRECISION), 1::BIGINT FROM new_hosts n WHERE n.state = 'up'
    UNION ALL
    SELECT 'capacity.free-disk-gb', 'capacity', CAST(n.disk_gb_total - n.disk_gb_used AS TEXT), CAST(n.disk_gb_total - n.disk_gb_used AS DOUBLE PRECISION), 1::BIGINT FROM new_hosts n WHERE n.state = 'up'
    ) AS c(key, kind, value, f, delta);
    RETURN NULL;
END $$;
CREATE FUNCTION hosts_aggregate_update() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM aggregate_apply(array_agg(c.key), array_agg(c.kind), array_agg(c.value), array_agg(c.f), array_agg(c.delta))
    FROM (
    SELECT 'capacity.free-vcpus', 'capacity', CAST(o.vcpus_total - o.vcpus_used AS TEXT), CAST(o.vcpus_total - o.vcpus_used AS DOUBLE PRECISION), -1::BIGINT FROM old_hosts o JOIN new_hosts n ON n.id = o.id WHERE o.state = 'up' AND (n.state <> o.state OR n.vcpus_total <> o.vcpus_total OR n.vcpus_used <> o.vcpus_used OR n.memory_mb_total <> o.memory_mb_total OR n.memory_mb_used <> o.memory_mb_used OR n.disk_gb_total <> o.disk_gb_total OR n.disk_gb_used <> o.disk_gb_used)
    UNION ALL
    SELECT 'capacity.free-memory-mb', 'capacity', CAST(o.memory_mb_total - o.memory_mb_used AS TEXT), CAST(o.memory_mb_total - o.memory_mb_used AS DOUBLE PRECISION), -1::BIGINT FROM old_hosts o JOIN new_hosts n ON n.id = o.id WHERE o.state = 'up' AND (n.state <> o.state OR n.vcpus_total <> o.vcpus_total OR n.vcpus_used <> o.vcpus_used OR n.memory_mb_total <> o.memory_mb_total OR n.memory_mb_used <> o.memory_mb_used OR n.disk_gb_total <> o.disk_gb_total OR n.disk_gb_used <> o.disk_gb_used)
    UNION ALL
    SELECT 'capacity.free-disk-gb', 'capacity', CAST(o.disk_gb_total - o.disk_gb_used AS TEXT), CAST(o.disk_gb_total - o.disk_gb_used AS DOUBLE PRECISION), -1::BIGINT FROM old_hosts o JOIN new_hosts n ON n.id = o.id WHERE o.state = 'up' AND (n.state <> o.state OR n.vcpus_total <> o.vcpus_total OR n.vcpus_used <> o.vcpus_used OR n.memory_mb_total <> o.memory_mb_total OR n.memory_mb_used <> o.memory_mb_used OR n.disk_gb_total <> o.disk_gb_total OR n.disk_gb_used <> o.disk_gb_used)
    UNION ALL
    SELECT 'capacity.free-vcpus', 'capacity', CAST(n.vcpus_total - n.vcpus_used AS TEXT), CAST(n.vcpus_total - n.vcpus_used AS DOUBLE PRECISION), 1::BIGINT FROM old_hosts o JOIN new_hosts n ON n.id = o.id WHERE n.state = 'up' AND (n.state <> o.state OR n.vcpus_total <> o.vcpus_total OR n.vcpus_used <> o.vcpus_used OR n.memory_mb_total <> o.memory_mb_total OR n.memory_mb_used <> o.memory_mb_used OR n.disk_gb_total <> o.disk_gb_total OR n.disk_gb_used <> o.disk_gb_used)
    UNION ALL
    SELECT 'capacity.free-memory-mb', 'capacity', CAST(n.memory_mb_total - n.memory_mb_used AS TEXT), CAST(n.memory_mb_total - n.memory_mb_used AS DOUBLE PRECISION), 1::BIGINT FROM old_hosts o JOIN new_hosts n ON n.id = o.id WHERE n.state = 'up' AND (n.state <> o.state OR n.vcpus_total <> o.vcpus_total OR n.vcpus_used <> o.vcpus_used OR n.memory_mb_total <> o.memory_mb_total OR n.memory_mb_used <> o.memory_mb_used OR n.disk_gb_total <> o.disk_gb_total OR n.disk_gb_used <> o.disk_gb_used)
    UNION ALL
    SELECT 'capacity.free-disk-gb', 'capacity', CAST(n.disk_gb_total - n.disk_gb_used AS TEXT), CAST(n.disk_gb_total - n.disk_gb_used AS DOUBLE PRECISION), 1::BIGINT FROM old_hosts o JOIN new_hosts n ON n.id = o.id WHERE n.state = 'up' AND (n.state <> o.state OR n.vcpus_total <> o.vcpus_total OR n.vcpus_used <> o.vcpus_used OR n.memory_mb_total <> o.memory_mb_total OR n.memory_mb_used <> o.memory_mb_used OR n.disk_gb_total <> o.disk_gb_total OR n.disk_gb_used <> o.disk_gb_used)
    UNION ALL
    SELECT c.key, c.kind, COALESCE(c.str_value, ''), c.float_value, CASE WHEN n.state = 'up' THEN 1 ELSE -1 END::BIGINT
    FROM old_hosts o JOIN new_hosts n ON n.id = o.id JOIN host_capabilities c ON c.host_id = n.id
    WHERE n.state <> o.state
    ) AS c(key, kind, value, f, delta);
    RETURN NULL;
END $$;
-- Row-level and BEFORE: the host's capabilities are still there to count out (the cascade
-- deletes them after the host). Deleting hosts is rare.
CREATE FUNCTION hosts_aggregate_delete() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM aggregate_apply(array_agg(c.key), array_agg(c.kind), array_agg(c.value), array_agg(c.f), array_agg(c.delta))
    FROM (
    SELECT 'capacity.free-vcpus', 'capacity', CAST(OLD.vcpus_total - OLD.vcpus_used AS TEXT), CAST(OLD.vcpus_total - OLD.vcpus_used AS DOUBLE PRECISION), -1::BIGINT FROM (SELECT 1) AS one
    UNION ALL
    SELECT 'capacity.free-memory-mb', 'capacity', CAST(OLD.memory_mb_total - OLD.memory_mb_used AS TEXT), CAST(OLD.memory_mb_total - OLD.memory_mb_used AS DOUBLE PRECISION), -1::BIGINT FROM (SELECT 1) AS one
    UNION ALL
    SELECT 'capacity.free-disk-gb', 'capacity', CAST(OLD.disk_gb_total - OLD.disk_gb_used AS TEXT), CAST(OLD.disk_gb_total - OLD.disk_gb_used AS DOUBLE PRECISION), -1::BIGINT FROM (SELECT 1) AS one
    UNION ALL
    SELECT key, kind, COALESCE(str_value, ''), float_value, -1::BIGINT FROM host_capabilities WHERE host_id = OLD.id
    ) AS c(key, kind, value, f, delta);
    RETURN OLD;
END $$;
CREATE TRIGGER hosts_aggregate_insert AFTER INSERT ON hosts
REFERENCING NEW TABLE AS new_hosts FOR EACH STATEMENT EXECUTE FUNCTION hosts_aggregate_insert();
CREATE TRIGGER hosts_aggregate_update AFTER UPDATE ON hosts
REFERENCING OLD TABLE AS old_hosts NEW TABLE AS new_hosts FOR EACH STATEMENT EXECUTE FUNCTION hosts_aggregate_update();
CREATE TRIGGER hosts_aggregate_delete BEFORE DELETE ON hosts
FOR EACH ROW WHEN (OLD.state = 'up') EXECUTE FUNCTION hosts_aggregate_delete();

-- The silent-host sweep reads up hosts by report age: an index range, not a scan of every host.
CREATE INDEX hosts_state_last_report ON hosts (state, last_report_ms);

-- Placement samples up hosts in id order from a random id (store/placement.rs): an index range
-- on (state, id). It replaces the index on state alone, a prefix of both new ones.
DROP INDEX hosts_state;
CREATE INDEX hosts_state_id ON hosts (state, id);
