//! Who a console request is from, checked before its handler runs, as
//! axum extractors: [`Viewer`] for a page (else to the sign-in page),
//! [`PartViewer`] for a page part console.js fetches (else 401), and
//! [`Act`] for a form that changes something (signed in, the session's CSRF
//! token, a token that may POST; else the page saying why, with nothing
//! changed).

use std::sync::Arc;

use axum::extract::{Form, FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::{HeaderMap, Method, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use minijinja::Value;
use serde::de::DeserializeOwned;

use super::session::{Sessions, Signed};
use super::{Console, Flash};
use crate::http::{HttpContext, HttpError, parse_mac};
use crate::model::Mac;
use crate::routes::console as path;

/// The console the router was built with (an `Extension`).
fn console_of(parts: &axum::http::Extensions) -> Result<Arc<Console>, HttpError> {
    parts
        .get::<Arc<Console>>()
        .cloned()
        .ok_or_else(|| HttpError::internal("console route without its console"))
}

/// A page request from a signed-in browser.
pub struct Viewer {
    pub c: Arc<Console>,
    pub signed: Signed,
}

impl Viewer {
    /// The page `name` with `view`, or the page saying why there is none.
    pub fn show(&self, name: &str, view: Result<Value, HttpError>) -> Response {
        match view {
            Ok(v) => self.c.page(name, Some(&self.signed), v),
            Err(e) => self.c.error(Some(&self.signed), e),
        }
    }
}

/// The state every console request sees.
type Ctx = Arc<HttpContext>;

/// The console of a request and its signed-in session; when it has none,
/// the answer `refused` makes from why.
#[allow(
    clippy::result_large_err,
    reason = "the extractors' own rejection type"
)]
fn signed_in(
    parts: &Parts,
    ctx: &HttpContext,
    refused: impl FnOnce(HttpError) -> Response,
) -> Result<(Arc<Console>, Signed), Response> {
    let c = console_of(&parts.extensions).map_err(IntoResponse::into_response)?;
    let signed = c
        .sessions
        .signed(&parts.headers, &ctx.auth)
        .map_err(refused)?;
    Ok((c, signed))
}

impl FromRequestParts<Ctx> for Viewer {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, ctx: &Ctx) -> Result<Self, Response> {
        let to_login = |_| Redirect::to(&path::path(path::LOGIN)).into_response();
        signed_in(parts, ctx, to_login).map(|(c, signed)| Viewer { c, signed })
    }
}

/// A page part's request (console.js fetching what changed).
pub struct PartViewer {
    pub c: Arc<Console>,
}

impl PartViewer {
    /// The template `name` alone with `view`, or the error as plain text.
    pub fn show(&self, name: &str, view: Result<Value, HttpError>) -> Response {
        match view {
            Ok(v) => self.c.render(name, v),
            Err(e) => e.into_response(),
        }
    }
}

impl FromRequestParts<Ctx> for PartViewer {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, ctx: &Ctx) -> Result<Self, Response> {
        let unauthorized = |e: HttpError| (StatusCode::UNAUTHORIZED, e.public).into_response();
        signed_in(parts, ctx, unauthorized).map(|(c, _)| PartViewer { c })
    }
}

/// A form that carries the session's CSRF token.
pub trait CsrfForm: DeserializeOwned + Send {
    fn csrf(&self) -> &str;
}

/// A form posted from a page, by whom. `CHANGES`: the form changes
/// something, so the token must be one that may (a `read` token may still
/// validate a bootenv).
pub struct Act<T, const CHANGES: bool = true> {
    pub c: Arc<Console>,
    pub signed: Signed,
    pub form: T,
}

impl<T: CsrfForm, const CHANGES: bool> FromRequest<Ctx> for Act<T, CHANGES> {
    type Rejection = Response;

    async fn from_request(req: Request, ctx: &Ctx) -> Result<Self, Response> {
        let c = console_of(req.extensions()).map_err(IntoResponse::into_response)?;
        let headers: HeaderMap = req.headers().clone();
        let signed = c.sessions.signed(&headers, &ctx.auth).map_err(|e| {
            let why = format!("{}: nothing was changed", e.public);
            c.error(None, HttpError::new(StatusCode::UNAUTHORIZED, why))
        })?;
        let Form(form) = Form::<T>::from_request(req, ctx)
            .await
            .map_err(|e| c.error(Some(&signed), HttpError::bad_request(e.body_text())))?;
        if !Sessions::csrf_ok(&signed, form.csrf()) {
            let why = "the form is not from this session's page (CSRF check): nothing was changed; reload the page and try again";
            return Err(c.error(Some(&signed), HttpError::new(StatusCode::FORBIDDEN, why)));
        }
        if CHANGES && let Err(e) = signed.grant.may(&Method::POST) {
            return Err(c.error(Some(&signed), e));
        }
        Ok(Act { c, signed, form })
    }
}

impl<T, const CHANGES: bool> Act<T, CHANGES> {
    /// After the form: its outcome for the next page, and a redirect there.
    pub fn done(&self, to: &str, outcome: Result<String, String>) -> Response {
        let flash = match outcome {
            Ok(text) => Flash { ok: true, text },
            Err(text) => Flash { ok: false, text },
        };
        self.c.sessions.flash(&self.signed, flash);
        Redirect::to(to).into_response()
    }

    /// Does `change` to the node `mac` names, then back to its page with the
    /// outcome.
    pub async fn on_node<F, Fut>(&self, mac: &str, change: F) -> Response
    where
        F: FnOnce(Mac) -> Fut,
        Fut: Future<Output = Result<String, String>>,
    {
        match parse_mac(mac) {
            Ok(mac) => {
                let outcome = change(mac).await;
                self.done(&path::node(mac, ""), outcome)
            }
            Err(e) => self.c.error(Some(&self.signed), e),
        }
    }
}
