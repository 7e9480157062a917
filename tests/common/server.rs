//! `rackboot serve` running in a [`Lab`], as [`Setup`](super::setup::Setup) describes it, and
//! what tests ask of it from inside the lab with real curl: HTTP answers, node records and their
//! timelines, `/metrics` samples, log lines.
//!
//! Owns: the rackboot process (ended by PID when the lab drops, or killed and started again on
//! the same files by a crash test) and the one readiness wait: "rackboot serving" in its log,
//! bounded, failing at once with the log's tail when rackboot exits first.
//! Every wait is bounded.

#![allow(dead_code)] // each test binary uses a different part of this module

use std::cell::{Cell, RefCell};
use std::fs;
use std::path::{Path, PathBuf};
use std::time::Duration;

use rackboot::model::Node;
use rackboot::store::{SqliteStore, Store};
use serde_json::Value;

use super::api::{ADMIN_TOKEN, kinds};
use super::lab::{Lab, SERVER_IP, poll_until, read_text, tail};
use super::setup::{RACKBOOT, Site};

/// From spawn to "rackboot serving": a debug build opening a fresh SQLite store, with other test
/// binaries busy on both cores.
const STARTUP: Duration = Duration::from_secs(60);
/// One curl (its own `--max-time` is [`CURL_MAX`]).
const CMD: Duration = Duration::from_secs(40);
const CURL_MAX: &str = "35";
/// Events and log lines written off the request path appear within this.
const EVENT: Duration = Duration::from_secs(15);
/// One `rackboot` CLI command: a `power pxe-once` through a fake Redfish BMC waits out its
/// power-off (up to 11 s).
const CLI: Duration = Duration::from_secs(90);

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

/// rackboot in its lab, serving HTTP on 10.77.0.1:80 (and what else its setup turned on). Field
/// order is drop order: the lab (which ends rackboot by PID) goes before the files.
pub struct Server {
    pub lab: Lab,
    site: Site,
    wrapper: Vec<String>,
    pid: Cell<Option<u32>>,
    log: RefCell<PathBuf>,
    runs: Cell<u32>,
    requests: Cell<u32>,
}

impl Server {
    pub(super) fn new(lab: Lab, site: Site, wrapper: Vec<String>) -> Server {
        Server {
            log: RefCell::new(lab.dir().join("rackboot.log")),
            lab,
            site,
            wrapper,
            pid: Cell::new(None),
            runs: Cell::new(0),
            requests: Cell::new(0),
        }
    }

    /// Starts `rackboot serve` on this server's files and waits until it serves. The first run
    /// logs to `rackboot.log`, a run after a crash to `rackboot-<n>.log`.
    pub fn serve(&self) {
        let n = self.runs.get() + 1;
        self.runs.set(n);
        let log = match n {
            1 => "rackboot.log".to_string(),
            n => format!("rackboot-{n}.log"),
        };
        let config = self.site.config().to_str().expect("utf-8 path");
        let mut argv: Vec<&str> = self.wrapper.iter().map(String::as_str).collect();
        argv.extend([RACKBOOT, "serve", "--config", config]);
        // The wrapper execs rackboot (as `ip netns exec` does), so the PID is rackboot's.
        let pid = self.lab.spawn(argv[0], &argv[1..], &log);
        let log = self.lab.dir().join(log);
        self.pid.set(Some(pid));
        *self.log.borrow_mut() = log.clone();
        wait_serving(&self.lab, pid, &log);
    }

    /// Writes node records into the store before rackboot starts (rackboot owns the file once
    /// it runs): for records no API call can make, as with labels from an inventory.
    pub fn seed_nodes(&self, nodes: Vec<Node>) {
        assert!(self.pid.get().is_none(), "seed the store before serve()");
        let state = self.path("state");
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        rt.block_on(async {
            let store = SqliteStore::open(&state).await.expect("open store");
            store.put_nodes(nodes).await.expect("put nodes");
        });
        // Dropping the store (with the runtime) closes the file and frees the directory.
    }

