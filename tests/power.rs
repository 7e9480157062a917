//! rackboot's power drivers against real BMC emulators on loopback: sushy-tools' Redfish
//! emulator (its `fake` driver: a system in memory, whose power changes take effect 1 to 11 s
//! after they are asked, as a real machine's do) and pyghmi's fake IPMI BMC, driven through
//! Debian's ipmitool.
//!
//! The drivers first, each alone; then `rackboot power` end to end: the CLI, through the API, to
//! a `rackboot serve` in a private network namespace whose nodes' BMCs are those emulators (in
//! the same namespace), with each action and its outcome on the node's timeline.
//!
//! Needs the venv boot-assets/setup.sh makes (`/opt/rackboot-bmc`; `RACKBOOT_BMC_VENV` names
//! another), ipmitool, and root for the namespaces. Each emulator is a child of the test, ended
//! by its PID when the test ends, also when it fails.

mod common;

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::api::READ_TOKEN;
use common::bmc::{FakeSystem, READY_WITHIN, lab_emulator, python, sushy_command, venv};
use common::server::{Server, cli_json};
use common::setup::Setup;
use rackboot::bmc::{self, BmcError, BmcRecord, Driver, Power, PowerAction, PowerState};

/// The fake Redfish driver applies a power change up to 11 s after it is asked.
const SETTLES_WITHIN: Duration = Duration::from_secs(20);

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A child process ended (by its PID) when dropped.
struct Emulator {
    child: Child,
    log: PathBuf,
}

