//! The OpenAPI document of the API, generated from the handlers' annotations and the `api` types.

use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};

#[derive(OpenApi)]
#[openapi(
    info(title = "zone-node API", description = "The public REST API of a zone of the hierarchical zone federation gateway."),
    paths(
        crate::http::health::healthz,
        crate::http::health::readyz,
        crate::http::auth::issue_token,
        crate::http::auth::revoke_token,
        crate::http::zone::get_zone,
        crate::http::zone::watch_zone,
        crate::http::zone::owners,
        crate::http::zone::probe,
        crate::http::accounts::create_account,
        crate::http::accounts::list_accounts,
        crate::http::accounts::delete_account,
        crate::http::hosts::register_host,
        crate::http::hosts::create_enrollment_token,
        crate::http::hosts::enroll,
        crate::http::hosts::list_hosts,
        crate::http::hosts::show_host,
        crate::http::hosts::update_host,
        crate::http::hosts::delete_host,
        crate::http::hosts::report,
        crate::http::hosts::capabilities,
        crate::http::hosts::placement,
        crate::http::instances::create_instance,
        crate::http::instances::list_instances,
        crate::http::instances::show_instance,
        crate::http::instances::instance_action,
        crate::http::instances::delete_instance,
        crate::http::callbacks::callback,
        crate::http::zones::add_zone,
        crate::http::zones::list_zones,
        crate::http::zones::list_zones_detail,
        crate::http::zones::show_zone,
        crate::http::zones::show_zone_detail,
        crate::http::zones::update_zone,
        crate::http::zones::delete_zone,
        crate::http::clients::lowest_zone,
    ),
    components(schemas(
        api::ErrorBody, api::ErrorDetail, api::ErrorCode, api::Health, api::Readiness, api::CheckResult,
        api::TokenRequest, api::TokenResponse, api::Role, api::AccountCreate, api::Account, api::AccountList,
        api::ZoneInfo, api::NodeInfo, api::OwnersRequest, api::OwnersResponse, api::ProbeRequest, api::ProbeResponse,
        api::HostRegister, api::HostUpdate, api::Host, api::HostList, api::Capability, api::CapabilityKind,
        api::Resources, api::Requirement, api::Op, api::PlacementRequest, api::Placement, api::AggregateEntry,
        api::InstanceCreate, api::Instance, api::InstanceBatch, api::Creation, api::InstanceList, api::InstanceAction,
        api::InstanceActionKind,
        api::agent::HostReport, api::agent::AgentResult, api::agent::AgentTask, api::agent::AgentAction,
        api::ZoneCreate, api::ZoneUpdate, api::ChildZone, api::ZoneList, api::ZoneStatus, api::ChildSummary,
        api::SubtreeEntry, api::SubtreeView, api::LowestZone, api::ZoneWatch,
    )),
    modifiers(&BearerAuth)
)]
struct ApiDoc;

struct BearerAuth;

impl Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
    }
}

pub fn document() -> utoipa::openapi::OpenApi {
    ApiDoc::openapi()
}
