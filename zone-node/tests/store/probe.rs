//! Diagnostic concurrency counters.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use crate::TestDb;

store_test_suite!(probe_counters_are_atomic,);

async fn probe_counters_are_atomic(db: &TestDb) {
    const TASKS: usize = 20;
    let stores = db.connect_nodes(4).await;
    // Every task enters, then waits until all have entered, then exits: the true maximum of
    // concurrent workers is exactly TASKS, whatever the scheduling.
    let barrier = Arc::new(tokio::sync::Barrier::new(TASKS));
    let mut tasks = Vec::new();
    for i in 0..TASKS {
        let store = stores[i % stores.len()].clone();
        let barrier = barrier.clone();
        tasks.push(tokio::spawn(async move {
            let active = store.probe_enter("res-1").await.unwrap();
            barrier.wait().await;
            let completed = store.probe_exit("res-1").await.unwrap();
            (active, completed)
        }));
    }
    let results = tokio::time::timeout(Duration::from_secs(60), futures::future::try_join_all(tasks))
        .await
        .expect("probe tasks did not finish within 60 s")
        .unwrap();
    let actives: BTreeSet<i64> = results.iter().map(|r| r.0).collect();
    let completed: BTreeSet<i64> = results.iter().map(|r| r.1).collect();
    let expected: BTreeSet<i64> = (1..=TASKS as i64).collect();
    assert_eq!(actives, expected, "every enter saw a distinct count");
    assert_eq!(completed, expected, "every exit saw a distinct count");

    let store = &stores[0];
    for _ in 0..5 {
        assert_eq!(store.probe_enter("res-2").await.unwrap(), 1);
        store.probe_exit("res-2").await.unwrap();
    }
    assert_eq!(store.probe_exit("res-3").await.unwrap(), 1, "an exit without an enter still counts");

    let stats = store.probe_stats().await.unwrap();
    let by_id = |id: &str| stats.iter().find(|r| r.resource_id == id).unwrap().clone();
    let r1 = by_id("res-1");
    assert_eq!((r1.active, r1.max_active, r1.completed), (0, TASKS as i64, TASKS as i64));
    let r2 = by_id("res-2");
    assert_eq!((r2.active, r2.max_active, r2.completed), (0, 1, 5));
    let r3 = by_id("res-3");
    assert_eq!((r3.active, r3.completed), (-1, 1));
    assert_eq!(stats.len(), 3);
}
