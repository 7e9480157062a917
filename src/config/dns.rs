//! `[dns]`: the authoritative zone for the nodes, and where other names go.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use serde::Deserialize;

use super::{ConfigError, Source};

#[derive(Debug, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub(super) struct Section {
    pub enabled: bool,
    pub port: u16,
    pub domain: String,
    /// Empty: names outside rackboot's zones are refused.
    pub forwarders: Vec<String>,
    pub names: DnsNames,
}

impl Default for Section {
    fn default() -> Self {
        Section {
            enabled: true,
            port: 53,
            domain: "rack.internal".into(),
            forwarders: Vec::new(),
            names: DnsNames::default(),
        }
    }
}

#[derive(Debug, Clone)]
pub struct DnsConfig {
    pub port: u16,
    pub domain: String,
    /// Upstream resolvers for names outside rackboot's zones, tried in order; empty: such
    /// names are refused.
    pub forwarders: Vec<SocketAddr>,
    /// `[dns] names`: whether node names get A and PTR records.
    pub names: DnsNames,
}

/// `[dns] names`: which node names rackboot's DNS answers.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DnsNames {
    /// A and PTR records for every node's hostname (its fixed address or lease).
    #[default]
    Hostname,
    /// No node names at all: a PTR walk of the boot subnet learns nothing.
    None,
}

/// One `dns.forwarders` entry: an address (port 53) or address:port, IPv4 or `[IPv6]:port`.
fn parse_forwarder(text: &str) -> Option<SocketAddr> {
    let text = text.trim();
    text.parse()
        .ok()
        .or_else(|| text.parse::<IpAddr>().ok().map(|ip| (ip, 53).into()))
}

impl Section {
    /// `None` when DNS is off. `address`: rackboot's own, which must not be
    /// among its forwarders.
    pub fn validate(
        self,
        src: &Source,
        address: Option<Ipv4Addr>,
    ) -> Result<Option<DnsConfig>, ConfigError> {
        let domain = self.domain.trim_end_matches('.').to_ascii_lowercase();
        if self.enabled
            && (domain.is_empty()
                || !domain.split('.').all(|l| {
                    !l.is_empty()
                        && l.len() <= 63
                        && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
                }))
        {
            return Err(src.invalid(
                "dns.domain",
                format!("`{}` is not a valid domain name", self.domain),
            ));
        }

        let mut forwarders = Vec::with_capacity(self.forwarders.len());
        for (i, text) in self.forwarders.iter().enumerate() {
            let key = format!("dns.forwarders[{i}]");
            let Some(addr) = parse_forwarder(text) else {
                return Err(src.invalid(
                    &key,
                    format!(
                        "`{text}` is not an address or address:port, e.g. \"10.0.0.53\" or \"10.0.0.53:5353\""
                    ),
                ));
            };
            if addr.port() == 0 {
                return Err(src.invalid(
                    &key,
                    format!("`{text}`: port 0 cannot be asked; leave the port out for 53"),
                ));
            }
            // rackboot asking itself would forward the question around in a circle.
            if address.map(IpAddr::V4) == Some(addr.ip()) && addr.port() == self.port {
                return Err(src.invalid(
                    &key,
                    format!(
                        "`{text}` is rackboot's own DNS (network.address, dns.port); name the site's resolvers"
                    ),
                ));
            }
            forwarders.push(addr);
        }

        Ok(self.enabled.then_some(DnsConfig {
            port: self.port,
            domain,
            forwarders,
            names: self.names,
        }))
    }
}
