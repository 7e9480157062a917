//! The configuration file: a raw serde layer that rejects unknown keys, then a
//! validated [`Config`] that the rest of rackboot trusts.
//!
//! One file per section of `rackboot.toml`, each holding that section's raw
//! struct (its keys, and each key's default written once: in the section's
//! `impl Default`, which `#[serde(default)]` hands to serde, or in a
//! `default_*` function where a required key rules out `Default`) and the
//! validation that turns it into the types the servers take. A default that
//! another module's type already owns (TFTP retransmission, HTTP bounds,
//! lifecycle timeouts) is taken from that type's `Default`, so the file and
//! the servers cannot drift apart; a test checks that `configs/rackboot.toml`
//! states the same values. This file holds the top level: the paths, the order
//! sections are checked in, and the errors.

mod admission;
mod api;
mod assets;
mod boot;
mod console;
mod dhcp;
mod dns;
mod http;
mod lifecycle;
mod loaders;
mod network;
mod nodes;
mod power;
mod rollout;
mod service;
pub mod store;
pub use store::StoreConfig;
#[cfg(test)]
mod tests;
mod tftp;

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use crate::text_file;

pub use admission::AdmissionConfig;
pub use api::{ApiConfig, TlsConfig};
pub use assets::AssetsConfig;
pub use boot::LocalBoot;
pub use console::ConsoleConfig;
pub use dhcp::{DhcpConfig, Identity, SubnetConfig, SubnetMode, UnknownClients};
pub use dns::{DnsConfig, DnsNames};
pub use loaders::LoaderMap;
pub use nodes::HostnameScheme;
pub use power::PowerConfig;
pub use service::RunAsConfig;

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

/// The file as written: the top-level keys (paths) and one field per section.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Raw {
    state_dir: PathBuf,
    assets_dir: PathBuf,
    #[serde(default = "default_bootenvs_dir")]
    bootenvs_dir: PathBuf,
    #[serde(default = "default_scripts_dir")]
    scripts_dir: PathBuf,
    #[serde(default)]
    assets: assets::Section,
    #[serde(default = "default_cloud_init_dir")]
    cloud_init_dir: PathBuf,
    #[serde(default = "default_answers_dir")]
    answers_dir: PathBuf,
    #[serde(default = "default_secrets_dir")]
    secrets_dir: PathBuf,
    network: network::Section,
    #[serde(default)]
    boot: boot::Section,
    dhcp: dhcp::Section,
    #[serde(default)]
    tftp: tftp::Section,
    #[serde(default)]
    http: http::Section,
    #[serde(default)]
    dns: dns::Section,
    #[serde(default)]
    lifecycle: lifecycle::Section,
    #[serde(default)]
    api: api::Section,
    #[serde(default)]
    console: console::Section,
    #[serde(default)]
    admission: admission::Section,
    #[serde(default)]
    nodes: nodes::Section,
    #[serde(default)]
    store: store::Section,
    #[serde(default)]
    service: service::Section,
    #[serde(default)]
    power: power::Section,
    #[serde(default)]
    rollout: rollout::Section,
}

// The folders beside the config file, by default (relative: resolved against
// the file's directory like any other relative path).
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
    pub tftp_busy_poll: Duration,
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
    pub reap_discovered_after: Option<Duration>,
    pub api: ApiConfig,
    /// `[console]`: the admin console in the browser; `None`: not served.
    pub console: Option<ConsoleConfig>,
    pub admission: AdmissionConfig,
    /// `[store]`: the engine, and for SQLite what survives a power loss.
    pub store: store::StoreConfig,
    /// `[service] user` (and `group`): whom `rackboot serve`, started as
    /// root, becomes once every socket is bound.
    pub run_as: Option<RunAsConfig>,
    /// `[power]`: BMC actions at once, and the site's power commands.
    pub power: PowerConfig,
    /// `[rollout.hooks]`: drain and undrain commands, by name.
    pub rollout_hooks: std::collections::BTreeMap<String, String>,
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

/// The file being validated: every section's errors name it, and its
/// directory anchors relative paths.
struct Source<'a> {
    path: &'a Path,
    base: PathBuf,
}

