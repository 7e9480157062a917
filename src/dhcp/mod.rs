//! DHCPv4: hands out addresses on the boot subnet and tells each client which
//! loader or script to fetch. Owns the socket and the wire format (dhcproto);
//! asks `boot` what to hand out and the store for leases. No bootenv logic.

pub mod classify;
pub mod lease;
pub mod metrics;
pub mod ratelimit;
pub mod reply;
pub mod server;
pub mod unknown;
pub mod wire;

pub use server::{DhcpContext, Subnet, bind, serve, serve_boot_server};
