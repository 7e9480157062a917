//! `/boot/<mac>.ipxe` and `/assets/...`: what iPXE fetches. Parses the
//! request, asks [`crate::control::boot`] what it means to the node, and
//! sends the script or the file (a small asset's bytes as
//! [`crate::assets::cache`] keeps them, a larger one's from the descriptor
//! [`crate::assets::resolve`] opened).

use std::borrow::Cow;
use std::net::Ipv4Addr;
use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Path, Request, State};
use axum::http::{Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};

use super::sendfile::{CanSendfile, FileRange};
use super::stream::OnEnd;
use super::{HttpContext, HttpError, Peer, parse_mac};
use crate::assets::resolve as assets;
use crate::control::bind::Refusal;
use crate::control::boot::{Script, ScriptAsk, ScriptRefused};
use crate::metrics::BootRefusal;
use crate::model::{BootArch, Mac, Timestamp};
use crate::routes;

/// The first value of `key` in `uri`'s query (`/boot/<mac>.ipxe?arch=`,
/// `/assets/<path>?mac=`); other parameters are ignored. Read by hand: on
/// the boot path's hottest requests a deserializer cost more than all the
/// rest of the request's parsing.
fn query_value<'u>(uri: &'u Uri, key: &str) -> Option<Cow<'u, str>> {
    url::form_urlencoded::parse(uri.query()?.as_bytes())
        .find(|(k, _)| k == key)
        .map(|(_, v)| v)
}

/// The node's iPXE script (`?arch=` for clients that came through another
/// DHCP server), for the node's own address only: from any other address a
/// 403, counted in `/metrics` and nothing else. What fetching it does, and
/// does not do, is [`crate::control::boot`]'s.
pub async fn script(
    State(ctx): State<Arc<HttpContext>>,
    Path(file): Path<String>,
    uri: Uri,
    Peer(peer): Peer,
) -> Result<Response, HttpError> {
    let arch_text = query_value(&uri, "arch");
    let mac = routes::script_file_mac(&file)
        .ok_or_else(|| HttpError::not_found("boot scripts are named <mac>.ipxe"))?;
    let mac = parse_mac(mac)?;
    let arch = arch_text
        .as_deref()
        .map(str::parse::<BootArch>)
        .transpose()
        .map_err(HttpError::bad_request)?;
    let ask = ScriptAsk {
        mac,
        arch,
        arch_text: arch_text.as_deref(),
        peer,
        via: crate::boot::Loader::Ipxe,
    };
    match ctx.control.script_fetched(ask, Timestamp::now()).await {
        Ok(Script::Boot(text)) => Ok(ipxe_text(text)),
        Ok(Script::Wait { text, subnet }) => {
            ctx.metrics.boot_waited(&subnet);
            Ok(ipxe_text(text))
        }
        Err(ScriptRefused::NotItsAddress(r)) => Err(refuse_script(&ctx, mac, peer, r)),
        Err(ScriptRefused::Unknown { place }) => Err(HttpError::new(
            StatusCode::FORBIDDEN,
            format!(
                "{mac} is not a known node, and unknown clients are ignored here ({place}); an admin adds it (POST {})",
                routes::api_path(routes::api::NODES)
            ),
        )),
        Err(ScriptRefused::ArchUnknown) => Err(HttpError::new(
            StatusCode::CONFLICT,
            format!(
                "the architecture of {mac} is unknown: it has not booted through rackboot's DHCP; add ?arch=bios|x86_64_efi|arm64_efi"
            ),
        )),
        Err(ScriptRefused::Render(e)) => Err(HttpError::new(StatusCode::UNPROCESSABLE_ENTITY, e)),
        Err(ScriptRefused::Store(e)) => Err(e.into()),
    }
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

fn ipxe_text(text: String) -> Response {
    ([(header::CONTENT_TYPE, "text/plain; charset=utf-8")], text).into_response()
}

/// Kernels, initrds and loaders, with Content-Length, Last-Modified, HEAD
/// and a single Range (416 for a range past the end): regular files
/// beneath the assets directory reached through no symbolic link, sent from
/// the descriptor that check opened ([`super::file`]). A GET that names its
/// node (`?mac=`) is told to [`crate::control::Control::asset_fetched`]
/// (from the node's own address it may start the node's boot); once the
/// last asset of the node's script has gone out in full, its boot slot is
/// free for the next node.
pub async fn asset(
    State(ctx): State<Arc<HttpContext>>,
    Path(path): Path<String>,
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
    // Opened beneath the assets directory and through no symbolic link; the
    // response is sent from these bytes or this descriptor.
    let asset = ctx.asset_files.open(&path).map_err(|r| match r {
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
        && let Some(mac) = query_value(req.uri(), "mac")
    {
        let mac = parse_mac(&mac)?;
        let ranged = req
            .headers()
            .get(header::RANGE)
            .map(|v| v.to_str().unwrap_or("?").to_string());
        let fetch = ctx
            .control
            .asset_fetched(mac, &path, peer, ranged, Timestamp::now())
            .await?;
        if fetch.last_of_boot {
            finishes_boot = Some(mac);
        }
    }
    // On rackboot's own boot-path connections the body goes out by
    // sendfile(2) ([`FileRange`]).
    let sendfile = req.extensions().get::<CanSendfile>().is_some();
    let mut resp = super::file::respond(asset, &path, req.method(), req.headers(), sendfile);
    let slot_free = finishes_boot
        .filter(|_| resp.status() == StatusCode::OK)
        .map(|mac| {
            let ctx = ctx.clone();
            move || ctx.control.boot_slot_done(mac)
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
