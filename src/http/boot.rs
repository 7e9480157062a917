//! `/boot/<mac>.ipxe` and `/assets/...`: what iPXE fetches, and the boot
//! slots ([`crate::boot::admission`]) taken by the one and freed by the other.
//! A boot script, and the node token in it, go only to the node's own
//! address ([`crate::control::bind`]); where that binding is turned off,
//! whether a MAC may have a boot script at all is the appliance's one
//! admission decision ([`crate::control::admit`]), as for DHCP.

use std::net::Ipv4Addr;
use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Path, Query, Request, State};
use axum::http::{Method, StatusCode, header};
use axum::response::{IntoResponse, Response};

use super::script_cache::{PendingBoot, TOKEN_PLACEHOLDER};
use super::sendfile::{CanSendfile, FileRange};
use super::stream::OnEnd;
use super::{HttpContext, HttpError, Peer, parse_mac};
use crate::assets::resolve as assets;
use crate::boot::{
    AssetRole, Choice, Progress, RenderedScript, Verdict, WaitReason, effective_bootenv, lifecycle,
    render_ipxe, render_wait,
};
use crate::control::admit::{Admitted, Place, Via};
use crate::control::bind::Refusal;
use crate::http::node::booted_bootenv;
use crate::metrics::BootRefusal;
use crate::model::{BootArch, EventData, Mac, Node, Timestamp};
use crate::routes;

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
/// another DHCP server), for the node's own address only
/// ([`crate::control::bind`]): from any other address it is a 403, counted
/// in `/metrics` and nothing else (no record made, no event).
///
/// Each script carries a new node token. Fetching it changes nothing: the
/// boot it describes starts when the node fetches its kernel ([`asset`]),
/// and only then does the token become the node's, a once-only bootenv get
/// used up, the state move to `booting` and the events get written. A
/// local-boot script has no token and no kernel: it takes effect when it
/// is fetched. Rendered once per change of what it depends on
/// ([`super::ScriptCache`]). When the node's subnet has as many nodes
/// fetching kernels as `[admission]` allows, the node is handed a script
/// that waits and asks again instead (its boot slot is taken here: the
/// node's own address asked, and its kernel fetch is next).
pub async fn script(
    State(ctx): State<Arc<HttpContext>>,
    Path(file): Path<String>,
    Query(q): Query<ScriptQuery>,
    Peer(peer): Peer,
) -> Result<Response, HttpError> {
    let mac = routes::script_file_mac(&file)
        .ok_or_else(|| HttpError::not_found("boot scripts are named <mac>.ipxe"))?;
    let mac = parse_mac(mac)?;
    let asked_arch = q
        .arch
        .as_deref()
        .map(str::parse::<BootArch>)
        .transpose()
        .map_err(HttpError::bad_request)?;
    let now = Timestamp::now();
    let node = if ctx.binding.enforced() {
        // No record is made here: an unknown MAC has no address to bind a
        // script to (its first DHCP packet makes its record).
        let Some(node) = ctx.store.node(mac).await? else {
            return Err(refuse_script(&ctx, mac, peer, Refusal::NoAddress));
        };
        if let Err(r) = ctx.binding.check(&node, peer).await? {
            return Err(refuse_script(&ctx, mac, peer, r));
        }
        node
    } else {
        match ctx
            .door
            .admit(mac, Place::Peer(peer), Via::BootScript { from: peer }, now)
            .await?
        {
            Admitted::Known(node) | Admitted::New(node) => node,
            Admitted::Refused { place } => {
                return Err(HttpError::new(
                    StatusCode::FORBIDDEN,
                    format!(
                        "{mac} is not a known node, and unknown clients are ignored here ({place}); an admin adds it (POST {})",
                        routes::api_path(routes::api::NODES)
                    ),
                ));
            }
        }
    };
    let arch = match asked_arch {
        Some(a) => a,
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
    // Rendered (and kept) with a stand-in for the token: each script handed
    // out gets its own.
    let mut template_node = node.clone();
    template_node.token = TOKEN_PLACEHOLDER.to_string();
    let rendered = ctx
        .scripts
        .get_or_render(&template_node, &effective.bootenv, arch, generation, || {
            render_ipxe(
                &catalog,
                &template_node,
                &effective.bootenv,
                arch,
                &ctx.urls.http_base,
            )
        })
        .map_err(|e| HttpError::new(StatusCode::UNPROCESSABLE_ENTITY, e.to_string()))?;
    // Last seen in memory (the file only once a minute): lazy, no commit.
    ctx.store.touch_node(mac, Some(arch), now).await?;
    if rendered.kernel.is_none() {
        // To the local disk: no token, no kernel to wait for. The boot it
        // describes starts now (written only when the record does not say
        // so already: a node booting from its disk does so again and again).
        ctx.scripts.handed(mac, rendered.clone());
        if node.booted_bootenv.as_deref() != Some(rendered.bootenv.as_str()) {
            let booted = rendered.bootenv.clone();
            ctx.store
                .update_node(
                    mac,
                    Box::new(move |n| {
                        n.booted_bootenv = Some(booted);
                        Ok(())
                    }),
                )
                .await?;
        }
        ctx.timeline
            .record(
                mac,
                EventData::HttpScript {
                    bootenv: rendered.bootenv.clone(),
                    arch,
                    choice: effective.choice,
                },
            )
            .await;
        if effective.choice == Choice::Once {
            let used = rendered.bootenv.clone();
            ctx.timeline
                .change_bootenv(mac, move |n| lifecycle::after_render(n, &used, now))
                .await?;
        }
        ctx.timeline.progress(mac, Progress::LocalRendered).await?;
        return Ok(ipxe_text(rendered.text.clone()));
    }
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
        let again = routes::boot_script(&ctx.urls.http_base, &mac, q.arch.as_deref());
        let why = WaitReason {
            booting,
            limit,
            attempt,
            delay_secs,
        };
        return Ok(ipxe_text(render_wait(mac, &again, why)));
    }
    let token = crate::nodes::new_token();
    let script = Arc::new(RenderedScript {
        text: rendered.text.replace(TOKEN_PLACEHOLDER, &token),
        ..(*rendered).clone()
    });
    let progress = if catalog.get(&script.bootenv).is_some_and(|b| b.installer) {
        Progress::InstallerRendered
    } else {
        Progress::ScriptRendered
    };
    ctx.scripts.pending(
        mac,
        PendingBoot {
            token,
            script: script.clone(),
            arch,
            choice: effective.choice,
            progress,
        },
    );
    Ok(ipxe_text(script.text.clone()))
}

