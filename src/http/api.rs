//! `/api/v1`: node records, their timelines, leases, bootenvs and `explain`,
//! as JSON. Maps HTTP to the store, to policy (`boot::edit`,
//! `boot::explain`) and to the admin operations (`control::admin`, where
//! every change to a node record is checked against protection and
//! audited); decides nothing itself. Every handler is described for the
//! OpenAPI document (`openapi.rs`).

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use serde::{Deserialize, Serialize};

use super::error::ErrorBody;
use super::{ApiError, HttpContext, HttpError, parse_mac};
use crate::boot::{ArchBoot, ExplainContext, Explanation, FieldError, NodeInput, NodePatch};
use crate::control::admin::{Actor, AdminError};
use crate::model::{
    BootArch, ClientArch, ClientInfo, Event, EventKind, LabelSelector, Lease, Mac, Node, NodeState,
    Timestamp,
};
use crate::nodes::new_token;
use crate::routes;

/// A node record with its timeline (oldest event first).
#[derive(Serialize, utoipa::ToSchema)]
pub struct NodeWithEvents {
    #[serde(flatten)]
    pub node: Node,
    pub events: Vec<Event>,
    /// Where its boot is stuck, in one sentence, once a step is overdue
    /// (`[lifecycle]` timeouts); null while it is not, or without events.
    pub diagnosis: Option<String>,
    /// The secrets (files of `secrets_dir`) its config scripts and the
    /// cloud-init and answer templates name (in the single-node view only;
    /// empty in lists).
    pub secrets: Vec<String>,
}

impl NodeWithEvents {
    fn new(ctx: &HttpContext, node: Node, events: Vec<Event>) -> NodeWithEvents {
        let diagnosis = crate::boot::diagnose(&node, &events, Timestamp::now(), &ctx.timeouts)
            .map(|s| s.reason);
        NodeWithEvents {
            node,
            events,
            diagnosis,
            secrets: Vec::new(),
        }
    }
}

/// Filters of `GET /api/v1/nodes`.
#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct NodeFilter {
    /// Label selector: `rack=r1,role=builder` (all must hold), `k!=v`, bare `k` (has the label).
    pub label: Option<String>,
    /// Only nodes in this state.
    pub state: Option<String>,
    /// Only nodes whose bootenv or next-boot bootenv is this.
    pub bootenv: Option<String>,
    /// Only the node with this hostname (any case).
    pub hostname: Option<String>,
    /// Include each node's timeline (default false).
    pub events: Option<bool>,
}

fn unprocessable(e: FieldError) -> ApiError {
    ApiError(HttpError::unprocessable(e.to_string()))
}

pub(super) fn known_bootenv(ctx: &HttpContext) -> impl Fn(&str) -> bool + use<> {
    let catalog = ctx.catalog.current();
    move |name: &str| catalog.get(name).is_some()
}

fn selector(text: &str) -> Result<LabelSelector, ApiError> {
    text.parse::<LabelSelector>()
        .map_err(|e| ApiError(HttpError::bad_request(e.to_string())))
}

/// A JSON body, refused with the path of the bad field.
fn json_body<T: serde::de::DeserializeOwned>(body: &Bytes) -> Result<T, ApiError> {
    let de = &mut serde_json::Deserializer::from_slice(body);
    serde_path_to_error::deserialize(de).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        let msg = if path == "." || path.is_empty() {
            format!("the body is not what this endpoint takes: {inner}")
        } else {
            format!("field `{path}`: {inner}")
        };
        ApiError(HttpError::unprocessable(msg))
    })
}

