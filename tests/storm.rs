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
use std::process::Output;
use std::time::Duration;

use common::lab::{Lab, SERVER_IP, tail};
use common::netns::Netns;
use common::server::Server;
use common::setup::{RACKBOOT, Setup, pseudo_random};
use serde_json::Value;

/// The whole storm command: 200 nodes ramped over 4 s, each phase bounded by --timeout.
const STORM: Duration = Duration::from_secs(150);

const STORM_IP: &str = "10.77.0.2";
const DIRECT_IP: &str = "10.77.0.3";
const GIADDR: &str = "10.78.0.1";

/// rackboot with DHCP (its own subnet and the relayed 10.78.0.0/24), TFTP and HTTP, assets for
/// all three architectures, and one config script. The simulated nodes all fetch from the storm
/// namespace's one address, not from the addresses leased to them: the documented opt-out of
/// binding node credentials to node addresses, which only load tests use; and the per-address
/// limits are lifted for the same reason.
fn start(name: &str) -> Server {
    Setup::new(name)
        .standard_files()
        // Loaders: 48 KiB, 34 blocks of 1468 bytes (9 windows of 4).
        .file("assets/undionly.kpxe", pseudo_random(1, 48 << 10))
        .file("assets/ipxe-amd64.efi", pseudo_random(2, 48 << 10))
        .file("assets/ipxe-arm64.efi", pseudo_random(3, 48 << 10))
        .file("assets/x86_64/vmlinuz", pseudo_random(4, 256 << 10))
        .file("assets/x86_64/initrd.img", pseudo_random(5, 128 << 10))
        .file("assets/arm64/Image", pseudo_random(6, 256 << 10))
        .file("assets/arm64/initrd.img", pseudo_random(7, 128 << 10))
        .lab_subnet(100, 199)
        .subnet(
            "10.78.0.0/24",
            "ranges = [[\"10.78.0.10\", \"10.78.0.250\"]]",
        )
        .tftp("max_transfers_per_address = 0")
        .tokens_from_any_address()
        .http("max_connections_per_address = 0")
        .start()
}

/// The storm's namespace, on a veth (`st0`, at [`STORM_IP`]) into the lab's bridge.
fn storm_ns(lab: &Lab) -> Netns<'_> {
    let ns = Netns::new(lab, "st");
    ns.link("st0", None);
    ns.addr("st0", &format!("{STORM_IP}/24"));
    ns
}

/// `rackboot storm ARGS` in `ns`, bounded by [`STORM`]. Returns its output and the JSON report
/// it wrote.
fn storm(ns: &Netns, lab: &Lab, args: &[&str]) -> (Output, Value) {
    let json = lab.dir().join("storm.json");
    let _ = fs::remove_file(&json);
    let mut all = vec!["storm"];
    all.extend_from_slice(args);
    all.extend_from_slice(&["--json", json.to_str().expect("utf-8 path")]);
    let out = ns.run(RACKBOOT, &all, STORM);
    let report = fs::read_to_string(&json)
        .ok()
        .and_then(|t| serde_json::from_str(&t).ok())
        .unwrap_or_else(|| panic!("storm wrote no JSON report:\n{}", text(&out)));
    (out, report)
}

fn text(out: &Output) -> String {
    format!(
        "{}\n--- stdout:\n{}\n--- stderr:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        tail(&String::from_utf8_lossy(&out.stderr), 30)
    )
}

/// The records of the storm's nodes (MACs 02:…, the fleet's).
fn fleet_nodes(rb: &Server) -> Vec<Value> {
    rb.api_list("nodes")
        .into_iter()
        .filter(|n| n["mac"].as_str().is_some_and(|m| m.starts_with("02:")))
        .collect()
}

#[test]
fn storm_of_200_relayed_nodes_boots_every_one_to_configured() {
    let rb = start("storm-relay");
    let st = storm_ns(&rb.lab);
    st.addr("lo", &format!("{GIADDR}/32"));
    rb.lab
        .ip(&["route", "add", "10.78.0.0/24", "via", STORM_IP]);

    let (out, report) = storm(
        &st,
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
        tail(&rb.log_text(), 30)
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
    rb.assert_running();
}

#[test]
fn storm_broadcasting_on_the_link_gets_leases_and_boot_scripts() {
    let rb = start("storm-direct");
    let st = storm_ns(&rb.lab);
    st.addr("st0", &format!("{DIRECT_IP}/24"));

    let (out, report) = storm(
        &st,
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
        tail(&rb.log_text(), 30)
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
