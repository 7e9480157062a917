//! TFTP: serves first-stage loaders from the assets directory, read-only.
//!
//! The wire protocol is async-tftp 0.4's. What it does, read from its source:
//! RFC 1350 reads from a fresh port per transfer; options (RFC 2347) blksize
//! (RFC 2348, capped here), tsize and timeout (RFC 2349), windowsize (RFC
//! 7440: a window of blocks sent back to back, an ACK inside the window
//! slides it, capped here); retransmission of the whole unacknowledged window
//! when no ACK comes within the timeout (the client's `timeout` option, which
//! rackboot makes it ignore, else ours), up to a retry limit. Duplicate or stale ACKs are ignored rather than
//! answered, so there is no Sorcerer's Apprentice. Duplicate RRQs from a
//! client already being served are dropped.
//!
//! What it does not do: back off between retransmissions (the timeout is
//! fixed), cap concurrent transfers, or lower blksize to the path MTU of one
//! client (the cap below is one figure for all). The concurrency cap is this
//! module's: see [`AssetsHandler`] and `[tftp] max_transfers`.
//!
//! This module also owns which paths may be read (none outside the assets
//! directory, no writes at all) and putting each transfer on the timeline.

mod handler;
pub mod packet;
pub mod session;

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
        // A window of 64 × 1468 bytes is ~94 KB in flight per client: fast on a
        // LAN, and small enough that a loss costs one short resend.
        .window_size_limit(64)
        // RFC 2349's smallest timeout, the one tftp-hpa starts with: a lost
        // block or ACK costs one second, not async-tftp's default three.
        .timeout(std::time::Duration::from_secs(1))
        // Clients ask for more (curl asks for 5 s), and async-tftp then waits
        // that long after every loss. The option is left out of the OACK, as
        // RFC 2347 allows; an early resend only earns a duplicate ACK, which
        // async-tftp ignores.
        .ignore_client_timeout()
        // 20 silent seconds end a transfer and free its slot (default 100).
        .max_send_retries(20)
        .build()
        .await?;
    let addr: Option<SocketAddr> = server.listen_addr().ok();
    tracing::debug!(?addr, "TFTP serving");
    tokio::select! {
        _ = cancel.cancelled() => Ok(()),
        r = server.serve() => r,
    }
}
