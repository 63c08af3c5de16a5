//! The database-backed work queue: order, ownership, leases, one running job per queue.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use uuid::Uuid;

use crate::{wait_for_db_clock, TestDb};

store_test_suite!(
    jobs_run_in_order_and_only_for_their_owner,
    expired_lease_is_taken_over,
    one_running_job_per_queue_under_concurrency,
    db_queue_runners_serialise_across_nodes,
);

async fn jobs_run_in_order_and_only_for_their_owner(db: &TestDb) {
    let store = db.connect().await;
    let (n1, n2) = (Uuid::new_v4(), Uuid::new_v4());
    let j1 = store.job_enqueue("q", "p1").await.unwrap();
    let j2 = store.job_enqueue("q", "p2").await.unwrap();
    let j3 = store.job_enqueue("q", "p3").await.unwrap();
    let r1 = store.job_enqueue("r", "x").await.unwrap();
    assert!(j1 < j2 && j2 < j3);
    assert_eq!(store.job_queues_pending().await.unwrap(), ["q", "r"]);

    let now = store.now_ms().await.unwrap();
    let job = store.job_claim("q", n1, 60_000).await.unwrap().expect("a job to claim");
    assert_eq!((job.id, job.queue.as_str(), job.payload.as_str()), (j1, "q", "p1"));
    assert_eq!((job.state.as_str(), job.owner), ("running", Some(n1)));
    let lease = job.lease_until_ms.unwrap();
    assert!(lease >= now + 60_000);
    assert_eq!(job.result, None);
    assert_eq!(store.job_get(j1).await.unwrap(), Some(job.clone()));

    // One running job per queue, whoever asks.
    assert_eq!(store.job_claim("q", n2, 60_000).await.unwrap(), None);
    assert_eq!(store.job_claim("q", n1, 60_000).await.unwrap(), None);
    // Other queues run alongside.
    assert_eq!(store.job_claim("r", n2, 60_000).await.unwrap().unwrap().id, r1);

    // Only the owner renews or finishes.
    assert!(!store.job_renew(j1, n2, 60_000).await.unwrap());
    assert!(!store.job_finish(j1, n2, true, "stolen").await.unwrap());
    assert_eq!(store.job_get(j1).await.unwrap().unwrap().owner, Some(n1));
    assert!(store.job_renew(j1, n1, 120_000).await.unwrap());
    let renewed = store.job_get(j1).await.unwrap().unwrap();
    assert!(renewed.lease_until_ms.unwrap() > lease);

    assert!(store.job_finish(j1, n1, true, "ok-1").await.unwrap());
    let done = store.job_get(j1).await.unwrap().unwrap();
    assert_eq!((done.state.as_str(), done.result.as_deref(), done.lease_until_ms), ("done", Some("ok-1"), None));
    assert!(!store.job_finish(j1, n1, true, "again").await.unwrap());
    assert!(!store.job_renew(j1, n1, 60_000).await.unwrap());

    let job = store.job_claim("q", n2, 60_000).await.unwrap().unwrap();
    assert_eq!(job.id, j2);
    assert!(store.job_finish(j2, n2, false, "boom").await.unwrap());
    let failed = store.job_get(j2).await.unwrap().unwrap();
    assert_eq!((failed.state.as_str(), failed.result.as_deref()), ("failed", Some("boom")));

    assert_eq!(store.job_claim("q", n1, 60_000).await.unwrap().unwrap().id, j3);
    assert!(store.job_finish(j3, n1, true, "").await.unwrap());
    assert_eq!(store.job_claim("q", n1, 60_000).await.unwrap(), None);
    // r1 runs under a live lease: not pending.
    assert!(store.job_queues_pending().await.unwrap().is_empty());
    assert!(store.job_finish(r1, n2, true, "").await.unwrap());
    assert_eq!(store.job_get(i64::MAX).await.unwrap(), None);
}

async fn expired_lease_is_taken_over(db: &TestDb) {
    let store = db.connect().await;
    let (n1, n2) = (Uuid::new_v4(), Uuid::new_v4());
    let j1 = store.job_enqueue("q", "first").await.unwrap();
    let j2 = store.job_enqueue("q", "second").await.unwrap();

    // n1 claims with a lease and then stalls.
    let job = store.job_claim("q", n1, 2_000).await.unwrap().unwrap();
    assert_eq!(job.id, j1);
    assert_eq!(store.job_claim("q", n2, 60_000).await.unwrap(), None, "lease still live");

    wait_for_db_clock(&store, job.lease_until_ms.unwrap()).await;
    assert_eq!(store.job_queues_pending().await.unwrap(), ["q"], "a stuck job is claimable");

    // n2 takes over the same job, before the newer one.
    let taken = store.job_claim("q", n2, 60_000).await.unwrap().expect("takeover");
    assert_eq!((taken.id, taken.owner, taken.state.as_str()), (j1, Some(n2), "running"));

    // n1 wakes up: it no longer owns the job.
    assert!(!store.job_renew(j1, n1, 60_000).await.unwrap());
    assert!(!store.job_finish(j1, n1, true, "late").await.unwrap());
    assert_eq!(store.job_get(j1).await.unwrap().unwrap().owner, Some(n2));

    assert!(store.job_finish(j1, n2, true, "taken over").await.unwrap());
    assert_eq!(store.job_get(j1).await.unwrap().unwrap().result.as_deref(), Some("taken over"));
    assert_eq!(store.job_claim("q", n1, 60_000).await.unwrap().unwrap().id, j2);
}