/// The 403 for a boot script asked for from an address that is not its
/// node's: one reason whether or not the MAC is known (no list of nodes for
/// whoever probes), the whole story in the log.
fn refuse_script(ctx: &HttpContext, mac: Mac, peer: Option<Ipv4Addr>, r: Refusal) -> HttpError {
    ctx.metrics.boot_refused(match r {
        Refusal::NoAddress => BootRefusal::NoAddress,
        Refusal::OtherAddress { .. } => BootRefusal::OtherAddress,
    });
    tracing::info!(%mac, peer = ?peer, reason = %r.explain(mac, peer), "boot script refused");
    let from = peer.map_or_else(|| "an unknown address".to_string(), |p| p.to_string());
    HttpError::new(
        StatusCode::FORBIDDEN,
        format!(
            "the boot script of {mac} goes only to the address rackboot knows for that machine (its lease from rackboot's DHCP, its fixed address, or the address it used in proxyDHCP), and {from} is not it"
        ),
    )
}

/// The node's boot starts: the kernel of the script it was handed is
/// being fetched from its own address. The script's token becomes the
/// node's (the one before dies; durable, so a restart keeps it) and its
/// bootenv the one the record says the node booted, in one edit; a
/// once-only bootenv is used up, the state moves on and the timeline says
/// what was rendered. Returns the record with its boot started.
async fn start_boot(
    ctx: &HttpContext,
    mac: Mac,
    boot: PendingBoot,
    now: Timestamp,
) -> Result<Node, HttpError> {
    let token = boot.token.clone();
    let booted = boot.script.bootenv.clone();
    let mut node = ctx
        .store
        .update_node(
            mac,
            Box::new(move |n| {
                n.token = token;
                n.booted_bootenv = Some(booted);
                Ok(())
            }),
        )
        .await?
        .after;
    ctx.scripts.handed(mac, boot.script.clone());
    ctx.timeline
        .record(
            mac,
            EventData::HttpScript {
                bootenv: boot.script.bootenv.clone(),
                arch: boot.arch,
                choice: boot.choice,
            },
        )
        .await;
    if boot.choice == Choice::Once {
        let used = boot.script.bootenv.clone();
        if let Some(after) = ctx
            .timeline
            .change_bootenv(mac, move |n| lifecycle::after_render(n, &used, now))
            .await?
        {
            node = after;
        }
    }
    ctx.timeline.progress(mac, boot.progress).await?;
    Ok(node)
}

