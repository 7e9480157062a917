//! A machine's BMC as its node record names it, and the words of power
//! control (states and actions). The drivers that speak to BMCs live in
//! `crate::bmc`; this is only what the record, the API and the timeline say.

use std::fmt;

use serde::{Deserialize, Serialize};

/// Where a node's BMC is and how to reach it. The password is never in the
/// record: it names a secret (a file in `secrets_dir`, mode 0600) that is
/// read at each action and appears in no answer, log line or event.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct BmcRecord {
    pub driver: Driver,
    /// redfish: the BMC's base URL (`https://10.1.0.5`); ipmi: its host,
    /// or `host:port`; command: given to the site's commands as `{{ address }}`.
    pub address: String,
    /// redfish: the system's id under `/redfish/v1/Systems` (default: the
    /// only system the BMC has).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub system: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub username: Option<String>,
    /// The name of the secret (a file in `secrets_dir`) whose first line is
    /// the password.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password_secret: Option<String>,
    /// redfish over HTTPS: accept the BMC's certificate unverified (BMCs
    /// ship self-signed ones).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub insecure: bool,
}

impl BmcRecord {
    /// `redfish https://10.1.0.5`: which BMC, as the timeline names it.
    pub fn summary_short(&self) -> String {
        format!("{} {}", self.driver.as_str(), self.address)
    }

    /// `redfish https://10.1.0.5 user admin password secret bmc-r1`: what the audit trail and
    /// the timeline show (never a password).
    pub fn summary(&self) -> String {
        let mut s = format!("{} {}", self.driver.as_str(), self.address);
        if let Some(sys) = &self.system {
            s.push_str(&format!(" system {sys}"));
        }
        if let Some(u) = &self.username {
            s.push_str(&format!(" user {u}"));
        }
        if let Some(p) = &self.password_secret {
            s.push_str(&format!(" password secret {p}"));
        }
        if self.insecure {
            s.push_str(" insecure");
        }
        s
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Driver {
    /// DMTF Redfish over HTTP(S).
    Redfish,
    /// IPMI v2.0 (lanplus), through `ipmitool`.
    Ipmi,
    /// The site's own commands (`[power.command]`): a PDU, a VM manager.
    Command,
}

impl Driver {
    pub const ALL: [Driver; 3] = [Driver::Redfish, Driver::Ipmi, Driver::Command];

    pub fn as_str(self) -> &'static str {
        match self {
            Driver::Redfish => "redfish",
            Driver::Ipmi => "ipmi",
            Driver::Command => "command",
        }
    }
}

super::named_values!(Driver, |s| format!(
    "unknown BMC driver `{s}` (redfish, ipmi, command)"
));

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum PowerState {
    On,
    Off,
}

impl fmt::Display for PowerState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            PowerState::On => "on",
            PowerState::Off => "off",
        })
    }
}

/// What an admin (or a rollout) asks of a machine's power.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "kebab-case")]
pub enum PowerAction {
    Status,
    On,
    Off,
    Cycle,
    /// Boot from the network once, then power-cycle (or on, if off).
    PxeOnce,
}

impl PowerAction {
    pub const ALL: [PowerAction; 5] = [
        PowerAction::Status,
        PowerAction::On,
        PowerAction::Off,
        PowerAction::Cycle,
        PowerAction::PxeOnce,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            PowerAction::Status => "status",
            PowerAction::On => "on",
            PowerAction::Off => "off",
            PowerAction::Cycle => "cycle",
            PowerAction::PxeOnce => "pxe-once",
        }
    }

    /// Whether the action changes anything (all but `status`).
    pub fn changes_power(self) -> bool {
        self != PowerAction::Status
    }
}

super::named_values!(PowerAction, |s| format!(
    "{s:?} is no power action (status, on, off, cycle, pxe-once)"
));
