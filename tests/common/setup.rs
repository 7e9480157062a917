//! One way to describe the appliance a test starts: its files (assets, bootenvs, scripts, any
//! other directory it reads) and its config, section by section, with the opt-outs a test takes
//! said by name. [`Setup::start`] writes them to a temp dir and starts `rackboot serve` in a
//! fresh [`Lab`](super::lab::Lab) (see [`super::server`]).
//!
//! The defaults are those of an appliance a test talks to over HTTP only: `[network]` on the
//! lab's bridge at [`SERVER_IP`], DHCP, TFTP and DNS off, the API with the test tokens of
//! [`super::api`], node credentials bound to node addresses (rackboot's default), and no files
//! but empty directories. Each test switches on what it exercises.

#![allow(dead_code)] // each test binary uses a different part of this module

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::{Duration, Instant};

use tempfile::TempDir;

use super::api::tokens_file_line;
use super::lab::{BRIDGE, Lab, SERVER_IP, dist_file};
use super::server::Server;

pub const RACKBOOT: &str = env!("CARGO_BIN_EXE_rackboot");

/// The lab subnet, as `[[dhcp.subnet]] cidr` names it.
pub const LAB_CIDR: &str = "10.77.0.0/24";

/// The kernel command line of the test bootenvs: what the operational image needs.
pub const CMDLINE: &str = "console=ttyS0 rackboot.url={{ server_url }} rackboot.mac={{ node.mac }} rackboot.token={{ node.token }}";

/// How long rackboot may take to refuse a bad configuration and exit.
const FAIL_FAST: Duration = Duration::from_secs(15);

/// `ranges = [["10.77.0.<first>", "10.77.0.<last>"]]`: a dynamic range of the lab subnet.
pub fn lab_range(first: u8, last: u8) -> String {
    format!("ranges = [[\"10.77.0.{first}\", \"10.77.0.{last}\"]]")
}

/// A bootenv file: `description`, `scripts`, and per arch (`bios`, `x86_64_efi`, `arm64_efi`) a
/// kernel and initrd booted with [`CMDLINE`].
pub fn bootenv(description: &str, scripts: &[&str], archs: &[(&str, &str, &str)]) -> String {
    let mut text = format!("description = \"{description}\"\n");
    if !scripts.is_empty() {
        let scripts: Vec<String> = scripts.iter().map(|s| format!("\"{s}\"")).collect();
        text.push_str(&format!("scripts = [{}]\n", scripts.join(", ")));
    }
    text.push('\n');
    for (arch, kernel, initrd) in archs {
        text.push_str(&format!(
            "[arch.{arch}]\nkernel = \"{kernel}\"\ninitrds = [\"{initrd}\"]\ncmdline = \"{CMDLINE}\"\n\n"
        ));
    }
    text
}

/// Deterministic, non-repeating, incompressible-looking bytes (xorshift64) for test assets, so
/// that a misplaced block cannot compare equal.
pub fn pseudo_random(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 32) as u8
        })
        .collect()
}

/// One `[table]` of the config: its name and lines.
struct Table {
    name: String,
    lines: String,
}

/// The appliance a test starts; see the module docs. Build it with the methods below, then
/// [`Setup::start`] (or [`Setup::prepare`], to act between writing the files and starting).
pub struct Setup {
    name: String,
    dir: TempDir,
    /// Files under the site directory, in the order written; a later one of the same path wins.
    files: Vec<(String, Vec<u8>)>,
    /// Top-level keys naming directories: (key, absolute path).
    dirs: Vec<(String, PathBuf)>,
    address: bool,
    dhcp: bool,
    subnets: Vec<String>,
    tftp: Option<String>,
    dns: Option<String>,
    tokens_from_any_address: bool,
    api_tokens: bool,
    /// `[network]`, `[dhcp]`, `[http]`, `[api]` and every other table, in order.
    tables: Vec<Table>,
    wrapper: Vec<String>,
}

