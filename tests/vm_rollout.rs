//! A rollout over real machines: four diskless qemu VMs (two SeaBIOS, two OVMF) whose power is
//! switched through a real Redfish BMC, sushy-tools' emulator, by `rackboot rollout`. Each VM is
//! reinstalled in turn, one at a time, the canary first: drain hook, installer bootenv, a
//! one-time PXE boot and power-on through Redfish, the firmware's network boot of the installer
//! (the operational image with `rackboot.installed=1`, which calls back and reboots), undrain
//! hook.
//!
//! The emulator's fake driver keeps each system's power in memory; a change it is asked for
//! takes effect 1 to 11 s later, as a real machine's does, and is PUT whole to an external
//! notification URL. There a small "machine room" (a Python script this test writes, run with
//! the BMC venv's python) holds the VMs: each VM starts paused before its first instruction
//! (`-S`: powered off), and a power change the BMC asked is applied, at its time, through the
//! VM's QMP socket (on or restart: `system_reset` + `cont`; off: `stop`); the room then reads the
//! system from the emulator, which commits the change there. So a VM runs only if rackboot
//! powered it on through its BMC, and rackboot reads the power the VM has.
//!
//! Once a reinstalled VM's next boot was handed `local` (not the installer again), the test
//! switches it off through QMP, sparing the CPU for the next install.
//!
//! Needs root, the packages and assets of `boot-assets/setup.sh` (qemu, OVMF, the operational
//! image, the BMC venv). Every wait is bounded; rackboot, the emulator, the machine room and the
//! VMs are ended by PID when the test ends, also when it fails, and the lab's namespace is
//! removed.

mod common;

use std::time::{Duration, Instant};

use common::api::timeline_text;
use common::bmc::{FakeSystem, lab_emulator, python, sushy_command};
use common::lab::{Firmware, Vm, poll_until, read_text, tail};
use common::rollout::{in_order, phases, start, steps, watch};
use common::server::Server;
use common::vm_watch::{appliance, boot_network, installer_bootenv};
use serde_json::Value;

/// The builders, in MAC order (the rollout's order; the first is its canary): hostname (also
/// the VM's and the BMC system's name), MAC, firmware.
const BUILDERS: [(&str, &str, Firmware); 4] = [
    ("b1", "52:54:00:d0:00:01", Firmware::X86Bios),
    ("b2", "52:54:00:d0:00:02", Firmware::X86Uefi),
    ("b3", "52:54:00:d0:00:03", Firmware::X86Bios),
    ("b4", "52:54:00:d0:00:04", Firmware::X86Uefi),
];

/// The Redfish emulator's port, in the lab namespace (where rackboot reaches it on loopback).
const BMC_PORT: u16 = 8001;
/// The machine room's port, in the lab namespace.
const ROOM_PORT: u16 = 8002;

/// Four installs in turn under TCG, each ~30–60 s plus the BMC's 1–11 s per power change.
const ROLLOUT_WITHIN: Duration = Duration::from_secs(480);
/// A reinstalled VM's reboot, from its callback to its `local` boot script.
const LOCAL_BOOT_WITHIN: Duration = Duration::from_secs(120);

/// The machine room: `room.py PORT BMC_URL QMP_DIR`. Every line it prints is an action or a
/// notification, with the time.
const ROOM_PY: &str = r#"
import json, socket, sys, threading, time, urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

port, bmc, qmp_dir = int(sys.argv[1]), sys.argv[2], sys.argv[3]
lock = threading.Lock()
seen = set()
vm_locks = {}


def log(msg):
    with lock:
        print('%.3f %s' % (time.time(), msg), flush=True)


def qmp(name, commands):
    """Runs QMP commands on VM `name`, one session; the last one's return value."""
    with lock:
        vm_lock = vm_locks.setdefault(name, threading.Lock())
    with vm_lock, socket.socket(socket.AF_UNIX) as s:
        s.settimeout(10)
        s.connect('%s/%s.qmp' % (qmp_dir, name))
        f = s.makefile('rwb')
        json.loads(f.readline())  # the greeting
        result = None
        for c in ['qmp_capabilities'] + commands:
            f.write(json.dumps({'execute': c}).encode() + b'\n')
            f.flush()
            while True:  # events (RESET, RESUME...) may come before the answer
                line = f.readline()
                if not line:
                    raise RuntimeError('%s: QMP closed' % c)
                r = json.loads(line)
                if 'error' in r:
                    raise RuntimeError('%s: %s' % (c, r['error']))
                if 'return' in r:
                    result = r['return']
                    break
        return result


