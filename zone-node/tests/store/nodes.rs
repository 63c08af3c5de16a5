//! Membership rows: join, heartbeat, state transitions and eviction.

use uuid::Uuid;
use zone_node::Store;

use crate::{wait_for_db_clock, TestDb};

store_test_suite!(membership_join_heartbeat_transition, stale_nodes_are_evicted,);

/// One heartbeat of `node`: the ring epoch, or `None` when the node is not (or no longer) a member.
/// The statement itself must succeed: a store error here is a failed test, with its message.
async fn heartbeat(store: &Store, node: Uuid) -> Option<i64> {
    store.node_heartbeat(node).await.unwrap_or_else(|e| panic!("heartbeat of {node}: {e}"))
}

async fn membership_join_heartbeat_transition(db: &TestDb) {
    let store = db.connect().await;
    let (a, b) = (Uuid::new_v4(), Uuid::new_v4());
    assert_eq!(store.node_join(a, "http://a", false).await.unwrap(), 1);
    assert_eq!(store.node_join(b, "http://b", true).await.unwrap(), 2);

    let m = store.membership().await.unwrap();
    assert_eq!(m.epoch, 2);
    assert_eq!(m.nodes.len(), 2);
    let node_a = m.nodes.iter().find(|n| n.id == a).unwrap();
    let node_b = m.nodes.iter().find(|n| n.id == b).unwrap();
    assert_eq!((node_a.state.as_str(), node_a.api_url.as_str()), ("joining", "http://a"));
    assert_eq!((node_b.state.as_str(), node_b.api_url.as_str()), ("alive", "http://b"));
    assert_eq!(node_a.heartbeat_ms, node_a.joined_at_ms);
    assert!(node_a.heartbeat_ms <= m.now_ms && node_b.heartbeat_ms <= m.now_ms);
    assert_eq!(node_a.applied_epoch, 0);

    // Heartbeats do not change membership, so they do not bump the epoch; they report it.
    assert_eq!(heartbeat(&store, a).await, Some(2));
    assert!(heartbeat(&store, Uuid::new_v4()).await.is_none());
    let m2 = store.membership().await.unwrap();
    assert_eq!(m2.epoch, 2);
    let beat = m2.nodes.iter().find(|n| n.id == a).unwrap().heartbeat_ms;
    assert!(beat >= node_a.heartbeat_ms);

    assert!(store.node_transition(a, &["joining"], "alive").await.unwrap());
    assert_eq!(store.membership().await.unwrap().epoch, 3);
    // Not in a `from` state: nothing changes, the epoch stays.
    assert!(!store.node_transition(a, &["joining"], "alive").await.unwrap());
    assert!(!store.node_transition(a, &[], "leaving").await.unwrap());
    assert!(!store.node_transition(Uuid::new_v4(), &["alive"], "leaving").await.unwrap());
    assert_eq!(store.membership().await.unwrap().epoch, 3);

    store.node_ack_epoch(a, 3).await.unwrap();
    store.node_ack_epoch(a, 2).await.unwrap(); // never lowers
    let m3 = store.membership().await.unwrap();
    assert_eq!(m3.nodes.iter().find(|n| n.id == a).unwrap().applied_epoch, 3);

    // Leaving nodes still heartbeat; once left, the heartbeat says stop.
    assert!(store.node_transition(b, &["joining", "alive"], "leaving").await.unwrap());
    assert_eq!(heartbeat(&store, b).await, Some(4), "the epoch the transition moved to");
    assert!(store.node_transition(b, &["leaving"], "left").await.unwrap());
    assert!(heartbeat(&store, b).await.is_none());
    assert_eq!(store.membership().await.unwrap().epoch, 5);

    // An unknown state is refused by the schema and changes nothing.
    assert!(store.node_transition(a, &["alive"], "bogus").await.is_err());
    let m4 = store.membership().await.unwrap();
    assert_eq!(m4.epoch, 5);
    assert_eq!(m4.nodes.iter().find(|n| n.id == a).unwrap().state, "alive");
}

async fn stale_nodes_are_evicted(db: &TestDb) {
    let store = db.connect().await;
    let (a, b) = (Uuid::new_v4(), Uuid::new_v4());
    store.node_join(a, "http://a", true).await.unwrap();
    store.node_join(b, "http://b", true).await.unwrap();
    assert!(store.nodes_evict_stale(3_600_000).await.unwrap().is_empty());
    assert_eq!(store.membership().await.unwrap().epoch, 2);

    // a stops beating; b keeps going. Generous margins: a is 1.5 s stale, b fresh.
    let joined = store.now_ms().await.unwrap();
    wait_for_db_clock(&store, joined + 1_500).await;
    assert!(heartbeat(&store, b).await.is_some());
    assert_eq!(store.nodes_evict_stale(1_000).await.unwrap(), vec![a]);

    let m = store.membership().await.unwrap();
    assert_eq!(m.epoch, 3, "one bump for the eviction");
    assert_eq!(m.nodes.iter().find(|n| n.id == a).unwrap().state, "dead");
    assert_eq!(m.nodes.iter().find(|n| n.id == b).unwrap().state, "alive");

    // Nothing more to evict: no bump.
    assert!(store.nodes_evict_stale(60_000).await.unwrap().is_empty());
    assert_eq!(store.membership().await.unwrap().epoch, 3);

    // The evicted node learns it from its heartbeat, and the heartbeat does not revive it.
    assert!(heartbeat(&store, a).await.is_none());
    let m = store.membership().await.unwrap();
    assert_eq!(m.nodes.iter().find(|n| n.id == a).unwrap().state, "dead");

    assert_eq!(store.nodes_purge(3_600_000).await.unwrap(), 0, "too recent to purge");
    assert_eq!(store.nodes_purge(0).await.unwrap(), 1);
    let m = store.membership().await.unwrap();
    assert_eq!(m.nodes.iter().map(|n| n.id).collect::<Vec<_>>(), vec![b]);
}
