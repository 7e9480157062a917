//! Events: the steps of a node's boot timeline. Each kind carries its data
//! as typed fields ([`EventData`]); the sentence a person reads is rendered
//! from them ([`Event::sentence`]) and never read back. Code that needs to
//! know what happened matches on the data.

use std::fmt;
use std::net::Ipv4Addr;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::{BootArch, Choice, ClientArch, Mac, NodeState, PowerAction, PowerState, Timestamp};

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
    /// A TFTP transfer ended before the whole file went out (how far it got).
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
    /// One config script finished (with its status).
    ReportScript,
    ReportConfigured,
    ReportFailed,
    /// The installer called back: the install is complete.
    ReportInstalled,
    /// A cloud-init NoCloud document or an installer answer file was
    /// rendered for the node (which one).
    HttpSeed,
    /// A document holding a secret was asked for a second time in one boot
    /// and refused (which, and from where).
    SecretRefused,
    /// The node record was made, or changed state (from → to, and why).
    State,
    /// The bootenv the node boots changed by itself (a once-only bootenv
    /// used, a lease run out, an install completed): from → to, and why.
    BootenvChanged,
    /// An admin created or changed the record through the API: which
    /// token, which operation, each field before → after, and whether a
    /// protected node was forced.
    AdminChange,
    /// An admin deleted the record: which token, what the record was. The
    /// timeline before it went with the record; this event stays on the
    /// MAC's timeline, so a record made again for the MAC starts with it.
    AdminDelete,
    /// A power action through the node's BMC (by an admin or a rollout):
    /// what was asked, and what came of it.
    Power,
    /// A step of a rollout on this node (drain, bootenv, installed,
    /// undrain, done, failed, skipped), and how it went.
    Rollout,
    /// A new MAC on the same switch port (or board) took over this record's
    /// identity, or this record took over an old MAC's.
    Identity,
}

impl EventKind {
    pub const ALL: [EventKind; 32] = [
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
        EventKind::Power,
        EventKind::Rollout,
        EventKind::Identity,
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
            EventKind::Power => "power",
            EventKind::Rollout => "rollout",
            EventKind::Identity => "identity",
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

super::named_values!(EventKind, |s| format!("unknown event kind `{s}`"));

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

/// Which rackboot service answered a DHCP client.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum DhcpService {
    /// rackboot's DHCP server, leasing `addr`.
    Dhcp,
    /// proxyDHCP: another server leases the addresses, rackboot adds the boot file.
    Proxy,
    /// The PXE boot server on port 4011 (after proxyDHCP).
    BootServer,
}

/// The boot file a DHCP answer handed the client.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum BootTarget {
    /// A first-stage loader on rackboot's TFTP service (a path under the assets directory).
    Tftp(String),
    /// A loader URL for UEFI HTTP boot firmware.
    Http(String),
    /// The node's boot script URL, for a client already running iPXE.
    Script(String),
}

impl fmt::Display for BootTarget {
    /// `loader X` for TFTP, else the URL.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BootTarget::Tftp(path) => write!(f, "loader {path}"),
            BootTarget::Http(url) | BootTarget::Script(url) => f.write_str(url),
        }
    }
}

/// Why a TFTP transfer ended before the whole file went out.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum TftpStop {
    /// The client sent a TFTP error (8 before any data: a size probe, or
    /// the options refused).
    ClientError { code: u16, message: String },
    /// The client stopped acknowledging.
    TimedOut,
    /// The client acknowledged nothing (`tftp.first_ack_timeout`).
    Unacknowledged,
    /// No transfer slot came free within `wait_ms` (`tftp.max_transfers`).
    Busy { wait_ms: u64 },
    /// rackboot could not go on (a read error, rackboot stopping).
    Failed { error: String },
}

/// A document rendered for a node from a template.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Document {
    ConfigScript {
        name: String,
    },
    /// A NoCloud document (`meta-data`, `user-data`, `vendor-data`).
    CloudInit {
        name: String,
    },
    /// An installer answer file from `answers_dir`.
    Answers {
        name: String,
    },
}

impl fmt::Display for Document {
    /// As errors and refusals name it: `config script X`, `cloud-init/X`, `answers/X`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Document::ConfigScript { name } => write!(f, "config script {name}"),
            Document::CloudInit { name } => write!(f, "cloud-init/{name}"),
            Document::Answers { name } => write!(f, "answers/{name}"),
        }
    }
}