/// An admin operation's refusal as the API says it: 404, 409 naming the
/// node (protected, taken), or the store's failure.
impl From<AdminError> for ApiError {
    fn from(e: AdminError) -> ApiError {
        match e {
            AdminError::NoSuchNode(mac) => ApiError(HttpError::not_found(format!(
                "no node with MAC {mac} (POST {} creates one)",
                routes::api_path(routes::api::NODES)
            ))),
            AdminError::Exists(mac) => ApiError(HttpError::conflict(format!(
                "node {mac} exists; PATCH {} to change it",
                routes::api_path(&routes::api::node(mac))
            ))),
            AdminError::Protected { refusal, .. } => ApiError(HttpError::conflict(refusal.message)),
            AdminError::Clash { message, .. } => ApiError(HttpError::conflict(message)),
            e @ AdminError::Moved { .. } => ApiError(HttpError::conflict(e.to_string())),
            AdminError::Store(e) => e.into(),
        }
    }
}

/// Node records, filtered.
#[utoipa::path(get, path = "/api/v1/nodes", tag = "nodes", params(NodeFilter),
    responses((status = 200, body = Vec<NodeWithEvents>, description = "Matching nodes by MAC; `events` is empty unless `events=true`"),
              (status = 400, body = ErrorBody, description = "A malformed selector or unknown state")))]
pub async fn nodes(
    State(ctx): State<Arc<HttpContext>>,
    Query(f): Query<NodeFilter>,
) -> Result<Json<Vec<NodeWithEvents>>, ApiError> {
    let sel = f.label.as_deref().map(selector).transpose()?;
    let state = f
        .state
        .as_deref()
        .map(|s| {
            s.parse::<NodeState>().map_err(|e| {
                let all: Vec<&str> = NodeState::ALL.iter().map(|s| s.as_str()).collect();
                ApiError(HttpError::bad_request(format!(
                    "{e} (one of {})",
                    all.join(", ")
                )))
            })
        })
        .transpose()?;
    let mut out = Vec::new();
    for node in ctx.control.nodes().await? {
        if sel.as_ref().is_some_and(|s| !s.matches(&node.labels))
            || state.is_some_and(|s| node.state != s)
            || f.bootenv
                .as_ref()
                .is_some_and(|b| &node.bootenv != b && node.next_bootenv.as_ref() != Some(b))
            || f.hostname
                .as_ref()
                .is_some_and(|h| !node.hostname.eq_ignore_ascii_case(h))
        {
            continue;
        }
        let events = if f.events == Some(true) {
            ctx.control.events(node.mac).await?
        } else {
            Vec::new()
        };
        out.push(NodeWithEvents::new(&ctx, node, events));
    }
    Ok(Json(out))
}

async fn record(ctx: &HttpContext, mac: Mac) -> Result<Node, ApiError> {
    ctx.control.node(mac).await?.ok_or_else(|| {
        ApiError(HttpError::not_found(format!(
            "no node with MAC {mac} (POST {} creates one)",
            routes::api_path(routes::api::NODES)
        )))
    })
}

/// One node record with its timeline.
#[utoipa::path(get, path = "/api/v1/nodes/{mac}", tag = "nodes",
    params(("mac" = String, Path, description = "The node's MAC")),
    responses((status = 200, body = NodeWithEvents), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn node(
    State(ctx): State<Arc<HttpContext>>,
    Path(mac): Path<String>,
) -> Result<Json<NodeWithEvents>, ApiError> {
    let mac = parse_mac(&mac)?;
    let node = record(&ctx, mac).await?;
    let events = ctx.control.events(mac).await?;
    let secrets = node_secrets(&ctx, &node).await;
    let mut view = NodeWithEvents::new(&ctx, node, events);
    view.secrets = secrets;
    Ok(Json(view))
}

/// The secrets `node`'s config scripts (those of the bootenv it boots now)
/// and the seed templates name.
async fn node_secrets(ctx: &HttpContext, node: &Node) -> Vec<String> {
    let bootenv = crate::boot::effective_bootenv(node, Timestamp::now()).bootenv;
    let catalog = ctx.catalog.current();
    let mut out: std::collections::BTreeSet<String> = catalog
        .scripts_for(node, &bootenv)
        .into_iter()
        .filter_map(|a| catalog.script_source(&a.script))
        .flat_map(|text| crate::secrets::referenced(&text))
        .collect();
    out.extend(super::seed::seed_secrets(ctx).await);
    out.into_iter().collect()
}

/// `GET /api/v1/nodes/{mac}/events` query.
#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct EventsQuery {
    /// Only events of this kind (`admin.change`) or family (`admin`: every
    /// admin change and deletion, with the API token that made it; `dhcp`,
    /// `http`, `report`...).
    pub kind: Option<String>,
}

