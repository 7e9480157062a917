//! The whole appliance against real firmware: a diskless qemu VM powers on in a private network
//! namespace, netboots from `rackboot serve` (DHCP → TFTP loader → iPXE → HTTP script → kernel
//! and initrd → operational image → config pull → reports) and its node record ends
//! `configured` with a timeline that shows every step in order.
//!
//! Needs root, the packages and assets of `boot-assets/setup.sh`. Every wait is bounded; the lab
//! removes its namespace and processes also when a test fails.

mod common;

use std::time::Duration;

use common::api::{kinds, timeline_text};
use common::lab::Firmware;
use common::vm_watch::{IMAGE_STEPS, Watch, appliance, boot_network};

/// One VM alone boots in 20–35 s under TCG; three at once on two cores take up to ~2× longer.
const BOOT_TIMEOUT: Duration = Duration::from_secs(300);

/// Boots one VM of `firmware` and checks it reaches `configured` with the steps in order; the
/// TFTP step must have sent `loader`, and with no loader there must be no TFTP step.
fn boots_to_configured(name: &str, firmware: Firmware, loader: Option<&str>) {
    // The repository's bootenvs and scripts, the assets from `boot-assets/dist`.
    let rb = appliance(name)
        .repo_configs()
        .dns("domain = \"lab.internal\"")
        .prepare();
    boot_network(&rb.lab);
    rb.serve();
    let vm = rb.lab.vm(name, firmware).start();
    let watch = Watch::new(&rb, &vm);
    let n = watch.configured(vm.mac(), BOOT_TIMEOUT);

    // The boot, step by step, in this order (other events may sit in between).
    let firmware_steps = match loader {
        Some(loader) => vec![
            ("dhcp.ack", loader),
            ("tftp.sent", loader),
            ("dhcp.ack", ".ipxe (iPXE"),
        ],
        None => vec![("dhcp.ack", ".ipxe (iPXE")],
    };
    watch.assert_steps(&n, &[&firmware_steps, IMAGE_STEPS]);
    if loader.is_none() {
        let tftp = kinds(&n).into_iter().find(|(k, _)| k.starts_with("tftp."));
        assert!(
            tftp.is_none(),
            "a TFTP step: {tftp:?}\n{}",
            timeline_text(&n)
        );
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

/// SeaBIOS with qemu's iPXE option ROM: the ROM's own iPXE (2019, no HTTPS) fetches its script
/// from its first DHCP answer; no loader by TFTP (`upgrade_old_ipxe` is off by default).
#[test]
fn x86_bios_vm_netboots_to_configured() {
    boots_to_configured("vm-bios", Firmware::X86Bios, None);
}

/// OVMF's own PXE (arch 7) fetches `ipxe-amd64.efi` by TFTP.
#[test]
fn x86_uefi_vm_netboots_to_configured() {
    boots_to_configured("vm-uefi", Firmware::X86Uefi, Some("ipxe-amd64.efi"));
}

/// AAVMF's PXE (arch 11) fetches `ipxe-arm64.efi` by TFTP.
#[test]
fn arm64_uefi_vm_netboots_to_configured() {
    boots_to_configured("vm-arm64", Firmware::Arm64Uefi, Some("ipxe-arm64.efi"));
}
