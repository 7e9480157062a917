//! `/boot/<mac>.ipxe` and `/assets/...`: what iPXE fetches, and the boot
//! slots ([`crate::boot::admission`]) taken by the one and freed by the other.
//! Whether a MAC may have a boot script at all is the appliance's one
//! admission decision ([`crate::control::admit`]), as for DHCP.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;

use axum::body::Body;
use axum::extract::{ConnectInfo, Path, Query, Request, State};
use axum::http::{Method, StatusCode, header};
use axum::response::{IntoResponse, Response};

use super::sendfile::{CanSendfile, FileRange};
use super::stream::OnEnd;
use super::{HttpContext, HttpError, parse_mac};
use crate::boot::{
    AssetRole, Choice, Progress, Verdict, WaitReason, effective_bootenv, lifecycle, render_ipxe,
    render_wait,
};
use crate::control::admit::{Admitted, Place, Via};
use crate::model::{BootArch, EventKind, Timestamp};
use crate::tftp::Refusal;

/// `/boot/<mac>.ipxe?arch=`: other parameters are ignored.
#[derive(serde::Deserialize)]
pub struct ScriptQuery {
    arch: Option<String>,
}

/// `/assets/<path>?mac=`: other parameters are ignored.
#[derive(serde::Deserialize)]
pub struct AssetQuery {
    mac: Option<String>,
}

/// The node's iPXE script, rendered for its architecture (the one its
/// firmware announced over DHCP, or `?arch=` for clients that came through
/// another DHCP server). Rendered once per change of what it depends on
/// ([`super::ScriptCache`]). When the node's subnet has as many nodes
/// fetching kernels as `[admission]` allows, the node is handed a script
/// that waits and asks again instead, and nothing else happens: no event,
/// no state change, no once-only bootenv used up.
pub async fn script(
    State(ctx): State<Arc<HttpContext>>,
    Path(file): Path<String>,
    Query(q): Query<ScriptQuery>,
    req: Request,
) -> Result<Response, HttpError> {
    let mac = file
        .strip_suffix(".ipxe")
        .ok_or_else(|| HttpError::not_found("boot scripts are named <mac>.ipxe"))?;
    let mac = parse_mac(mac)?;
    let now = Timestamp::now();
    let peer = peer_ipv4(&req);
    let node = match ctx
        .door
        .admit(mac, Place::Peer(peer), Via::BootScript { from: peer }, now)
        .await?
    {
        Admitted::Known(node) | Admitted::New(node) => node,
        Admitted::Refused { place } => {
            return Err(HttpError::new(
                StatusCode::FORBIDDEN,
                format!(
                    "{mac} is not a known node, and unknown clients are ignored here ({place}); an admin adds it (POST /api/v1/nodes)"
                ),
            ));
        }
    };
    let arch = match &q.arch {
        Some(a) => a.parse::<BootArch>().map_err(HttpError::bad_request)?,
        None => node.arch.ok_or_else(|| {
            HttpError::new(
                StatusCode::CONFLICT,
                format!("the architecture of {mac} is unknown: it has not booted through rackboot's DHCP; add ?arch=bios|x86_64_efi|arm64_efi"),
            )
        })?,
    };
    // A lease that ran out reverts before anything is rendered, so this boot
    // and the record agree even if the sweep has not come by yet. (Checked
    // on the copy first: most boots have no lease, and the edit costs.)
    let node = if lifecycle::expire_lease(&node, now).is_some() {
        ctx.timeline
            .change_bootenv(mac, move |n| lifecycle::expire_lease(n, now))
            .await?
            .unwrap_or(node)
    } else {
        node
    };
    let effective = effective_bootenv(&node, now);
    let (catalog, generation) = ctx.catalog.snapshot();
    let rendered = ctx
        .scripts
        .get_or_render(&node, &effective.bootenv, arch, generation, || {
            render_ipxe(
                &catalog,
                &node,
                &effective.bootenv,
                arch,
                &ctx.urls.http_base,
            )
        })
        .map_err(|e| HttpError::new(StatusCode::UNPROCESSABLE_ENTITY, e.to_string()))?;
    // Last seen in memory (the file only once a minute): lazy, no commit.
    ctx.store.touch_node(mac, Some(arch), now).await?;
    if rendered.kernel.is_some() {
        let verdict = ctx.admission().admit(mac, peer, now);
        if let Verdict::Wait {
            attempt,
            delay_secs,
            booting,
            limit,
            ahead,
        } = verdict
        {
            let pool = ctx.admission().limits().pool_of(peer);
            let subnet = ctx.admission().limits().pool_name(pool);
            ctx.metrics.boot_waited(&subnet);
            tracing::debug!(%mac, subnet, attempt, delay_secs, ahead, "boot slots full: told to wait");
            let again = match &q.arch {
                Some(a) => format!("{}/boot/{mac}.ipxe?arch={a}", ctx.urls.http_base),
                None => format!("{}/boot/{mac}.ipxe", ctx.urls.http_base),
            };
            let why = WaitReason {
                booting,
                limit,
                attempt,
                delay_secs,
            };
            return Ok(ipxe_text(render_wait(mac, &again, why)));
        }
    }
    ctx.scripts.handed(mac, rendered.clone());
    ctx.timeline
        .record(
            mac,
            EventKind::HttpScript,
            lifecycle::script_detail(&rendered.bootenv, arch, effective.choice),
        )
        .await;
    if effective.choice == Choice::Once {
        let used = rendered.bootenv.clone();
        ctx.timeline
            .change_bootenv(mac, move |n| lifecycle::after_render(n, &used, now))
            .await?;
    }
    let progress = if rendered.kernel.is_none() {
        Progress::LocalRendered
    } else if catalog.get(&rendered.bootenv).is_some_and(|b| b.installer) {
        Progress::InstallerRendered
    } else {
        Progress::ScriptRendered
    };
    // A repeated fetch changes no state: this reads memory and writes nothing.
    ctx.timeline.progress(mac, progress).await?;
    Ok(ipxe_text(rendered.text.clone()))
}

