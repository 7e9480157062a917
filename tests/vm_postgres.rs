//! Two appliances on one PostgreSQL database (a throwaway cluster the test starts), and a real
//! VM: a diskless qemu VM netboots through appliance A (DHCP, TFTP, HTTP in A's lab) to
//! `configured`; `rackboot node reconfigure` against appliance B's API (B in a lab of its own,
//! no link to the VM) re-runs its config scripts without a reboot, through the long poll A
//! holds; and the node's one timeline shows both appliances' events, each naming its appliance.
//!
//! Needs root, PostgreSQL's server binaries and the packages and assets of
//! `boot-assets/setup.sh`. Every wait is bounded; the labs end their processes by PID, the
//! cluster is stopped when dropped.

mod common;

use std::time::Duration;

use common::api::{ADMIN_TOKEN, timeline_text};
use common::lab::{Firmware, SERVER_IP};
use common::server::Server;
use common::setup::{RACKBOOT, Setup};
use common::vm_watch::{Watch, appliance, boot_network};
use rackboot::store::postgres::scratch::ScratchCluster;
use serde_json::Value;

/// One boot under TCG (~30 s) and one script run.
const TIMEOUT: Duration = Duration::from_secs(240);
/// From the reconfigure to the second run's report: the agent's wait returns at once.
const RERUN_TIMEOUT: Duration = Duration::from_secs(60);

const MAC: &str = "52:54:00:77:d0:01";

const BOOTENV: &str = r#"description = "operational image, two appliances"
scripts = ["10-hello.sh"]
[arch.bios]
kernel = "x86_64/vmlinuz"
initrds = ["x86_64/initrd.img"]
cmdline = "console=ttyS0 quiet rackboot.url={{ server_url }} rackboot.mac={{ node.mac }} rackboot.token={{ node.token }}"
"#;

const HELLO: &str = "#!/bin/sh\necho \"hello from {{ node.hostname }}\"\n";

fn store(url: &str, name: &str) -> String {
    format!("engine = \"postgres\"\nurl = \"{url}\"\nappliance = \"{name}\"\n")
}

/// The node as `rb` shows it, with its timeline.
fn node(rb: &Server) -> Value {
    let r = rb.request(
        "GET",
        &format!("/api/v1/nodes/{MAC}"),
        Some(ADMIN_TOKEN),
        None,
    );
    assert_eq!(r.status, 200, "{}", r.text());
    r.json()
}

/// The script reports' generations, oldest first.
fn report_generations(rb: &Server) -> Vec<u64> {
    let r = rb.request(
        "GET",
        &format!("/api/v1/nodes/{MAC}/reports"),
        Some(ADMIN_TOKEN),
        None,
    );
    r.json()["reports"]
        .as_array()
        .map(|rs| rs.iter().filter_map(|r| r["generation"].as_u64()).collect())
        .unwrap_or_default()
}

#[test]
fn a_vm_booted_through_one_appliance_is_reconfigured_through_the_other() {
    let pg = ScratchCluster::start().expect("a scratch PostgreSQL");
    pg.create_database("rackboot").expect("a database");
    let url = pg.url("rackboot");
    let a = appliance("vm-pg-a")
        .file("bootenvs/discovery.toml", BOOTENV)
        .file("scripts/10-hello.sh", HELLO)
        .table("store", &store(&url, "row-a"))
        .prepare();
    boot_network(&a.lab);
    a.serve();
    let b = Setup::new("vm-pg-b")
        .standard_files()
        .file("bootenvs/discovery.toml", BOOTENV)
        .file("scripts/10-hello.sh", HELLO)
        .table("store", &store(&url, "row-b"))
        .start();

    // The node is made through b; a boots it.
    let r = b.request(
        "POST",
        "/api/v1/nodes",
        Some(ADMIN_TOKEN),
        Some(&format!(r#"{{"mac": "{MAC}", "hostname": "builder-d1"}}"#)),
    );
    assert_eq!(r.status, 201, "{}", r.text());

    let vm = a.lab.vm("vm-pg", Firmware::X86Bios).mac(MAC).start();
    let watch = Watch::new(&a, &vm).also("appliance b's log", || b.log_text());
    let n = watch.node(MAC, TIMEOUT, "configured through a", |n| {
        Ok((n["state"] == "configured").then(|| n.clone()))
    });
    vm.wait_for_serial("rackboot-agent: configured", Duration::from_secs(30));
    assert_eq!(report_generations(&a), [0], "{}", timeline_text(&n));
    let boots = vm.serial().matches("iPXE").count();

    // Re-run through b's API, with the CLI as an admin would.
    let server = format!("http://{SERVER_IP}");
    let out = b.lab.run(
        RACKBOOT,
        &[
            "node",
            "reconfigure",
            MAC,
            "--server",
            &server,
            "--token",
            ADMIN_TOKEN,
        ],
        Duration::from_secs(30),
    );
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let rerun = common::lab::poll_until(RERUN_TIMEOUT, || {
        (report_generations(&a) == [0, 1]).then_some(())
    });
    assert!(
        rerun.is_some(),
        "the VM did not run its scripts again: reports {:?}\n{}",
        report_generations(&a),
        watch.diagnosis(None)
    );
    assert_eq!(
        vm.serial().matches("iPXE").count(),
        boots,
        "no reboot: iPXE did not start again"
    );

    // One timeline, both appliances in it, by name.
    let events = node(&b)["events"].as_array().cloned().unwrap_or_default();
    let by = |who: &str, kind: &str| {
        events.iter().any(|e| {
            e["appliance"] == who && e["kind"].as_str().is_some_and(|k| k.starts_with(kind))
        })
    };
    let text = timeline_text(&node(&b));
    assert!(
        by("row-b", "admin.change"),
        "b's create and reconfigure:\n{text}"
    );
    assert!(by("row-a", "dhcp."), "a's DHCP:\n{text}");
    assert!(by("row-a", "http.kernel"), "a's kernel:\n{text}");
    assert!(by("row-a", "report."), "a's reports:\n{text}");
}