    /// SIGKILL, as a crash: nothing of rackboot's own shutdown runs.
    pub fn kill(&self) {
        let pid = self.pid();
        self.lab.kill(pid);
        assert!(!self.lab.is_running(pid), "rackboot survived SIGKILL");
    }

    /// The PID of the running (or last) rackboot.
    pub fn pid(&self) -> u32 {
        self.pid.get().expect("rackboot was never started")
    }

    /// The log of the running (or last) rackboot.
    pub fn log(&self) -> PathBuf {
        self.log.borrow().clone()
    }

    pub fn log_text(&self) -> String {
        read_text(&self.log())
    }

    /// The site directory: the files and the config.
    pub fn site_dir(&self) -> &Path {
        self.site.dir()
    }

    /// A path under the site directory (files and config).
    pub fn path(&self, rel: &str) -> PathBuf {
        self.site.path(rel)
    }

    /// Writes (or replaces) a file of the site.
    pub fn write(&self, rel: &str, bytes: impl AsRef<[u8]>) {
        self.site.write(rel, bytes);
    }

    pub fn config(&self) -> &Path {
        self.site.config()
    }

    pub fn config_text(&self) -> String {
        fs::read_to_string(self.config()).expect("read config")
    }

    /// Runs `rackboot serve` on these files to its exit, which must be a failure; its one line.
    pub fn start_fails(&self) -> String {
        self.site.start_fails(&self.lab)
    }

    pub fn is_running(&self) -> bool {
        self.pid.get().is_some_and(|pid| self.lab.is_running(pid))
    }

    pub fn assert_running(&self) {
        assert!(
            self.is_running(),
            "rackboot (pid {}) exited:\n{}",
            self.pid(),
            tail(&self.log_text(), 30)
        );
    }

    /// The proof that bad input cost nothing: the same process still runs and answers.
    pub fn assert_still_serving(&self) {
        self.assert_running();
        let r = self.http(&[], "/api/v1/nodes");
        assert_eq!(r.status, 200, "API after bad input: {}", r.text());
    }

    /// Waits until the log holds a line with every one of `needles`; returns that line.
    pub fn wait_log(&self, needles: &[&str]) -> String {
        poll_until(EVENT, || {
            self.log_text()
                .lines()
                .find(|l| needles.iter().all(|n| l.contains(n)))
                .map(str::to_string)
        })
        .unwrap_or_else(|| {
            panic!(
                "no log line with {needles:?} within {EVENT:?}:\n{}",
                tail(&self.log_text(), 30)
            )
        })
    }

    // -----------------------------------------------------------------------------------------
    // The command line

    /// `rackboot <args>` inside the lab, pointed at this server with the admin token: its exit
    /// code, and its output as `--- stdout\n…--- stderr\n…` (see [`cli_stdout`]).
    pub fn cli(&self, args: &[&str]) -> (Option<i32>, String) {
        self.cli_as(ADMIN_TOKEN, args)
    }

