//! `[dhcp]` and its `[[dhcp.subnet]]`s: the subnets rackboot serves, their
//! ranges and leases, and what unknown clients may take of them.

use std::net::Ipv4Addr;

use ipnet::Ipv4Net;
use serde::Deserialize;

use super::{ConfigError, LoaderMap, LocalBoot, Source, loaders};

/// Required (it holds the subnets), but every key in it has a default.
#[derive(Debug, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub(super) struct Section {
    pub enabled: bool,
    /// Every subnet's, unless it sets its own.
    pub lease_seconds: u32,
    pub loaders: loaders::Section,
    pub upgrade_old_ipxe: bool,
    /// Packets per second; 0 = no limit.
    pub rate_limit_per_mac: u32,
    pub rate_limit_per_relay: u32,
    pub subnet: Vec<Subnet>,
}

impl Default for Section {
    fn default() -> Self {
        Section {
            enabled: true,
            lease_seconds: 3600,
            loaders: loaders::Section::default(),
            upgrade_old_ipxe: false,
            rate_limit_per_mac: 20,
            rate_limit_per_relay: 50_000,
            subnet: Vec::new(),
        }
    }
}

/// One `[[dhcp.subnet]]`: `cidr` is required, so each other key has its
/// default here rather than in an `impl Default`.
#[derive(Debug, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct Subnet {
    pub cidr: Ipv4Net,
    #[serde(default)]
    pub ranges: Vec<[Ipv4Addr; 2]>,
    pub router: Option<Ipv4Addr>,
    pub lease_seconds: Option<u32>,
    #[serde(default)]
    pub mode: SubnetMode,
    #[serde(default)]
    pub unknown_clients: UnknownClients,
    /// Overrides `admission.max_booting` for this subnet.
    pub max_booting: Option<u32>,
    /// Where relayed requests for this subnet may come from (the relay
    /// agents' source addresses); empty: from anywhere.
    #[serde(default)]
    pub relays: Vec<Ipv4Addr>,
    /// Percent of the dynamic ranges clients rackboot knows nothing of
    /// may hold at once.
    #[serde(default = "default_unknown_share")]
    pub unknown_share: u8,
    /// New leases per second for unknown clients (0 = no limit).
    #[serde(default)]
    pub unknown_rate: u32,
    /// What names a machine besides its MAC: `"port"` (its switch port,
    /// option 82 from a relay in `relays`), `"uuid"` (its SMBIOS UUID,
    /// option 97), or a list of them.
    #[serde(default)]
    pub identity: OneOrMany,
}

/// A string or a list of strings.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(untagged)]
pub(super) enum OneOrMany {
    One(String),
    Many(Vec<String>),
}

impl Default for OneOrMany {
    fn default() -> Self {
        OneOrMany::Many(Vec::new())
    }
}

/// What identifies a machine on a subnet besides its MAC: a MAC rackboot
/// has no record of takes over the record of the machine it replaced.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Identity {
    /// The switch port: the relay agent information (option 82) it was
    /// last relayed with.
    pub port: bool,
    /// The board: the SMBIOS UUID (option 97) its firmware sends.
    pub uuid: bool,
}

impl Identity {
    /// Only the MAC names a machine.
    pub fn mac_only(&self) -> bool {
        !self.port && !self.uuid
    }
}

pub(super) fn default_unknown_share() -> u8 {
    90
}

#[derive(Debug, Clone)]
pub struct DhcpConfig {
    pub enabled: bool,
    pub subnets: Vec<SubnetConfig>,
    pub loaders: LoaderMap,
    /// Packets per second per MAC and per relay; 0 = no limit.
    pub rate_limit_per_mac: u32,
    pub rate_limit_per_relay: u32,
}

/// How rackboot serves a subnet.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SubnetMode {
    /// Addresses and boot information.
    #[default]
    Dhcp,
    /// proxyDHCP: another server owns the addresses; rackboot answers PXE
    /// clients with boot information only.
    Proxy,
}

/// What happens to a MAC rackboot has no record of.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum UnknownClients {
    /// Give it an address and the default bootenv (discovery).
    #[default]
    Serve,
    /// Do not answer it; only nodes already in the store boot here.
    Ignore,
}

/// One subnet rackboot serves: the boot interface's own, or one behind a relay.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubnetConfig {
    pub cidr: Ipv4Net,
    /// Dynamic ranges, inclusive; may be empty (fixed addresses only, or proxy mode).
    pub ranges: Vec<(Ipv4Addr, Ipv4Addr)>,
    pub router: Option<Ipv4Addr>,
    pub lease_seconds: u32,
    pub mode: SubnetMode,
    pub unknown_clients: UnknownClients,
    /// The only sources relayed requests (giaddr set) for this subnet are
    /// accepted from; empty: any.
    pub relays: Vec<Ipv4Addr>,
    /// Percent (0–100) of the dynamic ranges that unknown clients (no
    /// record, or a bare one DHCP made) may hold at once; the rest is
    /// kept for known nodes.
    pub unknown_share: u8,
    /// New leases per second for unknown clients; 0 = no limit.
    pub unknown_rate: u32,
    pub identity: Identity,
}

impl DhcpConfig {
    /// The subnet an address (a relay's giaddr, rackboot's own address) lies in.
    pub fn subnet_of(&self, ip: Ipv4Addr) -> Option<&SubnetConfig> {
        self.subnets.iter().find(|s| s.cidr.contains(&ip))
    }
}

