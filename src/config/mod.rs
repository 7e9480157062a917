//! The configuration file: a raw serde layer that rejects unknown keys, then a
//! validated [`Config`] that the rest of rackboot trusts.

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};

use ipnet::Ipv4Net;
use serde::Deserialize;

/// Why the configuration cannot be used. Every message names the file, and
/// the key or line, so an admin can fix it without reading code.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    /// `message` starts with `line L, column C:` when the parser knows where.
    #[error("config file {path}: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("config file {path}: key `{key}`: {reason}")]
    Invalid {
        path: PathBuf,
        key: String,
        reason: String,
    },
}

impl ConfigError {
    pub fn is_parse(&self) -> bool {
        matches!(self, ConfigError::Parse { .. })
    }
}

mod raw {
    use super::*;

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    pub struct Config {
        pub state_dir: PathBuf,
        pub assets_dir: PathBuf,
        #[serde(default = "default_bootenvs_dir")]
        pub bootenvs_dir: PathBuf,
        #[serde(default = "default_scripts_dir")]
        pub scripts_dir: PathBuf,
        #[serde(default)]
        pub assets: Assets,
        #[serde(default = "default_cloud_init_dir")]
        pub cloud_init_dir: PathBuf,
        #[serde(default = "default_answers_dir")]
        pub answers_dir: PathBuf,
        #[serde(default = "default_secrets_dir")]
        pub secrets_dir: PathBuf,
        pub network: Network,
        #[serde(default)]
        pub boot: Boot,
        pub dhcp: Dhcp,
        #[serde(default)]
        pub tftp: Tftp,
        #[serde(default)]
        pub http: Http,
        #[serde(default)]
        pub dns: Dns,
        #[serde(default)]
        pub lifecycle: Lifecycle,
        #[serde(default)]
        pub api: Api,
        #[serde(default)]
        pub admission: Admission,
        #[serde(default)]
        pub nodes: Nodes,
        #[serde(default)]
        pub store: Store,
        #[serde(default)]
        pub service: Service,
    }

    /// `[nodes]`: what records made by rackboot itself look like.
    #[derive(Debug, Default, Deserialize)]
    #[serde(deny_unknown_fields)]
    pub struct Nodes {
        #[serde(default)]
        pub default_hostname: super::HostnameScheme,
    }

    /// `[store]`: how durable the lease journal is.
    #[derive(Debug, Default, Deserialize)]
    #[serde(deny_unknown_fields)]
    pub struct Store {
        #[serde(default)]
        pub sync: crate::store::SyncMode,
    }

    /// `[service]`: who `rackboot serve` runs as once its sockets are bound.
    #[derive(Debug, Default, Deserialize)]
    #[serde(deny_unknown_fields)]
    pub struct Service {
        pub user: Option<String>,
        pub group: Option<String>,
    }

    /// Durations as humantime text, like `[lifecycle]`.
    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    pub struct Admission {
        #[serde(default)]
        pub max_booting: u32,
        #[serde(default = "slot_timeout")]
        pub slot_timeout: String,
    }
    impl Default for Admission {
        fn default() -> Self {
            Admission {
                max_booting: 0,
                slot_timeout: slot_timeout(),
            }
        }
    }
    fn slot_timeout() -> String {
        "5m".into()
    }

    #[derive(Debug, Default, Deserialize)]
    #[serde(deny_unknown_fields)]
    pub struct Api {
        pub tokens_file: Option<PathBuf>,
        pub tls_cert: Option<PathBuf>,
        pub tls_key: Option<PathBuf>,
        pub tls_port: Option<u16>,
    }

    fn default_bootenvs_dir() -> PathBuf {
        "bootenvs".into()
    }
    fn default_scripts_dir() -> PathBuf {
        "scripts".into()
    }
    fn default_cloud_init_dir() -> PathBuf {
        "cloud-init".into()
    }
    fn default_answers_dir() -> PathBuf {
        "answers".into()
    }
    fn default_secrets_dir() -> PathBuf {
        "secrets".into()
    }

