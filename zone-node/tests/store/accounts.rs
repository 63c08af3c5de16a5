//! Accounts and bearer tokens.

use zone_node::{AccountRow, StoreError, TokenRow};

use crate::{wait_for_db_clock, TestDb};

store_test_suite!(accounts_crud, account_delete_cascades_tokens, tokens_expire_by_the_database_clock,);

fn account(username: &str, role: &str, client_id: Option<&str>) -> AccountRow {
    AccountRow {
        username: username.into(),
        password_hash: format!("$argon2id$v=19$fake-hash-of-{username}"),
        role: role.into(),
        client_id: client_id.map(Into::into),
        client_ids: None,
        created_at_ms: 0,
    }
}

async fn accounts_crud(db: &TestDb) {
    let store = db.connect().await;
    let before = store.now_ms().await.unwrap();
    let alice = store.account_create(&account("alice", "admin", None)).await.unwrap();
    assert_eq!(alice.username, "alice");
    assert_eq!(alice.role, "admin");
    assert_eq!(alice.client_id, None);
    assert!(alice.created_at_ms >= before, "created_at_ms comes from the database clock");
    assert_eq!(store.account_get("alice").await.unwrap(), Some(alice.clone()));

    let bob = store.account_create(&account("bob", "member", Some("client-1"))).await.unwrap();
    assert_eq!(bob.client_id.as_deref(), Some("client-1"));

    // A parent account keeps its clients, and its tokens carry them.
    let scope = api::ClientScope::parse(&["acme-*", "bob"]).unwrap();
    let parent = AccountRow { client_ids: Some(scope.clone()), ..account("up", "parent", None) };
    assert_eq!(store.account_create(&parent).await.unwrap().client_ids, Some(scope.clone()));
    store.token_insert("hash-up", "up", 60_000).await.unwrap();
    assert_eq!(store.token_lookup("hash-up").await.unwrap().unwrap().client_ids, Some(scope));
    assert!(store.account_delete("up").await.unwrap());

    match store.account_create(&account("alice", "member", None)).await {
        Err(StoreError::Conflict(what)) => assert_eq!(what, "account alice"),
        other => panic!("expected a conflict, got {other:?}"),
    }
    // The existing row is untouched.
    assert_eq!(store.account_get("alice").await.unwrap(), Some(alice.clone()));

    assert!(!store.account_create_if_absent(&account("alice", "member", None)).await.unwrap());
    assert!(store.account_create_if_absent(&account("carol", "member", Some("c3"))).await.unwrap());
    assert_eq!(store.account_get("alice").await.unwrap().unwrap().role, "admin");

    let names: Vec<String> = store.accounts().await.unwrap().into_iter().map(|a| a.username).collect();
    assert_eq!(names, ["alice", "bob", "carol"]);

    assert!(store.account_delete("bob").await.unwrap());
    assert!(!store.account_delete("bob").await.unwrap());
    assert_eq!(store.account_get("bob").await.unwrap(), None);
    assert_eq!(store.account_get("nobody").await.unwrap(), None);
    assert_eq!(store.accounts().await.unwrap().len(), 2);

    // The hash never shows in debug output (logs).
    assert!(!format!("{alice:?}").contains("fake-hash"));
}

async fn account_delete_cascades_tokens(db: &TestDb) {
    let store = db.connect().await;
    store.account_create(&account("alice", "member", Some("c1"))).await.unwrap();
    store.account_create(&account("bob", "member", Some("c2"))).await.unwrap();
    store.token_insert("hash-a1", "alice", 60_000).await.unwrap();
    store.token_insert("hash-a2", "alice", 60_000).await.unwrap();
    store.token_insert("hash-b1", "bob", 60_000).await.unwrap();
    assert!(store.token_lookup("hash-a1").await.unwrap().is_some());

    assert!(store.account_delete("alice").await.unwrap());
    assert_eq!(store.token_lookup("hash-a1").await.unwrap(), None);
    assert_eq!(store.token_lookup("hash-a2").await.unwrap(), None);
    // Recreating the account does not bring the old tokens back: they were deleted, not hidden.
    store.account_create(&account("alice", "member", Some("c1"))).await.unwrap();
    assert_eq!(store.token_lookup("hash-a1").await.unwrap(), None);
    // Other accounts' tokens stay.
    assert_eq!(store.token_lookup("hash-b1").await.unwrap().unwrap().username, "bob");
}

async fn tokens_expire_by_the_database_clock(db: &TestDb) {
    let store = db.connect().await;
    store.account_create(&account("alice", "member", Some("c1"))).await.unwrap();

    let before = store.now_ms().await.unwrap();
    let expires = store.token_insert("hash-long", "alice", 3_600_000).await.unwrap();
    let after = store.now_ms().await.unwrap();
    assert!((before + 3_600_000..=after + 3_600_000).contains(&expires), "expiry {expires}");
    assert_eq!(
        store.token_lookup("hash-long").await.unwrap(),
        Some(TokenRow {
            username: "alice".into(),
            role: "member".into(),
            client_id: Some("c1".into()),
            client_ids: None,
            expires_at_ms: expires,
            expired: false,
        })
    );

    let short = store.token_insert("hash-short", "alice", 100).await.unwrap();
    wait_for_db_clock(&store, short).await;
    let row = store.token_lookup("hash-short").await.unwrap().expect("expired tokens stay until purged");
    assert!(row.expired);
    assert_eq!(store.token_lookup("hash-unknown").await.unwrap(), None);

    assert_eq!(store.tokens_purge_expired().await.unwrap(), 1);
    assert_eq!(store.token_lookup("hash-short").await.unwrap(), None);
    assert!(!store.token_lookup("hash-long").await.unwrap().unwrap().expired);
    assert_eq!(store.tokens_purge_expired().await.unwrap(), 0);

    // A token for an account that does not exist is refused, and the error names no hash.
    let err = store.token_insert("hash-orphan", "nobody", 60_000).await.unwrap_err();
    assert!(!err.to_string().contains("hash-orphan"), "{err}");
}
