//! Re-running config scripts without a reboot, and what the scripts
//! reported: the admin side of the configure cycle.
//!
//! `POST /api/v1/reconfigure` bumps the config generation of the nodes it
//! names (by label selector or by MAC) in one durable write and wakes every
//! waiting agent; each agent's long poll (`GET /node/<mac>/wait`, in
//! `node.rs`) returns when its own node's generation moved, and the agent
//! pulls and runs its scripts again. `GET /api/v1/nodes/<mac>/reports` shows
//! the stored script reports. Admin authentication is that of the rest of
//! `/api/v1`.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::{Extension, Json};
use serde::{Deserialize, Serialize};

use super::{HttpContext, HttpError, parse_mac};
use crate::control::admin::Actor;
use crate::control::fleet::Nodes;
use crate::model::{Mac, ScriptReport};

/// `{"selector": "role=builder"}` or `{"macs": ["52:54:00:…", …]}`.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ReconfigureRequest {
    /// A label selector, e.g. `role=builder,rack=r12`.
    selector: Option<String>,
    macs: Option<Vec<String>>,
}

/// The nodes whose generation was bumped, by MAC.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ReconfigureReply {
    pub macs: Vec<Mac>,
}

/// `POST /api/v1/reconfigure`: every node the request names runs its config
/// scripts again (those booted and waiting notice at once; the others when
/// their agent next asks). 200 with the MACs (an empty list when a selector
/// matches nothing); 400 for a request that does not parse or names both or
/// neither; 404 for an unknown MAC, and then nothing is bumped.
#[utoipa::path(post, path = "/api/v1/reconfigure", tag = "nodes", request_body = ReconfigureRequest,
    responses((status = 200, body = ReconfigureReply, description = "The nodes that will run their config scripts again"),
              (status = 400, body = super::error::ErrorBody), (status = 404, body = super::error::ErrorBody)))]
pub async fn reconfigure(
    State(ctx): State<Arc<HttpContext>>,
    Extension(actor): Extension<Actor>,
    body: Bytes,
) -> Result<Json<ReconfigureReply>, HttpError> {
    let req: ReconfigureRequest = serde_json::from_slice(&body).map_err(|e| {
        HttpError::bad_request(format!(
            "expected {{\"selector\": \"role=builder\"}} or {{\"macs\": [\"52:54:00:…\"]}}: {e}"
        ))
    })?;
    let which = which_nodes(req.selector, req.macs)?;
    let macs = ctx.control.admin().reconfigure(&actor, which).await?;
    Ok(Json(ReconfigureReply { macs }))
}

/// The nodes a request names: exactly one of a label selector and a list
/// of MACs (sorted, without repeats).
pub(super) fn which_nodes(
    selector: Option<String>,
    macs: Option<Vec<String>>,
) -> Result<Nodes, HttpError> {
    match (selector, macs) {
        (Some(sel), None) => Ok(Nodes::Selector(sel.parse().map_err(
            |e: crate::model::SelectorError| HttpError::bad_request(e.to_string()),
        )?)),
        (None, Some(macs)) => {
            let mut out = macs
                .iter()
                .map(|m| parse_mac(m))
                .collect::<Result<Vec<_>, _>>()?;
            out.sort();
            out.dedup();
            Ok(Nodes::Macs(out))
        }
        _ => Err(HttpError::bad_request(
            "give exactly one of `selector` and `macs`",
        )),
    }
}

/// A node's stored script reports.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ReportsReply {
    pub mac: Mac,
    /// Oldest first.
    pub reports: Vec<ScriptReport>,
    /// How many older reports were dropped to keep `limit`.
    pub dropped: u64,
    /// How many reports a node keeps.
    pub limit: i64,
}

/// `GET /api/v1/nodes/<mac>/reports`: 200, or 404 for an unknown node.
#[utoipa::path(get, path = "/api/v1/nodes/{mac}/reports", tag = "nodes",
    params(("mac" = String, Path, description = "The node's MAC")),
    responses((status = 200, body = ReportsReply), (status = 400, body = super::error::ErrorBody),
              (status = 404, body = super::error::ErrorBody)))]
pub async fn reports(
    State(ctx): State<Arc<HttpContext>>,
    Path(mac): Path<String>,
) -> Result<Json<ReportsReply>, HttpError> {
    let mac = parse_mac(&mac)?;
    let Some(r) = ctx.control.reports(mac).await? else {
        return Err(HttpError::not_found(format!("no node with MAC {mac}")));
    };
    Ok(Json(ReportsReply {
        mac,
        reports: r.reports,
        dropped: r.dropped,
        limit: r.limit,
    }))
}
