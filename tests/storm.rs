//! `rackboot storm` against a rackboot in a namespace: a fleet of simulated nodes boots from
//! DHCP to `configured`, with no failure, and every node's record says so.
//!
//! ```text
//!  lab ns (rackboot: DHCP, TFTP, HTTP on br0 10.77.0.1/24; route 10.78.0.0/24 via 10.77.0.2)
//!    └─ veth ─ storm ns: st0 10.77.0.2/24 (+ 10.77.0.3/24 for the direct test), lo 10.78.0.1/32
//! ```
//!
//! The relay test's storm is a relay agent at 10.78.0.1 (giaddr): rackboot serves it from the
//! relayed subnet 10.78.0.0/24. The direct test's storm broadcasts on st0, as clients on the link.
//! TFTP and HTTP go from the storm namespace's own address: the simulated nodes' leased
//! addresses are not configured anywhere.
//!
//! Needs root and `curl`. Every wait is bounded; the namespaces and processes are removed by PID
//! on drop, also when a test fails.

mod common;

use std::fs;
use std::path::PathBuf;
use std::process::{Command, Output, Stdio};
use std::thread::sleep;
use std::time::{Duration, Instant};

use common::api::{AUTH_HEADER, api_section};
use common::lab::{BRIDGE, Lab, SERVER_IP, poll_until, read_text, tail};
use serde_json::Value;

const RACKBOOT: &str = env!("CARGO_BIN_EXE_rackboot");
/// From spawn to "rackboot serving" (a debug build, other tests busy on both cores).
const STARTUP: Duration = Duration::from_secs(60);
/// The simulated nodes all fetch from the storm namespace's one address, not
/// from the addresses leased to them: the documented opt-out of binding node
/// credentials to node addresses, which only load tests use.
const STORM_OPT_OUT: &str = "[http]\nbind_tokens_to_address = false\n";

/// The whole storm command: 200 nodes ramped over 4 s, each phase bounded by --timeout.
const STORM: Duration = Duration::from_secs(150);
const CMD: Duration = Duration::from_secs(20);

const STORM_IP: &str = "10.77.0.2";
const DIRECT_IP: &str = "10.77.0.3";
const GIADDR: &str = "10.78.0.1";

const CMDLINE: &str = "console=ttyS0 rackboot.url={{ server_url }} rackboot.mac={{ node.mac }} rackboot.token={{ node.token }}";