/// Which request made a node's record.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Via {
    /// DHCP on port 67, directly or through the relay at this address.
    Dhcp {
        #[schema(value_type = Option<String>, format = Ipv4)]
        relay: Option<Ipv4Addr>,
    },
    /// The PXE boot server on port 4011.
    PxeBootServer,
    /// `GET /boot/<mac>.ipxe`, from this address if known.
    BootScript {
        #[schema(value_type = Option<String>, format = Ipv4)]
        from: Option<Ipv4Addr>,
    },
}

impl fmt::Display for Via {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Via::Dhcp { relay: None } => f.write_str("DHCP"),
            Via::Dhcp { relay: Some(r) } => write!(f, "DHCP via relay {r}"),
            Via::PxeBootServer => f.write_str("PXE boot server"),
            Via::BootScript { from: None } => f.write_str("boot script fetched"),
            Via::BootScript { from: Some(ip) } => write!(f, "boot script fetched from {ip}"),
        }
    }
}

/// How a node's state changed.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(tag = "change", rename_all = "snake_case")]
pub enum StateChange {
    /// The record was made (state `discovered`) for a MAC that asked to boot.
    Created {
        /// The `[[dhcp.subnet]]` it asked on; `None` when outside every one.
        #[schema(value_type = Option<String>)]
        subnet: Option<ipnet::Ipv4Net>,
        via: Via,
        bootenv: String,
    },
    /// The state moved.
    Moved {
        from: NodeState,
        to: NodeState,
        reason: String,
    },
}

/// A node record's bootenv fields, as the timeline shows them.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct BootenvFields {
    pub bootenv: String,
    pub next_bootenv: Option<String>,
    pub bootenv_expires: Option<Timestamp>,
}

impl fmt::Display for BootenvFields {
    /// `rescue once, then discovery`, `install until T, then local`, or `local`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (&self.next_bootenv, self.bootenv_expires) {
            (Some(next), None) => write!(f, "{next} once, then {}", self.bootenv),
            (Some(next), Some(until)) => write!(f, "{next} until {until}, then {}", self.bootenv),
            (None, _) => f.write_str(&self.bootenv),
        }
    }
}

/// Why the bootenv fields changed by themselves.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum BootenvCause {
    /// The lease on `next` (its next-boot bootenv) ran out at `until`.
    LeaseRanOut { next: String, until: Timestamp },
    /// An expiry without a next-boot bootenv was cleared.
    ExpiryCleared { until: Timestamp },
    /// A once-only next-boot bootenv was booted.
    BootedOnce { bootenv: String },
    /// The installer `installer` called back; the node boots `after_install`.
    Installed {
        installer: String,
        after_install: String,
    },
}

impl fmt::Display for BootenvCause {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BootenvCause::LeaseRanOut { next, until } => {
                write!(f, "the lease on {next} ran out at {until}")
            }
            BootenvCause::ExpiryCleared { until } => {
                write!(
                    f,
                    "an expiry ({until}) without a next-boot bootenv was cleared"
                )
            }
            BootenvCause::BootedOnce { bootenv } => write!(f, "{bootenv} was booted once"),
            BootenvCause::Installed {
                installer,
                after_install,
            } => write!(
                f,
                "{installer} finished installing (after_install = {after_install})"
            ),
        }
    }
}

/// One field an admin change changed, as the audit trail shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct FieldChange {
    pub field: String,
    /// `-` when the field had no value (or the record did not exist).
    pub before: String,
    pub after: String,
}

impl fmt::Display for FieldChange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {} -> {}", self.field, self.before, self.after)
    }
}

/// What a deleted record was, for the `admin.delete` event.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct DeletedRecord {
    pub hostname: String,
    pub bootenv: String,
    pub next_bootenv: Option<String>,
    pub state: NodeState,
    pub protected: bool,
}