/// The node's timeline, oldest first.
#[utoipa::path(get, path = "/api/v1/nodes/{mac}/events", tag = "nodes",
    params(("mac" = String, Path, description = "The node's MAC"), EventsQuery),
    responses((status = 200, body = Vec<Event>), (status = 400, body = ErrorBody, description = "A bad MAC, or a kind no event has"), (status = 404, body = ErrorBody)))]
pub async fn events(
    State(ctx): State<Arc<HttpContext>>,
    Path(mac): Path<String>,
    Query(q): Query<EventsQuery>,
) -> Result<Json<Vec<Event>>, ApiError> {
    let mac = parse_mac(&mac)?;
    if let Some(k) = &q.kind
        && !EventKind::ALL.iter().any(|e| e.in_family(k))
    {
        return Err(ApiError(HttpError::bad_request(format!(
            "no event is of kind `{k}` (a kind such as `admin.change`, or a family such as `admin`, `dhcp`, `http`)"
        ))));
    }
    record(&ctx, mac).await?;
    let mut events = ctx.control.events(mac).await?;
    if let Some(k) = &q.kind {
        events.retain(|e| e.kind().in_family(k));
    }
    Ok(Json(events))
}

/// Creates a node record.
#[utoipa::path(post, path = "/api/v1/nodes", tag = "nodes", request_body = NodeInput,
    responses((status = 201, body = NodeWithEvents, description = "The new record"),
              (status = 409, body = ErrorBody, description = "The MAC, hostname or fixed address is taken"),
              (status = 422, body = ErrorBody, description = "A bad field, named")))]
pub async fn create(
    State(ctx): State<Arc<HttpContext>>,
    Extension(actor): Extension<Actor>,
    body: Bytes,
) -> Result<Response, ApiError> {
    let input: NodeInput = json_body(&body)?;
    input
        .validate(&known_bootenv(&ctx))
        .map_err(unprocessable)?;
    let named = input.hostname.is_some();
    let mut node = input.into_node(None, &ctx.default_bootenv, new_token, Timestamp::now());
    if !named {
        // `[nodes] default_hostname`, as for the records rackboot makes.
        node.hostname = crate::nodes::default_hostname(node.mac, ctx.control.door.hostnames());
    }
    let node = ctx.control.admin().create(&actor, node).await?;
    let events = ctx.control.events(node.mac).await?;
    Ok((
        StatusCode::CREATED,
        Json(NodeWithEvents::new(&ctx, node, events)),
    )
        .into_response())
}

/// Edits a node record (JSON merge patch of its editable fields).
#[utoipa::path(patch, path = "/api/v1/nodes/{mac}", tag = "nodes", request_body = NodePatch,
    params(("mac" = String, Path, description = "The node's MAC")),
    responses((status = 200, body = NodeWithEvents, description = "The record after the edit"),
              (status = 404, body = ErrorBody),
              (status = 409, body = ErrorBody, description = "The node is protected (pass force), or the hostname or address is taken"),
              (status = 422, body = ErrorBody, description = "A bad field, named")))]
pub async fn patch(
    State(ctx): State<Arc<HttpContext>>,
    Extension(actor): Extension<Actor>,
    Path(mac): Path<String>,
    body: Bytes,
) -> Result<Json<NodeWithEvents>, ApiError> {
    let mac = parse_mac(&mac)?;
    let patch: NodePatch = json_body(&body)?;
    let valid = patch
        .validate(&known_bootenv(&ctx))
        .map_err(unprocessable)?;
    let node = ctx
        .control
        .admin()
        .patch(&actor, mac, valid, Timestamp::now())
        .await?;
    let events = ctx.control.events(mac).await?;
    Ok(Json(NodeWithEvents::new(&ctx, node, events)))
}

