-- The aggregate's rows split into 32 shards by host id, so concurrent writers stop queueing on
-- them. ../sqlite/0009_aggregate_shards.sql is a no-op: SQLite has one writer at a time anyway.
--
-- Why: every registration, capacity change and state change of a host updates the same few
-- aggregate rows (one per capability key and per free-capacity value), and on PostgreSQL a
-- writer holds those row locks until it commits. Measured: registrations waited 0.8-2 s each on
-- a `transactionid` lock and ran one at a time, about 84 a second, and creates ran at 96-148/s.
-- Now a host's contributions always go to the shard of its id (`aggregate_shard`), so two writers
-- wait for each other only when their hosts share a shard and a key. A host's count in a shard
-- never goes below zero (it only leaves the shard it entered), so rows reaching zero hosts are
-- still deleted, and every row still standing has hosts > 0: min and max stay one index probe on
-- (key, kind, float_value), whichever shard holds the extreme. Readers sum over the shards
-- (store/aggregate.rs): O(keys x shards), at most 32 rows per key.

-- Every trigger below reads `hosts` and `host_capabilities` only by primary key, one probe per
-- changed row (EXISTS / LATERAL with OFFSET 0 keep the planner from turning them into joins):
-- with 100,000 hosts, a hash join over a table without fresh statistics (autovacuum off) read
-- every host on every registration and report batch, and PostgreSQL used both cores for 170
-- registrations a second (perf: hash_bytes, heapgetpage, tbm_add_tuples).

-- The shard of a host id: its first two hex digits, modulo 32. Only the id's text, so the same
-- host always maps to the same shard, on every node and after every upgrade.
CREATE FUNCTION aggregate_shard(id TEXT) RETURNS INTEGER LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT (GREATEST(strpos('0123456789abcdef', substr(lower(id), 1, 1)) - 1, 0) * 16
          + GREATEST(strpos('0123456789abcdef', substr(lower(id), 2, 1)) - 1, 0)) % 32
$$;

-- The existing rows are rebuilt from the hosts, per shard: left in one shard, a host would later
-- leave from its own shard and drive that shard's count below zero.
DELETE FROM aggregate_values;
DELETE FROM aggregate_keys;
ALTER TABLE aggregate_values ADD COLUMN shard INTEGER NOT NULL DEFAULT 0;
ALTER TABLE aggregate_values DROP CONSTRAINT aggregate_values_pkey;
ALTER TABLE aggregate_values ADD PRIMARY KEY (key, kind, value, shard);
ALTER TABLE aggregate_keys ADD COLUMN shard INTEGER NOT NULL DEFAULT 0;
ALTER TABLE aggregate_keys DROP CONSTRAINT aggregate_keys_pkey;
ALTER TABLE aggregate_keys ADD PRIMARY KEY (key, kind, shard);

INSERT INTO aggregate_values (key, kind, value, float_value, hosts, shard)
SELECT c.key, c.kind, COALESCE(c.str_value, ''), MIN(c.float_value), COUNT(*), aggregate_shard(h.id)
FROM host_capabilities c JOIN hosts h ON h.id = c.host_id
WHERE h.state = 'up' GROUP BY c.key, c.kind, COALESCE(c.str_value, ''), aggregate_shard(h.id);
INSERT INTO aggregate_values (key, kind, value, float_value, hosts, shard)
SELECT x.key, 'capacity', CAST(x.free AS TEXT), x.free, COUNT(*), aggregate_shard(h.id)
FROM hosts h CROSS JOIN LATERAL (VALUES
    ('capacity.free-vcpus', h.vcpus_total - h.vcpus_used),
    ('capacity.free-memory-mb', h.memory_mb_total - h.memory_mb_used),
    ('capacity.free-disk-gb', h.disk_gb_total - h.disk_gb_used)) AS x(key, free)
WHERE h.state = 'up' GROUP BY x.key, x.free, aggregate_shard(h.id);
INSERT INTO aggregate_keys (key, kind, hosts, sum, shard)
SELECT key, kind, SUM(hosts), COALESCE(SUM(float_value * hosts), 0), shard
FROM aggregate_values GROUP BY key, kind, shard;

-- As 0006's, with the shard of each change: net per (key, kind, shard[, value]), sorted, so
-- concurrent writers take the rows they share in one order.
CREATE FUNCTION aggregate_apply_sharded(keys TEXT[], kinds TEXT[], vals TEXT[], floats DOUBLE PRECISION[],
                                        deltas BIGINT[], shards INTEGER[])