/// What happened, with its data: one variant per kind rackboot records,
/// stored as JSON tagged by the kind's name. `Note` holds an event written
/// before events had data (its kind, and the sentence it was stored as).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(tag = "kind")]
pub enum EventData {
    /// A DHCPOFFER (rackboot's DHCP with an address, or proxyDHCP).
    #[serde(rename = "dhcp.offer")]
    DhcpOffer {
        service: DhcpService,
        /// The address offered (rackboot's DHCP only).
        #[schema(value_type = Option<String>, format = Ipv4)]
        addr: Option<Ipv4Addr>,
        /// `None`: an address and nothing to boot.
        boot_file: Option<BootTarget>,
        /// The client's architecture (option 93), if it sent one.
        #[schema(value_type = Option<u16>)]
        arch: Option<ClientArch>,
        /// The client already runs iPXE.
        ipxe: bool,
    },
    /// A DHCPACK (rackboot's DHCP with an address, or the PXE boot server).
    #[serde(rename = "dhcp.ack")]
    DhcpAck {
        service: DhcpService,
        #[schema(value_type = Option<String>, format = Ipv4)]
        addr: Option<Ipv4Addr>,
        boot_file: Option<BootTarget>,
        #[schema(value_type = Option<u16>)]
        arch: Option<ClientArch>,
        ipxe: bool,
    },
    #[serde(rename = "dhcp.nak")]
    DhcpNak { reason: String },
    #[serde(rename = "dhcp.release")]
    DhcpRelease {
        #[schema(value_type = String, format = Ipv4)]
        addr: Ipv4Addr,
        /// Whether the client held that lease.
        released: bool,
    },
    /// The client said `addr` is in use by another host: quarantined.
    #[serde(rename = "dhcp.decline")]
    DhcpDecline {
        #[schema(value_type = String, format = Ipv4)]
        addr: Ipv4Addr,
    },
    #[serde(rename = "dhcp.ignored")]
    DhcpIgnored { reason: String },
    #[serde(rename = "dhcp.relay")]
    DhcpRelay {
        /// The relay agent information (option 82), as text.
        info: String,
    },
    #[serde(rename = "tftp.start")]
    TftpStart { file: String, size: u64 },
    #[serde(rename = "tftp.sent")]
    TftpSent { file: String, size: u64 },
    #[serde(rename = "tftp.stopped")]
    TftpStopped {
        file: String,
        /// File bytes the client acknowledged.
        acked: u64,
        size: u64,
        why: TftpStop,
    },
    /// The boot script of `bootenv` for `arch`, and which of the record's
    /// bootenv fields chose it.
    #[serde(rename = "http.script")]
    HttpScript {
        bootenv: String,
        arch: BootArch,
        choice: Choice,
    },
    #[serde(rename = "http.kernel")]
    HttpKernel {
        path: String,
        /// The `Range` header, if the fetch asked for part of the file.
        range: Option<String>,
    },
    #[serde(rename = "http.initrd")]
    HttpInitrd { path: String, range: Option<String> },
    #[serde(rename = "http.asset")]
    HttpAsset { path: String, range: Option<String> },
    /// The node's config scripts, in order.
    #[serde(rename = "config.pull")]
    ConfigPull { scripts: Vec<String> },
    #[serde(rename = "config.script")]
    ScriptFetch { script: String },
    #[serde(rename = "report.booted")]
    ReportBooted { output: String },
    #[serde(rename = "report.script")]
    ReportScript {
        script: String,
        status: i32,
        duration_ms: Option<u64>,
        /// The tail of its output.
        output: String,
    },
    #[serde(rename = "report.configured")]
    ReportConfigured { output: String },
    /// The node reported a failure: of `script` (with its `status`, if it
    /// said), or of no script in particular.
    #[serde(rename = "report.failed")]
    ReportFailed {
        script: Option<String>,
        status: Option<i32>,
        output: String,
    },
    /// The installer of `bootenv` called back.
    #[serde(rename = "report.installed")]
    ReportInstalled { bootenv: String, output: String },
    #[serde(rename = "http.seed")]
    HttpSeed { document: Document },
    #[serde(rename = "http.secret_refused")]
    SecretRefused {
        document: Document,
        /// The address it was asked from, if known.
        #[schema(value_type = Option<String>, format = Ipv4)]
        from: Option<Ipv4Addr>,
    },
    #[serde(rename = "state")]
    State(StateChange),
    #[serde(rename = "bootenv.changed")]
    BootenvChanged {
        from: BootenvFields,
        to: BootenvFields,
        cause: BootenvCause,
    },
    #[serde(rename = "admin.change")]
    AdminChange {
        /// The API token, by its name in `api.tokens_file` (or its fingerprint).
        actor: String,
        /// `create`, `patch`, `bulk` or `import`.
        op: String,
        /// A bulk edit's label selector.
        selector: Option<String>,
        fields: Vec<FieldChange>,
        /// The node was protected and the change forced.
        forced: bool,
    },
    #[serde(rename = "admin.delete")]
    AdminDelete {
        actor: String,
        record: DeletedRecord,
        forced: bool,
    },
    #[serde(rename = "power")]
    Power {
        /// Who asked: an API token (as `admin.change` names it) or a rollout.
        actor: String,
        action: PowerAction,
        /// The BMC, as driver and address.
        bmc: String,
        /// The power before the action, when it could be read.
        before: Option<PowerState>,
        /// Whether the action was done.
        ok: bool,
        /// What was done, or why nothing (or not all of it) was.
        detail: String,
    },
    #[serde(rename = "rollout")]
    Rollout {
        /// The rollout's id.
        rollout: String,
        /// `drain`, `bootenv`, `installed`, `undrain`, `done`, `failed`,
        /// `reverted` or `skipped`.
        step: String,
        ok: bool,
        detail: String,
    },
    #[serde(rename = "identity")]
    Identity {
        /// The MAC on the other side: the one replaced, or its successor.
        #[schema(value_type = String)]
        other: Mac,
        /// What both were known by: `port …` or `uuid …`.
        by: String,
        /// This record took the other's identity (it is the new machine),
        /// or gave its own up to it (it is the old one).
        took_over: bool,
    },
    /// An event stored before events had data: its kind and its sentence.
    #[serde(rename = "note")]
    Note { of: EventKind, text: String },
}

