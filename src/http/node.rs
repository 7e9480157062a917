//! The endpoints the operational image calls: its script list, each script,
//! its reports, and its wait for a reconfigure (which is also its
//! heartbeat). Every request carries the node's own token, the one of its
//! current boot, and comes from the node's own address
//! ([`crate::control::bind`]).

use std::collections::HashMap;
use std::net::Ipv4Addr;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::IntoResponse;

use super::auth::constant_time_eq;
use super::{HttpContext, HttpError, Peer, parse_mac};
use crate::boot::bootenv::{LOCAL, is_bootenv_name};
use crate::boot::{Progress, TemplateContext, effective_bootenv, lifecycle};
use crate::control::bind::Refusal;
use crate::metrics::BootRefusal;
use crate::model::{
    BootArch, Document, EventData, EventKind, Mac, Node, NodeState, ScriptReport, Timestamp,
};

/// How much of a script's output is kept on the timeline and in its report.
const TAIL_BYTES: usize = 4096;

/// The longest a wait request is held: well under the agent's own timeout
/// and common proxy idle timeouts. Also the agent's heartbeat interval.
pub const WAIT_MAX: Duration = Duration::from_secs(25);

async fn authenticated(
    ctx: &HttpContext,
    mac: Mac,
    headers: &HeaderMap,
    peer: Option<Ipv4Addr>,
) -> Result<Node, HttpError> {
    let token = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    with_token(ctx, mac, token, peer).await
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
    let node = ctx
        .store
        .node(mac)
        .await?
        .ok_or_else(|| HttpError::not_found(format!("no node with MAC {mac}")))?;
    if let Err(r) = ctx.binding.check(&node, peer).await? {
        ctx.metrics.boot_refused(match r {
            Refusal::NoAddress => BootRefusal::NoAddress,
            Refusal::OtherAddress { .. } => BootRefusal::OtherAddress,
        });
        tracing::info!(%mac, peer = ?peer, reason = %r.explain(mac, peer), "node token refused");
        return Err(HttpError::new(StatusCode::FORBIDDEN, r.explain(mac, peer)));
    }
    let token = token.ok_or_else(|| {
        ctx.metrics.boot_refused(BootRefusal::BadToken);
        HttpError::new(
            StatusCode::UNAUTHORIZED,
            "node token required (Authorization: Bearer <token>)",
        )
    })?;
    if !constant_time_eq(token.trim().as_bytes(), node.token.as_bytes()) {
        ctx.metrics.boot_refused(BootRefusal::BadToken);
        return Err(HttpError::new(
            StatusCode::FORBIDDEN,
            format!(
                "this token is not {mac}'s (not that of its current boot: each boot script carries a new one, in force once the node fetches its kernel)"
            ),
        ));
    }
    Ok(node)
}

/// The bootenv the node booted: that of its current boot (a once-only
/// bootenv is already used up in the record by the time the node pulls its
/// config scripts), else, before its first boot through rackboot, the one
/// it boots now.
pub(super) fn booted_bootenv(node: &Node) -> String {
    node.booted_bootenv
        .clone()
        .unwrap_or_else(|| effective_bootenv(node, Timestamp::now()).bootenv)
}

/// The node's config scripts in order: those its bootenv lists, then those
/// whose selector header matches its labels ([`crate::boot::assign`]).
fn script_names(ctx: &HttpContext, node: &Node, bootenv: &str) -> Vec<String> {
    ctx.catalog
        .current()
        .scripts_for(node, bootenv)
        .into_iter()
        .map(|a| a.script)
        .collect()
}

/// The node's config scripts, one name per line, in the order to run them.
pub async fn scripts(
    State(ctx): State<Arc<HttpContext>>,
    Path(mac): Path<String>,
    Peer(peer): Peer,
    headers: HeaderMap,
) -> Result<impl IntoResponse, HttpError> {
    let node = authenticated(&ctx, parse_mac(&mac)?, &headers, peer).await?;
    let names = script_names(&ctx, &node, &booted_bootenv(&node));
    ctx.timeline
        .record(
            node.mac,
            EventData::ConfigPull {
                scripts: names.clone(),
            },
        )
        .await;
    ctx.timeline
        .progress(node.mac, Progress::ConfigPulled)
        .await?;
    let mut body = names.join("\n");
    if !body.is_empty() {
        body.push('\n');
    }
    Ok(([(header::CONTENT_TYPE, "text/plain; charset=utf-8")], body))
}