fn ipxe_text(text: String) -> Response {
    ([(header::CONTENT_TYPE, "text/plain; charset=utf-8")], text).into_response()
}

/// The client's IPv4 address (IPv4-mapped IPv6 included), when known: it
/// picks the subnet whose boot slots the node takes.
fn peer_ipv4(req: &Request) -> Option<Ipv4Addr> {
    let ConnectInfo(addr) = req.extensions().get::<ConnectInfo<SocketAddr>>()?;
    match addr.ip() {
        IpAddr::V4(ip) => Some(ip),
        IpAddr::V6(ip) => ip.to_ipv4_mapped(),
    }
}

/// Kernels, initrds and loaders, with Content-Length, Last-Modified, HEAD
/// and a single Range (416 for a range past the end): regular files
/// beneath the assets directory reached through no symbolic link, sent from
/// the descriptor that check opened ([`super::file`]). A GET that names its node
/// (`?mac=`) goes on that node's timeline as kernel, initrd or other asset;
/// once the last asset of the node's script has gone out in full, its boot
/// slot is free for the next node.
pub async fn asset(
    State(ctx): State<Arc<HttpContext>>,
    Path(path): Path<String>,
    Query(q): Query<AssetQuery>,
    req: Request,
) -> Result<Response, HttpError> {
    // A bootenv's `{ url, sha256 }`: fetched here on first use, then served
    // from the store like any other asset.
    if let Some(remote) = ctx.catalog.current().remote(&path) {
        ctx.fetcher
            .ensure(remote)
            .await
            .map_err(|e| fetch_error(&path, &e))?;
    }
    // Opened here, beneath the assets directory and through no symbolic
    // link; the response is sent from this descriptor.
    let opened = crate::tftp::resolve_asset(&ctx.assets_dir, &path).map_err(|r| match r {
        Refusal::OutsideRoot => HttpError::new(
            StatusCode::FORBIDDEN,
            format!(
                "asset `{path}` is outside the assets directory or reached through a symbolic link; rackboot serves regular files beneath it only"
            ),
        ),
        Refusal::NotFound => HttpError::not_found(format!("no asset `{path}`")),
    })?;
    let mut finishes_boot = None;
    if req.method() == Method::GET
        && let Some(mac) = &q.mac
    {
        let mac = parse_mac(mac)?;
        if let Some(node) = ctx.store.node(mac).await? {
            let handed = ctx.scripts.last_handed(mac);
            let bootenv = match &handed {
                Some(s) => s.bootenv.clone(),
                None => {
                    // Only after a restart: the timeline says (and
                    // reading it makes the store commit what is pending).
                    let events = ctx.store.events(mac).await?;
                    lifecycle::rendered_bootenv(&events)
                        .map(str::to_string)
                        .unwrap_or_else(|| effective_bootenv(&node, Timestamp::now()).bootenv)
                }
            };
            let kind = asset_role(&ctx, &node, &bootenv, &path);
            let range = req.headers().get(header::RANGE);
            if range.is_none()
                && handed.is_some_and(|s| s.last_fetch.as_deref() == Some(path.as_str()))
            {
                finishes_boot = Some(mac);
            }
            let range = range
                .and_then(|v| v.to_str().ok())
                .map(|r| format!(", {r}"))
                .unwrap_or_default();
            ctx.timeline
                .record(mac, kind, format!("{path}{range}"))
                .await;
        }
    }
    // On rackboot's own boot-path connections the body goes out by
    // sendfile(2) ([`FileRange`]).
    let sendfile = req.extensions().get::<CanSendfile>().is_some();
    let mut resp = super::file::respond(
        opened.file,
        &opened.meta,
        &path,
        req.method(),
        req.headers(),
        sendfile,
    );
    let slot_free = finishes_boot
        .filter(|_| resp.status() == StatusCode::OK)
        .map(|mac| {
            let ctx = ctx.clone();
            move || {
                if ctx.admission().release(mac) {
                    tracing::debug!(%mac, "last boot asset sent: boot slot free");
                }
            }
        });
    if let Some(range) = resp.extensions_mut().remove::<FileRange>() {
        let range = match slot_free {
            Some(f) => range.on_end(f),
            None => range,
        };
        resp.extensions_mut().insert(range);
        return Ok(resp);
    }
    Ok(match slot_free {
        Some(f) => {
            let length = resp
                .headers()
                .get(header::CONTENT_LENGTH)
                .and_then(|v| v.to_str().ok()?.parse().ok());
            resp.map(move |body| Body::new(OnEnd::new(body, length, f)))
        }
        None => resp,
    })
}

