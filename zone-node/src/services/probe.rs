//! The probe service: a resource task that holds its resource for a while and counts, in the
//! database, how many probe tasks run on that resource at once across the whole zone.
//!
//! With the ring and the serial work queue doing their job, `active` is always 1. An operator can
//! run it (admin only, `POST /v1/zone/probe/{id}`) to check a zone after a ring change; the
//! end-to-end tests use it while nodes join and die. A probe cut short (node killed or fenced
//! mid-task) leaves its resource's `active` raised: that is evidence, not a leak to clean.

use std::time::Duration;

use api::bus::ProbeServiceRequest;
use api::{ErrorCode, ProbeResponse};
use uuid::Uuid;

use crate::bus::Message;
use crate::cluster::ResourceHandler;
use crate::error::{Error, Result};
use crate::store::Store;

/// The longest a probe may hold its resource.
pub const MAX_HOLD_MS: u64 = 10_000;

pub struct Probe {
    store: Store,
    me: Uuid,
}

impl Probe {
    pub fn new(store: Store, me: Uuid) -> Probe {
        Probe { store, me }
    }
}

#[async_trait::async_trait]
impl ResourceHandler for Probe {
    async fn handle(&self, msg: &Message) -> Result<Vec<u8>> {
        let resource_id = msg.resource_id.clone().unwrap_or_default();
        let ProbeServiceRequest::Run(req) = ProbeServiceRequest::decode(&msg.kind, &msg.body)?;
        if req.hold_ms > MAX_HOLD_MS {
            return Err(Error::api(ErrorCode::InvalidField, format!("hold_ms: at most {MAX_HOLD_MS}")));
        }
        let active = self.store.probe_enter(&resource_id).await?;
        tokio::time::sleep(Duration::from_millis(req.hold_ms)).await;
        let completed = self.store.probe_exit(&resource_id).await?;
        let response = ProbeResponse { resource_id, node_id: self.me.to_string(), active, completed };
        Ok(serde_json::to_vec(&response)?)
    }
}
