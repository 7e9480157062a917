//! A private lab network in which diskless qemu VMs netboot from real firmware.
//!
//! Owns: one network namespace per [`Lab`] (bridge `br0` = [`SERVER_IP`]/24, tap devices), the
//! processes started in it, and qemu VMs ([`Vm`]) with SeaBIOS + iPXE ROM, OVMF or AAVMF and no
//! disk, so the network is the only way they can boot. Everything started is ended by PID when its
//! owner is dropped, also when the test panics; a namespace left behind by a killed test binary is
//! removed by the next [`Lab::new`].
//!
//! Does not own: the servers under test (DHCP, TFTP, HTTP) — a test starts them with
//! [`Lab::spawn`] — nor the boot assets, which `boot-assets/setup.sh` puts in `boot-assets/dist/`.
//!
//! Needs root (namespaces, taps) and Debian's `qemu-system-x86`, `qemu-system-arm`, `ovmf`,
//! `qemu-efi-aarch64`, `ipxe-qemu`. Every wait here is bounded.

#![allow(dead_code)] // each test binary uses a different part of this module

use std::fs::{self, File};
use std::io::Read;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::atomic::{AtomicU16, Ordering};
use std::sync::{Arc, Mutex, OnceLock, PoisonError, mpsc};
use std::thread::sleep;
use std::time::{Duration, Instant};

/// The lab side of the bridge: where servers under test listen.
pub const SERVER_IP: Ipv4Addr = Ipv4Addr::new(10, 77, 0, 1);
/// Prefix length of the lab subnet 10.77.0.0/24.
pub const PREFIX_LEN: u8 = 24;
/// The bridge the taps are enslaved to; servers bind to it.
pub const BRIDGE: &str = "br0";

/// How often file and process polls look again.
const POLL: Duration = Duration::from_millis(100);
/// How long a helper command (`ip …`) may take.
const CMD_TIMEOUT: Duration = Duration::from_secs(20);
/// How long a process gets between SIGTERM and SIGKILL.
const TERM_GRACE: Duration = Duration::from_secs(3);

const OVMF_CODE: &str = "/usr/share/OVMF/OVMF_CODE_4M.fd";
const OVMF_VARS: &str = "/usr/share/OVMF/OVMF_VARS_4M.fd";
const AAVMF_CODE: &str = "/usr/share/AAVMF/AAVMF_CODE.fd";
const AAVMF_VARS: &str = "/usr/share/AAVMF/AAVMF_VARS.fd";
/// Secure Boot firmware with Microsoft's keys enrolled (Debian's ovmf and qemu-efi-aarch64):
/// what a server shipped with Secure Boot on trusts, so only Microsoft-signed shim boots.
const OVMF_CODE_SECBOOT: &str = "/usr/share/OVMF/OVMF_CODE_4M.secboot.fd";
const OVMF_VARS_MS: &str = "/usr/share/OVMF/OVMF_VARS_4M.ms.fd";
const AAVMF_CODE_MS: &str = "/usr/share/AAVMF/AAVMF_CODE.ms.fd";
const AAVMF_VARS_MS: &str = "/usr/share/AAVMF/AAVMF_VARS.ms.fd";

/// One network namespace `rb-<name>-<pid>` with `br0` (10.77.0.1/24, up), `lo` up and `tap0`
/// enslaved to `br0`. Processes started through it are ended by PID on drop.
pub struct Lab {
    ns: String,
    dir: PathBuf,
    children: Mutex<Vec<Child>>,
    taps_given: Mutex<u32>,
}

impl Lab {
    /// Creates the namespace and a fresh log directory `$CARGO_TARGET_TMPDIR/lab/<name>/` (kept
    /// after the test for inspection). `name` must be unique among the tests of one binary.
    pub fn new(name: &str) -> Lab {
        static SWEEP: OnceLock<()> = OnceLock::new();
        SWEEP.get_or_init(sweep_stale_namespaces);

        let ns = format!("rb-{name}-{}", std::process::id());
        let dir = lab_root().join(name);
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("create {}: {e}", dir.display()));

