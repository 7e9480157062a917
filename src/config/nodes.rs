//! `[nodes]`: what records made by rackboot itself look like.

use serde::Deserialize;

#[derive(Debug, Default, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub(super) struct Section {
    pub default_hostname: HostnameScheme,
}

/// `[nodes] default_hostname`: the hostname a node record gets when
/// rackboot makes it (first DHCP packet, or an admin's create without one).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum HostnameScheme {
    /// `node-<mac without colons>`: stable, but it tells the MAC to anyone
    /// who reads the name (DNS, logs, DHCP option 12).
    #[default]
    Mac,
    /// `node-<8 random hex digits>`: says nothing about the machine.
    Random,
}