/// `?force=true` of a delete or an import.
#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct ForceQuery {
    /// Delete a protected node, or let an import change what protected
    /// nodes boot (default false: refused with 409, naming the node).
    pub force: Option<bool>,
}

/// Deletes a node record and its timeline. The deletion is audited: a log
/// line with the whole record, and an `admin.delete` event that a record
/// made again for the MAC starts its timeline with.
#[utoipa::path(delete, path = "/api/v1/nodes/{mac}", tag = "nodes",
    params(("mac" = String, Path, description = "The node's MAC"), ForceQuery),
    responses((status = 204, description = "Deleted"), (status = 404, body = ErrorBody),
              (status = 409, body = ErrorBody, description = "The node is protected (pass force=true); nothing deleted")))]
pub async fn delete(
    State(ctx): State<Arc<HttpContext>>,
    Extension(actor): Extension<Actor>,
    Path(mac): Path<String>,
    Query(q): Query<ForceQuery>,
) -> Result<StatusCode, ApiError> {
    let mac = parse_mac(&mac)?;
    let force = q.force.unwrap_or(false);
    match ctx.control.admin().delete(&actor, mac, force).await {
        Ok(_) => Ok(StatusCode::NO_CONTENT),
        Err(AdminError::NoSuchNode(mac)) => Err(ApiError(HttpError::not_found(format!(
            "no node with MAC {mac}"
        )))),
        Err(e) => Err(e.into()),
    }
}

/// `POST /api/v1/nodes/bulk`.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct BulkRequest {
    /// Label selector of the nodes to edit: `rack=r12`, `k!=v`, `k`; must not be empty.
    pub selector: String,
    pub patch: NodePatch,
}

/// What a bulk edit did.
#[derive(Serialize, utoipa::ToSchema)]
pub struct BulkResult {
    /// Every node the selector matched, by MAC.
    pub matched: Vec<Mac>,
    /// The matched nodes whose record the patch changed.
    pub changed: Vec<Mac>,
}

/// Applies one patch to every node a label selector matches: all or nothing.
#[utoipa::path(post, path = "/api/v1/nodes/bulk", tag = "nodes", request_body = BulkRequest,
    responses((status = 200, body = BulkResult),
              (status = 400, body = ErrorBody, description = "A malformed selector"),
              (status = 409, body = ErrorBody, description = "A matching node refused (protected) or a clash; nothing changed"),
              (status = 422, body = ErrorBody, description = "A bad field of the patch, named")))]
pub async fn bulk(
    State(ctx): State<Arc<HttpContext>>,
    Extension(actor): Extension<Actor>,
    body: Bytes,
) -> Result<Json<BulkResult>, ApiError> {
    let req: BulkRequest = json_body(&body)?;
    let sel = selector(&req.selector)?;
    let valid = req
        .patch
        .validate(&known_bootenv(&ctx))
        .map_err(unprocessable)?;
    let done = ctx
        .control
        .admin()
        .bulk(&actor, sel, &req.selector, valid, Timestamp::now(), None)
        .await?;
    Ok(Json(BulkResult {
        matched: done.matched,
        changed: done.changed,
    }))
}

/// Why an import was refused: which record, which field.
#[derive(Serialize, utoipa::ToSchema)]
pub struct ImportError {
    pub error: String,
    /// The record's index in the array (0-based).
    pub index: usize,
    /// The field at fault, when one is.
    pub field: Option<String>,
}

/// What an import wrote.
#[derive(Serialize, utoipa::ToSchema)]
pub struct ImportResult {
    /// MACs of the records created.
    pub created: Vec<Mac>,
    /// MACs of the existing records replaced.
    pub updated: Vec<Mac>,
}

fn import_error(status: StatusCode, index: usize, field: Option<&str>, msg: String) -> Response {
    let field_part = field.map(|f| format!(", field `{f}`")).unwrap_or_default();
    let error = format!("record {index}{field_part}: {msg}; nothing was imported");
    tracing::info!(%status, "{error}");
    (
        status,
        Json(ImportError {
            error,
            index,
            field: field.map(str::to_string),
        }),
    )
        .into_response()
}

