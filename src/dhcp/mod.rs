//! DHCPv4: owns the sockets and the wire format (dhcproto). A request is
//! checked, classified, given its subnet and rate-limited here, then
//! answered by one call to [`crate::control::dhcp_client`], whose answer is
//! encoded here. No store, no bootenv logic.

pub mod classify;
pub mod metrics;
pub mod ratelimit;
pub mod reply;
pub mod server;
pub mod unknown;
pub mod wire;

pub use server::{DhcpContext, Subnet, bind, serve, serve_boot_server};
