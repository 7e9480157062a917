//! The install-complete callback against real firmware: a diskless qemu VM netboots an "installer"
//! bootenv (`installer = true`; the operational image with `rackboot.installed=1`, which calls
//! `POST /node/<mac>/installed` and reboots, as a kickstart %post would), the node becomes
//! `installed` with bootenv `local`, the VM reboots by itself, and its second boot is handed
//! `local`, not the installer again.
//!
//! Needs root, the packages and assets of `boot-assets/setup.sh` (the image built from this
//! checkout's `boot-assets/image/init`). Every wait is bounded; the lab removes its namespace and
//! processes also when the test fails.

mod common;

use std::time::{Duration, Instant};

use common::api::timeline_text;
use common::lab::Firmware;
use common::vm_watch::{Watch, appliance, boot_network, boots_of, installer_bootenv};

/// Two boots of one VM under TCG: ~30 s to the callback, ~15 s to the second script.
const TIMEOUT: Duration = Duration::from_secs(240);

#[test]
fn an_installer_calls_back_and_the_next_boot_goes_local() {
    // A bootenvs directory of its own, in which every new node gets `installer`.
    let rb = appliance("vm-install")
        .file("bootenvs/installer.toml", installer_bootenv("", &["bios"]))
        .table("boot", "default_bootenv = \"installer\"")
        .prepare();
    boot_network(&rb.lab);
    rb.serve();
    let started = Instant::now();
    let vm = rb
        .lab
        .vm("vm-install", Firmware::X86Bios)
        .allow_reboot()
        .start();
    let watch = Watch::new(&rb, &vm);

    // Done when a script for `local` was rendered after the callback.
    let n = watch.installed_then_local(vm.mac(), TIMEOUT);
    eprintln!(
        "vm-install: second boot handed local after {:.1} s\n{}",
        started.elapsed().as_secs_f64(),
        timeline_text(&n)
    );

    // The whole story, in this order (other events may sit in between).
    watch.assert_steps(
        &n,
        &[&[
            ("http.script", "bootenv installer, arch bios"),
            ("state", "-> installing"),
            ("http.kernel", "x86_64/vmlinuz"),
            ("report.installed", "bootenv installer"),
            ("state", "installing -> installed"),
            ("bootenv.changed", "installer -> local"),
            ("http.script", "bootenv local, arch bios"),
        ]],
    );
    // The installer's script was rendered exactly once: no loop back into it.
    assert_eq!(
        boots_of(&n, "installer"),
        1,
        "{}",
        watch.diagnosis(Some(&n))
    );

    // The record as the API shows it.
    assert_eq!(n["state"].as_str(), Some("installed"), "{n}");
    assert_eq!(n["bootenv"].as_str(), Some("local"), "{n}");
    assert!(n["next_bootenv"].is_null(), "{n}");
    assert!(n["bootenv_expires"].is_null(), "{n}");
    // The VM rebooted by itself (same qemu process) after the agent's callback.
    vm.wait_for_serial(
        "rackboot-agent: installed, rebooting",
        Duration::from_secs(5),
    );
    assert!(vm.exit_status().is_none(), "qemu should still be running");
}
