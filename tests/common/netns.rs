//! Machines beside rackboot: a network namespace of a test's own, wired to the lab's bridge (or
//! to a bridge in another namespace, as behind a relay) by veth pairs, and the DHCP clients that
//! run in it.
//!
//! Owns: the namespace `rb-<role>-<lab name>-<pid>` (so the lab's sweep removes it after a killed
//! test binary), the processes started in it (ended by PID on drop, with anything they left
//! behind), and udhcpc's record of what it was told. Borrows its [`Lab`], so it goes first.
//! Every command here is bounded.

#![allow(dead_code)] // each test binary uses a different part of this module

use std::collections::BTreeMap;
use std::fs::{self, File};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use super::lab::{self, BRIDGE, Lab, read_text};

/// One short client command (curl, dig, udhcpc's few tries).
const CMD: Duration = Duration::from_secs(40);

/// What udhcpc told its script on one event: `ip`, `mask`, `router`, `boot_file`, ….
pub type Lease = BTreeMap<String, String>;

/// A namespace on the lab's link; see the module docs.
pub struct Netns<'a> {
    name: String,
    dir: PathBuf,
    children: Mutex<Vec<Child>>,
    runs: AtomicU32,
    lab: &'a Lab,
}

impl<'a> Netns<'a> {
    /// An empty namespace (only `lo`, up) for `role` (a short word: `cl`, `rl`, `st`…); its files
    /// go to `<lab dir>/<role>/`.
    pub fn new(lab: &'a Lab, role: &str) -> Netns<'a> {
        let name = lab.ns().replacen("rb-", &format!("rb-{role}-"), 1);
        let dir = lab.dir().join(role);
        fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
        lab::ip(&["netns", "add", &name]);
        // From here on Drop deletes the namespace, even if a later step panics.
        let ns = Netns {
            name,
            dir,
            children: Mutex::new(Vec::new()),
            runs: AtomicU32::new(0),
            lab,
        };
        ns.ip(&["link", "set", "lo", "up"]);
        ns
    }

    /// Client machines `c0`, `c1`, … on the lab's bridge, one per MAC, in namespace `cl`.
    pub fn clients(lab: &'a Lab, macs: &[&str]) -> Netns<'a> {
        let ns = Netns::new(lab, "cl");
        for (i, mac) in macs.iter().enumerate() {
            ns.link(&format!("c{i}"), Some(mac));
        }
        ns
    }

    /// The namespace name, for `ip -n`.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// A file in this namespace's directory.
    pub fn file(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    /// `ip -n <ns> <args>`, panicking with its output on failure.
    pub fn ip(&self, args: &[&str]) {
        let mut all = vec!["-n", &self.name];
        all.extend_from_slice(args);
        lab::ip(&all);
    }

    /// Interface `iface` here (with `mac`, if given), up, whose veth peer `<iface>br` is
    /// enslaved to the lab's bridge.
    pub fn link(&self, iface: &str, mac: Option<&str>) {
        self.link_on(iface, mac, self.lab.ns(), BRIDGE);
    }

    /// Like [`Netns::link`], with the peer on `bridge` in namespace `host_ns`.
    pub fn link_on(&self, iface: &str, mac: Option<&str>, host_ns: &str, bridge: &str) {
        let port = format!("{iface}br");
        lab::ip(&[
            "-n", host_ns, "link", "add", &port, "type", "veth", "peer", "name", iface, "netns",
            &self.name,
        ]);
        lab::ip(&["-n", host_ns, "link", "set", &port, "master", bridge, "up"]);
        if let Some(mac) = mac {
            self.ip(&["link", "set", iface, "address", mac]);
        }
        self.ip(&["link", "set", iface, "up"]);
    }

    /// Sets the MTU of `iface` and of its peer on the lab's bridge.
    pub fn mtu(&self, iface: &str, mtu: u32) {
        let mtu = mtu.to_string();
        self.lab
            .ip(&["link", "set", &format!("{iface}br"), "mtu", &mtu]);
        self.ip(&["link", "set", iface, "mtu", &mtu]);
    }

    /// Adds address `cidr` to `iface`.
    pub fn addr(&self, iface: &str, cidr: &str) {
        self.ip(&["addr", "add", cidr, "dev", iface]);
    }

    /// Runs a short command in the namespace, killed if it outlives `timeout`.
    pub fn run(&self, cmd: &str, args: &[&str], timeout: Duration) -> Output {
        let mut all = vec!["netns", "exec", &self.name, cmd];
        all.extend_from_slice(args);
        lab::run_bounded("ip", &all, timeout)
    }

    /// Starts a long-running process, output to `log` in this namespace's directory; ended by
    /// PID on drop or by [`Netns::stop`].
    pub fn spawn(&self, cmd: &str, args: &[&str], log: &str) -> u32 {
        let out = File::create(self.file(log)).expect("create log");
        let err = out.try_clone().expect("dup log");
        // `ip netns exec` execs the command, so the PID is the command's own.
        let child = Command::new("ip")
            .args(["netns", "exec", &self.name, cmd])
            .args(args)
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {cmd} in {}: {e}", self.name));
        let pid = child.id();
        self.children().push(child);
        pid
    }

    /// SIGKILL to a process started with [`Netns::spawn`]; reaps it.
    pub fn stop(&self, pid: u32) {
        let mut children = self.children();
        if let Some(i) = children.iter().position(|c| c.id() == pid) {
            let mut child = children.remove(i);
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    pub fn is_running(&self, pid: u32) -> bool {
        self.children()
            .iter_mut()
            .find(|c| c.id() == pid)
            .is_some_and(|c| matches!(c.try_wait(), Ok(None)))
    }

    /// Waits up to `timeout` for a process started with [`Netns::spawn`] to exit by itself;
    /// its exit status, or `None` if it still runs (or is not ours).
    pub fn wait_exit(&self, pid: u32, timeout: Duration) -> Option<ExitStatus> {
        lab::poll_until(timeout, || {
            self.children()
                .iter_mut()
                .find(|c| c.id() == pid)
                .and_then(|c| c.try_wait().ok().flatten())
        })
    }

    /// Sends `signal` (e.g. `USR1`) to a process started with [`Netns::spawn`].
    pub fn signal(&self, pid: u32, signal: &str) {
        assert!(self.is_running(pid), "pid {pid} is not running");
        let out = lab::run_bounded("kill", &[&format!("-{signal}"), &pid.to_string()], CMD);
        assert!(
            out.status.success(),
            "kill -{signal} {pid}: {}",
            lab::output_text(&out)
        );
    }

    fn children(&self) -> std::sync::MutexGuard<'_, Vec<Child>> {
        self.children.lock().unwrap_or_else(PoisonError::into_inner)
    }

    // -----------------------------------------------------------------------------------------
    // udhcpc

    /// Runs `udhcpc -n -q` once on `iface` (3 tries, 2 s apart; `extra` may override both, the
    /// last `-t`/`-T` counts) and returns what it told its script on `bound`, or its output if
    /// it got no lease.
    pub fn udhcpc(&self, iface: &str, extra: &[&str]) -> Result<Lease, String> {
        self.udhcpc_run(iface, extra, false)
    }

    /// [`Netns::udhcpc`], putting the leased address on `iface`: for a machine that goes on to
    /// talk from it.
    pub fn udhcpc_configure(&self, iface: &str, extra: &[&str]) -> Result<Lease, String> {
        self.udhcpc_run(iface, extra, true)
    }

    fn udhcpc_run(&self, iface: &str, extra: &[&str], configure: bool) -> Result<Lease, String> {
        let n = self.runs.fetch_add(1, Ordering::Relaxed);
        let (script, record) = self.udhcpc_script(&format!("udhcpc-{n}"), configure);
        let mut args = vec!["-i", iface, "-f", "-n", "-q", "-t", "3", "-T", "2", "-s"];
        args.push(script.to_str().expect("utf-8 path"));
        args.extend_from_slice(extra);
        let out = self.run("udhcpc", &args, CMD);
        match last_event(&record, "bound") {
            Some(env) if out.status.success() => Ok(env),
            _ => Err(format!(
                "udhcpc {args:?}: {}\n{}\nscript saw:\n{}",
                out.status,
                lab::output_text(&out),
                read_text(&record)
            )),
        }
    }

    /// A udhcpc script that appends each call's event and variables to `<name>.env`; with
    /// `configure`, it first puts the leased address (and the default route, if a router was
    /// given) on the interface, for a unicast renewal.
    pub fn udhcpc_script(&self, name: &str, configure: bool) -> (PathBuf, PathBuf) {
        let script = self.file(&format!("{name}.sh"));
        let record = self.file(&format!("{name}.env"));
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
               env | grep -E '^(ip|mask|subnet|router|siaddr|sname|boot_file|serverid|hostname|domain|dns|lease)=' || true\n\
               echo \"end=$1\"\n\
             }} >> '{}'\n\
             exit 0\n",
            record.display()
        );
        write_executable(&script, &body);
        (script, record)
    }
}

impl Drop for Netns<'_> {
    fn drop(&mut self) {
        for mut child in self.children().drain(..) {
            let _ = child.kill();
            let _ = child.wait();
        }
        // Anything a client left behind (a daemonized dhclient) is ended by PID too.
        lab::kill_namespace_pids(&self.name);
        if let Err(e) = lab::try_run("ip", &["netns", "del", &self.name], CMD) {
            eprintln!("could not delete namespace {}: {e}", self.name);
        }
    }
}

/// The variables of the last complete script call for `event` in a udhcpc script record.
pub fn last_event(record: &Path, event: &str) -> Option<Lease> {
    let text = read_text(record);
    let mut found = None;
    let mut current: Option<Lease> = None;
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

/// Writes a script and makes it executable.
pub fn write_executable(path: &Path, body: &str) {
    fs::write(path, body).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    fs::set_permissions(path, fs::Permissions::from_mode(0o755)).expect("chmod");
}
