//! Boot, then configure, then configure again without a reboot, against real firmware: a diskless
//! qemu VM netboots the operational image, whose agent runs two config scripts — one listed by
//! the bootenv, one selected by the node's labels. The second fails: the node is `failed` naming
//! that script and its exit status, with its output tail stored. The script file is fixed (hot
//! reload), a re-run is triggered with `POST /api/v1/reconfigure`, and the same VM, still running
//! its first boot (no DHCP, no boot script since), ends `configured`.
//!
//! Needs root, the packages and assets of `boot-assets/setup.sh` (the image built from this
//! checkout's `boot-assets/image/init`). Every wait is bounded; the lab removes its namespace and
//! processes also when the test fails.

mod common;

use std::time::{Duration, Instant};

use common::api::{AUTH_HEADER, kinds, timeline_text};
use common::lab::{self, Firmware, Lab, SERVER_IP};
use common::server::Server;
use common::vm_watch::{Watch, appliance, boot_network};
use rackboot::model::{Node, Timestamp};
use serde_json::Value;

/// One boot under TCG (~30 s) and two script runs.
const TIMEOUT: Duration = Duration::from_secs(240);
/// From the reconfigure to `configured`: the agent's wait returns at once, the scripts are short.
const RERUN_TIMEOUT: Duration = Duration::from_secs(60);

const MAC: &str = "52:54:00:77:c0:01";
const TOKEN: &str = "c0ffee00c0ffee00c0ffee00c0ffee00";

const BOOTENV: &str = r#"description = "operational image, for the configure test"
scripts = ["10-first.sh"]
[arch.bios]
kernel = "x86_64/vmlinuz"
initrds = ["x86_64/initrd.img"]
cmdline = "console=ttyS0 quiet rackboot.url={{ server_url }} rackboot.mac={{ node.mac }} rackboot.token={{ node.token }}"
"#;

const FIRST: &str = "#!/bin/sh\necho \"first on {{ node.hostname }}\"\n";

/// Selected by the node's labels; fails until fixed.
const SECOND_BROKEN: &str = "#!/bin/sh\n# rackboot-selector: role=builder\n\
    echo \"second on a {{ node.labels.role }}\"\necho \"disk /dev/vdz not found\" >&2\nexit 3\n";
const SECOND_FIXED: &str = "#!/bin/sh\n# rackboot-selector: role=builder\n\
    echo \"second on a {{ node.labels.role }}, fixed\"\nexit 0\n";

/// rackboot with a bootenvs and scripts directory of its own (the second script selected by
/// labels, and broken) and the VM's node in its store.
fn start_rackboot() -> Server {
    let rb = appliance("vm-config")
        .file("bootenvs/discovery.toml", BOOTENV)
        .file("scripts/10-first.sh", FIRST)
        .file("scripts/20-second.sh", SECOND_BROKEN)
        .prepare();
    // The VM's node record, labelled `role=builder` (labels have no other way in yet).
    let mut n = Node::discovered(
        MAC.parse().expect("mac"),
        "discovery",
        TOKEN.into(),
        Timestamp::now(),
    );
    n.labels.insert("role".into(), "builder".into());
    rb.seed_nodes(vec![n]);
    boot_network(&rb.lab);
    rb.serve();
    rb
}

/// `curl` from inside the lab: body of a 2xx, else a panic with the reply.
fn curl(lab: &Lab, args: &[&str], path: &str) -> String {
    let url = format!("http://{SERVER_IP}{path}");
    let mut all = vec!["-sS", "--fail-with-body", "-m", "10"];
    if path.starts_with("/api/v1") {
        all.extend_from_slice(&["-H", AUTH_HEADER]);
    }
    all.extend_from_slice(args);
    all.push(&url);
    let out = lab.run("curl", &all, Duration::from_secs(20));
    let body = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "curl {path}: {body}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    body
}

fn reports(lab: &Lab) -> Value {
    serde_json::from_str(&curl(lab, &[], &format!("/api/v1/nodes/{MAC}/reports")))
        .expect("reports JSON")
}

/// Polls the node until `done` says so; panics on rackboot or qemu exiting, or the timeout.
fn wait_node(
    watch: &Watch,
    timeout: Duration,
    what: &str,
    mut done: impl FnMut(&Value) -> bool,
) -> Value {
    watch.node(MAC, timeout, what, |n| Ok(done(n).then(|| n.clone())))
}

/// How many of the node's events say it booted (DHCP, loader, boot script, kernel).
fn boot_steps(n: &Value) -> usize {
    kinds(n)
        .iter()
        .filter(|(k, _)| {
            k.starts_with("dhcp.")
                || k.starts_with("tftp.")
                || k == "http.script"
                || k == "http.kernel"
        })
        .count()
}

