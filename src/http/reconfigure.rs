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

use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path, State};
use serde::{Deserialize, Serialize};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use super::{HttpContext, HttpError, parse_mac};
use crate::model::{LabelSelector, Mac, ScriptReport};
use crate::store::REPORTS_PER_NODE;

/// Wakes the agents' long polls. One signal for every node: a bump wakes
/// each waiting request once, and each re-reads only its own node's
/// generation (from memory), so 1000 waiting nodes cost 1000 map lookups
/// per reconfigure and no task of their own.
pub struct ConfigWaits {
    bumped: watch::Sender<u64>,
    /// Ends every wait at shutdown, so a long poll never holds the server's
    /// graceful stop for its whole bound.
    closing: CancellationToken,
}

impl ConfigWaits {
    pub fn new(closing: CancellationToken) -> ConfigWaits {
        ConfigWaits {
            bumped: watch::Sender::new(0),
            closing,
        }
    }

    /// Wakes every waiting request (some node's generation changed).
    pub fn notify(&self) {
        self.bumped.send_modify(|n| *n = n.wrapping_add(1));
    }

    /// A receiver whose `changed()` fires at the next [`ConfigWaits::notify`].
    /// Subscribe before reading a generation, so a bump in between is not missed.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.bumped.subscribe()
    }

    pub fn closing(&self) -> &CancellationToken {
        &self.closing
    }
}

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
    body: Bytes,
) -> Result<Json<ReconfigureReply>, HttpError> {
    let req: ReconfigureRequest = serde_json::from_slice(&body).map_err(|e| {
        HttpError::bad_request(format!(
            "expected {{\"selector\": \"role=builder\"}} or {{\"macs\": [\"52:54:00:…\"]}}: {e}"
        ))
    })?;
    let macs: Vec<Mac> = match (req.selector, req.macs) {
        (Some(sel), None) => {
            let selector: LabelSelector = sel
                .parse()
                .map_err(|e: crate::model::SelectorError| HttpError::bad_request(e.to_string()))?;
            ctx.store
                .nodes()
                .await?
                .into_iter()
                .filter(|n| selector.matches(&n.labels))
                .map(|n| n.mac)
                .collect()
        }
        (None, Some(macs)) => {
            let mut out = macs
                .iter()
                .map(|m| parse_mac(m))
                .collect::<Result<Vec<_>, _>>()?;
            out.sort();
            out.dedup();
            out
        }
        _ => {
            return Err(HttpError::bad_request(
                "give exactly one of `selector` and `macs`",
            ));
        }
    };
    let bumped = ctx.store.bump_config_generation(&macs).await?;
    ctx.config_waits.notify();
    tracing::info!(
        nodes = bumped.len(),
        "reconfigure: config generation bumped"
    );
    Ok(Json(ReconfigureReply {
        macs: bumped.into_iter().map(|(m, _)| m).collect(),
    }))
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
    if ctx.store.node(mac).await?.is_none() {
        return Err(HttpError::not_found(format!("no node with MAC {mac}")));
    }
    let (reports, dropped) = ctx.store.reports(mac).await?;
    Ok(Json(ReportsReply {
        mac,
        reports,
        dropped,
        limit: REPORTS_PER_NODE,
    }))
}
