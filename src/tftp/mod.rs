//! TFTP: serves first-stage loaders from the assets directory, read-only.
//!
//! The wire protocol (RFC 1350 with blksize, tsize, timeout and windowsize,
//! RFC 2347/2348/2349/7440) is async-tftp's. This module owns what async-tftp
//! leaves to a handler: which paths may be read (none outside the assets
//! directory, no writes at all) and putting each transfer on the timeline.

mod handler;

pub use handler::{AssetsHandler, Refusal, resolve};

/// The file an asset path names, refusing anything outside `root`; shared
/// with HTTP so both protocols hand out exactly the same files.
pub fn resolve_asset(root: &std::path::Path, path: &str) -> Result<std::path::PathBuf, Refusal> {
    resolve(root, std::path::Path::new(path))
}

use std::net::SocketAddr;

use tokio_util::sync::CancellationToken;

/// Serves `handler` on an already-bound socket until `cancel` fires.
pub async fn serve(
    socket: std::net::UdpSocket,
    handler: AssetsHandler,
    cancel: CancellationToken,
) -> Result<(), async_tftp::Error> {
    let server = async_tftp::server::TftpServerBuilder::with_handler(handler)
        .std_socket(socket)?
        // RFC 2348 allows up to 65464, but a block larger than the path MTU
        // is fragmented, and firmware TFTP clients lose fragmented blocks.
        .block_size_limit(1468)
        .build()
        .await?;
    let addr: Option<SocketAddr> = server.listen_addr().ok();
    tracing::debug!(?addr, "TFTP serving");
    tokio::select! {
        _ = cancel.cancelled() => Ok(()),
        r = server.serve() => r,
    }
}
