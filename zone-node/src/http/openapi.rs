//! The OpenAPI document of the API, generated from the handlers' annotations and the `api` types.

use utoipa::openapi::path::Operation;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::openapi::{ContentBuilder, Ref, RefOr, ResponseBuilder};
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
    modifiers(&BearerAuth, &CommonResponses, &ZoneTransport)
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

/// The answers every operation of a kind can give, whatever its handler does, added to each
/// operation's own list so that the document names every status the node can answer:
/// - any operation: 500 `internal`, 503 (`store_unavailable`, `node_fenced`, `bus_unavailable`, …)
///   and 504 `timeout` (the request-timeout middleware);
/// - one that needs a token: 401 (`missing_token`, `invalid_token`, `token_expired`) and 403
///   `forbidden` (the role does not allow it);
/// - one with parameters or a body: 400 (`invalid_field`, `invalid_json`, `invalid_body`, …);
/// - one with a path parameter: 404 `not_found`;
/// - one with a body: 413 `body_too_large` and 415 `unsupported_media_type`.
struct CommonResponses;

impl Modify for CommonResponses {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        for (path, item) in openapi.paths.paths.iter_mut() {
            let has_path_param = path.contains('{');
            for op in
                [&mut item.get, &mut item.put, &mut item.post, &mut item.delete, &mut item.patch].into_iter().flatten()
            {
                add_common(op, has_path_param);
            }
        }
    }
}

fn add_common(op: &mut Operation, has_path_param: bool) {
    let secured = op.security.as_ref().is_some_and(|s| !s.is_empty());
    let has_body = op.request_body.is_some();
    let has_params = op.parameters.as_ref().is_some_and(|p| !p.is_empty()) || has_path_param;
    let mut codes = vec![
        ("500", "internal error; the node's log has the details"),
        ("503", "the zone cannot serve now (database, bus, node fenced, child zone); retry"),
        ("504", "not answered within the request timeout"),
    ];
    if secured {
        codes.push(("401", "no token, or an invalid or expired one"));
        codes.push(("403", "the account's role does not allow this"));
    }
    if has_params || has_body {
        codes.push(("400", "invalid input; the message names the field and what to fix"));
    }
    if has_path_param {
        codes.push(("404", "no such resource (or not visible to the caller)"));
    }
    if has_body {
        codes.push(("413", "the body is larger than the zone accepts"));
        codes.push(("415", "the body is not sent as application/json"));
    }
    for (code, description) in codes {
        op.responses.responses.entry(code.to_owned()).or_insert_with(|| error_response(description));
    }
}

fn error_response(description: &str) -> RefOr<utoipa::openapi::Response> {
    let content = ContentBuilder::new().schema(Some(Ref::from_schema_name("ErrorBody"))).build();
    RefOr::T(ResponseBuilder::new().description(description).content("application/json", content).build())
}

/// The rule tying a child's `api_url` to `insecure_http` ([`api::contract::zone_transport`]),
/// which no field attribute can state, joined to the derived schemas of the zone bodies.
struct ZoneTransport;

impl Modify for ZoneTransport {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let Some(components) = openapi.components.as_mut() else { return };
        if let Some(derived) = components.schemas.remove("ZoneCreate") {
            let joined = serde_json::json!({"allOf": [derived, api::contract::zone_transport()]});
            // api's contract tests parse this very shape.
            let schema = serde_json::from_value(joined).expect("a derived schema with an allOf parses");
            components.schemas.insert("ZoneCreate".to_owned(), schema);
        }
    }
}

pub fn document() -> utoipa::openapi::OpenApi {
    ApiDoc::openapi()
}