impl EventData {
    pub fn kind(&self) -> EventKind {
        match self {
            EventData::DhcpOffer { .. } => EventKind::DhcpOffer,
            EventData::DhcpAck { .. } => EventKind::DhcpAck,
            EventData::DhcpNak { .. } => EventKind::DhcpNak,
            EventData::DhcpRelease { .. } => EventKind::DhcpRelease,
            EventData::DhcpDecline { .. } => EventKind::DhcpDecline,
            EventData::DhcpIgnored { .. } => EventKind::DhcpIgnored,
            EventData::DhcpRelay { .. } => EventKind::DhcpRelay,
            EventData::TftpStart { .. } => EventKind::TftpStart,
            EventData::TftpSent { .. } => EventKind::TftpSent,
            EventData::TftpStopped { .. } => EventKind::TftpStopped,
            EventData::HttpScript { .. } => EventKind::HttpScript,
            EventData::HttpKernel { .. } => EventKind::HttpKernel,
            EventData::HttpInitrd { .. } => EventKind::HttpInitrd,
            EventData::HttpAsset { .. } => EventKind::HttpAsset,
            EventData::ConfigPull { .. } => EventKind::ConfigPull,
            EventData::ScriptFetch { .. } => EventKind::ScriptFetch,
            EventData::ReportBooted { .. } => EventKind::ReportBooted,
            EventData::ReportScript { .. } => EventKind::ReportScript,
            EventData::ReportConfigured { .. } => EventKind::ReportConfigured,
            EventData::ReportFailed { .. } => EventKind::ReportFailed,
            EventData::ReportInstalled { .. } => EventKind::ReportInstalled,
            EventData::HttpSeed { .. } => EventKind::HttpSeed,
            EventData::SecretRefused { .. } => EventKind::SecretRefused,
            EventData::State(_) => EventKind::State,
            EventData::BootenvChanged { .. } => EventKind::BootenvChanged,
            EventData::AdminChange { .. } => EventKind::AdminChange,
            EventData::AdminDelete { .. } => EventKind::AdminDelete,
            EventData::Power { .. } => EventKind::Power,
            EventData::Rollout { .. } => EventKind::Rollout,
            EventData::Identity { .. } => EventKind::Identity,
            EventData::Note { of, .. } => *of,
        }
    }

    /// A state transition.
    pub fn moved(from: NodeState, to: NodeState, reason: impl Into<String>) -> EventData {
        EventData::State(StateChange::Moved {
            from,
            to,
            reason: reason.into(),
        })
    }

    /// What a `report.failed` says failed: the node's state reason.
    pub fn failure_reason(script: Option<&str>, status: Option<i32>) -> String {
        match (script, status) {
            (Some(s), Some(status)) => format!("script {s} exited {status}"),
            (Some(s), None) => format!("script {s} failed"),
            (None, _) => "the node reported a failure".to_string(),
        }
    }

