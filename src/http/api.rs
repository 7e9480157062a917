//! `/api/v1`: node records, their timelines, leases, bootenvs and `explain`,
//! as JSON. Maps HTTP to the store and to policy (`boot::edit`,
//! `boot::explain`); decides nothing itself. Every handler is described for
//! the OpenAPI document (`openapi.rs`).

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, PoisonError};

use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};

use super::error::ErrorBody;
use super::{ApiError, HttpContext, HttpError, parse_mac};
use crate::boot::{ArchBoot, ExplainContext, Explanation, FieldError, NodeInput, NodePatch};
use crate::model::{
    BootArch, ClientArch, ClientInfo, Event, LabelSelector, Lease, Mac, Node, NodeState, Timestamp,
};
use crate::nodes::new_token;

/// A node record with its timeline (oldest event first).
#[derive(Serialize, utoipa::ToSchema)]
pub struct NodeWithEvents {
    #[serde(flatten)]
    pub node: Node,
    pub events: Vec<Event>,
    /// Where its boot is stuck, in one sentence, once a step is overdue
    /// (`[lifecycle]` timeouts); null while it is not, or without events.
    pub diagnosis: Option<String>,
}

impl NodeWithEvents {
    fn new(ctx: &HttpContext, node: Node, events: Vec<Event>) -> NodeWithEvents {
        let diagnosis = crate::boot::diagnose(&node, &events, Timestamp::now(), &ctx.timeouts)
            .map(|s| s.reason);
        NodeWithEvents {
            node,
            events,
            diagnosis,
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
    /// Include each node's timeline (default false).
    pub events: Option<bool>,
}

fn unprocessable(e: FieldError) -> ApiError {
    ApiError(HttpError::unprocessable(e.to_string()))
}

fn known_bootenv(ctx: &HttpContext) -> impl Fn(&str) -> bool + use<> {
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
    for node in ctx.store.nodes().await? {
        if sel.as_ref().is_some_and(|s| !s.matches(&node.labels))
            || state.is_some_and(|s| node.state != s)
            || f.bootenv
                .as_ref()
                .is_some_and(|b| &node.bootenv != b && node.next_bootenv.as_ref() != Some(b))
        {
            continue;
        }
        let events = if f.events == Some(true) {
            ctx.store.events(node.mac).await?
        } else {
            Vec::new()
        };
        out.push(NodeWithEvents::new(&ctx, node, events));
    }
    Ok(Json(out))
}

async fn record(ctx: &HttpContext, mac: Mac) -> Result<Node, ApiError> {
    ctx.store.node(mac).await?.ok_or_else(|| {
        ApiError(HttpError::not_found(format!(
            "no node with MAC {mac} (POST /api/v1/nodes creates one)"
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
    let events = ctx.store.events(mac).await?;
    Ok(Json(NodeWithEvents::new(&ctx, node, events)))
}

/// The node's timeline, oldest first.
#[utoipa::path(get, path = "/api/v1/nodes/{mac}/events", tag = "nodes",
    params(("mac" = String, Path, description = "The node's MAC")),
    responses((status = 200, body = Vec<Event>), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn events(
    State(ctx): State<Arc<HttpContext>>,
    Path(mac): Path<String>,
) -> Result<Json<Vec<Event>>, ApiError> {
    let mac = parse_mac(&mac)?;
    record(&ctx, mac).await?;
    Ok(Json(ctx.store.events(mac).await?))
}

/// Creates a node record.
#[utoipa::path(post, path = "/api/v1/nodes", tag = "nodes", request_body = NodeInput,
    responses((status = 201, body = NodeWithEvents, description = "The new record"),
              (status = 409, body = ErrorBody, description = "The MAC, hostname or fixed address is taken"),
              (status = 422, body = ErrorBody, description = "A bad field, named")))]
pub async fn create(
    State(ctx): State<Arc<HttpContext>>,
    body: Bytes,
) -> Result<Response, ApiError> {
    let input: NodeInput = json_body(&body)?;
    input
        .validate(&known_bootenv(&ctx))
        .map_err(unprocessable)?;
    let mac = input.mac;
    let node = input.into_node(None, &ctx.default_bootenv, new_token, Timestamp::now());
    let (node, created) = ctx.store.create_node_if_absent(node).await?;
    if !created {
        return Err(ApiError(HttpError::conflict(format!(
            "node {mac} exists; PATCH /api/v1/nodes/{mac} to change it"
        ))));
    }
    Ok((
        StatusCode::CREATED,
        Json(NodeWithEvents::new(&ctx, node, Vec::new())),
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
    Path(mac): Path<String>,
    body: Bytes,
) -> Result<Json<NodeWithEvents>, ApiError> {
    let mac = parse_mac(&mac)?;
    let patch: NodePatch = json_body(&body)?;
    let valid = patch
        .validate(&known_bootenv(&ctx))
        .map_err(unprocessable)?;
    let now = Timestamp::now();
    let node = ctx
        .store
        .update_node(mac, Box::new(move |n| valid.apply(n, now)))
        .await?;
    let events = ctx.store.events(mac).await?;
    Ok(Json(NodeWithEvents::new(&ctx, node, events)))
}

/// Deletes a node record and its timeline.
#[utoipa::path(delete, path = "/api/v1/nodes/{mac}", tag = "nodes",
    params(("mac" = String, Path, description = "The node's MAC")),
    responses((status = 204, description = "Deleted"), (status = 404, body = ErrorBody)))]
pub async fn delete(
    State(ctx): State<Arc<HttpContext>>,
    Path(mac): Path<String>,
) -> Result<StatusCode, ApiError> {
    let mac = parse_mac(&mac)?;
    if ctx.store.delete_node(mac).await? {
        // A record made again under this MAC starts afresh.
        ctx.scripts.forget(mac);
        ctx.admission().release(mac);
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(ApiError(HttpError::not_found(format!(
            "no node with MAC {mac}"
        ))))
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
    body: Bytes,
) -> Result<Json<BulkResult>, ApiError> {
    let req: BulkRequest = json_body(&body)?;
    let sel = selector(&req.selector)?;
    let valid = req
        .patch
        .validate(&known_bootenv(&ctx))
        .map_err(unprocessable)?;
    let now = Timestamp::now();
    let matched: Arc<Mutex<Vec<Mac>>> = Arc::default();
    let seen = matched.clone();
    let written = ctx
        .store
        .edit_nodes(Box::new(move |all| {
            let mut nodes: Vec<&Node> = all.values().filter(|n| sel.matches(&n.labels)).collect();
            nodes.sort_by_key(|n| n.mac);
            *seen.lock().unwrap_or_else(PoisonError::into_inner) =
                nodes.iter().map(|n| n.mac).collect();
            let mut out = Vec::new();
            for n in nodes {
                let mut edited = n.clone();
                valid.apply(&mut edited, now)?;
                if &edited != n {
                    out.push(edited);
                }
            }
            Ok(out)
        }))
        .await?;
    let matched = std::mem::take(&mut *matched.lock().unwrap_or_else(PoisonError::into_inner));
    Ok(Json(BulkResult {
        matched,
        changed: written.iter().map(|n| n.mac).collect(),
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

/// Which record of an import clashed, its field, and why.
type Refusal = (usize, &'static str, String);

/// Creates or replaces many node records in one transaction: all or nothing.
#[utoipa::path(post, path = "/api/v1/nodes/import", tag = "nodes", request_body = Vec<NodeInput>,
    responses((status = 200, body = ImportResult),
              (status = 409, body = ImportError, description = "A hostname or address clash; nothing imported"),
              (status = 422, body = ImportError, description = "A bad record, by index and field; nothing imported")))]
pub async fn import(
    State(ctx): State<Arc<HttpContext>>,
    body: Bytes,
) -> Result<Response, ApiError> {
    let records: Vec<serde_json::Value> = json_body(&body)?;
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
    let now = Timestamp::now();
    let default_bootenv = ctx.default_bootenv.clone();
    let refusal: Arc<Mutex<Option<Refusal>>> = Arc::default();
    let refused = refusal.clone();
    let created: Arc<Mutex<Vec<Mac>>> = Arc::default();
    let made = created.clone();
    let result = ctx
        .store
        .edit_nodes(Box::new(move |all| {
            let nodes: Vec<Node> = inputs
                .into_iter()
                .map(|input| {
                    let existing = all.get(&input.mac);
                    if existing.is_none() {
                        made.lock()
                            .unwrap_or_else(PoisonError::into_inner)
                            .push(input.mac);
                    }
                    input.into_node(existing, &default_bootenv, new_token, now)
                })
                .collect();
            // Name the record that clashes, with its index, before the store
            // refuses the whole write.
            let ours: HashMap<Mac, usize> =
                nodes.iter().enumerate().map(|(i, n)| (n.mac, i)).collect();
            let mut hostnames: HashMap<String, Mac> = all
                .values()
                .filter(|n| !ours.contains_key(&n.mac))
                .map(|n| (n.hostname.to_ascii_lowercase(), n.mac))
                .collect();
            let mut addrs: HashMap<std::net::Ipv4Addr, Mac> = all
                .values()
                .filter(|n| !ours.contains_key(&n.mac))
                .filter_map(|n| Some((n.ipv4?, n.mac)))
                .collect();
            for (i, n) in nodes.iter().enumerate() {
                let refuse = |field, why: String| {
                    *refused.lock().unwrap_or_else(PoisonError::into_inner) =
                        Some((i, field, why.clone()));
                    Err(why)
                };
                if let Some(other) = hostnames.insert(n.hostname.to_ascii_lowercase(), n.mac) {
                    return refuse(
                        "hostname",
                        format!("hostname {} already belongs to {other}", n.hostname),
                    );
                }
                if let Some(ip) = n.ipv4 {
                    if let Some(other) = addrs.insert(ip, n.mac) {
                        return refuse("ipv4", format!("address {ip} already belongs to {other}"));
                    }
                }
            }
            Ok(nodes)
        }))
        .await;
    match result {
        Ok(written) => {
            let created =
                std::mem::take(&mut *created.lock().unwrap_or_else(PoisonError::into_inner));
            let updated = written
                .iter()
                .map(|n| n.mac)
                .filter(|m| !created.contains(m))
                .collect();
            Ok(Json(ImportResult { created, updated }).into_response())
        }
        Err(e) => match refusal
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take()
        {
            Some((i, field, why)) => Ok(import_error(StatusCode::CONFLICT, i, Some(field), why)),
            None => Err(e.into()),
        },
    }
}

/// Every lease the store holds (offered, bound, declined), by address.
#[utoipa::path(get, path = "/api/v1/leases", tag = "leases",
    responses((status = 200, body = Vec<Lease>)))]
pub async fn leases(State(ctx): State<Arc<HttpContext>>) -> Result<Json<Vec<Lease>>, ApiError> {
    Ok(Json(ctx.store.leases().await?))
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
    Json(BootenvList {
        bootenvs: catalog.bootenvs().map(|b| summary(&catalog, b)).collect(),
        rejected,
    })
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
            "no bootenv `{name}` (GET /api/v1/bootenvs lists them)"
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
              (status = 400, body = ErrorBody, description = "The body is not UTF-8")))]
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
    let name = q.name.unwrap_or_else(|| "candidate".into());
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
    Ok(Json(Validation {
        ok: errors.is_empty(),
        name,
        errors,
    }))
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
    let node = ctx.store.node(mac).await?;
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
    Ok(Json(crate::boot::explain(&client, node.as_ref(), &cx)))
}
