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
        crate::http::zone::get_zone,
        crate::http::zone::owners,
        crate::http::zone::probe,
        crate::http::accounts::create_account,
        crate::http::accounts::list_accounts,
        crate::http::accounts::delete_account,
    ),
    components(schemas(
        api::ErrorBody, api::ErrorDetail, api::ErrorCode, api::Health, api::Readiness, api::CheckResult,
        api::TokenRequest, api::TokenResponse, api::Role, api::AccountCreate, api::Account, api::AccountList,
        api::ZoneInfo, api::NodeInfo, api::OwnersRequest, api::OwnersResponse, api::ProbeRequest, api::ProbeResponse,
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