/// Creates or replaces many node records in one transaction: all or nothing.
#[utoipa::path(post, path = "/api/v1/nodes/import", tag = "nodes", request_body = Vec<NodeInput>, params(ForceQuery),
    responses((status = 200, body = ImportResult),
              (status = 400, body = ErrorBody, description = "The body is not a JSON array, or the query string is not `force`; nothing imported"),
              (status = 409, body = ImportError, description = "A record would change what a protected node boots (pass force=true), or a hostname or address clash; nothing imported"),
              (status = 422, body = ImportError, description = "A bad record, by index and field; nothing imported")))]
pub async fn import(
    State(ctx): State<Arc<HttpContext>>,
    Extension(actor): Extension<Actor>,
    Query(q): Query<ForceQuery>,
    body: Bytes,
) -> Result<Response, ApiError> {
    // Not a record's fault, so not an ImportError (which names one by index).
    let records: Vec<serde_json::Value> = serde_json::from_slice(&body).map_err(|e| {
        ApiError(HttpError::bad_request(format!(
            "the body is not a JSON array of node records: {e}"
        )))
    })?;
    let known = known_bootenv(&ctx);
    let mut inputs = Vec::with_capacity(records.len());
    let mut index_of: HashMap<Mac, usize> = HashMap::new();
    for (i, r) in records.into_iter().enumerate() {
        let input: NodeInput = match serde_path_to_error::deserialize(r) {
            Ok(x) => x,
            Err(e) => {
                let path = e.path().to_string();
                let field = (path != "." && !path.is_empty()).then_some(path);
                let inner = e.into_inner().to_string();
                // serde names an unknown or missing field in its message.
                let field = field.or_else(|| {
                    inner
                        .split('`')
                        .nth(1)
                        .filter(|_| inner.contains("field"))
                        .map(str::to_string)
                });
                return Ok(import_error(
                    StatusCode::UNPROCESSABLE_ENTITY,
                    i,
                    field.as_deref(),
                    inner,
                ));
            }
        };
        if let Err(e) = input.validate(&known) {
            return Ok(import_error(
                StatusCode::UNPROCESSABLE_ENTITY,
                i,
                Some(&e.field),
                e.reason,
            ));
        }
        if let Some(first) = index_of.insert(input.mac, i) {
            return Ok(import_error(
                StatusCode::UNPROCESSABLE_ENTITY,
                i,
                Some("mac"),
                format!("{} is record {first} too", input.mac),
            ));
        }
        inputs.push(input);
    }
    let result = ctx
        .control
        .admin()
        .import(&actor, inputs, q.force.unwrap_or(false), Timestamp::now())
        .await;
    match result {
        Ok(done) => Ok(Json(ImportResult {
            created: done.created,
            updated: done.updated,
        })
        .into_response()),
        Err(AdminError::Protected {
            index: Some(i),
            refusal,
        }) => Ok(import_error(
            StatusCode::CONFLICT,
            i,
            Some(refusal.field),
            refusal.message,
        )),
        Err(AdminError::Clash {
            index,
            field,
            message,
        }) => Ok(import_error(
            StatusCode::CONFLICT,
            index,
            Some(field),
            message,
        )),
        Err(e) => Err(e.into()),
    }
}

/// Every lease the store holds (offered, bound, declined), by address.
#[utoipa::path(get, path = "/api/v1/leases", tag = "leases",
    responses((status = 200, body = Vec<Lease>)))]
pub async fn leases(State(ctx): State<Arc<HttpContext>>) -> Result<Json<Vec<Lease>>, ApiError> {
    Ok(Json(ctx.control.leases().await?))
}

/// A bootenv in force, in short.
#[derive(Serialize, utoipa::ToSchema)]
pub struct BootenvSummary {
    pub name: String,
    pub description: String,
    /// The architectures it boots.
    pub archs: Vec<BootArch>,
    /// Config scripts run after boot, in order.
    pub scripts: Vec<String>,
    /// The file it came from (`(built in)` for `local`).
    pub file: String,
}

