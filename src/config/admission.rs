//! `[admission]`: pacing a boot storm, per subnet.

use std::time::Duration;

use ipnet::Ipv4Net;
use serde::Deserialize;

use super::{ConfigError, Source};

/// Durations as humantime text, like `[lifecycle]`.
#[derive(Debug, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub(super) struct Section {
    /// 0: no limit.
    pub max_booting: u32,
    pub slot_timeout: String,
}

impl Default for Section {
    fn default() -> Self {
        Section {
            max_booting: 0,
            slot_timeout: "5m".into(),
        }
    }
}

/// `[admission]` with the per-subnet `max_booting` overrides: how many
/// nodes of one subnet may be fetching their kernel and initrds at once.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AdmissionConfig {
    /// Every `[[dhcp.subnet]]` with its limit (its own, else the default); 0 = no limit.
    pub subnets: Vec<(Ipv4Net, u32)>,
    /// For clients in no configured subnet (and the subnets' default); 0 = no limit.
    pub max_booting: u32,
    /// How long a node holds its slot without finishing its last initrd.
    pub slot_timeout: Duration,
}

impl Section {
    /// `subnets`: every validated subnet with its own `max_booting`, if set.
    pub fn validate(
        self,
        src: &Source,
        subnets: impl Iterator<Item = (Ipv4Net, Option<u32>)>,
    ) -> Result<AdmissionConfig, ConfigError> {
        Ok(AdmissionConfig {
            subnets: subnets
                .map(|(cidr, own)| (cidr, own.unwrap_or(self.max_booting)))
                .collect(),
            max_booting: self.max_booting,
            slot_timeout: src.duration("admission.slot_timeout", &self.slot_timeout)?,
        })
    }
}