impl Drop for Emulator {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Emulator {
    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

fn spawn(cmd: &mut Command, log: &Path) -> Emulator {
    let out = std::fs::File::create(log).unwrap();
    let child = cmd
        .stdin(Stdio::null())
        .stdout(out.try_clone().unwrap())
        .stderr(out)
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {cmd:?}: {e}"));
    Emulator {
        child,
        log: log.into(),
    }
}

/// The one system of the emulators here: `node-1`, off.
const NODE_1: FakeSystem = FakeSystem {
    uuid: "1ad6e3c0-1b8b-4b4c-9b1e-000000000001",
    name: "node-1",
    mac: "52:54:00:00:00:01",
};

/// A sushy-tools Redfish emulator on loopback with [`NODE_1`] (see [`sushy_command`]),
/// listening.
fn redfish(dir: &Path, forgets: bool) -> (Emulator, String) {
    let port = free_port();
    let (python, args) = sushy_command(dir, port, &[NODE_1], None, forgets);
    let emulator = spawn(Command::new(python).args(args), &dir.join("sushy.log"));
    let url = format!("http://127.0.0.1:{port}");
    let deadline = Instant::now() + READY_WITHIN;
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            Instant::now() < deadline,
            "sushy-emulator did not listen within {READY_WITHIN:?}:\n{}",
            emulator.log()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    (emulator, url)
}

fn record(driver: Driver, address: &str) -> BmcRecord {
    BmcRecord {
        driver,
        address: address.into(),
        system: None,
        username: None,
        password_secret: None,
        insecure: false,
    }
}

async fn settles(p: &dyn Power, want: PowerState) {
    let deadline = Instant::now() + SETTLES_WITHIN;
    loop {
        let now = p.state().await.unwrap();
        if now == want {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "power still {now}, not {want}, after {SETTLES_WITHIN:?}"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

#[tokio::test]
async fn redfish_powers_on_and_cycles_into_a_kept_pxe_boot() {
    let dir = tempfile::tempdir().unwrap();
    let (emulator, url) = redfish(dir.path(), false);
    let p = bmc::power_of(
        &record(Driver::Redfish, &url),
        None,
        None,
        Default::default(),
    )
    .unwrap();
    let status = bmc::act(p.as_ref(), PowerAction::Status).await.unwrap();
    assert_eq!(status.before, PowerState::Off, "{}", emulator.log());
    bmc::act(p.as_ref(), PowerAction::On).await.unwrap();
    settles(p.as_ref(), PowerState::On).await;
    let done = bmc::act(p.as_ref(), PowerAction::PxeOnce).await.unwrap();
    assert!(
        done.detail.contains("BootSourceOverrideTarget Pxe")
            && done.detail.contains("power-cycled"),
        "{}",
        done.detail
    );
    // The restart takes the machine down, then up again.
    settles(p.as_ref(), PowerState::On).await;
    bmc::act(p.as_ref(), PowerAction::Off).await.unwrap();
    settles(p.as_ref(), PowerState::Off).await;
}

#[tokio::test]
async fn a_redfish_bmc_that_does_not_keep_the_pxe_override_is_not_rebooted() {
    let dir = tempfile::tempdir().unwrap();
    let (emulator, url) = redfish(dir.path(), true);
    let p = bmc::power_of(
        &record(Driver::Redfish, &url),
        None,
        None,
        Default::default(),
    )
    .unwrap();
    bmc::act(p.as_ref(), PowerAction::On).await.unwrap();
    settles(p.as_ref(), PowerState::On).await;
    let e = bmc::act(p.as_ref(), PowerAction::PxeOnce)
        .await
        .unwrap_err();
    assert!(
        matches!(e, BmcError::NotKept { .. }),
        "{e}\n{}",
        emulator.log()
    );
    assert!(e.to_string().contains("not rebooting"), "{e}");
    // No reset was asked: the emulator's log has the override, and no power change after it.
    let log = emulator.log();
    let after = &log[log.rfind("PATCH").expect("the override was sent")..];
    assert!(
        !after.contains("ComputerSystem.Reset"),
        "a reset followed:\n{after}"
    );
    assert_eq!(p.state().await.unwrap(), PowerState::On);
}

#[tokio::test]
async fn a_redfish_bmc_that_is_not_there_is_named_in_the_error() {
    let port = free_port();
    let p = bmc::power_of(
        &record(Driver::Redfish, &format!("http://127.0.0.1:{port}")),
        None,
        None,
        Default::default(),
    )
    .unwrap();
    let e = bmc::act(p.as_ref(), PowerAction::Status)
        .await
        .unwrap_err()
        .to_string();
    assert!(
        e.contains(&format!("127.0.0.1:{port}")) && e.contains("failed"),
        "{e}"
    );
}

#[tokio::test]
async fn ipmi_through_ipmitool_switches_power_and_reads_the_pxe_override_back() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let fakebmc = spawn(
        Command::new(venv().join("bin/fakebmc")).args(["--port", &port.to_string()]),
        &dir.path().join("fakebmc.log"),
    );
    let rec = BmcRecord {
        username: Some("admin".into()),
        ..record(Driver::Ipmi, &format!("127.0.0.1:{port}"))
    };
    let p = bmc::power_of(&rec, Some("password".into()), None, Default::default()).unwrap();
    // UDP: ready when it answers (ipmitool retries within each run).
    let deadline = Instant::now() + READY_WITHIN;
    let before = loop {
        match bmc::act(p.as_ref(), PowerAction::Status).await {
            Ok(o) => break o.before,
            Err(e) => assert!(Instant::now() < deadline, "{e}\n{}", fakebmc.log()),
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(before, PowerState::Off);
    bmc::act(p.as_ref(), PowerAction::On).await.unwrap();
    assert_eq!(p.state().await.unwrap(), PowerState::On);
    let done = bmc::act(p.as_ref(), PowerAction::PxeOnce).await.unwrap();
    assert!(
        done.detail.contains("Force PXE") && done.detail.contains("power-cycled"),
        "{}",
        done.detail
    );
    let log = fakebmc.log();
    assert!(
        log.contains("abruptly remove power")
            && log.rfind("powered on") > log.rfind("abruptly remove power"),
        "off, then on:\n{log}"
    );
    // A wrong password is refused by the BMC, and the error does not carry it.
    let wrong = bmc::power_of(
        &rec,
        Some("not-the-password".into()),
        None,
        Default::default(),
    )
    .unwrap();
    let e = bmc::act(wrong.as_ref(), PowerAction::Status)
        .await
        .unwrap_err()
        .to_string();
    assert!(!e.contains("not-the-password"), "{e}");
}

// ---- `rackboot power` end to end ----------------------------------------------------------

const KEPT: &str = "52:54:00:b0:00:01";
const FORGETS: &str = "52:54:00:b0:00:02";
const NO_BMC: &str = "52:54:00:b0:00:03";
const IPMI: &str = "52:54:00:b0:00:04";

fn power_events(rb: &Server, mac: &str) -> Vec<String> {
    rb.details(mac, "power")
}

#[test]
fn rackboot_power_cycles_a_node_into_pxe_and_refuses_one_whose_bmc_forgets_the_override() {
    let rb = Setup::new("power-redfish").standard_files().start();
    let dir = rb.path("bmc");
    for (name, port, forgets) in [("kept", 8001, false), ("forgets", 8002, true)] {
        let (python, args) = sushy_command(&dir.join(name), port, &[NODE_1], None, forgets);
        let url = format!("http://127.0.0.1:{port}/redfish/v1/Systems");
        lab_emulator(
            &rb.lab,
            name,
            &python,
            &args,
            &["curl", "-sf", "-m", "3", &url],
        );
    }
    let nodes = serde_json::json!([
        {"mac": KEPT, "hostname": "b1", "labels": {"role": "builder"},
         "bmc": {"driver": "redfish", "address": "http://127.0.0.1:8001"}},
        {"mac": FORGETS, "hostname": "b2", "labels": {"role": "builder"},
         "bmc": {"driver": "redfish", "address": "http://127.0.0.1:8002"}},
        {"mac": NO_BMC, "hostname": "b3"},
    ]);
    let file = rb.path("nodes.json");
    std::fs::write(&file, nodes.to_string()).unwrap();
    let (code, out) = rb.cli(&["node", "import", file.to_str().unwrap()]);
    assert_eq!(code, Some(0), "{out}");

    // Status by selector: both BMCs answer, nothing changes, and it is on each timeline.
    let (code, out) = rb.cli(&["power", "status", "--selector", "role=builder"]);
    assert_eq!(code, Some(0), "{out}");
    assert_eq!(out.matches("power is off").count(), 2, "{out}");
    assert!(
        power_events(&rb, KEPT)[0]
            .starts_with("status by token `tests` via redfish http://127.0.0.1:8001: power is off")
    );

    // A read token may not act on power.
    let (code, out) = rb.cli_as(READ_TOKEN, &["power", "on", KEPT]);
    assert_eq!(code, Some(1), "{out}");
    assert!(out.contains("may only read"), "{out}");

    // The BMC that keeps the override: set, read back, powered on.
    let (code, out) = rb.cli(&["power", "pxe-once", KEPT]);
    assert_eq!(code, Some(0), "{out}");
    assert!(
        out.contains("BootSourceOverrideTarget Pxe") && out.contains("powered on"),
        "{out}"
    );
    let said = power_events(&rb, KEPT);
    assert!(
        said.iter()
            .any(|d| d.starts_with("pxe-once by token `tests`")
                && d.contains("next boot from the network")),
        "{said:#?}"
    );
    let log = std::fs::read_to_string(rb.lab.dir().join("kept.log")).unwrap_or_default();
    assert!(
        log.contains("ComputerSystem.Reset"),
        "the kept BMC was powered on:\n{log}"
    );

    // The BMC that forgets: refused with the reason, exit 4, and no power call after the override.
    let (code, out) = rb.cli(&["power", "pxe-once", FORGETS]);
    assert_eq!(code, Some(4), "{out}");
    assert!(
        out.contains("FAILED") && out.contains("reads back") && out.contains("not rebooting"),
        "{out}"
    );
    let said = power_events(&rb, FORGETS);
    assert!(
        said.iter().any(|d| d
            .starts_with("pxe-once by token `tests` via redfish http://127.0.0.1:8002: FAILED:")
            && d.contains("not rebooting")),
        "{said:#?}"
    );
    let log = std::fs::read_to_string(rb.lab.dir().join("forgets.log")).unwrap_or_default();
    assert!(
        !log.contains("ComputerSystem.Reset"),
        "the forgetting BMC was reset:\n{log}"
    );

    // A node without a BMC says so; an unknown MAC refuses the request before any BMC is touched.
    let (code, out) = rb.cli(&["power", "cycle", NO_BMC]);
    assert_eq!(code, Some(4), "{out}");
    assert!(out.contains("no BMC"), "{out}");
    let (code, out) = rb.cli(&["power", "off", KEPT, "52:54:00:ff:ff:ff"]);
    assert_eq!(code, Some(1), "{out}");
    assert!(out.contains("no node with MAC 52:54:00:ff:ff:ff"), "{out}");
    assert!(
        !power_events(&rb, KEPT)
            .iter()
            .any(|d| d.starts_with("off ")),
        "nothing was switched off"
    );

    // The record shows its BMC; `node set` replaces it and `--no-bmc` removes it, audited.
    let (code, out) = rb.cli(&["node", "show", KEPT]);
    assert_eq!(code, Some(0), "{out}");
    assert!(
        out.contains("driver=redfish, address=http://127.0.0.1:8001"),
        "{out}"
    );
    let (code, out) = rb.cli(&[
        "node",
        "set",
        NO_BMC,
        "--bmc-driver",
        "ipmi",
        "--bmc-address",
        "10.1.0.9",
        "--bmc-user",
        "admin",
        "--bmc-password-secret",
        "bmc-b3",
    ]);
    assert_eq!(code, Some(0), "{out}");
    let audit = rb.details(NO_BMC, "admin.change");
    assert!(
        audit
            .iter()
            .any(|d| d.contains("bmc - -> ipmi 10.1.0.9 user admin password secret bmc-b3")),
        "{audit:#?}"
    );
    // A password is never a field of the record: only the name of its secret.
    let (code, out) = rb.cli(&[
        "node",
        "set",
        NO_BMC,
        "--bmc-driver",
        "ipmi",
        "--bmc-address",
        "10.1.0.9",
        "--bmc-password-secret",
        "hunter2 hunter2",
    ]);
    assert_eq!(code, Some(1), "{out}");
    assert!(out.contains("bmc.password_secret"), "{out}");
    let (code, out) = rb.cli(&["node", "set", NO_BMC, "--no-bmc"]);
    assert_eq!(code, Some(0), "{out}");
    assert!(rb.node(NO_BMC).get("bmc").is_none(), "{}", rb.node(NO_BMC));
    rb.assert_running();
}

#[test]
fn ipmi_power_reads_its_password_from_a_secret_and_refuses_one_others_can_read() {
    const PASSWORD: &str = "bmc-s3cret-7f2a";
    let rb = Setup::new("power-ipmi")
        .standard_files()
        .dir("secrets_dir", "secrets")
        .file("secrets/bmc-b4", format!("{PASSWORD}\n"))
        .start();
    let secret = rb.path("secrets/bmc-b4");
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&secret, std::fs::Permissions::from_mode(0o600)).unwrap();
    // pyghmi's fake BMC, with this test's password instead of its built-in one.
    let python = python();
    let script = format!(
        "from pyghmi.cmd.fakebmc import FakeBmc\nFakeBmc({{'admin': '{PASSWORD}'}}, port=9623).listen()\n"
    );
    lab_emulator(
        &rb.lab,
        "fakebmc",
        &python,
        &["-c".into(), script],
        &[
            "ipmitool",
            "-I",
            "lanplus",
            "-H",
            "127.0.0.1",
            "-p",
            "9623",
            "-U",
            "admin",
            "-P",
            PASSWORD,
            "-R",
            "1",
            "-N",
            "1",
            "chassis",
            "power",
            "status",
        ],
    );
    let nodes = serde_json::json!([
        {"mac": IPMI, "hostname": "b4",
         "bmc": {"driver": "ipmi", "address": "127.0.0.1:9623", "username": "admin", "password_secret": "bmc-b4"}},
    ]);
    let file = rb.path("nodes.json");
    std::fs::write(&file, nodes.to_string()).unwrap();
    let (code, out) = rb.cli(&["node", "import", file.to_str().unwrap()]);
    assert_eq!(code, Some(0), "{out}");

    let (code, out) = rb.cli(&["power", "on", IPMI]);
    assert_eq!(code, Some(0), "{out}");
    assert!(!out.contains(PASSWORD), "{out}");
    let (code, out) = rb.cli(&["power", "status", IPMI, "--json"]);
    assert_eq!(code, Some(0), "{out}");
    let json = cli_json(&out);
    assert_eq!(json["nodes"][0]["before"], "on", "{json}");

    // A secret the group or others can read is refused, and nothing reaches the BMC.
    std::fs::set_permissions(&secret, std::fs::Permissions::from_mode(0o644)).unwrap();
    let (code, out) = rb.cli(&["power", "off", IPMI]);
    assert_eq!(code, Some(4), "{out}");
    assert!(out.contains("readable by group or others"), "{out}");
    let (_, out) = rb.cli(&["power", "status", IPMI]);
    assert!(out.contains("FAILED"), "{out}");
    std::fs::set_permissions(&secret, std::fs::Permissions::from_mode(0o600)).unwrap();
    let (code, out) = rb.cli(&["power", "status", IPMI]);
    assert_eq!(code, Some(0), "{out}");
    assert!(out.contains("power is on"), "still on: {out}");

    // The password is in no answer, no event and no log line.
    let node = rb.node(IPMI).to_string();
    assert!(
        !node.contains(PASSWORD) && node.contains("\"password_secret\":\"bmc-b4\""),
        "{node}"
    );
    assert!(
        !rb.log_text().contains(PASSWORD),
        "the log has the password"
    );
    rb.assert_running();
}