/// One config script, rendered for the node.
pub async fn script(
    State(ctx): State<Arc<HttpContext>>,
    Path((mac, name)): Path<(String, String)>,
    Peer(peer): Peer,
    headers: HeaderMap,
) -> Result<impl IntoResponse, HttpError> {
    let node = authenticated(&ctx, parse_mac(&mac)?, &headers, peer).await?;
    let bootenv = booted_bootenv(&node);
    if !script_names(&ctx, &node, &bootenv).contains(&name) {
        return Err(HttpError::not_found(format!(
            "script `{name}` is not assigned to {}",
            node.mac
        )));
    }
    let arch = node.arch.unwrap_or(BootArch::X86_64Efi);
    let catalog = ctx.catalog.current();
    let tctx = TemplateContext::new(&ctx.urls.http_base, &node, &bootenv, arch);
    let (text, secrets) =
        crate::secrets::reading(&ctx.secrets_dir, || catalog.render_script(&name, &tctx));
    let text = text.map_err(|e| HttpError::new(StatusCode::UNPROCESSABLE_ENTITY, e.to_string()))?;
    if !secrets.is_empty() {
        let document = Document::ConfigScript { name: name.clone() };
        once_per_boot(&ctx, &node, &document, peer).await?;
    }
    ctx.timeline
        .record(node.mac, EventData::ScriptFetch { script: name })
        .await;
    Ok(([(header::CONTENT_TYPE, "text/plain; charset=utf-8")], text))
}

/// A document holding a secret goes to a node once per boot (its current
/// token): the second request is refused with 410, on the node's timeline
/// and in `/metrics`, since either someone else has the token or the node
/// is confused, and an admin should look.
pub(super) async fn once_per_boot(
    ctx: &HttpContext,
    node: &Node,
    document: &Document,
    peer: Option<Ipv4Addr>,
) -> Result<(), HttpError> {
    if ctx
        .secrets_served
        .first_fetch(node.mac, &node.token, &document.to_string())
    {
        return Ok(());
    }
    let from = peer.map_or_else(|| "an unknown address".to_string(), |p| p.to_string());
    ctx.metrics.secret_refused();
    ctx.timeline
        .record(
            node.mac,
            EventData::SecretRefused {
                document: document.clone(),
                from: peer,
            },
        )
        .await;
    tracing::warn!(mac = %node.mac, %document, %from, "document holding a secret asked for twice in one boot: refused");
    Err(HttpError::new(
        StatusCode::GONE,
        format!(
            "{document} holds a secret and went to {} once in this boot already; it is served again only in the next boot (this refusal is on the node's timeline)",
            node.mac
        ),
    ))
}

