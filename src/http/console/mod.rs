//! The admin console: server-rendered pages under `/console` for admins in
//! a browser. The fleet at a glance ([`fleet`]), a node's boot as it
//! happens ([`node`]), changes to many nodes with a preview ([`bulk`]), and
//! the bootenvs in force ([`bootenvs`]). Off unless `[console] enabled`.
//!
//! It reads and changes what the API does, through the same calls: node
//! records through `control`, every change through `control::admin` (the
//! protection check and the audit), refusals in the API's words. Sign-in
//! takes an API token ([`session`]): a `read` token sees, an `admin` token
//! acts. Pages are minijinja templates and one small script (`console.js`,
//! live updates from [`live`]), all compiled into the binary; every form
//! posts back a per-session CSRF token, and no token ever goes in a URL.

mod bootenvs;
mod bulk;
mod fleet;
pub mod live;
mod node;
pub mod session;
mod signed;

use std::sync::Arc;

use axum::Router;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, header};
use axum::middleware::Next;
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::{Extension, Form};
use minijinja::{Environment, Value, context};
use serde::Deserialize;

use super::{HttpContext, HttpError};
use crate::config::ConsoleConfig;
use crate::model::Timestamp;
use crate::routes::console as path;
use session::{Flash, Sessions, Signed};
use signed::{Act, CsrfForm, PartViewer, Viewer};

/// The request came over HTTPS: the session cookie is then `Secure`.
/// Put on the HTTPS listener's router.
#[derive(Clone, Copy, Debug)]
pub struct OverTls;

/// The console of one appliance: its sessions, its live feed, its pages.
pub struct Console {
    pub sessions: Sessions,
    /// Subscribed to the store's feed by `service`.
    pub nodes: Arc<crate::control::watch::NodeWatch>,
    pages: Environment<'static>,
}

/// The templates, compiled in.
const TEMPLATES: &[(&str, &str)] = &[
    ("base.html", include_str!("templates/base.html")),
    ("login.html", include_str!("templates/login.html")),
    ("fleet.html", include_str!("templates/fleet.html")),
    ("fleet_rows.html", include_str!("templates/fleet_rows.html")),
    ("node.html", include_str!("templates/node.html")),
    ("node_live.html", include_str!("templates/node_live.html")),
    ("bulk.html", include_str!("templates/bulk.html")),
    ("bootenvs.html", include_str!("templates/bootenvs.html")),
    ("error.html", include_str!("templates/error.html")),
];

/// The static files, compiled in: name, content type, bytes.
const STATIC: &[(&str, &str, &str)] = &[
    (
        "console.css",
        "text/css; charset=utf-8",
        include_str!("static/console.css"),
    ),
    (
        "console.js",
        "text/javascript; charset=utf-8",
        include_str!("static/console.js"),
    ),
];

impl Console {
    pub fn new(cfg: &ConsoleConfig) -> Console {
        let mut pages = Environment::new();
        for (name, text) in TEMPLATES {
            // A template that does not parse is a bug caught by the tests.
            pages
                .add_template(name, text)
                .unwrap_or_else(|e| panic!("console template {name}: {e}"));
        }
        pages.add_filter("ago", ago);
        // The console's own paths, for links and forms (built in `routes`).
        pages.add_global(
            "P",
            context! {
                fleet => path::path(path::FLEET),
                login => path::path(path::LOGIN),
                logout => path::path(path::LOGOUT),
                stream => path::path(path::STREAM),
                bulk => path::path(path::BULK),
                bulk_apply => path::path(path::BULK_APPLY),
                bootenvs => path::path(path::BOOTENVS),
                validate => path::path(path::BOOTENVS_VALIDATE),
                nodes => path::node("", ""),
                css => path::path("/static/console.css"),
                js => path::path("/static/console.js"),
            },
        );
        Console {
            sessions: Sessions::new(cfg.session_idle),
            nodes: Arc::default(),
            pages,
        }
    }

    /// The page `name` with `values`, and what every page shows (who is
    /// signed in, the message the last form left).
    fn page(&self, name: &str, signed: Option<&Signed>, values: Value) -> Response {
        let who = signed.map(|s| {
            context! {
                name => s.grant.actor.to_string(),
                admin => s.is_admin(),
                csrf => s.csrf.clone(),
            }
        });
        let flash = signed.and_then(|s| self.sessions.take_flash(s)).map(|f| {
            context! { ok => f.ok, text => f.text }
        });
        self.render(name, context! { who, flash, ..values })
    }

