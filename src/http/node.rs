//! The endpoints the operational image calls: its script list, each script,
//! its reports, its wait for a reconfigure (which is also its heartbeat),
//! and the install-complete callback. Parses each request and asks
//! [`crate::control::agent`]; every request carries the node's own token,
//! that of its current boot, and comes from the node's own address.

use std::collections::HashMap;
use std::net::Ipv4Addr;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Path, Query, State};
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;

use super::{HttpContext, HttpError, Peer, parse_mac};
use crate::boot::bootenv::is_bootenv_name;
use crate::control::agent::{AgentRefused, DocumentRefused, InstallRefused, Report};
use crate::control::bind::Refusal;
use crate::metrics::BootRefusal;
use crate::model::{Document, Mac, Node};

/// The longest a wait request is held: well under the agent's own timeout
/// and common proxy idle timeouts. Also the agent's heartbeat interval.
pub const WAIT_MAX: Duration = Duration::from_secs(25);

/// The node a request from its agent is for (`/node/<mac>/...`): taken
/// only with the node's own token (`Authorization: Bearer`) from the node's
/// own address ([`with_token`]).
pub struct AgentNode(Node);

impl axum::extract::FromRequestParts<Arc<HttpContext>> for AgentNode {
    type Rejection = HttpError;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        ctx: &Arc<HttpContext>,
    ) -> Result<AgentNode, HttpError> {
        let Path(params) = Path::<HashMap<String, String>>::from_request_parts(parts, ctx)
            .await
            .map_err(|e| HttpError::bad_request(e.body_text()))?;
        let mac = parse_mac(params.get("mac").map_or("", String::as_str))?;
        let Peer(peer) = Peer::of(&parts.extensions);
        let token = parts
            .headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "));
        with_token(ctx, mac, token, peer).await.map(AgentNode)
    }
}

/// The record of `mac` if `token` is its node token, that of its current
/// boot, and `peer` is the node's address: 404 for an unknown MAC, 403 from
/// another address, 401 without a token, 403 with another one (never
/// saying which). Refusals are counted in `/metrics`.
pub(super) async fn with_token(
    ctx: &HttpContext,
    mac: Mac,
    token: Option<&str>,
    peer: Option<Ipv4Addr>,
) -> Result<Node, HttpError> {
    match ctx.control.agent(mac, token, peer).await {
        Ok(node) => Ok(node),
        Err(AgentRefused::NoSuchNode(mac)) => {
            Err(HttpError::not_found(format!("no node with MAC {mac}")))
        }
        Err(AgentRefused::NotItsAddress(r)) => {
            ctx.metrics.boot_refused(match r {
                Refusal::NoAddress => BootRefusal::NoAddress,
                Refusal::OtherAddress { .. } => BootRefusal::OtherAddress,
            });
            tracing::info!(%mac, peer = ?peer, reason = %r.explain(mac, peer), "node token refused");
            Err(HttpError::new(StatusCode::FORBIDDEN, r.explain(mac, peer)))
        }
        Err(AgentRefused::NoToken) => {
            ctx.metrics.boot_refused(BootRefusal::BadToken);
            Err(HttpError::new(
                StatusCode::UNAUTHORIZED,
                "node token required (Authorization: Bearer <token>)",
            ))
        }
        Err(AgentRefused::WrongToken) => {
            ctx.metrics.boot_refused(BootRefusal::BadToken);
            Err(HttpError::new(
                StatusCode::FORBIDDEN,
                format!(
                    "this token is not {mac}'s (not that of its current boot: each boot script carries a new one, in force once the node fetches its kernel)"
                ),
            ))
        }
        Err(AgentRefused::Store(e)) => Err(e.into()),
    }
}

/// A document that did not go out, as HTTP says it: `what` names it.
pub(super) fn document_refused(
    ctx: &HttpContext,
    node: &Node,
    what: &Document,
    r: DocumentRefused,
) -> HttpError {
    match r {
        DocumentRefused::NotAssigned => {
            HttpError::not_found(format!("{what} is not assigned to {}", node.mac))
        }
        DocumentRefused::Render(e) => HttpError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            format!("{what} does not render for this node: {e}"),
        ),
        DocumentRefused::SecretServed => {
            ctx.metrics.secret_refused();
            HttpError::new(
                StatusCode::GONE,
                format!(
                    "{what} holds a secret and went to {} once in this boot already; it is served again only in the next boot (this refusal is on the node's timeline)",
                    node.mac
                ),
            )
        }
    }
}

fn text(body: String) -> impl IntoResponse {
    ([(header::CONTENT_TYPE, "text/plain; charset=utf-8")], body)
}

/// The node's config scripts, one name per line, in the order to run them.
pub async fn scripts(
    State(ctx): State<Arc<HttpContext>>,
    AgentNode(node): AgentNode,
) -> Result<impl IntoResponse, HttpError> {
    let names = ctx.control.config_pull(&node).await?;
    let mut body = names.join("\n");
    if !body.is_empty() {
        body.push('\n');
    }
    Ok(text(body))
}