def commands(state):
    if state == 'On' or 'Restart' in state:
        return ['system_reset', 'cont']
    if state == 'Off':
        return ['stop']
    raise RuntimeError('no such power state: %s' % state)


def apply(system):
    """Applies the power change the BMC asked for `system` when it is due, then reads the
    system from the BMC, which commits the change there."""
    name, state = system['name'], system['pending_power']['power_state']
    due = system['pending_power']['apply_time'] - time.time()
    log('%s: %s asked (boot device %s), due in %.1f s'
        % (name, state, system.get('boot_device'), due))
    if due > 0:
        time.sleep(due + 0.05)
    try:
        cmds = commands(state)
        qmp(name, cmds)
        status = qmp(name, ['query-status'])['status']
        log('%s: %s applied: %s; the VM is %s' % (name, state, ' + '.join(cmds), status))
    except Exception as e:
        log('%s: %s FAILED: %s' % (name, state, e))
        return
    try:
        url = '%s/redfish/v1/Systems/%s' % (bmc, system['uuid'])
        with urllib.request.urlopen(url, timeout=10) as r:
            log('%s: the BMC reads PowerState %s' % (name, json.load(r)['PowerState']))
    except Exception as e:
        log('%s: reading the BMC FAILED: %s' % (name, e))


class Handler(BaseHTTPRequestHandler):
    def do_PUT(self):
        """A notification: the system, whole, after a change."""
        system = json.loads(self.rfile.read(int(self.headers['Content-Length'])))
        self.send_response(204)
        self.end_headers()
        pending = system.get('pending_power')
        log('%s: notified: power %s, pending %s, boot device %s'
            % (system['name'], system['power_state'], pending, system.get('boot_device')))
        if pending:
            key = (system['uuid'], pending['power_state'], pending['apply_time'])
            with lock:
                if key in seen:
                    return
                seen.add(key)
            threading.Thread(target=apply, args=(system,), daemon=True).start()

    def do_POST(self):
        """`/`: ready. `/qmp/<vm>/<command>`: that command's return value."""
        parts = self.path.strip('/').split('/')
        try:
            if parts[0] == 'qmp':
                body, code = json.dumps(qmp(parts[1], [parts[2]])), 200
                log('%s: %s by the test' % (parts[1], parts[2]))
            else:
                body, code = '"ready"', 200
        except Exception as e:
            body, code = json.dumps(str(e)), 502
        self.send_response(code)
        self.send_header('Content-Type', 'application/json')
        self.end_headers()
        self.wfile.write(body.encode())

    do_GET = do_POST

    def log_message(self, *args):
        pass


ThreadingHTTPServer(('127.0.0.1', port), Handler).serve_forever()
"#;

/// The machines and what powers them: the VMs, the machine room and the BMC emulator (by PID),
/// and what a failure needs to be diagnosed.
struct Room<'a> {
    rb: &'a Server,
    vms: Vec<Vm<'a>>,
    room: u32,
    bmc: u32,
}

impl Room<'_> {
    /// QMP `command` on VM `name` through the machine room: its return value.
    fn qmp(&self, name: &str, command: &str) -> Result<Value, String> {
        let url = format!("{}/qmp/{name}/{command}", on_loopback(ROOM_PORT));
        let out = self.rb.lab.run(
            "curl",
            &["-s", "-m", "15", "-X", "POST", &url],
            Duration::from_secs(20),
        );
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        let v: Value = serde_json::from_str(&text).map_err(|e| format!("{e}: {text:?}"))?;
        match v {
            Value::String(e) => Err(e),
            v => Ok(v),
        }
    }

    /// Fails at once when a process the rollout needs is gone.
    fn assert_alive(&self) {
        self.rb.assert_running();
        for (pid, what) in [
            (self.room, "the machine room"),
            (self.bmc, "the BMC emulator"),
        ] {
            assert!(
                self.rb.lab.is_running(pid),
                "{what} exited\n{}",
                self.diagnosis()
            );
        }
        for vm in &self.vms {
            if let Some(status) = vm.exit_status() {
                panic!(
                    "qemu of {} exited ({status})\n{}",
                    vm.name(),
                    self.diagnosis()
                );
            }
        }
    }

    fn log(&self, name: &str) -> String {
        read_text(&self.rb.lab.dir().join(format!("{name}.log")))
    }

    fn diagnosis(&self) -> String {
        let mut text = format!(
            "--- machine room ---\n{}\n--- BMC emulator (tail) ---\n{}\n--- rackboot (tail) ---\n{}\n",
            self.log("room"),
            tail(&self.log("bmc"), 30),
            tail(&self.rb.log_text(), 30)
        );
        for vm in &self.vms {
            let timeline = self
                .rb
                .try_node(vm.mac())
                .map(|n| timeline_text(&n))
                .unwrap_or_default();
            text.push_str(&format!(
                "--- {} ({:?}, {}) timeline ---\n{timeline}\n--- {} serial (tail) ---\n{}\n",
                vm.name(),
                vm.firmware(),
                vm.mac(),
                vm.name(),
                tail(&vm.serial(), 15)
            ));
        }
        text
    }
}