    /// A template with `values` as it is (a page part has no frame).
    fn render(&self, name: &str, values: Value) -> Response {
        let rendered = self.pages.get_template(name).and_then(|t| t.render(values));
        match rendered {
            Ok(html) => Html(html).into_response(),
            Err(e) => HttpError::internal(format!("console page {name}: {e}")).into_response(),
        }
    }

    /// A page saying what went wrong, with its status.
    fn error(&self, signed: Option<&Signed>, e: HttpError) -> Response {
        e.log();
        let status = e.status;
        let mut resp = self.page(
            "error.html",
            signed,
            context! { status => status.as_u16(), message => e.public },
        );
        *resp.status_mut() = status;
        resp
    }
}

/// `{{ t | ago }}`: how long before now an RFC 3339 time was, in short
/// (`12s ago`, `in 2h`); the text itself when it is not a time.
fn ago(t: String) -> String {
    let Ok(then) = humantime::parse_rfc3339(&t) else {
        return t;
    };
    let now = std::time::SystemTime::now();
    let (d, future) = match now.duration_since(then) {
        Ok(d) => (d, false),
        Err(e) => (e.duration(), true),
    };
    let s = d.as_secs();
    let short = match s {
        0..60 => format!("{s}s"),
        60..3600 => format!("{}m", s / 60),
        3600..86400 => format!("{}h", s / 3600),
        _ => format!("{}d", s / 86400),
    };
    if future {
        format!("in {short}")
    } else {
        format!("{short} ago")
    }
}

/// A form that only carries its CSRF token.
#[derive(Deserialize)]
struct CsrfOnly {
    csrf: String,
}

impl CsrfForm for CsrfOnly {
    fn csrf(&self) -> &str {
        &self.csrf
    }
}

#[derive(Deserialize)]
struct SignIn {
    token: String,
}

/// Every console route, under `/console`, for a console that is served.
pub fn router(console: Arc<Console>) -> Router<Arc<HttpContext>> {
    Router::new()
        .route(path::FLEET, get(fleet::page))
        .route(path::FLEET_ROWS, get(fleet::rows))
        .route(path::LOGIN, get(sign_in_page).post(sign_in))
        .route(path::LOGOUT, post(sign_out))
        .route(path::STREAM, get(stream))
        .route(path::NODE, get(node::page))
        .route(path::NODE_LIVE, get(node::live))
        .route(path::NODE_BOOTENV, post(node::set_bootenv))
        .route(path::NODE_RECONFIGURE, post(node::reconfigure))
        .route(path::NODE_PROTECT, post(node::protect))
        .route(path::BULK, get(bulk::form).post(bulk::preview))
        .route(path::BULK_APPLY, post(bulk::apply))
        .route(path::BOOTENVS, get(bootenvs::page_get))
        .route(path::BOOTENVS_VALIDATE, post(bootenvs::validate))
        .route(path::STATIC, get(static_file))
        .fallback(|Extension(c): Extension<Arc<Console>>| async move {
            c.error(None, HttpError::not_found("no such console page"))
        })
        .layer(axum::middleware::from_fn(guard_headers))
        .layer(Extension(console))
}

