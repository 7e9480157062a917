//! Secure Boot against real firmware: qemu VMs whose UEFI enforces Secure Boot with Microsoft's
//! keys enrolled (OVMF secboot + MS vars on x86_64, AAVMF's MS build on arm64) netboot from
//! `rackboot serve` through the distribution's signed chain: DHCP hands the Microsoft-signed
//! shim, shim fetches Debian's signed GRUB beside it, GRUB reads `grub/grub.cfg` and then its own
//! `grub.cfg-<mac>` that rackboot renders from the node's bootenv, and fetches Debian's signed
//! kernel and the operational image by TFTP; the kernel runs locked down. Also: the same VM
//! handed the unsigned iPXE is refused by its firmware and rackboot's diagnosis says so; and a
//! once-only bootenv and `local` behave through GRUB as through iPXE.
//!
//! Needs root, the packages and assets of `boot-assets/setup.sh` (it fetches shim and GRUB).
//! Every wait is bounded; the lab removes its namespace and processes also when a test fails.

mod common;

use std::path::Path;
use std::time::Duration;

use common::api::{kinds, timeline_text};
use common::lab::{Firmware, dist_file};
use common::server::Server;
use common::setup::Setup;
use common::vm_watch::{IMAGE_STEPS, Watch, appliance, boot_network, boots_of, installer_bootenv};

/// One Secure Boot VM alone reaches `configured` in ~30 s (x86_64) or ~45 s (arm64) under TCG;
/// a second boot, and other tests' VMs on the same two cores, take longer.
const BOOT_TIMEOUT: Duration = Duration::from_secs(300);

/// The repository's discovery bootenv (the operational image), booted through GRUB.
fn grub_discovery() -> String {
    let repo = Path::new(env!("CARGO_MANIFEST_DIR"));
    let text = std::fs::read_to_string(repo.join("configs/bootenvs/discovery.toml"))
        .expect("configs/bootenvs/discovery.toml");
    // Not `quiet`: the kernel's own word that Secure Boot is on is what the test reads.
    format!("loader = \"grub\"\n{}", text.replace(" quiet", ""))
}

/// An appliance serving `boot-assets/dist` with the repository's scripts and the given bootenvs.
fn secure_appliance(name: &str, bootenvs: &[(&str, String)]) -> Setup {
    let repo = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut s = appliance(name).dir("scripts_dir", repo.join("configs/scripts"));
    for (file, text) in bootenvs {
        s = s.file(&format!("bootenvs/{file}"), text);
    }
    s
}

/// What the firmware, shim and GRUB fetch before the operational image runs, in order.
fn chain_steps<'a>(shim: &'a str, grub: &'a str, kernel: &'a str) -> [(&'a str, &'a str); 7] {
    [
        ("dhcp.ack", shim),
        ("tftp.sent", shim),
        ("tftp.sent", grub),
        ("tftp.sent", "grub/grub.cfg ("),
        ("tftp.sent", "grub/grub.cfg-"),
        ("http.script", "bootenv discovery"),
        ("tftp.sent", kernel),
    ]
}

/// The operational image's steps after the kernel (its kernel and initrd came by TFTP).
fn image_steps() -> Vec<(&'static str, &'static str)> {
    IMAGE_STEPS
        .iter()
        .filter(|(k, _)| !matches!(*k, "http.script" | "http.kernel" | "http.initrd"))
        .copied()
        .collect()
}