/// `http://127.0.0.1:<port>`: a server in the lab namespace, as rackboot and the others there
/// reach it.
fn on_loopback(port: u16) -> String {
    format!("http://127.0.0.1:{port}")
}

/// The index of the first event of `node` of `kind` whose detail contains `needle`, at or
/// after `from`.
fn event_at(node: &Value, from: usize, kind: &str, needle: &str) -> Option<usize> {
    node["events"].as_array()?[from..]
        .iter()
        .position(|e| e["kind"] == kind && e["detail"].as_str().unwrap_or("").contains(needle))
        .map(|i| from + i)
}

/// The time (`at`, RFC 3339 UTC with milliseconds: fixed width, so it orders as text) of the
/// first event of `node` of `kind` whose detail contains `needle`.
fn time_of(node: &Value, kind: &str, needle: &str) -> String {
    let i = event_at(node, 0, kind, needle)
        .unwrap_or_else(|| panic!("no {kind} event with {needle:?}:\n{}", timeline_text(node)));
    node["events"][i]["at"].as_str().unwrap().to_string()
}

/// Whether the node's VM was handed `local` on a boot after its installer called back.
fn booted_local(node: &Value) -> bool {
    event_at(node, 0, "report.installed", "")
        .and_then(|i| event_at(node, i, "http.script", "bootenv local"))
        .is_some()
}

