//! The bootenvs page: the bootenvs in force, the file the latest reload
//! refused and why (the previous version keeps serving meanwhile), and a
//! box to validate a bootenv file before it goes on disk: what a reload
//! would say of it, exactly as `POST /api/v1/bootenvs/validate` says it.
//! Validating writes nothing, so a `read` token may do it too.

use std::sync::Arc;

use axum::extract::State;
use axum::response::Response;
use minijinja::{Value, context};
use serde::Deserialize;

use super::{Act, Console, CsrfForm, Signed, Viewer, given};
use crate::http::api::{bootenv_list, validation};
use crate::http::{ApiError, HttpContext};

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
pub async fn page_get(State(ctx): State<Arc<HttpContext>>, v: Viewer) -> Response {
    page(&ctx, &v.c, &v.signed, context! {})
}

#[derive(Deserialize)]
pub struct ValidateForm {
    csrf: String,
    name: Option<String>,
    text: String,
}

impl CsrfForm for ValidateForm {
    fn csrf(&self) -> &str {
        &self.csrf
    }
}

/// `POST /console/bootenvs/validate`: the page again, with the verdict
/// beside the text (kept in the box, to be fixed). Changes nothing, so a
/// `read` token may.
pub async fn validate(
    State(ctx): State<Arc<HttpContext>>,
    act: Act<ValidateForm, false>,
) -> Response {
    // Browsers send a textarea's line ends as CRLF.
    let text = act.form.text.replace("\r\n", "\n");
    let name = given(&act.form.name).map(str::to_string);
    let verdict = match validation(&ctx, name.clone(), text.clone()).await {
        Ok(v) => Value::from_serialize(&v),
        Err(ApiError(e)) => {
            context! { ok => false, errors => vec![context! { reason => e.public }] }
        }
    };
    page(&ctx, &act.c, &act.signed, context! { name, text, verdict })
}
