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
use crate::model::{EventKind, NodeState};

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
        super::power::power,
        super::rollout::start,
        super::rollout::list,
        super::rollout::show,
        super::rollout::steer,
        openapi_json,
    ),
    components(schemas(ErrorBody)),
    modifiers(&Bearer, &Refusals),
    security(("bearer" = [])),
    tags(
        (name = "nodes", description = "Node records: what each machine boots"),
        (name = "bootenvs", description = "What nodes can boot, as loaded from bootenvs_dir"),
        (name = "leases", description = "DHCP leases"),
        (name = "rollouts", description = "Reinstalling a fleet, a few nodes at a time, canaries first"),
        (name = "explain", description = "What a client would be handed, and why"),
        (name = "api", description = "This document"),
    )
)]
pub struct ApiDoc;

struct Bearer;

/// A request body naming nodes by exactly one of `selector` and `macs` (the
/// other absent or null), with one more required property if `extra`.
fn selector_or_macs(
    description: &str,
    extra: Option<(&str, serde_json::Value)>,
) -> utoipa::openapi::schema::Schema {
    let branch = |by: &str| {
        let mut properties = serde_json::json!({
            "selector": {"type": "null"},
            "macs": {"type": "null"},
        });
        properties[by] = if by == "selector" {
            serde_json::json!({"type": "string", "pattern": SELECTOR_PATTERN,
                               "description": "A label selector, e.g. `role=builder,rack=r12`."})
        } else {
            serde_json::json!({"type": "array", "items": {"type": "string", "pattern": MAC_PATTERN}})
        };
        let mut required = vec![by.to_string()];
        if let Some((name, schema)) = &extra {
            properties[*name] = schema.clone();
            required.insert(0, name.to_string());
        }
        serde_json::json!({
            "type": "object",
            "additionalProperties": false,
            "required": required,
            "properties": properties,
        })
    };
    let schema = serde_json::json!({
        "description": description,
        "oneOf": [branch("selector"), branch("macs")],
    });
    serde_json::from_value(schema).expect("a selector-or-MACs schema is a schema")
}

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

/// A MAC as [`crate::model::Mac`] parses one: six hex pairs joined by `:` or
/// `-`, or twelve hex digits.
const MAC_PATTERN: &str =
    "^[0-9A-Fa-f]{2}(:[0-9A-Fa-f]{2}){5}$|^[0-9A-Fa-f]{2}(-[0-9A-Fa-f]{2}){5}$|^[0-9A-Fa-f]{12}$";

/// A label selector as [`crate::model::selector::LabelSelector`] parses one:
/// terms `k=v`, `k!=v`, `k` or `!k` joined by commas, spaces around them.
const SELECTOR_PATTERN: &str = r"^ *(!? *[A-Za-z0-9._/-]+|[A-Za-z0-9._/-]+ *!?= *[A-Za-z0-9._-]+) *(, *(!? *[A-Za-z0-9._/-]+|[A-Za-z0-9._/-]+ *!?= *[A-Za-z0-9._-]+) *)*$";

/// `explain`'s `arch`: a name, or an option 93 number (a u16, as Rust parses one).
const ARCH_PATTERN: &str = "^(bios|x86_64_efi|uefi|arm64_efi|arm64|x86_64_http|arm64_http|\\+?0*([0-9]{1,4}|[1-5][0-9]{4}|6[0-4][0-9]{3}|65[0-4][0-9]{2}|655[0-2][0-9]|6553[0-5]))$";

/// A bootenv name (`crate::boot::bootenv::is_bootenv_name`).
const BOOTENV_NAME_PATTERN: &str = "^[A-Za-z0-9_-]+$";

/// What every operation can answer besides its own results, and the shapes
/// of MACs and selectors, in one place rather than on each handler: 401
/// without a known token, 403 for a change asked with a `read` token, 400 for
/// a path whose `{mac}` is not a MAC. Without these a client generated from
/// the document (schemathesis found it) meets statuses it was never told of,
/// and sends MACs and selectors that can only be refused.
struct Refusals;

