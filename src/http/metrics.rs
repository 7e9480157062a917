//! `GET /metrics` for Prometheus, in the format the scraper's `Accept` header
//! asks for (Prometheus text 0.0.4 unless it asks for OpenMetrics), the
//! middleware that counts every HTTP request by route class and status
//! class, and HTTP's metric families: requests, connections (open, refused,
//! timed out) and the `[admission]` boot slots. The families are registered
//! by [`Metrics::new`]; HTTP counts through the methods added to [`Metrics`]
//! here.

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::HeaderMap;
use axum::http::header;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue, LabelValueEncoder};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

use super::{HttpContext, HttpError};
use crate::metrics::{Format, Metrics, SubnetLabels, at_zero, families, label_value};
use crate::model::Timestamp;
use crate::routes::Area;

/// The `route` label: which part of the HTTP service a request was for,
/// as [`crate::routes`] classes its path.
impl EncodeLabelValue for Area {
    fn encode(&self, w: &mut LabelValueEncoder<'_>) -> Result<(), std::fmt::Error> {
        use std::fmt::Write as _;
        w.write_str(self.as_str())
    }
}

label_value! {
    /// Why an HTTP connection was closed as soon as it was accepted.
    ConnRefusal {
        /// Its address held `http.max_connections_per_address` already.
        PerAddress => "per_address",
        /// Only the reserve was left and its address held connections already.
        Reserve => "reserve",
        /// `http.max_connections` were open.
        Full => "full",
    }
}

label_value! {
    /// Which wait of an HTTP connection ran out.
    HttpTimeout {
        /// The request head did not arrive within `http.header_timeout`.
        Header => "header",
        /// The request body did not arrive within `http.body_timeout`.
        Body => "body",
        /// The client took no response bytes for `http.send_timeout`.
        Send => "send",
        /// No next request within `http.idle_timeout` (keep-alive ending as it should).
        Idle => "idle",
    }
}

label_value! {
    /// An HTTP status by its first digit.
    StatusClass {
        Success => "2xx",
        /// 304 Not Modified to a conditional asset request, mostly.
        Redirect => "3xx",
        ClientError => "4xx",
        ServerError => "5xx",
    }
}

impl StatusClass {
    pub fn of(status: u16) -> StatusClass {
        match status {
            ..300 => StatusClass::Success,
            300..400 => StatusClass::Redirect,
            400..500 => StatusClass::ClientError,
            _ => StatusClass::ServerError,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub(crate) struct HttpLabels {
    route: Area,
    status: StatusClass,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub(crate) struct ConnRefusalLabels {
    reason: ConnRefusal,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub(crate) struct HttpTimeoutLabels {
    phase: HttpTimeout,
}

families! {
    /// HTTP's families under `rackboot_`, one field each.
    pub(crate) struct HttpFamilies {
        http_requests: Family<HttpLabels, Counter> => "HTTP requests by route class and status class",
        http_connections: Gauge => "HTTP and HTTPS connections open",
        http_connections_refused: Family<ConnRefusalLabels, Counter>
            => "HTTP and HTTPS connections closed as soon as accepted, by reason: per_address (http.max_connections_per_address), reserve (only the reserve left, for addresses holding few), full (http.max_connections)",
        http_timeouts: Family<HttpTimeoutLabels, Counter>
            => "HTTP and HTTPS connections closed for taking too long, by phase: header, body, send (the client took no bytes), idle (no next request)",
        http_boot_waits: Family<SubnetLabels, Counter>
            => "Boot scripts that told a node to wait for a boot slot ([admission] max_booting), by subnet",
        boots_in_flight: Family<SubnetLabels, Gauge>
            => "Nodes holding a boot slot (fetching kernel and initrds) under an [admission] limit, by subnet",
    }
}

/// HTTP's families.
#[derive(Debug)]
pub(crate) struct HttpMetrics {
    families: HttpFamilies,
}

impl HttpMetrics {
    /// Registers HTTP's families with every series at zero.
    pub(crate) fn register(registry: &mut Registry) -> HttpMetrics {
        let f = HttpFamilies::register(registry);
        at_zero(&f.http_connections_refused, ConnRefusal::ALL, |reason| {
            ConnRefusalLabels { reason }
        });
        at_zero(&f.http_timeouts, HttpTimeout::ALL, |phase| {
            HttpTimeoutLabels { phase }
        });
        for &route in Area::ALL {
            at_zero(&f.http_requests, StatusClass::ALL, |status| HttpLabels {
                route,
                status,
            });
        }
        HttpMetrics { families: f }
    }
}

impl Metrics {
    /// A connection opened (+1) or closed (-1).
    pub fn http_connections(&self, delta: i64) {
        self.http.families.http_connections.inc_by(delta);
    }

    pub fn http_connection_refused(&self, reason: ConnRefusal) {
        self.http
            .families
            .http_connections_refused
            .get_or_create(&ConnRefusalLabels { reason })
            .inc();
    }

    pub fn http_timed_out(&self, phase: HttpTimeout) {
        self.http
            .families
            .http_timeouts
            .get_or_create(&HttpTimeoutLabels { phase })
            .inc();
    }

    pub fn http_request(&self, route: Area, status: u16) {
        let status = StatusClass::of(status);
        self.http
            .families
            .http_requests
            .get_or_create(&HttpLabels { route, status })
            .inc();
    }

    /// A node was told to wait for a boot slot on `subnet` (a CIDR, or `other`).
    pub fn boot_waited(&self, subnet: &str) {
        self.http
            .families
            .http_boot_waits
            .get_or_create(&SubnetLabels {
                subnet: subnet.to_string(),
            })
            .inc();
    }

    /// Slots in use per subnet, set at scrape time from the admission state.
    pub fn update_boots_in_flight(&self, pools: &[(String, u32)]) {
        for (subnet, n) in pools {
            self.http
                .families
                .boots_in_flight
                .get_or_create(&SubnetLabels {
                    subnet: subnet.clone(),
                })
                .set(i64::from(*n));
        }
    }
}

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
            ctx.control.visit_leases(first, last, f)
        });
    ctx.metrics
        .update_boots_in_flight(&ctx.control.boots_in_flight());
    ctx.metrics.update_store(ctx.control.store_health());
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