RETURNS void LANGUAGE plpgsql AS $$
BEGIN
    IF keys IS NULL OR cardinality(keys) = 0 THEN
        RETURN;
    END IF;
    INSERT INTO aggregate_keys AS k (key, kind, shard, hosts, sum)
    SELECT c.key, c.kind, c.shard, SUM(c.delta), SUM(COALESCE(c.f, 0) * c.delta)
    FROM unnest(keys, kinds, floats, deltas, shards) AS c(key, kind, f, delta, shard)
    GROUP BY c.key, c.kind, c.shard ORDER BY c.key, c.kind, c.shard
    ON CONFLICT (key, kind, shard) DO UPDATE SET hosts = k.hosts + excluded.hosts, sum = k.sum + excluded.sum;
    INSERT INTO aggregate_values AS v (key, kind, value, shard, float_value, hosts)
    SELECT c.key, c.kind, c.value, c.shard, MIN(c.f), SUM(c.delta)
    FROM unnest(keys, kinds, vals, floats, deltas, shards) AS c(key, kind, value, f, delta, shard)
    GROUP BY c.key, c.kind, c.value, c.shard ORDER BY c.key, c.kind, c.value, c.shard
    ON CONFLICT (key, kind, value, shard) DO UPDATE SET hosts = v.hosts + excluded.hosts;
    DELETE FROM aggregate_values v USING unnest(keys, kinds, vals, shards) AS c(key, kind, value, shard)
    WHERE v.key = c.key AND v.kind = c.kind AND v.value = c.value AND v.shard = c.shard AND v.hosts <= 0;
    DELETE FROM aggregate_keys k USING unnest(keys, kinds, shards) AS c(key, kind, shard)
    WHERE k.key = c.key AND k.kind = c.kind AND k.shard = c.shard AND k.hosts <= 0;
END $$;

CREATE OR REPLACE FUNCTION host_capabilities_aggregate_insert() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM aggregate_apply_sharded(array_agg(n.key), array_agg(n.kind), array_agg(COALESCE(n.str_value, '')),
                                    array_agg(n.float_value), array_agg(1::BIGINT), array_agg(aggregate_shard(n.host_id)))
    FROM new_caps n WHERE EXISTS (SELECT 1 FROM hosts h WHERE h.id = n.host_id AND h.state = 'up' OFFSET 0);
    RETURN NULL;
END $$;
CREATE OR REPLACE FUNCTION host_capabilities_aggregate_update() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM aggregate_apply_sharded(array_agg(c.key), array_agg(c.kind), array_agg(c.value), array_agg(c.f),
                                    array_agg(c.delta), array_agg(aggregate_shard(c.host_id)))
    FROM (
        SELECT o.host_id, o.key, o.kind, COALESCE(o.str_value, '') AS value, o.float_value AS f, -1::BIGINT AS delta
        FROM old_caps o WHERE EXISTS (SELECT 1 FROM hosts h WHERE h.id = o.host_id AND h.state = 'up' OFFSET 0)
        UNION ALL
        SELECT n.host_id, n.key, n.kind, COALESCE(n.str_value, ''), n.float_value, 1
        FROM new_caps n WHERE EXISTS (SELECT 1 FROM hosts h WHERE h.id = n.host_id AND h.state = 'up' OFFSET 0)
    ) c;
    RETURN NULL;
END $$;
CREATE OR REPLACE FUNCTION host_capabilities_aggregate_delete() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM aggregate_apply_sharded(array_agg(o.key), array_agg(o.kind), array_agg(COALESCE(o.str_value, '')),
                                    array_agg(o.float_value), array_agg(-1::BIGINT), array_agg(aggregate_shard(o.host_id)))
    FROM old_caps o WHERE EXISTS (SELECT 1 FROM hosts h WHERE h.id = o.host_id AND h.state = 'up' OFFSET 0);
    RETURN NULL;
END $$;

CREATE OR REPLACE FUNCTION hosts_aggregate_insert() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM aggregate_apply_sharded(array_agg(x.key), array_agg('capacity'::TEXT), array_agg(CAST(x.free AS TEXT)),
                                    array_agg(CAST(x.free AS DOUBLE PRECISION)), array_agg(1::BIGINT),
                                    array_agg(aggregate_shard(n.id)))
    FROM new_hosts n CROSS JOIN LATERAL (VALUES
        ('capacity.free-vcpus', n.vcpus_total - n.vcpus_used),
        ('capacity.free-memory-mb', n.memory_mb_total - n.memory_mb_used),
        ('capacity.free-disk-gb', n.disk_gb_total - n.disk_gb_used)) AS x(key, free)
    WHERE n.state = 'up';
    RETURN NULL;
