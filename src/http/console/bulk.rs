//! Changing many nodes at once, by label selector, seen before it is done:
//! the form (`GET /console/bulk`), its preview (`POST`: every node the
//! selector matches, what would change on each, and which would refuse),
//! and the change itself (`POST /console/bulk/apply`). The change carries
//! the MACs the admin saw and is refused, changing nothing, if the selector
//! matches others by then; like the API's bulk edit it is all or nothing
//! (one protected node not forced refuses it, named).

use std::sync::Arc;

use axum::extract::{Query, State};
use axum::response::Response;
use minijinja::context;
use serde::Deserialize;

use super::{Act, Console, CsrfForm, Signed, Viewer, given, now};
use crate::boot::{NodePatch, ValidPatch};
use crate::control::admin::AdminError;
use crate::control::fleet::Nodes;
use crate::http::api::known_bootenv;
use crate::http::{ApiError, HttpContext};
use crate::model::{LabelSelector, Mac};
use crate::routes::console as path;

/// The form, as the preview and the apply post it.
#[derive(Debug, Default, Deserialize)]
pub struct BulkForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    selector: String,
    /// `bootenv`, `protect`, `unprotect` or `reconfigure`.
    #[serde(default)]
    action: String,
    bootenv: Option<String>,
    /// As the node page's: `always`, `once`, `for`.
    mode: Option<String>,
    #[serde(rename = "for")]
    for_: Option<String>,
    force: Option<String>,
    /// The previewed MACs, comma-separated (apply only).
    previewed: Option<String>,
}

/// What the form asks for.
enum Change {
    Patch(Box<ValidPatch>),
    Reconfigure,
}

impl BulkForm {
    fn selector(&self) -> Result<LabelSelector, String> {
        if self.selector.trim().is_empty() {
            return Err("name the nodes with a label selector (rack=r12, role=builder)".into());
        }
        self.selector
            .trim()
            .parse::<LabelSelector>()
            .map_err(|e| e.to_string())
    }

    fn change(&self, ctx: &HttpContext) -> Result<Change, String> {
        let patch = match self.action.as_str() {
            "reconfigure" => return Ok(Change::Reconfigure),
            "protect" | "unprotect" => NodePatch {
                protected: Some(self.action == "protect"),
                ..NodePatch::default()
            },
            "bootenv" => {
                let bootenv = given(&self.bootenv).ok_or("choose the bootenv to set")?;
                let mut patch = NodePatch {
                    bootenv: Some(bootenv.to_string()),
                    force: self.force.is_some(),
                    ..NodePatch::default()
                };
                match self.mode.as_deref().unwrap_or("always") {
                    "always" => {}
                    "once" => patch.once = true,
                    "for" => {
                        patch.for_ = Some(
                            given(&self.for_)
                                .ok_or("say for how long (2h, 30m, 1d)")?
                                .to_string(),
                        )
                    }
                    other => {
                        return Err(format!(
                            "`{other}` is not a way to set a bootenv (always, once, for)"
                        ));
                    }
                }
                patch
            }
            other => {
                return Err(format!(
                    "`{other}` is not a change the console makes (bootenv, protect, unprotect, reconfigure)"
                ));
            }
        };
        patch
            .validate(&known_bootenv(ctx))
            .map(|p| Change::Patch(Box::new(p)))
            .map_err(|e| e.to_string())
    }

    fn previewed(&self) -> Result<Vec<Mac>, String> {
        let text = self.previewed.as_deref().unwrap_or("");
        let mut macs = Vec::new();
        for m in text.split(',').map(str::trim).filter(|m| !m.is_empty()) {
            macs.push(m.parse::<Mac>().map_err(|e| format!("previewed: {e}"))?);
        }
        macs.sort();
        Ok(macs)
    }
}

impl CsrfForm for BulkForm {
    fn csrf(&self) -> &str {
        &self.csrf
    }
}

/// `GET /console/bulk?selector=`: the form, the selector filled in.
pub async fn form(
    State(ctx): State<Arc<HttpContext>>,
    v: Viewer,
    Query(f): Query<BulkForm>,
) -> Response {
    page(&ctx, &v.c, &v.signed, &f, None, None)
}

