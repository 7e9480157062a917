//! Events: the steps of a node's boot timeline.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use super::Timestamp;

/// What happened. The names are stable: tests, the API and admins' scripts read them.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash)]
pub enum EventKind {
    DhcpDiscover,
    DhcpOffer,
    DhcpRequest,
    DhcpAck,
    DhcpNak,
    DhcpRelease,
    DhcpDecline,
    /// A DHCP packet from this node that rackboot did not answer, and why.
    DhcpIgnored,
    /// The relay agent information (option 82) of the node changed.
    DhcpRelay,
    /// A TFTP read began.
    TftpStart,
    /// The whole file went out.
    TftpSent,
    /// A TFTP transfer ended before the whole file went out (detail: how far it got).
    TftpStopped,
    /// The node's boot script was rendered.
    HttpScript,
    HttpKernel,
    HttpInitrd,
    /// Any other asset fetched over HTTP.
    HttpAsset,
    /// The node pulled its list of config scripts.
    ConfigPull,
    /// The node fetched one config script.
    ScriptFetch,
    ReportBooted,
    /// One config script finished (status in the detail).
    ReportScript,
    ReportConfigured,
    ReportFailed,
    /// The installer called back: the install is complete.
    ReportInstalled,
    /// A cloud-init NoCloud document or an installer answer file was
    /// rendered for the node (detail: which).
    HttpSeed,
    /// A document holding a secret was asked for a second time in one boot
    /// and refused (detail: which, and from where).
    SecretRefused,
    /// The node record changed state (detail: from → to, and why).
    State,
    /// The bootenv the node boots changed by itself (a once-only bootenv
    /// used, a lease run out, an install completed); detail: from → to, and why.
    BootenvChanged,
    /// An admin created or changed the record through the API: which
    /// token, which operation, each field before → after, and whether a
    /// protected node was forced.
    AdminChange,
    /// An admin deleted the record: which token, what the record was. The
    /// timeline before it went with the record; this event stays on the
    /// MAC's timeline, so a record made again for the MAC starts with it.
    AdminDelete,
}

impl EventKind {
    pub const ALL: [EventKind; 29] = [
        EventKind::DhcpDiscover,
        EventKind::DhcpOffer,
        EventKind::DhcpRequest,
        EventKind::DhcpAck,
        EventKind::DhcpNak,
        EventKind::DhcpRelease,
        EventKind::DhcpDecline,
        EventKind::DhcpIgnored,
        EventKind::DhcpRelay,
        EventKind::TftpStart,
        EventKind::TftpSent,
        EventKind::TftpStopped,
        EventKind::HttpScript,
        EventKind::HttpKernel,
        EventKind::HttpInitrd,
        EventKind::HttpAsset,
        EventKind::ConfigPull,
        EventKind::ScriptFetch,
        EventKind::ReportBooted,
        EventKind::ReportScript,
        EventKind::ReportConfigured,
        EventKind::ReportFailed,
        EventKind::ReportInstalled,
        EventKind::HttpSeed,
        EventKind::SecretRefused,
        EventKind::State,
        EventKind::BootenvChanged,
        EventKind::AdminChange,
        EventKind::AdminDelete,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            EventKind::DhcpDiscover => "dhcp.discover",
            EventKind::DhcpOffer => "dhcp.offer",
            EventKind::DhcpRequest => "dhcp.request",
            EventKind::DhcpAck => "dhcp.ack",
            EventKind::DhcpNak => "dhcp.nak",
            EventKind::DhcpRelease => "dhcp.release",
            EventKind::DhcpDecline => "dhcp.decline",
            EventKind::DhcpIgnored => "dhcp.ignored",
            EventKind::DhcpRelay => "dhcp.relay",
            EventKind::TftpStart => "tftp.start",
            EventKind::TftpSent => "tftp.sent",
            EventKind::TftpStopped => "tftp.stopped",
            EventKind::HttpScript => "http.script",
            EventKind::HttpKernel => "http.kernel",
            EventKind::HttpInitrd => "http.initrd",
            EventKind::HttpAsset => "http.asset",
            EventKind::ConfigPull => "config.pull",
            EventKind::ScriptFetch => "config.script",
            EventKind::ReportBooted => "report.booted",
            EventKind::ReportScript => "report.script",
            EventKind::ReportConfigured => "report.configured",
            EventKind::ReportFailed => "report.failed",
            EventKind::ReportInstalled => "report.installed",
            EventKind::HttpSeed => "http.seed",
            EventKind::SecretRefused => "http.secret_refused",
            EventKind::State => "state",
            EventKind::BootenvChanged => "bootenv.changed",
            EventKind::AdminChange => "admin.change",
            EventKind::AdminDelete => "admin.delete",
        }
    }

    /// Whether this kind is `family` itself or one of its kinds: `admin`
    /// takes `admin.change` and `admin.delete`, `dhcp` every DHCP step.
    pub fn in_family(self, family: &str) -> bool {
        let name = self.as_str();
        name == family
            || name
                .strip_prefix(family)
                .is_some_and(|rest| rest.starts_with('.'))
    }
}

impl fmt::Display for EventKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for EventKind {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        EventKind::ALL
            .into_iter()
            .find(|k| k.as_str() == s)
            .ok_or_else(|| format!("unknown event kind `{s}`"))
    }
}

impl Serialize for EventKind {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for EventKind {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d)?
            .parse()
            .map_err(serde::de::Error::custom)
    }
}

/// One step of a node's timeline.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Event {
    pub at: Timestamp,
    pub kind: EventKind,
    pub detail: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kind_names_round_trip() {
        for kind in EventKind::ALL {
            assert_eq!(kind.as_str().parse::<EventKind>().unwrap(), kind);
            assert!(kind.in_family(kind.as_str()));
        }
        assert!(EventKind::AdminDelete.in_family("admin"));
        assert!(!EventKind::AdminChange.in_family("adm"));
        assert!(!EventKind::State.in_family("admin"));
    }
}