fn ipxe_text(text: String) -> Response {
    ([(header::CONTENT_TYPE, "text/plain; charset=utf-8")], text).into_response()
}

/// Kernels, initrds and loaders, with Content-Length, Last-Modified, HEAD
/// and a single Range (416 for a range past the end): regular files
/// beneath the assets directory reached through no symbolic link, sent from
/// the descriptor that check opened ([`super::file`]). A GET that names its
/// node (`?mac=`) from the node's own address starts the boot of the script
/// it was handed when it is that script's kernel ([`start_boot`]), and goes
/// on the node's timeline as kernel, initrd or other asset; once the last
/// asset of the node's script has gone out in full, its boot slot is free
/// for the next node. From any other address the file is served (assets
/// are not secret) and nothing else happens.
pub async fn asset(
    State(ctx): State<Arc<HttpContext>>,
    Path(path): Path<String>,
    Query(q): Query<AssetQuery>,
    Peer(peer): Peer,
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
    let opened = assets::resolve(&ctx.assets_dir, &path).map_err(|r| match r {
        assets::Refusal::OutsideRoot => HttpError::new(
            StatusCode::FORBIDDEN,
            format!(
                "asset `{path}` is outside the assets directory or reached through a symbolic link; rackboot serves regular files beneath it only"
            ),
        ),
        assets::Refusal::NotFound => HttpError::not_found(format!("no asset `{path}`")),
    })?;
    let mut finishes_boot = None;
    if req.method() == Method::GET
        && let Some(mac) = &q.mac
    {
        let mac = parse_mac(mac)?;
        let node = match ctx.store.node(mac).await? {
            Some(n) => match ctx.binding.check(&n, peer).await? {
                Ok(()) => Some(n),
                Err(r) => {
                    tracing::debug!(%mac, %path, reason = %r.explain(mac, peer), "asset fetch names a node it is not: served, not recorded");
                    None
                }
            },
            None => None,
        };
        if let Some(mut node) = node {
            if let Some(boot) = ctx.scripts.take_pending(mac, &path) {
                node = start_boot(&ctx, mac, boot, Timestamp::now()).await?;
            }
            let handed = ctx.scripts.last_handed(mac);
            let role = asset_role(&ctx, &node, &booted_bootenv(&node), &path);
            let range = req.headers().get(header::RANGE);
            if range.is_none()
                && handed.is_some_and(|s| s.last_fetch.as_deref() == Some(path.as_str()))
            {
                finishes_boot = Some(mac);
            }
            let range = range.and_then(|v| v.to_str().ok()).map(str::to_string);
            let path = path.clone();
            let fetched = match role {
                Some(AssetRole::Kernel) => EventData::HttpKernel { path, range },
                Some(AssetRole::Initrd) => EventData::HttpInitrd { path, range },
                _ => EventData::HttpAsset { path, range },
            };
            ctx.timeline.record(mac, fetched).await;
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

/// What `path` is to `node` booting `bootenv` (that of its current boot: a
/// once-only bootenv is no longer in the record's bootenv fields by the
/// time the kernel is fetched), for its timeline.
fn asset_role(ctx: &HttpContext, node: &Node, bootenv: &str, path: &str) -> Option<AssetRole> {
    node.arch
        .and_then(|a| Some(ctx.catalog.current().get(bootenv)?.role_of(a, path)))
}