/// A Secure Boot VM of `firmware` boots the GRUB chain to `configured`; its kernel says Secure
/// Boot is on and it is locked down; `explain` shows the GRUB config it was given.
fn boots_through_grub(name: &str, firmware: Firmware, shim: &str, grub: &str, kernel: &str) {
    let rb = secure_appliance(name, &[("discovery.toml", grub_discovery())]).prepare();
    boot_network(&rb.lab);
    rb.serve();
    let vm = rb.lab.vm(name, firmware).secure_boot().start();
    let watch = Watch::new(&rb, &vm);
    let n = watch.configured(vm.mac(), BOOT_TIMEOUT);
    watch.assert_steps(&n, &[&chain_steps(shim, grub, kernel), &image_steps()]);
    // No iPXE anywhere: the firmware would have refused it.
    let events = kinds(&n);
    assert!(
        !events.iter().any(|(_, d)| d.contains("ipxe")),
        "{}",
        watch.diagnosis(Some(&n))
    );
    // Secure Boot on and enforced the whole way: the kernel the firmware, shim and GRUB
    // verified says so, and runs locked down.
    vm.wait_for_serial("secureboot: Secure boot enabled", Duration::from_secs(5));
    vm.wait_for_serial("Kernel is locked down", Duration::from_secs(5));
    vm.wait_for_serial("rackboot-agent: configured", Duration::from_secs(10));

    let e = rb.get(&format!("/api/v1/explain/{}", vm.mac())).json();
    assert_eq!(e["loader"], "grub", "{e}");
    assert_eq!(e["boot_file"].as_str(), Some(shim), "{e}");
    let cfg = e["grub_config"].as_str().unwrap_or_default();
    assert!(cfg.contains(&format!("linux /{kernel} ")), "{e}");
    assert!(
        cfg.contains("rackboot.token=<node-token>") || cfg.contains("rackboot.token="),
        "{e}"
    );
}

#[test]
fn x86_64_secure_boot_vm_boots_shim_grub_and_the_signed_kernel_to_configured() {
    boots_through_grub(
        "sb-x86",
        Firmware::X86Uefi,
        "shimx64.efi",
        "grubx64.efi",
        "x86_64/vmlinuz",
    );
}

#[test]
fn arm64_secure_boot_vm_boots_shim_grub_and_the_signed_kernel_to_configured() {
    boots_through_grub(
        "sb-arm64",
        Firmware::Arm64Uefi,
        "shimaa64.efi",
        "grubaa64.efi",
        "arm64/Image",
    );
}

/// The same Secure Boot VM handed rackboot's (unsigned) iPXE: its firmware refuses it, and the
/// node's diagnosis says the loader went out and nothing came of it, naming the way out.
#[test]
fn a_secure_boot_vm_refuses_unsigned_ipxe_and_the_diagnosis_says_so() {
    let discovery = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("configs/bootenvs/discovery.toml"),
    )
    .expect("discovery.toml");
    let rb = secure_appliance("sb-refused", &[("discovery.toml", discovery)])
        .table("lifecycle", "report_timeout = \"20s\"")
        .prepare();
    boot_network(&rb.lab);
    rb.serve();
    let vm = rb
        .lab
        .vm("sb-refused", Firmware::X86Uefi)
        .secure_boot()
        .start();
    vm.wait_for_serial("Access Denied", BOOT_TIMEOUT);
    let watch = Watch::new(&rb, &vm);
    let n = watch.node(vm.mac(), BOOT_TIMEOUT, "the stalled boot diagnosed", |n| {
        Ok((n["state"] == "failed").then(|| n.clone()))
    });
    // Refused by PXE, the firmware goes on to UEFI HTTP boot, which is handed iPXE again.
    watch.assert_steps(
        &n,
        &[&[
            ("dhcp.ack", "ipxe-amd64.efi"),
            ("tftp.sent", "ipxe-amd64.efi"),
        ]],
    );
    let reason = n["state_reason"].as_str().unwrap_or_default();
    assert!(
        reason.contains("ipxe-amd64.efi")
            && reason.contains("was sent at")
            && reason.contains("nothing came from it"),
        "{reason}\n{}",
        timeline_text(&n)
    );
    assert!(reason.contains("loader = \"grub\""), "{reason}");
    assert!(
        !kinds(&n).iter().any(|(k, _)| k == "http.script"),
        "{}",
        timeline_text(&n)
    );
}

