-- The database-backed work queue had no user (every task is serialised by its resource's ring
-- owner, or is idempotent zone-wide); its tables go. Applied migrations are never edited.
DROP TABLE IF EXISTS job_locks;
DROP TABLE IF EXISTS jobs;