/// Deterministic filler so TFTP and HTTP move real blocks (not all zeros).
fn filler(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

/// rackboot with DHCP (its own subnet and the relayed 10.78.0.0/24), TFTP and HTTP, small
/// assets for all three architectures, and one config script.
struct Rackboot {
    lab: Lab,
    pid: u32,
    log: PathBuf,
}

impl Rackboot {
    fn start(name: &str) -> Rackboot {
        let lab = Lab::new(name);
        let d = lab.dir().to_path_buf();
        let files: Vec<(&str, Vec<u8>)> = vec![
            // Loaders: 48 KiB, 34 blocks of 1468 bytes (9 windows of 4).
            ("assets/undionly.kpxe", filler(1, 48 << 10)),
            ("assets/ipxe-amd64.efi", filler(2, 48 << 10)),
            ("assets/ipxe-arm64.efi", filler(3, 48 << 10)),
            ("assets/x86_64/vmlinuz", filler(4, 256 << 10)),
            ("assets/x86_64/initrd.img", filler(5, 128 << 10)),
            ("assets/arm64/Image", filler(6, 256 << 10)),
            ("assets/arm64/initrd.img", filler(7, 128 << 10)),
            (
                "scripts/hello.sh",
                b"#!/bin/sh\necho \"hello from {{ node.hostname }}\"\n".to_vec(),
            ),
        ];
        let kernel = |arch: &str, k: &str, i: &str| {
            format!(
                "[arch.{arch}]\nkernel = \"{k}\"\ninitrds = [\"{i}\"]\ncmdline = \"{CMDLINE}\"\n\n"
            )
        };
        let discovery = format!(
            "description = \"storm test\"\nscripts = [\"hello.sh\"]\n\n{}{}{}",
            kernel("bios", "x86_64/vmlinuz", "x86_64/initrd.img"),
            kernel("x86_64_efi", "x86_64/vmlinuz", "x86_64/initrd.img"),
            kernel("arm64_efi", "arm64/Image", "arm64/initrd.img"),
        );
        for (path, bytes) in files
            .iter()
            .map(|(p, b)| (*p, b.as_slice()))
            .chain([("bootenvs/discovery.toml", discovery.as_bytes())])
        {
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
                 address = \"{SERVER_IP}\"\n\
                 [[dhcp.subnet]]\n\
                 cidr = \"10.77.0.0/24\"\n\
                 ranges = [[\"10.77.0.100\", \"10.77.0.199\"]]\n\
                 [[dhcp.subnet]]\n\
                 cidr = \"10.78.0.0/24\"\n\
                 ranges = [[\"10.78.0.10\", \"10.78.0.250\"]]\n\
                 [dns]\n\
                 enabled = false\n\
                 [tftp]\n\
                 max_transfers_per_address = 0\n\
                 {storm}\
                 max_connections_per_address = 0\n\
                 {api}",
                d = d.display(),
                storm = STORM_OPT_OUT,
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

    /// Every node record (`GET /api/v1/nodes`), from inside the lab.
    fn nodes(&self) -> Vec<Value> {
        let url = format!("http://{SERVER_IP}/api/v1/nodes");
        // To a file: 200 records overflow a pipe, which Lab::run reads only after curl exits.
        let file = self.lab.dir().join("nodes.json");
        let out = self.lab.run(
            "curl",
            &[
                "-sS",
                "-f",
                "-m",
                "15",
                "-H",
                AUTH_HEADER,
                "-o",
                file.to_str().unwrap(),
                &url,
            ],
            CMD,
        );
        assert!(out.status.success(), "GET {url}: {}", text(&out));
        let body = fs::read(&file).unwrap_or_else(|e| panic!("{}: {e}", file.display()));
        serde_json::from_slice::<Value>(&body)
            .unwrap_or_else(|e| panic!("GET {url}: not JSON: {e}"))
            .as_array()
            .cloned()
            .unwrap_or_else(|| panic!("GET {url}: not a list"))
    }
}

/// The storm's namespace, on a veth into the lab's bridge: `rb-st-<lab>-<pid>`, so the lab's
/// sweep removes it if the test binary is killed. Deleted (with its veth) on drop.
struct StormNs {
    name: String,
}

impl StormNs {
    fn new(lab: &Lab) -> StormNs {
        let name = lab.ns().replacen("rb-", "rb-st-", 1);
        ip(&["netns", "add", &name]);
        let ns = StormNs { name };
        ns.ip(&["link", "set", "lo", "up"]);
        lab.ip(&[
            "link", "add", "stormbr", "type", "veth", "peer", "name", "st0", "netns", &ns.name,
        ]);
        lab.ip(&["link", "set", "stormbr", "master", BRIDGE, "up"]);
        ns.ip(&["addr", "add", &format!("{STORM_IP}/24"), "dev", "st0"]);
        ns.ip(&["link", "set", "st0", "up"]);
        ns
    }

    fn ip(&self, args: &[&str]) {
        let mut all = vec!["-n", &self.name];
        all.extend_from_slice(args);
        ip(&all);
    }

    /// `rackboot storm ARGS` in this namespace, bounded by [`STORM`]. Returns its output and
    /// the JSON report it wrote.
    fn storm(&self, lab: &Lab, args: &[&str]) -> (Output, Value) {
        let json = lab.dir().join("storm.json");
        let _ = fs::remove_file(&json);
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &self.name, RACKBOOT, "storm"])
            .args(args)
            .args(["--json", json.to_str().unwrap()]);
        let out = run_bounded(c, STORM);
        let report = fs::read_to_string(&json)
            .ok()
            .and_then(|t| serde_json::from_str(&t).ok())
            .unwrap_or_else(|| panic!("storm wrote no JSON report:\n{}", text(&out)));
        (out, report)
    }
}

impl Drop for StormNs {
    fn drop(&mut self) {
        // Only the storm runs here, and run_bounded has reaped it: nothing left to end.
        let _ = try_run(
            {
                let mut c = Command::new("ip");
                c.args(["netns", "del", &self.name]);
                c
            },
            CMD,
        );
    }
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
        "{}\n--- stdout:\n{}\n--- stderr:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        tail(&String::from_utf8_lossy(&out.stderr), 30)
    )
}

fn try_run(mut cmd: Command, timeout: Duration) -> Result<Output, String> {
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("spawn {cmd:?}: {e}"))?;
    // Drain both pipes while waiting: the storm's progress lines can exceed a pipe buffer.
    let mut so = child.stdout.take().unwrap();
    let mut se = child.stderr.take().unwrap();
    let out_t = std::thread::spawn(move || {
        let mut v = Vec::new();
        let _ = std::io::Read::read_to_end(&mut so, &mut v);
        v
    });
    let err_t = std::thread::spawn(move || {
        let mut v = Vec::new();
        let _ = std::io::Read::read_to_end(&mut se, &mut v);
        v
    });
    let deadline = Instant::now() + timeout;
    let status = loop {
        match child.try_wait() {
            Ok(Some(s)) => break s,
            Ok(None) if Instant::now() < deadline => sleep(Duration::from_millis(50)),
            _ => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!("{cmd:?}: no exit within {timeout:?}"));
            }
        }
    };
    Ok(Output {
        status,
        stdout: out_t.join().unwrap_or_default(),
        stderr: err_t.join().unwrap_or_default(),
    })
}

