//! TFTP: serves first-stage loaders from the assets directory, read-only,
//! with rackboot's own engine on tokio.
//!
//! - [`packet`]: the wire format (RFC 1350, 2347), parse and emit, total.
//! - [`session`]: one read transfer, sans-IO: options (blksize RFC 2348,
//!   tsize and timeout RFC 2349, windowsize RFC 7440) granted within the
//!   caps, the window of blocks in flight, ACKs (an ACK inside the window
//!   slides it and sending resumes after it; duplicate and stale ACKs are
//!   ignored, so there is no Sorcerer's Apprentice), and the retransmission
//!   timer, which doubles per unanswered resend up to a cap and gives up
//!   after a silent spell, or sooner (`[tftp] first_ack_timeout`) when the
//!   client never answered at all.
//! - [`server`]: the request socket, a fresh connected socket per transfer
//!   (on the server's address, an ephemeral port), the blksize cap from the
//!   path MTU (the boot interface's MTU and the route's IP_MTU to this
//!   client, the smaller; minus 32 bytes of IP, UDP and TFTP headers), the
//!   file read per block, duplicate RRQs from a client already served, and
//!   the cap on transfers per client address (`[tftp] max_transfers_per_address`).
//! - [`metrics`]: TFTP's metric families and the methods that count into them.
//! - [`handler`]: policy: no writes at all, reads of what
//!   [`crate::assets::resolve`] opens (as HTTP does), the
//!   `[tftp] max_transfers` slots with a
//!   queue (30 s, then "server busy"), metrics, and the timeline entry of
//!   each transfer.
//!
//! Why not async-tftp 0.4, which rackboot used before: it retransmits on a
//! fixed timeout (no backoff), has one blksize cap for every client (no
//! path MTU), no concurrency cap (it holds its handler lock while a read is
//! opened, so a queue had to hide in the file reader), and no way to count
//! retransmissions or queued transfers.

pub mod handler;
pub mod metrics;
pub mod packet;
pub mod server;
pub mod session;

pub use handler::AssetsHandler;
pub use server::{ServerConfig, serve};
pub use session::Limits;
