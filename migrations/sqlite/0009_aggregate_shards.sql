-- Nothing to do on SQLite: ../postgres/0009_aggregate_shards.sql splits the aggregate's rows into
-- shards so concurrent PostgreSQL writers stop queueing on them, and SQLite runs one writer at a
-- time anyway. The readers (store/aggregate.rs) sum over rows per (key, kind), which on SQLite's
-- one row per key is the row itself. Kept so both backends number their migrations alike.
SELECT 1;