/// Shorter leases than this make clients renew faster than is useful.
const MIN_LEASE_SECONDS: u32 = 60;

fn lease_too_short(seconds: u32) -> Option<String> {
    (seconds < MIN_LEASE_SECONDS)
        .then(|| format!("{seconds} is too short: use at least {MIN_LEASE_SECONDS}"))
}

impl Section {
    /// `local_boot` (`[boot]`) joins the loaders, which DHCP hands out.
    pub fn validate(self, src: &Source, local_boot: LocalBoot) -> Result<DhcpConfig, ConfigError> {
        if self.enabled && self.subnet.is_empty() {
            return Err(src.invalid(
                "dhcp.subnet",
                "DHCP is enabled but no [[dhcp.subnet]] is configured",
            ));
        }
        if let Some(reason) = lease_too_short(self.lease_seconds) {
            return Err(src.invalid("dhcp.lease_seconds", reason));
        }
        let mut subnets: Vec<SubnetConfig> = Vec::with_capacity(self.subnet.len());
        for (i, sn) in self.subnet.into_iter().enumerate() {
            let subnet = sn.validate(src, i, self.lease_seconds, &subnets)?;
            subnets.push(subnet);
        }
        Ok(DhcpConfig {
            enabled: self.enabled,
            subnets,
            rate_limit_per_mac: self.rate_limit_per_mac,
            rate_limit_per_relay: self.rate_limit_per_relay,
            loaders: self
                .loaders
                .validate(src, self.upgrade_old_ipxe, local_boot)?,
        })
    }
}

impl Subnet {
    /// `dhcp.subnet[i]`, checked against the subnets before it (`earlier`).
    fn validate(
        self,
        src: &Source,
        i: usize,
        default_lease: u32,
        earlier: &[SubnetConfig],
    ) -> Result<SubnetConfig, ConfigError> {
        let key = |k: &str| format!("dhcp.subnet[{i}].{k}");
        let cidr = self.cidr.trunc();
        if cidr != self.cidr {
            return Err(src.invalid(
                &key("cidr"),
                format!("{} has host bits set; did you mean {cidr}?", self.cidr),
            ));
        }
        if cidr.prefix_len() > 30 {
            return Err(src.invalid(&key("cidr"), format!("{cidr} is too small to serve")));
        }
        if let Some(j) = earlier
            .iter()
            .position(|o| o.cidr.contains(&cidr) || cidr.contains(&o.cidr))
        {
            return Err(src.invalid(
                &key("cidr"),
                format!("{cidr} overlaps dhcp.subnet[{j}] ({})", earlier[j].cidr),
            ));
        }
        let mut ranges: Vec<(Ipv4Addr, Ipv4Addr)> = Vec::with_capacity(self.ranges.len());
        for [first, last] in self.ranges {
            let reason = if !cidr.contains(&first) || !cidr.contains(&last) {
                Some(format!("{first}..{last} is not inside {cidr}"))
            } else if first > last {
                Some(format!(
                    "the first address {first} comes after the last {last}"
                ))
            } else if first == cidr.network() || last == cidr.broadcast() {
                Some(format!(
                    "{first}..{last} includes {cidr}'s network or broadcast address"
                ))
            } else {
                ranges
                    .iter()
                    .find(|&&(a, b)| first <= b && a <= last)
                    .map(|(a, b)| format!("{first}..{last} overlaps {a}..{b}"))
            };
            if let Some(reason) = reason {
                return Err(src.invalid(&key("ranges"), reason));
            }
            ranges.push((first, last));
        }
        if self.mode == SubnetMode::Proxy && !ranges.is_empty() {
            return Err(src.invalid(
                &key("ranges"),
                "a proxy subnet hands out no addresses: remove its ranges",
            ));
        }
        if let Some(r) = self.router
            && !cidr.contains(&r)
        {
            return Err(src.invalid(&key("router"), format!("{r} is not inside {cidr}")));
        }
        let lease_seconds = self.lease_seconds.unwrap_or(default_lease);
        if let Some(reason) = lease_too_short(lease_seconds) {
            return Err(src.invalid(&key("lease_seconds"), reason));
        }
        if self.unknown_share > 100 {
            return Err(src.invalid(
                &key("unknown_share"),
                format!("{} is not a percentage: use 0 to 100", self.unknown_share),
            ));
        }
        let mut identity = Identity::default();
        let names = match self.identity {
            OneOrMany::One(name) => vec![name],
            OneOrMany::Many(names) => names,
        };
        for name in names {
            match name.as_str() {
                "mac" => {}
                "port" => identity.port = true,
                "uuid" => identity.uuid = true,
                other => {
                    return Err(src.invalid(
                        &key("identity"),
                        format!("`{other}` is no identity: use \"mac\", \"port\" or \"uuid\""),
                    ));
                }
            }
        }
        if identity.port && self.relays.is_empty() {
            return Err(src.invalid(
                &key("identity"),
                "identity by port believes the relay agent information (option 82) of relayed \
                 requests: list the relay agents whose word counts in `relays`",
            ));
        }
        Ok(SubnetConfig {
            cidr,
            identity,
            ranges,
            router: self.router,
            lease_seconds,
            mode: self.mode,
            unknown_clients: self.unknown_clients,
            relays: self.relays,
            unknown_share: self.unknown_share,
            unknown_rate: self.unknown_rate,
        })
    }
}
