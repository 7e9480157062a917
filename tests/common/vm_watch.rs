//! What every VM test does around its VM: the boot network (router advertisements and a
//! capture, before rackboot starts), an appliance serving real boot assets, a watch over the
//! VM's node record until a condition holds (bounded, failing fast when rackboot or qemu dies),
//! the boot's steps checked in order, and everything a failed boot needs to be diagnosed.

#![allow(dead_code)] // each test binary uses a different part of this module

use std::path::PathBuf;
use std::time::{Duration, Instant};

use serde_json::Value;

use super::api::{kinds, node, timeline_text};
use super::lab::{self, Lab, Vm};
use super::server::Server;
use super::setup::Setup;

/// rackboot as a boot network has it for real firmware: DHCP on the lab subnet (dynamic range
/// .100–.199), TFTP, HTTP and the assets `boot-assets/setup.sh` built.
pub fn appliance(name: &str) -> Setup {
    Setup::new(name)
        .dist_assets()
        .no_address()
        .lab_subnet(100, 199)
        .tftp("")
}

/// Readies the lab's link for VMs, before rackboot starts: router advertisements (iPXE
/// otherwise waits ~13 s for IPv6 autoconfiguration) and a capture of everything, kept in the
/// lab directory as the first thing to read when a boot fails. Returns the capture's path.
pub fn boot_network(lab: &Lab) -> PathBuf {
    lab.start_ipv6_ra();
    let pcap = lab.dir().join("boot.pcap");
    lab.capture(&pcap);
    pcap
}

/// What the operational image does once iPXE has its discovery script, in this order: kernel,
/// initrd, the agent's report, its config pull of `hello.sh` and its result (for
/// [`Watch::assert_steps`]).
pub const IMAGE_STEPS: &[(&str, &str)] = &[
    ("http.script", "bootenv discovery"),
    ("http.kernel", ""),
    ("http.initrd", ""),
    ("report.booted", ""),
    ("config.pull", "hello.sh"),
    ("report.script", "hello.sh exited 0"),
    ("report.configured", ""),
];

/// An installer bootenv for x86 firmware: the operational image told (`rackboot.installed=1`)
/// to call back and reboot, as a kickstart `%post` would, for each of `arches` (`bios`,
/// `x86_64_efi`); `head` is more top-level lines (e.g. `loader = "grub"`).
pub fn installer_bootenv(head: &str, arches: &[&str]) -> String {
    let mut text = format!(
        "description = \"test installer: the operational image calling back\"\ninstaller = true\n{head}"
    );
    for arch in arches {
        text.push_str(&format!(
            "[arch.{arch}]\nkernel = \"x86_64/vmlinuz\"\ninitrds = [\"x86_64/initrd.img\"]\n\
             cmdline = \"console=ttyS0 quiet rackboot.url={{{{ server_url }}}} rackboot.mac={{{{ node.mac }}}} \
             rackboot.token={{{{ node.token }}}} rackboot.installed=1 rackboot.bootenv={{{{ bootenv }}}}\"\n"
        ));
    }
    text
}

/// One more section of [`Watch::diagnosis`]: a title and what to show under it.
type Section<'a> = (&'a str, Box<dyn Fn() -> String + 'a>);

/// One VM booting from one rackboot, watched through the VM's node record.
pub struct Watch<'a> {
    rb: &'a Server,
    vm: &'a Vm<'a>,
    more: Vec<Section<'a>>,
    started: Instant,
}

impl<'a> Watch<'a> {
    /// Watches `vm`, just started, booting from `rb`.
    pub fn new(rb: &'a Server, vm: &'a Vm<'a>) -> Watch<'a> {
        Watch {
            rb,
            vm,
            more: Vec::new(),
            started: Instant::now(),
        }
    }

    /// One more section for [`Watch::diagnosis`] (another server's log, the DHCP on the wire).
    pub fn also(mut self, title: &'a str, show: impl Fn() -> String + 'a) -> Watch<'a> {
        self.more.push((title, Box::new(show)));
        self
    }

    /// Everything a failed boot needs to be diagnosed: timeline, server log, the sections given
    /// with [`Watch::also`], serial console.
    pub fn diagnosis(&self, node: Option<&Value>) -> String {
        let mut text = format!(
            "timeline:\n{}\n--- rackboot log (tail) ---\n{}\n",
            node.map(timeline_text)
                .unwrap_or_else(|| "(no node record)".into()),
            lab::tail(&self.rb.log_text(), 30),
        );
        for (title, show) in &self.more {
            text.push_str(&format!("--- {title} ---\n{}\n", show()));
        }
        text.push_str(&format!(
            "--- {} serial (tail) ---\n{}",
            self.vm.name(),
            lab::tail(&self.vm.serial(), 40),
        ));
        text
    }

