//! `rackboot serve` in a [`Lab`], with its own files, for tests that talk to its HTTP side (the
//! API above all) with real curl from inside the lab.
//!
//! Owns: a temp dir with a config, two bootenvs (`discovery`: bios, x86_64 UEFI and arm64 UEFI
//! kernels; `rescue`: x86_64 UEFI only), a config script and small dummy assets; the rackboot
//! process (ended by PID when the lab drops). DHCP is off, TFTP and DNS too unless asked for:
//! HTTP serves.
//! Every wait is bounded.

#![allow(dead_code)] // each test binary uses a different part of this module

use std::cell::Cell;
use std::fs;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::Value;
use tempfile::TempDir;

use super::api::api_section;
use super::lab::{BRIDGE, Lab, SERVER_IP, poll_until, read_text, tail};

const RACKBOOT: &str = env!("CARGO_BIN_EXE_rackboot");
/// From spawn to "rackboot serving" (a debug build opening a fresh SQLite store).
const STARTUP: Duration = Duration::from_secs(30);
/// One curl.
const CMD: Duration = Duration::from_secs(30);

pub const CMDLINE: &str = "console=ttyS0 rackboot.url={{ server_url }} rackboot.mac={{ node.mac }} rackboot.token={{ node.token }}";

/// How the server is configured.
pub struct Setup {
    /// Grant the test tokens ([`super::api::ADMIN_TOKEN`], [`super::api::READ_TOKEN`]).
    pub api: bool,
    /// More TOML appended to the config (after the `[api]` table, if any: start with a table).
    pub extra: String,
    /// Serve DNS on port 53 of the lab address (domain `rack.internal`).
    pub dns: bool,
    /// Serve TFTP on port 69 of the lab address, with these lines in its `[tftp]` table.
    pub tftp: Option<String>,
    /// Start rackboot with this open-files limit, soft and hard (`prlimit --nofile`).
    pub open_files: Option<u32>,
    /// `[http] bind_tokens_to_address = false`: boot scripts and node tokens
    /// from any address. Tests' curl runs at the server's own address, not at
    /// a node's; a test that fetches scripts or acts as nodes that way opts
    /// out explicitly, as a production config never does.
    pub tokens_from_any_address: bool,
    /// More lines for the `[http]` table.
    pub http: String,
}

impl Default for Setup {
    fn default() -> Self {
        Setup {
            api: true,
            extra: String::new(),
            dns: false,
            tftp: None,
            open_files: None,
            tokens_from_any_address: false,
            http: String::new(),
        }
    }
}

/// One HTTP answer.
#[derive(Debug)]
pub struct Reply {
    pub status: u16,
    pub headers: String,
    pub body: Vec<u8>,
}

impl Reply {
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {} {}", self.status, self.text()))
    }

    /// The value of a header (case-insensitive name), if present.
    pub fn header(&self, name: &str) -> Option<String> {
        self.headers.lines().find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.trim()
                .eq_ignore_ascii_case(name)
                .then(|| v.trim().to_string())
        })
    }
}

/// rackboot serving HTTP on 10.77.0.1:80 in a lab. Field order is drop order: the lab (which
/// ends rackboot by PID) goes before the files.
pub struct Server {
    pub lab: Lab,
    pub dir: TempDir,
    pub pid: u32,
    pub log: PathBuf,
    requests: Cell<u32>,
}