/// Why the files on disk were refused at the latest reload (the previous
/// version keeps serving).
#[derive(Serialize, utoipa::ToSchema)]
pub struct RejectedFile {
    pub file: Option<String>,
    pub line: Option<usize>,
    pub reason: String,
    pub at: Timestamp,
}

/// `GET /api/v1/bootenvs`.
#[derive(Serialize, utoipa::ToSchema)]
pub struct BootenvList {
    pub bootenvs: Vec<BootenvSummary>,
    /// Empty while the files on disk are the version in force.
    pub rejected: Vec<RejectedFile>,
}

/// One architecture of a bootenv.
#[derive(Serialize, utoipa::ToSchema)]
#[serde(untagged)]
pub enum ArchDetail {
    Kernel {
        kernel: String,
        initrds: Vec<String>,
        /// The command line template.
        cmdline: String,
    },
    Local {
        /// The iPXE command that hands the node to its disk.
        local: String,
    },
}

/// `GET /api/v1/bootenvs/{name}`.
#[derive(Serialize, utoipa::ToSchema)]
pub struct BootenvDetail {
    #[serde(flatten)]
    pub summary: BootenvSummary,
    pub arch: BTreeMap<BootArch, ArchDetail>,
}

fn summary(catalog: &crate::boot::Catalog, b: &crate::boot::Bootenv) -> BootenvSummary {
    BootenvSummary {
        name: b.name.clone(),
        description: b.description.clone(),
        archs: b.arches.keys().copied().collect(),
        scripts: b.scripts.clone(),
        file: catalog
            .source(&b.name)
            .map(|p| p.display().to_string())
            .unwrap_or_default(),
    }
}

/// The bootenvs in force, and the files the latest reload refused.
#[utoipa::path(get, path = "/api/v1/bootenvs", tag = "bootenvs",
    responses((status = 200, body = BootenvList)))]
pub async fn bootenvs(State(ctx): State<Arc<HttpContext>>) -> Json<BootenvList> {
    Json(bootenv_list(&ctx))
}

/// The bootenvs in force and what the latest reload refused, as `bootenvs`
/// shows them (the console shows the same).
pub(super) fn bootenv_list(ctx: &HttpContext) -> BootenvList {
    let catalog = ctx.catalog.current();
    let rejected = ctx
        .catalog
        .rejected()
        .map(|r| RejectedFile {
            file: r.file.map(|f| f.display().to_string()),
            line: r.line,
            reason: r.reason,
            at: r.at,
        })
        .into_iter()
        .collect();
    BootenvList {
        bootenvs: catalog.bootenvs().map(|b| summary(&catalog, b)).collect(),
        rejected,
    }
}

/// One bootenv in force, every architecture in full.
#[utoipa::path(get, path = "/api/v1/bootenvs/{name}", tag = "bootenvs",
    params(("name" = String, Path, description = "The bootenv's name")),
    responses((status = 200, body = BootenvDetail), (status = 404, body = ErrorBody)))]
pub async fn bootenv(
    State(ctx): State<Arc<HttpContext>>,
    Path(name): Path<String>,
) -> Result<Json<BootenvDetail>, ApiError> {
    let catalog = ctx.catalog.current();
    let b = catalog.get(&name).ok_or_else(|| {
        ApiError(HttpError::not_found(format!(
            "no bootenv `{name}` (GET {} lists them)",
            routes::api_path(routes::api::BOOTENVS)
        )))
    })?;
    let arch = b
        .arches
        .iter()
        .map(|(a, boot)| {
            let d = match boot {
                ArchBoot::Kernel {
                    kernel,
                    initrds,
                    cmdline,
                } => ArchDetail::Kernel {
                    kernel: kernel.clone(),
                    initrds: initrds.clone(),
                    cmdline: cmdline.clone(),
                },
                ArchBoot::Local(m) => ArchDetail::Local {
                    local: m.ipxe().to_string(),
                },
            };
            (*a, d)
        })
        .collect();
    Ok(Json(BootenvDetail {
        summary: summary(&catalog, b),
        arch,
    }))
}