#[test]
fn a_failed_script_is_fixed_and_rerun_without_a_reboot() {
    let rb = start_rackboot();
    let lab = &rb.lab;
    let vm = lab.vm("vm-config", Firmware::X86Bios).mac(MAC).start();
    let watch = Watch::new(&rb, &vm);

    // 1. First run: 10-first.sh (bootenv) succeeds, 20-second.sh (labels) fails.
    let n = wait_node(&watch, TIMEOUT, "first run fails", |n| {
        n["state"] == "failed" || n["state"] == "configured"
    });
    assert_eq!(n["state"], "failed", "{}", watch.diagnosis(Some(&n)));
    assert_eq!(
        n["state_reason"].as_str(),
        Some("script 20-second.sh exited 3"),
        "{n}"
    );
    let events = kinds(&n);
    let pulled = events
        .iter()
        .find(|(k, _)| k == "config.pull")
        .map(|(_, d)| d.as_str());
    assert_eq!(
        pulled,
        Some("10-first.sh, 20-second.sh"),
        "bootenv's first, then selected"
    );
    let failed = events
        .iter()
        .find(|(k, _)| k == "report.failed")
        .map(|(_, d)| d.clone())
        .unwrap_or_default();
    assert!(
        failed.starts_with("script 20-second.sh exited 3\n")
            && failed.contains("disk /dev/vdz not found"),
        "the output tail is on the timeline: {failed}"
    );
    let r = reports(lab);
    let runs: Vec<(String, i64, u64)> = r["reports"]
        .as_array()
        .expect("reports")
        .iter()
        .map(|r| {
            (
                r["script"].as_str().unwrap_or_default().to_string(),
                r["status"].as_i64().unwrap_or(-1),
                r["generation"].as_u64().unwrap_or(99),
            )
        })
        .collect();
    assert_eq!(
        runs,
        [("10-first.sh".into(), 0, 0), ("20-second.sh".into(), 3, 0)],
        "{r}"
    );
    let second = &r["reports"][1];
    let output = second["output"].as_str().unwrap_or_default();
    assert!(
        output.contains("second on a builder") && output.contains("disk /dev/vdz not found"),
        "{r}"
    );
    assert!(
        second["duration_ms"].is_u64(),
        "the agent measures each script: {r}"
    );
    assert_eq!(r["dropped"], 0);
    vm.wait_for_serial(
        "rackboot-agent: failed 20-second.sh 3",
        Duration::from_secs(10),
    );
    let booted = boot_steps(&n);

    // 2. Fix the script (hot reload), then trigger a re-run for the label.
    let reloads = || rb.log_text().matches("reloaded bootenvs").count();
    let before = reloads();
    std::fs::write(rb.path("scripts/20-second.sh"), SECOND_FIXED).expect("fix script");
    lab::poll_until(Duration::from_secs(15), || {
        (reloads() > before).then_some(())
    })
    .unwrap_or_else(|| panic!("no reload\n{}", lab::tail(&rb.log_text(), 10)));
    let reply = curl(
        lab,
        &[
            "-X",
            "POST",
            "--data-binary",
            r#"{"selector": "role=builder"}"#,
        ],
        "/api/v1/reconfigure",
    );
    assert_eq!(reply, format!(r#"{{"macs":["{MAC}"]}}"#));
    let triggered = Instant::now();

    // 3. The same VM, with no reboot, runs its scripts again and ends configured.
    let n = wait_node(&watch, RERUN_TIMEOUT, "re-run ends configured", |n| {
        n["config_generation"] == 1 && n["state"] == "configured"
    });
    eprintln!(
        "vm-config: configured {:.1} s after the reconfigure\n{}",
        triggered.elapsed().as_secs_f64(),
        timeline_text(&n)
    );
    assert_eq!(
        boot_steps(&n),
        booted,
        "no DHCP, TFTP, boot script or kernel since the first boot\n{}",
        timeline_text(&n)
    );
    // The agent's own view, waited for: it prints `configured` only after its report returned,
    // so the API can show `configured` before the console does. The first run ended `failed`,
    // so this is the re-run's line.
    vm.wait_for_serial_in_order(
        &[
            "rackboot-agent: failed 20-second.sh 3",
            "rackboot-agent: reconfigure: generation 0 -> 1",
            "rackboot-agent: run generation 1",
            "rackboot-agent: ok 20-second.sh",
            "rackboot-agent: configured",
        ],
        Duration::from_secs(10),
    );
    let serial = vm.serial();
    assert_eq!(
        serial.matches("rackboot-agent: start").count(),
        1,
        "one boot only\n{serial}"
    );
    assert!(vm.exit_status().is_none(), "qemu still runs");
    let r = reports(lab);
    let rerun: Vec<(String, i64)> = r["reports"]
        .as_array()
        .expect("reports")
        .iter()
        .filter(|r| r["generation"] == 1)
        .map(|r| {
            (
                r["script"].as_str().unwrap_or_default().to_string(),
                r["status"].as_i64().unwrap_or(-1),
            )
        })
        .collect();
    assert_eq!(
        rerun,
        [("10-first.sh".into(), 0), ("20-second.sh".into(), 0)],
        "{r}"
    );
    let fixed = r["reports"].as_array().and_then(|a| a.last()).cloned();
    assert!(
        fixed
            .as_ref()
            .and_then(|f| f["output"].as_str())
            .unwrap_or_default()
            .contains("fixed"),
        "the fixed script ran: {r}"
    );
    // The failure stays on record: four reports, nothing dropped.
    assert_eq!(r["reports"].as_array().map(Vec::len), Some(4), "{r}");
}
