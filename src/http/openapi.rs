//! The API's OpenAPI 3.1 document, derived from the handlers' annotations
//! and the types they take and return (utoipa), served at
//! `/api/v1/openapi.json` and kept in the repo as `openapi.json` beside this
//! file so that every change to the API shows in review.

use std::sync::Arc;

use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use utoipa::OpenApi;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};

use super::HttpContext;
use super::api;
use super::error::ErrorBody;

#[derive(OpenApi)]
#[openapi(
    info(
        title = "rackboot admin API",
        description = "Node records, bootenvs, leases and boot explanations of one rackboot. Every request needs `Authorization: Bearer <token>` with a token from the file named by `api.tokens_file`: scope `read` may GET, scope `admin` may do everything. Every error is `{\"error\": \"...\"}`."
    ),
    paths(
        api::nodes,
        api::create,
        api::bulk,
        api::import,
        api::node,
        api::patch,
        api::delete,
        api::events,
        api::leases,
        api::bootenvs,
        api::validate,
        api::bootenv,
        api::explain,
        super::reconfigure::reconfigure,
        super::reconfigure::reports,
        openapi_json,
    ),
    components(schemas(ErrorBody)),
    modifiers(&Bearer),
    security(("bearer" = [])),
    tags(
        (name = "nodes", description = "Node records: what each machine boots"),
        (name = "bootenvs", description = "What nodes can boot, as loaded from bootenvs_dir"),
        (name = "leases", description = "DHCP leases"),
        (name = "explain", description = "What a client would be handed, and why"),
        (name = "api", description = "This document"),
    )
)]
pub struct ApiDoc;

struct Bearer;

impl utoipa::Modify for Bearer {
    fn modify(&self, doc: &mut utoipa::openapi::OpenApi) {
        let components = doc.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .description(Some("A token from api.tokens_file"))
                    .build(),
            ),
        );
    }
}

/// The document as served and as kept in the repo.
pub fn document() -> String {
    let mut text = ApiDoc::openapi()
        .to_pretty_json()
        .expect("the OpenAPI document serializes");
    text.push('\n');
    text
}

/// This document.
#[utoipa::path(get, path = "/api/v1/openapi.json", tag = "api",
    responses((status = 200, description = "The OpenAPI 3.1 document of this API", content_type = "application/json")))]
pub async fn openapi_json(State(_): State<Arc<HttpContext>>) -> Response {
    ([(header::CONTENT_TYPE, "application/json")], document()).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The document in the repo is the one the code describes. Regenerate
    /// with `RACKBOOT_BLESS=1 cargo test --lib openapi` when a change is intended.
    #[test]
    fn openapi_document_matches_golden() {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src/http/openapi.json");
        let now = document();
        if std::env::var_os("RACKBOOT_BLESS").is_some() {
            std::fs::write(&path, &now).unwrap();
            return;
        }
        let golden = std::fs::read_to_string(&path).unwrap_or_default();
        assert!(
            golden == now,
            "{} differs from the API the code describes; regenerate with RACKBOOT_BLESS=1 if the change is intended",
            path.display()
        );
    }

    /// Every route the router serves under /api/v1 is in the document, with its method.
    #[test]
    fn every_api_route_is_documented() {
        let doc = ApiDoc::openapi();
        let routes = super::super::api_routes();
        assert!(routes.len() >= 14);
        for r in routes {
            let full = format!("{}{}", super::super::API_PREFIX, r.path);
            let item =
                doc.paths.paths.get(&full).unwrap_or_else(|| {
                    panic!("{} {full} is not in the OpenAPI document", r.method)
                });
            let method = r.method.as_str().to_ascii_lowercase();
            let json = serde_json::to_value(item).unwrap();
            assert!(
                json.get(&method).is_some(),
                "{} {full} is not in the OpenAPI document",
                r.method
            );
        }
        // And the document names no route the router lacks.
        let served: std::collections::BTreeSet<(String, String)> = super::super::api_routes()
            .iter()
            .map(|r| {
                (
                    format!("{}{}", super::super::API_PREFIX, r.path),
                    r.method.as_str().to_ascii_lowercase(),
                )
            })
            .collect();
        for (path, item) in &doc.paths.paths {
            let json = serde_json::to_value(item).unwrap();
            for method in json.as_object().unwrap().keys() {
                assert!(
                    served.contains(&(path.clone(), method.clone())),
                    "{method} {path} is documented but not served"
                );
            }
        }
    }
}