/// `POST /api/v1/bootenvs/validate?name=`.
#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct ValidateQuery {
    /// The bootenv's name (its file stem); default `candidate`. An existing
    /// name is validated as that file's replacement.
    pub name: Option<String>,
}

/// One reason a bootenv file is refused.
#[derive(Serialize, utoipa::ToSchema)]
pub struct ValidationError {
    /// The file at fault: the candidate, or another file it was loaded with.
    pub file: Option<String>,
    pub line: Option<usize>,
    pub reason: String,
}

/// What validation found.
#[derive(Serialize, utoipa::ToSchema)]
pub struct Validation {
    pub ok: bool,
    pub name: String,
    /// Empty when `ok`.
    pub errors: Vec<ValidationError>,
}

/// Checks a bootenv file's text exactly as a reload would check it on disk
/// (syntax, templates, assets, scripts), without writing anything.
#[utoipa::path(post, path = "/api/v1/bootenvs/validate", tag = "bootenvs", params(ValidateQuery),
    request_body(content = String, content_type = "application/toml", description = "The bootenv file's text"),
    responses((status = 200, body = Validation, description = "ok, or the errors with their line"),
              (status = 400, body = ErrorBody, description = "The body is empty or not UTF-8, or `name` is not a bootenv name")))]
pub async fn validate(
    State(ctx): State<Arc<HttpContext>>,
    Query(q): Query<ValidateQuery>,
    body: Bytes,
) -> Result<Json<Validation>, ApiError> {
    let text = String::from_utf8(body.to_vec()).map_err(|_| {
        ApiError(HttpError::bad_request(
            "the bootenv file must be UTF-8 text",
        ))
    })?;
    Ok(Json(validation(&ctx, q.name, text).await?))
}

/// What a reload would say of `text` as bootenv `name` (default
/// `candidate`), as `validate` shows it (the console shows the same).
pub(super) async fn validation(
    ctx: &HttpContext,
    name: Option<String>,
    text: String,
) -> Result<Validation, ApiError> {
    if text.trim().is_empty() {
        return Err(ApiError(HttpError::bad_request(
            "no bootenv file in the body: send its text",
        )));
    }
    let name = name.unwrap_or_else(|| "candidate".into());
    // Any other name would not be the stem of a `<name>.toml` in bootenvs_dir:
    // an empty one made `.toml`, which no reload reads, so it was "ok" unread.
    if !crate::boot::bootenv::is_bootenv_name(&name) {
        return Err(ApiError(HttpError::bad_request(format!(
            "`{name}` is not a bootenv name (letters, digits, - and _)"
        ))));
    }
    let (b, s, a, d) = (
        ctx.bootenvs_dir.clone(),
        ctx.scripts_dir.clone(),
        ctx.assets_dir.clone(),
        ctx.default_bootenv.clone(),
    );
    let (n, t) = (name.clone(), text.clone());
    let result = tokio::task::spawn_blocking(move || {
        let path = b.join(format!("{n}.toml"));
        crate::boot::Catalog::load_with(&b, &s, &a, &d, Some((&path, &t))).map(|_| ())
    })
    .await
    .map_err(HttpError::internal)?;
    let errors = match result {
        Ok(()) => Vec::new(),
        Err(e) => {
            let file = e.path().map(|p| p.to_path_buf());
            let candidate = ctx.bootenvs_dir.join(format!("{name}.toml"));
            let line = match &file {
                Some(f) if *f == candidate => e.line_in(&text),
                Some(f) => std::fs::read_to_string(f).ok().and_then(|t| e.line_in(&t)),
                None => None,
            };
            vec![ValidationError {
                file: file.map(|f| f.display().to_string()),
                line,
                reason: e.to_string(),
            }]
        }
    };
    Ok(Validation {
        ok: errors.is_empty(),
        name,
        errors,
    })
}

