//! The bootenvs page: the bootenvs in force, the file the latest reload
//! refused and why (the previous version keeps serving meanwhile), and a
//! box to validate a bootenv file before it goes on disk: what a reload
//! would say of it, exactly as `POST /api/v1/bootenvs/validate` says it.
//! Validating writes nothing, so a `read` token may do it too.

use std::sync::Arc;

use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::Response;
use axum::{Extension, Form};
use minijinja::{Value, context};
use serde::Deserialize;

use super::{Console, Sessions, Signed, given};
use crate::http::api::{bootenv_list, validation};
use crate::http::{ApiError, HttpContext, HttpError};

fn page(ctx: &HttpContext, c: &Console, signed: &Signed, check: Value) -> Response {
    let list = bootenv_list(ctx);
    c.page(
        "bootenvs.html",
        Some(signed),
        context! {
            nav => "bootenvs",
            bootenvs => Value::from_serialize(&list.bootenvs),
            rejected => Value::from_serialize(&list.rejected),
            check,
        },
    )
}

/// `GET /console/bootenvs`.
pub async fn page_get(
    State(ctx): State<Arc<HttpContext>>,
    Extension(c): Extension<Arc<Console>>,
    headers: HeaderMap,
) -> Response {
    match c.viewer(&ctx, &headers, false) {
        Ok(signed) => page(&ctx, &c, &signed, context! {}),
        Err(resp) => *resp,
    }
}

#[derive(Deserialize)]
pub struct ValidateForm {
    csrf: String,
    name: Option<String>,
    text: String,
}

/// `POST /console/bootenvs/validate`: the page again, with the verdict
/// beside the text (kept in the box, to be fixed).
pub async fn validate(
    State(ctx): State<Arc<HttpContext>>,
    Extension(c): Extension<Arc<Console>>,
    headers: HeaderMap,
    Form(f): Form<ValidateForm>,
) -> Response {
    let signed = match c.viewer(&ctx, &headers, false) {
        Ok(s) if Sessions::csrf_ok(&s, &f.csrf) => s,
        Ok(s) => {
            return c.error(
                Some(&s),
                HttpError::new(
                    axum::http::StatusCode::FORBIDDEN,
                    "the form is not from this session's page (CSRF check); reload the page and try again",
                ),
            );
        }
        Err(resp) => return *resp,
    };
    // Browsers send a textarea's line ends as CRLF.
    let text = f.text.replace("\r\n", "\n");
    let name = given(&f.name).map(str::to_string);
    let verdict = match validation(&ctx, name.clone(), text.clone()).await {
        Ok(v) => Value::from_serialize(&v),
        Err(ApiError(e)) => {
            context! { ok => false, errors => vec![context! { reason => e.public }] }
        }
    };
    page(&ctx, &c, &signed, context! { name, text, verdict })
}