/// `state=booted|script|configured|failed`, with `script` and `status` for
/// script results (and `duration_ms`, `generation` when the agent says);
/// the body is the tail of the script's output. A script result is stored
/// durably (`GET /api/v1/nodes/<mac>/reports`) before the reply.
pub async fn report(
    State(ctx): State<Arc<HttpContext>>,
    Path(mac): Path<String>,
    Query(q): Query<HashMap<String, String>>,
    Peer(peer): Peer,
    headers: HeaderMap,
    body: String,
) -> Result<impl IntoResponse, HttpError> {
    let node = authenticated(&ctx, parse_mac(&mac)?, &headers, peer).await?;
    let state = q.get("state").ok_or_else(|| {
        HttpError::bad_request("missing `state` (booted, script, configured or failed)")
    })?;
    let script = q.get("script").map(String::as_str).unwrap_or("");
    let status = match q.get("status") {
        Some(s) => Some(s.parse::<i32>().map_err(|_| {
            HttpError::bad_request(format!("`status` must be an exit status, not `{s}`"))
        })?),
        None => None,
    };
    let number = |key: &str| -> Result<Option<u64>, HttpError> {
        q.get(key)
            .map(|s| {
                s.parse::<u64>().map_err(|_| {
                    HttpError::bad_request(format!("`{key}` must be a whole number, not `{s}`"))
                })
            })
            .transpose()
    };
    let duration_ms = number("duration_ms")?;
    let generation = number("generation")?.unwrap_or(node.config_generation);
    let tail = tail(&body);
    let mac = node.mac;
    match state.as_str() {
        "booted" => {
            // Its kernel and initrds are in: the boot slot is free (if the
            // end of the last download was not seen, e.g. a proxy between).
            ctx.admission().release(mac);
            ctx.timeline
                .record(mac, EventData::ReportBooted { output: tail })
                .await;
            ctx.timeline.progress(mac, Progress::Booted).await?;
        }
        "script" => {
            let status =
                status.ok_or_else(|| HttpError::bad_request("a script report needs `status`"))?;
            if script.is_empty() {
                return Err(HttpError::bad_request("a script report needs `script`"));
            }
            // Durable before the agent hears 204: a report is never lost to a crash.
            let report = ScriptReport {
                at: Timestamp::now(),
                generation,
                script: script.to_string(),
                status,
                duration_ms,
                output: tail.clone(),
            };
            ctx.store.add_report(mac, &report).await?;
            ctx.timeline
                .record(
                    mac,
                    EventData::ReportScript {
                        script: script.to_string(),
                        status,
                        duration_ms,
                        output: tail,
                    },
                )
                .await;
        }
        "configured" => {
            ctx.timeline
                .record(mac, EventData::ReportConfigured { output: tail })
                .await;
            ctx.timeline.progress(mac, Progress::Configured).await?;
        }
        "failed" => {
            let script = (!script.is_empty()).then(|| script.to_string());
            let reason = EventData::failure_reason(script.as_deref(), status);
            ctx.timeline
                .record(
                    mac,
                    EventData::ReportFailed {
                        script,
                        status,
                        output: tail,
                    },
                )
                .await;
            ctx.timeline
                .progress(mac, Progress::Failed { reason })
                .await?;
        }
        other => {
            return Err(HttpError::bad_request(format!(
                "unknown state `{other}` (booted, script, configured or failed)"
            )));
        }
    }
    Ok(StatusCode::NO_CONTENT)
}

/// The install-complete callback: `POST /node/<mac>/installed[?bootenv=NAME]`
/// with the node's token. The node becomes `installed` and from now on
/// boots the installer's `after_install` bootenv (`local` unless its file
/// says otherwise), with no next-boot bootenv, so its next boot never loops
/// into the installer. `bootenv` names the installer that finished (the
/// `callback_url` template variable carries it); without it, the bootenv of
/// the node's last boot script is taken. Accepted only while the node's
/// current boot is of an installer bootenv (and, with `bootenv`, that one):
/// otherwise 409, and nothing changes. A protected node is changed too:
/// an installer boot on it was already allowed by an admin (forced), and
/// this completes it. The body, if any, is kept on the timeline (an
/// installer's log tail).
pub async fn installed(
    State(ctx): State<Arc<HttpContext>>,
    Path(mac): Path<String>,
    Query(q): Query<HashMap<String, String>>,
    Peer(peer): Peer,
    headers: HeaderMap,
    body: String,
) -> Result<impl IntoResponse, HttpError> {
    let node = authenticated(&ctx, parse_mac(&mac)?, &headers, peer).await?;
    let mac = node.mac;
    let current = booted_bootenv(&node);
    let installer = match q.get("bootenv") {
        Some(b) if is_bootenv_name(b) => b.clone(),
        Some(b) => {
            return Err(HttpError::bad_request(format!(
                "`bootenv` must be a bootenv name, not `{b}`"
            )));
        }
        None => current.clone(),
    };
    let booting_installer = ctx
        .catalog
        .current()
        .get(&current)
        .is_some_and(|b| b.installer);
    if !booting_installer || installer != current {
        ctx.metrics.boot_refused(BootRefusal::NotInstalling);
        return Err(HttpError::new(
            StatusCode::CONFLICT,
            format!(
                "{mac} is not installing `{installer}`: its current boot is bootenv `{current}`, and an install can complete only during the boot of an installer bootenv (`installer = true`); nothing was changed"
            ),
        ));
    }
    // A bootenv removed since the install began still must not loop: local.
    let after = ctx
        .catalog
        .current()
        .get(&installer)
        .map_or_else(|| LOCAL.to_string(), |b| b.after_install.clone());
    ctx.timeline
        .record(
            mac,
            EventData::ReportInstalled {
                bootenv: installer.clone(),
                output: tail(&body),
            },
        )
        .await;
    let change = lifecycle::install_complete(&installer, &after);
    ctx.timeline
        .complete_install(mac, change, format!("bootenv {installer}"))
        .await?;
    tracing::info!(%mac, installer, after, "install complete");
    Ok(StatusCode::NO_CONTENT)
}

