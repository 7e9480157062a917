//! A node's page: its record, its timeline as it grows with the
//! stalled-boot diagnosis, its script reports with their output, what it
//! would boot now (`explain`, with the rendered script), the rollouts it is
//! in and its BMC; and, for an admin, the forms that change it: its bootenv
//! (from now on, once, or for a time), a reconfigure, its protection. The
//! record, diagnosis, timeline and reports (`node_live.html`) are fetched
//! again whenever the node changes ([`super::live`]).
//!
//! Each form makes the change the API's PATCH or reconfigure makes, through
//! the same `control::admin` call (protection, audit) and with the API's
//! words when it is refused.

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::response::Response;
use minijinja::{Value, context};
use serde::Deserialize;

use super::{Act, CsrfForm, PartViewer, Signed, Viewer, bootenv_names, given, now};
use crate::boot::NodePatch;
use crate::control::fleet::Nodes;
use crate::http::api::{ExplainQuery, explanation, known_bootenv};
use crate::http::{ApiError, HttpContext, HttpError, parse_mac};
use crate::model::{Event, EventKind, Mac, Node};
use crate::routes::console as path;

/// Timeline entries shown, newest first (a node keeps a few hundred).
const EVENTS_SHOWN: usize = 200;

/// The record of the node a path names.
async fn record(ctx: &HttpContext, mac: &str) -> Result<Node, HttpError> {
    let mac = parse_mac(mac)?;
    ctx.control
        .node(mac)
        .await?
        .ok_or_else(|| HttpError::not_found(format!("no node with MAC {mac}")))
}

fn event_row(e: &Event) -> Value {
    context! {
        at => e.at.to_string(),
        kind => e.kind().as_str(),
        text => e.to_string(),
        appliance => e.appliance.clone(),
    }
}

/// What changes as the node boots: the record, the diagnosis, the
/// timeline, the reports, its rollouts.
async fn live_view(ctx: &HttpContext, node: &Node) -> Result<Value, HttpError> {
    let mac = node.mac;
    let events = ctx.control.events(mac).await?;
    let diagnosis = crate::boot::diagnose(node, &events, now(), &ctx.timeouts).map(|s| s.reason);
    let timeline: Vec<Value> = events
        .iter()
        .rev()
        .take(EVENTS_SHOWN)
        .map(event_row)
        .collect();
    // Its power as rackboot last acted on it (a BMC is asked only when acted on).
    let power = events
        .iter()
        .rev()
        .find(|e| e.kind() == EventKind::Power)
        .map(event_row);
    let reports = match ctx.control.reports(mac).await? {
        Some(r) => r.reports.into_iter().rev().collect(),
        None => Vec::new(),
    };
    let address = match node.ipv4 {
        Some(ip) => Some(ip),
        None => ctx.control.address_of(mac).await?,
    };
    let rollouts: Vec<Value> = ctx
        .control
        .rollouts()
        .await?
        .into_iter()
        .filter_map(|r| {
            let entry = r.nodes.iter().find(|n| n.mac == mac)?;
            Some(context! {
                rollout => Value::from_serialize(&r),
                entry => Value::from_serialize(entry),
            })
        })
        .collect();
    Ok(context! {
        node => Value::from_serialize(node),
        address => address.map(|a| a.to_string()),
        diagnosis,
        power,
        timeline,
        events_total => events.len(),
        reports => Value::from_serialize(&reports),
        rollouts,
        now => now().to_string(),
    })
}

/// `GET /console/nodes/<mac>`.
pub async fn page(
    State(ctx): State<Arc<HttpContext>>,
    v: Viewer,
    Path(mac): Path<String>,
) -> Response {
    let view = async {
        let node = record(&ctx, &mac).await?;
        let mac = node.mac;
        let live = live_view(&ctx, &node).await?;
        // What it would boot now, on the architecture it announced last.
        let explain = match node.arch {
            Some(_) => {
                let q = ExplainQuery {
                    arch: None,
                    user_class: None,
                    vendor_class: None,
                };
                Some(explanation(&ctx, mac, &q).await.map_err(|ApiError(e)| e)?)
            }
            None => None,
        };
        let bootenvs = bootenv_names(&ctx);
        Ok(context! {
            nav => "fleet",
            mac => mac.to_string(),
            explain => Value::from_serialize(&explain),
            bootenvs,
            live_url => path::node(mac, "/live"),
            ..live
        })
    };
    v.show("node.html", view.await)
}

/// `GET /console/nodes/<mac>/live`: the part that changes, for the live script.
pub async fn live(
    State(ctx): State<Arc<HttpContext>>,
    v: PartViewer,
    Path(mac): Path<String>,
) -> Response {
    let view = match record(&ctx, &mac).await {
        Ok(node) => live_view(&ctx, &node).await,
        Err(e) => Err(e),
    };
    v.show("node_live.html", view)
}

