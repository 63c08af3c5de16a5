//! `api.portal`: the shared API queue every node consumes (ZStack's API portal).
//!
//! A client of the bus does not need to know the ring: it sends to `<prefix>.message.api.portal`
//! and whichever node takes the message routes it. A message with `x-resource-id` goes to the
//! ring owner's service queue, named by the part of its `type` before the first dot
//! (`probe.run` → service `probe`, [`api::bus::service_of`]); the owner replies to the client
//! directly. Messages without a resource are answered here ([`PortalRequest`]): `zone.get` and
//! `echo`.

use api::bus::service::PORTAL;
use api::bus::{PortalNode, PortalRequest, PortalZone};
use api::{ErrorBody, ErrorCode};

use crate::bus::{Bus, Delivery, Handler};
use crate::cluster::{destination, into_reply, Cluster};
use crate::error::{Error, Result};
use crate::store::ZoneRow;

pub struct Portal {
    bus: Bus,
    cluster: Cluster,
    zone: ZoneRow,
    api_url: String,
}

impl Portal {
    pub fn new(bus: Bus, cluster: Cluster, zone: ZoneRow, api_url: String) -> Portal {
        Portal { bus, cluster, zone, api_url }
    }

    fn zone_get(&self) -> Result<Vec<u8>> {
        let view = self.cluster.view();
        let zone = PortalZone {
            id: self.zone.id,
            name: self.zone.name.clone(),
            api_url: self.api_url.clone(),
            node_id: self.cluster.me(),
            ring_epoch: view.epoch,
            nodes: view.nodes.iter().map(|n| PortalNode { id: n.id, state: n.state.as_str().to_owned() }).collect(),
        };
        Ok(serde_json::to_vec(&zone)?)
    }
}

#[async_trait::async_trait]
impl Handler for Portal {
    async fn handle(&self, delivery: Delivery) {
        let kind = delivery.msg.kind.clone();
        if let Some(resource) = delivery.msg.resource_id.clone() {
            let Some(service) = api::bus::service_of(&kind) else {
                delivery
                    .reply(Err(ErrorBody::new(ErrorCode::NoSuchService, format!("type {kind:?} names no service"))))
                    .await;
                return;
            };
            let to = match destination(&self.cluster, service, &resource) {
                Ok(to) => to,
                Err(error) => {
                    delivery.reply(into_reply(PORTAL, Err(error))).await;
                    return;
                }
            };
            if let Err(error) = self.bus.forward(to, delivery).await {
                tracing::warn!(%error, kind, resource, "portal could not route a message");
            }
            return;
        }
        let result = match PortalRequest::decode(&kind) {
            Ok(PortalRequest::ZoneGet) => self.zone_get(),
            Ok(PortalRequest::Echo) => Ok(delivery.msg.body.clone()),
            Err(e) => Err(Error::from(e)),
        };
        delivery.reply(into_reply(PORTAL, result)).await;
    }
}
