//! `GET /healthz`: for load balancers and monitoring, without a token. 200
//! while this appliance can boot machines (its store takes writes), else
//! 503; the body says which services it serves, the store's state and
//! whether it runs the jobs that run once among appliances sharing a store.

use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use serde::Serialize;

use super::HttpContext;

#[derive(Serialize)]
pub struct Health {
    /// `ok`, or `degraded` while the store refuses writes.
    pub status: &'static str,
    /// What this process serves: `dhcp`, `dns`, `tftp`, `http`, `https`.
    pub services: Vec<&'static str>,
    pub store: StoreState,
    /// Whether this appliance runs the lifecycle sweep (one appliance of
    /// those sharing a store does).
    pub leads: bool,
}

#[derive(Serialize)]
pub struct StoreState {
    pub engine: &'static str,
    pub reachable: bool,
    /// Changes held in memory, not saved yet.
    pub unsaved: u64,
}

pub async fn healthz(State(ctx): State<Arc<HttpContext>>) -> (StatusCode, Json<Health>) {
    let h = ctx.control.store_health();
    let code = if h.reachable {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    let body = Health {
        status: if h.reachable { "ok" } else { "degraded" },
        services: ctx.services.clone(),
        store: StoreState {
            engine: h.engine,
            reachable: h.reachable,
            unsaved: h.unsaved,
        },
        leads: ctx.control.leads(),
    };
    (code, Json(body))
}
