//! The whole appliance against real firmware: a diskless qemu VM powers on in a private network
//! namespace, netboots from `rackboot serve` (DHCP → TFTP loader → iPXE → HTTP script → kernel
//! and initrd → operational image → config pull → reports) and its node record ends
//! `configured` with a timeline that shows every step in order.
//!
//! Needs root, the packages and assets of `boot-assets/setup.sh`. Every wait is bounded; the lab
//! removes its namespace and processes also when a test fails.

mod common;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::api::{api_section, kinds, timeline_text};
use common::lab::{self, Firmware, Lab};
use common::vm_watch::{self, Rackboot, diagnosis, not_failed, watch_node};

/// One VM alone boots in 20–35 s under TCG; three at once on two cores take up to ~2× longer.
const BOOT_TIMEOUT: Duration = Duration::from_secs(300);

fn repo(p: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(p)
}

/// Starts rackboot in the lab with the repository's bootenvs and scripts and the assets from
/// `boot-assets/dist`, and waits until it has bound every socket.
fn start_rackboot(lab: &Lab) -> Rackboot {
    let assets = lab::dist_file("undionly.kpxe")
        .parent()
        .expect("dist has a parent")
        .to_path_buf();
    let config = lab.dir().join("rackboot.toml");
    std::fs::write(
        &config,
        format!(
            r#"state_dir = "{state}"
assets_dir = "{assets}"
bootenvs_dir = "{bootenvs}"
scripts_dir = "{scripts}"
[network]
interface = "{bridge}"
[[dhcp.subnet]]
cidr = "10.77.0.0/24"
ranges = [["10.77.0.100", "10.77.0.199"]]
[dns]
domain = "lab.internal"
{api}"#,
            state = lab.dir().join("state").display(),
            assets = assets.display(),
            bootenvs = repo("configs/bootenvs").display(),
            scripts = repo("configs/scripts").display(),
            bridge = lab::BRIDGE,
            api = api_section(lab.dir()),
        ),
    )
    .expect("write config");
    vm_watch::start_rackboot(lab, &config)
}

/// Boots one VM of `firmware` and checks it reaches `configured` with the steps in order; the
/// TFTP step must have sent `loader`.
fn boots_to_configured(name: &str, firmware: Firmware, loader: &str) {
    let lab = Lab::new(name);
    // Router advertisements on the link: iPXE otherwise waits ~13 s for IPv6 autoconfiguration.
    lab.start_ipv6_ra();
    // Kept in the lab directory: the first thing to read when a boot fails in CI.
    lab.capture(lab.dir().join("boot.pcap"));
    let rb = start_rackboot(&lab);
    let started = Instant::now();
    let vm = lab.vm(name, firmware).start();
    let mac = vm.mac().to_string();

    let n = watch_node(&lab, &rb, &vm, &mac, BOOT_TIMEOUT, "configured", |n| {
        not_failed(n)?;
        Ok((n["state"] == "configured").then(|| n.clone()))
    });
    eprintln!(
        "{name}: configured in {:.1} s ({} accel)\n{}",
        started.elapsed().as_secs_f64(),
        lab::x86_accel().join(" "),
        timeline_text(&n)
    );

    // The boot, step by step, in this order (other events may sit in between).
    let want: [(&str, &str); 10] = [
        ("dhcp.ack", loader),
        ("tftp.sent", loader),
        ("dhcp.ack", ".ipxe (iPXE"),
        ("http.script", "bootenv discovery"),
        ("http.kernel", ""),
        ("http.initrd", ""),
        ("report.booted", ""),
        ("config.pull", "hello.sh"),
        ("report.script", "hello.sh exited 0"),
        ("report.configured", ""),
    ];
    let events = kinds(&n);
    let mut at = 0;
    for (kind, needle) in want {
        match events[at..]
            .iter()
            .position(|(k, d)| k == kind && d.contains(needle))
        {
            Some(i) => at += i + 1,
            None => panic!(
                "timeline lacks `{kind}` ({needle}) after step {at}\n{}",
                diagnosis(&rb, &vm, Some(&n))
            ),
        }
    }
    assert_eq!(n["arch"].as_str(), Some(arch_name(firmware)));
    assert!(n["last_seen"].is_string());
    // The agent's own view agrees.
    vm.wait_for_serial("rackboot-agent: configured", Duration::from_secs(10));
}

fn arch_name(f: Firmware) -> &'static str {
    match f {
        Firmware::X86Bios => "bios",
        Firmware::X86Uefi => "x86_64_efi",
        Firmware::Arm64Uefi => "arm64_efi",
    }
}

/// SeaBIOS with qemu's iPXE option ROM: that 2019 iPXE lacks HTTPS, so rackboot first
/// chainloads its own `undionly.kpxe` by TFTP, which then fetches the script.
#[test]
fn x86_bios_vm_netboots_to_configured() {
    boots_to_configured("vm-bios", Firmware::X86Bios, "undionly.kpxe");
}

/// OVMF's own PXE (arch 7) fetches `ipxe-amd64.efi` by TFTP.
#[test]
fn x86_uefi_vm_netboots_to_configured() {
    boots_to_configured("vm-uefi", Firmware::X86Uefi, "ipxe-amd64.efi");
}

/// AAVMF's PXE (arch 11) fetches `ipxe-arm64.efi` by TFTP.
#[test]
fn arm64_uefi_vm_netboots_to_configured() {
    boots_to_configured("vm-arm64", Firmware::Arm64Uefi, "ipxe-arm64.efi");
}