/// Every console answer: never cached (pages show live state and a CSRF
/// token), never framed, scripts and styles only from rackboot itself.
async fn guard_headers(req: Request, next: Next) -> Response {
    let mut resp = next.run(req).await;
    let h = resp.headers_mut();
    for (name, value) in [
        (header::CACHE_CONTROL, "no-store"),
        (
            header::CONTENT_SECURITY_POLICY,
            "default-src 'self'; img-src 'self' data:; frame-ancestors 'none'; form-action 'self'; base-uri 'none'",
        ),
        (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        (header::X_FRAME_OPTIONS, "DENY"),
        (header::REFERRER_POLICY, "no-referrer"),
    ] {
        h.insert(name, HeaderValue::from_static(value));
    }
    resp
}

/// What `/console` answers when the console is off.
pub async fn off(State(ctx): State<Arc<HttpContext>>) -> HttpError {
    HttpError::not_found(format!(
        "the console is off: set enabled = true under [console] in {}",
        ctx.config_path.display()
    ))
}

async fn static_file(axum::extract::Path(file): axum::extract::Path<String>) -> Response {
    match STATIC.iter().find(|(name, ..)| *name == file) {
        Some((_, content_type, body)) => {
            ([(header::CONTENT_TYPE, *content_type)], *body).into_response()
        }
        None => HttpError::not_found("no such console file").into_response(),
    }
}

async fn sign_in_page(
    State(ctx): State<Arc<HttpContext>>,
    Extension(c): Extension<Arc<Console>>,
    headers: HeaderMap,
) -> Response {
    if c.sessions.signed(&headers, &ctx.auth).is_ok() {
        return Redirect::to(&path::path(path::FLEET)).into_response();
    }
    c.page("login.html", None, context! {})
}

/// Checks the token as the API would and opens a session. The token comes
/// in the form's body (never a URL) and is not logged.
async fn sign_in(
    State(ctx): State<Arc<HttpContext>>,
    Extension(c): Extension<Arc<Console>>,
    over_tls: Option<Extension<OverTls>>,
    Form(f): Form<SignIn>,
) -> Response {
    let token = f.token.trim();
    match ctx.auth.grant(&super::auth::token_digest(token)) {
        Ok(grant) => {
            tracing::info!(by = %grant.actor, "console sign-in");
            let cookie = c.sessions.open(&grant, over_tls.is_some());
            (
                [(header::SET_COOKIE, cookie)],
                Redirect::to(&path::path(path::FLEET)),
            )
                .into_response()
        }
        Err(e) => {
            let mut resp = c.page("login.html", None, context! { error => e.public });
            *resp.status_mut() = e.status;
            resp
        }
    }
}

async fn sign_out(
    State(ctx): State<Arc<HttpContext>>,
    Extension(c): Extension<Arc<Console>>,
    over_tls: Option<Extension<OverTls>>,
    headers: HeaderMap,
    Form(f): Form<CsrfOnly>,
) -> Response {
    if let Ok(s) = c.sessions.signed(&headers, &ctx.auth)
        && Sessions::csrf_ok(&s, &f.csrf)
    {
        c.sessions.close(&s);
    }
    (
        [(header::SET_COOKIE, session::cleared(over_tls.is_some()))],
        Redirect::to(&path::path(path::LOGIN)),
    )
        .into_response()
}

/// `?mac=`: follow one node, else the fleet.
#[derive(Deserialize)]
struct StreamQuery {
    mac: Option<String>,
}

async fn stream(
    v: PartViewer,
    axum::extract::Query(q): axum::extract::Query<StreamQuery>,
) -> Response {
    let follow = match q.mac.as_deref().map(super::parse_mac).transpose() {
        Ok(Some(mac)) => live::Follow::Node(mac),
        Ok(None) => live::Follow::Fleet,
        Err(e) => return e.into_response(),
    };
    live::stream(&v.c.nodes, follow).into_response()
}

/// The names of the bootenvs in force, for the forms that choose one.
fn bootenv_names(ctx: &HttpContext) -> Vec<String> {
    let catalog = ctx.catalog.current();
    catalog.bootenvs().map(|b| b.name.clone()).collect()
}

/// A form's optional text field: absent and blank are the same.
fn given(s: &Option<String>) -> Option<&str> {
    s.as_deref().map(str::trim).filter(|s| !s.is_empty())
}

/// Percent-encodes a query value.
fn query_value(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Now, for every reading of a page.
fn now() -> Timestamp {
    Timestamp::now()
}

#[cfg(test)]
mod tests {
    use super::*;

    use axum::http::StatusCode;

    #[test]
    fn every_template_parses_and_the_frame_renders() {
        let c = Console::new(&ConsoleConfig {
            session_idle: std::time::Duration::from_secs(60),
        });
        let resp = c.page("login.html", None, context! {});
        assert_eq!(resp.status(), StatusCode::OK);
    }

    #[test]
    fn ago_says_how_long_in_short() {
        let t = |secs_ago: i64| {
            let ms = Timestamp::now().millis() - secs_ago * 1000;
            ago(Timestamp(ms).to_string())
        };
        assert_eq!(t(5), "5s ago");
        assert_eq!(t(125), "2m ago");
        assert_eq!(t(7300), "2h ago");
        assert_eq!(t(-7300), "in 2h");
        assert_eq!(ago("never".into()), "never");
    }

    #[test]
    fn query_values_are_encoded() {
        assert_eq!(
            query_value("rack=r1,role!=x y"),
            "rack%3Dr1%2Crole%21%3Dx%20y"
        );
    }
}