impl Setup {
    /// The defaults of the module docs, for the lab `name` (unique among a binary's tests).
    pub fn new(name: &str) -> Setup {
        let dir = tempfile::Builder::new()
            .prefix(&format!("rackboot-{name}-"))
            .tempdir()
            .expect("create temp dir");
        let dirs = ["state", "assets", "bootenvs", "scripts"]
            .map(|d| (format!("{d}_dir"), dir.path().join(d)))
            .into();
        Setup {
            name: name.to_string(),
            dir,
            files: Vec::new(),
            dirs,
            address: true,
            dhcp: false,
            subnets: Vec::new(),
            tftp: None,
            dns: None,
            tokens_from_any_address: false,
            api_tokens: true,
            tables: ["network", "dhcp", "http", "api"]
                .map(|name| Table {
                    name: name.into(),
                    lines: String::new(),
                })
                .into(),
            wrapper: Vec::new(),
        }
    }

    /// A file of the site (path relative to its directory, e.g. `assets/x86_64/vmlinuz`).
    pub fn file(mut self, rel: &str, bytes: impl AsRef<[u8]>) -> Setup {
        self.files.push((rel.to_string(), bytes.as_ref().to_vec()));
        self
    }

    /// Small stand-ins for what every boot needs: the three loaders, x86_64 and arm64 kernels
    /// and initrds, `hello.sh`, `discovery` (bios, x86_64 and arm64 UEFI) and `rescue` (x86_64
    /// UEFI only).
    pub fn standard_files(self) -> Setup {
        let x86 = ("x86_64/vmlinuz", "x86_64/initrd.img");
        let arm = ("arm64/Image", "arm64/initrd.img");
        self.file("assets/undionly.kpxe", "bios loader")
            .file("assets/ipxe-amd64.efi", "x86_64 loader")
            .file("assets/ipxe-arm64.efi", "arm64 loader")
            .file("assets/x86_64/vmlinuz", "x86_64 kernel")
            .file("assets/x86_64/initrd.img", "x86_64 initrd")
            .file("assets/arm64/Image", "arm64 kernel")
            .file("assets/arm64/initrd.img", "arm64 initrd")
            .file(
                "scripts/hello.sh",
                "#!/bin/sh\necho \"hello from {{ node.hostname }}\"\n",
            )
            .file(
                "bootenvs/discovery.toml",
                bootenv(
                    "discovery, for the API tests",
                    &["hello.sh"],
                    &[
                        ("bios", x86.0, x86.1),
                        ("x86_64_efi", x86.0, x86.1),
                        ("arm64_efi", arm.0, arm.1),
                    ],
                ),
            )
            .file(
                "bootenvs/rescue.toml",
                bootenv("rescue shell", &[], &[("x86_64_efi", x86.0, x86.1)]),
            )
    }

    /// A top-level key naming a directory: `path` if absolute, else under the site directory
    /// (e.g. `dir("cloud_init_dir", "cloud-init")`, `dir("assets_dir", "/srv/dist")`).
    pub fn dir(mut self, key: &str, path: impl AsRef<Path>) -> Setup {
        let path = self.dir.path().join(path);
        match self.dirs.iter_mut().find(|(k, _)| k == key) {
            Some(d) => d.1 = path,
            None => self.dirs.push((key.to_string(), path)),
        }
        self
    }

    /// The boot assets `boot-assets/setup.sh` built (`boot-assets/dist/`), for real firmware.
    pub fn dist_assets(self) -> Setup {
        let dist = dist_file("undionly.kpxe")
            .parent()
            .expect("dist has a parent")
            .to_path_buf();
        self.dir("assets_dir", dist)
    }

    /// The repository's own bootenvs and scripts (`configs/`).
    pub fn repo_configs(self) -> Setup {
        let repo = Path::new(env!("CARGO_MANIFEST_DIR"));
        self.dir("bootenvs_dir", repo.join("configs/bootenvs"))
            .dir("scripts_dir", repo.join("configs/scripts"))
    }

    /// No `[network] address`: rackboot takes its interface's.
    pub fn no_address(mut self) -> Setup {
        self.address = false;
        self
    }