        run_ok("ip", &["netns", "add", &ns]);
        // From here on Drop deletes the namespace, even if a later step panics.
        let lab = Lab {
            ns,
            dir,
            children: Mutex::new(Vec::new()),
            taps_given: Mutex::new(0),
        };
        let addr = format!("{SERVER_IP}/{PREFIX_LEN}");
        for args in [
            &["link", "set", "lo", "up"][..],
            &["link", "add", BRIDGE, "type", "bridge"],
            &["addr", "add", &addr, "dev", BRIDGE],
            &["link", "set", BRIDGE, "up"],
        ] {
            lab.ip(args);
        }
        lab.add_tap("tap0");
        lab
    }

    /// The namespace name, for `ip netns exec` or `ip -n`.
    pub fn ns(&self) -> &str {
        &self.ns
    }

    /// Directory for this lab's logs, serial consoles, captures and VARS copies.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// A tap device for one more VM: `tap0` (made by [`Lab::new`]) the first time, then new ones.
    /// The tap is created in the namespace: a tap created outside and moved in would need qemu to
    /// run outside, and qemu must run inside to open it by name.
    pub fn next_tap(&self) -> String {
        let mut given = self
            .taps_given
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let tap = format!("tap{given}");
        if *given > 0 {
            self.add_tap(&tap);
        }
        *given += 1;
        tap
    }

    fn add_tap(&self, tap: &str) {
        self.ip(&["tuntap", "add", tap, "mode", "tap"]);
        self.ip(&["link", "set", tap, "master", BRIDGE]);
        self.ip(&["link", "set", tap, "up"]);
    }

    /// Runs `ip -n <ns> <args>`, panicking with its stderr on failure.
    pub fn ip(&self, args: &[&str]) {
        let mut all = vec!["-n", &self.ns];
        all.extend_from_slice(args);
        run_ok("ip", &all);
    }

    /// Starts `cmd args…` inside the namespace with stdout and stderr appended to `log` (relative
    /// paths are under [`Lab::dir`]), and returns its PID. The process is ended on drop.
    pub fn spawn(&self, cmd: &str, args: &[&str], log: impl AsRef<Path>) -> u32 {
        let child = self.spawn_child(cmd, args, log.as_ref());
        let pid = child.id();
        self.children
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(child);
        pid
    }

    fn spawn_child(&self, cmd: &str, args: &[&str], log: &Path) -> Child {
        let log = self.dir.join(log);
        let out = File::options()
            .create(true)
            .append(true)
            .open(&log)
            .unwrap_or_else(|e| panic!("open {}: {e}", log.display()));
        let err = out.try_clone().expect("dup log file");
        // `ip netns exec` execs the command (no fork), so the PID we get is the command's own.
        Command::new("ip")
            .args(["netns", "exec", &self.ns, cmd])
            .args(args)
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {cmd} in {}: {e}", self.ns))
    }

    /// Ends a process started with [`Lab::spawn`]: SIGTERM, then SIGKILL after a grace period.
    /// Returns its exit status, or `None` if `pid` is not one of ours.
    pub fn stop(&self, pid: u32) -> Option<ExitStatus> {
        self.end(pid, TERM_GRACE)
    }

    /// Ends a process started with [`Lab::spawn`] at once with SIGKILL, as a crash would, and
    /// reaps it. Returns its exit status, or `None` if `pid` is not one of ours.
    pub fn kill(&self, pid: u32) -> Option<ExitStatus> {
        self.end(pid, Duration::ZERO)
    }

    fn end(&self, pid: u32, grace: Duration) -> Option<ExitStatus> {
        let mut children = self.children.lock().unwrap_or_else(PoisonError::into_inner);
        let i = children.iter().position(|c| c.id() == pid)?;
        let mut child = children.remove(i);
        Some(terminate(&mut child, grace))
    }

    /// Sends `signal` (e.g. `HUP`) to a process started with [`Lab::spawn`], which must still
    /// run.
    pub fn signal(&self, pid: u32, signal: &str) {
        assert!(self.is_running(pid), "pid {pid} is not running");
        let out = run_bounded(
            "kill",
            &[&format!("-{signal}"), &pid.to_string()],
            CMD_TIMEOUT,
        );
        assert!(
            out.status.success(),
            "kill -{signal} {pid}: {}",
            output_text(&out)
        );
    }

    /// True while a process started with [`Lab::spawn`] has not exited.
    pub fn is_running(&self, pid: u32) -> bool {
        let mut children = self.children.lock().unwrap_or_else(PoisonError::into_inner);
        children
            .iter_mut()
            .find(|c| c.id() == pid)
            .is_some_and(|c| matches!(c.try_wait(), Ok(None)))
    }

    /// Runs a short command inside the namespace and returns its output; panics if it takes
    /// longer than `timeout` (after killing it).
    pub fn run(&self, cmd: &str, args: &[&str], timeout: Duration) -> Output {
        let mut all = vec!["netns", "exec", &self.ns, cmd];
        all.extend_from_slice(args);
        run_bounded("ip", &all, timeout)
    }

    /// Starts tcpdump writing every packet on `br0` to `pcap` (under [`Lab::dir`] if relative)
    /// and returns once it is capturing. `-U` flushes each packet, so the file can be read while
    /// the capture runs.
    pub fn capture(&self, pcap: impl AsRef<Path>) -> u32 {
        let pcap = self.dir.join(pcap);
        let log = pcap.with_extension("tcpdump.log");
        let pcap_s = pcap.to_str().expect("utf-8 path");
        let pid = self.spawn(
            "tcpdump",
            &["-i", BRIDGE, "-n", "-U", "-s", "600", "-w", pcap_s],
            &log,
        );
        wait_for_file(&log, "listening on", Duration::from_secs(10))
            .unwrap_or_else(|e| panic!("tcpdump did not start: {e}"));
        pid
    }

    /// `tcpdump -n <flags> -r <pcap> <filter>` over a capture of [`Lab::capture`]: its packets
    /// as tcpdump prints them. tcpdump writes each packet on its own schedule: poll this.
    pub fn read_capture(&self, pcap: &Path, flags: &[&str], filter: &str) -> String {
        let pcap = pcap.to_str().expect("utf-8 path");
        let mut args = vec!["-n"];
        args.extend_from_slice(flags);
        args.extend_from_slice(&["-r", pcap, filter]);
        let out = self.run("tcpdump", &args, Duration::from_secs(30));
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Sends IPv6 router advertisements on `br0` (dnsmasq in RA-only mode, prefix fd77::/64).
    ///
    /// Quirk (iPXE 2019, in qemu's NIC ROMs and Debian 12's loaders): its `Configuring (net0…)`
    /// waits for IPv6 autoconfiguration to end as well as DHCPv4, ~16 s without a router on the
    /// link instead of ~0.3 s with one. RA-only dnsmasq opens only an ICMPv6 socket (no UDP
    /// 67/547), so it runs beside the DHCP server under test.
    pub fn start_ipv6_ra(&self) -> u32 {
        self.ip(&["addr", "add", "fd77::1/64", "dev", BRIDGE, "nodad"]);
        let log = self.dir.join("ra.log");
        let pid = self.spawn(
            "dnsmasq",
            &[
                "--keep-in-foreground",
                "--conf-file=/dev/null",
                "--pid-file=",
                "--port=0",
                "--interface=br0",
                "--bind-interfaces",
                "--enable-ra",
                "--dhcp-range=fd77::,ra-only",
                &format!("--log-facility={}", log.display()),
            ],
            "ra.out",
        );
        wait_for_file(
            &log,
            "router advertisement enabled",
            Duration::from_secs(10),
        )
        .unwrap_or_else(|e| panic!("RA dnsmasq did not start: {e}"));
        pid
    }

    /// A VM builder; see [`VmBuilder`].
    pub fn vm(&self, name: &str, firmware: Firmware) -> VmBuilder<'_> {
        VmBuilder {
            lab: self,
            name: name.to_string(),
            firmware,
            nic: Nic::VirtioNet,
            mac: None,
            memory_mib: 1024,
            http_boot: false,
            reboot: false,
            secure_boot: false,
            bridge: None,
            extra: Vec::new(),
        }
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        let children = std::mem::take(
            self.children
                .get_mut()
                .unwrap_or_else(PoisonError::into_inner),
        );
        for mut child in children.into_iter().rev() {
            terminate(&mut child, TERM_GRACE);
        }
        // Anything else still in the namespace (a VM leaked with mem::forget, a grandchild)
        // would keep the namespace's devices busy: end it by PID too.
        kill_namespace_pids(&self.ns);
        if let Err(e) = try_run("ip", &["netns", "del", &self.ns], CMD_TIMEOUT) {
            eprintln!("lab: could not delete namespace {}: {e}", self.ns);
        }
    }
}