    /// [`Server::cli`] with `token`.
    pub fn cli_as(&self, token: &str, args: &[&str]) -> (Option<i32>, String) {
        let server = format!("http://{SERVER_IP}");
        let mut all: Vec<&str> = args.to_vec();
        all.extend_from_slice(&["--server", &server, "--token", token]);
        let out = self.lab.run(RACKBOOT, &all, CLI);
        let text = format!(
            "--- stdout\n{}--- stderr\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        (out.status.code(), text)
    }

    // -----------------------------------------------------------------------------------------
    // HTTP

    /// curl `http://10.77.0.1<path>` with more curl arguments; API paths carry the admin token.
    /// Body and headers go through files, so binary bodies survive.
    pub fn http(&self, args: &[&str], path: &str) -> Reply {
        let auth = format!("Authorization: Bearer {ADMIN_TOKEN}");
        let mut all: Vec<&str> = Vec::new();
        if path.starts_with("/api/v1") {
            all.extend_from_slice(&["-H", &auth]);
        }
        all.extend_from_slice(args);
        self.fetch(&format!("http://{SERVER_IP}{path}"), &all)
    }

    /// `GET http://10.77.0.1<path>` (the admin token on API paths).
    pub fn get(&self, path: &str) -> Reply {
        self.http(&[], path)
    }

    /// curl `<method> http://10.77.0.1<path>`, with `token` as bearer and `body` as a JSON body
    /// when given.
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
        let auth = token.map(|t| format!("Authorization: Bearer {t}"));
        let mut args: Vec<&str> = vec!["-X", method];
        if let Some(a) = &auth {
            args.extend_from_slice(&["-H", a]);
        }
        let body_file = self
            .lab
            .dir()
            .join(format!("http-{}.request", self.requests.get()));
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
        self.fetch(url, &args)
    }

    fn fetch(&self, url: &str, args: &[&str]) -> Reply {
        let n = self.requests.get();
        self.requests.set(n + 1);
        let body = self.lab.dir().join(format!("http-{n}.body"));
        let headers = self.lab.dir().join(format!("http-{n}.headers"));
        let mut all = vec![
            "-sS",
            "--max-time",
            CURL_MAX,
            "-o",
            body.to_str().expect("utf-8 path"),
            "-D",
            headers.to_str().expect("utf-8 path"),
            "-w",
            "%{http_code}",
        ];
        all.extend_from_slice(args);
        all.push(url);
        let out = self.lab.run("curl", &all, CMD);
        let code = String::from_utf8_lossy(&out.stdout);
        let status = code.trim().parse().unwrap_or_else(|_| {
            panic!(
                "curl {args:?} {url}: no status ({code:?}): {}",
                String::from_utf8_lossy(&out.stderr)
            )
        });
        Reply {
            status,
            headers: fs::read_to_string(&headers).unwrap_or_default(),
            body: fs::read(&body).unwrap_or_default(),
        }
    }

    // -----------------------------------------------------------------------------------------
    // The API and /metrics

    /// `GET /api/v1/nodes/<mac>`, which must exist.
    pub fn node(&self, mac: &str) -> Value {
        self.try_node(mac)
            .unwrap_or_else(|| panic!("no node {mac}\n{}", tail(&self.log_text(), 20)))
    }

    /// `GET /api/v1/nodes/<mac>`: `None` on 404.
    pub fn try_node(&self, mac: &str) -> Option<Value> {
        let r = self.get(&format!("/api/v1/nodes/{mac}"));
        match r.status {
            200 => Some(r.json()),
            404 => None,
            s => panic!("GET node {mac}: {s} {}", r.text()),
        }
    }

    /// The node's timeline as (kind, detail).
    pub fn events(&self, mac: &str) -> Vec<(String, String)> {
        kinds(&self.node(mac))
    }

    /// The details of the node's events of `kind`.
    pub fn details(&self, mac: &str, kind: &str) -> Vec<String> {
        self.events(mac)
            .into_iter()
            .filter(|(k, _)| k == kind)
            .map(|(_, d)| d)
            .collect()
    }

    /// Waits for an event of `kind` whose detail contains `needle`; returns the detail.
    pub fn wait_event(&self, mac: &str, kind: &str, needle: &str) -> String {
        poll_until(EVENT, || {
            self.details(mac, kind)
                .into_iter()
                .find(|d| d.contains(needle))
        })
        .unwrap_or_else(|| {
            panic!(
                "no {kind} event containing {needle:?} for {mac} within {EVENT:?}: {:#?}",
                self.events(mac)
            )
        })
    }

