//! rackboot's power drivers against real BMC emulators on loopback: sushy-tools' Redfish
//! emulator (its `fake` driver: a system in memory, whose power changes take effect 1 to 11 s
//! after they are asked, as a real machine's do) and pyghmi's fake IPMI BMC, driven through
//! Debian's ipmitool.
//!
//! Needs the venv boot-assets/setup.sh makes (`/opt/rackboot-bmc`; `RACKBOOT_BMC_VENV` names
//! another) and ipmitool. Each emulator is a child of the test, ended by its PID when the test
//! ends, also when it fails.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use rackboot::bmc::{self, BmcError, BmcRecord, Driver, Power, PowerAction, PowerState};

/// How long an emulator may take to listen.
const READY_WITHIN: Duration = Duration::from_secs(30);
/// The fake Redfish driver applies a power change up to 11 s after it is asked.
const SETTLES_WITHIN: Duration = Duration::from_secs(20);

fn venv() -> PathBuf {
    let dir = std::env::var_os("RACKBOOT_BMC_VENV")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/opt/rackboot-bmc"));
    assert!(
        dir.join("bin/sushy-emulator").is_file() && dir.join("bin/fakebmc").is_file(),
        "{} lacks sushy-tools or pyghmi: `sudo boot-assets/setup.sh --packages-only` installs \
         them (or set RACKBOOT_BMC_VENV to a venv that has them)",
        dir.display()
    );
    dir
}

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

/// A sushy-tools Redfish emulator with one fake system, `node-1`, off. With `forgets`, the
/// emulator's fake driver drops every boot override it is sent and still answers 204: the
/// known failure of real BMCs this guards against.
fn redfish(dir: &Path, forgets: bool) -> (Emulator, String) {
    let port = free_port();
    let config = dir.join("sushy.conf");
    std::fs::write(
        &config,
        format!(
            "SUSHY_EMULATOR_LISTEN_IP = '127.0.0.1'\n\
             SUSHY_EMULATOR_LISTEN_PORT = {port}\n\
             SUSHY_EMULATOR_STATE_DIR = '{}'\n\
             SUSHY_EMULATOR_FAKE_DRIVER = True\n\
             SUSHY_EMULATOR_FAKE_SYSTEMS = [{{'uuid': '1ad6e3c0-1b8b-4b4c-9b1e-000000000001', \
             'name': 'node-1', 'power_state': 'Off', 'nics': [{{'mac': '52:54:00:00:00:01'}}]}}]\n",
            dir.join("state").display()
        ),
    )
    .unwrap();
    let python = venv().join("bin/python");
    let forget = if forgets {
        "from sushy_tools.emulator.resources.systems import fakedriver\n\
         fakedriver.FakeDriver.set_boot_device = lambda self, identity, source: None\n"
    } else {
        ""
    };
    let script = format!(
        "import sys\n{forget}from sushy_tools.emulator import main\n\
         sys.argv = ['sushy-emulator', '--config', {config:?}, '--fake']\nsys.exit(main.main())\n",
        config = config.display().to_string()
    );
    let emulator = spawn(
        Command::new(python).args(["-c", &script]),
        &dir.join("sushy.log"),
    );
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
        password_file: None,
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
    let p = bmc::power_of(&record(Driver::Redfish, &url), None, Default::default()).unwrap();
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
    let p = bmc::power_of(&record(Driver::Redfish, &url), None, Default::default()).unwrap();
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
    let password = dir.path().join("ipmi-password");
    std::fs::write(&password, "password\n").unwrap();
    let rec = BmcRecord {
        username: Some("admin".into()),
        password_file: Some(password.clone()),
        ..record(Driver::Ipmi, &format!("127.0.0.1:{port}"))
    };
    let p = bmc::power_of(&rec, None, Default::default()).unwrap();
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
    std::fs::write(&password, "not-the-password\n").unwrap();
    let e = bmc::act(p.as_ref(), PowerAction::Status)
        .await
        .unwrap_err()
        .to_string();
    assert!(!e.contains("not-the-password"), "{e}");
}