    /// DHCP on (it needs a [`Setup::subnet`]).
    pub fn dhcp(mut self) -> Setup {
        self.dhcp = true;
        self
    }

    /// A `[[dhcp.subnet]]` with `cidr` and more lines (ranges, `mode`, `relays`…). Subnets name
    /// networks for DNS and admission too, so they are written with DHCP off as well.
    pub fn subnet(mut self, cidr: &str, lines: &str) -> Setup {
        self.subnets.push(format!("cidr = \"{cidr}\"\n{lines}\n"));
        self
    }

    /// The lab subnet with the dynamic range `10.77.0.<first>`–`<last>`, and DHCP on.
    pub fn lab_subnet(self, first: u8, last: u8) -> Setup {
        self.dhcp().subnet(LAB_CIDR, &lab_range(first, last))
    }

    /// TFTP on port 69, with these lines in `[tftp]`.
    pub fn tftp(mut self, lines: &str) -> Setup {
        self.tftp = Some(lines.to_string());
        self
    }

    /// DNS on port 53, with these lines in `[dns]` (default domain `rack.internal`).
    pub fn dns(mut self, lines: &str) -> Setup {
        self.dns = Some(lines.to_string());
        self
    }

    /// DHCP, TFTP and DNS on with their defaults, and the lab subnet with `first`–`last`: all
    /// four protocols, as a boot network has them.
    pub fn all_protocols(self, first: u8, last: u8) -> Setup {
        self.lab_subnet(first, last).tftp("").dns("")
    }

    /// More lines for `[http]`.
    pub fn http(self, lines: &str) -> Setup {
        self.table("http", lines)
    }

    /// `[http] bind_tokens_to_address = false`: boot scripts and node tokens from any address.
    /// Tests' curl runs at the server's own address, not at a node's; a test that fetches
    /// scripts or acts as nodes that way opts out explicitly, as a production config never does.
    pub fn tokens_from_any_address(mut self) -> Setup {
        self.tokens_from_any_address = true;
        self
    }

    /// No `[api] tokens_file`: the API refuses everyone.
    pub fn no_api_tokens(mut self) -> Setup {
        self.api_tokens = false;
        self
    }

    /// Lines for the config table `name` (`lifecycle`, `nodes`, `boot`, `assets`, `service`…,
    /// or more for `network`, `dhcp`, `http`, `api`): appended to it if it is there already.
    pub fn table(mut self, name: &str, lines: &str) -> Setup {
        let lines = format!("{}\n", lines.trim_end());
        match self.tables.iter_mut().find(|t| t.name == name) {
            Some(t) => t.lines.push_str(&lines),
            None => self.tables.push(Table {
                name: name.into(),
                lines,
            }),
        }
        self
    }

    /// Start rackboot through `prefix`, a command that execs the rest of its arguments (the
    /// PID stays rackboot's): e.g. `["prlimit", "--nofile=256:256"]`.
    pub fn exec_through(mut self, prefix: &[&str]) -> Setup {
        self.wrapper = prefix.iter().map(|s| s.to_string()).collect();
        self
    }

    /// Start rackboot with this open-files limit, soft and hard.
    pub fn open_files(self, n: u32) -> Setup {
        self.exec_through(&["prlimit", &format!("--nofile={n}:{n}")])
    }

