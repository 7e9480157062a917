//! `POST /api/v1/power`: power status and control of nodes through their
//! BMCs, by label selector or by MAC. The work is the control layer's
//! (`control::power`); this parses the request and encodes the outcome.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::State;
use axum::{Extension, Json};
use serde::{Deserialize, Serialize};

use super::reconfigure::which_nodes;
use super::{HttpContext, HttpError};
use crate::control::admin::Actor;
use crate::control::power::{PowerDone, PowerError};
use crate::model::PowerAction;

/// `{"action": "pxe-once", "selector": "role=builder"}` or
/// `{"action": "status", "macs": ["52:54:00:…", …]}`.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PowerRequest {
    action: PowerAction,
    /// A label selector, e.g. `role=builder,rack=r12`.
    selector: Option<String>,
    macs: Option<Vec<String>>,
}

/// One answer per node, by MAC.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct PowerReply {
    pub nodes: Vec<PowerDone>,
}

/// `POST /api/v1/power`: does the action on every node the request names,
/// several BMCs at once (`[power] parallel`). 200 with each node's outcome
/// (`ok: false` and why for a node whose BMC failed or refused, e.g. a
/// one-time PXE boot the BMC did not keep: then nothing was rebooted);
/// 400 for a request that does not parse; 404 for an unknown MAC, and then
/// no BMC was touched. Each action and its outcome is on the node's
/// timeline (`power`).
#[utoipa::path(post, path = "/api/v1/power", tag = "nodes", request_body = PowerRequest,
    responses((status = 200, body = PowerReply, description = "What each node's BMC did"),
              (status = 400, body = super::error::ErrorBody), (status = 404, body = super::error::ErrorBody)))]
pub async fn power(
    State(ctx): State<Arc<HttpContext>>,
    Extension(actor): Extension<Actor>,
    body: Bytes,
) -> Result<Json<PowerReply>, HttpError> {
    let req: PowerRequest = serde_json::from_slice(&body).map_err(|e| {
        HttpError::bad_request(format!(
            "expected {{\"action\": \"status|on|off|cycle|pxe-once\", \"selector\": \"role=builder\"}} \
             or {{\"action\": …, \"macs\": [\"52:54:00:…\"]}}: {e}"
        ))
    })?;
    let which = which_nodes(req.selector, req.macs)?;
    let nodes = ctx
        .control
        .power(&actor.to_string(), req.action, which)
        .await
        .map_err(|e| match e {
            PowerError::NoSuchNode(mac) => HttpError::not_found(format!("no node with MAC {mac}")),
            PowerError::Store(e) => e.into(),
        })?;
    Ok(Json(PowerReply { nodes }))
}
