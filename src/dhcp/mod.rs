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

/// Client `n` of many: a locally administered MAC, for the tests of the
/// per-client limits that need thousands of distinct clients.
#[cfg(test)]
pub(crate) fn test_client_mac(n: u32) -> crate::model::Mac {
    let b = n.to_be_bytes();
    crate::model::Mac::new([2, 0, b[0], b[1], b[2], b[3]])
}
