//! `api.portal`: the shared API queue every node consumes (ZStack's API portal).
//!
//! A client of the bus does not need to know the ring: it sends to `<prefix>.message.api.portal`
//! and whichever node takes the message routes it. A message with `x-resource-id` goes to the
//! ring owner's service queue, named by the part of its `type` before the first dot
//! (`probe.run` → service `probe`); the owner replies to the client directly. Messages without a
//! resource are answered here:
//!
//! | type | body | reply |
//! |---|---|---|
//! | `zone.get` | `{}` | `{"id","name","api_url","node_id","ring_epoch","nodes":[{"id","state"}]}` |
//! | `echo` | anything | the same body |

use api::{ErrorBody, ErrorCode};

use crate::bus::{Bus, Delivery, Handler};
use crate::cluster::{destination, Cluster, Route};
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

    fn zone_get(&self) -> Result<Vec<u8>, ErrorBody> {
        let view = self.cluster.view();
        let nodes: Vec<_> = view.nodes.iter().map(|n| serde_json::json!({ "id": n.id, "state": n.state })).collect();
        let body = serde_json::json!({
            "id": self.zone.id,
            "name": self.zone.name,
            "api_url": self.api_url,
            "node_id": self.cluster.me(),
            "ring_epoch": view.epoch,
            "nodes": nodes,
        });
        Ok(body.to_string().into_bytes())
    }
}

#[async_trait::async_trait]
impl Handler for Portal {
    async fn handle(&self, delivery: Delivery) {
        let kind = delivery.msg.kind.clone();
        if let Some(resource) = delivery.msg.resource_id.clone() {
            let service = kind.split('.').next().unwrap_or_default().to_owned();
            if service.is_empty() {
                delivery
                    .reply(Err(ErrorBody::new(ErrorCode::NoSuchService, format!("type {kind:?} names no service"))))
                    .await;
                return;
            }
            let to = match destination(&self.cluster, &service, Route::Resource(&resource)) {
                Ok(to) => to,
                Err(error) => {
                    delivery.reply(Err(error)).await;
                    return;
                }
            };
            if let Err(error) = self.bus.forward(to, delivery).await {
                tracing::warn!(%error, kind, resource, "portal could not route a message");
            }
            return;
        }
        let result = match kind.as_str() {
            "zone.get" => self.zone_get(),
            "echo" => Ok(delivery.msg.body.clone()),
            _ => Err(ErrorBody::new(ErrorCode::NoSuchService, format!("the portal does not handle type {kind:?}"))),
        };
        delivery.reply(result).await;
    }
}