async fn one_running_job_per_queue_under_concurrency(db: &TestDb) {
    const JOBS: usize = 50;
    const CLAIMERS: usize = 8;
    let setup = db.connect().await;
    let mut ids = Vec::new();
    for i in 0..JOBS {
        ids.push(setup.job_enqueue("serial", &format!("job-{i}")).await.unwrap());
    }

    let active = Arc::new(AtomicUsize::new(0));
    let overlaps = Arc::new(AtomicUsize::new(0));
    let finished = Arc::new(AtomicUsize::new(0));
    let order = Arc::new(Mutex::new(Vec::new()));
    let mut tasks = Vec::new();
    for _ in 0..CLAIMERS {
        // Each claimer is a node: its own id and its own pool.
        let store = db.connect_small(2).await;
        let node = Uuid::new_v4();
        let (active, overlaps, finished, order) = (active.clone(), overlaps.clone(), finished.clone(), order.clone());
        tasks.push(tokio::spawn(async move {
            let mut ran = 0usize;
            while finished.load(Ordering::SeqCst) < JOBS {
                let Some(job) = store.job_claim("serial", node, 30_000).await.unwrap() else {
                    tokio::time::sleep(Duration::from_millis(3)).await;
                    continue;
                };
                if active.fetch_add(1, Ordering::SeqCst) > 0 {
                    overlaps.fetch_add(1, Ordering::SeqCst);
                }
                order.lock().unwrap().push(job.id);
                // Hold the job a moment so that a second runner, if any, would overlap.
                tokio::time::sleep(Duration::from_millis(2)).await;
                active.fetch_sub(1, Ordering::SeqCst);
                assert!(store.job_finish(job.id, node, true, "ok").await.unwrap());
                finished.fetch_add(1, Ordering::SeqCst);
                ran += 1;
            }
            store.close().await;
            ran
        }));
    }
    let all = futures::future::try_join_all(tasks);
    let ran = tokio::time::timeout(Duration::from_secs(120), all)
        .await
        .expect("50 jobs did not finish within 120 s")
        .expect("a claimer panicked");

    assert_eq!(overlaps.load(Ordering::SeqCst), 0, "two jobs of one queue ran at once");
    assert_eq!(ran.iter().sum::<usize>(), JOBS);
    assert_eq!(*order.lock().unwrap(), ids, "jobs ran out of FIFO order");
    for id in ids {
        assert_eq!(setup.job_get(id).await.unwrap().unwrap().state, "done");
    }
}

/// The database-backed work queue as nodes run it: three runners (three "nodes", each with its
/// own pool) on one queue run its jobs one at a time, in order, recording each job's outcome.
async fn db_queue_runners_serialise_across_nodes(db: &TestDb) {
    use zone_node::workqueue::DbQueue;
    const JOBS: usize = 20;
    let setup = DbQueue::new(db.connect().await, Uuid::new_v4());
    let mut ids = Vec::new();
    for i in 0..JOBS {
        let payload = if i == 7 { "fail".to_string() } else { format!("job-{i}") };
        ids.push(setup.enqueue("vr-create", &payload).await.unwrap());
    }
    let stop = tokio_util::sync::CancellationToken::new();
    let active = Arc::new(AtomicUsize::new(0));
    let overlaps = Arc::new(AtomicUsize::new(0));
    let order = Arc::new(Mutex::new(Vec::new()));
    let mut runners = Vec::new();
    for _ in 0..3 {
        let queue = DbQueue::new(db.connect_small(2).await, Uuid::new_v4());
        let (stop, active, overlaps, order) = (stop.clone(), active.clone(), overlaps.clone(), order.clone());
        runners.push(tokio::spawn(async move {
            queue
                .run("vr-create", stop, |job| {
                    let (active, overlaps, order) = (active.clone(), overlaps.clone(), order.clone());
                    async move {
                        if active.fetch_add(1, Ordering::SeqCst) > 0 {
                            overlaps.fetch_add(1, Ordering::SeqCst);
                        }
                        order.lock().unwrap().push(job.id);
                        tokio::time::sleep(Duration::from_millis(5)).await;
                        active.fetch_sub(1, Ordering::SeqCst);
                        if job.payload == "fail" {
                            Err("agent refused".to_string())
                        } else {
                            Ok(format!("done {}", job.payload))
                        }
                    }
                })
                .await
        }));
    }
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        let last = setup.job(*ids.last().unwrap()).await.unwrap().unwrap();
        if last.state == "done" {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "the queue did not drain in 60 s");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    stop.cancel();
    for r in runners {
        r.await.unwrap();
    }
    assert_eq!(overlaps.load(Ordering::SeqCst), 0, "two jobs of one queue ran at once");
    assert_eq!(*order.lock().unwrap(), ids, "jobs ran out of order (or one ran twice)");
    for (i, id) in ids.iter().enumerate() {
        let job = setup.job(*id).await.unwrap().unwrap();
        if i == 7 {
            assert_eq!((job.state.as_str(), job.result.as_deref()), ("failed", Some("agent refused")));
        } else {
            assert_eq!(job.state, "done");
            assert_eq!(job.result, Some(format!("done job-{i}")));
        }
    }
}