    /// The first line of a `report.script` sentence: `a.sh exited 0 in 2s`.
    pub fn script_result(script: &str, status: i32, duration_ms: Option<u64>) -> String {
        let took = duration_ms
            .map(|d| {
                format!(
                    " in {}",
                    humantime::format_duration(Duration::from_millis(d))
                )
            })
            .unwrap_or_default();
        format!("{script} exited {status}{took}")
    }
}

/// The `dhcp.offer` / `dhcp.ack` sentence.
fn dhcp_sentence(
    f: &mut fmt::Formatter<'_>,
    service: DhcpService,
    addr: Option<Ipv4Addr>,
    boot_file: &Option<BootTarget>,
    arch: Option<ClientArch>,
    ipxe: bool,
) -> fmt::Result {
    match (service, addr) {
        (DhcpService::Proxy, _) => f.write_str("proxyDHCP: ")?,
        (DhcpService::BootServer, _) => f.write_str("boot server (4011): ")?,
        (DhcpService::Dhcp, Some(ip)) => write!(f, "{ip}, ")?,
        (DhcpService::Dhcp, None) => f.write_str("-, ")?,
    }
    let who = match (ipxe, arch) {
        (true, Some(a)) => format!("iPXE, arch {a}"),
        (false, Some(a)) => format!("firmware, arch {a}"),
        (_, None) => "no PXE".to_string(),
    };
    match boot_file {
        None => write!(f, "no boot file ({who})"),
        Some(b @ BootTarget::Tftp(_)) => write!(f, "{b} by TFTP ({who})"),
        Some(b) => write!(f, "{b} ({who})"),
    }
}

