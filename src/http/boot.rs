//! `/boot/<mac>.ipxe` and `/assets/...`: what iPXE fetches.

use std::collections::HashMap;
use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Path, Query, Request, State};
use axum::http::{Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use tower::ServiceExt;
use tower_http::services::ServeFile;

use super::{HttpContext, HttpError, parse_mac};
use crate::boot::{AssetRole, Choice, Progress, effective_bootenv, lifecycle, render_ipxe};
use crate::model::{BootArch, EventKind, Timestamp};
use crate::nodes;

/// The node's iPXE script, rendered for its architecture (the one its
/// firmware announced over DHCP, or `?arch=` for clients that came through
/// another DHCP server).
pub async fn script(
    State(ctx): State<Arc<HttpContext>>,
    Path(file): Path<String>,
    Query(q): Query<HashMap<String, String>>,
) -> Result<Response, HttpError> {
    let mac = file
        .strip_suffix(".ipxe")
        .ok_or_else(|| HttpError::not_found("boot scripts are named <mac>.ipxe"))?;
    let mac = parse_mac(mac)?;
    let now = Timestamp::now();
    let (node, _) = nodes::ensure(ctx.store.as_ref(), mac, &ctx.default_bootenv, now).await?;
    let arch = match q.get("arch") {
        Some(a) => a.parse::<BootArch>().map_err(HttpError::bad_request)?,
        None => node.arch.ok_or_else(|| {
            HttpError::new(
                StatusCode::CONFLICT,
                format!("the architecture of {mac} is unknown: it has not booted through rackboot's DHCP; add ?arch=bios|x86_64_efi|arm64_efi"),
            )
        })?,
    };
    // A lease that ran out reverts before anything is rendered, so this boot
    // and the record agree even if the sweep has not come by yet.
    let node = ctx
        .timeline
        .change_bootenv(mac, move |n| lifecycle::expire_lease(n, now))
        .await?
        .unwrap_or(node);
    let effective = effective_bootenv(&node, now);
    let catalog = ctx.catalog.current();
    let rendered = render_ipxe(
        &catalog,
        &node,
        &effective.bootenv,
        arch,
        &ctx.urls.http_base,
    )
    .map_err(|e| HttpError::new(StatusCode::UNPROCESSABLE_ENTITY, e.to_string()))?;
    ctx.store.touch_node(mac, Some(arch), now).await?;
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
    ctx.timeline.progress(mac, progress).await?;
    Ok((
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        rendered.text,
    )
        .into_response())
}

/// Kernels, initrds and loaders, with Content-Length, HEAD and Range
/// (tower-http's ServeFile). A GET that names its node (`?mac=`) goes on that
/// node's timeline as kernel, initrd or other asset.
pub async fn asset(
    State(ctx): State<Arc<HttpContext>>,
    Path(path): Path<String>,
    Query(q): Query<HashMap<String, String>>,
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
    let full = crate::tftp::resolve_asset(&ctx.assets_dir, &path)
        .map_err(|_| HttpError::not_found(format!("no asset `{path}`")))?;
    if req.method() == Method::GET {
        if let Some(mac) = q.get("mac") {
            let mac = parse_mac(mac)?;
            if let Some(node) = ctx.store.node(mac).await? {
                let events = ctx.store.events(mac).await?;
                let kind = asset_role(&ctx, &node, &events, &path);
                let range = req
                    .headers()
                    .get(header::RANGE)
                    .and_then(|v| v.to_str().ok())
                    .map(|r| format!(", {r}"))
                    .unwrap_or_default();
                ctx.timeline
                    .record(mac, kind, format!("{path}{range}"))
                    .await;
            }
        }
    }
    let resp = ServeFile::new(full)
        .oneshot(req)
        .await
        .map_err(HttpError::internal)?;
    Ok(resp.map(Body::new))
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

/// The timeline entry for a fetch of `path` by `node`, judged by the bootenv
/// of the last script it was handed (a once-only bootenv is no longer in the
/// record by the time the kernel is fetched).
fn asset_role(
    ctx: &HttpContext,
    node: &crate::model::Node,
    events: &[crate::model::Event],
    path: &str,
) -> EventKind {
    let bootenv = lifecycle::rendered_bootenv(events)
        .map(str::to_string)
        .unwrap_or_else(|| effective_bootenv(node, Timestamp::now()).bootenv);
    let role = node
        .arch
        .and_then(|a| Some(ctx.catalog.current().get(&bootenv)?.role_of(a, path)));
    match role {
        Some(AssetRole::Kernel) => EventKind::HttpKernel,
        Some(AssetRole::Initrd) => EventKind::HttpInitrd,
        _ => EventKind::HttpAsset,
    }
}
