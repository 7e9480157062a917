//! What every VM test does around its VM: start rackboot in the lab, watch the VM's node
//! record until a condition holds (bounded, failing fast when rackboot or qemu dies), and say
//! everything a failed boot needs to be diagnosed.

#![allow(dead_code)] // each test binary uses a different part of this module

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde_json::Value;

use super::api::{node, timeline_text};
use super::lab::{self, Lab, Vm};

/// The running server and its log.
pub struct Rackboot {
    pub pid: u32,
    pub log: PathBuf,
}

/// Starts `rackboot serve --config <config>` in `lab` and waits (30 s at most) until it serves.
pub fn start_rackboot(lab: &Lab, config: &Path) -> Rackboot {
    let log = lab.dir().join("rackboot.log");
    let pid = lab.spawn(
        env!("CARGO_BIN_EXE_rackboot"),
        &["serve", "--config", config.to_str().expect("utf-8 path")],
        &log,
    );
    if let Err(e) = lab::wait_for_file(&log, "rackboot serving", Duration::from_secs(30)) {
        panic!("rackboot did not start: {e}\n{}", lab::read_text(&log));
    }
    assert!(
        lab.is_running(pid),
        "rackboot exited:\n{}",
        lab::read_text(&log)
    );
    Rackboot { pid, log }
}

/// Everything a failed boot needs to be diagnosed: timeline, server log, serial console.
pub fn diagnosis(rb: &Rackboot, vm: &Vm, node: Option<&Value>) -> String {
    format!(
        "timeline:\n{}\n--- rackboot log (tail) ---\n{}\n--- {} serial (tail) ---\n{}",
        node.map(timeline_text)
            .unwrap_or_else(|| "(no node record)".into()),
        lab::tail(&lab::read_text(&rb.log), 30),
        vm.name(),
        lab::tail(&vm.serial(), 40),
    )
}

/// Polls `vm`'s node record (MAC `mac`) until `done` returns `Ok(Some(_))`, for `timeout` at
/// most, printing each new state. Panics with [`diagnosis`] when rackboot or qemu exits, when
/// `done` returns `Err(reason)`, or when the time runs out (`what` names the wait).
pub fn watch_node<T>(
    lab: &Lab,
    rb: &Rackboot,
    vm: &Vm,
    mac: &str,
    timeout: Duration,
    what: &str,
    mut done: impl FnMut(&Value) -> Result<Option<T>, String>,
) -> T {
    let started = Instant::now();
    let mut last: Option<Value> = None;
    let mut state = String::new();
    let found = lab::poll_until(timeout, || {
        assert!(
            lab.is_running(rb.pid),
            "rackboot died\n{}",
            diagnosis(rb, vm, last.as_ref())
        );
        if let Some(status) = vm.exit_status() {
            panic!(
                "qemu exited ({status})\n{}",
                diagnosis(rb, vm, last.as_ref())
            );
        }
        let n = node(lab, mac)?;
        let s = n["state"].as_str().unwrap_or_default().to_string();
        if s != state {
            eprintln!(
                "{}: {s} after {:.1} s",
                vm.name(),
                started.elapsed().as_secs_f64()
            );
            state = s;
        }
        let verdict = done(&n);
        last = Some(n);
        match verdict {
            Ok(found) => found,
            Err(why) => panic!("{why}\n{}", diagnosis(rb, vm, last.as_ref())),
        }
    });
    found.unwrap_or_else(|| {
        panic!(
            "{what}: not within {timeout:?}\n{}",
            diagnosis(rb, vm, last.as_ref())
        )
    })
}

/// For [`watch_node`]: a node that is `failed` ends the wait with its reason.
pub fn not_failed(n: &Value) -> Result<(), String> {
    if n["state"] == "failed" {
        return Err(format!("node failed: {}", n["state_reason"]));
    }
    Ok(())
}
