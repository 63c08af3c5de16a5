//! The database-backed work queue: the few tasks that must run in order across the whole zone.
//!
//! Jobs of one queue run one at a time, zone-wide, oldest first. The guarantee rests on one lock
//! row per queue in `job_locks` (the running job, its owner and its lease), not on a
//! `NOT EXISTS (running job)` check, which two claimers at PostgreSQL's READ COMMITTED could both
//! pass. A claim takes the lock row with
//! `INSERT ... ON CONFLICT (queue) DO UPDATE ... WHERE <no job holds it under a live lease>`:
//! PostgreSQL locks the row and re-evaluates that WHERE against the latest committed version, so
//! of two racing claimers the second sees the first's job and gets nothing; SQLite runs write
//! transactions one at a time anyway.
//!
//! Lock order is always `job_locks` row first, then the `jobs` row (claim, renew and finish alike),
//! so a takeover can never deadlock with the previous owner's late finish.
//!
//! A job whose lease expires (its node died or stalled) stays `running` until some node claims the
//! queue again: the claim then takes over that same job, under a new owner and lease, before any
//! later job. The previous owner's renew and finish then fail, because they check ownership.

use uuid::Uuid;

use super::{assembled, parse_uuid, JobRow, Result, Store};

const JOB_COLUMNS: &str = "id, queue, payload, state, owner, lease_until_ms, result";

#[derive(sqlx::FromRow)]
struct RawJob {
    id: i64,
    queue: String,
    payload: String,
    state: String,
    owner: Option<String>,
    lease_until_ms: Option<i64>,
    result: Option<String>,
}

impl TryFrom<RawJob> for JobRow {
    type Error = super::StoreError;
    fn try_from(r: RawJob) -> Result<Self> {
        Ok(JobRow {
            id: r.id,
            queue: r.queue,
            payload: r.payload,
            state: r.state,
            owner: r.owner.as_deref().map(|s| parse_uuid("node", s)).transpose()?,
            lease_until_ms: r.lease_until_ms,
            result: r.result,
        })
    }
}

impl Store {
    /// Appends a `pending` job to `queue`; returns its id. Ids grow, and order the queue.
    #[tracing::instrument(level = "debug", skip(self, payload), fields(payload_len = payload.len()))]
    pub async fn job_enqueue(&self, queue: &str, payload: &str) -> Result<i64> {
        const SQL: &str = "INSERT INTO jobs (queue, payload, state, created_at_ms) \
             VALUES ($1, $2, 'pending', (SELECT now_ms FROM db_clock)) RETURNING id";
        let id: i64 =
            with_pool!(self, |pool| { sqlx::query_scalar(SQL).bind(queue).bind(payload).fetch_one(pool).await })?;
        Ok(id)
    }

    /// Claims the oldest pending job of `queue` for `node` with a lease, but only when no other
    /// job of that queue is running under a live lease: one job per queue at a time, zone-wide.
    ///
    /// A `running` job whose lease has expired is taken over (same id, new owner and lease).
    #[tracing::instrument(level = "debug", skip(self, node), fields(node = %node))]
    pub async fn job_claim(&self, queue: &str, node: Uuid, lease_ms: i64) -> Result<Option<JobRow>> {
        // 1. The queue's lock, if free. On a conflict the row is only updated (and returned) when
        //    no job holds it under a live lease.
        const LOCK: &str = "INSERT INTO job_locks (queue, holder, job_id, lease_until_ms) \
             VALUES ($1, $2, NULL, 0) \
             ON CONFLICT (queue) DO UPDATE SET holder = excluded.holder \
             WHERE job_locks.job_id IS NULL \
                OR job_locks.lease_until_ms <= (SELECT now_ms FROM db_clock) \
             RETURNING queue";
        // 2. The head of the queue: a job left running under an expired lease sorts before every
        //    pending one (it was claimed first), so it is taken over before anything newer runs.
        const HEAD: &str = "SELECT id FROM jobs WHERE queue = $1 \
             AND (state = 'pending' OR (state = 'running' AND lease_until_ms <= (SELECT now_ms FROM db_clock))) \
             ORDER BY id LIMIT 1";
        // 3. Run it under our lease, and 4. record it in the lock row with the same lease.
        let take = format!(
            "UPDATE jobs SET state = 'running', owner = $2, \
             lease_until_ms = (SELECT now_ms FROM db_clock) + $3 WHERE id = $1 RETURNING {JOB_COLUMNS}"
        );
        const HOLD: &str = "UPDATE job_locks SET holder = $2, job_id = $3, lease_until_ms = $4 WHERE queue = $1";

        let owner = node.to_string();
        let raw: Option<RawJob> = with_pool!(self, |pool| async {
            let mut tx = pool.begin().await?;
            let locked: Option<String> =
                sqlx::query_scalar(LOCK).bind(queue).bind(&owner).fetch_optional(&mut *tx).await?;
            if locked.is_none() {
                tx.rollback().await?;
                return Ok::<_, sqlx::Error>(None);
            }
            let head: Option<i64> = sqlx::query_scalar(HEAD).bind(queue).fetch_optional(&mut *tx).await?;
            let Some(id) = head else {
                // Nothing to run: the rollback leaves the lock row as it was.
                tx.rollback().await?;
                return Ok(None);
            };
            let job: RawJob =
                sqlx::query_as(assembled(&take)).bind(id).bind(&owner).bind(lease_ms).fetch_one(&mut *tx).await?;
            sqlx::query(HOLD).bind(queue).bind(&owner).bind(id).bind(job.lease_until_ms).execute(&mut *tx).await?;
            tx.commit().await?;
            Ok(Some(job))
        }
        .await)?;
        let job = raw.map(JobRow::try_from).transpose()?;
        if let Some(job) = &job {
            tracing::debug!(job = job.id, "job claimed");
        }
        Ok(job)
    }

