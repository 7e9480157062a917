//! HTTP: boot scripts and assets for iPXE, the node endpoints the operational
//! image talks to, and the admin API (`api.rs`, its tokens in `auth.rs`, its
//! OpenAPI document in `openapi.rs`), over plain HTTP and, when configured,
//! HTTPS (`tls.rs`). Owns routing and the wire; asks `boot` for scripts and
//! decisions and the store for records.

mod api;
pub mod auth;
mod boot;
pub mod bounds;
pub mod console;
mod error;
mod file;
mod health;
pub(crate) mod listener;
pub mod metrics;
mod node;
pub mod openapi;
mod power;
mod reconfigure;
mod rollout;
mod seed;
mod sendfile;
mod stream;
pub mod tls;
pub(crate) mod wire;

use std::path::PathBuf;
use std::sync::Arc;

use axum::Router;
use axum::extract::Request;
use axum::handler::Handler;
use axum::http::{Method, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{MethodFilter, MethodRouter, get, on, post};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

pub use auth::ApiAuth;
pub use error::{ApiError, HttpError};
pub use node::WAIT_MAX;
pub use seed::check_templates as check_seed_templates;

use crate::boot::{CatalogCell, Timeouts};
use crate::config::LoaderMap;
use crate::control::Control;
use crate::metrics::Metrics;
use crate::routes::{self, API_PREFIX, Urls, api as path};

/// Largest report body kept (the tail of a script's output).
pub const MAX_REPORT_BYTES: usize = 64 * 1024;
/// Largest API request body: an import of a few thousand node records.
pub const MAX_API_BODY_BYTES: usize = 8 * 1024 * 1024;

pub struct HttpContext {
    /// The boot flow: every read and change of node records goes through it.
    pub control: Arc<Control>,
    pub catalog: Arc<CatalogCell>,
    pub urls: Urls,
    pub assets_dir: PathBuf,
    /// The assets directory as the asset route opens it: small files kept.
    pub asset_files: crate::assets::cache::AssetFiles,
    /// Where bootenvs and config scripts are read from (to validate a candidate).
    pub bootenvs_dir: PathBuf,
    pub scripts_dir: PathBuf,
    pub default_bootenv: String,
    pub metrics: Arc<Metrics>,
    /// `[lifecycle]` timeouts, for [`crate::boot::diagnose()`].
    pub timeouts: Timeouts,
    /// Templates of the cloud-init NoCloud documents and installer answer files.
    pub cloud_init_dir: PathBuf,
    pub answers_dir: PathBuf,
    /// Downloads the remote assets bootenvs name, on first request.
    pub fetcher: Arc<crate::assets::remote::Fetcher>,
    /// Who may use the API.
    pub auth: Arc<ApiAuth>,
    /// For `explain`: what DHCP would hand a client.
    pub loaders: LoaderMap,
    /// What this process serves, for `/healthz`.
    pub services: Vec<&'static str>,
    /// The admin console, when `[console]` serves it.
    pub console: Option<Arc<console::Console>>,
    /// The config file, named where a message says what to set in it.
    pub config_path: PathBuf,
}

/// One API route: method and path (under [`API_PREFIX`]) are data, so the
/// OpenAPI test can check that every route is documented.
pub struct ApiRoute {
    pub method: Method,
    pub path: &'static str,
    handler: MethodRouter<Arc<HttpContext>>,
}

fn route<H, T>(method: Method, path: &'static str, handler: H) -> ApiRoute
where
    H: Handler<T, Arc<HttpContext>>,
    T: 'static,
{
    let filter = MethodFilter::try_from(method.clone()).expect("a standard method");
    ApiRoute {
        method,
        path,
        handler: on(filter, handler),
    }
}

/// Every `/api/v1` route.
pub fn api_routes() -> Vec<ApiRoute> {
    vec![
        route(Method::GET, path::NODES, api::nodes),
        route(Method::POST, path::NODES, api::create),
        route(Method::POST, path::NODES_BULK, api::bulk),
        route(Method::POST, path::NODES_IMPORT, api::import),
        route(Method::GET, path::NODE, api::node),
        route(Method::PATCH, path::NODE, api::patch),
        route(Method::DELETE, path::NODE, api::delete),
        route(Method::GET, path::NODE_EVENTS, api::events),
        route(Method::GET, path::LEASES, api::leases),
        route(Method::GET, path::BOOTENVS, api::bootenvs),
        route(Method::POST, path::BOOTENVS_VALIDATE, api::validate),
        route(Method::GET, path::BOOTENV, api::bootenv),
        route(Method::GET, path::EXPLAIN, api::explain),
        route(Method::POST, path::RECONFIGURE, reconfigure::reconfigure),
        route(Method::GET, path::NODE_REPORTS, reconfigure::reports),
        route(Method::POST, path::POWER, power::power),
        route(Method::GET, path::ROLLOUTS, rollout::list),
        route(Method::POST, path::ROLLOUTS, rollout::start),
        route(Method::GET, path::ROLLOUT, rollout::show),
        route(Method::POST, path::ROLLOUT_STEER, rollout::steer),
        route(Method::GET, path::OPENAPI, openapi::openapi_json),
    ]
}

/// The API: token checked first, every error as JSON.
fn api_router(ctx: Arc<HttpContext>) -> Router<Arc<HttpContext>> {
    let mut r = Router::new();
    for a in api_routes() {
        r = r.route(a.path, a.handler);
    }
    r.fallback(|| async {
        ApiError(HttpError::not_found(format!(
            "no such API endpoint (see {})",
            routes::api_path(path::OPENAPI)
        )))
    })
    .layer(axum::extract::DefaultBodyLimit::max(MAX_API_BODY_BYTES))
    .layer(axum::middleware::from_fn_with_state(
        ctx,
        auth::require_token,
    ))
    .layer(axum::middleware::from_fn(json_errors))
}

/// Turns the plain-text refusals axum's extractors produce (a body that is
/// not JSON, a bad query) into the API's `{"error": ...}`.
async fn json_errors(req: Request, next: Next) -> Response {
    let resp = next.run(req).await;
    let is_json = resp
        .headers()
        .get(header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/json"));
    if resp.status().is_success() || is_json {
        return resp;
    }
    let status = resp.status();
    let text = match axum::body::to_bytes(resp.into_body(), 64 * 1024).await {
        Ok(b) => String::from_utf8_lossy(&b).trim().to_string(),
        Err(_) => String::new(),
    };
    let text = text.strip_prefix("error: ").unwrap_or(&text).to_string();
    let text = if text.is_empty() {
        status.canonical_reason().unwrap_or("error").to_string()
    } else {
        text
    };
    ApiError(HttpError::new(status, text)).into_response()
}

pub fn router(ctx: Arc<HttpContext>) -> Router {
    let console = match &ctx.console {
        Some(c) => console::router(c.clone()),
        None => Router::new()
            .route("/", get(console::off).post(console::off))
            .route("/{*rest}", get(console::off).post(console::off)),
    };
    Router::new()
        .route(routes::BOOT_SCRIPT, get(boot::script))
        .route(routes::ASSET, get(boot::asset))
        .route(routes::NODE_SCRIPTS, get(node::scripts))
        .route(routes::NODE_SCRIPT, get(node::script))
        .route(routes::NODE_REPORT, post(node::report))
        .route(routes::NODE_INSTALLED, post(node::installed))
        .route(routes::NODE_WAIT, get(node::wait))
        .route(routes::CLOUD_INIT, get(seed::cloud_init))
        .route(routes::ANSWERS, get(seed::answers))
        .route(routes::METRICS, get(metrics::scrape))
        .route(routes::HEALTHZ, get(health::healthz))
        .nest(API_PREFIX, api_router(ctx.clone()))
        .nest(routes::CONSOLE_PREFIX, console)
        .fallback(|| async { HttpError::not_found("no such endpoint") })
        .layer(axum::extract::DefaultBodyLimit::max(MAX_REPORT_BYTES))
        .layer(axum::middleware::from_fn_with_state(
            ctx.clone(),
            metrics::count,
        ))
        .with_state(ctx)
}

/// Serves until `cancel` fires, then finishes requests in flight (bounded).
/// The boot path is rackboot's own HTTP/1.1 loop, the rest hyper's
/// ([`listener`]); both within `limits` ([`bounds`]).
pub async fn serve(
    listener: TcpListener,
    ctx: Arc<HttpContext>,
    limits: Arc<bounds::Limits>,
    cancel: CancellationToken,
) -> std::io::Result<()> {
    listener::serve(listener, router(ctx), limits, cancel).await
}

/// The client's IPv4 address (IPv4-mapped IPv6 included), when known: what
/// a node's credentials are checked against, and the subnet whose boot
/// slots a node takes.
pub(crate) struct Peer(pub Option<std::net::Ipv4Addr>);

impl Peer {
    pub(super) fn of(extensions: &axum::http::Extensions) -> Peer {
        use axum::extract::ConnectInfo;
        let ip = extensions
            .get::<ConnectInfo<std::net::SocketAddr>>()
            .and_then(|ConnectInfo(addr)| match addr.ip() {
                std::net::IpAddr::V4(ip) => Some(ip),
                std::net::IpAddr::V6(ip) => ip.to_ipv4_mapped(),
            });
        Peer(ip)
    }
}

impl<S: Send + Sync> axum::extract::FromRequestParts<S> for Peer {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        _: &S,
    ) -> Result<Self, Self::Rejection> {
        Ok(Peer::of(&parts.extensions))
    }
}

fn parse_mac(s: &str) -> Result<crate::model::Mac, HttpError> {
    s.parse()
        .map_err(|e: crate::model::MacParseError| HttpError::bad_request(e.to_string()))
}