impl fmt::Display for EventData {
    /// The sentence a person reads on the timeline.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            EventData::DhcpOffer {
                service,
                addr,
                boot_file,
                arch,
                ipxe,
            }
            | EventData::DhcpAck {
                service,
                addr,
                boot_file,
                arch,
                ipxe,
            } => dhcp_sentence(f, *service, *addr, boot_file, *arch, *ipxe),
            EventData::DhcpNak { reason } | EventData::DhcpIgnored { reason } => {
                f.write_str(reason)
            }
            EventData::DhcpRelease { addr, released } => {
                write!(f, "{addr}")?;
                if !released {
                    f.write_str(" (no such lease)")?;
                }
                Ok(())
            }
            EventData::DhcpDecline { addr } => {
                write!(f, "{addr} is in use by another host; quarantined")
            }
            EventData::DhcpRelay { info } => write!(f, "relay agent information: {info}"),
            EventData::TftpStart { file, size } | EventData::TftpSent { file, size } => {
                write!(f, "{file} ({size} bytes)")
            }
            EventData::TftpStopped {
                file,
                acked,
                size,
                why,
            } => {
                let why = match why {
                    TftpStop::ClientError { code: 8, .. } if *acked == 0 => {
                        return write!(
                            f,
                            "{file}: ended before any data was sent (a size probe, or the client refused the options)"
                        );
                    }
                    TftpStop::ClientError { code, message } => {
                        format!("the client sent error {code} ({message})")
                    }
                    TftpStop::TimedOut => "the client stopped acknowledging".to_string(),
                    TftpStop::Unacknowledged => {
                        return write!(
                            f,
                            "{file}: dropped, the client acknowledged nothing (tftp.first_ack_timeout; a spoofed or vanished client)"
                        );
                    }
                    TftpStop::Busy { wait_ms } => {
                        return write!(
                            f,
                            "{file}: refused, no transfer slot came free within {:?} (tftp.max_transfers)",
                            Duration::from_millis(*wait_ms)
                        );
                    }
                    TftpStop::Failed { error } => error.clone(),
                };
                write!(
                    f,
                    "{file}: stopped after {acked} of {size} bytes acknowledged: {why}"
                )
            }
            EventData::HttpScript {
                bootenv,
                arch,
                choice,
            } => match choice {
                Choice::Base => write!(f, "bootenv {bootenv}, arch {arch}"),
                Choice::Once => write!(f, "bootenv {bootenv}, arch {arch}, once"),
                Choice::Lease { until } => {
                    write!(f, "bootenv {bootenv}, arch {arch}, until {until}")
                }
            },
            EventData::HttpKernel { path, range }
            | EventData::HttpInitrd { path, range }
            | EventData::HttpAsset { path, range } => match range {
                Some(r) => write!(f, "{path}, {r}"),
                None => f.write_str(path),
            },
            EventData::ConfigPull { scripts } => f.write_str(&scripts.join(", ")),
            EventData::ScriptFetch { script } => f.write_str(script),
            EventData::ReportBooted { output } | EventData::ReportConfigured { output } => {
                f.write_str(output)
            }
            EventData::ReportScript {
                script,
                status,
                duration_ms,
                output,
            } => write!(
                f,
                "{}\n{output}",
                EventData::script_result(script, *status, *duration_ms)
            ),
            EventData::ReportFailed {
                script,
                status,
                output,
            } => write!(
                f,
                "{}\n{output}",
                EventData::failure_reason(script.as_deref(), *status)
            ),
            EventData::ReportInstalled { bootenv, output } => {
                write!(f, "bootenv {bootenv}\n{output}")
            }
            EventData::HttpSeed { document } => match document {
                Document::CloudInit { name } => write!(f, "cloud-init {name}"),
                Document::Answers { name } => write!(f, "answers {name}"),
                Document::ConfigScript { name } => write!(f, "config script {name}"),
            },
            EventData::SecretRefused { document, from } => {
                write!(f, "{document} asked for again in the same boot, from ")?;
                match from {
                    Some(ip) => write!(f, "{ip}")?,
                    None => f.write_str("an unknown address")?,
                }
                f.write_str(": refused")
            }
            EventData::State(StateChange::Created {
                subnet,
                via,
                bootenv,
            }) => {
                f.write_str("new node on ")?;
                match subnet {
                    Some(net) => write!(f, "{net}")?,
                    None => f.write_str("outside every [[dhcp.subnet]]")?,
                }
                write!(f, " ({via}), bootenv {bootenv}")
            }
            EventData::State(StateChange::Moved { from, to, reason }) => {
                write!(f, "{from} -> {to}: {reason}")
            }
            EventData::BootenvChanged { from, to, cause } => {
                write!(f, "{from} -> {to}: {cause}")
            }
            EventData::AdminChange {
                actor,
                op,
                selector,
                fields,
                forced,
            } => {
                write!(f, "{actor} ({op}")?;
                if let Some(s) = selector {
                    write!(f, " `{s}`")?;
                }
                f.write_str("): ")?;
                for (i, c) in fields.iter().enumerate() {
                    if i > 0 {
                        f.write_str("; ")?;
                    }
                    write!(f, "{c}")?;
                }
                if *forced {
                    f.write_str("; forced (the node is protected)")?;
                }
                Ok(())
            }
            EventData::AdminDelete {
                actor,
                record,
                forced,
            } => {
                write!(
                    f,
                    "{actor} (delete): deleted the record: hostname {}, bootenv {}",
                    record.hostname, record.bootenv
                )?;
                if let Some(b) = &record.next_bootenv {
                    write!(f, ", next_bootenv {b}")?;
                }
                write!(f, ", state {}", record.state)?;
                if record.protected {
                    f.write_str(", protected")?;
                }
                if *forced {
                    f.write_str("; forced (the node is protected)")?;
                }
                Ok(())
            }
            EventData::Power {
                actor,
                action,
                bmc,
                ok,
                detail,
                ..
            } => {
                let outcome = if *ok { "" } else { "FAILED: " };
                write!(f, "{action} by {actor} via {bmc}: {outcome}{detail}")
            }
            EventData::Rollout {
                rollout,
                step,
                ok,
                detail,
            } => {
                // A `failed` step says so by its name.
                let outcome = if *ok || step == "failed" {
                    ""
                } else {
                    "FAILED: "
                };
                write!(f, "rollout {rollout}: {step}: {outcome}{detail}")
            }
            EventData::Identity {
                other,
                by,
                took_over: true,
            } => write!(
                f,
                "replaces {other} (same {by}): its hostname, labels, params and bootenv are this node's now"
            ),
            EventData::Identity {
                other,
                by,
                took_over: false,
            } => write!(
                f,
                "replaced by {other} (same {by}): its hostname, labels, params and bootenv went there"
            ),
            EventData::Note { text, .. } => f.write_str(text),
        }
    }
}

/// One step of a node's timeline.
#[derive(Clone, Debug, PartialEq)]
pub struct Event {
    pub at: Timestamp,
    pub data: EventData,
    /// The appliance that recorded it, where several share one store
    /// (PostgreSQL); none on a store of its own.
    pub appliance: Option<String>,
}

impl Event {
    pub fn new(at: Timestamp, data: EventData) -> Event {
        Event {
            at,
            data,
            appliance: None,
        }
    }