    /// `GET /api/v1/<what>` (nodes, leases…): the array it answers.
    pub fn api_list(&self, what: &str) -> Vec<Value> {
        let r = self.get(&format!("/api/v1/{what}"));
        assert_eq!(r.status, 200, "GET /api/v1/{what}: {}", r.text());
        r.json()
            .as_array()
            .cloned()
            .unwrap_or_else(|| panic!("GET /api/v1/{what}: not a list"))
    }

    /// The value of `series` (a metric name with its labels as `/metrics` writes them, e.g.
    /// `rackboot_dhcp_ignored_total{reason="bad_chaddr"}`), if `/metrics` has it.
    pub fn try_metric(&self, series: &str) -> Option<f64> {
        let r = self.get("/metrics");
        assert_eq!(r.status, 200, "/metrics: {}", r.text());
        r.text().lines().find_map(|l| {
            l.strip_prefix(series)?
                .strip_prefix(' ')?
                .trim()
                .parse()
                .ok()
        })
    }

    /// [`Server::try_metric`], which must be there.
    pub fn metric(&self, series: &str) -> f64 {
        self.try_metric(series)
            .unwrap_or_else(|| panic!("no {series} in /metrics:\n{}", self.get("/metrics").text()))
    }

    /// A boot of `mac` as iPXE makes it: its script for `arch`, then the kernel it names, which
    /// starts the boot. Returns the node token of that boot, which is in force from then on.
    pub fn boot(&self, mac: &str, arch: &str) -> String {
        let r = self.get(&format!("/boot/{mac}.ipxe?arch={arch}"));
        assert_eq!(r.status, 200, "boot script of {mac}: {}", r.text());
        let script = r.text();
        let kernel = self.get(&kernel_path(&script));
        assert_eq!(kernel.status, 200, "kernel of {mac}: {}", kernel.text());
        let token = token_in(&script);
        assert!(
            token.len() == 32 && token.bytes().all(|b| b.is_ascii_hexdigit()),
            "{token}"
        );
        token
    }
}

/// Waits until rackboot `pid` logs "rackboot serving" to `log`, for [`STARTUP`] at most; panics
/// with the log's tail when it exits first or the time runs out.
pub fn wait_serving(lab: &Lab, pid: u32, log: &Path) {
    let up = poll_until(STARTUP, || {
        if read_text(log).contains("rackboot serving") {
            Some(true)
        } else if !lab.is_running(pid) {
            Some(false)
        } else {
            None
        }
    });
    match up {
        Some(true) => {}
        Some(false) => panic!(
            "rackboot exited before serving:\n{}",
            tail(&read_text(log), 30)
        ),
        None => panic!(
            "rackboot did not start within {STARTUP:?}:\n{}",
            tail(&read_text(log), 30)
        ),
    }
}

/// What a command printed on its standard output, from the output of [`Server::cli`].
pub fn cli_stdout(out: &str) -> &str {
    out.split("--- stderr")
        .next()
        .unwrap_or_default()
        .trim_start_matches("--- stdout\n")
}

/// The JSON a `--json` command printed, from the output of [`Server::cli`].
pub fn cli_json(out: &str) -> Value {
    serde_json::from_str(cli_stdout(out)).unwrap_or_else(|e| panic!("not JSON ({e}): {out}"))
}

/// The node token (`rackboot.token=`) of a rendered boot script.
pub fn token_in(script: &str) -> String {
    script
        .split_whitespace()
        .find_map(|w| w.strip_prefix("rackboot.token="))
        .unwrap_or_else(|| panic!("no rackboot.token= in {script}"))
        .to_string()
}

/// The path (`/assets/…?mac=…`) of the kernel URL of an iPXE script.
pub fn kernel_path(script: &str) -> String {
    let url = script
        .lines()
        .find(|l| l.starts_with("kernel "))
        .and_then(|l| l.split_whitespace().nth(3))
        .unwrap_or_else(|| panic!("no kernel in {script}"));
    url.strip_prefix(&format!("http://{SERVER_IP}"))
        .unwrap_or_else(|| panic!("kernel {url} is not rackboot's"))
        .to_string()
}