impl utoipa::Modify for Refusals {
    fn modify(&self, doc: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::path::{Parameter, ParameterIn};
        use utoipa::openapi::schema::{ObjectBuilder, Schema, Type};
        use utoipa::openapi::{ContentBuilder, Ref, RefOr, ResponseBuilder};

        let error = |why: &str| {
            RefOr::T(
                ResponseBuilder::new()
                    .description(why)
                    .content(
                        "application/json",
                        ContentBuilder::new()
                            .schema(Some(Ref::from_schema_name("ErrorBody")))
                            .build(),
                    )
                    .build(),
            )
        };
        let pattern = |p: &str| {
            RefOr::T(Schema::Object(
                ObjectBuilder::new()
                    .schema_type(Type::String)
                    .pattern(Some(p))
                    .build(),
            ))
        };
        let one_of = |values: &mut dyn Iterator<Item = String>| {
            RefOr::T(Schema::Object(
                ObjectBuilder::new()
                    .schema_type(Type::String)
                    .enum_values(Some(values.collect::<Vec<_>>()))
                    .build(),
            ))
        };
        let shape = |param: &mut Parameter| match param.name.as_str() {
            "mac" => param.schema = Some(pattern(MAC_PATTERN)),
            "label" => param.schema = Some(pattern(SELECTOR_PATTERN)),
            "name" if matches!(param.parameter_in, ParameterIn::Query) => {
                param.schema = Some(pattern(BOOTENV_NAME_PATTERN))
            }
            "arch" => param.schema = Some(pattern(ARCH_PATTERN)),
            "state" => {
                param.schema = Some(one_of(
                    &mut NodeState::ALL.iter().map(|s| s.as_str().to_string()),
                ))
            }
            "kind" => {
                // A kind (`admin.change`) or any family of one (`admin`).
                let mut kinds = std::collections::BTreeSet::new();
                for k in EventKind::ALL {
                    let name = k.as_str();
                    kinds.insert(name.to_string());
                    for (i, _) in name.match_indices('.') {
                        kinds.insert(name[..i].to_string());
                    }
                }
                param.schema = Some(one_of(&mut kinds.into_iter()));
            }
            _ => {}
        };
        for (path, item) in doc.paths.paths.iter_mut() {
            let has_mac = path.contains("{mac}");
            let ops = [
                (&mut item.get, false),
                (&mut item.post, true),
                (&mut item.put, true),
                (&mut item.patch, true),
                (&mut item.delete, true),
            ];
            for (op, change) in ops {
                let Some(op) = op.as_mut() else { continue };
                let r = &mut op.responses.responses;
                r.entry("401".into()).or_insert_with(|| {
                    error("No `Authorization: Bearer` token, or one api.tokens_file does not grant")
                });
                if change {
                    r.entry("403".into())
                        .or_insert_with(|| error("A `read` token asking for a change"));
                }
                if has_mac {
                    r.entry("400".into())
                        .or_insert_with(|| error("The path's MAC is not a MAC address"));
                }
                if op.parameters.as_ref().is_some_and(|p| !p.is_empty()) {
                    r.entry("400".into()).or_insert_with(|| {
                        error("A query string with a parameter this operation does not take")
                    });
                }
                if let Some(body) = op.request_body.as_mut() {
                    // The bootenv text is read whatever the Content-Type says;
                    // text/plain is what generic clients can send.
                    if let Some(toml) = body.content.get_mut("application/toml") {
                        // Something to validate: not empty, not only blanks.
                        toml.schema = Some(pattern(r"\S"));
                        let toml = toml.clone();
                        body.content.entry("text/plain".into()).or_insert(toml);
                    } else {
                        r.entry("422".into()).or_insert_with(|| {
                            error(
                                "The body is not the JSON this operation takes; the field is named",
                            )
                        });
                    }
                }
                for param in op.parameters.iter_mut().flatten() {
                    shape(param);
                }
            }
        }
        // Selectors in request bodies.
        if let Some(components) = doc.components.as_mut() {
            // Exactly one of `selector` and `macs` (the other absent or null).
            let reconfigure = selector_or_macs(
                "`{\"selector\": \"role=builder\"}` or `{\"macs\": [\"52:54:00:…\", …]}`.",
                None,
            );
            components
                .schemas
                .insert("ReconfigureRequest".into(), RefOr::T(reconfigure));
            let action = serde_json::json!({
                "type": "string",
                "enum": crate::model::PowerAction::ALL.map(|a| a.as_str()),
                "description": "`pxe-once`: boot from the network once, then power-cycle (or on); refused, with no reboot, when the BMC does not keep the override."
            });
            let power = selector_or_macs(
                "`{\"action\": \"pxe-once\", \"selector\": \"role=builder\"}` or `{\"action\": \"status\", \"macs\": [\"52:54:00:…\"]}`.",
                Some(("action", action)),
            );
            components
                .schemas
                .insert("PowerRequest".into(), RefOr::T(power));
            for name in ["BulkRequest"] {
                if let Some(RefOr::T(Schema::Object(o))) = components.schemas.get_mut(name)
                    && let Some(RefOr::T(Schema::Object(sel))) = o.properties.get_mut("selector")
                {
                    sel.pattern = Some(SELECTOR_PATTERN.into());
                }
            }
        }
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
            let full = format!("{}{}", crate::routes::API_PREFIX, r.path);
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
                    format!("{}{}", crate::routes::API_PREFIX, r.path),
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