/// Where labs keep their files: `$CARGO_TARGET_TMPDIR/lab/`.
fn lab_root() -> PathBuf {
    Path::new(env!("CARGO_TARGET_TMPDIR")).join("lab")
}

/// Deletes `rb-*-<pid>` namespaces whose test process no longer exists (it was killed before its
/// Drop could run), ending the processes left in them by PID.
fn sweep_stale_namespaces() {
    let Ok(entries) = fs::read_dir("/run/netns") else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some(pid) = name
            .strip_prefix("rb-")
            .and_then(|rest| rest.rsplit('-').next())
        else {
            continue;
        };
        let Ok(pid) = pid.parse::<u32>() else {
            continue;
        };
        if pid == std::process::id() || Path::new(&format!("/proc/{pid}")).exists() {
            continue;
        }
        eprintln!("lab: removing stale namespace {name}");
        kill_namespace_pids(&name);
        let _ = try_run("ip", &["netns", "del", &name], CMD_TIMEOUT);
    }
}

/// Ends every process in namespace `ns` by PID (SIGKILL) and waits (bounded) until they are gone.
pub fn kill_namespace_pids(ns: &str) {
    let Ok(out) = try_run("ip", &["netns", "pids", ns], CMD_TIMEOUT) else {
        return;
    };
    let pids: Vec<i32> = String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .filter_map(|p| p.parse().ok())
        .collect();
    for &pid in &pids {
        signal(pid, SIGKILL);
    }
    // Not our children, so they cannot be waited for: watch /proc instead (bounded).
    let deadline = Instant::now() + Duration::from_secs(5);
    while pids
        .iter()
        .any(|p| Path::new(&format!("/proc/{p}")).exists())
        && Instant::now() < deadline
    {
        sleep(POLL);
    }
}

// ---------------------------------------------------------------------------------------------
// Processes

const SIGKILL: i32 = 9;
const SIGTERM: i32 = 15;

unsafe extern "C" {
    // libc's kill(2); std links libc anyway, and std::process only offers SIGKILL.
    fn kill(pid: i32, sig: i32) -> i32;
}

fn signal(pid: i32, sig: i32) {
    // SAFETY: kill(2) takes plain integers and touches no memory of ours.
    unsafe {
        kill(pid, sig);
    }
}