/// One config script, rendered for the node.
pub async fn script(
    State(ctx): State<Arc<HttpContext>>,
    AgentNode(node): AgentNode,
    Path((_, name)): Path<(String, String)>,
    Peer(peer): Peer,
) -> Result<impl IntoResponse, HttpError> {
    match ctx.control.config_script(&node, &name, peer).await {
        Ok(body) => Ok(text(body)),
        Err(r) => Err(document_refused(
            &ctx,
            &node,
            &Document::ConfigScript { name },
            r,
        )),
    }
}

/// `key` of the query as a whole number, if given.
fn number(q: &HashMap<String, String>, key: &str) -> Result<Option<u64>, HttpError> {
    q.get(key)
        .map(|s| {
            s.parse::<u64>().map_err(|_| {
                HttpError::bad_request(format!("`{key}` must be a whole number, not `{s}`"))
            })
        })
        .transpose()
}

/// `state=booted|script|configured|failed`, with `script` and `status` for
/// script results (and `duration_ms`, `generation` when the agent says);
/// the body is the tail of the script's output. A script result is stored
/// durably (`GET /api/v1/nodes/<mac>/reports`) before the reply.
pub async fn report(
    State(ctx): State<Arc<HttpContext>>,
    AgentNode(node): AgentNode,
    Query(q): Query<HashMap<String, String>>,
    body: String,
) -> Result<impl IntoResponse, HttpError> {
    let state = q.get("state").ok_or_else(|| {
        HttpError::bad_request("missing `state` (booted, script, configured or failed)")
    })?;
    let script = q.get("script").filter(|s| !s.is_empty()).cloned();
    let status = match q.get("status") {
        Some(s) => Some(s.parse::<i32>().map_err(|_| {
            HttpError::bad_request(format!("`status` must be an exit status, not `{s}`"))
        })?),
        None => None,
    };
    let duration_ms = number(&q, "duration_ms")?;
    let generation = number(&q, "generation")?;
    let output = body.as_str();
    let report = match state.as_str() {
        "booted" => Report::Booted { output },
        "script" => Report::Script {
            status: status
                .ok_or_else(|| HttpError::bad_request("a script report needs `status`"))?,
            script: script
                .ok_or_else(|| HttpError::bad_request("a script report needs `script`"))?,
            duration_ms,
            generation,
            output,
        },
        "configured" => Report::Configured { output },
        "failed" => Report::Failed {
            script,
            status,
            output,
        },
        other => {
            return Err(HttpError::bad_request(format!(
                "unknown state `{other}` (booted, script, configured or failed)"
            )));
        }
    };
    ctx.control.reported(&node, report).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// The install-complete callback: `POST /node/<mac>/installed[?bootenv=NAME]`
/// with the node's token (`callback_url` carries `bootenv`, the installer
/// that finished). 204, or 409 when the node's current boot is not of that
/// installer, and nothing changes. What it changes is
/// [`crate::control::Control::install_complete`]'s.
pub async fn installed(
    State(ctx): State<Arc<HttpContext>>,
    AgentNode(node): AgentNode,
    Query(q): Query<HashMap<String, String>>,
    body: String,
) -> Result<impl IntoResponse, HttpError> {
    let installer = match q.get("bootenv") {
        Some(b) if is_bootenv_name(b) => Some(b.clone()),
        Some(b) => {
            return Err(HttpError::bad_request(format!(
                "`bootenv` must be a bootenv name, not `{b}`"
            )));
        }
        None => None,
    };
    match ctx.control.install_complete(&node, installer, &body).await {
        Ok(_) => Ok(StatusCode::NO_CONTENT),
        Err(InstallRefused::NotInstalling { installer, current }) => {
            ctx.metrics.boot_refused(BootRefusal::NotInstalling);
            Err(HttpError::new(
                StatusCode::CONFLICT,
                format!(
                    "{} is not installing `{installer}`: its current boot is bootenv `{current}`, and an install can complete only during the boot of an installer bootenv (`installer = true`); nothing was changed",
                    node.mac
                ),
            ))
        }
        Err(InstallRefused::Store(e)) => Err(e.into()),
    }
}

/// `GET /node/<mac>/wait[?generation=N][&timeout=S]`: the agent's wait for
/// a reconfigure, and its heartbeat. Without `generation` it answers at
/// once; with it, as soon as the node's config generation is not N, else
/// after `timeout` seconds (at most and by default [`WAIT_MAX`]). The body
/// is the current generation.
pub async fn wait(
    State(ctx): State<Arc<HttpContext>>,
    AgentNode(node): AgentNode,
    Query(q): Query<HashMap<String, String>>,
) -> Result<impl IntoResponse, HttpError> {
    let known = number(&q, "generation")?;
    let bound = number(&q, "timeout")?
        .map(Duration::from_secs)
        .unwrap_or(WAIT_MAX)
        .min(WAIT_MAX);
    let current = ctx.control.wait(&node, known, bound).await?;
    Ok(text(format!("{current}\n")))
}