/// A disk whose EFI system partition holds the signed shim and GRUB at the removable-media path
/// and a `grub/grub.cfg` that prints `marker`: what a locally installed system starts.
fn local_disk(rb: &Server, marker: &str) -> String {
    let dir = rb.path("disk");
    std::fs::create_dir_all(dir.join("EFI/BOOT")).unwrap();
    std::fs::create_dir_all(dir.join("grub")).unwrap();
    std::fs::copy(dist_file("shimx64.efi"), dir.join("EFI/BOOT/BOOTX64.EFI")).unwrap();
    std::fs::copy(dist_file("grubx64.efi"), dir.join("EFI/BOOT/grubx64.efi")).unwrap();
    std::fs::write(
        dir.join("grub/grub.cfg"),
        format!("echo \"{marker}\"\nsleep 600\n"),
    )
    .unwrap();
    // qemu's vvfat: the directory as a read-only FAT disk.
    format!(
        "file=fat:{},format=raw,if=none,id=disk0,readonly=on",
        dir.display()
    )
}

/// A Secure Boot machine (its record says `loader = "grub"`) whose bootenv is `local` is given
/// an installer for one boot: GRUB boots the installer once, the installer calls back and the VM
/// reboots, and the next boot goes through GRUB to the machine's own disk, whose signed loader
/// GRUB hands over to.
#[test]
fn once_only_and_local_bootenvs_work_through_grub() {
    let rb = secure_appliance(
        "sb-local",
        &[
            (
                "installer.toml",
                installer_bootenv("loader = \"grub\"\n", &["x86_64_efi"]),
            ),
            ("discovery.toml", grub_discovery()),
        ],
    )
    .prepare();
    boot_network(&rb.lab);
    rb.serve();
    let marker = "rackboot-test: the local disk booted";
    let disk = local_disk(&rb, marker);
    let mac = "52:54:00:5b:00:01";
    let body = format!(
        r#"{{"mac":"{mac}","hostname":"sb-local","bootenv":"local","next_bootenv":"installer","loader":"grub"}}"#
    );
    let r = rb.request(
        "POST",
        "/api/v1/nodes",
        Some(common::api::ADMIN_TOKEN),
        Some(&body),
    );
    assert!(r.status < 300, "create node: {} {}", r.status, r.text());
    let vm = rb
        .lab
        .vm("sb-local", Firmware::X86Uefi)
        .secure_boot()
        .mac(mac)
        .allow_reboot()
        .arg("-drive")
        .arg(&disk)
        .arg("-device")
        .arg("virtio-blk-pci,drive=disk0,bootindex=2")
        .start();
    let watch = Watch::new(&rb, &vm);
    let n = watch.installed_then_local(mac, BOOT_TIMEOUT);
    watch.assert_steps(
        &n,
        &[&[
            ("dhcp.ack", "shimx64.efi"),
            ("tftp.sent", "grub/grub.cfg-"),
            ("http.script", "bootenv installer"),
            ("tftp.sent", "x86_64/vmlinuz"),
            ("report.installed", "bootenv installer"),
            ("dhcp.ack", "shimx64.efi"),
            ("tftp.sent", "grub/grub.cfg ("),
            // A local boot takes effect when its config is rendered (no kernel follows).
            ("http.script", "bootenv local"),
            ("tftp.start", "grub/grub.cfg-"),
        ]],
    );
    // The once-only bootenv was used once, and is gone from the record.
    assert_eq!(boots_of(&n, "installer"), 1, "{}", timeline_text(&n));
    assert!(n["next_bootenv"].is_null(), "{n}");
    assert_eq!(n["bootenv"], "local", "{n}");
    // GRUB handed the machine to its disk's own signed loader, still under Secure Boot.
    vm.wait_for_serial(marker, Duration::from_secs(120));
    let serial = vm.serial();
    assert!(
        serial.contains("boots from its local disk"),
        "{}",
        common::lab::tail(&serial, 40)
    );
}
