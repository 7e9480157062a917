//! DHCP through a real relay agent: clients in a rack network reach rackboot only through
//! ISC `dhcrelay`, as racks behind a switch's `ip helper-address` do.
//!
//! ```text
//!  lab ns (rackboot, br0 10.77.0.1/24, route 10.78.0.0/24 via 10.77.0.2)
//!    └─ veth ─ relay ns: up0 10.77.0.2/24 ── dhcrelay -a -D ── rack78 (bridge) 10.78.0.1/24
//!                                                                  └─ veths ─ client ns: c0, c1…
//!    └─ veth ─ client ns: d0 (on br0 directly, for nodes that must exist first)
//! ```
//!
//! The relay adds option 82 (circuit id = the name of the interface the request came in on,
//! `rack78`) and, with `-D`, drops every reply that does not carry it back: a lease through it
//! proves rackboot echoes option 82 (RFC 3046 §2.2). The relay namespace forwards IP, so a
//! client renews by unicast straight to rackboot (RFC 2131 §4.4.5), as on a real routed network.
//!
//! Needs root, `isc-dhcp-relay`, `isc-dhcp-client`, busybox `udhcpc`, `curl`, `tcpdump`. Every
//! wait is bounded; namespaces and processes are removed by PID on drop, also when a test fails.

mod common;

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::thread::sleep;
use std::time::{Duration, Instant};

use common::api::{AUTH_HEADER, api_section};
use common::lab::{BRIDGE, Lab, SERVER_IP, poll_until, read_text, tail, wait_for_file};
use serde_json::Value;

const RACKBOOT: &str = env!("CARGO_BIN_EXE_rackboot");
/// From spawn to "rackboot serving" (a debug build opening a fresh SQLite store), with other
/// test binaries busy on both cores.
const STARTUP: Duration = Duration::from_secs(60);
/// Any one client command; a udhcpc run of at most 3 × 3 s tries fits well inside.
const CMD: Duration = Duration::from_secs(40);
/// How long a DHCP exchange that must succeed may take (dhclient retries with back-off).
const LEASE: Duration = Duration::from_secs(60);
/// Log lines and events appear within this.
const EVENT: Duration = Duration::from_secs(15);

/// The relay's address on the lab network (its upstream side) and on the rack network.
const RELAY_UP: &str = "10.77.0.2";
const RACK_NET: &str = "10.78.0.0/24";
const RACK_GW: &str = "10.78.0.1";
/// The rack subnet's dynamic range.
const RACK_RANGE: (u8, u8) = (100, 150);
/// The bridge the relay listens on downstream; also option 82's circuit id.
const RACK_IF: &str = "rack78";

// ---------------------------------------------------------------------------------------------
// rackboot

/// `rackboot serve` in a lab with a direct subnet 10.77.0.0/24 and the relayed rack subnet.
/// Field order is drop order: the lab ends rackboot by PID.
struct Rackboot {
    lab: Lab,
    pid: u32,
    log: PathBuf,
}