    pub fn kind(&self) -> EventKind {
        self.data.kind()
    }

    /// The sentence a person reads, rendered from the data.
    pub fn sentence(&self) -> String {
        self.data.to_string()
    }
}

impl fmt::Display for Event {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.data.fmt(f)
    }
}

/// The API's form of an event: when, its kind, the sentence (`detail`) and
/// the data it was rendered from.
#[derive(Serialize, utoipa::ToSchema)]
#[schema(as = Event)]
struct EventJson<'a> {
    at: Timestamp,
    kind: EventKind,
    /// The sentence a person reads, rendered from `data`.
    detail: String,
    data: &'a EventData,
    /// The appliance that recorded the event, where several share one
    /// PostgreSQL store; absent on a store of its own.
    #[serde(skip_serializing_if = "Option::is_none")]
    appliance: Option<&'a str>,
}

impl Serialize for Event {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        EventJson {
            at: self.at,
            kind: self.kind(),
            detail: self.sentence(),
            data: &self.data,
            appliance: self.appliance.as_deref(),
        }
        .serialize(s)
    }
}

impl utoipa::PartialSchema for Event {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        <EventJson<'static> as utoipa::PartialSchema>::schema()
    }
}

impl utoipa::ToSchema for Event {
    fn name() -> std::borrow::Cow<'static, str> {
        "Event".into()
    }

    fn schemas(
        schemas: &mut Vec<(
            String,
            utoipa::openapi::RefOr<utoipa::openapi::schema::Schema>,
        )>,
    ) {
        <EventJson<'static> as utoipa::ToSchema>::schemas(schemas);
    }
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

    /// One event of every kind rackboot records as it is stored, and the
    /// sentence it reads as (`testdata/events.jsonl`, one JSON object a
    /// line: `sentence` and `data`): the sentences are those the timeline
    /// showed before events had data, byte for byte, and the stored form of
    /// each is one a later rackboot must still read.
    fn examples() -> Vec<(EventData, String)> {
        include_str!("testdata/events.jsonl")
            .lines()
            .enumerate()
            .map(|(i, line)| {
                let example: serde_json::Value = serde_json::from_str(line)
                    .unwrap_or_else(|e| panic!("events.jsonl line {}: {e}", i + 1));
                let data = serde_json::from_value(example["data"].clone())
                    .unwrap_or_else(|e| panic!("events.jsonl line {}: {e}", i + 1));
                (data, example["sentence"].as_str().unwrap().to_string())
            })
            .collect()
    }

    #[test]
    fn sentences_are_rendered_from_the_data() {
        for (data, want) in examples() {
            assert_eq!(data.to_string(), want, "{data:?}");
        }
    }

    /// Stored as JSON tagged by the kind's name, and read back the same.
    #[test]
    fn data_round_trips_through_json_tagged_by_kind() {
        let mut kinds = std::collections::BTreeSet::new();
        for (data, _) in examples() {
            let json = serde_json::to_value(&data).unwrap();
            let tag = json["kind"].as_str().unwrap();
            match &data {
                EventData::Note { of, .. } => {
                    assert_eq!((tag, json["of"].as_str()), ("note", Some(of.as_str())))
                }
                _ => assert_eq!(tag, data.kind().as_str()),
            }
            kinds.insert(data.kind().as_str());
            let back: EventData = serde_json::from_str(&json.to_string()).unwrap();
            assert_eq!(back, data);
        }
        // Every kind rackboot records has an example (DISCOVER and REQUEST
        // are names for filters only: nothing records them).
        for kind in EventKind::ALL {
            if !matches!(kind, EventKind::DhcpDiscover | EventKind::DhcpRequest) {
                assert!(kinds.contains(kind.as_str()), "{kind} has no example");
            }
        }
    }

    /// What the API shows: when, the kind, the sentence and the data.
    #[test]
    fn the_api_form_has_the_sentence_and_the_data() {
        let e = Event::new(
            Timestamp(0),
            EventData::DhcpRelease {
                addr: "10.0.0.9".parse().unwrap(),
                released: true,
            },
        );
        assert_eq!(
            serde_json::to_value(&e).unwrap(),
            serde_json::json!({
                "at": "1970-01-01T00:00:00.000Z",
                "kind": "dhcp.release",
                "detail": "10.0.0.9",
                "data": {"kind": "dhcp.release", "addr": "10.0.0.9", "released": true},
            })
        );
    }
}