/// `GET /api/v1/explain/{mac}` query.
#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct ExplainQuery {
    /// DHCP option 93 as a number (0, 7, 9, 11, 16, 19…) or a name: `bios`,
    /// `x86_64_efi`, `arm64_efi`, `x86_64_http`, `arm64_http`. Default: the
    /// architecture the node announced last.
    pub arch: Option<String>,
    /// DHCP option 77; `iPXE` means the client already runs iPXE.
    pub user_class: Option<String>,
    /// DHCP option 60; default `PXEClient:Arch:<arch>` (`HTTPClient…` for 16 and 19).
    pub vendor_class: Option<String>,
}

fn client_arch(text: &str) -> Result<ClientArch, ApiError> {
    let named = match text {
        "bios" => Some(0),
        "x86_64_efi" | "uefi" => Some(7),
        "arm64_efi" | "arm64" => Some(11),
        "x86_64_http" => Some(16),
        "arm64_http" => Some(19),
        _ => None,
    };
    named
        .or_else(|| text.parse().ok())
        .map(ClientArch)
        .ok_or_else(|| {
            ApiError(HttpError::bad_request(format!(
                "`arch={text}` is neither an option 93 number nor bios, x86_64_efi, arm64_efi, x86_64_http or arm64_http"
            )))
        })
}

/// What this client would be handed right now, and why.
#[utoipa::path(get, path = "/api/v1/explain/{mac}", tag = "explain", params(("mac" = String, Path, description = "The client's MAC"), ExplainQuery),
    responses((status = 200, body = Explanation),
              (status = 400, body = ErrorBody, description = "A bad MAC or arch"),
              (status = 422, body = ErrorBody, description = "No arch given and none known for the node")))]
pub async fn explain(
    State(ctx): State<Arc<HttpContext>>,
    Path(mac): Path<String>,
    Query(q): Query<ExplainQuery>,
) -> Result<Json<Explanation>, ApiError> {
    let mac = parse_mac(&mac)?;
    Ok(Json(explanation(&ctx, mac, &q).await?))
}

/// What `mac` would be handed right now, as `explain` shows it (the console
/// shows the same).
pub(super) async fn explanation(
    ctx: &HttpContext,
    mac: Mac,
    q: &ExplainQuery,
) -> Result<Explanation, ApiError> {
    let node = ctx.control.node(mac).await?;
    let arch = match (&q.arch, node.as_ref().and_then(|n| n.arch)) {
        (Some(a), _) => client_arch(a)?,
        (None, Some(a)) => crate::boot::explain::arch_code(a),
        (None, None) => {
            return Err(ApiError(HttpError::unprocessable(format!(
                "the architecture of {mac} is not known yet: add ?arch= (bios, x86_64_efi, arm64_efi or an option 93 number)"
            ))));
        }
    };
    let is_ipxe = q.user_class.as_deref() == Some("iPXE");
    let vendor_class = q.vendor_class.clone().unwrap_or_else(|| {
        let kind = if arch.is_http_boot() && !is_ipxe {
            "HTTPClient"
        } else {
            "PXEClient"
        };
        format!("{kind}:Arch:{:05}", arch.0)
    });
    let client = ClientInfo {
        mac,
        arch: Some(arch),
        vendor_class: Some(vendor_class),
        user_class: q.user_class.clone(),
        is_ipxe,
        ipxe_features: Vec::new(),
        relay: None,
    };
    let catalog = ctx.catalog.current();
    let cx = ExplainContext {
        catalog: &catalog,
        loaders: &ctx.loaders,
        urls: &ctx.urls,
        default_bootenv: &ctx.default_bootenv,
        now: Timestamp::now(),
    };
    let mut explanation = crate::boot::explain(&client, node.as_ref(), &cx);
    let mut secrets: std::collections::BTreeSet<String> = std::mem::take(&mut explanation.secrets)
        .into_iter()
        .collect();
    secrets.extend(super::seed::seed_secrets(ctx).await);
    explanation.secrets = secrets.into_iter().collect();
    Ok(explanation)
}