/// SIGTERM, wait up to `grace`, then SIGKILL; always reaps the child.
fn terminate(child: &mut Child, grace: Duration) -> ExitStatus {
    if let Ok(Some(status)) = child.try_wait() {
        return status;
    }
    if !grace.is_zero() {
        signal(child.id() as i32, SIGTERM);
        let deadline = Instant::now() + grace;
        while Instant::now() < deadline {
            if let Ok(Some(status)) = child.try_wait() {
                return status;
            }
            sleep(POLL);
        }
    }
    let _ = child.kill();
    child.wait().expect("wait for killed child")
}

/// Runs a command to completion within `timeout`, killing it (by PID) if it takes longer. Its
/// output is read while it runs, so a command that prints more than a pipe holds (a TFTP trace,
/// a storm's progress) cannot stall; a grandchild that keeps the pipes open after the command
/// exits costs at most [`PIPE_GRACE`].
pub fn try_run(cmd: &str, args: &[&str], timeout: Duration) -> Result<Output, String> {
    let mut child = Command::new(cmd)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("spawn {cmd}: {e}"))?;
    let stdout = drain(child.stdout.take());
    let stderr = drain(child.stderr.take());
    let deadline = Instant::now() + timeout;
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break status,
            Ok(None) if Instant::now() < deadline => sleep(Duration::from_millis(10)),
            _ => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!(
                    "{cmd} {args:?}: no exit within {timeout:?}; its output so far:\n{}{}",
                    String::from_utf8_lossy(&stdout.take(Duration::ZERO)),
                    String::from_utf8_lossy(&stderr.take(Duration::ZERO)),
                ));
            }
        }
    };
    Ok(Output {
        status,
        stdout: stdout.take(PIPE_GRACE),
        stderr: stderr.take(PIPE_GRACE),
    })
}

/// How long output is still read after a command exited (a grandchild may hold the pipe).
const PIPE_GRACE: Duration = Duration::from_secs(2);

/// A pipe being read to its end by a thread of its own.
struct Drained {
    bytes: Arc<Mutex<Vec<u8>>>,
    done: mpsc::Receiver<()>,
}

impl Drained {
    /// What was read, after waiting up to `grace` for the end of the pipe.
    fn take(&self, grace: Duration) -> Vec<u8> {
        let _ = self.done.recv_timeout(grace);
        std::mem::take(&mut *self.bytes.lock().unwrap_or_else(PoisonError::into_inner))
    }
}

fn drain(pipe: Option<impl Read + Send + 'static>) -> Drained {
    let bytes = Arc::new(Mutex::new(Vec::new()));
    let (tx, done) = mpsc::channel();
    let sink = Arc::clone(&bytes);
    std::thread::spawn(move || {
        if let Some(mut pipe) = pipe {
            let mut buf = [0u8; 8192];
            while let Ok(n @ 1..) = pipe.read(&mut buf) {
                sink.lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .extend_from_slice(&buf[..n]);
            }
        }
        let _ = tx.send(());
    });
    Drained { bytes, done }
}

/// [`try_run`], panicking on a timeout.
pub fn run_bounded(cmd: &str, args: &[&str], timeout: Duration) -> Output {
    try_run(cmd, args, timeout).unwrap_or_else(|e| panic!("{e}"))
}

/// Runs `ip <args>` (bounded), panicking with its output on failure.
pub fn ip(args: &[&str]) {
    run_ok("ip", args);
}

/// stdout and stderr of a command, for failure messages.
pub fn output_text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

fn run_ok(cmd: &str, args: &[&str]) -> Output {
    let out = run_bounded(cmd, args, CMD_TIMEOUT);
    assert!(
        out.status.success(),
        "{cmd} {}: {}\n{}",
        args.join(" "),
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

// ---------------------------------------------------------------------------------------------
// Waiting

/// Polls `f` until it returns `Some`, for at most `timeout`.
pub fn poll_until<T>(timeout: Duration, mut f: impl FnMut() -> Option<T>) -> Option<T> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f() {
            return Some(v);
        }
        if Instant::now() >= deadline {
            return None;
        }
        sleep(POLL);
    }
}

/// Waits until the text of `path` (terminal escapes removed) contains `pattern`.
pub fn wait_for_file(path: &Path, pattern: &str, timeout: Duration) -> Result<(), String> {
    poll_until(timeout, || read_text(path).contains(pattern).then_some(()))
        .ok_or_else(|| format!("{:?} not in {} after {timeout:?}", pattern, path.display()))
}

/// A log file as text with ANSI/VT100 control sequences and carriage returns removed: OVMF and
/// iPXE draw their consoles with cursor movements that would otherwise split words.
pub fn read_text(path: &Path) -> String {
    strip_escapes(&fs::read(path).unwrap_or_default())
}

