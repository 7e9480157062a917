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
use crate::boot::{AssetRole, Progress, render_ipxe};
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
    let rendered = render_ipxe(
        &ctx.catalog.current(),
        &node,
        &node.bootenv,
        arch,
        &ctx.urls.http_base,
    )
    .map_err(|e| HttpError::new(StatusCode::UNPROCESSABLE_ENTITY, e.to_string()))?;
    ctx.store.touch_node(mac, Some(arch), now).await?;
    ctx.timeline
        .record(
            mac,
            EventKind::HttpScript,
            format!("bootenv {}, arch {arch}", rendered.bootenv),
        )
        .await;
    ctx.timeline.progress(mac, Progress::ScriptRendered).await?;
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
    let full = crate::tftp::resolve_asset(&ctx.assets_dir, &path)
        .map_err(|_| HttpError::not_found(format!("no asset `{path}`")))?;
    if req.method() == Method::GET {
        if let Some(mac) = q.get("mac") {
            let mac = parse_mac(mac)?;
            if let Some(node) = ctx.store.node(mac).await? {
                let kind = asset_role(&ctx, &node, &path);
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

/// The timeline entry for a fetch of `path` by `node`.
fn asset_role(ctx: &HttpContext, node: &crate::model::Node, path: &str) -> EventKind {
    let role = node
        .arch
        .and_then(|a| Some(ctx.catalog.current().get(&node.bootenv)?.role_of(a, path)));
    match role {
        Some(AssetRole::Kernel) => EventKind::HttpKernel,
        Some(AssetRole::Initrd) => EventKind::HttpInitrd,
        _ => EventKind::HttpAsset,
    }
}
