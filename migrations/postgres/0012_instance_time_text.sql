-- An instance's two times also as the API writes them (RFC 3339 in UTC, with milliseconds), set
-- with the milliseconds by every write. A page of instances as JSON (`store::instance_json`) then
-- copies them instead of formatting two times per row.
-- Keep in step with ../sqlite/0012_instance_time_text.sql.
ALTER TABLE instances ADD COLUMN created_at TEXT NOT NULL DEFAULT '';
ALTER TABLE instances ADD COLUMN updated_at TEXT NOT NULL DEFAULT '';
UPDATE instances SET
    created_at = to_char(to_timestamp(created_at_ms / 1000) AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS') || '.' || lpad(CAST(created_at_ms % 1000 AS TEXT), 3, '0') || 'Z',
    updated_at = to_char(to_timestamp(updated_at_ms / 1000) AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS') || '.' || lpad(CAST(updated_at_ms % 1000 AS TEXT), 3, '0') || 'Z';

-- The database clock (`db_clock`) with its time also as that text: a write reads both from one
-- row (`FROM db_clock_text AS clock`), so the two always agree.
CREATE VIEW db_clock_text AS
    SELECT now_ms,
           to_char(to_timestamp(now_ms / 1000) AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS') || '.' || lpad(CAST(now_ms % 1000 AS TEXT), 3, '0') || 'Z' AS now_text
    FROM db_clock;