    /// `[assets]`: the watched drop folder.
    #[derive(Debug, Default, Deserialize)]
    #[serde(deny_unknown_fields)]
    pub struct Assets {
        pub drop_dir: Option<PathBuf>,
    }

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    pub struct Network {
        pub interface: String,
        pub address: Option<Ipv4Addr>,
    }

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    pub struct Boot {
        #[serde(default = "default_bootenv")]
        pub default_bootenv: String,
        #[serde(default)]
        pub local_boot: super::LocalBoot,
    }
    impl Default for Boot {
        fn default() -> Self {
            Boot {
                default_bootenv: default_bootenv(),
                local_boot: super::LocalBoot::default(),
            }
        }
    }
    fn default_bootenv() -> String {
        "discovery".into()
    }

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    pub struct Dhcp {
        #[serde(default = "yes")]
        pub enabled: bool,
        #[serde(default = "default_lease")]
        pub lease_seconds: u32,
        #[serde(default)]
        pub loaders: Loaders,
        #[serde(default = "yes")]
        pub upgrade_old_ipxe: bool,
        #[serde(default = "default_rate_per_mac")]
        pub rate_limit_per_mac: u32,
        #[serde(default = "default_rate_per_relay")]
        pub rate_limit_per_relay: u32,
        #[serde(default)]
        pub subnet: Vec<Subnet>,
    }

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    pub struct Subnet {
        pub cidr: Ipv4Net,
        #[serde(default)]
        pub ranges: Vec<[Ipv4Addr; 2]>,
        pub router: Option<Ipv4Addr>,
        pub lease_seconds: Option<u32>,
        #[serde(default)]
        pub mode: super::SubnetMode,
        #[serde(default)]
        pub unknown_clients: super::UnknownClients,
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
    }
    fn default_unknown_share() -> u8 {
        90
    }
    fn default_lease() -> u32 {
        3600
    }
    fn default_rate_per_mac() -> u32 {
        20
    }
    fn default_rate_per_relay() -> u32 {
        50_000
    }

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    pub struct Loaders {
        #[serde(default = "bios_loader")]
        pub bios: String,
        #[serde(default = "x64_loader")]
        pub x86_64_efi: String,
        #[serde(default = "arm64_loader")]
        pub arm64_efi: String,
    }
    impl Default for Loaders {
        fn default() -> Self {
            Loaders {
                bios: bios_loader(),
                x86_64_efi: x64_loader(),
                arm64_efi: arm64_loader(),
            }
        }
    }
    fn bios_loader() -> String {
        "undionly.kpxe".into()
    }
    fn x64_loader() -> String {
        "ipxe-amd64.efi".into()
    }
    fn arm64_loader() -> String {
        "ipxe-arm64.efi".into()
    }

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    pub struct Tftp {
        #[serde(default = "yes")]
        pub enabled: bool,
        #[serde(default = "tftp_port")]
        pub port: u16,
        #[serde(default = "tftp_max_transfers")]
        pub max_transfers: usize,
        #[serde(default = "tftp_max_blksize")]
        pub max_blksize: u32,
        #[serde(default = "tftp_max_windowsize")]
        pub max_windowsize: u32,
        #[serde(default = "tftp_timeout")]
        pub timeout: String,
        #[serde(default = "tftp_max_timeout")]
        pub max_timeout: String,
        #[serde(default = "tftp_give_up")]
        pub give_up: String,
        #[serde(default = "tftp_first_ack_timeout")]
        pub first_ack_timeout: String,
        #[serde(default = "tftp_max_transfers_per_address")]
        pub max_transfers_per_address: usize,
        #[serde(default)]
        pub honor_client_timeout: bool,
        #[serde(default = "tftp_busy_poll")]
        pub busy_poll: String,
    }
    impl Default for Tftp {
        fn default() -> Self {
            Tftp {
                enabled: true,
                port: tftp_port(),
                max_transfers: tftp_max_transfers(),
                max_blksize: tftp_max_blksize(),
                max_windowsize: tftp_max_windowsize(),
                timeout: tftp_timeout(),
                max_timeout: tftp_max_timeout(),
                give_up: tftp_give_up(),
                first_ack_timeout: tftp_first_ack_timeout(),
                max_transfers_per_address: tftp_max_transfers_per_address(),
                honor_client_timeout: false,
                busy_poll: tftp_busy_poll(),
            }
        }
    }
    fn tftp_port() -> u16 {
        69
    }
    fn tftp_max_transfers() -> usize {
        256
    }
    fn tftp_max_blksize() -> u32 {
        u32::from(crate::tftp::packet::MAX_BLKSIZE)
    }
    fn tftp_max_windowsize() -> u32 {
        64
    }
    fn tftp_timeout() -> String {
        "1s".into()
    }
    fn tftp_max_timeout() -> String {
        "8s".into()
    }
    fn tftp_give_up() -> String {
        "20s".into()
    }
    fn tftp_first_ack_timeout() -> String {
        "4s".into()
    }
    fn tftp_max_transfers_per_address() -> usize {
        8
    }
    fn tftp_busy_poll() -> String {
        "200us".into()
    }

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    pub struct Http {
        #[serde(default = "yes")]
        pub enabled: bool,
        #[serde(default = "http_port")]
        pub port: u16,
        /// 0: from the open-files limit.
        #[serde(default)]
        pub max_connections: usize,
        #[serde(default = "http_max_connections_per_address")]
        pub max_connections_per_address: usize,
        /// Absent: an eighth of max_connections.
        #[serde(default)]
        pub reserved_connections: Option<usize>,
        #[serde(default = "http_header_timeout")]
        pub header_timeout: String,
        #[serde(default = "http_body_timeout")]
        pub body_timeout: String,
        #[serde(default = "http_idle_timeout")]
        pub idle_timeout: String,
        #[serde(default = "http_send_timeout")]
        pub send_timeout: String,
        /// Off only for `rackboot storm` and tests that fetch many nodes'
        /// scripts from one address.
        #[serde(default = "yes")]
        pub bind_tokens_to_address: bool,
    }
    impl Default for Http {
        fn default() -> Self {
            Http {
                enabled: true,
                port: http_port(),
                max_connections: 0,
                max_connections_per_address: http_max_connections_per_address(),
                reserved_connections: None,
                header_timeout: http_header_timeout(),
                body_timeout: http_body_timeout(),
                idle_timeout: http_idle_timeout(),
                send_timeout: http_send_timeout(),
                bind_tokens_to_address: true,
            }
        }
    }
    fn http_port() -> u16 {
        80
    }
    fn http_max_connections_per_address() -> usize {
        crate::http::bounds::Bounds::default().per_address
    }
    fn http_header_timeout() -> String {
        "10s".into()
    }
    fn http_body_timeout() -> String {
        "30s".into()
    }
    fn http_idle_timeout() -> String {
        "20s".into()
    }
    fn http_send_timeout() -> String {
        "30s".into()
    }

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    pub struct Dns {
        #[serde(default = "yes")]
        pub enabled: bool,
        #[serde(default = "dns_port")]
        pub port: u16,
        #[serde(default = "dns_domain")]
        pub domain: String,
        #[serde(default)]
        pub forwarders: Vec<String>,
        #[serde(default)]
        pub names: super::DnsNames,
    }
    impl Default for Dns {
        fn default() -> Self {
            Dns {
                enabled: true,
                port: dns_port(),
                domain: dns_domain(),
                forwarders: Vec::new(),
                names: super::DnsNames::default(),
            }
        }
    }
    fn dns_port() -> u16 {
        53
    }
    fn dns_domain() -> String {
        "rack.internal".into()
    }

    fn yes() -> bool {
        true
    }

    /// Durations as humantime text ("10m", "2h 30m").
    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    pub struct Lifecycle {
        #[serde(default = "report_timeout")]
        pub report_timeout: String,
        #[serde(default = "install_timeout")]
        pub install_timeout: String,
        #[serde(default = "heartbeat_timeout")]
        pub heartbeat_timeout: String,
        /// "0" or "never": never.
        #[serde(default = "reap_discovered_after")]
        pub reap_discovered_after: String,
    }
    impl Default for Lifecycle {
        fn default() -> Self {
            Lifecycle {
                report_timeout: report_timeout(),
                install_timeout: install_timeout(),
                heartbeat_timeout: heartbeat_timeout(),
                reap_discovered_after: reap_discovered_after(),
            }
        }
    }
    fn reap_discovered_after() -> String {
        "1h".into()
    }
    fn report_timeout() -> String {
        "10m".into()
    }
    fn install_timeout() -> String {
        "3h".into()
    }
    fn heartbeat_timeout() -> String {
        "2m".into()
    }
}