/// 502 when the mirror failed (unreachable, error status, wrong digest),
/// saying which URL and why; 503 when rackboot could not store it (the
/// cause, with its local path, goes to the log only). Either way nothing
/// was kept and the next request tries again.
fn fetch_error(path: &str, e: &crate::assets::remote::FetchFailure) -> HttpError {
    if e.is_local() {
        HttpError {
            status: StatusCode::SERVICE_UNAVAILABLE,
            public: format!(
                "remote asset `{path}` could not be stored; see the rackboot log, the next request tries again"
            ),
            internal: Some(e.to_string()),
        }
    } else {
        HttpError::new(
            StatusCode::BAD_GATEWAY,
            format!(
                "remote asset `{path}` could not be fetched: {e}; nothing was kept, the next request tries again"
            ),
        )
    }
}

/// The timeline entry for a fetch of `path` by `node` booting `bootenv`
/// (that of the last script it was handed: a once-only bootenv is no
/// longer in the record by the time the kernel is fetched).
fn asset_role(
    ctx: &HttpContext,
    node: &crate::model::Node,
    bootenv: &str,
    path: &str,
) -> EventKind {
    let role = node
        .arch
        .and_then(|a| Some(ctx.catalog.current().get(bootenv)?.role_of(a, path)));
    match role {
        Some(AssetRole::Kernel) => EventKind::HttpKernel,
        Some(AssetRole::Initrd) => EventKind::HttpInitrd,
        _ => EventKind::HttpAsset,
    }
}