    /// Extends the lease of a job `node` runs to `lease_ms` from now. False when `node` does not
    /// (or no longer) run it.
    #[tracing::instrument(level = "debug", skip(self, node), fields(node = %node))]
    pub async fn job_renew(&self, id: i64, node: Uuid, lease_ms: i64) -> Result<bool> {
        const LOCK: &str = "UPDATE job_locks SET lease_until_ms = (SELECT now_ms FROM db_clock) + $3 \
             WHERE queue = (SELECT queue FROM jobs WHERE id = $1) AND job_id = $1 AND holder = $2 \
             RETURNING lease_until_ms";
        const JOB: &str = "UPDATE jobs SET lease_until_ms = $3 \
             WHERE id = $1 AND owner = $2 AND state = 'running'";
        let owner = node.to_string();
        let renewed = with_pool!(self, |pool| async {
            let mut tx = pool.begin().await?;
            let lease: Option<i64> =
                sqlx::query_scalar(LOCK).bind(id).bind(&owner).bind(lease_ms).fetch_optional(&mut *tx).await?;
            let Some(lease) = lease else {
                tx.rollback().await?;
                return Ok::<_, sqlx::Error>(false);
            };
            let done = sqlx::query(JOB).bind(id).bind(&owner).bind(lease).execute(&mut *tx).await?;
            if done.rows_affected() == 0 {
                tx.rollback().await?;
                return Ok(false);
            }
            tx.commit().await?;
            Ok(true)
        }
        .await)?;
        Ok(renewed)
    }

    /// Ends a job `node` runs: `done` when `ok`, else `failed`, with `result`. Frees the queue for
    /// its next job. False when `node` does not (or no longer) run it.
    #[tracing::instrument(level = "debug", skip(self, node, result), fields(node = %node))]
    pub async fn job_finish(&self, id: i64, node: Uuid, ok: bool, result: &str) -> Result<bool> {
        const UNLOCK: &str = "UPDATE job_locks SET holder = NULL, job_id = NULL, lease_until_ms = 0 \
             WHERE queue = (SELECT queue FROM jobs WHERE id = $1) AND job_id = $1 AND holder = $2";
        const JOB: &str = "UPDATE jobs SET state = $3, result = $4, lease_until_ms = NULL \
             WHERE id = $1 AND owner = $2 AND state = 'running'";
        let owner = node.to_string();
        let state = if ok { "done" } else { "failed" };
        let finished = with_pool!(self, |pool| async {
            let mut tx = pool.begin().await?;
            let unlocked = sqlx::query(UNLOCK).bind(id).bind(&owner).execute(&mut *tx).await?;
            if unlocked.rows_affected() == 0 {
                tx.rollback().await?;
                return Ok::<_, sqlx::Error>(false);
            }
            let done = sqlx::query(JOB).bind(id).bind(&owner).bind(state).bind(result).execute(&mut *tx).await?;
            if done.rows_affected() == 0 {
                tx.rollback().await?;
                return Ok(false);
            }
            tx.commit().await?;
            Ok(true)
        }
        .await)?;
        if finished {
            tracing::debug!(state, "job finished");
        }
        Ok(finished)
    }

    /// The job with this id, if any.
    #[tracing::instrument(level = "debug", skip(self))]
    pub async fn job_get(&self, id: i64) -> Result<Option<JobRow>> {
        let sql = format!("SELECT {JOB_COLUMNS} FROM jobs WHERE id = $1");
        let raw: Option<RawJob> =
            with_pool!(self, |pool| { sqlx::query_as(assembled(&sql)).bind(id).fetch_optional(pool).await })?;
        raw.map(JobRow::try_from).transpose()
    }

    /// Queue names with pending jobs.
    ///
    /// Also names queues whose running job's lease has expired: claiming them is how that job
    /// gets taken over. Sorted by name.
    #[tracing::instrument(level = "debug", skip(self))]
    pub async fn job_queues_pending(&self) -> Result<Vec<String>> {
        const SQL: &str = "SELECT DISTINCT queue FROM jobs WHERE state = 'pending' \
             OR (state = 'running' AND lease_until_ms <= (SELECT now_ms FROM db_clock)) ORDER BY queue";
        let queues: Vec<String> = with_pool!(self, |pool| sqlx::query_scalar(SQL).fetch_all(pool).await)?;
        Ok(queues)
    }
}