/// `GET /node/<mac>/wait[?generation=N][&timeout=S]`: the agent's wait for
/// a reconfigure, and its heartbeat (it refreshes last-seen; no timeline
/// event). Without `generation` it answers at once; with it, as soon as the
/// node's config generation is not N, else after `timeout` seconds (at most
/// and by default [`WAIT_MAX`]). The body is the current generation. A
/// node that was `unreachable` and is heard from again gets back the state
/// its last run left.
pub async fn wait(
    State(ctx): State<Arc<HttpContext>>,
    Path(mac): Path<String>,
    Query(q): Query<HashMap<String, String>>,
    Peer(peer): Peer,
    headers: HeaderMap,
) -> Result<impl IntoResponse, HttpError> {
    let node = authenticated(&ctx, parse_mac(&mac)?, &headers, peer).await?;
    let mac = node.mac;
    let number = |key: &str| -> Result<Option<u64>, HttpError> {
        q.get(key)
            .map(|s| {
                s.parse::<u64>().map_err(|_| {
                    HttpError::bad_request(format!("`{key}` must be a whole number, not `{s}`"))
                })
            })
            .transpose()
    };
    let known = number("generation")?;
    let bound = number("timeout")?
        .map(Duration::from_secs)
        .unwrap_or(WAIT_MAX)
        .min(WAIT_MAX);
    ctx.store.touch_node(mac, None, Timestamp::now()).await?;
    if node.state == NodeState::Unreachable {
        resume(&ctx, &node).await?;
    }
    // Subscribed before the generation is read: a bump in between still wakes us.
    let mut bumped = ctx.config_waits.subscribe();
    let deadline = tokio::time::Instant::now() + bound;
    let current = loop {
        let current = ctx
            .store
            .node(mac)
            .await?
            .ok_or_else(|| HttpError::not_found(format!("no node with MAC {mac}")))?
            .config_generation;
        if known != Some(current) {
            break current;
        }
        tokio::select! {
            changed = bumped.changed() => if changed.is_err() { break current },
            _ = tokio::time::sleep_until(deadline) => break current,
            _ = ctx.config_waits.closing().cancelled() => break current,
        }
    };
    Ok((
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        format!("{current}\n"),
    ))
}

/// An `unreachable` node heard from again: back to what its agent last
/// reported (`configured`, or `failed` with that run's reason).
async fn resume(ctx: &HttpContext, node: &Node) -> Result<(), HttpError> {
    let events = ctx.store.events(node.mac).await?;
    let last = events.iter().rev().find_map(|e| match &e.data {
        EventData::ReportConfigured { .. } => Some((
            NodeState::Configured,
            "heartbeats resumed; its last run succeeded".to_string(),
        )),
        EventData::ReportFailed { script, status, .. } => Some((
            NodeState::Failed,
            EventData::failure_reason(script.as_deref(), *status),
        )),
        // Reported before events had data: which, but not why.
        EventData::Note { of, .. } if *of == EventKind::ReportConfigured => Some((
            NodeState::Configured,
            "heartbeats resumed; its last run succeeded".to_string(),
        )),
        EventData::Note { of, .. } if *of == EventKind::ReportFailed => Some((
            NodeState::Failed,
            "heartbeats resumed; its last run failed".to_string(),
        )),
        _ => None,
    });
    let Some((state, reason)) = last else {
        return Ok(());
    };
    ctx.timeline
        .set_state_if(node.mac, state, reason, |n| {
            n.state == NodeState::Unreachable
        })
        .await?;
    Ok(())
}

/// The last [`TAIL_BYTES`] of `s`, cut at a character boundary.
fn tail(s: &str) -> String {
    let mut start = s.len().saturating_sub(TAIL_BYTES);
    while !s.is_char_boundary(start) {
        start += 1;
    }
    s[start..].trim_end().to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tail_keeps_the_end_on_a_char_boundary() {
        let s = format!("{}é{}", "a".repeat(10), "b".repeat(TAIL_BYTES - 1));
        let t = tail(&s);
        assert!(t.len() <= TAIL_BYTES);
        assert!(t.ends_with('b'));
        assert_eq!(tail("short\n"), "short");
    }
}