    /// A path under the site directory (where the files and the config are written).
    pub fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }

    /// Writes the files and config and starts `rackboot serve` in a new lab; returns once it
    /// serves.
    pub fn start(self) -> Server {
        let server = self.prepare();
        server.serve();
        server
    }

    /// Writes the files and config and makes the lab, without starting rackboot: for a test
    /// that acts first (a capture, a seeded store, a full disk), then calls [`Server::serve`].
    pub fn prepare(self) -> Server {
        let lab = Lab::new(&self.name);
        let wrapper = self.wrapper.clone();
        Server::new(lab, self.write(), wrapper)
    }

    /// Writes the files and config to the site directory.
    pub fn write(self) -> Site {
        for (rel, bytes) in &self.files {
            write(&self.path(rel), bytes);
        }
        for (_, dir) in &self.dirs {
            fs::create_dir_all(dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
        }
        let config = self.path("rackboot.toml");
        write(&config, self.config_text().as_bytes());
        Site {
            dir: self.dir,
            config,
        }
    }

    fn config_text(&self) -> String {
        let mut text = String::new();
        for (key, path) in &self.dirs {
            text.push_str(&format!("{key} = \"{}\"\n", path.display()));
        }
        for t in &self.tables {
            let mut lines = String::new();
            match t.name.as_str() {
                "network" => {
                    lines.push_str(&format!("interface = \"{BRIDGE}\"\n"));
                    if self.address {
                        lines.push_str(&format!("address = \"{SERVER_IP}\"\n"));
                    }
                }
                "dhcp" => lines.push_str(&format!("enabled = {}\n", self.dhcp)),
                "http" => lines.push_str(&format!(
                    "bind_tokens_to_address = {}\n",
                    !self.tokens_from_any_address
                )),
                "api" if self.api_tokens => lines.push_str(&tokens_file_line(self.dir.path())),
                _ => {}
            }
            lines.push_str(&t.lines);
            if !lines.is_empty() {
                text.push_str(&format!("[{}]\n{lines}", t.name));
            }
            if t.name == "dhcp" {
                for s in &self.subnets {
                    text.push_str(&format!("[[dhcp.subnet]]\n{s}"));
                }
                for (table, on) in [("tftp", &self.tftp), ("dns", &self.dns)] {
                    text.push_str(&format!(
                        "[{table}]\nenabled = {}\n{}\n",
                        on.is_some(),
                        on.as_deref().unwrap_or_default().trim_end()
                    ));
                }
            }
        }
        text
    }
}

/// A site directory written by [`Setup::write`]: the files and the config. Removed on drop.
pub struct Site {
    dir: TempDir,
    config: PathBuf,
}

impl Site {
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    pub fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }

    pub fn config(&self) -> &Path {
        &self.config
    }

    /// Writes (or replaces) a file of the site.
    pub fn write(&self, rel: &str, bytes: impl AsRef<[u8]>) {
        write(&self.path(rel), bytes.as_ref());
    }

    /// Runs `rackboot serve` with this config in `lab` to its exit, which must be a failure
    /// within a few seconds, and returns its one line of output.
    pub fn start_fails(&self, lab: &Lab) -> String {
        let started = Instant::now();
        let out: Output = lab.run(
            RACKBOOT,
            &[
                "serve",
                "--config",
                self.config.to_str().expect("utf-8 path"),
            ],
            FAIL_FAST,
        );
        let elapsed = started.elapsed();
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        assert!(!out.status.success(), "rackboot started: {stderr}");
        assert!(elapsed < FAIL_FAST, "took {elapsed:?}");
        let lines: Vec<&str> = stderr.lines().filter(|l| !l.trim().is_empty()).collect();
        assert_eq!(lines.len(), 1, "one message, one line:\n{stderr}");
        assert!(lines[0].starts_with("rackboot: error: "), "{stderr}");
        lines[0].to_string()
    }
}

fn write(path: &Path, bytes: &[u8]) {
    if let Some(parent) = path.parent() {
        fs::create_dir_all(parent).unwrap_or_else(|e| panic!("{}: {e}", parent.display()));
    }
    fs::write(path, bytes).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
}

/// A fresh self-signed RSA certificate for 10.77.0.1 (iPXE needs RSA): (dir, cert, key).
pub fn rsa_cert() -> (tempfile::TempDir, String, String) {
    let dir = tempfile::tempdir().unwrap();
    let cert = dir.path().join("cert.pem").display().to_string();
    let key = dir.path().join("key.pem").display().to_string();
    let out = std::process::Command::new("openssl")
        .args([
            "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
        ])
        .args(["-keyout", &key, "-out", &cert, "-subj", "/CN=10.77.0.1"])
        .args(["-addext", "subjectAltName=IP:10.77.0.1"])
        .output()
        .expect("openssl (Debian: openssl)");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    (dir, cert, key)
}