fn strip_escapes(bytes: &[u8]) -> String {
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            0x1b if bytes.get(i + 1) == Some(&b'[') => {
                // CSI: parameter and intermediate bytes, then one final byte in 0x40..=0x7e.
                i += 2;
                while i < bytes.len() && !(0x40..=0x7e).contains(&bytes[i]) {
                    i += 1;
                }
                i += 1;
            }
            0x1b => i += 2, // two-byte escape, e.g. ESC c (reset) from SeaBIOS
            b'\r' | 0 => i += 1,
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The last `n` lines of a text, for failure messages.
pub fn tail(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

// ---------------------------------------------------------------------------------------------
// Acceleration

/// qemu accelerator arguments for x86_64 guests: `-accel kvm` if KVM can really run a guest
/// here, else `-accel tcg`. Decided once per process.
///
/// Quirk (this machine): `/dev/kvm` exists but is a paravirtual KVM that cannot run ordinary
/// guests — SeaBIOS starts, but OVMF stops at once with "KVM internal error. Suberror: 1" and
/// `-cpu host` aborts on MSR 0x10a. So the device node proves nothing: the probe boots OVMF
/// (diskless, no NIC) under KVM and requires its boot manager (`BdsDxe`) on the serial port
/// within a few seconds. `RACKBOOT_LAB_ACCEL=tcg|kvm` skips the probe.
pub fn x86_accel() -> &'static [&'static str] {
    static ACCEL: OnceLock<&'static [&'static str]> = OnceLock::new();
    ACCEL.get_or_init(|| {
        const KVM: &[&str] = &["-accel", "kvm"];
        const TCG: &[&str] = &["-accel", "tcg"];
        let (accel, why) = match std::env::var("RACKBOOT_LAB_ACCEL").as_deref() {
            Ok("kvm") => (KVM, "RACKBOOT_LAB_ACCEL".to_string()),
            Ok("tcg") => (TCG, "RACKBOOT_LAB_ACCEL".to_string()),
            _ => {
                let start = Instant::now();
                match probe_kvm() {
                    Ok(()) => (KVM, format!("probe booted OVMF in {:.1?}", start.elapsed())),
                    Err(e) => (TCG, format!("probe failed in {:.1?}: {e}", start.elapsed())),
                }
            }
        };
        eprintln!("lab: x86_64 accel {} ({why})", accel[1]);
        accel
    })
}

fn probe_kvm() -> Result<(), String> {
    const PROBE_TIMEOUT: Duration = Duration::from_secs(8);
    if fs::metadata("/dev/kvm").is_err() {
        return Err("no /dev/kvm".into());
    }
    let dir = lab_root().join(format!("kvm-probe-{}", std::process::id()));
    fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
    let vars = dir.join("vars.fd");
    let serial = dir.join("serial.log");
    fs::copy(OVMF_VARS, &vars).map_err(|e| format!("{OVMF_VARS}: {e}"))?;
    let log = File::create(dir.join("qemu.log")).map_err(|e| e.to_string())?;
    let mut child = Command::new("qemu-system-x86_64")
        .args([
            "-accel",
            "kvm",
            "-M",
            "q35",
            "-m",
            "256",
            "-nodefaults",
            "-display",
            "none",
        ])
        .args([
            "-no-reboot",
            "-serial",
            &format!("file:{}", serial.display()),
        ])
        .args(pflash_args(OVMF_CODE, &vars))
        .stdin(Stdio::null())
        .stdout(log.try_clone().map_err(|e| e.to_string())?)
        .stderr(log)
        .spawn()
        .map_err(|e| format!("qemu-system-x86_64: {e}"))?;
    let result = poll_until(PROBE_TIMEOUT, || {
        if read_text(&serial).contains("BdsDxe") {
            return Some(Ok(()));
        }
        // On an emulation failure qemu pauses the guest instead of exiting: read its log too.
        let log = read_text(&dir.join("qemu.log"));
        match child.try_wait() {
            Ok(None) if !log.contains("KVM internal error") => None,
            _ => Some(Err(log
                .lines()
                .find(|l| l.contains("KVM"))
                .unwrap_or(&log)
                .to_string())),
        }
    })
    .unwrap_or_else(|| Err(format!("OVMF reached no boot manager in {PROBE_TIMEOUT:?}")));
    terminate(&mut child, Duration::ZERO);
    let _ = fs::remove_dir_all(&dir);
    result
}

// ---------------------------------------------------------------------------------------------
// VMs

/// The firmware a VM netboots with.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Firmware {
    /// SeaBIOS; the NIC's option ROM (qemu's, from `ipxe-qemu`) is iPXE, so the firmware's
    /// "PXE" is already iPXE: DHCP option 93 = 0 *with* user class `iPXE` on the first DHCP.
    /// Quirk (SeaBIOS serial console): it buffers text, so what iPXE prints just before
    /// `poweroff` can be cut off; wait for a line that something else follows.
    X86Bios,
    /// OVMF on q35: firmware PXE (arch 7) → TFTP loader → iPXE.
    X86Uefi,
    /// AAVMF on `virt`, cortex-a57 under TCG: firmware PXE (arch 11) → TFTP loader → iPXE.
    Arm64Uefi,
}

/// The VM's network card.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Nic {
    /// virtio-net-pci: fastest under TCG; the only choice for UEFI here.
    VirtioNet,
    /// Intel e1000 (82540EM), BIOS only: OVMF and AAVMF have no e1000 driver.
    E1000,
}

/// Options for one VM; [`VmBuilder::start`] boots it.
pub struct VmBuilder<'a> {
    lab: &'a Lab,
    name: String,
    firmware: Firmware,
    nic: Nic,
    mac: Option<String>,
    memory_mib: u32,
    http_boot: bool,
    reboot: bool,
    /// UEFI Secure Boot enforced, Microsoft's keys enrolled.
    secure_boot: bool,
    /// The lab bridge its tap joins instead of [`BRIDGE`].
    bridge: Option<String>,
    extra: Vec<String>,
}

