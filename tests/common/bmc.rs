//! BMC emulators as the power tests use them: sushy-tools' Redfish emulator with its `fake`
//! driver (systems in memory, whose power changes take effect 1 to 11 s after they are asked, on
//! the next read of the system, as a real machine's do), from the venv `boot-assets/setup.sh`
//! makes, and the one readiness wait for an emulator started inside a lab.
//!
//! Needs `/opt/rackboot-bmc` (`RACKBOOT_BMC_VENV` names another venv). Every wait is bounded;
//! an emulator started with [`lab_emulator`] is ended by PID when its lab drops.

#![allow(dead_code)] // each test binary uses a different part of this module

use std::path::{Path, PathBuf};
use std::time::Duration;

use super::lab::{Lab, poll_until};

/// How long an emulator may take to listen.
pub const READY_WITHIN: Duration = Duration::from_secs(30);

/// The venv with sushy-tools and pyghmi.
pub fn venv() -> PathBuf {
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

/// The venv's python, for scripts that need what it has (sushy-tools, requests).
pub fn python() -> String {
    venv().join("bin/python").display().to_string()
}

/// One system of the fake Redfish driver, powered off.
pub struct FakeSystem<'a> {
    /// Its id under `/redfish/v1/Systems` (what a node's `bmc.system` names).
    pub uuid: &'a str,
    pub name: &'a str,
    pub mac: &'a str,
}

/// The command line of a sushy-tools Redfish emulator on 127.0.0.1:`port` with the fake
/// `systems`, its files in `dir`. With `notify`, every change of a system (a boot device set, a
/// power change asked or applied) is PUT whole, as JSON, to that URL (the fake driver's
/// `external_notifier`). With `forgets`, the fake driver drops every boot override it is sent
/// and still answers 204: the known failure of real BMCs rackboot guards against.
pub fn sushy_command(
    dir: &Path,
    port: u16,
    systems: &[FakeSystem],
    notify: Option<&str>,
    forgets: bool,
) -> (String, Vec<String>) {
    std::fs::create_dir_all(dir).unwrap();
    let notifier = if notify.is_some() { "True" } else { "False" };
    let systems: Vec<String> = systems
        .iter()
        .map(|s| {
            format!(
                "{{'uuid': '{}', 'name': '{}', 'power_state': 'Off', 'external_notifier': \
                 {notifier}, 'nics': [{{'mac': '{}'}}]}}",
                s.uuid, s.name, s.mac
            )
        })
        .collect();
    let notify = notify
        .map(|url| format!("EXTERNAL_NOTIFICATION_URL = '{url}'\n"))
        .unwrap_or_default();
    let config = dir.join("sushy.conf");
    std::fs::write(
        &config,
        format!(
            "SUSHY_EMULATOR_LISTEN_IP = '127.0.0.1'\n\
             SUSHY_EMULATOR_LISTEN_PORT = {port}\n\
             SUSHY_EMULATOR_STATE_DIR = '{}'\n\
             SUSHY_EMULATOR_FAKE_DRIVER = True\n\
             SUSHY_EMULATOR_FAKE_SYSTEMS = [{}]\n{notify}",
            dir.join("state").display(),
            systems.join(", ")
        ),
    )
    .unwrap();
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
    (python(), vec!["-c".to_string(), script])
}

/// Starts `cmd args` in `lab` (its output in `<name>.log` of the lab directory) and waits until
/// `probe` (run in the lab) succeeds; its PID. Fails at once, with the log, if it exits first.
pub fn lab_emulator(lab: &Lab, name: &str, cmd: &str, args: &[String], probe: &[&str]) -> u32 {
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let log = format!("{name}.log");
    let pid = lab.spawn(cmd, &args, &log);
    let ready = poll_until(READY_WITHIN, || {
        assert!(
            lab.is_running(pid),
            "{name} exited:\n{}",
            std::fs::read_to_string(lab.dir().join(&log)).unwrap_or_default()
        );
        lab.run(probe[0], &probe[1..], Duration::from_secs(15))
            .status
            .success()
            .then_some(())
    });
    assert!(
        ready.is_some(),
        "{name} not ready within {READY_WITHIN:?}:\n{}",
        std::fs::read_to_string(lab.dir().join(&log)).unwrap_or_default()
    );
    pid
}