fn run_bounded(cmd: Command, timeout: Duration) -> Output {
    try_run(cmd, timeout).unwrap_or_else(|e| panic!("{e}"))
}

/// The records of the storm's nodes (MACs 02:…, the fleet's).
fn fleet_nodes(rb: &Rackboot) -> Vec<Value> {
    rb.nodes()
        .into_iter()
        .filter(|n| n["mac"].as_str().is_some_and(|m| m.starts_with("02:")))
        .collect()
}

#[test]
fn storm_of_200_relayed_nodes_boots_every_one_to_configured() {
    let rb = Rackboot::start("storm-relay");
    let st = StormNs::new(&rb.lab);
    st.ip(&["addr", "add", &format!("{GIADDR}/32"), "dev", "lo"]);
    rb.lab
        .ip(&["route", "add", "10.78.0.0/24", "via", STORM_IP]);

    let (out, report) = st.storm(
        &rb.lab,
        &[
            "--relay",
            GIADDR,
            "--server",
            &SERVER_IP.to_string(),
            "--nodes",
            "200",
            "--ramp",
            "50",
            "--timeout",
            "30s",
            "--dhcp-retry",
            "1s",
        ],
    );
    let table = String::from_utf8_lossy(&out.stdout).into_owned();
    eprintln!("{table}");
    assert!(
        out.status.success() && report["failed"] == 0 && report["ok"] == 200,
        "storm failed:\n{}\n--- rackboot log:\n{}",
        text(&out),
        tail(&read_text(&rb.log), 30)
    );
    // The report has every phase, each with its percentiles, and the table says so.
    let phases = report["phases"].as_array().unwrap();
    assert_eq!(phases.len(), 9, "{report:#}");
    for p in phases {
        assert_eq!(p["ok"], 200, "{p}");
        assert!(p["latency"]["p99_ms"].as_f64().is_some(), "{p}");
    }
    assert!(table.contains("failures: none"), "{table}");
    assert!(table.contains("p99"), "{table}");
    // Progress went to stderr.
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("done 200 failed 0"),
        "{}",
        text(&out)
    );

    // rackboot agrees: 200 records, every one configured, on the relayed subnet, and of all
    // three architectures.
    let nodes = fleet_nodes(&rb);
    assert_eq!(nodes.len(), 200, "{} fleet nodes", nodes.len());
    let not_configured: Vec<String> = nodes
        .iter()
        .filter(|n| n["state"] != "configured")
        .map(|n| format!("{} {}", n["mac"], n["state"]))
        .collect();
    assert!(
        not_configured.is_empty(),
        "not configured: {not_configured:?}"
    );
    let mut archs: Vec<String> = nodes
        .iter()
        .map(|n| n["arch"].as_str().unwrap_or("?").to_string())
        .collect();
    archs.sort();
    archs.dedup();
    assert_eq!(archs, ["arm64_efi", "bios", "x86_64_efi"], "{:#}", nodes[0]);
    assert!(rb.lab.is_running(rb.pid), "rackboot exited");
}

#[test]
fn storm_broadcasting_on_the_link_gets_leases_and_boot_scripts() {
    let rb = Rackboot::start("storm-direct");
    let st = StormNs::new(&rb.lab);
    st.ip(&["addr", "add", &format!("{DIRECT_IP}/24"), "dev", "st0"]);

    let (out, report) = st.storm(
        &rb.lab,
        &[
            "--interface",
            "st0",
            "--nodes",
            "20",
            "--phases",
            "dhcp,tftp,ipxe-dhcp,script,kernel,initrd",
            "--arch",
            "x86_64_efi",
            "--seed",
            "2",
            "--timeout",
            "30s",
            "--dhcp-retry",
            "1s",
            "--quiet",
        ],
    );
    assert!(
        out.status.success() && report["ok"] == 20,
        "storm failed:\n{}\n--- rackboot log:\n{}",
        text(&out),
        tail(&read_text(&rb.log), 30)
    );
    assert_eq!(report["phases"].as_array().unwrap().len(), 6);
    let nodes = fleet_nodes(&rb);
    assert_eq!(nodes.len(), 20);
    assert!(
        nodes.iter().all(|n| n["state"] == "booting"),
        "script rendered, no report: booting\n{:#}",
        nodes[0]
    );
}