impl<'a> Source<'a> {
    fn new(path: &'a Path) -> Source<'a> {
        let base = match path.parent() {
            Some(dir) if !dir.as_os_str().is_empty() => dir.to_path_buf(),
            _ => PathBuf::from("."),
        };
        Source { path, base }
    }

    fn invalid(&self, key: &str, reason: impl Into<String>) -> ConfigError {
        ConfigError::Invalid {
            path: self.path.to_path_buf(),
            key: key.to_string(),
            reason: reason.into(),
        }
    }

    /// `p` as written if absolute, else beside the config file.
    fn resolve(&self, p: &Path) -> PathBuf {
        if p.is_absolute() {
            p.to_path_buf()
        } else {
            self.base.join(p)
        }
    }

    /// `text` as a humantime duration; `example` shows the admin one that parses.
    fn parse_duration(
        &self,
        key: &str,
        text: &str,
        example: &str,
    ) -> Result<Duration, ConfigError> {
        humantime::parse_duration(text).map_err(|e| {
            self.invalid(
                key,
                format!("`{text}` is not a duration ({e}); e.g. {example}"),
            )
        })
    }

    /// A timeout of at least a second (lifecycle, HTTP, admission).
    fn duration(&self, key: &str, text: &str) -> Result<Duration, ConfigError> {
        let d = self.parse_duration(key, text, "\"10m\"")?;
        if d < Duration::from_secs(1) {
            return Err(self.invalid(key, format!("`{text}` is too short: use at least 1s")));
        }
        Ok(d)
    }
}

/// A default duration as the file would spell it ("1s", "10m", "200us"), so
/// that a section's default text comes from the value the code owns.
fn duration_text(d: Duration) -> String {
    humantime::format_duration(d).to_string()
}

impl Config {
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        text_file::load(
            path,
            |path, source| ConfigError::Read { path, source },
            Config::parse,
        )
    }

    /// Parses `text` as if read from `path` (which anchors relative paths).
    pub fn parse(path: &Path, text: &str) -> Result<Config, ConfigError> {
        let raw: Raw = toml::from_str(text).map_err(|e| ConfigError::Parse {
            path: path.to_path_buf(),
            message: toml_error(text, &e),
        })?;
        let src = Source::new(path);
        let address = raw.network.address;

        let max_booting: Vec<Option<u32>> =
            raw.dhcp.subnet.iter().map(|sn| sn.max_booting).collect();
        let dhcp = raw.dhcp.validate(&src, raw.boot.local_boot)?;
        raw.network.check(&src, &dhcp)?;
        let tftp = raw.tftp.validate(&src)?;
        let dns = raw.dns.validate(&src, address)?;
        let (lifecycle, reap_discovered_after) = raw.lifecycle.validate(&src)?;
        let http = raw.http.validate(&src)?;
        let per_subnet = dhcp.subnets.iter().map(|sn| sn.cidr).zip(max_booting);
        let admission = raw.admission.validate(&src, per_subnet)?;
        let api = raw.api.validate(&src, http.port)?;
        let console = raw.console.validate(&src, api.tokens_file.is_some())?;
        let run_as = raw.service.validate(&src)?;
        let store = raw.store.validate(&src)?;
        let power = raw.power.validate(&src)?;
        let rollout_hooks = raw.rollout.validate(&src)?;

        Ok(Config {
            power,
            rollout_hooks,
            store,
            run_as,
            lifecycle,
            reap_discovered_after,
            path: path.to_path_buf(),
            state_dir: src.resolve(&raw.state_dir),
            assets_dir: src.resolve(&raw.assets_dir),
            bootenvs_dir: src.resolve(&raw.bootenvs_dir),
            scripts_dir: src.resolve(&raw.scripts_dir),
            assets: raw.assets.validate(&src),
            cloud_init_dir: src.resolve(&raw.cloud_init_dir),
            answers_dir: src.resolve(&raw.answers_dir),
            secrets_dir: src.resolve(&raw.secrets_dir),
            interface: raw.network.interface,
            address,
            default_bootenv: raw.boot.default_bootenv,
            dhcp,
            tftp: tftp.port,
            tftp_max_transfers: tftp.max_transfers,
            tftp_max_per_address: tftp.max_per_address,
            tftp_limits: tftp.limits,
            tftp_busy_poll: tftp.busy_poll,
            http: http.port,
            http_bounds: http.bounds,
            bind_tokens_to_address: http.bind_tokens_to_address,
            dns,
            default_hostname: raw.nodes.default_hostname,
            api,
            console,
            admission,
        })
    }
}
