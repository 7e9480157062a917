//! The node record: what rackboot keeps per machine.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;

use serde::{Deserialize, Serialize};

use super::{BmcRecord, BootArch, Mac, Timestamp};

/// Where a node is in its boot and configuration cycle (DESIGN.md, "Node states").
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum NodeState {
    /// Seen on the wire (DHCP) for the first time; nothing booted yet.
    Discovered,
    /// Handed a boot script: its kernel and initrd are on the way.
    Booting,
    /// The operational image is up and has reported.
    Booted,
    /// Pulling and running its config scripts.
    Configuring,
    /// Every config script succeeded.
    Configured,
    /// A step failed; the reason is kept on the record.
    Failed,
    /// Running an OS installer.
    Installing,
    /// The installer called back.
    Installed,
    /// A booted node stopped reporting.
    Unreachable,
}

impl NodeState {
    pub const ALL: [NodeState; 9] = [
        NodeState::Discovered,
        NodeState::Booting,
        NodeState::Booted,
        NodeState::Configuring,
        NodeState::Configured,
        NodeState::Failed,
        NodeState::Installing,
        NodeState::Installed,
        NodeState::Unreachable,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            NodeState::Discovered => "discovered",
            NodeState::Booting => "booting",
            NodeState::Booted => "booted",
            NodeState::Configuring => "configuring",
            NodeState::Configured => "configured",
            NodeState::Failed => "failed",
            NodeState::Installing => "installing",
            NodeState::Installed => "installed",
            NodeState::Unreachable => "unreachable",
        }
    }
}

super::named_values!(NodeState, |s| format!("unknown node state `{s}`"));

/// Who made a node record. A record rackboot made for a MAC it had never
/// seen may be a flood of made-up MACs: while it is nothing more than that
/// (still `discovered`, untouched by an admin) the lifecycle sweep may reap
/// it; a record an admin made or edited is never reaped.
#[derive(
    Copy, Clone, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum NodeOrigin {
    /// Made or edited by an admin (API, CLI, import). Also what a record
    /// from before rackboot kept origins reads as, unless it is plainly
    /// one its DHCP made (see the store).
    #[default]
    Admin,
    /// Made by rackboot when the MAC first asked to boot.
    Discovered,
}

/// Which of a node record's bootenv fields is in force.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Choice {
    /// `bootenv`: no next-boot bootenv is in force.
    Base,
    /// `next_bootenv` for one boot (no expiry): used up once its boot
    /// script is rendered, so the following boot returns to `bootenv`.
    Once,
    /// `next_bootenv` until `until` (a lease), then `bootenv` again.
    Lease { until: Timestamp },
}

/// One machine, known by the MAC of its boot NIC.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Node {
    pub mac: Mac,
    pub hostname: String,
    /// A fixed address: DHCP always hands this node this address.
    #[schema(value_type = Option<String>, format = Ipv4)]
    pub ipv4: Option<Ipv4Addr>,
    /// Free-form classification (rack, role, ...), used by selectors.
    pub labels: BTreeMap<String, String>,
    /// Values for bootenv and script templates.
    pub params: BTreeMap<String, String>,
    /// What the node boots.
    pub bootenv: String,
    /// Boot this once (or until `bootenv_expires`), then return to `bootenv`.
    pub next_bootenv: Option<String>,
    pub bootenv_expires: Option<Timestamp>,
    /// The bootenv of the boot it is in (or last went through): that of
    /// the last boot script whose boot started. A once-only bootenv is used
    /// up in the record by the time the node fetches its kernel, config
    /// scripts and answer files; this says which bootenv those belong to.
    /// `None` before its first boot through rackboot.
    #[serde(default)]
    pub booted_bootenv: Option<String>,
    /// A first-stage loader (path under the assets directory) that replaces
    /// the one its architecture gets, e.g. `snponly.efi` for a NIC whose
    /// driver iPXE lacks; or `grub`: a machine with Secure Boot enforced,
    /// which boots through the signed shim and GRUB whatever its bootenv
    /// (its own disk included).
    pub loader: Option<String>,
    /// A protected node refuses bootenv changes unless forced.
    pub protected: bool,
    pub state: NodeState,
    /// Why the node is in its state (for `failed`: what failed).
    pub state_reason: Option<String>,
    /// Where a relayed node is plugged in (DHCP option 82), as last seen.
    pub relay_info: Option<String>,
    /// The machine's SMBIOS UUID as its firmware sent it (DHCP option 97),
    /// as last seen: the board, whichever NIC it boots from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uuid: Option<String>,
    /// On a proxyDHCP subnet (another server leases the addresses), the
    /// address the node used in its last DHCP exchange with rackboot: what
    /// its boot script and token are bound to there.
    #[serde(default)]
    #[schema(value_type = Option<String>, format = Ipv4)]
    pub boot_ipv4: Option<Ipv4Addr>,
    /// The architecture its firmware announced last.
    pub arch: Option<BootArch>,
    pub last_seen: Option<Timestamp>,
    /// Bumped by an admin's reconfigure trigger: a booted node whose agent
    /// ran its scripts for an older generation runs them again (no reboot).
    #[serde(default)]
    pub config_generation: u64,
    /// Secret the node presents on every request it makes; reaches the node
    /// only through its own boot script.
    #[serde(skip_serializing)]
    #[schema(ignore)]
    pub token: String,
    pub created: Timestamp,
    /// Who made the record.
    #[serde(default)]
    pub origin: NodeOrigin,
    /// Its BMC, for power control (boxed: most records of a large store
    /// have none, and each record is kept in memory).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bmc: Option<Box<BmcRecord>>,
}

impl Node {
    /// The record a MAC seen for the first time gets (rackboot makes it:
    /// an admin's code path sets [`NodeOrigin::Admin`]).
    pub fn discovered(mac: Mac, bootenv: &str, token: String, now: Timestamp) -> Node {
        Node {
            mac,
            hostname: mac.default_hostname(),
            ipv4: None,
            labels: BTreeMap::new(),
            params: BTreeMap::new(),
            bootenv: bootenv.to_string(),
            next_bootenv: None,
            bootenv_expires: None,
            booted_bootenv: None,
            loader: None,
            protected: false,
            state: NodeState::Discovered,
            state_reason: None,
            relay_info: None,
            uuid: None,
            boot_ipv4: None,
            arch: None,
            last_seen: Some(now),
            config_generation: 0,
            token,
            created: now,
            origin: NodeOrigin::Discovered,
            bmc: None,
        }
    }

    /// Whether this record is one rackboot made for a MAC it saw once and
    /// nothing more came of it: still `discovered`, never protected, given
    /// nothing by an admin. Such a record may be reaped once idle.
    pub fn is_bare_discovery(&self) -> bool {
        self.origin == NodeOrigin::Discovered
            && self.state == NodeState::Discovered
            && !self.protected
            && self.ipv4.is_none()
            && self.next_bootenv.is_none()
            && self.loader.is_none()
            && self.labels.is_empty()
            && self.params.is_empty()
            && self.bmc.is_none()
    }
}

/// A record as DHCP makes it for an unknown MAC (tests): MAC
/// 52:54:00:aa:bb:cc, bootenv `discovery`, token `tok`, made at time 0.
#[cfg(test)]
impl Node {
    pub fn sample() -> Node {
        Node::discovered(
            Mac::new([0x52, 0x54, 0, 0xaa, 0xbb, 0xcc]),
            "discovery",
            "tok".into(),
            Timestamp(0),
        )
    }
}