END $$;
-- A host's free capacity moves out of the old value and into the new one when its state or
-- capacity changes; its capabilities move in or out when it goes up or stops being up.
-- Most updates are reports (missed_reports, last_report_ms), which change neither: they return
-- after one pass over the statement's own rows. PostgreSQL allows no column list on a trigger
-- with transition tables, so this check is here rather than in the trigger's definition.
CREATE OR REPLACE FUNCTION hosts_aggregate_update() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF NOT EXISTS (
        SELECT 1 FROM old_hosts o JOIN new_hosts n ON n.id = o.id
        WHERE n.state <> o.state OR n.vcpus_total <> o.vcpus_total OR n.vcpus_used <> o.vcpus_used
            OR n.memory_mb_total <> o.memory_mb_total OR n.memory_mb_used <> o.memory_mb_used
            OR n.disk_gb_total <> o.disk_gb_total OR n.disk_gb_used <> o.disk_gb_used
    ) THEN
        RETURN NULL;
    END IF;
    PERFORM aggregate_apply_sharded(array_agg(c.key), array_agg(c.kind), array_agg(c.value), array_agg(c.f),
                                    array_agg(c.delta), array_agg(c.shard))
    FROM (
        SELECT x.key, 'capacity', CAST(x.free AS TEXT), CAST(x.free AS DOUBLE PRECISION), h.delta, aggregate_shard(h.id)
        FROM (
            SELECT o.id, -1::BIGINT AS delta, o.vcpus_total - o.vcpus_used AS v,
                   o.memory_mb_total - o.memory_mb_used AS m, o.disk_gb_total - o.disk_gb_used AS d
            FROM old_hosts o JOIN new_hosts n ON n.id = o.id
            WHERE o.state = 'up' AND (n.state <> o.state OR n.vcpus_total <> o.vcpus_total OR n.vcpus_used <> o.vcpus_used
                OR n.memory_mb_total <> o.memory_mb_total OR n.memory_mb_used <> o.memory_mb_used
                OR n.disk_gb_total <> o.disk_gb_total OR n.disk_gb_used <> o.disk_gb_used)
            UNION ALL
            SELECT n.id, 1::BIGINT, n.vcpus_total - n.vcpus_used, n.memory_mb_total - n.memory_mb_used,
                   n.disk_gb_total - n.disk_gb_used
            FROM old_hosts o JOIN new_hosts n ON n.id = o.id
            WHERE n.state = 'up' AND (n.state <> o.state OR n.vcpus_total <> o.vcpus_total OR n.vcpus_used <> o.vcpus_used
                OR n.memory_mb_total <> o.memory_mb_total OR n.memory_mb_used <> o.memory_mb_used
                OR n.disk_gb_total <> o.disk_gb_total OR n.disk_gb_used <> o.disk_gb_used)
        ) h CROSS JOIN LATERAL (VALUES ('capacity.free-vcpus', h.v), ('capacity.free-memory-mb', h.m),
                                       ('capacity.free-disk-gb', h.d)) AS x(key, free)
        UNION ALL
        SELECT c.key, c.kind, COALESCE(c.str_value, ''), c.float_value,
               CASE WHEN n.state = 'up' THEN 1 ELSE -1 END::BIGINT, aggregate_shard(n.id)
        FROM old_hosts o JOIN new_hosts n ON n.id = o.id
        CROSS JOIN LATERAL (SELECT * FROM host_capabilities c WHERE c.host_id = n.id OFFSET 0) c
        WHERE (n.state = 'up') <> (o.state = 'up')
    ) AS c(key, kind, value, f, delta, shard);
    RETURN NULL;
END $$;
CREATE OR REPLACE FUNCTION hosts_aggregate_delete() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM aggregate_apply_sharded(array_agg(c.key), array_agg(c.kind), array_agg(c.value), array_agg(c.f),
                                    array_agg(c.delta), array_agg(aggregate_shard(OLD.id)))
    FROM (
        SELECT x.key, 'capacity', CAST(x.free AS TEXT), CAST(x.free AS DOUBLE PRECISION), -1::BIGINT
        FROM (VALUES ('capacity.free-vcpus', OLD.vcpus_total - OLD.vcpus_used),
                     ('capacity.free-memory-mb', OLD.memory_mb_total - OLD.memory_mb_used),
                     ('capacity.free-disk-gb', OLD.disk_gb_total - OLD.disk_gb_used)) AS x(key, free)
        UNION ALL
        SELECT key, kind, COALESCE(str_value, ''), float_value, -1::BIGINT FROM host_capabilities WHERE host_id = OLD.id
    ) AS c(key, kind, value, f, delta);
    RETURN OLD;
END $$;

DROP FUNCTION aggregate_apply(TEXT[], TEXT[], TEXT[], DOUBLE PRECISION[], BIGINT[]);
