//! What only the in-process bus (`memory://`) does: brokers are private (`memory://`) or shared by
//! name within one process (`memory://<name>`). Everything both transports promise is in
//! bus_contract.rs.

mod bus_support;

use std::sync::Arc;
use std::time::Duration;

use bus_support::*;
use uuid::Uuid;
use zone_node::{Bus, BusError, Destination, Message};

const LONG: Duration = Duration::from_secs(30);

#[tokio::test]
async fn brokers_are_private_or_shared_by_name() {
    let (b, p) = (prefix(), prefix());
    let server = Bus::connect(&format!("memory://{b}"), &p, Uuid::new_v4()).await.unwrap();
    server.serve("echo", Arc::new(Echo)).await.unwrap();
    let to = Destination::Node { service: "echo".into(), node: server.node_id() };
    // Another bus on the same name reaches it.
    let named = Bus::connect(&format!("memory://{b}"), &p, Uuid::new_v4()).await.unwrap();
    assert_eq!(named.call(to.clone(), Message::new("echo", b"1".to_vec()), LONG).await.unwrap(), b"1");
    // A private broker (`memory://`) does not see the named one, nor does another name.
    for url in ["memory://".to_owned(), format!("memory://{}", prefix())] {
        let other = Bus::connect(&url, &p, Uuid::new_v4()).await.unwrap();
        let err = other.call(to.clone(), Message::new("echo", vec![]), LONG).await.unwrap_err();
        assert!(matches!(err, BusError::Unroutable(_)), "{url}: {err:?}");
    }
}