/// The bootenv form: which, and for how long.
#[derive(Deserialize)]
pub struct BootenvForm {
    csrf: String,
    bootenv: String,
    /// `always` (from now on), `once` (next boot only) or `for` (a time).
    mode: String,
    #[serde(rename = "for")]
    for_: Option<String>,
    /// `on` when the admin checked "force" (a protected node).
    force: Option<String>,
}

impl BootenvForm {
    /// The patch the CLI's `node set-bootenv` sends for the same choice.
    fn patch(&self) -> Result<NodePatch, String> {
        let mut patch = NodePatch {
            bootenv: Some(self.bootenv.trim().to_string()),
            force: self.force.is_some(),
            ..NodePatch::default()
        };
        match self.mode.as_str() {
            "always" => {}
            "once" => patch.once = true,
            "for" => {
                let d = given(&self.for_)
                    .ok_or("say for how long (2h, 30m, 1d) to set a bootenv for a time")?;
                patch.for_ = Some(d.to_string());
            }
            other => {
                return Err(format!(
                    "`{other}` is not a way to set a bootenv (always, once, for)"
                ));
            }
        }
        Ok(patch)
    }
}

impl CsrfForm for BootenvForm {
    fn csrf(&self) -> &str {
        &self.csrf
    }
}

/// The outcome of a patch as the API words it.
async fn apply(
    ctx: &HttpContext,
    signed: &Signed,
    mac: Mac,
    patch: NodePatch,
) -> Result<Node, String> {
    let valid = patch
        .validate(&known_bootenv(ctx))
        .map_err(|e| e.to_string())?;
    ctx.control
        .admin()
        .patch(&signed.grant.actor, mac, valid, now())
        .await
        .map_err(|e| ApiError::from(e).0.public)
}

/// `POST /console/nodes/<mac>/bootenv`.
pub async fn set_bootenv(
    State(ctx): State<Arc<HttpContext>>,
    Path(mac): Path<String>,
    act: Act<BootenvForm>,
) -> Response {
    let (signed, form) = (&act.signed, &act.form);
    act.on_node(&mac, |mac| async move {
        let n = apply(&ctx, signed, mac, form.patch()?).await?;
        Ok(match (&n.next_bootenv, n.bootenv_expires) {
            (Some(next), Some(t)) => {
                format!("{} boots {next} until {t}, then {}", n.hostname, n.bootenv)
            }
            (Some(next), None) => format!("{} boots {next} once, then {}", n.hostname, n.bootenv),
            _ => format!("{} boots {} from now on", n.hostname, n.bootenv),
        })
    })
    .await
}

/// `POST /console/nodes/<mac>/protect`.
#[derive(Deserialize)]
pub struct ProtectForm {
    csrf: String,
    /// `true` or `false`.
    protected: bool,
}

impl CsrfForm for ProtectForm {
    fn csrf(&self) -> &str {
        &self.csrf
    }
}

pub async fn protect(
    State(ctx): State<Arc<HttpContext>>,
    Path(mac): Path<String>,
    act: Act<ProtectForm>,
) -> Response {
    let (signed, protected) = (&act.signed, act.form.protected);
    act.on_node(&mac, |mac| async move {
        let patch = NodePatch {
            protected: Some(protected),
            ..NodePatch::default()
        };
        let n = apply(&ctx, signed, mac, patch).await?;
        Ok(if n.protected {
            format!(
                "{} is protected: its bootenv changes only when forced",
                n.hostname
            )
        } else {
            format!("{} is no longer protected", n.hostname)
        })
    })
    .await
}

/// `POST /console/nodes/<mac>/reconfigure`.
pub async fn reconfigure(
    State(ctx): State<Arc<HttpContext>>,
    Path(mac): Path<String>,
    act: Act<super::CsrfOnly>,
) -> Response {
    let actor = &act.signed.grant.actor;
    act.on_node(&mac, |mac| async move {
        ctx.control
            .admin()
            .reconfigure(actor, Nodes::Macs(vec![mac]))
            .await
            .map(|_| {
                format!("{mac} runs its config scripts again (at once if its agent is waiting)")
            })
            .map_err(|e| HttpError::from(e).public)
    })
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn form(mode: &str, for_: Option<&str>) -> BootenvForm {
        BootenvForm {
            csrf: String::new(),
            bootenv: " debian ".into(),
            mode: mode.into(),
            for_: for_.map(str::to_string),
            force: None,
        }
    }

    #[test]
    fn the_bootenv_form_makes_the_clis_patch() {
        let p = form("once", None).patch().unwrap();
        assert_eq!(
            (p.bootenv.as_deref(), p.once, p.for_),
            (Some("debian"), true, None)
        );
        let p = form("for", Some("2h")).patch().unwrap();
        assert_eq!(p.for_.as_deref(), Some("2h"));
        assert!(!p.once && !p.force);
        assert!(
            form("for", Some(" "))
                .patch()
                .unwrap_err()
                .contains("how long")
        );
        assert!(
            form("forever", None)
                .patch()
                .unwrap_err()
                .contains("`forever`")
        );
    }
}
