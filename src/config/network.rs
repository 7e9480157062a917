//! `[network]`: the boot interface and rackboot's own address on it.

use std::net::Ipv4Addr;

use serde::Deserialize;

use super::{ConfigError, DhcpConfig, Source};

/// Required: there is no sensible default interface.
#[derive(Debug, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct Section {
    pub interface: String,
    pub address: Option<Ipv4Addr>,
}

impl Section {
    /// The interface is named, and the address (when fixed) can be neither
    /// leased to a node nor outside the subnets DHCP serves.
    pub fn check(&self, src: &Source, dhcp: &DhcpConfig) -> Result<(), ConfigError> {
        if let Some(addr) = self.address {
            for &(first, last) in dhcp.subnets.iter().flat_map(|sn| &sn.ranges) {
                if (first..=last).contains(&addr) {
                    return Err(src.invalid(
                        "network.address",
                        format!("{addr} lies inside {first}..{last}: it could be leased to a node"),
                    ));
                }
            }
            if dhcp.enabled && dhcp.subnet_of(addr).is_none() {
                return Err(src.invalid(
                    "network.address",
                    format!("{addr} is inside no [[dhcp.subnet]]: add the boot network's subnet"),
                ));
            }
        }
        if self.interface.is_empty() {
            return Err(src.invalid("network.interface", "must name an interface"));
        }
        Ok(())
    }
}