impl Rackboot {
    /// `rack_unknown` is the rack subnet's `unknown_clients`.
    fn start(name: &str, rack_unknown: &str) -> Rackboot {
        let lab = Lab::new(name);
        let d = lab.dir().to_path_buf();
        // Nothing here boots: dummy loaders and a bootenv are enough for rackboot to start.
        for (path, bytes) in [
            ("assets/undionly.kpxe", &b"loader"[..]),
            ("assets/ipxe-amd64.efi", b"loader"),
            ("assets/ipxe-arm64.efi", b"loader"),
            ("assets/x86_64/vmlinuz", b"kernel"),
            ("assets/x86_64/initrd.img", b"initrd"),
            ("scripts/hello.sh", b"#!/bin/sh\necho hello\n"),
            (
                "bootenvs/discovery.toml",
                b"description = \"relay tests\"\nscripts = [\"hello.sh\"]\n\
                  [arch.bios]\nkernel = \"x86_64/vmlinuz\"\ninitrds = [\"x86_64/initrd.img\"]\n\
                  cmdline = \"console=ttyS0\"\n",
            ),
        ] {
            let p = d.join(path);
            fs::create_dir_all(p.parent().unwrap()).unwrap();
            fs::write(&p, bytes).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
        }
        fs::create_dir_all(d.join("state")).unwrap();
        let config = d.join("rackboot.toml");
        fs::write(
            &config,
            format!(
                "state_dir = \"{d}/state\"\n\
                 assets_dir = \"{d}/assets\"\n\
                 bootenvs_dir = \"{d}/bootenvs\"\n\
                 scripts_dir = \"{d}/scripts\"\n\
                 [network]\n\
                 interface = \"{BRIDGE}\"\n\
                 [[dhcp.subnet]]\n\
                 cidr = \"10.77.0.0/24\"\n\
                 ranges = [[\"10.77.0.100\", \"10.77.0.199\"]]\n\
                 [[dhcp.subnet]]\n\
                 cidr = \"{RACK_NET}\"\n\
                 ranges = [[\"10.78.0.{}\", \"10.78.0.{}\"]]\n\
                 router = \"{RACK_GW}\"\n\
                 unknown_clients = \"{rack_unknown}\"\n\
                 {api}",
                RACK_RANGE.0,
                RACK_RANGE.1,
                d = d.display(),
                api = api_section(&d),
            ),
        )
        .unwrap();
        let pid = lab.spawn(
            RACKBOOT,
            &["serve", "--config", config.to_str().unwrap()],
            "rackboot.log",
        );
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
        Rackboot { lab, pid, log }
    }

    fn log_text(&self) -> String {
        read_text(&self.log)
    }

    /// `GET /api/v1/nodes/<mac>` from the lab: `None` on 404.
    fn try_node(&self, mac: &str) -> Option<Value> {
        let url = format!("http://{SERVER_IP}/api/v1/nodes/{mac}");
        let out = self.lab.run(
            "curl",
            &[
                "-sS",
                "-m",
                "10",
                "-H",
                AUTH_HEADER,
                "-w",
                "\n%{http_code}",
                &url,
            ],
            CMD,
        );
        let body = String::from_utf8_lossy(&out.stdout).into_owned();
        let (json, code) = body.rsplit_once('\n').unwrap_or(("", ""));
        match code {
            "200" => Some(serde_json::from_str(json).unwrap_or_else(|e| panic!("{mac}: {e}"))),
            "404" => None,
            _ => panic!("GET {url}: {body}\n{}", text(&out)),
        }
    }

    fn node(&self, mac: &str) -> Value {
        self.try_node(mac)
            .unwrap_or_else(|| panic!("no node {mac}\n{}", tail(&self.log_text(), 20)))
    }

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

    fn details(&self, mac: &str, kind: &str) -> Vec<String> {
        self.events(mac)
            .into_iter()
            .filter(|(k, _)| k == kind)
            .map(|(_, d)| d)
            .collect()
    }

    /// Waits until the log holds a line with every one of `needles`; returns that line.
    fn wait_log(&self, needles: &[&str]) -> String {
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

    fn assert_running(&self) {
        assert!(
            self.lab.is_running(self.pid),
            "rackboot exited:\n{}",
            tail(&self.log_text(), 30)
        );
    }
}

// ---------------------------------------------------------------------------------------------
// Namespaces: the relay and the clients

/// A network namespace of this test (`rb-<role>-<lab name>-<pid>`, so the lab's sweep removes
/// it if the test binary is killed). Processes started in it are killed by PID on drop, then
/// the namespace is deleted (its veths go with it).
struct Netns {
    name: String,
    dir: PathBuf,
    children: RefCell<Vec<Child>>,
}

impl Netns {
    fn new(lab: &Lab, role: &str) -> Netns {
        let name = lab.ns().replacen("rb-", &format!("rb-{role}-"), 1);
        let dir = lab.dir().join(role);
        fs::create_dir_all(&dir).unwrap();
        ip(&["netns", "add", &name]);
        // From here on Drop deletes it, even if a later step panics.
        let ns = Netns {
            name,
            dir,
            children: RefCell::new(Vec::new()),
        };
        ns.ip(&["link", "set", "lo", "up"]);
        ns
    }

    fn ip(&self, args: &[&str]) {
        let mut all = vec!["-n", &self.name];
        all.extend_from_slice(args);
        ip(&all);
    }