impl<'a> VmBuilder<'a> {
    /// The NIC model (default virtio-net).
    pub fn nic(mut self, nic: Nic) -> Self {
        self.nic = nic;
        self
    }

    /// A fixed MAC (default: a fresh `52:54:00:77:xx:xx`, unique in this process).
    pub fn mac(mut self, mac: &str) -> Self {
        self.mac = Some(mac.to_string());
        self
    }

    /// Guest memory (default 1024 MiB).
    pub fn memory_mib(mut self, mib: u32) -> Self {
        self.memory_mib = mib;
        self
    }

    /// UEFI HTTP boot instead of PXE (OVMF only): the firmware's PXEv4 and PXEv6 boot options are
    /// switched off through fw_cfg, so its first network boot option is "UEFI HTTPv4" (DHCP
    /// option 93 = 16, vendor class `HTTPClient:Arch:00016:…`).
    pub fn http_boot(mut self) -> Self {
        self.http_boot = true;
        self
    }

    /// UEFI Secure Boot on, with Microsoft's keys (OVMF secboot + MS vars on q35 with SMM, or
    /// AAVMF's MS build): unsigned loaders are refused ("Access Denied").
    pub fn secure_boot(mut self) -> Self {
        self.secure_boot = true;
        self
    }

    /// Let a guest reboot restart the VM (default: qemu exits on a guest reboot, `-no-reboot`,
    /// so a test sees an unexpected reboot as an exit). For tests whose node reboots by design.
    pub fn allow_reboot(mut self) -> Self {
        self.reboot = true;
        self
    }

    /// Puts the VM's tap on `bridge` (a bridge the test made in the lab namespace, e.g. one
    /// behind a relay) instead of the lab's [`BRIDGE`], before qemu starts.
    pub fn bridge(mut self, bridge: &str) -> Self {
        self.bridge = Some(bridge.to_string());
        self
    }

    /// One more raw qemu argument.
    pub fn arg(mut self, arg: &str) -> Self {
        self.extra.push(arg.to_string());
        self
    }

    /// Starts qemu in the lab namespace on a tap of its own. No disk, no `-kernel`: the
    /// firmware's network boot is the only way forward.
    pub fn start(self) -> Vm<'a> {
        static NEXT: AtomicU16 = AtomicU16::new(1);
        let lab = self.lab;
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let mac = self
            .mac
            .clone()
            .unwrap_or_else(|| format!("52:54:00:77:{:02x}:{:02x}", n >> 8, n & 0xff));
        // SMBIOS system UUID; the firmware and iPXE send it as DHCP option 97. Its first three
        // fields are not palindromes, so captures show the byte order the client uses.
        let uuid = format!("00112233-4455-6677-8899-{}", mac.replace(':', ""));
        let serial = lab.dir.join(format!("{}.serial.log", self.name));
        let tap = lab.next_tap();
        if let Some(bridge) = &self.bridge {
            lab.ip(&["link", "set", &tap, "master", bridge]);
        }
        let netdev = format!("tap,id=net0,ifname={tap},script=no,downscript=no");

        let (binary, mut args) = self.firmware_args();
        let memory = self.memory_mib.to_string();
        args.extend(strings(&[
            "-name", &self.name, "-m", &memory, "-smp", "1", "-uuid", &uuid,
        ]));
        args.extend(strings(&["-nodefaults", "-display", "none"]));
        if !self.reboot {
            args.push("-no-reboot".into());
        }
        args.extend(strings(&["-serial", &format!("file:{}", serial.display())]));
        // bootindex puts the NIC first in qemu's fw_cfg "bootorder": SeaBIOS then skips its
        // floppy/disk attempts, OVMF/AAVMF order their boot options by it. Without any disk
        // OVMF and AAVMF already try "UEFI PXEv4" first; PXEv6 and HTTP boot come only after
        // PXEv4 has had no answer for ~60 s, so they cost nothing on a successful boot.
        let nic = match self.nic {
            Nic::VirtioNet => "virtio-net-pci",
            Nic::E1000 => "e1000",
        };
        let mut device = format!("{nic},netdev=net0,mac={mac},bootindex=1");
        if self.firmware != Firmware::X86Bios {
            // Quirk (OVMF/AAVMF): qemu's NIC option ROMs hold iPXE, which the firmware would
            // start instead of its own PXE. An empty romfile keeps the firmware PXE → TFTP path.
            device.push_str(",romfile=");
        }
        args.extend(strings(&["-netdev", &netdev, "-device", &device]));
        args.extend(self.extra);