/// A validated configuration; paths are absolute.
#[derive(Debug, Clone)]
pub struct Config {
    /// The file it came from, for messages.
    pub path: PathBuf,
    pub state_dir: PathBuf,
    pub assets_dir: PathBuf,
    pub bootenvs_dir: PathBuf,
    pub scripts_dir: PathBuf,
    /// `[assets]`.
    pub assets: AssetsConfig,
    /// cloud-init NoCloud templates (`meta-data`, `user-data`, `vendor-data`).
    pub cloud_init_dir: PathBuf,
    /// Installer answer file templates (kickstart, preseed).
    pub answers_dir: PathBuf,
    /// Files the `secret("name")` template function reads (`secrets_dir`).
    pub secrets_dir: PathBuf,
    pub interface: String,
    /// rackboot's address on the boot network, if fixed in the file; otherwise
    /// it is read from the interface at start-up.
    pub address: Option<Ipv4Addr>,
    pub default_bootenv: String,
    pub dhcp: DhcpConfig,
    pub tftp: Option<u16>,
    /// How many TFTP reads send data at once; the rest wait their turn
    /// (`[tftp] max_transfers`, at least 1).
    pub tftp_max_transfers: usize,
    /// Transfers one client address may have running or queued at once
    /// (`[tftp] max_transfers_per_address`; 0: no limit).
    pub tftp_max_per_address: usize,
    /// Option caps and retransmission timing of the TFTP engine (`[tftp]`).
    pub tftp_limits: crate::tftp::Limits,
    /// How long a lock-step transfer polls for its next ACK before it
    /// sleeps (`[tftp] busy_poll`; zero: never).
    pub tftp_busy_poll: std::time::Duration,
    pub http: Option<u16>,
    /// Connection caps and timeouts of HTTP and HTTPS (`[http]`).
    pub http_bounds: crate::http::bounds::Bounds,
    /// `[http] bind_tokens_to_address`: node tokens and boot scripts only
    /// for the address of their node (off: from anywhere, for load tests).
    pub bind_tokens_to_address: bool,
    pub dns: Option<DnsConfig>,
    /// `[nodes] default_hostname`: the hostname a record rackboot makes gets.
    pub default_hostname: HostnameScheme,
    pub lifecycle: crate::boot::Timeouts,
    /// How long a record made for an unknown MAC may stay idle in
    /// `discovered` (no boot, no live lease, untouched by an admin) before
    /// the sweep removes it (`[lifecycle] reap_discovered_after`); `None`:
    /// never.
    pub reap_discovered_after: Option<std::time::Duration>,
    pub api: ApiConfig,
    pub admission: AdmissionConfig,
    /// `[store] sync`: what survives a power loss.
    pub store_sync: crate::store::SyncMode,
    /// `[service] user` (and `group`): whom `rackboot serve`, started as
    /// root, becomes once every socket is bound.
    pub run_as: Option<RunAsConfig>,
}

/// `[service]`: the account to switch to (names, looked up at start-up).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunAsConfig {
    pub user: String,
    /// The user's primary group when not set.
    pub group: Option<String>,
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
    pub slot_timeout: std::time::Duration,
}

/// `[assets]`: where kernels dropped for import arrive.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AssetsConfig {
    /// The watched drop folder (absolute), if any; see [`crate::assets::drop`](mod@crate::assets::drop).
    pub drop_dir: Option<PathBuf>,
}

/// The admin API's access and transport.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ApiConfig {
    /// Bearer tokens, one `<scope> <token> [name]` a line; `None` disables
    /// the API (every `/api/v1` request is refused).
    pub tokens_file: Option<PathBuf>,
    /// The same routes over HTTPS.
    pub tls: Option<TlsConfig>,
}

/// PEM files and the port of the API's HTTPS listener.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsConfig {
    pub cert: PathBuf,
    pub key: PathBuf,
    pub port: u16,
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

/// How a node whose bootenv is `local` is sent to its disk.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LocalBoot {
    /// The normal chain, ending in an iPXE script that exits to the disk
    /// (the bootenv's `local` method).
    #[default]
    Script,
    /// An address but no boot file: the firmware's network boot fails at
    /// once and it moves on to the next boot device.
    NoBootFile,
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
}

impl DhcpConfig {
    /// The subnet an address (a relay's giaddr, rackboot's own address) lies in.
    pub fn subnet_of(&self, ip: Ipv4Addr) -> Option<&SubnetConfig> {
        self.subnets.iter().find(|s| s.cidr.contains(&ip))
    }
}

/// First-stage loader per boot architecture, relative to the assets directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoaderMap {
    pub bios: String,
    pub x86_64_efi: String,
    pub arm64_efi: String,
    /// Chainload these loaders into an iPXE too old to support HTTPS (old
    /// NIC option ROMs) instead of handing it the script.
    pub upgrade_old_ipxe: bool,
    /// What DHCP hands a node whose bootenv is `local`.
    pub local_boot: LocalBoot,
}

#[derive(Debug, Clone)]
pub struct DnsConfig {
    pub port: u16,
    pub domain: String,
    /// Upstream resolvers for names outside rackboot's zones, tried in order; empty: such
    /// names are refused.
    pub forwarders: Vec<std::net::SocketAddr>,
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

/// One `dns.forwarders` entry: an address (port 53) or address:port, IPv4 or `[IPv6]:port`.
fn parse_forwarder(text: &str) -> Option<std::net::SocketAddr> {
    let text = text.trim();
    text.parse().ok().or_else(|| {
        text.parse::<std::net::IpAddr>()
            .ok()
            .map(|ip| (ip, 53).into())
    })
}

/// One line for a TOML error: `line L, column C: what`, so every file error
/// reads the same and fits a log line (toml's own Display spans several lines).
pub fn toml_error(text: &str, e: &toml::de::Error) -> String {
    let what = e.message().trim_end();
    match e.span() {
        Some(span) => {
            let before = &text[..span.start.min(text.len())];
            let line = before.matches('\n').count() + 1;
            let column = before.len() - before.rfind('\n').map_or(0, |i| i + 1) + 1;
            format!("line {line}, column {column}: {what}")
        }
        None => what.to_string(),
    }
}

fn invalid_service(path: &Path, reason: &str) -> ConfigError {
    ConfigError::Invalid {
        path: path.to_path_buf(),
        key: "service".into(),
        reason: reason.into(),
    }
}

impl Config {
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        Config::parse(path, &text)
    }