    fn file(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    /// A short command in the namespace, killed if it outlives `timeout`.
    fn run(&self, cmd: &str, args: &[&str], timeout: Duration) -> Output {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &self.name, cmd]).args(args);
        run_bounded(c, timeout)
    }

    /// A long-running process, output to `log` in this namespace's directory; killed on drop.
    fn spawn(&self, cmd: &str, args: &[&str], log: &str) -> u32 {
        let out = fs::File::create(self.file(log)).expect("create log");
        let err = out.try_clone().expect("dup log");
        // `ip netns exec` execs the command, so the PID is the command's own.
        let child = Command::new("ip")
            .args(["netns", "exec", &self.name, cmd])
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

    /// SIGKILL to a process started with [`Netns::spawn`]; reaps it.
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

    fn signal(&self, pid: u32, signal: &str) {
        assert!(self.is_running(pid), "pid {pid} is not running");
        let mut c = Command::new("kill");
        c.args([&format!("-{signal}"), &pid.to_string()]);
        let out = run_bounded(c, CMD);
        assert!(out.status.success(), "kill -{signal} {pid}: {}", text(&out));
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        for mut child in self.children.get_mut().drain(..) {
            let _ = child.kill();
            let _ = child.wait();
        }
        // Anything a client left behind (a daemonized dhclient) is ended by PID too.
        let mut c = Command::new("ip");
        c.args(["netns", "pids", &self.name]);
        if let Ok(out) = try_run_bounded(c, CMD) {
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
        c.args(["netns", "del", &self.name]);
        if let Err(e) = try_run_bounded(c, CMD) {
            eprintln!("could not delete namespace {}: {e}", self.name);
        }
    }
}

/// The wiring of the module docs. Field order is drop order: clients, relay, then rackboot and
/// its lab.
struct RelayNet {
    clients: Netns,
    relay: Netns,
    relay_pid: u32,
    rb: Rackboot,
}

impl RelayNet {
    /// `rack_cidr` is the relay's downstream address (its giaddr); `relayed` and `direct` are
    /// the MACs of client interfaces `c<i>` behind the relay and `d<i>` on `br0`.
    fn new(rb: Rackboot, rack_cidr: &str, relayed: &[&str], direct: &[&str]) -> RelayNet {
        let relay = Netns::new(&rb.lab, "rl");
        let clients = Netns::new(&rb.lab, "cl");
        let lab = &rb.lab;

        lab.ip(&[
            "link",
            "add",
            "relaybr",
            "type",
            "veth",
            "peer",
            "name",
            "up0",
            "netns",
            &relay.name,
        ]);
        lab.ip(&["link", "set", "relaybr", "master", BRIDGE, "up"]);
        relay.ip(&["addr", "add", &format!("{RELAY_UP}/24"), "dev", "up0"]);
        relay.ip(&["link", "set", "up0", "up"]);
        relay.ip(&["link", "add", RACK_IF, "type", "bridge"]);
        relay.ip(&["addr", "add", rack_cidr, "dev", RACK_IF]);
        relay.ip(&["link", "set", RACK_IF, "up"]);
        // The relay is the rack's router too: renewals go by unicast through it.
        let out = relay.run("sysctl", &["-qw", "net.ipv4.ip_forward=1"], CMD);
        assert!(out.status.success(), "sysctl: {}", text(&out));
        let rack_net = ipnet_of(rack_cidr);
        lab.ip(&["route", "add", &rack_net, "via", RELAY_UP]);

        for (i, mac) in relayed.iter().enumerate() {
            let (iface, port) = (format!("c{i}"), format!("p{i}"));
            relay.ip(&[
                "link",
                "add",
                &port,
                "type",
                "veth",
                "peer",
                "name",
                &iface,
                "netns",
                &clients.name,
            ]);
            relay.ip(&["link", "set", &port, "master", RACK_IF, "up"]);
            clients.ip(&["link", "set", &iface, "address", mac, "up"]);
        }
        for (i, mac) in direct.iter().enumerate() {
            let (iface, port) = (format!("d{i}"), format!("d{i}br"));
            lab.ip(&[
                "link",
                "add",
                &port,
                "type",
                "veth",
                "peer",
                "name",
                &iface,
                "netns",
                &clients.name,
            ]);
            lab.ip(&["link", "set", &port, "master", BRIDGE, "up"]);
            clients.ip(&["link", "set", &iface, "address", mac, "up"]);
        }

        // -d: foreground, logging to stderr. -a: add option 82 (circuit id = interface name).
        // -D: drop replies whose option 82 is missing or names another relay. -id/-iu:
        // clients downstream, the server upstream.
        let relay_pid = relay.spawn(
            "dhcrelay",
            &[
                "-4",
                "-d",
                "--no-pid",
                "-a",
                "-D",
                "-id",
                RACK_IF,
                "-iu",
                "up0",
                &SERVER_IP.to_string(),
            ],
            "dhcrelay.log",
        );
        let log = relay.file("dhcrelay.log");
        if let Err(e) = wait_for_file(&log, "Sending on", Duration::from_secs(15)) {
            panic!("dhcrelay did not start: {e}\n{}", read_text(&log));
        }
        RelayNet {
            clients,
            relay,
            relay_pid,
            rb,
        }
    }

    fn relay_log(&self) -> String {
        read_text(&self.relay.file("dhcrelay.log"))
    }

    fn assert_relay_running(&self) {
        assert!(
            self.relay.is_running(self.relay_pid),
            "dhcrelay exited:\n{}",
            self.relay_log()
        );
    }

    /// Runs `udhcpc -n -q` once on `iface` and returns what it told its script on `bound`, or
    /// its output if it got no lease.
    fn udhcpc_once(&self, iface: &str, run: &str) -> Result<BTreeMap<String, String>, String> {
        let (script, record) = udhcpc_script(&self.clients, run, false);
        let args = [
            "-i",
            iface,
            "-f",
            "-n",
            "-q",
            "-t",
            "3",
            "-T",
            "3",
            "-s",
            script.to_str().unwrap(),
        ];
        let out = self.clients.run("udhcpc", &args, CMD);
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
}

/// The packets of a capture matching `filter`, one line each. Without `--immediate-mode` (which
/// the lab's capture does not use) tcpdump writes a packet up to ~1 s late: poll this.
fn read_pcap(lab: &Lab, pcap: &Path, filter: &str) -> String {
    let out = lab.run(
        "tcpdump",
        &["-n", "-r", pcap.to_str().unwrap(), filter],
        CMD,
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// `10.78.0.1/24` → `10.78.0.0/24`.
fn ipnet_of(cidr: &str) -> String {
    let (addr, len) = cidr.split_once('/').expect("a CIDR");
    let len: u32 = len.parse().unwrap();
    let addr: std::net::Ipv4Addr = addr.parse().unwrap();
    let mask = u32::MAX.checked_shl(32 - len).unwrap_or(0);
    format!("{}/{len}", std::net::Ipv4Addr::from(u32::from(addr) & mask))
}

/// A udhcpc script that appends each call's event and variables to `<name>.env`; with
/// `configure`, it first puts the leased address and default route on the interface (for a
/// unicast renewal through the relay, which routes).
fn udhcpc_script(ns: &Netns, name: &str, configure: bool) -> (PathBuf, PathBuf) {
    let script = ns.file(&format!("{name}.sh"));
    let record = ns.file(&format!("{name}.env"));
    let configure = if configure {
        "case \"$1\" in\n\
           bound|renew) ip addr replace \"$ip/$mask\" dev \"$interface\"\n\
             [ -z \"$router\" ] || ip route replace default via \"$router\" dev \"$interface\" ;;\n\
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
           env | grep -E '^(ip|mask|subnet|router|siaddr|serverid|hostname|lease)=' || true\n\
           echo \"end=$1\"\n\
         }} >> '{}'\n\
         exit 0\n",
        record.display()
    );
    fs::write(&script, body).expect("write udhcpc script");
    make_executable(&script);
    (script, record)
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

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
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

fn assert_in_rack_range(ip: &str) {
    let last: u8 = ip
        .strip_prefix("10.78.0.")
        .and_then(|o| o.parse().ok())
        .unwrap_or_else(|| panic!("{ip} is not in {RACK_NET}"));
    assert!(
        (RACK_RANGE.0..=RACK_RANGE.1).contains(&last),
        "{ip} is outside the rack range"
    );
}

/// The option 82 text rackboot keeps for a client behind this relay.
fn rack_relay_info() -> String {
    format!("circuit-id={RACK_IF}")
}

/// Checks the node record and timeline of a client first seen through the relay.
fn assert_relayed_node(rb: &Rackboot, mac: &str, ip: &str) {
    let node = rb.node(mac);
    assert_eq!(
        node["relay_info"].as_str(),
        Some(rack_relay_info().as_str()),
        "{node:#}"
    );
    let relay_events = rb.details(mac, "dhcp.relay");
    assert!(
        relay_events.iter().any(|d| d.contains(&rack_relay_info())),
        "no dhcp.relay event naming {}: {:#?}",
        rack_relay_info(),
        rb.events(mac)
    );
    assert!(
        rb.details(mac, "state")
            .iter()
            .any(|d| d.contains(RACK_NET) && d.contains(&format!("via relay {RACK_GW}"))),
        "the new node must say subnet and relay: {:#?}",
        rb.events(mac)
    );
    assert!(
        rb.details(mac, "dhcp.ack").iter().any(|d| d.contains(ip)),
        "{:#?}",
        rb.events(mac)
    );
}

// ---------------------------------------------------------------------------------------------
// Tests

/// udhcpc and dhclient behind `dhcrelay -a -D` get addresses from the relayed subnet; the node
/// records where they are plugged in; udhcpc renews by unicast (no relay involved) and dhclient
/// reboots with its lease file through the relay, and both keep their addresses.
#[test]
fn relayed_clients_get_rack_addresses_and_keep_them() {
    let started = Instant::now();
    let (udhcpc_mac, dhclient_mac) = ("52:54:00:78:00:01", "52:54:00:78:00:02");
    let net = RelayNet::new(
        Rackboot::start("relay-leases", "serve"),
        &format!("{RACK_GW}/24"),
        &[udhcpc_mac, dhclient_mac],
        &[],
    );
    let rb = &net.rb;
    let pcap = rb.lab.dir().join("leases.pcap");
    let tcpdump = rb.lab.capture(&pcap);

    // udhcpc, staying in the foreground and configuring c0, so that it can renew.
    let (script, record) = udhcpc_script(&net.clients, "udhcpc", true);
    let pid = net.clients.spawn(
        "udhcpc",
        &["-i", "c0", "-f", "-t", "5", "-T", "3", "-s"]
            .into_iter()
            .chain([script.to_str().unwrap()])
            .collect::<Vec<_>>(),
        "udhcpc.log",
    );
    let bound = poll_until(LEASE, || last_event(&record, "bound")).unwrap_or_else(|| {
        panic!(
            "udhcpc got no lease through the relay:\n{}\n--- dhcrelay:\n{}\n--- rackboot:\n{}",
            read_text(&net.clients.file("udhcpc.log")),
            net.relay_log(),
            tail(&rb.log_text(), 20)
        )
    });
    let ip = bound["ip"].clone();
    assert_in_rack_range(&ip);
    assert_eq!(bound["router"], RACK_GW, "{bound:?}");
    assert_eq!(bound["subnet"], "255.255.255.0", "{bound:?}");
    assert_eq!(bound["serverid"], SERVER_IP.to_string(), "{bound:?}");
    assert_relayed_node(rb, udhcpc_mac, &ip);
    eprintln!("udhcpc bound {ip} after {:.1?}", started.elapsed());

    // SIGUSR1: renew now. RENEWING is a REQUEST with ciaddr set, unicast to the server
    // identifier (RFC 2131 §4.4.5): it reaches rackboot routed, with no giaddr.
    let acks_before = rb.details(udhcpc_mac, "dhcp.ack").len();
    net.clients.signal(pid, "USR1");
    let renewed = poll_until(LEASE, || last_event(&record, "renew")).unwrap_or_else(|| {
        panic!(
            "no renewal:\n{}\n{}\n--- rackboot:\n{}",
            read_text(&record),
            read_text(&net.clients.file("udhcpc.log")),
            tail(&rb.log_text(), 20)
        )
    });
    assert_eq!(renewed["ip"], ip, "the renewal must keep the address");
    let acks = poll_until(EVENT, || {
        let acks = rb.details(udhcpc_mac, "dhcp.ack");
        (acks.len() > acks_before).then_some(acks)
    })
    .unwrap_or_else(|| panic!("no ACK for the renewal: {:#?}", rb.events(udhcpc_mac)));
    assert!(acks.iter().all(|d| d.contains(&ip)), "{acks:#?}");
    assert!(net.clients.is_running(pid), "udhcpc gave up after renewing");
    net.clients.stop(pid);
    // ISC dhcrelay relays the unicast renewal too (its packet filter sees every packet to port
    // 67 on rack78), so rackboot gets it twice; a switch's helper does not. The unicast copy
    // alone must be acknowledged, straight back to the client's address, not refused.
    let (request, ack) = (
        format!("{ip}.68 > {SERVER_IP}.67"),
        format!("{SERVER_IP}.67 > {ip}.68"),
    );
    let seen = poll_until(EVENT, || {
        let dump = read_pcap(&rb.lab, &pcap, "udp port 67 or udp port 68");
        (dump.contains(&request) && dump.contains(&ack)).then_some(())
    });
    rb.lab.stop(tcpdump);
    assert!(
        seen.is_some(),
        "the unicast renewal and its unicast ACK must be on the wire:\n{}",
        read_pcap(&rb.lab, &pcap, "udp port 67 or udp port 68")
    );
    assert!(
        rb.details(udhcpc_mac, "dhcp.nak").is_empty(),
        "a renewal from a relayed subnet must not be refused: {:#?}",
        rb.events(udhcpc_mac)
    );
    eprintln!("udhcpc renewed after {:.1?}", started.elapsed());

    // dhclient: one attempt in the foreground, then again with its lease file (INIT-REBOOT,
    // broadcast, so relayed again).
    let dscript = net.clients.file("dhclient.sh");
    let drecord = net.clients.file("dhclient.env");
    fs::write(
        &dscript,
        format!(
            "#!/bin/sh\n\
             case \"$reason\" in\n\
               BOUND|RENEW|REBIND|REBOOT) ip addr replace \"$new_ip_address/24\" dev \"$interface\" ;;\n\
             esac\n\
             echo \"reason=$reason new=$new_ip_address routers=$new_routers\" >> '{}'\n\
             exit 0\n",
            drecord.display()
        ),
    )
    .unwrap();
    make_executable(&dscript);
    let leases = net.clients.file("dhclient.leases");
    let dhclient = |run: &str, reason: &str| -> String {
        // A fresh PID file per run: dhclient kills whatever PID an old one names.
        let pid_file = net.clients.file(&format!("dhclient-{run}.pid"));
        let log = format!("dhclient-{run}.log");
        let pid = net.clients.spawn(
            "dhclient",
            &[
                "-v",
                "-1",
                "-d",
                "-lf",
                leases.to_str().unwrap(),
                "-pf",
                pid_file.to_str().unwrap(),
                "-sf",
                dscript.to_str().unwrap(),
                "c1",
            ],
            &log,
        );
        let line = poll_until(LEASE, || {
            read_text(&drecord)
                .lines()
                .find(|l| l.starts_with(&format!("reason={reason} ")))
                .map(str::to_string)
        })
        .unwrap_or_else(|| {
            panic!(
                "dhclient {run}: no {reason}:\n{}\n{}\n--- dhcrelay:\n{}",
                read_text(&drecord),
                read_text(&net.clients.file(&log)),
                net.relay_log()
            )
        });
        net.clients.stop(pid);
        fs::write(&drecord, "").unwrap();
        assert!(line.contains(&format!("routers={RACK_GW}")), "{line}");
        line.split_whitespace()
            .find_map(|w| w.strip_prefix("new="))
            .unwrap_or_default()
            .to_string()
    };
    let first = dhclient("first", "BOUND");
    assert_in_rack_range(&first);
    assert_ne!(first, ip, "one address per node");
    assert_relayed_node(rb, dhclient_mac, &first);
    let second = dhclient("second", "REBOOT");
    assert_eq!(second, first, "the address must be kept");
    eprintln!(
        "dhclient bound and rebooted after {:.1?}",
        started.elapsed()
    );

    net.assert_relay_running();
    rb.assert_running();
}

/// A relay whose own address is in no `[[dhcp.subnet]]` is not answered: rackboot logs why and
/// records no node. The relay did forward the requests (the capture shows them).
#[test]
fn relayed_request_from_an_unconfigured_network_gets_no_answer() {
    let mac = "52:54:00:79:00:01";
    let net = RelayNet::new(
        Rackboot::start("relay-unknown-net", "serve"),
        "10.79.0.1/24",
        &[mac],
        &[],
    );
    let rb = &net.rb;
    let pcap = rb.lab.dir().join("relay.pcap");
    let tcpdump = rb.lab.capture(&pcap);

    let err = net
        .udhcpc_once("c0", "unknown-net")
        .expect_err("no lease for a network rackboot does not serve");
    assert!(err.contains("no lease"), "{err}");
    let line = rb.wait_log(&["ignoring relayed request", "relay=10.79.0.1"]);
    assert!(line.contains(mac), "{line}");
    assert!(
        rb.try_node(mac).is_none(),
        "no node for an unanswered client"
    );

    // The relay forwarded each DISCOVER (giaddr 10.79.0.1) and rackboot sent nothing back.
    let to_server = format!("{RELAY_UP}.67 > {SERVER_IP}.67");
    let forwarded = |dump: &str| dump.lines().filter(|l| l.contains(&to_server)).count();
    let seen = poll_until(EVENT, || {
        (forwarded(&read_pcap(&rb.lab, &pcap, "udp port 67")) >= 3).then_some(())
    });
    rb.lab.stop(tcpdump);
    let dump = read_pcap(&rb.lab, &pcap, "udp port 67");
    assert!(
        seen.is_some(),
        "the relay must have forwarded the 3 DISCOVERs:\n{dump}{}",
        net.relay_log()
    );
    let from_server = format!("{SERVER_IP}.67 >");
    assert!(
        !dump.contains(&from_server),
        "rackboot answered a relay it does not serve:\n{dump}"
    );
    net.assert_relay_running();
    rb.assert_running();
}

/// `unknown_clients = "ignore"` on the relayed subnet: a MAC rackboot has never seen gets no
/// answer there, while a MAC whose node exists (made by a direct DHCP exchange on the lab
/// subnet, which serves unknown clients) gets a rack address through the relay.
#[test]
fn relayed_subnet_ignoring_unknown_clients_serves_only_known_nodes() {
    let (known, unknown) = ("52:54:00:78:01:01", "52:54:00:78:01:02");
    // c0 = known behind the relay, c1 = unknown behind the relay, d0 = known on br0 directly.
    let net = RelayNet::new(
        Rackboot::start("relay-ignore", "ignore"),
        &format!("{RACK_GW}/24"),
        &[known, unknown],
        &[known],
    );
    let rb = &net.rb;

    let err = net
        .udhcpc_once("c1", "unknown")
        .expect_err("an unknown MAC must not be served on an `ignore` subnet");
    assert!(err.contains("no lease"), "{err}");
    let line = rb.wait_log(&["ignoring unknown client", unknown]);
    assert!(line.contains(RACK_NET), "{line}");
    assert!(rb.try_node(unknown).is_none(), "no node for an ignored MAC");

    // The known MAC: also ignored until its node exists.
    net.udhcpc_once("c0", "known-before")
        .expect_err("the MAC has no node yet");
    assert!(rb.try_node(known).is_none());

    // A direct exchange on the lab subnet (unknown_clients = "serve") creates its node.
    let direct = net.udhcpc_once("d0", "direct").expect("a lab lease");
    assert!(direct["ip"].starts_with("10.77.0."), "{direct:?}");
    let node = rb.node(known);
    assert_eq!(node["state"], "discovered", "{node:#}");
    assert!(node["relay_info"].is_null(), "{node:#}");

    let lease = net
        .udhcpc_once("c0", "known")
        .expect("a known node is served through the relay");
    assert_in_rack_range(&lease["ip"]);
    assert_eq!(lease["router"], RACK_GW);
    let node = rb.node(known);
    assert_eq!(
        node["relay_info"].as_str(),
        Some(rack_relay_info().as_str()),
        "{node:#}"
    );
    assert!(
        rb.details(known, "dhcp.relay")
            .iter()
            .any(|d| d.contains(&rack_relay_info())),
        "{:#?}",
        rb.events(known)
    );
    assert!(
        rb.try_node(unknown).is_none(),
        "still no node for {unknown}"
    );
    net.assert_relay_running();
    rb.assert_running();
}
