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
        key: &'static str,
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
    }

    fn default_bootenvs_dir() -> PathBuf {
        "bootenvs".into()
    }
    fn default_scripts_dir() -> PathBuf {
        "scripts".into()
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
    }
    impl Default for Boot {
        fn default() -> Self {
            Boot {
                default_bootenv: default_bootenv(),
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
        pub subnet: Ipv4Net,
        pub range: [Ipv4Addr; 2],
        pub router: Option<Ipv4Addr>,
        #[serde(default = "default_lease")]
        pub lease_seconds: u32,
        #[serde(default)]
        pub loaders: Loaders,
        #[serde(default = "yes")]
        pub upgrade_old_ipxe: bool,
    }
    fn default_lease() -> u32 {
        3600
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
    }
    impl Default for Tftp {
        fn default() -> Self {
            Tftp {
                enabled: true,
                port: tftp_port(),
            }
        }
    }
    fn tftp_port() -> u16 {
        69
    }

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    pub struct Http {
        #[serde(default = "yes")]
        pub enabled: bool,
        #[serde(default = "http_port")]
        pub port: u16,
    }
    impl Default for Http {
        fn default() -> Self {
            Http {
                enabled: true,
                port: http_port(),
            }
        }
    }
    fn http_port() -> u16 {
        80
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
    }
    impl Default for Dns {
        fn default() -> Self {
            Dns {
                enabled: true,
                port: dns_port(),
                domain: dns_domain(),
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
    pub interface: String,
    /// rackboot's address on the boot network, if fixed in the file; otherwise
    /// it is read from the interface at start-up.
    pub address: Option<Ipv4Addr>,
    pub default_bootenv: String,
    pub dhcp: DhcpConfig,
    pub tftp: Option<u16>,
    pub http: Option<u16>,
    pub dns: Option<DnsConfig>,
}

#[derive(Debug, Clone)]
pub struct DhcpConfig {
    pub enabled: bool,
    pub subnet: Ipv4Net,
    pub range: (Ipv4Addr, Ipv4Addr),
    pub router: Option<Ipv4Addr>,
    pub lease_seconds: u32,
    pub loaders: LoaderMap,
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
}

#[derive(Debug, Clone)]
pub struct DnsConfig {
    pub port: u16,
    pub domain: String,
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
        let invalid = |key: &'static str, reason: String| ConfigError::Invalid {
            path: path.to_path_buf(),
            key,
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
        let [first, last] = d.range;
        if !d.subnet.contains(&first) || !d.subnet.contains(&last) {
            return Err(invalid(
                "dhcp.range",
                format!("{first}..{last} is not inside dhcp.subnet {}", d.subnet),
            ));
        }
        if u32::from(first) > u32::from(last) {
            return Err(invalid(
                "dhcp.range",
                format!("the first address {first} comes after the last {last}"),
            ));
        }
        if first == d.subnet.network() || last == d.subnet.broadcast() {
            return Err(invalid(
                "dhcp.range",
                "the range must not include the subnet's network or broadcast address".into(),
            ));
        }
        if let Some(addr) = raw.network.address {
            if !d.subnet.contains(&addr) {
                return Err(invalid(
                    "network.address",
                    format!("{addr} is not inside dhcp.subnet {}", d.subnet),
                ));
            }
            if (u32::from(first)..=u32::from(last)).contains(&u32::from(addr)) {
                return Err(invalid(
                    "network.address",
                    format!("{addr} lies inside dhcp.range: it could be leased to a node"),
                ));
            }
        }
        if d.lease_seconds < 60 {
            return Err(invalid(
                "dhcp.lease_seconds",
                format!("{} is too short: use at least 60", d.lease_seconds),
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

        Ok(Config {
            path: path.to_path_buf(),
            state_dir: resolve(&raw.state_dir),
            assets_dir: resolve(&raw.assets_dir),
            bootenvs_dir: resolve(&raw.bootenvs_dir),
            scripts_dir: resolve(&raw.scripts_dir),
            interface: raw.network.interface,
            address: raw.network.address,
            default_bootenv: raw.boot.default_bootenv,
            dhcp: DhcpConfig {
                enabled: d.enabled,
                subnet: d.subnet,
                range: (first, last),
                router: d.router,
                lease_seconds: d.lease_seconds,
                loaders: LoaderMap {
                    bios: d.loaders.bios.clone(),
                    x86_64_efi: d.loaders.x86_64_efi.clone(),
                    arm64_efi: d.loaders.arm64_efi.clone(),
                    upgrade_old_ipxe: d.upgrade_old_ipxe,
                },
            },
            tftp: raw.tftp.enabled.then_some(raw.tftp.port),
            http: raw.http.enabled.then_some(raw.http.port),
            dns: raw.dns.enabled.then_some(DnsConfig {
                port: raw.dns.port,
                domain,
            }),
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
[dhcp]
subnet = "10.0.0.0/24"
range = ["10.0.0.100", "10.0.0.200"]
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
    fn relative_paths_resolve_against_the_file() {
        let cfg = Config::parse(Path::new("/etc/rackboot/rackboot.toml"), MINIMAL).unwrap();
        assert_eq!(cfg.state_dir, Path::new("/etc/rackboot/state"));
        assert_eq!(cfg.assets_dir, Path::new("/srv/assets"));
        assert_eq!(cfg.bootenvs_dir, Path::new("/etc/rackboot/bootenvs"));
        assert_eq!(cfg.default_bootenv, "discovery");
        assert_eq!(cfg.tftp, Some(69));
        assert_eq!(cfg.dhcp.loaders.bios, "undionly.kpxe");
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
            (MINIMAL.replace("10.0.0.200", "10.0.1.5"), "dhcp.range"),
            (
                MINIMAL.replace("[dhcp]", "[dhcp]\nlease_seconds = 5"),
                "dhcp.lease_seconds",
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
        ];
        for (text, key) in cases {
            let msg = Config::parse(Path::new("r.toml"), &text)
                .unwrap_err()
                .to_string();
            assert!(msg.contains(key), "{key}: {msg}");
        }
    }

    #[test]
    fn services_can_be_switched_off() {
        let text = format!("{MINIMAL}[tftp]\nenabled = false\n[dns]\nenabled = false\n");
        let cfg = Config::parse(Path::new("r.toml"), &text).unwrap();
        assert_eq!(cfg.tftp, None);
        assert!(cfg.dns.is_none());
        assert_eq!(cfg.http, Some(80));
    }
}