        let log = lab.dir.join(format!("{}.qemu.log", self.name));
        fs::write(&log, format!("{binary} {}\n", args.join(" "))).expect("write qemu log");
        let argv: Vec<&str> = args.iter().map(String::as_str).collect();
        let child = lab.spawn_child(binary, &argv, &log);
        let (name, firmware, pid) = (self.name, self.firmware, child.id());
        eprintln!("lab: {name} ({firmware:?}, {mac}) started, pid {pid}");
        Vm {
            name,
            firmware,
            mac,
            uuid,
            serial,
            qemu_log: log,
            child: Mutex::new(child),
            started: Instant::now(),
            _lab: lab,
        }
    }

    /// The qemu binary and the machine and firmware arguments.
    fn firmware_args(&self) -> (&'static str, Vec<String>) {
        let dir = &self.lab.dir;
        match self.firmware {
            Firmware::X86Bios => {
                assert!(!self.http_boot, "SeaBIOS has no UEFI HTTP boot");
                assert!(!self.secure_boot, "SeaBIOS has no Secure Boot");
                // Quirk (SeaBIOS): without a VGA device it prints nothing, and iPXE's text
                // (via int 10h) goes nowhere. fw_cfg etc/sercon-port = 0x3f8 (2 bytes LE) turns
                // on its serial console; qemu warns that the name lacks "opt/", harmlessly.
                let port = dir.join("sercon-port");
                fs::write(&port, [0xf8, 0x03]).expect("write sercon-port");
                let mut args = strings(x86_accel());
                let sercon = format!("name=etc/sercon-port,file={}", port.display());
                args.extend(strings(&["-M", "q35", "-fw_cfg", &sercon]));
                ("qemu-system-x86_64", args)
            }
            Firmware::X86Uefi => {
                assert_eq!(self.nic, Nic::VirtioNet, "OVMF has no e1000 driver");
                let mut args = strings(x86_accel());
                // OVMF honours this knob (measured): no "UEFI PXEv6" boot option, so a VM whose
                // PXEv4 got no answer goes on to HTTPv4 boot, not to ~65 s of DHCPv6 first.
                let no_pxe6 = "name=opt/org.tianocore/IPv6PXESupport,string=n";
                if self.secure_boot {
                    // SMM and a secure flash keep the variable store (and so the enrolled
                    // keys and the Secure Boot switch) out of the guest OS's reach.
                    args.extend(strings(&[
                        "-M",
                        "q35,smm=on",
                        "-global",
                        "driver=cfi.pflash01,property=secure,value=on",
                        "-fw_cfg",
                        no_pxe6,
                    ]));
                } else {
                    args.extend(strings(&["-M", "q35", "-fw_cfg", no_pxe6]));
                }
                if self.http_boot {
                    // The same knob for IPv4 (measured): with no PXE option left, OVMF's boot
                    // manager starts with "UEFI HTTPv4" on the NIC.
                    let no_pxe4 = "name=opt/org.tianocore/IPv4PXESupport,string=n";
                    args.extend(strings(&["-fw_cfg", no_pxe4]));
                }
                if self.secure_boot {
                    args.extend(self.pflash(OVMF_CODE_SECBOOT, OVMF_VARS_MS));
                } else {
                    args.extend(self.pflash(OVMF_CODE, OVMF_VARS));
                }
                ("qemu-system-x86_64", args)
            }
            Firmware::Arm64Uefi => {
                assert_eq!(self.nic, Nic::VirtioNet, "AAVMF has no e1000 driver");
                assert!(!self.http_boot, "http_boot is implemented for OVMF only");
                // An x86 host has no arm64 KVM: always TCG.
                if self.secure_boot {
                    // As measured for the Secure Boot chain: `-cpu max`.
                    let mut args = strings(&["-accel", "tcg", "-M", "virt", "-cpu", "max"]);
                    args.extend(self.pflash(AAVMF_CODE_MS, AAVMF_VARS_MS));
                    return ("qemu-system-aarch64", args);
                }
                let mut args = strings(&["-accel", "tcg", "-M", "virt", "-cpu", "cortex-a57"]);
                args.extend(self.pflash(AAVMF_CODE, AAVMF_VARS));
                ("qemu-system-aarch64", args)
            }
        }
    }

    /// Read-only firmware code plus a fresh copy of the VARS template for this VM alone: a
    /// shared or reused VARS file keeps stale boot entries.
    fn pflash(&self, code: &str, vars_template: &str) -> Vec<String> {
        let vars = self.lab.dir.join(format!("{}.vars.fd", self.name));
        fs::copy(vars_template, &vars).unwrap_or_else(|e| panic!("copy {vars_template}: {e}"));
        pflash_args(code, &vars)
    }
}

fn strings(a: &[&str]) -> Vec<String> {
    a.iter().map(|s| s.to_string()).collect()
}

fn pflash_args(code: &str, vars: &Path) -> Vec<String> {
    vec![
        "-drive".into(),
        format!("if=pflash,format=raw,unit=0,readonly=on,file={code}"),
        "-drive".into(),
        format!("if=pflash,format=raw,unit=1,file={}", vars.display()),
    ]
}

/// A running qemu VM; killed by PID on drop. Borrows its [`Lab`] so it cannot outlive the
/// namespace its tap lives in.
pub struct Vm<'a> {
    name: String,
    firmware: Firmware,
    mac: String,
    uuid: String,
    serial: PathBuf,
    qemu_log: PathBuf,
    child: Mutex<Child>,
    started: Instant,
    _lab: &'a Lab,
}