    /// Polls the VM's node record (MAC `mac`) until `done` returns `Ok(Some(_))`, for `timeout`
    /// at most, printing each new state. Panics with [`Watch::diagnosis`] when rackboot or qemu
    /// exits, when `done` returns `Err(reason)`, or when the time runs out (`what` names the
    /// wait).
    pub fn node<T>(
        &self,
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
                self.rb.is_running(),
                "rackboot died\n{}",
                self.diagnosis(last.as_ref())
            );
            if let Some(status) = self.vm.exit_status() {
                panic!("qemu exited ({status})\n{}", self.diagnosis(last.as_ref()));
            }
            let n = node(&self.rb.lab, mac)?;
            let s = n["state"].as_str().unwrap_or_default().to_string();
            if s != state {
                eprintln!(
                    "{}: {s} after {:.1} s",
                    self.vm.name(),
                    started.elapsed().as_secs_f64()
                );
                state = s;
            }
            let verdict = done(&n);
            last = Some(n);
            match verdict {
                Ok(found) => found,
                Err(why) => panic!("{why}\n{}", self.diagnosis(last.as_ref())),
            }
        });
        found.unwrap_or_else(|| {
            panic!(
                "{what}: not within {timeout:?}\n{}",
                self.diagnosis(last.as_ref())
            )
        })
    }

    /// Waits until the VM's node is `configured` (failing at once if it is `failed`), then
    /// says how long that took and shows the timeline.
    pub fn configured(&self, mac: &str, timeout: Duration) -> Value {
        let n = self.node(mac, timeout, "configured", |n| {
            not_failed(n)?;
            Ok((n["state"] == "configured").then(|| n.clone()))
        });
        eprintln!(
            "{}: configured in {:.1} s ({} accel)\n{}",
            self.vm.name(),
            self.started.elapsed().as_secs_f64(),
            lab::x86_accel().join(" "),
            timeline_text(&n)
        );
        n
    }

    /// Waits until `mac`'s installer has called back and a boot into `local` followed (its
    /// script or GRUB config rendered after the callback), failing at once on `failed`.
    pub fn installed_then_local(&self, mac: &str, timeout: Duration) -> Value {
        self.node(mac, timeout, "a second boot into local", |n| {
            not_failed(n)?;
            let events = kinds(n);
            let second_boot = find(&events, 0, "report.installed", "")
                .and_then(|called| find(&events, called, "http.script", "bootenv local"));
            Ok(second_boot.map(|_| n.clone()))
        })
    }

    /// Asserts that `n`'s timeline has these steps (given in parts, e.g. the firmware's and
    /// [`IMAGE_STEPS`]) in this order, other events in between allowed: each step is an event
    /// kind (or kinds, `a|b`) and a text its detail contains.
    pub fn assert_steps(&self, n: &Value, want: &[&[(&str, &str)]]) {
        let events = kinds(n);
        let mut at = 0;
        for (kind, needle) in want.iter().flat_map(|w| w.iter()) {
            match find(&events, at, kind, needle) {
                Some(i) => at = i + 1,
                None => panic!(
                    "timeline lacks `{kind}` ({needle}) after step {at}\n{}",
                    self.diagnosis(Some(n))
                ),
            }
        }
    }
}

/// How many boots into `bootenv` `n`'s timeline shows (scripts or GRUB configs whose boot
/// started).
pub fn boots_of(n: &Value, bootenv: &str) -> usize {
    let needle = format!("bootenv {bootenv},");
    kinds(n)
        .iter()
        .filter(|(k, d)| k == "http.script" && d.contains(&needle))
        .count()
}

/// Index of the first event at or after `from` of `kind` (or one of `a|b`) whose detail
/// contains `needle`.
pub fn find(events: &[(String, String)], from: usize, kind: &str, needle: &str) -> Option<usize> {
    events[from..]
        .iter()
        .position(|(k, d)| kind.split('|').any(|want| want == k) && d.contains(needle))
        .map(|i| from + i)
}

/// For [`Watch::node`]: a node that is `failed` ends the wait with its reason.
pub fn not_failed(n: &Value) -> Result<(), String> {
    if n["state"] == "failed" {
        return Err(format!("node failed: {}", n["state_reason"]));
    }
    Ok(())
}
