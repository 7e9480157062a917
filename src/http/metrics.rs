//! `GET /metrics` for Prometheus, in the format the scraper's `Accept` header
//! asks for (Prometheus text 0.0.4 unless it asks for OpenMetrics), and the
//! middleware that counts every HTTP request by route class and status class.

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::HeaderMap;
use axum::http::header;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::{HttpContext, HttpError};
use crate::metrics::Format;
use crate::model::Timestamp;
use crate::routes::Area;

/// Every metric as text. The pool gauges are counted here, from the leases
/// in each pool's ranges where the store keeps them (nothing is copied), so
/// the DHCP path never spends time on them.
pub async fn scrape(
    State(ctx): State<Arc<HttpContext>>,
    headers: HeaderMap,
) -> Result<Response, HttpError> {
    // Several Accept lines are one list (RFC 9110 §5.3); a line that is not
    // visible ASCII is ignored.
    let accept: Vec<&str> = headers
        .get_all(header::ACCEPT)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .collect();
    let format = Format::negotiate(Some(&accept.join(",")));
    ctx.metrics
        .update_pools(Timestamp::now(), |first, last, f| {
            ctx.store.visit_leases(first, last, f)
        });
    let in_flight = {
        let a = ctx.admission();
        let limits = a.limits();
        limits
            .limited()
            .map(|p| (limits.pool_name(p), a.booting(p)))
            .collect::<Vec<_>>()
    };
    ctx.metrics.update_boots_in_flight(&in_flight);
    ctx.metrics.update_store(ctx.store.health());
    let body = ctx.metrics.render(format).map_err(HttpError::internal)?;
    Ok((
        [
            (header::CONTENT_TYPE, format.content_type()),
            // Caches must key the body on what was asked for.
            (header::VARY, "accept"),
        ],
        body,
    )
        .into_response())
}

/// Counts each request once its response status is known (before the body
/// is streamed). Classed by path before routing, so unknown paths count too.
pub async fn count(State(ctx): State<Arc<HttpContext>>, req: Request, next: Next) -> Response {
    let route = Area::of_path(req.uri().path());
    let response = next.run(req).await;
    ctx.metrics.http_request(route, response.status().as_u16());
    response
}
