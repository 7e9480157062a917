//! rackboot's four protocols against real clients, one private network per test.
//!
//! Each test starts the real `rackboot serve` in a fresh [`Lab`] namespace (bridge `br0` =
//! 10.77.0.1/24) from a config, a bootenv, a config script and small dummy assets written to a
//! temp dir. DHCP clients run in a second namespace ([`ClientNet`]) wired to `br0` by veth pairs,
//! so rackboot meets them on the wire as it meets machines: udhcpc and dhclient for DHCP,
//! curl, atftp and tftp-hpa for TFTP, curl for HTTP, dig for DNS. Bad input must get its proper
//! refusal and leave the server serving (same PID, a good request answered afterwards); a start-up
//! failure must end the process with one message naming the file and the key or line.
//!
//! Needs root and busybox (udhcpc), isc-dhcp-client, curl, atftp, tftp-hpa, bind9-dnsutils and
//! python3. Every wait is bounded; namespaces and processes are removed by PID on drop, also
//! when a test fails.

mod common;

use std::cell::{Cell, RefCell};
use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::thread::sleep;
use std::time::{Duration, Instant};

use common::api::{AUTH_HEADER, api_section};
use common::lab::{BRIDGE, Lab, SERVER_IP, poll_until, read_text, tail, wait_for_file};
use serde_json::Value;
use tempfile::TempDir;

const RACKBOOT: &str = env!("CARGO_BIN_EXE_rackboot");
/// From spawn to "rackboot serving" (a debug build opening a fresh SQLite store).
const STARTUP: Duration = Duration::from_secs(30);
/// Any one client command: curl, dig, atftp, tftp, a udhcpc run of at most 3 × 2 s tries.
const CMD: Duration = Duration::from_secs(30);
/// How long rackboot may take to refuse a bad configuration and exit.
const FAIL_FAST: Duration = Duration::from_secs(15);
/// Events written off the request path (TFTP) appear within this.
const EVENT: Duration = Duration::from_secs(10);

/// The dynamic range in the test config.
const RANGE: (u8, u8) = (100, 199);

/// Dummy assets: (path under assets_dir, size). The sizes are chosen for TFTP's edge cases.
const ASSETS: &[(&str, usize)] = &[
    ("undionly.kpxe", 5000),
    // 5 × 1468: at the negotiated block size the last DATA block is empty.
    ("ipxe-amd64.efi", 5 * 1468),
    // 8 × 512: the same at TFTP's default block size.
    ("ipxe-arm64.efi", 8 * 512),
    ("x86_64/vmlinuz", 9000),
    ("x86_64/initrd.img", 3000),
];

const CMDLINE: &str = "console=ttyS0 rackboot.url={{ server_url }} rackboot.mac={{ node.mac }} rackboot.token={{ node.token }}";

// ---------------------------------------------------------------------------------------------
// rackboot's files and process

/// A config, bootenv, script, assets and state directory in one temp dir; absolute paths.
struct Files {
    dir: TempDir,
}

impl Files {
    fn new() -> Files {
        let dir = tempfile::Builder::new()
            .prefix("rackboot-protocols-")
            .tempdir()
            .expect("create temp dir");
        let files = Files { dir };
        for (i, (path, size)) in ASSETS.iter().enumerate() {
            files.write(
                &format!("assets/{path}"),
                &pseudo_random(i as u64 + 1, *size),
            );
        }
        let bootenv = format!(
            "description = \"discovery, for the protocol tests\"\n\
             scripts = [\"hello.sh\"]\n\n\
             [arch.bios]\n\
             kernel = \"x86_64/vmlinuz\"\n\
             initrds = [\"x86_64/initrd.img\"]\n\
             cmdline = \"{CMDLINE}\"\n\n\
             [arch.x86_64_efi]\n\
             kernel = \"x86_64/vmlinuz\"\n\
             initrds = [\"x86_64/initrd.img\"]\n\
             cmdline = \"{CMDLINE}\"\n"
        );
        files.write("bootenvs/discovery.toml", bootenv.as_bytes());
        files.write(
            "scripts/hello.sh",
            b"#!/bin/sh\necho \"hello from {{ node.hostname }}\"\n",
        );
        fs::create_dir_all(files.path("state")).expect("create state dir");
        let config = files.config_text();
        files.write("rackboot.toml", config.as_bytes());
        files
    }

    fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }

    /// `[http] bind_tokens_to_address = false`: this test's curl, at rackboot's own address,
    /// fetches boot scripts and uses node tokens as the nodes would from theirs.
    fn tokens_from_any_address(self) -> Files {
        let mut config = fs::read_to_string(self.config()).expect("read config");
        config.push_str("\n[http]\nbind_tokens_to_address = false\n");
        self.write("rackboot.toml", config.as_bytes());
        self
    }

    fn config(&self) -> PathBuf {
        self.path("rackboot.toml")
    }

    /// The config every test starts from: default ports, absolute paths.
    fn config_text(&self) -> String {
        let d = self.dir.path().display();
        format!(
            "state_dir = \"{d}/state\"\n\
             assets_dir = \"{d}/assets\"\n\
             bootenvs_dir = \"{d}/bootenvs\"\n\
             scripts_dir = \"{d}/scripts\"\n\
             \n\
             [network]\n\
             interface = \"{BRIDGE}\"\n\
             \n\
             [dhcp]\n\
             \n\
             [[dhcp.subnet]]\n\
             cidr = \"10.77.0.0/24\"\n\
             ranges = [[\"10.77.0.{}\", \"10.77.0.{}\"]]\n\
             {}",
            RANGE.0,
            RANGE.1,
            api_section(self.dir.path()),
        )
    }

    fn write(&self, rel: &str, bytes: &[u8]) {
        let path = self.path(rel);
        if let Some(parent) = path.parent() {
            fs::create_dir_all(parent).unwrap_or_else(|e| panic!("{}: {e}", parent.display()));
        }
        fs::write(&path, bytes).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    }

    fn asset(&self, rel: &str) -> Vec<u8> {
        let path = self.path(&format!("assets/{rel}"));
        fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
    }
}