fn page(
    ctx: &HttpContext,
    c: &Console,
    signed: &Signed,
    f: &BulkForm,
    plan: Option<minijinja::Value>,
    error: Option<String>,
) -> Response {
    let bootenvs = super::bootenv_names(ctx);
    c.page(
        "bulk.html",
        Some(signed),
        context! {
            nav => "bulk",
            bootenvs,
            form => context! {
                selector => f.selector.trim(),
                action => if f.action.is_empty() { "bootenv" } else { f.action.as_str() },
                bootenv => given(&f.bootenv),
                mode => f.mode.as_deref().unwrap_or("always"),
                for_ => given(&f.for_),
                force => f.force.is_some(),
            },
            plan,
            error,
        },
    )
}

/// `POST /console/bulk`: the preview.
pub async fn preview(State(ctx): State<Arc<HttpContext>>, act: Act<BulkForm>) -> Response {
    let (c, signed, f) = (&act.c, &act.signed, &act.form);
    let (selector, change) = match f.selector().and_then(|s| Ok((s, f.change(&ctx)?))) {
        Ok(x) => x,
        Err(e) => return page(&ctx, c, signed, f, None, Some(e)),
    };
    // A reconfigure changes no field: the preview is the nodes it reaches.
    let patch = match &change {
        Change::Patch(p) => (**p).clone(),
        Change::Reconfigure => NodePatch::default()
            .validate(&|_| true)
            .expect("an empty patch is valid"),
    };
    let planned = match ctx
        .control
        .admin()
        .plan_bulk(&selector, &patch, now())
        .await
    {
        Ok(p) => p,
        Err(e) => return c.error(Some(signed), e.into()),
    };
    let refused = planned.iter().filter(|p| p.refused.is_some()).count();
    let changing = planned.iter().filter(|p| !p.changes.is_empty()).count();
    let nodes: Vec<minijinja::Value> = planned
        .iter()
        .map(|p| {
            context! {
                mac => p.node.mac.to_string(),
                hostname => p.node.hostname.clone(),
                state => p.node.state.as_str(),
                bootenv => p.node.bootenv.clone(),
                protected => p.node.protected,
                changes => p.changes.clone(),
                refused => p.refused.clone(),
            }
        })
        .collect();
    let previewed: Vec<String> = planned.iter().map(|p| p.node.mac.to_string()).collect();
    let plan = context! {
        nodes,
        matched => planned.len(),
        changing,
        refused,
        reconfigure => matches!(change, Change::Reconfigure),
        previewed => previewed.join(","),
    };
    page(&ctx, c, signed, f, Some(plan), None)
}

/// `POST /console/bulk/apply`.
pub async fn apply(State(ctx): State<Arc<HttpContext>>, act: Act<BulkForm>) -> Response {
    let (c, signed, f) = (&act.c, &act.signed, &act.form);
    let parsed = f
        .selector()
        .and_then(|s| Ok((s, f.change(&ctx)?, f.previewed()?)));
    let (selector, change, previewed) = match parsed {
        Ok(x) => x,
        Err(e) => return page(&ctx, c, signed, f, None, Some(e)),
    };
    let text = f.selector.trim();
    let admin = ctx.control.admin();
    let actor = &signed.grant.actor;
    let outcome = match change {
        Change::Patch(patch) => admin
            .bulk(actor, selector, text, *patch, now(), Some(previewed))
            .await
            .map(|b| {
                format!(
                    "`{text}`: {} nodes matched, {} changed",
                    b.matched.len(),
                    b.changed.len()
                )
            }),
        Change::Reconfigure => reconfigure(&ctx, actor, &selector, text, previewed).await,
    };
    let outcome = outcome.map_err(|e| ApiError::from(e).0.public);
    act.done(&path::path(path::BULK), outcome)
}

/// The previewed nodes run their config scripts again, if the selector
/// still matches exactly them.
async fn reconfigure(
    ctx: &HttpContext,
    actor: &crate::control::admin::Actor,
    selector: &LabelSelector,
    text: &str,
    previewed: Vec<Mac>,
) -> Result<String, AdminError> {
    let empty = NodePatch::default()
        .validate(&|_| true)
        .expect("an empty patch is valid");
    let now_matched: Vec<Mac> = ctx
        .control
        .admin()
        .plan_bulk(selector, &empty, now())
        .await?
        .iter()
        .map(|p| p.node.mac)
        .collect();
    if now_matched != previewed {
        return Err(AdminError::Moved {
            selector: text.to_string(),
            previewed: previewed.len(),
            now: now_matched.len(),
        });
    }
    let macs = ctx
        .control
        .admin()
        .reconfigure(actor, Nodes::Macs(previewed))
        .await?;
    Ok(format!(
        "`{text}`: {} nodes run their config scripts again",
        macs.len()
    ))
}