#[test]
fn a_rollout_reinstalls_four_vms_through_their_redfish_bmcs_one_at_a_time() {
    let setup = appliance("vm-rollout").file(
        "bootenvs/installer.toml",
        installer_bootenv("", &["bios", "x86_64_efi"]),
    );
    let hooks = setup.path("hooks.log");
    // No discovery bootenv here: a machine nobody imported boots its disk.
    let rb = setup
        .table("boot", "default_bootenv = \"local\"")
        .table(
            "rollout.hooks",
            &format!(
                "drain = 'echo \"drain $RACKBOOT_HOSTNAME\" >> {0}'\n\
                 undrain = 'echo \"undrain $RACKBOOT_HOSTNAME\" >> {0}'\n",
                hooks.display()
            ),
        )
        .prepare();
    boot_network(&rb.lab);
    rb.serve();
    let lab = &rb.lab;
    let began = Instant::now();

    // The machines, powered off: paused before their first instruction, a QMP socket each.
    let vms: Vec<Vm> = BUILDERS
        .iter()
        .map(|(name, mac, firmware)| {
            let qmp = lab.dir().join(format!("{name}.qmp"));
            lab.vm(name, *firmware)
                .mac(mac)
                .memory_mib(512)
                .allow_reboot()
                .arg("-S")
                .arg("-qmp")
                .arg(&format!("unix:{},server=on,wait=off", qmp.display()))
                .start()
        })
        .collect();
    let (bmc_url, room_url) = (on_loopback(BMC_PORT), on_loopback(ROOM_PORT));
    // The machine room first: the BMC notifies it of every change.
    let script = lab.dir().join("room.py");
    std::fs::write(&script, ROOM_PY).unwrap();
    let args: Vec<String> = vec![
        script.display().to_string(),
        ROOM_PORT.to_string(),
        bmc_url.clone(),
        lab.dir().display().to_string(),
    ];
    let room = lab_emulator(
        lab,
        "room",
        &python(),
        &args,
        &["curl", "-sf", "-m", "3", &room_url],
    );
    // One BMC for the four, a system each, named like its VM; its UUID is the VM's SMBIOS UUID,
    // as a real BMC's is.
    let systems: Vec<FakeSystem> = vms
        .iter()
        .map(|vm| FakeSystem {
            uuid: vm.uuid(),
            name: vm.name(),
            mac: vm.mac(),
        })
        .collect();
    let (cmd, args) = sushy_command(
        &lab.dir().join("bmc"),
        BMC_PORT,
        &systems,
        Some(&format!("{room_url}/notify")),
        false,
    );
    let url = format!("{bmc_url}/redfish/v1/Systems");
    let bmc = lab_emulator(lab, "bmc", &cmd, &args, &["curl", "-sf", "-m", "3", &url]);
    let room = Room {
        rb: &rb,
        vms,
        room,
        bmc,
    };
    // Off means off: no VM has run an instruction yet (its QMP socket is up once this answers).
    for vm in &room.vms {
        let status = poll_until(Duration::from_secs(30), || {
            room.qmp(vm.name(), "query-status").ok()
        })
        .unwrap_or_else(|| panic!("no QMP answer from {}\n{}", vm.name(), room.diagnosis()));
        assert_eq!(status["status"], "prelaunch", "{}: {status}", vm.name());
    }

    // The builders, each with its BMC system, on their disks (`local`).
    let nodes: Vec<Value> = room
        .vms
        .iter()
        .map(|vm| {
            serde_json::json!({"mac": vm.mac(), "hostname": vm.name(), "labels": {"role": "builder"},
                "bootenv": "local", "bmc": {"driver": "redfish", "address": bmc_url, "system": vm.uuid()}})
        })
        .collect();
    let file = rb.path("nodes.json");
    std::fs::write(&file, Value::Array(nodes).to_string()).unwrap();
    let (code, out) = rb.cli(&["node", "import", file.to_str().unwrap()]);
    assert_eq!(code, Some(0), "{out}");

    let id = start(
        &rb,
        &[
            "--selector",
            "role=builder",
            "--bootenv",
            "installer",
            "--canary",
            "1",
            "--max-unavailable",
            "1",
            "--drain",
            "drain",
            "--undrain",
            "undrain",
            "--deadline",
            "10m",
        ],
    );
    let started = Instant::now();
    // Watched until done; a reinstalled VM is switched off once its next boot went local.
    // Returns the names of the VMs switched off so far.
    let mut off: Vec<&str> = Vec::new();
    let mut switch_off_reinstalled = |r: &Value| {
        let p = phases(r);
        for vm in &room.vms {
            if p[vm.mac()] != "done" || off.contains(&vm.name()) {
                continue;
            }
            if booted_local(&rb.node(vm.mac())) {
                room.qmp(vm.name(), "stop")
                    .unwrap_or_else(|e| panic!("stop {}: {e}\n{}", vm.name(), room.diagnosis()));
                eprintln!(
                    "vm-rollout: {} reinstalled and booted local after {:.1} s; switched off",
                    vm.name(),
                    started.elapsed().as_secs_f64()
                );
                off.push(vm.name());
            }
        }
        off.clone()
    };
    let (r, most) = watch(
        &rb,
        &id,
        ROLLOUT_WITHIN,
        || room.diagnosis(),
        |r| {
            room.assert_alive();
            assert!(
                matches!(r["state"].as_str(), Some("running" | "done")),
                "the rollout stopped: {r:#}\n{}",
                room.diagnosis()
            );
            switch_off_reinstalled(r);
            r["state"] == "done"
        },
    );
    eprintln!(
        "vm-rollout: rollout done after {:.1} s ({:.1} s with the lab)",
        started.elapsed().as_secs_f64(),
        began.elapsed().as_secs_f64()
    );
    // The last VM's reboot into `local` comes after the rollout is done.
    let mut switched = Vec::new();
    let all_local = poll_until(LOCAL_BOOT_WITHIN, || {
        room.assert_alive();
        switched = switch_off_reinstalled(&r);
        (switched.len() == BUILDERS.len()).then_some(())
    });
    assert!(
        all_local.is_some(),
        "not every reinstalled VM booted local within {LOCAL_BOOT_WITHIN:?} (off: {switched:?})\n{}",
        room.diagnosis()
    );

    // Never more than one builder out of service, as seen while it ran...
    assert_eq!(most, 1, "{r:#}");
    assert!(phases(&r).values().all(|p| p == "done"), "{r:#}");
    assert_eq!(r["nodes"][0]["mac"], BUILDERS[0].1, "{r:#}");
    assert_eq!(r["nodes"][0]["canary"], true, "{r:#}");
    // ...and by the timelines: no two builders' [drain, done] overlap, and the canary's comes
    // first.
    let mut intervals: Vec<(String, String, String)> = BUILDERS
        .iter()
        .map(|(name, mac, _)| {
            let n = rb.node(mac);
            (
                time_of(&n, "rollout", &format!("rollout {id}: drain:")),
                time_of(&n, "rollout", &format!("rollout {id}: done")),
                name.to_string(),
            )
        })
        .collect();
    intervals.sort();
    assert_eq!(
        intervals[0].2, BUILDERS[0].0,
        "the canary first: {intervals:#?}"
    );
    for pair in intervals.windows(2) {
        let ((_, a_done, a), (b_drain, _, b)) = (&pair[0], &pair[1]);
        assert!(
            a_done <= b_drain,
            "{b} drained at {b_drain}, before {a} was done at {a_done}: {intervals:#?}"
        );
    }
    eprintln!(
        "vm-rollout: the canary's steps:\n  {}",
        steps(&rb, BUILDERS[0].1).join("\n  ")
    );

    // Each builder's story, in this order (other events may sit in between).
    for (name, mac, firmware) in BUILDERS {
        let said = steps(&rb, mac);
        in_order(
            &said,
            &[
                &format!("rollout: rollout {id}: drain: hook `drain`: exited 0"),
                &format!("rollout: rollout {id}: bootenv: installer once, then local"),
                &format!("power: pxe-once by rollout {id} via redfish {bmc_url}"),
                // Its firmware's network boot took the one-time installer...
                "bootenv.changed: installer once, then local -> local: installer was booted once",
                "report.installed: bootenv installer",
                // ...whose callback put it on its disk for good.
                "bootenv.changed: local -> local: installer finished installing (after_install = local)",
                &format!("rollout: rollout {id}: installed"),
                &format!("rollout: rollout {id}: undrain: hook `undrain`: exited 0"),
                &format!("rollout: rollout {id}: done"),
            ],
        );
        // Through its own BMC system, which kept the one-time PXE boot and powered it on.
        let power: Vec<&String> = said.iter().filter(|s| s.starts_with("power:")).collect();
        assert!(
            power.len() == 1
                && power[0].contains("next boot from the network (BootSourceOverrideTarget Pxe")
                && power[0].contains("powered on (was off)"),
            "{name}: {power:#?}"
        );
        let n = rb.node(mac);
        assert_eq!(
            (n["state"].as_str(), n["bootenv"].as_str()),
            (Some("installed"), Some("local")),
            "{name}: {n}"
        );
        // Its firmware fetched the installer's script once, for its own arch: no loop back
        // into the installer after the callback.
        let arch = match firmware {
            Firmware::X86Bios => "arch bios",
            _ => "arch x86_64_efi",
        };
        let installer_scripts: Vec<&str> = n["events"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|e| e["kind"] == "http.script")
            .filter_map(|e| e["detail"].as_str())
            .filter(|d| d.contains("bootenv installer"))
            .collect();
        assert!(
            installer_scripts.len() == 1 && installer_scripts[0].contains(arch),
            "{name}:\n{}",
            timeline_text(&n)
        );
        // The machine room powered it on once, when the BMC said so.
        let room_log = room.log("room");
        assert_eq!(
            room_log
                .matches(&format!("{name}: On applied: system_reset + cont"))
                .count(),
            1,
            "{room_log}"
        );
    }

    // The hooks ran in pairs, one builder at a time.
    let said = std::fs::read_to_string(&hooks).unwrap();
    let want: Vec<String> = BUILDERS
        .iter()
        .flat_map(|(name, _, _)| [format!("drain {name}"), format!("undrain {name}")])
        .collect();
    assert_eq!(said.lines().collect::<Vec<_>>(), want, "{said}");
    eprintln!("vm-rollout: {:.1} s in all", began.elapsed().as_secs_f64());
    rb.assert_running();
}
