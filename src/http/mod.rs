//! HTTP: boot scripts and assets for iPXE, the node endpoints the operational
//! image talks to, and the admin API. Owns routing and the wire; asks `boot`
//! for scripts and the store for records.

mod api;
mod boot;
mod error;
mod metrics;
mod node;
mod reconfigure;
mod seed;

use std::path::PathBuf;
use std::sync::Arc;

use axum::Router;
use axum::routing::{get, post};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

pub use error::HttpError;
pub use node::WAIT_MAX;
pub use reconfigure::ConfigWaits;
pub use seed::check_templates as check_seed_templates;

use crate::boot::{CatalogCell, Timeouts, Urls};
use crate::events::Timeline;
use crate::metrics::Metrics;
use crate::store::Store;

/// Largest report body kept (the tail of a script's output).
pub const MAX_REPORT_BYTES: usize = 64 * 1024;

pub struct HttpContext {
    pub store: Arc<dyn Store>,
    pub timeline: Timeline,
    pub catalog: Arc<CatalogCell>,
    pub urls: Urls,
    pub assets_dir: PathBuf,
    pub default_bootenv: String,
    pub metrics: Arc<Metrics>,
    /// `[lifecycle]` timeouts, for [`crate::boot::diagnose`].
    pub timeouts: Timeouts,
    /// Wakes the agents' long polls on a reconfigure.
    pub config_waits: ConfigWaits,
    /// Templates of the cloud-init NoCloud documents and installer answer files.
    pub cloud_init_dir: PathBuf,
    pub answers_dir: PathBuf,
}

pub fn router(ctx: Arc<HttpContext>) -> Router {
    Router::new()
        .route("/boot/{file}", get(boot::script))
        .route("/assets/{*path}", get(boot::asset))
        .route("/node/{mac}/scripts", get(node::scripts))
        .route("/node/{mac}/scripts/{name}", get(node::script))
        .route("/node/{mac}/report", post(node::report))
        .route("/node/{mac}/installed", post(node::installed))
        .route("/node/{mac}/wait", get(node::wait))
        .route("/cloud-init/{mac}/{token}/{doc}", get(seed::cloud_init))
        .route("/answers/{mac}/{token}/{name}", get(seed::answers))
        .route("/api/v1/reconfigure", post(reconfigure::reconfigure))
        .route("/api/v1/nodes/{mac}/reports", get(reconfigure::reports))
        .route("/metrics", get(metrics::scrape))
        .route("/api/v1/nodes", get(api::nodes))
        .route("/api/v1/nodes/{mac}", get(api::node))
        .route("/api/v1/leases", get(api::leases))
        .fallback(|| async { HttpError::not_found("no such endpoint") })
        .layer(axum::extract::DefaultBodyLimit::max(MAX_REPORT_BYTES))
        .layer(axum::middleware::from_fn_with_state(
            ctx.clone(),
            metrics::count,
        ))
        .with_state(ctx)
}

/// Serves until `cancel` fires, then finishes requests in flight.
pub async fn serve(
    listener: TcpListener,
    ctx: Arc<HttpContext>,
    cancel: CancellationToken,
) -> std::io::Result<()> {
    axum::serve(listener, router(ctx))
        .with_graceful_shutdown(cancel.cancelled_owned())
        .await
}

fn parse_mac(s: &str) -> Result<crate::model::Mac, HttpError> {
    s.parse()
        .map_err(|e: crate::model::MacParseError| HttpError::bad_request(e.to_string()))
}
