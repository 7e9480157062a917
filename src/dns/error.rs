//! The one error type of the `dns` module.

use std::net::Ipv4Addr;

use hickory_proto::rr::Name;

/// What went wrong setting up or running rackboot's DNS service.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DnsError {
    /// The configured DNS domain cannot be served.
    #[error("DNS domain {domain} cannot be served: {reason}")]
    InvalidDomain {
        /// The domain as configured, lowercased and fully qualified.
        domain: Name,
        /// Why it was rejected and what to use instead.
        reason: &'static str,
    },

    /// A served subnet was written with a host address instead of its network address.
    #[error("subnet {network}/{prefix} has host bits set; write it as {expected}/{prefix}")]
    HostBitsSet {
        /// The configured address.
        network: Ipv4Addr,
        /// The configured prefix length.
        prefix: u8,
        /// The network address `network` lies in.
        expected: Ipv4Addr,
    },

    /// A transport stopped serving although nobody asked it to.
    #[error(
        "DNS over {transport} stopped on its own; rackboot no longer answers DNS there \
         (check the socket and restart rackboot)"
    )]
    Stopped {
        /// "UDP" or "TCP".
        transport: &'static str,
        /// The socket error that ended it.
        #[source]
        source: Option<std::io::Error>,
    },
}

impl DnsError {
    /// True when the zone configuration is at fault (fix the config), false when serving failed.
    pub fn is_invalid_zone(&self) -> bool {
        matches!(self, Self::InvalidDomain { .. } | Self::HostBitsSet { .. })
    }
}