impl Vm<'_> {
    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn firmware(&self) -> Firmware {
        self.firmware
    }

    /// The boot NIC's MAC, `52:54:00:…`, lower case.
    pub fn mac(&self) -> &str {
        &self.mac
    }

    /// The SMBIOS system UUID (sent by firmware and iPXE as DHCP option 97).
    pub fn uuid(&self) -> &str {
        &self.uuid
    }

    pub fn pid(&self) -> u32 {
        self.child
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .id()
    }

    pub fn serial_path(&self) -> &Path {
        &self.serial
    }

    /// The serial console so far, escapes removed.
    pub fn serial(&self) -> String {
        read_text(&self.serial)
    }

    /// Time since qemu was started.
    pub fn elapsed(&self) -> Duration {
        self.started.elapsed()
    }

    /// Waits until the serial console shows `pattern` and returns the time since qemu started.
    /// Panics with the console's tail if `timeout` passes or qemu exits first.
    pub fn wait_for_serial(&self, pattern: &str, timeout: Duration) -> Duration {
        self.try_wait_for_serial(pattern, timeout)
            .unwrap_or_else(|e| panic!("{e}"))
    }

    /// [`Vm::wait_for_serial`] returning the failure instead of panicking.
    pub fn try_wait_for_serial(
        &self,
        pattern: &str,
        timeout: Duration,
    ) -> Result<Duration, String> {
        self.try_wait_for_serial_in_order(&[pattern], timeout)
    }

    /// Waits until the serial console shows every one of `patterns`, each after the one before
    /// it, and returns the time since qemu started. Panics like [`Vm::wait_for_serial`].
    ///
    /// What the guest prints reaches the serial file on its own schedule (the guest's UART
    /// drains after `echo` returns, qemu writes after that): a line the guest printed before
    /// something the test saw elsewhere (a report, a state) may still be on its way, so a test
    /// waits for the lines it asserts rather than reading the console once.
    pub fn wait_for_serial_in_order(&self, patterns: &[&str], timeout: Duration) -> Duration {
        self.try_wait_for_serial_in_order(patterns, timeout)
            .unwrap_or_else(|e| panic!("{e}"))
    }

    /// [`Vm::wait_for_serial_in_order`] returning the failure instead of panicking.
    pub fn try_wait_for_serial_in_order(
        &self,
        patterns: &[&str],
        timeout: Duration,
    ) -> Result<Duration, String> {
        let mut exited = None;
        let mut missing = patterns.first().copied().unwrap_or_default();
        let found = poll_until(timeout, || {
            match first_missing(&self.serial(), patterns) {
                None => return Some(true),
                Some(p) => missing = p,
            }
            // Look once more after an exit: the pattern may be the last thing it printed.
            if exited.is_some() {
                return Some(false);
            }
            exited = self.exit_status();
            None
        });
        match found {
            Some(true) => Ok(self.elapsed()),
            _ => Err(format!(
                "{}: {missing:?}{} not on serial after {:.1?}{}\n--- serial tail ({}):\n{}\n--- qemu log:\n{}",
                self.name,
                if patterns.len() > 1 {
                    format!(" (in order: {patterns:?})")
                } else {
                    String::new()
                },
                self.elapsed(),
                exited
                    .map(|s| format!(" (qemu exited: {s})"))
                    .unwrap_or_default(),
                self.serial.display(),
                tail(&self.serial(), 25),
                tail(&read_text(&self.qemu_log), 10),
            )),
        }
    }

    /// The exit status if qemu has exited (guest poweroff, or reboot unless
    /// [`VmBuilder::allow_reboot`]: `-no-reboot` ends qemu).
    pub fn exit_status(&self) -> Option<ExitStatus> {
        self.child
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .try_wait()
            .ok()
            .flatten()
    }

    /// Waits up to `timeout` for qemu to exit by itself.
    pub fn wait_exit(&self, timeout: Duration) -> Option<ExitStatus> {
        poll_until(timeout, || self.exit_status())
    }
}

impl Drop for Vm<'_> {
    fn drop(&mut self) {
        // No state worth a graceful stop: SIGKILL at once.
        terminate(
            self.child.get_mut().unwrap_or_else(PoisonError::into_inner),
            Duration::ZERO,
        );
    }
}

/// The first of `patterns` that `text` lacks when each is looked for after the one before it.
fn first_missing<'p>(text: &str, patterns: &[&'p str]) -> Option<&'p str> {
    let mut rest = text;
    for p in patterns {
        match rest.find(p) {
            Some(i) => rest = &rest[i + p.len()..],
            None => return Some(p),
        }
    }
    None
}

/// A file from `boot-assets/dist/` (made by `boot-assets/setup.sh`); `RACKBOOT_DIST` overrides
/// the directory. Panics with what to run when it is missing.
pub fn dist_file(name: &str) -> PathBuf {
    let dir = std::env::var_os("RACKBOOT_DIST")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("boot-assets/dist"));
    let path = dir.join(name);
    assert!(
        path.is_file(),
        "{} missing: run boot-assets/setup.sh",
        path.display()
    );
    path
}