/// Deterministic, non-repeating bytes (xorshift64), so a misplaced block cannot compare equal.
fn pseudo_random(seed: u64, len: usize) -> Vec<u8> {
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

/// `rackboot serve` running in a lab. Field order is drop order: the lab (which ends rackboot
/// by PID) goes before the files it uses.
struct Rackboot {
    lab: Lab,
    files: Files,
    pid: u32,
    log: PathBuf,
    requests: Cell<u32>,
}

impl Rackboot {
    fn start(name: &str) -> Rackboot {
        Rackboot::start_with(Lab::new(name), Files::new())
    }

    fn start_with(lab: Lab, files: Files) -> Rackboot {
        let config = files.config();
        let args = ["serve", "--config", config.to_str().expect("utf-8 path")];
        Rackboot::start_as(lab, files, RACKBOOT, &args)
    }

    /// `cmd args…` must exec `rackboot serve` with [`Files::config`] (the PID stays its own).
    fn start_as(lab: Lab, files: Files, cmd: &str, args: &[&str]) -> Rackboot {
        let pid = lab.spawn(cmd, args, "rackboot.log");
        let rb = Rackboot {
            log: lab.dir().join("rackboot.log"),
            lab,
            files,
            pid,
            requests: Cell::new(0),
        };
        let up = poll_until(STARTUP, || {
            if read_text(&rb.log).contains("rackboot serving") {
                Some(true)
            } else if !rb.lab.is_running(pid) {
                Some(false)
            } else {
                None
            }
        });
        assert!(
            up == Some(true),
            "rackboot did not start within {STARTUP:?}:\n{}",
            tail(&rb.log_text(), 20)
        );
        rb
    }

    fn log_text(&self) -> String {
        read_text(&self.log)
    }

    /// The proof that bad input cost nothing: the same process still runs and answers.
    fn assert_still_serving(&self) {
        assert!(
            self.lab.is_running(self.pid),
            "rackboot (pid {}) exited:\n{}",
            self.pid,
            tail(&self.log_text(), 20)
        );
        let r = self.http(&[], "/api/v1/nodes");
        assert_eq!(r.status, 200, "API after bad input: {}", r.text());
    }

    /// curl `http://10.77.0.1<path>` from the lab namespace; body and headers via files, so
    /// binary bodies survive. API paths carry the admin token.
    fn http(&self, args: &[&str], path: &str) -> Reply {
        let n = self.requests.get();
        self.requests.set(n + 1);
        let body = self.lab.dir().join(format!("http-{n}.body"));
        let headers = self.lab.dir().join(format!("http-{n}.headers"));
        let url = format!("http://{SERVER_IP}{path}");
        let mut all = vec![
            "-sS",
            "--max-time",
            "10",
            "-o",
            body.to_str().expect("utf-8 path"),
            "-D",
            headers.to_str().expect("utf-8 path"),
            "-w",
            "%{http_code}",
        ];
        if path.starts_with("/api/v1") {
            all.extend_from_slice(&["-H", AUTH_HEADER]);
        }
        all.extend_from_slice(args);
        all.push(&url);
        let out = self.lab.run("curl", &all, CMD);
        let code = String::from_utf8_lossy(&out.stdout);
        let status = code.trim().parse().unwrap_or_else(|_| {
            panic!(
                "curl {path}: no status ({code:?}): {}",
                String::from_utf8_lossy(&out.stderr)
            )
        });
        Reply {
            status,
            headers: fs::read_to_string(&headers).unwrap_or_default(),
            body: fs::read(&body).unwrap_or_default(),
        }
    }

    /// `GET /api/v1/nodes/<mac>`, which must exist.
    fn node(&self, mac: &str) -> Value {
        let r = self.http(&[], &format!("/api/v1/nodes/{mac}"));
        assert_eq!(r.status, 200, "node {mac}: {}", r.text());
        serde_json::from_slice(&r.body).unwrap_or_else(|e| panic!("node {mac}: {e}: {}", r.text()))
    }

    /// The node's timeline as (kind, detail).
    fn events(&self, mac: &str) -> Vec<(String, String)> {
        self.node(mac)["events"]
            .as_array()
            .expect("events is an array")
            .iter()
            .map(|e| {
                (
                    e["kind"].as_str().unwrap_or_default().to_string(),
                    e["detail"].as_str().unwrap_or_default().to_string(),
                )
            })
            .collect()
    }

    /// The details of the node's events of `kind`.
    fn details(&self, mac: &str, kind: &str) -> Vec<String> {
        self.events(mac)
            .into_iter()
            .filter(|(k, _)| k == kind)
            .map(|(_, d)| d)
            .collect()
    }

    /// Waits for an event of `kind` whose detail contains `needle`.
    fn wait_event(&self, mac: &str, kind: &str, needle: &str) -> String {
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

    /// `dig @10.77.0.1 <args>` from the lab namespace; stdout.
    fn dig(&self, args: &[&str]) -> String {
        let server = format!("@{SERVER_IP}");
        let mut all = vec![server.as_str(), "+time=2", "+tries=2"];
        all.extend_from_slice(args);
        let out = self.lab.run("dig", &all, CMD);
        assert!(
            out.status.success(),
            "dig {args:?}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// A file's bytes over TFTP with curl (from the lab namespace).
    fn tftp_curl(&self, args: &[&str], file: &str) -> (Output, Vec<u8>) {
        let n = self.requests.get();
        self.requests.set(n + 1);
        let local = self.lab.dir().join(format!("tftp-{n}.curl"));
        let url = format!("tftp://{SERVER_IP}/{file}");
        let mut all = vec![
            "-sS",
            "-v",
            "--max-time",
            "15",
            "-o",
            local.to_str().expect("utf-8 path"),
        ];
        all.extend_from_slice(args);
        all.push(&url);
        let out = self.lab.run("curl", &all, CMD);
        (out, fs::read(&local).unwrap_or_default())
    }

    /// A file over TFTP with atftp (`--trace` shows the OACK); (output, local file bytes).
    fn tftp_atftp(&self, args: &[&str]) -> (Output, Vec<u8>) {
        let n = self.requests.get();
        self.requests.set(n + 1);
        let local = self.lab.dir().join(format!("tftp-{n}.atftp"));
        let server = SERVER_IP.to_string();
        let mut all = vec!["--trace", "--tftp-timeout", "2", "-l"];
        all.push(local.to_str().expect("utf-8 path"));
        all.extend_from_slice(args);
        all.push(&server);
        let out = self.lab.run("atftp", &all, CMD);
        (out, fs::read(&local).unwrap_or_default())
    }
}

struct Reply {
    status: u16,
    headers: String,
    body: Vec<u8>,
}

impl Reply {
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    fn header(&self, name: &str) -> Option<String> {
        self.headers.lines().find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.trim()
                .eq_ignore_ascii_case(name)
                .then(|| v.trim().to_string())
        })
    }
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

// ---------------------------------------------------------------------------------------------
// Client machines

/// A second namespace holding client interfaces `c0`, `c1`, … — one per MAC — each a veth whose
/// peer (`c<i>br`) is enslaved to the lab's `br0`. Clients here reach rackboot only over the
/// bridge, as machines would. Named `rb-cl-<lab name>-<pid>` so that the lab's sweep removes it
/// too if the test binary is killed.
struct ClientNet {
    ns: String,
    dir: PathBuf,
    children: RefCell<Vec<Child>>,
    runs: Cell<u32>,
}

impl ClientNet {
    fn new(lab: &Lab, macs: &[&str]) -> ClientNet {
        let ns = lab.ns().replacen("rb-", "rb-cl-", 1);
        let dir = lab.dir().join("clients");
        fs::create_dir_all(&dir).expect("create client dir");
        ip(&["netns", "add", &ns]);
        // From here on Drop deletes the namespace, even if a later step panics.
        let net = ClientNet {
            ns,
            dir,
            children: RefCell::new(Vec::new()),
            runs: Cell::new(0),
        };
        ip(&["-n", &net.ns, "link", "set", "lo", "up"]);
        for (i, mac) in macs.iter().enumerate() {
            let (iface, port) = (format!("c{i}"), format!("c{i}br"));
            ip(&[
                "-n",
                lab.ns(),
                "link",
                "add",
                &port,
                "type",
                "veth",
                "peer",
                "name",
                &iface,
                "netns",
                &net.ns,
            ]);
            ip(&["-n", lab.ns(), "link", "set", &port, "master", BRIDGE, "up"]);
            ip(&["-n", &net.ns, "link", "set", &iface, "address", mac, "up"]);
        }
        net
    }

    fn file(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    /// Runs a short command in the client namespace, killed if it outlives `timeout`.
    fn run(&self, cmd: &str, args: &[&str], timeout: Duration) -> Output {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &self.ns, cmd]).args(args);
        run_bounded(c, timeout)
    }

    /// Starts a long-running client; it is ended by PID on drop (or by [`ClientNet::stop`]).
    fn spawn(&self, cmd: &str, args: &[&str], log: &str) -> u32 {
        let out = fs::File::create(self.file(log)).expect("create client log");
        let err = out.try_clone().expect("dup log");
        // `ip netns exec` execs the command, so the PID is the client's own.
        let child = Command::new("ip")
            .args(["netns", "exec", &self.ns, cmd])
            .args(args)
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {cmd}: {e}"));
        let pid = child.id();
        self.children.borrow_mut().push(child);
        pid
    }

    /// SIGKILL to a process started with [`ClientNet::spawn`]; reaps it.
    fn stop(&self, pid: u32) {
        let mut children = self.children.borrow_mut();
        if let Some(i) = children.iter().position(|c| c.id() == pid) {
            let mut child = children.remove(i);
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    fn is_running(&self, pid: u32) -> bool {
        self.children
            .borrow_mut()
            .iter_mut()
            .find(|c| c.id() == pid)
            .is_some_and(|c| matches!(c.try_wait(), Ok(None)))
    }

    /// Sends `signal` (e.g. `USR1`) to a process started with [`ClientNet::spawn`].
    fn signal(&self, pid: u32, signal: &str) {
        assert!(self.is_running(pid), "pid {pid} is not running");
        let out = run_bounded(
            {
                let mut c = Command::new("kill");
                c.args([&format!("-{signal}"), &pid.to_string()]);
                c
            },
            CMD,
        );
        assert!(out.status.success(), "kill -{signal} {pid}: {}", text(&out));
    }

    /// Runs `udhcpc -n -q` once on `iface` and returns what it told its script on `bound`, or
    /// its output if it got no lease.
    fn udhcpc(&self, iface: &str, extra: &[&str]) -> Result<BTreeMap<String, String>, String> {
        let n = self.runs.get();
        self.runs.set(n + 1);
        let (script, record) = self.udhcpc_script(&format!("udhcpc-{n}"), false);
        let mut args = vec!["-i", iface, "-f", "-n", "-q", "-t", "3", "-T", "2", "-s"];
        args.push(script.to_str().expect("utf-8 path"));
        args.extend_from_slice(extra);
        let out = self.run("udhcpc", &args, CMD);
        match last_event(&record, "bound") {
            Some(env) if out.status.success() => Ok(env),
            _ => Err(format!(
                "udhcpc {args:?}: {}\n{}\nscript saw:\n{}",
                out.status,
                text(&out),
                read_text(&record)
            )),
        }
    }

    /// A udhcpc script that appends each call's event and variables to `<name>.env`; with
    /// `configure`, it first puts the leased address on the interface (for unicast renewal).
    fn udhcpc_script(&self, name: &str, configure: bool) -> (PathBuf, PathBuf) {
        let script = self.file(&format!("{name}.sh"));
        let record = self.file(&format!("{name}.env"));
        let configure = if configure {
            "case \"$1\" in\n\
               bound|renew) ip addr replace \"$ip/$mask\" dev \"$interface\" ;;\n\
               deconfig) ip addr flush dev \"$interface\" ;;\n\
             esac\n"
        } else {
            ""
        };
        let body = format!(
            "#!/bin/sh\n\
             # udhcpc calls this with deconfig, bound, renew, nak or leasefail.\n\
             {configure}\
             {{ echo \"event=$1\"\n\
               env | grep -E '^(ip|mask|subnet|siaddr|sname|boot_file|serverid|hostname|domain|dns|lease)=' || true\n\
               echo \"end=$1\"\n\
             }} >> '{}'\n\
             exit 0\n",
            record.display()
        );
        fs::write(&script, body).expect("write udhcpc script");
        make_executable(&script);
        (script, record)
    }
}

impl Drop for ClientNet {
    fn drop(&mut self) {
        for mut child in self.children.get_mut().drain(..) {
            let _ = child.kill();
            let _ = child.wait();
        }
        // Anything a client left behind (a daemonized dhclient) is ended by PID too.
        if let Ok(out) = try_run_bounded(
            {
                let mut c = Command::new("ip");
                c.args(["netns", "pids", &self.ns]);
                c
            },
            CMD,
        ) {
            let pids: Vec<String> = String::from_utf8_lossy(&out.stdout)
                .split_whitespace()
                .map(str::to_string)
                .collect();
            for pid in &pids {
                let mut c = Command::new("kill");
                c.args(["-KILL", pid]);
                let _ = try_run_bounded(c, CMD);
            }
            let deadline = Instant::now() + Duration::from_secs(5);
            while pids
                .iter()
                .any(|p| Path::new(&format!("/proc/{p}")).exists())
                && Instant::now() < deadline
            {
                sleep(Duration::from_millis(50));
            }
        }
        let mut c = Command::new("ip");
        c.args(["netns", "del", &self.ns]);
        if let Err(e) = try_run_bounded(c, CMD) {
            eprintln!("could not delete namespace {}: {e}", self.ns);
        }
    }
}

/// The variables of the last complete script call for `event` in a udhcpc script record.
fn last_event(record: &Path, event: &str) -> Option<BTreeMap<String, String>> {
    let text = read_text(record);
    let mut found = None;
    let mut current: Option<BTreeMap<String, String>> = None;
    for line in text.lines() {
        let Some((k, v)) = line.split_once('=') else {
            continue;
        };
        match k {
            "event" => current = (v == event).then(BTreeMap::new),
            // A call's record counts once the script has finished writing it.
            "end" => found = current.take().or(found),
            _ => {
                if let Some(env) = current.as_mut() {
                    env.insert(k.to_string(), v.to_string());
                }
            }
        }
    }
    found
}

fn make_executable(path: &Path) {
    use std::os::unix::fs::PermissionsExt;
    fs::set_permissions(path, fs::Permissions::from_mode(0o755)).expect("chmod");
}

fn ip(args: &[&str]) {
    let mut c = Command::new("ip");
    c.args(args);
    let out = run_bounded(c, CMD);
    assert!(
        out.status.success(),
        "ip {}: {}",
        args.join(" "),
        text(&out)
    );
}

fn try_run_bounded(mut cmd: Command, timeout: Duration) -> Result<Output, String> {
    let what = format!("{cmd:?}");
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("spawn {what}: {e}"))?;
    let deadline = Instant::now() + timeout;
    loop {
        match child.try_wait() {
            Ok(Some(_)) => break,
            Ok(None) if Instant::now() < deadline => sleep(Duration::from_millis(10)),
            _ => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!("{what}: no exit within {timeout:?}"));
            }
        }
    }
    // These commands print little: reading after exit cannot block on a full pipe.
    child.wait_with_output().map_err(|e| format!("{what}: {e}"))
}

fn run_bounded(cmd: Command, timeout: Duration) -> Output {
    try_run_bounded(cmd, timeout).unwrap_or_else(|e| panic!("{e}"))
}

/// The default hostname rackboot gives a MAC: `node-` and the MAC's hex digits.
fn hostname_of(mac: &str) -> String {
    format!("node-{}", mac.replace(':', ""))
}

fn assert_in_range(ip: &str) {
    let last: u8 = ip
        .strip_prefix("10.77.0.")
        .and_then(|o| o.parse().ok())
        .unwrap_or_else(|| panic!("{ip} is not in 10.77.0.0/24"));
    assert!(
        (RANGE.0..=RANGE.1).contains(&last),
        "{ip} is outside the range"
    );
}

// ---------------------------------------------------------------------------------------------
// DHCP

const PXE_VENDOR: &str = "PXEClient:Arch:00007:UNDI:003000";

#[test]
fn dhcp_plain_client_gets_an_address_and_becomes_a_discovered_node() {
    let rb = Rackboot::start("dhcp-plain");
    let mac = "52:54:00:10:00:01";
    let net = ClientNet::new(&rb.lab, &[mac]);

    let lease = net.udhcpc("c0", &[]).expect("a lease");
    assert_in_range(&lease["ip"]);
    assert_eq!(lease["serverid"], SERVER_IP.to_string());
    assert_eq!(lease["subnet"], "255.255.255.0");
    assert_eq!(lease["hostname"], hostname_of(mac));
    assert_eq!(lease["domain"], "rack.internal");
    assert_eq!(lease["dns"], SERVER_IP.to_string());
    assert!(
        !lease.contains_key("boot_file"),
        "a client that is not PXE gets nothing to boot: {lease:?}"
    );

    let node = rb.node(mac);
    assert_eq!(node["state"], "discovered", "{node:#}");
    assert_eq!(node["hostname"], hostname_of(mac));
    assert!(
        node.get("token").is_none(),
        "the API must not show the token"
    );
    let ip = &lease["ip"];
    assert!(
        rb.details(mac, "dhcp.offer")
            .iter()
            .any(|d| d.contains(ip.as_str())),
        "{:#?}",
        rb.events(mac)
    );
    assert!(
        rb.details(mac, "dhcp.ack")
            .iter()
            .any(|d| d.contains(ip.as_str())),
        "{:#?}",
        rb.events(mac)
    );
}

#[test]
fn dhcp_pxe_firmware_gets_the_loader_for_its_architecture_and_fetches_it_by_tftp() {
    let rb = Rackboot::start("dhcp-pxe");
    // (MAC, option 93, loader)
    let clients = [
        ("52:54:00:10:01:07", "0007", "ipxe-amd64.efi"),
        ("52:54:00:10:01:00", "0000", "undionly.kpxe"),
        ("52:54:00:10:01:0b", "000b", "ipxe-arm64.efi"),
    ];
    let macs: Vec<&str> = clients.iter().map(|c| c.0).collect();
    let net = ClientNet::new(&rb.lab, &macs);

    let mut leases = Vec::new();
    for (i, (mac, arch, loader)) in clients.iter().enumerate() {
        let vendor = format!(
            "PXEClient:Arch:{:05}:UNDI:003000",
            u16::from_str_radix(arch, 16).unwrap()
        );
        let lease = net
            .udhcpc(
                &format!("c{i}"),
                &["-V", &vendor, "-x", &format!("0x5d:{arch}")],
            )
            .unwrap_or_else(|e| panic!("{mac}: {e}"));
        assert_eq!(
            lease.get("boot_file").map(String::as_str),
            Some(*loader),
            "{mac}: {lease:?}"
        );
        assert_eq!(
            lease.get("siaddr"),
            Some(&SERVER_IP.to_string()),
            "{mac}: {lease:?}"
        );
        assert_in_range(&lease["ip"]);
        let offer = rb.wait_event(mac, "dhcp.offer", loader);
        assert!(offer.contains("firmware"), "{offer}");
        leases.push(lease);
    }
    assert!(
        leases[0]["ip"] != leases[1]["ip"] && leases[1]["ip"] != leases[2]["ip"],
        "one address per node: {leases:?}"
    );

    // What firmware does next: fetch boot_file from siaddr by TFTP, from its leased address.
    // rackboot puts the transfer on that node's timeline.
    let (mac, _, loader) = clients[0];
    let lease = &leases[0];
    let addr = format!("{}/24", lease["ip"]);
    let out = net.run("ip", &["addr", "add", &addr, "dev", "c0"], CMD);
    assert!(out.status.success(), "{}", text(&out));
    let local = net.file("loader.bin");
    let url = format!("tftp://{}/{}", lease["siaddr"], lease["boot_file"]);
    let out = net.run(
        "curl",
        &[
            "-sS",
            "--max-time",
            "15",
            "--interface",
            "c0",
            "-o",
            local.to_str().unwrap(),
            &url,
        ],
        CMD,
    );
    assert!(out.status.success(), "curl {url}: {}", text(&out));
    assert!(
        fs::read(&local).unwrap() == rb.files.asset(loader),
        "{loader} by TFTP: bytes differ"
    );
    let sent = rb.wait_event(mac, "tftp.sent", loader);
    assert!(
        sent.contains(&rb.files.asset(loader).len().to_string()),
        "{sent}"
    );
}

#[test]
fn dhcp_ipxe_gets_its_script_url_and_the_script_is_for_its_architecture() {
    let rb = Rackboot::start_with(
        Lab::new("dhcp-ipxe"),
        Files::new().tokens_from_any_address(),
    );
    let mac = "52:54:00:10:02:01";
    let net = ClientNet::new(&rb.lab, &[mac]);

    // User class (option 77) "iPXE": the client already runs iPXE.
    let lease = net
        .udhcpc(
            "c0",
            &["-V", PXE_VENDOR, "-x", "0x5d:0007", "-x", "77:69505845"],
        )
        .expect("a lease");
    let url = format!("http://{SERVER_IP}/boot/{mac}.ipxe");
    assert_eq!(lease.get("boot_file"), Some(&url), "{lease:?}");

    // The script URL needs no ?arch=: rackboot remembers what the node's DHCP said.
    let script = rb.http(&[], &format!("/boot/{mac}.ipxe"));
    assert_eq!(script.status, 200, "{}", script.text());
    let s = script.text();
    assert!(s.starts_with("#!ipxe"), "{s}");
    assert!(s.contains("arch x86_64_efi"), "{s}");
    assert!(
        s.contains(&format!("http://{SERVER_IP}/assets/x86_64/vmlinuz")),
        "{s}"
    );
    assert!(s.contains(&format!("rackboot.mac={mac}")), "{s}");
    // Its boot starts with the kernel fetch, not the script's.
    assert_ne!(rb.node(mac)["state"], "booting");
    assert!(rb.details(mac, "http.script").is_empty());
    start_boot(&rb, &s);
    assert_eq!(rb.node(mac)["state"], "booting");
    rb.wait_event(mac, "http.script", "x86_64_efi");
}

/// An architecture rackboot has no loader for gets no offer, and (being offered nothing) no
/// node record either: the log says why, naming the architecture.
#[test]
fn dhcp_unsupported_architecture_gets_no_offer_and_no_record() {
    let rb = Rackboot::start("dhcp-badarch");
    let (x86_uefi, uboot, plain) = (
        "52:54:00:10:03:06",
        "52:54:00:10:03:16",
        "52:54:00:10:03:01",
    );
    let net = ClientNet::new(&rb.lab, &[x86_uefi, uboot, plain]);

    for (iface, mac, arch, name) in [
        ("c0", x86_uefi, "0006", "6 (x86 UEFI)"),
        ("c1", uboot, "0016", "22 (ARM 64-bit U-Boot)"),
    ] {
        let vendor = format!(
            "PXEClient:Arch:{:05}:UNDI:003000",
            u16::from_str_radix(arch, 16).unwrap()
        );
        let err = net
            .udhcpc(iface, &["-V", &vendor, "-x", &format!("0x5d:{arch}")])
            .expect_err("no offer for an architecture rackboot cannot boot");
        assert!(err.contains("no lease"), "{err}");
        let log = rb.log_text();
        assert!(
            log.lines().any(|l| l.contains("ignoring DHCP request")
                && l.contains(mac)
                && l.contains(name)),
            "{mac}: the log must name {name:?}:\n{}",
            tail(&log, 20)
        );
        let r = rb.http(&[], &format!("/api/v1/nodes/{mac}"));
        assert_eq!(r.status, 404, "{mac} was offered nothing: {}", r.text());
    }

    net.udhcpc("c2", &[])
        .expect("a plain client still gets a lease");
    rb.assert_still_serving();
}

/// A DHCP client port socket on `iface` that sends each packet to 255.255.255.255:67, then
/// counts replies for a while. Each packet is hex, one per argument.
const SEND_RAW_DHCP: &str = r#"
import socket, sys
iface, packets = sys.argv[1], sys.argv[2:]
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.setsockopt(socket.SOL_SOCKET, socket.SO_BROADCAST, 1)
s.setsockopt(socket.SOL_SOCKET, socket.SO_BINDTODEVICE, iface.encode())
s.bind(("0.0.0.0", 68))
for p in packets:
    s.sendto(bytes.fromhex(p), ("255.255.255.255", 67))
s.settimeout(2.0)
replies = 0
try:
    while True:
        s.recvfrom(2048)
        replies += 1
except socket.timeout:
    pass
print("replies", replies)
"#;

/// A BOOTREQUEST header (236 bytes) from `mac`, broadcast flag set.
fn bootrequest_header(mac: [u8; 6]) -> Vec<u8> {
    let mut h = vec![1, 1, 6, 0, 0x12, 0x34, 0x56, 0x78, 0, 0, 0x80, 0];
    h.extend([0; 16]); // ciaddr, yiaddr, siaddr, giaddr
    h.extend(mac);
    h.extend([0; 10 + 64 + 128]); // chaddr padding, sname, file
    assert_eq!(h.len(), 236);
    h
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[test]
fn dhcp_packets_that_do_not_parse_are_ignored_and_serving_continues() {
    let rb = Rackboot::start("dhcp-garbage");
    let (sender, client) = ("52:54:00:10:04:09", "52:54:00:10:04:01");
    let net = ClientNet::new(&rb.lab, &[sender, client]);

    let mac = [0x52, 0x54, 0x00, 0x10, 0x04, 0x09];
    let header = bootrequest_header(mac);
    let cookie = [99, 130, 83, 99];
    let discover = [53, 1, 1];
    let packets: Vec<(&str, Vec<u8>)> = vec![
        ("text", b"this is not a DHCP packet ".repeat(4)),
        ("three bytes", vec![1, 1, 6]),
        ("all ones", vec![0xff; 300]),
        ("cut in the header", header[..100].to_vec()),
        // A DISCOVER in every way but the magic cookie (RFC 2131 §3): not DHCP.
        (
            "wrong magic cookie",
            [&header[..], &[0xde, 0xad, 0xbe, 0xef], &discover, &[255]].concat(),
        ),
        // Option 60 claims 200 bytes; 9 follow.
        (
            "option longer than the packet",
            [&header[..], &cookie, &discover, &[60, 200], b"PXEClient"].concat(),
        ),
        // Each of these two once stopped rackboot: hlen 17 made the codec slice
        // chaddr past its 16 bytes; option 152 with length 2 hit its debug assertion.
        ("hardware address length 17", {
            let mut p = [&header[..], &cookie, &discover, &[255]].concat();
            p[2] = 17;
            p
        }),
        (
            "option 152 with length 2",
            [&header[..], &cookie, &discover, &[152, 2, 0, 0, 255]].concat(),
        ),
    ];
    let mut args = vec!["-c", SEND_RAW_DHCP, "c0"];
    let hexes: Vec<String> = packets.iter().map(|(_, p)| hex(p)).collect();
    args.extend(hexes.iter().map(String::as_str));
    let out = net.run("python3", &args, CMD);
    assert!(out.status.success(), "python3: {}", text(&out));
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "replies 0",
        "rackboot answered a packet that does not parse"
    );

    let ignored = poll_until(EVENT, || {
        let n = rb
            .log_text()
            .matches("ignoring DHCP packet that does not parse")
            .count();
        (n >= packets.len()).then_some(n)
    });
    assert_eq!(
        ignored,
        Some(packets.len()),
        "one log line per packet ({:?}):\n{}",
        packets.iter().map(|p| p.0).collect::<Vec<_>>(),
        tail(&rb.log_text(), 20)
    );
    let r = rb.http(&[], &format!("/api/v1/nodes/{sender}"));
    assert_eq!(
        r.status,
        404,
        "no node from packets that do not parse: {}",
        r.text()
    );

    net.udhcpc("c1", &[]).expect("a lease after the garbage");
    rb.assert_still_serving();
}

#[test]
fn dhclient_gets_keeps_and_releases_its_lease() {
    let rb = Rackboot::start("dhclient");
    let mac = "52:54:00:10:05:01";
    let net = ClientNet::new(&rb.lab, &[mac]);

    // dhclient-script stand-in: records what it is told and configures c0 (RELEASE is sent
    // by unicast from the leased address), and leaves resolv.conf alone.
    let script = net.file("dhclient.sh");
    let record = net.file("dhclient.env");
    fs::write(
        &script,
        format!(
            "#!/bin/sh\n\
             case \"$reason\" in\n\
               BOUND|RENEW|REBIND|REBOOT) ip addr replace \"$new_ip_address/24\" dev \"$interface\" ;;\n\
               RELEASE|EXPIRE|STOP) [ -z \"$old_ip_address\" ] || ip addr del \"$old_ip_address/24\" dev \"$interface\" ;;\n\
             esac\n\
             # Recorded last: once the line is there, the interface is configured.\n\
             echo \"reason=$reason new=$new_ip_address old=$old_ip_address\" >> '{}'\n\
             exit 0\n",
            record.display()
        ),
    )
    .unwrap();
    make_executable(&script);
    let leases = net.file("dhclient.leases");
    let dhclient = |run: &str, extra: &[&str]| -> Vec<String> {
        // A fresh PID file per run: `dhclient -r` kills whatever PID the file names.
        let pid_file = net.file(&format!("dhclient-{run}.pid"));
        let mut args = vec!["-v", "-lf", leases.to_str().unwrap(), "-pf"];
        args.push(pid_file.to_str().unwrap());
        args.extend_from_slice(&["-sf", script.to_str().unwrap()]);
        args.extend_from_slice(extra);
        args.push("c0");
        args.into_iter().map(str::to_string).collect()
    };
    // `-1 -d`: one attempt, in the foreground, so the test holds the PID and ends it.
    let bind = |run: &str, reason: &str| -> String {
        let args = dhclient(run, &["-1", "-d"]);
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let pid = net.spawn("dhclient", &args, &format!("dhclient-{run}.log"));
        let line = poll_until(CMD, || {
            read_text(&record)
                .lines()
                .find(|l| l.starts_with(&format!("reason={reason} ")))
                .map(str::to_string)
        })
        .unwrap_or_else(|| {
            panic!(
                "dhclient {run}: no {reason}:\n{}\n{}",
                read_text(&record),
                read_text(&net.file(&format!("dhclient-{run}.log")))
            )
        });
        net.stop(pid);
        fs::write(&record, "").unwrap();
        line.split_whitespace()
            .find_map(|w| w.strip_prefix("new="))
            .unwrap_or_default()
            .to_string()
    };

    let first = bind("first", "BOUND");
    assert_in_range(&first);
    let host = format!("{}.rack.internal", hostname_of(mac));
    assert_eq!(rb.dig(&["+short", &host, "A"]).trim(), first);

    // Again with the lease file: INIT-REBOOT asks for the same address and is acknowledged.
    let second = bind("second", "REBOOT");
    assert_eq!(second, first, "the address must be kept");
    let acks = rb.details(mac, "dhcp.ack");
    assert!(
        acks.len() >= 2 && acks.iter().all(|d| d.contains(&first)),
        "{acks:#?}"
    );

    let args = dhclient("release", &["-r"]);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let out = net.run("dhclient", &args, CMD);
    assert!(out.status.success(), "dhclient -r: {}", text(&out));
    let released = rb.wait_event(mac, "dhcp.release", &first);
    assert!(!released.contains("no such lease"), "{released}");
    // The lease is gone: the node's name no longer resolves to an address. The node itself
    // still exists, so the name does too: NOERROR with no answer (NODATA), not NXDOMAIN.
    let answer = rb.dig(&[&host, "A"]);
    assert!(
        answer.contains("status: NOERROR") && answer.contains("ANSWER: 0,"),
        "{answer}"
    );
}

#[test]
fn udhcpc_renews_by_unicast_and_keeps_its_address() {
    let rb = Rackboot::start("udhcpc-renew");
    let mac = "52:54:00:10:06:01";
    let net = ClientNet::new(&rb.lab, &[mac]);
    let (script, record) = net.udhcpc_script("renew", true);
    let pid = net.spawn(
        "udhcpc",
        &[
            "-i",
            "c0",
            "-f",
            "-t",
            "3",
            "-T",
            "2",
            "-s",
            script.to_str().unwrap(),
        ],
        "udhcpc-renew.log",
    );
    let bound = poll_until(CMD, || last_event(&record, "bound")).expect("bound");
    let acks_before = rb.details(mac, "dhcp.ack").len();

    // SIGUSR1: renew now. RENEWING is a unicast REQUEST with ciaddr set (RFC 2131 §4.4.5),
    // answered by unicast to that address.
    net.signal(pid, "USR1");
    let renewed = poll_until(CMD, || last_event(&record, "renew")).unwrap_or_else(|| {
        panic!(
            "no renewal:\n{}\n{}",
            read_text(&record),
            read_text(&net.file("udhcpc-renew.log"))
        )
    });
    assert_eq!(renewed["ip"], bound["ip"]);
    let acks = rb.details(mac, "dhcp.ack");
    assert!(
        acks.len() > acks_before,
        "no ACK for the renewal: {acks:#?}"
    );
    assert!(acks.iter().all(|d| d.contains(&bound["ip"])), "{acks:#?}");
    assert!(net.is_running(pid), "udhcpc gave up after the renewal");
}

// ---------------------------------------------------------------------------------------------
// TFTP

#[test]
fn tftp_reads_return_the_exact_bytes_with_blksize_and_tsize() {
    let rb = Rackboot::start("tftp-read");

    for (file, size) in ASSETS {
        let (out, got) = rb.tftp_curl(&["--tftp-blksize", "1468"], file);
        assert!(out.status.success(), "curl {file}: {}", text(&out));
        assert_eq!(got.len(), *size, "{file}");
        assert!(got == rb.files.asset(file), "curl {file}: bytes differ");
    }

    let (out, got) = rb.tftp_atftp(&[
        "--option",
        "blksize 1468",
        "--option",
        "tsize 0",
        "-g",
        "-r",
        "x86_64/vmlinuz",
    ]);
    let trace = text(&out);
    assert!(out.status.success(), "{trace}");
    assert!(
        got == rb.files.asset("x86_64/vmlinuz"),
        "atftp: bytes differ"
    );
    assert!(
        trace.contains("tsize: 9000") && trace.contains("blksize: 1468"),
        "{trace}"
    );

    // A size that fills its last block exactly, at the negotiated block size and the default.
    let (out, got) = rb.tftp_atftp(&["--option", "blksize 1468", "-g", "-r", "ipxe-amd64.efi"]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        got == rb.files.asset("ipxe-amd64.efi"),
        "atftp ipxe-amd64.efi: bytes differ"
    );
    let local = rb.lab.dir().join("arm64.tftp-hpa");
    let out = rb.lab.run(
        "tftp",
        &[
            "-m",
            "binary",
            &SERVER_IP.to_string(),
            "-c",
            "get",
            "ipxe-arm64.efi",
            local.to_str().unwrap(),
        ],
        CMD,
    );
    assert!(
        fs::read(&local).unwrap_or_default() == rb.files.asset("ipxe-arm64.efi"),
        "tftp-hpa: {}",
        text(&out)
    );

    // More than the server's limit is negotiated down (RFC 2348), never refused.
    let (out, got) = rb.tftp_atftp(&["--option", "blksize 65464", "-g", "-r", "undionly.kpxe"]);
    let trace = text(&out);
    assert!(out.status.success(), "{trace}");
    assert!(trace.contains("blksize: 1468"), "{trace}");
    assert!(
        got == rb.files.asset("undionly.kpxe"),
        "atftp blksize 65464: bytes differ"
    );
}

#[test]
fn tftp_refuses_paths_outside_the_assets_directory() {
    let rb = Rackboot::start("tftp-escape");

    for path in ["../etc/passwd", "/etc/passwd", "x86_64/../../etc/passwd"] {
        // curl exit 69: "permission problem on TFTP server", i.e. error code 2.
        let (out, got) = rb.tftp_curl(&["--path-as-is"], path);
        let err = text(&out);
        assert_eq!(out.status.code(), Some(69), "curl {path}: {err}");
        assert!(
            err.contains("TFTP error: Permission denied"),
            "curl {path}: {err}"
        );
        assert!(got.is_empty(), "curl {path} got bytes");

        let (out, got) = rb.tftp_atftp(&["-g", "-r", path]);
        let err = text(&out);
        assert!(!out.status.success(), "atftp {path}: {err}");
        assert!(
            err.contains("error received from server <Permission denied>"),
            "atftp {path}: {err}"
        );
        assert!(got.is_empty(), "atftp {path} got bytes");
    }
    let local = rb.lab.dir().join("passwd.tftp-hpa");
    let out = rb.lab.run(
        "tftp",
        &[
            "-v",
            &SERVER_IP.to_string(),
            "-c",
            "get",
            "../etc/passwd",
            local.to_str().unwrap(),
        ],
        CMD,
    );
    assert!(
        text(&out).contains("Error code 2: Permission denied"),
        "{}",
        text(&out)
    );
    assert!(fs::read(&local).unwrap_or_default().is_empty());

    let (out, got) = rb.tftp_curl(&[], "undionly.kpxe");
    assert!(
        out.status.success() && got == rb.files.asset("undionly.kpxe"),
        "{}",
        text(&out)
    );
    rb.assert_still_serving();
}

#[test]
fn tftp_refuses_writes_and_reports_missing_files() {
    let rb = Rackboot::start("tftp-write");
    let upload = rb.lab.dir().join("upload.bin");
    fs::write(&upload, b"not an asset").unwrap();

    let server = SERVER_IP.to_string();
    let out = rb.lab.run(
        "atftp",
        &[
            "--tftp-timeout",
            "2",
            "-p",
            "-l",
            upload.to_str().unwrap(),
            "-r",
            "upload.bin",
            &server,
        ],
        CMD,
    );
    let err = text(&out);
    assert!(!out.status.success(), "atftp --put: {err}");
    assert!(
        err.contains("error received from server <rackboot TFTP is read-only>"),
        "{err}"
    );

    let out = rb.lab.run(
        "tftp",
        &[
            "-v",
            &SERVER_IP.to_string(),
            "-c",
            "put",
            upload.to_str().unwrap(),
            "upload.bin",
        ],
        CMD,
    );
    assert!(
        text(&out).contains("Error code 0: rackboot TFTP is read-only"),
        "{}",
        text(&out)
    );
    assert!(
        !rb.files.path("assets/upload.bin").exists(),
        "a write reached the assets dir"
    );

    // curl exit 68: "file not found on TFTP server", error code 1.
    let (out, got) = rb.tftp_curl(&[], "nope.efi");
    assert_eq!(out.status.code(), Some(68), "{}", text(&out));
    assert!(
        text(&out)
            .to_lowercase()
            .contains("tftp error: file not found"),
        "{}",
        text(&out)
    );
    assert!(got.is_empty());
    let (out, _) = rb.tftp_atftp(&["-g", "-r", "x86_64"]);
    assert!(
        text(&out).contains("<File not found>"),
        "a directory is not a file: {}",
        text(&out)
    );

    let (out, got) = rb.tftp_curl(&[], "x86_64/initrd.img");
    assert!(
        out.status.success() && got == rb.files.asset("x86_64/initrd.img"),
        "{}",
        text(&out)
    );
    rb.assert_still_serving();
}

// ---------------------------------------------------------------------------------------------
// HTTP

#[test]
fn http_bad_boot_and_asset_paths_get_4xx_with_a_reason() {
    let rb = Rackboot::start("http-bad");

    let r = rb.http(&[], "/boot/not-a-mac.ipxe");
    assert_eq!(r.status, 400, "{}", r.text());
    assert!(
        r.text().contains("`not-a-mac` is not a MAC address"),
        "{}",
        r.text()
    );

    let r = rb.http(&[], "/assets/nope");
    assert_eq!(r.status, 404, "{}", r.text());
    assert!(r.text().contains("no asset `nope`"), "{}", r.text());

    let r = rb.http(&[], "/boot/52:54:00:10:07:01.ipxe?arch=ppc64");
    assert_eq!(r.status, 400, "{}", r.text());
    assert!(
        r.text().contains("unknown architecture `ppc64`"),
        "{}",
        r.text()
    );

    for path in [
        "/assets/../../etc/passwd",
        "/assets/x86_64/../../../etc/passwd",
        "/assets/%2e%2e/%2e%2e/etc/passwd",
        "/assets/..%2f..%2fetc%2fpasswd",
        "/assets//etc/passwd",
    ] {
        let r = rb.http(&["--path-as-is"], path);
        assert!(
            (400..500).contains(&r.status),
            "{path}: {} {}",
            r.status,
            r.text()
        );
        assert!(!r.text().contains("root:"), "{path} leaked /etc/passwd");
        assert!(
            r.text().starts_with("error: "),
            "{path}: a reason, not {:?}",
            r.text()
        );
        assert!(
            !r.text()
                .contains(&rb.files.dir.path().display().to_string()),
            "{path}: an internal path leaked"
        );
    }

    let r = rb.http(&[], "/assets/x86_64/initrd.img");
    assert_eq!(r.status, 200);
    assert!(r.body == rb.files.asset("x86_64/initrd.img"));
    rb.assert_still_serving();
}

/// Fetches the kernel of boot script `script`, as iPXE does next: the node's boot starts.
fn start_boot(rb: &Rackboot, script: &str) {
    let url = script
        .lines()
        .find(|l| l.starts_with("kernel "))
        .and_then(|l| l.split_whitespace().nth(3))
        .unwrap_or_else(|| panic!("no kernel in {script}"));
    let path = url.strip_prefix(&format!("http://{SERVER_IP}")).unwrap();
    let r = rb.http(&[], path);
    assert_eq!(r.status, 200, "{path}: {}", r.text());
}

/// The node token from a rendered boot script, in force once its kernel is fetched: how a
/// node learns it.
fn token_of(rb: &Rackboot, mac: &str) -> String {
    let r = rb.http(&[], &format!("/boot/{mac}.ipxe?arch=x86_64_efi"));
    assert_eq!(r.status, 200, "{}", r.text());
    let s = r.text();
    start_boot(rb, &s);
    let token = s
        .split_whitespace()
        .find_map(|w| w.strip_prefix("rackboot.token="))
        .unwrap_or_else(|| panic!("no rackboot.token= in {s}"));
    assert!(
        token.len() == 32 && token.bytes().all(|b| b.is_ascii_hexdigit()),
        "{token}"
    );
    token.to_string()
}

#[test]
fn http_node_reports_need_the_nodes_own_token() {
    let rb = Rackboot::start_with(
        Lab::new("http-token"),
        Files::new().tokens_from_any_address(),
    );
    let (a, b, unknown) = (
        "52:54:00:10:08:0a",
        "52:54:00:10:08:0b",
        "52:54:00:10:08:ff",
    );
    let (token_a, token_b) = (token_of(&rb, a), token_of(&rb, b));
    assert_ne!(token_a, token_b);
    let report = |mac: &str| format!("/node/{mac}/report?state=booted");
    let bearer = |t: &str| format!("Authorization: Bearer {t}");

    let r = rb.http(&["-X", "POST", "-H", &bearer(&token_a)], &report(unknown));
    assert_eq!(r.status, 404, "{}", r.text());
    assert!(
        r.text().contains(&format!("no node with MAC {unknown}")),
        "{}",
        r.text()
    );
    assert_eq!(
        rb.http(&[], &format!("/api/v1/nodes/{unknown}")).status,
        404,
        "a report must not create a node"
    );

    let r = rb.http(&["-X", "POST"], &report(a));
    assert_eq!(r.status, 401, "{}", r.text());
    assert!(r.text().contains("node token required"), "{}", r.text());

    let r = rb.http(&["-X", "POST", "-H", &bearer(&token_b)], &report(a));
    assert_eq!(r.status, 403, "{}", r.text());
    assert!(
        r.text().contains(&format!("this token is not {a}'s")),
        "{}",
        r.text()
    );
    assert!(
        !r.text().contains(&token_a),
        "the refusal must not reveal the token"
    );

    let r = rb.http(
        &["-X", "POST", "-H", "Authorization: Basic Zm9vOmJhcg=="],
        &report(a),
    );
    assert_eq!(r.status, 401, "{}", r.text());

    let r = rb.http(&["-X", "POST"], "/node/not-a-mac/report?state=booted");
    assert_eq!(r.status, 400, "{}", r.text());

    // None of that moved the node; its own token does.
    assert_eq!(rb.node(a)["state"], "booting");
    assert!(rb.details(a, "report.booted").is_empty());
    let r = rb.http(
        &["-X", "POST", "-H", &bearer(&token_a), "--data-binary", "up"],
        &report(a),
    );
    assert_eq!(r.status, 204, "{}", r.text());
    assert_eq!(rb.node(a)["state"], "booted");
    assert_eq!(rb.details(a, "report.booted"), ["up"]);
    assert_eq!(rb.node(b)["state"], "booting");
    rb.assert_still_serving();
}

/// The install-complete callback: the node's own token only, and only while it boots an
/// installer bootenv; then `installed` with its bootenv `after_install` (`local`) and no
/// next-boot bootenv; its next script is the local one.
#[test]
fn http_install_callback_needs_the_nodes_token_and_an_installer_boot_and_ends_on_local() {
    let files = Files::new();
    files.write(
        "bootenvs/install.toml",
        format!(
            "installer = true\n[arch.x86_64_efi]\nkernel = \"x86_64/vmlinuz\"\ncmdline = \"{CMDLINE}\"\n"
        )
        .as_bytes(),
    );
    let rb = Rackboot::start_with(Lab::new("http-installed"), files.tokens_from_any_address());
    let (a, b, unknown) = (
        "52:54:00:10:09:0a",
        "52:54:00:10:09:0b",
        "52:54:00:10:09:ff",
    );
    // a installs; b boots discovery (not an installer).
    let created = rb.http(
        &[
            "-X",
            "POST",
            "-H",
            "Content-Type: application/json",
            "--data",
            &format!("{{\"mac\": \"{a}\", \"bootenv\": \"install\"}}"),
        ],
        "/api/v1/nodes",
    );
    assert_eq!(created.status, 201, "{}", created.text());
    let (token_a, token_b) = (token_of(&rb, a), token_of(&rb, b));
    let installed = |mac: &str| format!("/node/{mac}/installed?bootenv=install");
    let bearer = |t: &str| format!("Authorization: Bearer {t}");

    let r = rb.http(
        &["-X", "POST", "-H", &bearer(&token_a)],
        &installed(unknown),
    );
    assert_eq!(r.status, 404, "{}", r.text());
    let r = rb.http(&["-X", "POST"], &installed(a));
    assert_eq!(r.status, 401, "{}", r.text());
    let r = rb.http(&["-X", "POST", "-H", &bearer(&token_b)], &installed(a));
    assert_eq!(r.status, 403, "{}", r.text());
    let r = rb.http(
        &["-X", "POST", "-H", &bearer(&token_a)],
        &format!("/node/{a}/installed?bootenv=../x"),
    );
    assert_eq!(r.status, 400, "{}", r.text());
    // b is not installing: its own token does not make it installed.
    let r = rb.http(&["-X", "POST", "-H", &bearer(&token_b)], &installed(b));
    assert_eq!(r.status, 409, "{}", r.text());
    assert!(r.text().contains("not installing"), "{}", r.text());
    let n = rb.node(b);
    assert_eq!(
        (n["state"].as_str(), n["bootenv"].as_str()),
        (Some("booting"), Some("discovery"))
    );
    let n = rb.node(a);
    assert_eq!(
        (n["state"].as_str(), n["bootenv"].as_str()),
        (Some("installing"), Some("install"))
    );

    let r = rb.http(
        &[
            "-X",
            "POST",
            "-H",
            &bearer(&token_a),
            "--data-binary",
            "done",
        ],
        &installed(a),
    );
    assert_eq!(r.status, 204, "{}", r.text());
    let n = rb.node(a);
    assert_eq!(n["state"].as_str(), Some("installed"), "{n}");
    assert_eq!(n["bootenv"].as_str(), Some("local"), "{n}");
    assert!(n["next_bootenv"].is_null(), "{n}");
    assert_eq!(rb.details(a, "report.installed"), ["bootenv install\ndone"]);
    let changed = rb.details(a, "bootenv.changed");
    assert_eq!(
        changed,
        ["install -> local: install finished installing (after_install = local)"]
    );

    let r = rb.http(&[], &format!("/boot/{a}.ipxe?arch=x86_64_efi"));
    assert_eq!(r.status, 200, "{}", r.text());
    assert!(
        r.text().contains("boots from its local disk"),
        "{}",
        r.text()
    );
    rb.wait_event(a, "http.script", "bootenv local");
    assert_eq!(
        rb.node(a)["state"],
        "installed",
        "booting local keeps the state"
    );
    assert_eq!(rb.node(b)["state"], "booting");
    rb.assert_still_serving();
}

#[test]
fn http_assets_answer_head_and_range_requests() {
    let rb = Rackboot::start("http-range");
    let file = "x86_64/vmlinuz";
    let bytes = rb.files.asset(file);
    let path = format!("/assets/{file}");

    let r = rb.http(&["-I"], &path);
    assert_eq!(r.status, 200, "{}", r.headers);
    assert_eq!(
        r.header("content-length"),
        Some(bytes.len().to_string()),
        "{}",
        r.headers
    );
    assert_eq!(
        r.header("accept-ranges").as_deref(),
        Some("bytes"),
        "{}",
        r.headers
    );

    let r = rb.http(&["-r", "100-1099"], &path);
    assert_eq!(r.status, 206, "{}", r.headers);
    assert_eq!(
        r.header("content-range").as_deref(),
        Some(format!("bytes 100-1099/{}", bytes.len()).as_str())
    );
    assert_eq!(r.header("content-length").as_deref(), Some("1000"));
    assert!(r.body == bytes[100..1100], "range 100-1099: bytes differ");

    // The last 10 bytes (suffix range), and a range that ends past the file.
    let r = rb.http(&["-r", "-10"], &path);
    assert_eq!(r.status, 206, "{}", r.headers);
    assert!(
        r.body == bytes[bytes.len() - 10..],
        "suffix range: bytes differ"
    );
    let r = rb.http(&["-r", "8990-20000"], &path);
    assert_eq!(r.status, 206, "{}", r.headers);
    assert!(r.body == bytes[8990..], "open-ended range: bytes differ");

    let r = rb.http(&["-r", "20000-30000"], &path);
    assert_eq!(r.status, 416, "a range past the end: {}", r.headers);

    let r = rb.http(&[], &path);
    assert_eq!(r.status, 200);
    assert!(r.body == bytes, "whole file: bytes differ");
    rb.assert_still_serving();
}

// ---------------------------------------------------------------------------------------------
// DNS

#[test]
fn dns_resolves_leased_nodes_both_ways_and_refuses_other_zones() {
    let rb = Rackboot::start("dns");
    let mac = "52:54:00:10:09:01";
    let net = ClientNet::new(&rb.lab, &[mac]);
    let lease = net.udhcpc("c0", &[]).expect("a lease");
    let ip = &lease["ip"];
    let host = format!("{}.rack.internal", hostname_of(mac));

    assert_eq!(rb.dig(&["+short", &host, "A"]).trim(), ip.as_str());
    assert_eq!(rb.dig(&["+short", "-x", ip]).trim(), format!("{host}."));
    // Names are case-insensitive (RFC 4343).
    assert_eq!(
        rb.dig(&["+short", &host.to_uppercase(), "A"]).trim(),
        ip.as_str()
    );

    let answer = rb.dig(&["example.com", "A"]);
    assert!(answer.contains("status: REFUSED"), "{answer}");
    let answer = rb.dig(&["node-000000000000.rack.internal", "A"]);
    assert!(answer.contains("status: NXDOMAIN"), "{answer}");

    assert_eq!(
        rb.dig(&["+short", &host, "A"]).trim(),
        ip.as_str(),
        "still answering"
    );
    rb.assert_still_serving();
}

// ---------------------------------------------------------------------------------------------
// Start-up failures

/// Runs `rackboot serve` in the lab to its exit, which must be a failure within [`FAIL_FAST`],
/// and returns its one line of output.
fn start_fails(lab: &Lab, config: &Path) -> String {
    let started = Instant::now();
    let out = lab.run(
        RACKBOOT,
        &["serve", "--config", config.to_str().expect("utf-8 path")],
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

#[test]
fn startup_fails_on_an_unknown_config_key_naming_key_and_line() {
    let lab = Lab::new("start-key");
    let files = Files::new();
    let text = files
        .config_text()
        .replace("[dhcp]\n", "[dhcp]\nlease_time = 600\n");
    let line = text
        .lines()
        .position(|l| l.starts_with("lease_time"))
        .unwrap()
        + 1;
    files.write("rackboot.toml", text.as_bytes());

    let msg = start_fails(&lab, &files.config());
    assert!(msg.contains(&files.config().display().to_string()), "{msg}");
    assert!(msg.contains("lease_time"), "{msg}");
    assert!(msg.contains(&format!("line {line}")), "{msg}");
}

#[test]
fn startup_fails_on_a_missing_interface_naming_it_and_the_key() {
    let lab = Lab::new("start-iface");
    let files = Files::new();
    let text = files
        .config_text()
        .replace("interface = \"br0\"", "interface = \"nosuch0\"");
    files.write("rackboot.toml", text.as_bytes());

    let msg = start_fails(&lab, &files.config());
    assert!(msg.contains("nosuch0"), "{msg}");
    assert!(msg.contains("network.interface"), "{msg}");
    assert!(msg.contains(&files.config().display().to_string()), "{msg}");
}

#[test]
fn startup_fails_when_the_http_port_is_taken_naming_http_address_and_key() {
    let lab = Lab::new("start-inuse");
    let files = Files::new();
    let squatter = lab.spawn(
        "python3",
        &[
            "-c",
            "import socket, time\n\
             s = socket.socket()\n\
             s.bind(('10.77.0.1', 80))\n\
             s.listen()\n\
             print('listening', flush=True)\n\
             time.sleep(120)\n",
        ],
        "squatter.log",
    );
    wait_for_file(&lab.dir().join("squatter.log"), "listening", CMD)
        .unwrap_or_else(|e| panic!("{e}"));

    let msg = start_fails(&lab, &files.config());
    assert!(msg.contains("HTTP"), "{msg}");
    assert!(msg.contains("10.77.0.1:80"), "{msg}");
    assert!(msg.contains("http.port"), "{msg}");
    assert!(msg.contains(&files.config().display().to_string()), "{msg}");
    assert_eq!(
        msg.matches("Address already in use").count(),
        1,
        "the cause once: {msg}"
    );
    assert!(
        lab.is_running(squatter),
        "rackboot must leave the port's owner alone"
    );
}

#[test]
fn startup_fails_on_a_bootenv_that_does_not_parse_naming_file_and_line() {
    let lab = Lab::new("start-bootenv");
    let files = Files::new();
    files.write(
        "bootenvs/broken.toml",
        b"description = \"missing a bracket\"\n\n[arch.bios\nkernel = \"x86_64/vmlinuz\"\n",
    );

    let msg = start_fails(&lab, &files.config());
    assert!(
        msg.contains(&files.path("bootenvs/broken.toml").display().to_string()),
        "{msg}"
    );
    assert!(msg.contains("line 3"), "{msg}");
}

/// Two DHCP servers answering on one boot network would hand out conflicting
/// boot files: a second rackboot on the same interface must refuse to start.
#[test]
fn startup_fails_when_another_rackboot_serves_dhcp_on_the_interface() {
    let rb = Rackboot::start("start-twice");
    let second = Files::new();
    // Only DHCP may clash: the other services are off in the second instance.
    second.write(
        "rackboot.toml",
        format!(
            "{}\n[tftp]\nenabled = false\n[http]\nenabled = false\n[dns]\nenabled = false\n",
            second.config_text()
        )
        .as_bytes(),
    );
    let msg = start_fails(&rb.lab, &second.config());
    assert!(msg.contains("DHCP") && msg.contains(BRIDGE), "{msg}");
    assert!(msg.contains("network.interface"), "{msg}");
    assert!(
        rb.lab.is_running(rb.pid),
        "the first instance keeps serving"
    );
}

// ---------------------------------------------------------------------------------------------
// Metrics

/// Parses Prometheus/OpenMetrics text: every line is a `# HELP|TYPE|UNIT|EOF` comment or
/// `name{k="v",…} value`. Returns the samples as (name, labels as written, value).
fn metrics_samples(text: &str) -> Vec<(String, String, f64)> {
    assert!(text.ends_with("# EOF\n"), "no closing # EOF:\n{text}");
    let mut samples = Vec::new();
    for line in text.lines() {
        if let Some(comment) = line.strip_prefix("# ") {
            let word = comment.split(' ').next().unwrap_or_default();
            assert!(
                ["HELP", "TYPE", "UNIT", "EOF"].contains(&word),
                "comment {line:?}"
            );
            continue;
        }
        let (series, value) = line
            .rsplit_once(' ')
            .unwrap_or_else(|| panic!("no value: {line:?}"));
        let value: f64 = match value {
            "+Inf" => f64::INFINITY,
            "-Inf" => f64::NEG_INFINITY,
            v => v
                .parse()
                .unwrap_or_else(|_| panic!("value not a number: {line:?}")),
        };
        let (name, labels) = match series.split_once('{') {
            Some((name, rest)) => (
                name,
                rest.strip_suffix('}')
                    .unwrap_or_else(|| panic!("unclosed labels: {line:?}")),
            ),
            None => (series, ""),
        };
        let name_ok = name.bytes().enumerate().all(|(i, b)| {
            b.is_ascii_alphabetic() || b == b'_' || b == b':' || (i > 0 && b.is_ascii_digit())
        });
        assert!(!name.is_empty() && name_ok, "metric name in {line:?}");
        if !labels.is_empty() {
            for pair in labels.split(',') {
                let (k, v) = pair
                    .split_once('=')
                    .unwrap_or_else(|| panic!("label {pair:?} in {line:?}"));
                assert!(
                    !k.is_empty() && k.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_'),
                    "label name {k:?} in {line:?}"
                );
                assert!(
                    v.len() >= 2 && v.starts_with('"') && v.ends_with('"'),
                    "label value {v:?} in {line:?}"
                );
            }
        }
        samples.push((name.to_string(), labels.to_string(), value));
    }
    samples
}

/// curl arguments asking `/metrics` for OpenMetrics (the text format 0.0.4 is the default).
const OPENMETRICS: &[&str] = &["-H", "Accept: application/openmetrics-text"];

fn metrics_value(samples: &[(String, String, f64)], name: &str, labels: &str) -> f64 {
    samples
        .iter()
        .find(|(n, l, _)| n == name && l == labels)
        .map(|s| s.2)
        .unwrap_or_else(|| panic!("no {name}{{{labels}}} among {samples:#?}"))
}

#[test]
fn metrics_count_a_dhcp_exchange_and_a_tftp_fetch() {
    let rb = Rackboot::start("metrics");
    let mac = "52:54:00:10:0a:01";
    let net = ClientNet::new(&rb.lab, &[mac]);

    let before = metrics_samples(&rb.http(OPENMETRICS, "/metrics").text());
    let sub = r#"subnet="10.77.0.0/24""#;
    assert_eq!(
        metrics_value(&before, "rackboot_dhcp_pool_leased", sub),
        0.0
    );
    assert_eq!(
        metrics_value(&before, "rackboot_dhcp_pool_addresses", sub),
        f64::from(RANGE.1 - RANGE.0 + 1)
    );

    let lease = net
        .udhcpc("c0", &["-V", PXE_VENDOR, "-x", "0x5d:0007"])
        .expect("a lease");
    assert_eq!(
        lease.get("boot_file").map(String::as_str),
        Some("ipxe-amd64.efi")
    );
    let (out, got) = rb.tftp_curl(&[], "ipxe-amd64.efi");
    assert!(
        out.status.success() && got == rb.files.asset("ipxe-amd64.efi"),
        "{}",
        text(&out)
    );

    let r = rb.http(OPENMETRICS, "/metrics");
    assert_eq!(r.status, 200, "{}", r.text());
    let content_type = r.header("content-type").unwrap_or_default();
    assert!(
        content_type.starts_with("application/openmetrics-text"),
        "{content_type}"
    );
    let s = metrics_samples(&r.text());
    let at_least = |name: &str, labels: &str, min: f64| {
        let v = metrics_value(&s, name, labels);
        assert!(
            v >= min,
            "{name}{{{labels}}} = {v}, want >= {min}\n{}",
            r.text()
        );
    };
    at_least("rackboot_dhcp_received_total", r#"type="discover""#, 1.0);
    at_least("rackboot_dhcp_received_total", r#"type="request""#, 1.0);
    at_least("rackboot_dhcp_replies_total", r#"type="offer""#, 1.0);
    at_least("rackboot_dhcp_replies_total", r#"type="ack""#, 1.0);
    assert_eq!(
        metrics_value(&s, "rackboot_dhcp_replies_total", r#"type="nak""#),
        0.0
    );
    assert_eq!(metrics_value(&s, "rackboot_dhcp_pool_leased", sub), 1.0);
    at_least("rackboot_dhcp_decision_seconds_count", "", 2.0);
    at_least("rackboot_dhcp_decision_seconds_bucket", r#"le="1.0""#, 2.0);
    at_least("rackboot_tftp_transfers_total", r#"result="sent""#, 1.0);
    at_least(
        "rackboot_tftp_sent_bytes_total",
        "",
        rb.files.asset("ipxe-amd64.efi").len() as f64,
    );
    // The first scrape is counted by the time of the second.
    at_least(
        "rackboot_http_requests_total",
        r#"route="metrics",status="2xx""#,
        1.0,
    );
    rb.assert_still_serving();
}

/// Started as root with `[service] user`, `rackboot serve` binds its ports, then runs as that
/// user (its group, no supplementary groups) with no capabilities left, owns its state directory,
/// and DHCP, TFTP and HTTP still serve.
#[test]
fn started_as_root_it_binds_then_serves_as_the_service_user_with_no_capabilities() {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    let files = Files::new();
    // What the service user serves must be readable by it.
    for rel in ["", "assets", "assets/x86_64", "bootenvs", "scripts"] {
        fs::set_permissions(files.path(rel), fs::Permissions::from_mode(0o755)).unwrap();
    }
    fs::set_permissions(files.path("api-tokens"), fs::Permissions::from_mode(0o644)).unwrap();
    let config = format!("{}\n[service]\nuser = \"nobody\"\n", files.config_text());
    files.write("rackboot.toml", config.as_bytes());
    let id = |flag: &str| -> String {
        let out = Command::new("id").args([flag, "nobody"]).output().unwrap();
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    };
    let (uid, gid) = (id("-u"), id("-g"));
    let rb = Rackboot::start_with(Lab::new("privileges"), files);

    let status = fs::read_to_string(format!("/proc/{}/status", rb.pid)).unwrap();
    let field = |name: &str| -> Vec<String> {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .unwrap_or_else(|| panic!("no {name} in:\n{status}"))
            .split_whitespace()
            .map(str::to_string)
            .collect()
    };
    assert_eq!(field("Uid:"), vec![uid.clone(); 4], "{status}");
    assert_eq!(field("Gid:"), vec![gid.clone(); 4], "{status}");
    assert_eq!(field("Groups:"), vec![gid.clone()], "{status}");
    for caps in ["CapInh:", "CapPrm:", "CapEff:", "CapAmb:"] {
        assert_eq!(field(caps), vec!["0000000000000000"], "{caps} {status}");
    }
    assert!(
        rb.log_text()
            .contains("switched from root to the service account"),
        "{}",
        rb.log_text()
    );
    let state = rb.files.path("state");
    assert_eq!(fs::metadata(&state).unwrap().uid().to_string(), uid);
    let db = fs::metadata(state.join("rackboot.db")).unwrap();
    assert_eq!(db.uid().to_string(), uid);
    assert_eq!(db.mode() & 0o777, 0o600, "the store holds node tokens");

    // DHCP (a lease journaled and committed by the service user), TFTP and HTTP.
    let mac = "52:54:00:10:00:61";
    let net = ClientNet::new(&rb.lab, &[mac]);
    let lease = net.udhcpc("c0", &[]).expect("a lease");
    assert_in_range(&lease["ip"]);
    assert_eq!(rb.node(mac)["state"], "discovered");
    let (out, got) = rb.tftp_curl(&[], "undionly.kpxe");
    assert!(
        out.status.success() && got == rb.files.asset("undionly.kpxe"),
        "{}",
        text(&out)
    );
    let r = rb.http(&[], "/assets/x86_64/vmlinuz");
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.body, rb.files.asset("x86_64/vmlinuz"));
    rb.assert_still_serving();
}

/// systemd's `ProcSubset=pid` (in rackboot's unit) hides `/proc/net`. rackboot reads the
/// neighbour table as `/proc/self/net/arp`, so under it a TFTP client whose address rackboot
/// did not lease (as on a proxyDHCP subnet) is still named by its MAC on its node's timeline.
#[test]
fn tftp_names_an_unleased_client_from_the_neighbour_table_under_proc_subset_pid() {
    let files = Files::new();
    let script = format!(
        "mount -t proc -o subset=pid proc /proc && exec {RACKBOOT} serve --config {}",
        files.config().display()
    );
    let rb = Rackboot::start_as(
        Lab::new("proc-subset"),
        files,
        "unshare",
        &["-m", "--propagation", "private", "sh", "-c", &script],
    );
    let mounts = fs::read_to_string(format!("/proc/{}/mountinfo", rb.pid)).unwrap();
    assert!(
        mounts
            .lines()
            .any(|l| l.contains(" /proc ") && l.contains("subset=pid")),
        "rackboot's /proc is not subset=pid:\n{mounts}"
    );
    let mac = "52:54:00:10:00:71";
    let r = rb.http(
        &[
            "-X",
            "POST",
            "-H",
            "Content-Type: application/json",
            "--data",
            &format!("{{\"mac\": \"{mac}\"}}"),
        ],
        "/api/v1/nodes",
    );
    assert!(
        r.status == 200 || r.status == 201,
        "{} {}",
        r.status,
        r.text()
    );
    let net = ClientNet::new(&rb.lab, &[mac]);
    let out = net.run("ip", &["addr", "add", "10.77.0.50/24", "dev", "c0"], CMD);
    assert!(out.status.success(), "{}", text(&out));
    let url = format!("tftp://{SERVER_IP}/undionly.kpxe");
    let out = net.run("curl", &["-sS", "-m", "10", "-o", "/dev/null", &url], CMD);
    assert!(out.status.success(), "{}", text(&out));
    rb.wait_event(mac, "tftp.sent", "undionly.kpxe");
    rb.assert_still_serving();
}