impl Server {
    pub fn start(name: &str, setup: Setup) -> Server {
        let lab = Lab::new(name);
        let dir = tempfile::Builder::new()
            .prefix("rackboot-server-")
            .tempdir()
            .expect("temp dir");
        let d = dir.path();
        for (path, bytes) in [
            ("assets/undionly.kpxe", &b"bios loader"[..]),
            ("assets/ipxe-amd64.efi", b"x86_64 loader"),
            ("assets/ipxe-arm64.efi", b"arm64 loader"),
            ("assets/x86_64/vmlinuz", b"x86_64 kernel"),
            ("assets/x86_64/initrd.img", b"x86_64 initrd"),
            ("assets/arm64/Image", b"arm64 kernel"),
            ("assets/arm64/initrd.img", b"arm64 initrd"),
            (
                "scripts/hello.sh",
                b"#!/bin/sh\necho \"hello from {{ node.hostname }}\"\n",
            ),
        ] {
            write(&d.join(path), bytes);
        }
        let kernel = |arch: &str, k: &str, i: &str| {
            format!(
                "[arch.{arch}]\nkernel = \"{k}\"\ninitrds = [\"{i}\"]\ncmdline = \"{CMDLINE}\"\n\n"
            )
        };
        let discovery = format!(
            "description = \"discovery, for the API tests\"\nscripts = [\"hello.sh\"]\n\n{}{}{}",
            kernel("bios", "x86_64/vmlinuz", "x86_64/initrd.img"),
            kernel("x86_64_efi", "x86_64/vmlinuz", "x86_64/initrd.img"),
            kernel("arm64_efi", "arm64/Image", "arm64/initrd.img"),
        );
        write(&d.join("bootenvs/discovery.toml"), discovery.as_bytes());
        let rescue = format!(
            "description = \"rescue shell\"\n\n{}",
            kernel("x86_64_efi", "x86_64/vmlinuz", "x86_64/initrd.img")
        );
        write(&d.join("bootenvs/rescue.toml"), rescue.as_bytes());
        fs::create_dir_all(d.join("state")).expect("state dir");
        let api = if setup.api {
            api_section(d)
        } else {
            String::new()
        };
        let config = d.join("rackboot.toml");
        let text = format!(
            "state_dir = \"{p}/state\"\nassets_dir = \"{p}/assets\"\n\
             bootenvs_dir = \"{p}/bootenvs\"\nscripts_dir = \"{p}/scripts\"\n\
             [network]\ninterface = \"{BRIDGE}\"\naddress = \"{SERVER_IP}\"\n\
             [dhcp]\nenabled = false\n[tftp]\nenabled = {tftp}\n{tftp_lines}\n[dns]\nenabled = {dns}\n\
             [http]\nbind_tokens_to_address = {bound}\n{http_lines}\n\
             {api}{extra}",
            p = d.display(),
            extra = setup.extra,
            dns = setup.dns,
            tftp = setup.tftp.is_some(),
            tftp_lines = setup.tftp.as_deref().unwrap_or(""),
            bound = !setup.tokens_from_any_address,
            http_lines = setup.http,
        );
        write(&config, text.as_bytes());
        let config = config.to_str().expect("utf-8 path");
        let pid = match setup.open_files {
            // prlimit execs rackboot, so the PID is rackboot's.
            Some(n) => lab.spawn(
                "prlimit",
                &[
                    &format!("--nofile={n}:{n}"),
                    RACKBOOT,
                    "serve",
                    "--config",
                    config,
                ],
                "rackboot.log",
            ),
            None => lab.spawn(RACKBOOT, &["serve", "--config", config], "rackboot.log"),
        };
        let log = lab.dir().join("rackboot.log");
        let up = poll_until(STARTUP, || {
            if read_text(&log).contains("rackboot serving") {
                Some(true)
            } else if !lab.is_running(pid) {
                Some(false)
            } else {
                None
            }
        });
        assert!(
            up == Some(true),
            "rackboot did not start within {STARTUP:?}:\n{}",
            tail(&read_text(&log), 20)
        );
        Server {
            lab,
            dir,
            pid,
            log,
            requests: Cell::new(0),
        }
    }

    pub fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }

    pub fn log_text(&self) -> String {
        read_text(&self.log)
    }

    /// curl `<method> http://10.77.0.1<path>` from inside the lab, with `token` as bearer and
    /// `body` as a JSON body when given.
    pub fn request(
        &self,
        method: &str,
        path: &str,
        token: Option<&str>,
        body: Option<&str>,
    ) -> Reply {
        self.curl(
            &format!("http://{SERVER_IP}{path}"),
            method,
            token,
            body,
            &[],
        )
    }

    /// Like [`Server::request`] for any URL, with more curl arguments.
    pub fn curl(
        &self,
        url: &str,
        method: &str,
        token: Option<&str>,
        body: Option<&str>,
        extra: &[&str],
    ) -> Reply {
        let n = self.requests.get();
        self.requests.set(n + 1);
        let out_body = self.lab.dir().join(format!("http-{n}.body"));
        let out_headers = self.lab.dir().join(format!("http-{n}.headers"));
        let auth = token.map(|t| format!("Authorization: Bearer {t}"));
        let mut args: Vec<&str> = vec![
            "-sS",
            "--max-time",
            "20",
            "-X",
            method,
            "-o",
            out_body.to_str().expect("utf-8"),
            "-D",
            out_headers.to_str().expect("utf-8"),
            "-w",
            "%{http_code}",
        ];
        if let Some(a) = &auth {
            args.extend_from_slice(&["-H", a]);
        }
        let body_file = self.lab.dir().join(format!("http-{n}.request"));
        let data_arg = format!("@{}", body_file.display());
        if let Some(b) = body {
            fs::write(&body_file, b).expect("write request body");
            args.extend_from_slice(&[
                "-H",
                "Content-Type: application/json",
                "--data-binary",
                &data_arg,
            ]);
        }
        args.extend_from_slice(extra);
        args.push(url);
        let out = self.lab.run("curl", &args, CMD);
        let code = String::from_utf8_lossy(&out.stdout);
        let status = code.trim().parse().unwrap_or_else(|_| {
            panic!(
                "curl {method} {url}: no status ({code:?}): {}",
                String::from_utf8_lossy(&out.stderr)
            )
        });
        Reply {
            status,
            headers: fs::read_to_string(&out_headers).unwrap_or_default(),
            body: fs::read(&out_body).unwrap_or_default(),
        }
    }
}

fn write(path: &Path, bytes: &[u8]) {
    if let Some(parent) = path.parent() {
        fs::create_dir_all(parent).unwrap_or_else(|e| panic!("{}: {e}", parent.display()));
    }
    fs::write(path, bytes).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
}
