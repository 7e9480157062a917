//! `/api/v1`: node records and their timelines as JSON.

use std::sync::Arc;

use axum::Json;
use axum::extract::{Path, State};
use serde::Serialize;

use super::{ApiError, HttpContext, HttpError, parse_mac};
use crate::model::{Event, Lease, Node};

#[derive(Serialize)]
pub struct NodeWithEvents {
    #[serde(flatten)]
    pub node: Node,
    pub events: Vec<Event>,
}

pub async fn nodes(
    State(ctx): State<Arc<HttpContext>>,
) -> Result<Json<Vec<NodeWithEvents>>, ApiError> {
    let mut out = Vec::new();
    for node in ctx.store.nodes().await? {
        let events = ctx.store.events(node.mac).await?;
        out.push(NodeWithEvents { node, events });
    }
    Ok(Json(out))
}

pub async fn node(
    State(ctx): State<Arc<HttpContext>>,
    Path(mac): Path<String>,
) -> Result<Json<NodeWithEvents>, ApiError> {
    let mac = parse_mac(&mac)?;
    let node = ctx
        .store
        .node(mac)
        .await?
        .ok_or_else(|| HttpError::not_found(format!("no node with MAC {mac}")))?;
    let events = ctx.store.events(mac).await?;
    Ok(Json(NodeWithEvents { node, events }))
}

/// Every lease the store holds (offered, bound, declined), by address.
pub async fn leases(State(ctx): State<Arc<HttpContext>>) -> Result<Json<Vec<Lease>>, ApiError> {
    Ok(Json(ctx.store.leases().await?))
}