    /// Parses `text` as if read from `path` (which anchors relative paths).
    pub fn parse(path: &Path, text: &str) -> Result<Config, ConfigError> {
        let raw: raw::Config = toml::from_str(text).map_err(|e| ConfigError::Parse {
            path: path.to_path_buf(),
            message: toml_error(text, &e),
        })?;
        let invalid = |key: &str, reason: String| ConfigError::Invalid {
            path: path.to_path_buf(),
            key: key.to_string(),
            reason,
        };
        let base = path
            .parent()
            .map(Path::to_path_buf)
            .unwrap_or_else(|| PathBuf::from("."));
        let base = if base.as_os_str().is_empty() {
            PathBuf::from(".")
        } else {
            base
        };
        let resolve = |p: &Path| {
            if p.is_absolute() {
                p.to_path_buf()
            } else {
                base.join(p)
            }
        };

        let d = &raw.dhcp;
        if d.enabled && d.subnet.is_empty() {
            return Err(invalid(
                "dhcp.subnet",
                "DHCP is enabled but no [[dhcp.subnet]] is configured".into(),
            ));
        }
        if d.lease_seconds < 60 {
            return Err(invalid(
                "dhcp.lease_seconds",
                format!("{} is too short: use at least 60", d.lease_seconds),
            ));
        }
        let mut subnets = Vec::with_capacity(d.subnet.len());
        let mut admission_subnets = Vec::with_capacity(d.subnet.len());
        for (i, sn) in d.subnet.iter().enumerate() {
            let key = |k: &str| format!("dhcp.subnet[{i}].{k}");
            let cidr = sn.cidr.trunc();
            if cidr != sn.cidr {
                return Err(invalid(
                    &key("cidr"),
                    format!("{} has host bits set; did you mean {cidr}?", sn.cidr),
                ));
            }
            if cidr.prefix_len() > 30 {
                return Err(invalid(
                    &key("cidr"),
                    format!("{cidr} is too small to serve"),
                ));
            }
            if let Some(j) = subnets
                .iter()
                .position(|o: &SubnetConfig| o.cidr.contains(&cidr) || cidr.contains(&o.cidr))
            {
                return Err(invalid(
                    &key("cidr"),
                    format!("{cidr} overlaps dhcp.subnet[{j}] ({})", subnets[j].cidr),
                ));
            }
            let mut ranges: Vec<(Ipv4Addr, Ipv4Addr)> = Vec::new();
            for &[first, last] in &sn.ranges {
                if !cidr.contains(&first) || !cidr.contains(&last) {
                    return Err(invalid(
                        &key("ranges"),
                        format!("{first}..{last} is not inside {cidr}"),
                    ));
                }
                if u32::from(first) > u32::from(last) {
                    return Err(invalid(
                        &key("ranges"),
                        format!("the first address {first} comes after the last {last}"),
                    ));
                }
                if first == cidr.network() || last == cidr.broadcast() {
                    return Err(invalid(
                        &key("ranges"),
                        format!("{first}..{last} includes {cidr}'s network or broadcast address"),
                    ));
                }
                if let Some((a, b)) = ranges.iter().find(|(a, b)| {
                    u32::from(first) <= u32::from(*b) && u32::from(*a) <= u32::from(last)
                }) {
                    return Err(invalid(
                        &key("ranges"),
                        format!("{first}..{last} overlaps {a}..{b}"),
                    ));
                }
                if let Some(addr) = raw.network.address
                    && (u32::from(first)..=u32::from(last)).contains(&u32::from(addr))
                {
                    return Err(invalid(
                        "network.address",
                        format!("{addr} lies inside {first}..{last}: it could be leased to a node"),
                    ));
                }
                ranges.push((first, last));
            }
            if sn.mode == SubnetMode::Proxy && !ranges.is_empty() {
                return Err(invalid(
                    &key("ranges"),
                    "a proxy subnet hands out no addresses: remove its ranges".into(),
                ));
            }
            if let Some(r) = sn.router
                && !cidr.contains(&r)
            {
                return Err(invalid(&key("router"), format!("{r} is not inside {cidr}")));
            }
            let lease_seconds = sn.lease_seconds.unwrap_or(d.lease_seconds);
            if lease_seconds < 60 {
                return Err(invalid(
                    &key("lease_seconds"),
                    format!("{lease_seconds} is too short: use at least 60"),
                ));
            }
            if sn.unknown_share > 100 {
                return Err(invalid(
                    &key("unknown_share"),
                    format!("{} is not a percentage: use 0 to 100", sn.unknown_share),
                ));
            }
            admission_subnets.push((cidr, sn.max_booting.unwrap_or(raw.admission.max_booting)));
            subnets.push(SubnetConfig {
                cidr,
                ranges,
                router: sn.router,
                lease_seconds,
                mode: sn.mode,
                unknown_clients: sn.unknown_clients,
                relays: sn.relays.clone(),
                unknown_share: sn.unknown_share,
                unknown_rate: sn.unknown_rate,
            });
        }
        if let Some(addr) = raw.network.address
            && d.enabled
            && !subnets.iter().any(|s| s.cidr.contains(&addr))
        {
            return Err(invalid(
                "network.address",
                format!("{addr} is inside no [[dhcp.subnet]]: add the boot network's subnet"),
            ));
        }
        if raw.tftp.max_transfers == 0 {
            return Err(invalid(
                "tftp.max_transfers",
                "must be at least 1: with 0 no transfer could ever start".into(),
            ));
        }
        if raw.network.interface.is_empty() {
            return Err(invalid(
                "network.interface",
                "must name an interface".into(),
            ));
        }
        for (key, loader) in [
            ("dhcp.loaders.bios", &d.loaders.bios),
            ("dhcp.loaders.x86_64_efi", &d.loaders.x86_64_efi),
            ("dhcp.loaders.arm64_efi", &d.loaders.arm64_efi),
        ] {
            if loader.is_empty() || loader.starts_with('/') || loader.contains("..") {
                return Err(invalid(
                    key,
                    format!("`{loader}` must be a path inside assets_dir"),
                ));
            }
        }
        let domain = raw.dns.domain.trim_end_matches('.').to_ascii_lowercase();
        if raw.dns.enabled
            && (domain.is_empty()
                || !domain.split('.').all(|l| {
                    !l.is_empty()
                        && l.len() <= 63
                        && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
                }))
        {
            return Err(invalid(
                "dns.domain",
                format!("`{}` is not a valid domain name", raw.dns.domain),
            ));
        }

        let mut forwarders = Vec::with_capacity(raw.dns.forwarders.len());
        for (i, text) in raw.dns.forwarders.iter().enumerate() {
            let key = format!("dns.forwarders[{i}]");
            let Some(addr) = parse_forwarder(text) else {
                return Err(invalid(
                    &key,
                    format!(
                        "`{text}` is not an address or address:port, e.g. \"10.0.0.53\" or \"10.0.0.53:5353\""
                    ),
                ));
            };
            if addr.port() == 0 {
                return Err(invalid(
                    &key,
                    format!("`{text}`: port 0 cannot be asked; leave the port out for 53"),
                ));
            }
            // rackboot asking itself would forward the question around in a circle.
            if raw.network.address.map(std::net::IpAddr::V4) == Some(addr.ip())
                && addr.port() == raw.dns.port
            {
                return Err(invalid(
                    &key,
                    format!(
                        "`{text}` is rackboot's own DNS (network.address, dns.port); name the site's resolvers"
                    ),
                ));
            }
            forwarders.push(addr);
        }

        let duration = |key: &str, text: &str| {
            let d = humantime::parse_duration(text).map_err(|e| {
                invalid(
                    key,
                    format!("`{text}` is not a duration ({e}); e.g. \"10m\""),
                )
            })?;
            if d < std::time::Duration::from_secs(1) {
                return Err(invalid(
                    key,
                    format!("`{text}` is too short: use at least 1s"),
                ));
            }
            Ok(d)
        };
        let tftp_limits = {
            let t = &raw.tftp;
            let (min, max) = (
                crate::tftp::packet::MIN_BLKSIZE,
                crate::tftp::packet::MAX_BLKSIZE,
            );
            let max_blksize = u16::try_from(t.max_blksize)
                .ok()
                .filter(|b| (min..=max).contains(b))
                .ok_or_else(|| {
                    invalid(
                        "tftp.max_blksize",
                        format!("{} is outside RFC 2348's {min}..={max}", t.max_blksize),
                    )
                })?;
            let max_windowsize = u16::try_from(t.max_windowsize)
                .ok()
                .filter(|&w| w >= 1)
                .ok_or_else(|| {
                    invalid(
                        "tftp.max_windowsize",
                        format!("{} is outside RFC 7440's 1..=65535", t.max_windowsize),
                    )
                })?;
            // Sub-second timeouts are allowed (a LAN answers in microseconds);
            // RFC 2349's range tops out at 255 s.
            let tftp_duration = |key: &str, text: &str| {
                let d = humantime::parse_duration(text).map_err(|e| {
                    invalid(
                        key,
                        format!("`{text}` is not a duration ({e}); e.g. \"1s\" or \"500ms\""),
                    )
                })?;
                if !(std::time::Duration::from_millis(10)..=std::time::Duration::from_secs(255))
                    .contains(&d)
                {
                    return Err(invalid(key, format!("`{text}` is outside 10ms..=255s")));
                }
                Ok(d)
            };
            let timeout = tftp_duration("tftp.timeout", &t.timeout)?;
            let max_timeout = tftp_duration("tftp.max_timeout", &t.max_timeout)?;
            let give_up = tftp_duration("tftp.give_up", &t.give_up)?;
            let first_ack = tftp_duration("tftp.first_ack_timeout", &t.first_ack_timeout)?;
            if max_timeout < timeout {
                return Err(invalid(
                    "tftp.max_timeout",
                    format!(
                        "{} is shorter than tftp.timeout ({})",
                        t.max_timeout, t.timeout
                    ),
                ));
            }
            if give_up < timeout {
                return Err(invalid(
                    "tftp.give_up",
                    format!(
                        "{} is shorter than tftp.timeout ({}): no retransmission could happen",
                        t.give_up, t.timeout
                    ),
                ));
            }
            if first_ack < timeout {
                return Err(invalid(
                    "tftp.first_ack_timeout",
                    format!(
                        "{} is shorter than tftp.timeout ({}): a client's first answer could never be waited for",
                        t.first_ack_timeout, t.timeout
                    ),
                ));
            }
            crate::tftp::Limits {
                max_blksize,
                max_windowsize,
                timeout,
                max_timeout,
                give_up,
                first_ack,
                honor_client_timeout: t.honor_client_timeout,
            }
        };
        let tftp_busy_poll = humantime::parse_duration(&raw.tftp.busy_poll)
            .map_err(|e| {
                invalid(
                    "tftp.busy_poll",
                    format!(
                        "`{}` is not a duration ({e}); e.g. \"200us\", or \"0s\" for never",
                        raw.tftp.busy_poll
                    ),
                )
            })
            .and_then(|d| {
                if d > std::time::Duration::from_millis(1) {
                    Err(invalid(
                        "tftp.busy_poll",
                        format!(
                            "`{}` is above 1ms: past that, sleeping costs less than it saves",
                            raw.tftp.busy_poll
                        ),
                    ))
                } else {
                    Ok(d)
                }
            })?;
        let lifecycle = crate::boot::Timeouts {
            report: duration("lifecycle.report_timeout", &raw.lifecycle.report_timeout)?,
            install: duration("lifecycle.install_timeout", &raw.lifecycle.install_timeout)?,
            heartbeat: duration(
                "lifecycle.heartbeat_timeout",
                &raw.lifecycle.heartbeat_timeout,
            )?,
        };
        let http_bounds = {
            let h = &raw.http;
            let max_connections = (h.max_connections > 0).then_some(h.max_connections);
            if let (Some(max), Some(reserve)) = (max_connections, h.reserved_connections)
                && reserve >= max
            {
                return Err(invalid(
                    "http.reserved_connections",
                    format!("{reserve} is not below http.max_connections ({max})"),
                ));
            }
            crate::http::bounds::Bounds {
                max_connections,
                per_address: h.max_connections_per_address,
                reserve: h.reserved_connections,
                timeouts: crate::http::bounds::Timeouts {
                    header: duration("http.header_timeout", &h.header_timeout)?,
                    body: duration("http.body_timeout", &h.body_timeout)?,
                    idle: duration("http.idle_timeout", &h.idle_timeout)?,
                    send: duration("http.send_timeout", &h.send_timeout)?,
                },
            }
        };
        let reap_discovered_after = match raw.lifecycle.reap_discovered_after.trim() {
            "0" | "never" | "none" => None,
            text => Some(duration("lifecycle.reap_discovered_after", text)?),
        };
        let admission = AdmissionConfig {
            subnets: admission_subnets,
            max_booting: raw.admission.max_booting,
            slot_timeout: duration("admission.slot_timeout", &raw.admission.slot_timeout)?,
        };
        let a = &raw.api;
        let tls = match (&a.tls_cert, &a.tls_key, a.tls_port) {
            (None, None, None) => None,
            (Some(cert), Some(key), Some(port)) => Some(TlsConfig {
                cert: resolve(cert),
                key: resolve(key),
                port,
            }),
            _ => {
                return Err(invalid(
                    "api.tls_cert",
                    "HTTPS needs all three of api.tls_cert, api.tls_key and api.tls_port".into(),
                ));
            }
        };
        if tls
            .as_ref()
            .is_some_and(|t| raw.http.enabled && t.port == raw.http.port)
        {
            return Err(invalid(
                "api.tls_port",
                format!("{} is http.port already: choose another", raw.http.port),
            ));
        }
        // A waiting agent's heartbeat is its long poll, which lasts up to
        // WAIT_MAX: a shorter timeout would call every idle node unreachable.
        let min_heartbeat = crate::boot::HEARTBEAT_MIN;
        if lifecycle.heartbeat < min_heartbeat {
            return Err(invalid(
                "lifecycle.heartbeat_timeout",
                format!(
                    "`{}` is shorter than {}: nodes heartbeat about every 25 s",
                    raw.lifecycle.heartbeat_timeout,
                    humantime::format_duration(min_heartbeat)
                ),
            ));
        }

        let run_as = match (raw.service.user, raw.service.group) {
            (Some(user), group) => {
                if user.is_empty() || group.as_deref() == Some("") {
                    return Err(invalid_service(
                        path,
                        "service.user and service.group must not be empty",
                    ));
                }
                Some(RunAsConfig { user, group })
            }
            (None, Some(_)) => {
                return Err(invalid_service(
                    path,
                    "service.group needs service.user (the account rackboot switches to after binding its ports)",
                ));
            }
            (None, None) => None,
        };
        Ok(Config {
            store_sync: raw.store.sync,
            run_as,
            lifecycle,
            reap_discovered_after,
            path: path.to_path_buf(),
            state_dir: resolve(&raw.state_dir),
            assets_dir: resolve(&raw.assets_dir),
            bootenvs_dir: resolve(&raw.bootenvs_dir),
            scripts_dir: resolve(&raw.scripts_dir),
            assets: AssetsConfig {
                drop_dir: raw.assets.drop_dir.as_deref().map(resolve),
            },
            cloud_init_dir: resolve(&raw.cloud_init_dir),
            answers_dir: resolve(&raw.answers_dir),
            secrets_dir: resolve(&raw.secrets_dir),
            interface: raw.network.interface,
            address: raw.network.address,
            default_bootenv: raw.boot.default_bootenv,
            dhcp: DhcpConfig {
                enabled: d.enabled,
                subnets,
                rate_limit_per_mac: d.rate_limit_per_mac,
                rate_limit_per_relay: d.rate_limit_per_relay,
                loaders: LoaderMap {
                    bios: d.loaders.bios.clone(),
                    x86_64_efi: d.loaders.x86_64_efi.clone(),
                    arm64_efi: d.loaders.arm64_efi.clone(),
                    upgrade_old_ipxe: d.upgrade_old_ipxe,
                    local_boot: raw.boot.local_boot,
                },
            },
            tftp: raw.tftp.enabled.then_some(raw.tftp.port),
            tftp_max_transfers: raw.tftp.max_transfers,
            tftp_max_per_address: raw.tftp.max_transfers_per_address,
            tftp_limits,
            tftp_busy_poll,
            http: raw.http.enabled.then_some(raw.http.port),
            http_bounds,
            bind_tokens_to_address: raw.http.bind_tokens_to_address,
            dns: raw.dns.enabled.then_some(DnsConfig {
                port: raw.dns.port,
                domain,
                forwarders,
                names: raw.dns.names,
            }),
            default_hostname: raw.nodes.default_hostname,
            api: ApiConfig {
                tokens_file: raw.api.tokens_file.as_deref().map(resolve),
                tls,
            },
            admission,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MINIMAL: &str = r#"
state_dir = "state"
assets_dir = "/srv/assets"
[network]
interface = "br0"
[[dhcp.subnet]]
cidr = "10.0.0.0/24"
ranges = [["10.0.0.100", "10.0.0.200"]]
"#;

    #[test]
    fn every_file_in_configs_parses() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("configs");
        let mut seen = 0;
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.extension().is_some_and(|e| e == "toml") {
                Config::load(&path).unwrap_or_else(|e| panic!("{e}"));
                seen += 1;
            }
        }
        assert!(seen >= 1, "no config in {}", dir.display());
    }

    #[test]
    fn store_sync_and_service_account() {
        let p = Path::new("/etc/rackboot/rackboot.toml");
        let cfg = Config::parse(p, MINIMAL).unwrap();
        assert_eq!(cfg.store_sync, crate::store::SyncMode::None, "the default");
        assert_eq!(cfg.run_as, None);
        let cfg = Config::parse(
            p,
            &format!("{MINIMAL}[store]\nsync = \"group\"\n[service]\nuser = \"rackboot\"\n"),
        )
        .unwrap();
        assert_eq!(cfg.store_sync, crate::store::SyncMode::Group);
        assert_eq!(
            cfg.run_as,
            Some(RunAsConfig {
                user: "rackboot".into(),
                group: None
            })
        );
        for (extra, want) in [
            (
                "[store]\nsync = \"sometimes\"\n",
                "unknown variant `sometimes`",
            ),
            (
                "[service]\ngroup = \"rackboot\"\n",
                "service.group needs service.user",
            ),
            ("[service]\nuser = \"\"\n", "must not be empty"),
        ] {
            let e = Config::parse(p, &format!("{MINIMAL}{extra}"))
                .unwrap_err()
                .to_string();
            assert!(e.contains(want), "{extra}: {e}");
        }
    }

    #[test]
    fn relative_paths_resolve_against_the_file() {
        let cfg = Config::parse(Path::new("/etc/rackboot/rackboot.toml"), MINIMAL).unwrap();
        assert_eq!(cfg.state_dir, Path::new("/etc/rackboot/state"));
        assert_eq!(cfg.assets_dir, Path::new("/srv/assets"));
        assert_eq!(cfg.bootenvs_dir, Path::new("/etc/rackboot/bootenvs"));
        assert_eq!(cfg.default_bootenv, "discovery");
        assert_eq!(cfg.tftp, Some(69));
        assert_eq!(cfg.tftp_max_transfers, 256);
        assert_eq!(cfg.tftp_max_per_address, 8);
        assert_eq!(cfg.tftp_limits.first_ack.as_secs(), 4);
        assert_eq!(cfg.http_bounds, crate::http::bounds::Bounds::default());
        let text = format!(
            "{MINIMAL}[http]\nmax_connections = 300\nmax_connections_per_address = 0\n\
             reserved_connections = 10\nheader_timeout = \"2s\"\nidle_timeout = \"5s\"\n\
             [tftp]\nmax_transfers_per_address = 2\nfirst_ack_timeout = \"1500ms\"\n"
        );
        let cfg = Config::parse(Path::new("/r.toml"), &text).unwrap();
        let r = cfg.http_bounds.resolve(1 << 20);
        assert_eq!((r.max_connections, r.per_address, r.reserve), (300, 0, 10));
        assert_eq!(cfg.http_bounds.timeouts.header.as_secs(), 2);
        assert_eq!(cfg.http_bounds.timeouts.idle.as_secs(), 5);
        assert_eq!(cfg.tftp_max_per_address, 2);
        assert_eq!(cfg.tftp_limits.first_ack.as_millis(), 1500);
        assert_eq!(cfg.dhcp.loaders.bios, "undionly.kpxe");
        assert_eq!(cfg.dhcp.subnets.len(), 1);
        assert_eq!(cfg.dhcp.subnets[0].lease_seconds, 3600);
        assert_eq!(cfg.dhcp.subnets[0].mode, SubnetMode::Dhcp);
        assert_eq!(cfg.lifecycle, crate::boot::Timeouts::default());
        let text = format!(
            "{MINIMAL}[lifecycle]\nreport_timeout = \"90s\"\ninstall_timeout = \"1h 30m\"\nheartbeat_timeout = \"45s\"\n"
        );
        let cfg = Config::parse(Path::new("/r.toml"), &text).unwrap();
        assert_eq!(cfg.lifecycle.report.as_secs(), 90);
        assert_eq!(cfg.lifecycle.install.as_secs(), 5400);
        assert_eq!(cfg.lifecycle.heartbeat.as_secs(), 45);
        assert_eq!(
            cfg.dhcp
                .subnet_of("10.0.0.7".parse().unwrap())
                .map(|s| s.cidr),
            Some("10.0.0.0/24".parse().unwrap())
        );
    }

    #[test]
    fn unknown_client_bounds_and_relays() {
        let cfg = Config::parse(Path::new("/r.toml"), MINIMAL).unwrap();
        let sn = &cfg.dhcp.subnets[0];
        assert_eq!((sn.unknown_share, sn.unknown_rate), (90, 0));
        assert!(sn.relays.is_empty());
        assert_eq!(
            cfg.reap_discovered_after,
            Some(std::time::Duration::from_secs(3600))
        );
        let text = MINIMAL.replace(
            "ranges = [[\"10.0.0.100\", \"10.0.0.200\"]]",
            "ranges = [[\"10.0.0.100\", \"10.0.0.200\"]]\nunknown_share = 50\n\
             unknown_rate = 10\nrelays = [\"10.9.0.1\", \"10.9.0.2\"]",
        ) + "[lifecycle]\nreap_discovered_after = \"10m\"\n";
        let cfg = Config::parse(Path::new("/r.toml"), &text).unwrap();
        let sn = &cfg.dhcp.subnets[0];
        assert_eq!((sn.unknown_share, sn.unknown_rate), (50, 10));
        assert_eq!(sn.relays.len(), 2);
        assert_eq!(
            cfg.reap_discovered_after,
            Some(std::time::Duration::from_secs(600))
        );
        for never in ["0", "never"] {
            let text = format!("{MINIMAL}[lifecycle]\nreap_discovered_after = \"{never}\"\n");
            let cfg = Config::parse(Path::new("/r.toml"), &text).unwrap();
            assert_eq!(cfg.reap_discovered_after, None, "{never}");
        }
        let bad = MINIMAL.replace(
            "ranges = [[\"10.0.0.100\", \"10.0.0.200\"]]",
            "ranges = [[\"10.0.0.100\", \"10.0.0.200\"]]\nunknown_share = 101",
        );
        let err = Config::parse(Path::new("/r.toml"), &bad)
            .unwrap_err()
            .to_string();
        assert!(err.contains("dhcp.subnet[0].unknown_share"), "{err}");
        let bad = format!("{MINIMAL}[lifecycle]\nreap_discovered_after = \"soon\"\n");
        let err = Config::parse(Path::new("/r.toml"), &bad)
            .unwrap_err()
            .to_string();
        assert!(err.contains("lifecycle.reap_discovered_after"), "{err}");
    }

    #[test]
    fn unknown_key_is_named_with_its_line() {
        let text = MINIMAL.replace("[network]", "[network]\ninterfcae = \"x\"");
        let err = Config::parse(Path::new("r.toml"), &text).unwrap_err();
        let msg = err.to_string();
        assert!(err.is_parse());
        assert!(msg.contains("r.toml"), "{msg}");
        assert!(msg.contains("interfcae"), "{msg}");
        assert!(msg.contains("line 5, column 1"), "{msg}");
        assert_eq!(msg.lines().count(), 1, "one line: {msg}");
    }

    #[test]
    fn semantic_errors_name_the_key() {
        let cases = [
            (
                MINIMAL.replace("10.0.0.200", "10.0.1.5"),
                "dhcp.subnet[0].ranges",
            ),
            (
                MINIMAL.replace(
                    "[[dhcp.subnet]]",
                    "[dhcp]\nlease_seconds = 5\n[[dhcp.subnet]]",
                ),
                "dhcp.lease_seconds",
            ),
            (
                format!("{MINIMAL}[[dhcp.subnet]]\ncidr = \"10.0.0.128/25\"\n"),
                "dhcp.subnet[1].cidr",
            ),
            (
                format!("{MINIMAL}[[dhcp.subnet]]\ncidr = \"10.1.0.5/16\"\n"),
                "dhcp.subnet[1].cidr",
            ),
            (
                format!(
                    "{MINIMAL}[[dhcp.subnet]]\ncidr = \"10.1.0.0/16\"\nmode = \"proxy\"\nranges = [[\"10.1.0.5\", \"10.1.0.9\"]]\n"
                ),
                "dhcp.subnet[1].ranges",
            ),
            (
                MINIMAL.replace(
                    "\"10.0.0.200\"]]",
                    "\"10.0.0.200\"], [\"10.0.0.150\", \"10.0.0.160\"]]",
                ),
                "dhcp.subnet[0].ranges",
            ),
            (
                format!(
                    "{MINIMAL}[[dhcp.subnet]]\ncidr = \"10.9.0.0/24\"\nrouter = \"10.8.0.1\"\n"
                ),
                "dhcp.subnet[1].router",
            ),
            (
                MINIMAL.replace(
                    "interface = \"br0\"",
                    "interface = \"br0\"\naddress = \"10.0.0.150\"",
                ),
                "network.address",
            ),
            (
                format!("{MINIMAL}[dns]\ndomain = \"bad domain\"\n"),
                "dns.domain",
            ),
            (
                format!("{MINIMAL}[lifecycle]\nreport_timeout = \"ten minutes\"\n"),
                "lifecycle.report_timeout",
            ),
            (
                format!("{MINIMAL}[lifecycle]\ninstall_timeout = \"0s\"\n"),
                "lifecycle.install_timeout",
            ),
            (
                format!("{MINIMAL}[api]\ntls_cert = \"c.pem\"\ntls_port = 8443\n"),
                "api.tls_cert",
            ),
            (
                format!(
                    "{MINIMAL}[api]\ntls_cert = \"c.pem\"\ntls_key = \"k.pem\"\ntls_port = 80\n"
                ),
                "api.tls_port",
            ),
            (
                format!("{MINIMAL}[lifecycle]\nheartbeat_timeout = \"20s\"\n"),
                "lifecycle.heartbeat_timeout",
            ),
            (
                format!("{MINIMAL}[dns]\nforwarders = [\"10.0.0.53\", \"resolver\"]\n"),
                "dns.forwarders[1]",
            ),
            (
                format!("{MINIMAL}[dns]\nforwarders = [\"10.0.0.53:0\"]\n"),
                "dns.forwarders[0]",
            ),
            (
                format!("{MINIMAL}[tftp]\nbusy_poll = \"5ms\"\n"),
                "tftp.busy_poll",
            ),
            (
                format!("{MINIMAL}[tftp]\nbusy_poll = \"soon\"\n"),
                "tftp.busy_poll",
            ),
            (
                format!("{MINIMAL}[tftp]\nfirst_ack_timeout = \"100ms\"\n"),
                "tftp.first_ack_timeout",
            ),
            (
                format!("{MINIMAL}[http]\nheader_timeout = \"100ms\"\n"),
                "http.header_timeout",
            ),
            (
                format!("{MINIMAL}[http]\nmax_connections = 10\nreserved_connections = 10\n"),
                "http.reserved_connections",
            ),
        ];
        for (text, key) in cases {
            let msg = Config::parse(Path::new("r.toml"), &text)
                .unwrap_err()
                .to_string();
            assert!(msg.contains(key), "{key}: {msg}");
        }
    }

    #[test]
    fn the_drop_folder_is_off_unless_named() {
        let cfg = Config::parse(Path::new("/etc/rackboot/r.toml"), MINIMAL).unwrap();
        assert_eq!(cfg.assets.drop_dir, None);
        let text = MINIMAL.replace("[network]", "[assets]\ndrop_dir = \"drop\"\n[network]");
        let cfg = Config::parse(Path::new("/etc/rackboot/r.toml"), &text).unwrap();
        assert_eq!(
            cfg.assets.drop_dir.as_deref(),
            Some(Path::new("/etc/rackboot/drop"))
        );
    }

    #[test]
    fn dns_forwarders_default_to_port_53() {
        let cfg = Config::parse(Path::new("r.toml"), MINIMAL).unwrap();
        assert!(
            cfg.dns.unwrap().forwarders.is_empty(),
            "no forwarding unless asked"
        );
        let text = format!(
            "{MINIMAL}[dns]\nforwarders = [\"10.0.0.53\", \"10.0.0.54:5353\", \"[fd00::1]:53\", \"fd00::2\"]\n"
        );
        let cfg = Config::parse(Path::new("r.toml"), &text).unwrap();
        let got: Vec<String> = cfg
            .dns
            .unwrap()
            .forwarders
            .iter()
            .map(ToString::to_string)
            .collect();
        assert_eq!(
            got,
            [
                "10.0.0.53:53",
                "10.0.0.54:5353",
                "[fd00::1]:53",
                "[fd00::2]:53"
            ]
        );
    }

    #[test]
    fn credentials_and_names_are_hardened_by_choice_and_bound_by_default() {
        let cfg = Config::parse(Path::new("/etc/rackboot/r.toml"), MINIMAL).unwrap();
        assert!(cfg.bind_tokens_to_address);
        assert_eq!(cfg.dns.unwrap().names, DnsNames::Hostname);
        assert_eq!(cfg.default_hostname, HostnameScheme::Mac);
        assert_eq!(cfg.secrets_dir, Path::new("/etc/rackboot/secrets"));
        let text = format!(
            "secrets_dir = \"/srv/secrets\"\n{MINIMAL}[http]\nbind_tokens_to_address = false\n\
             [dns]\nnames = \"none\"\n[nodes]\ndefault_hostname = \"random\"\n"
        );
        let cfg = Config::parse(Path::new("r.toml"), &text).unwrap();
        assert!(!cfg.bind_tokens_to_address);
        assert_eq!(cfg.dns.unwrap().names, DnsNames::None);
        assert_eq!(cfg.default_hostname, HostnameScheme::Random);
        assert_eq!(cfg.secrets_dir, Path::new("/srv/secrets"));
        let bad = format!("{MINIMAL}[dns]\nnames = \"mac\"\n");
        assert!(Config::parse(Path::new("r.toml"), &bad).is_err());
    }

    #[test]
    fn services_can_be_switched_off() {
        let text = format!("{MINIMAL}[tftp]\nenabled = false\n[dns]\nenabled = false\n");
        let cfg = Config::parse(Path::new("r.toml"), &text).unwrap();
        assert_eq!(cfg.tftp, None);
        assert!(cfg.dns.is_none());
        assert_eq!(cfg.http, Some(80));
    }

    #[test]
    fn admission_is_off_by_default_and_a_subnet_overrides_it() {
        let cfg = Config::parse(Path::new("r.toml"), MINIMAL).unwrap();
        assert_eq!(cfg.admission.max_booting, 0);
        assert_eq!(cfg.admission.slot_timeout.as_secs(), 300);
        assert_eq!(
            cfg.admission.subnets,
            vec![("10.0.0.0/24".parse().unwrap(), 0)]
        );
        let text = format!(
            "{MINIMAL}max_booting = 8\n[[dhcp.subnet]]\ncidr = \"10.1.0.0/24\"\n[admission]\nmax_booting = 32\nslot_timeout = \"90s\"\n"
        );
        let cfg = Config::parse(Path::new("r.toml"), &text).unwrap();
        assert_eq!(cfg.admission.max_booting, 32);
        assert_eq!(cfg.admission.slot_timeout.as_secs(), 90);
        assert_eq!(
            cfg.admission.subnets,
            vec![
                ("10.0.0.0/24".parse().unwrap(), 8),
                ("10.1.0.0/24".parse().unwrap(), 32)
            ]
        );
        let text = format!("{MINIMAL}[admission]\nslot_timeout = \"soon\"\n");
        let msg = Config::parse(Path::new("r.toml"), &text)
            .unwrap_err()
            .to_string();
        assert!(msg.contains("admission.slot_timeout"), "{msg}");
    }

    #[test]
    fn api_paths_resolve_and_default_to_disabled() {
        let cfg = Config::parse(Path::new("/etc/rb/r.toml"), MINIMAL).unwrap();
        assert_eq!(cfg.api, ApiConfig::default());
        let text = format!(
            "{MINIMAL}[api]\ntokens_file = \"tokens\"\ntls_cert = \"/tls/c.pem\"\ntls_key = \"k.pem\"\ntls_port = 8443\n"
        );
        let cfg = Config::parse(Path::new("/etc/rb/r.toml"), &text).unwrap();
        assert_eq!(
            cfg.api.tokens_file.as_deref(),
            Some(Path::new("/etc/rb/tokens"))
        );
        assert_eq!(
            cfg.api.tls,
            Some(TlsConfig {
                cert: "/tls/c.pem".into(),
                key: "/etc/rb/k.pem".into(),
                port: 8443
            })
        );
    }
}
