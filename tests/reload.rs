//! Bootenvs change without a restart: an edited file is in force within seconds; a broken one
//! is refused with its file and line, counted in /metrics, and the previous version keeps
//! serving; SIGHUP reloads at once.

mod common;

use std::time::Duration;

use common::lab;
use common::server::Server;
use common::setup::Setup;

const WAIT: Duration = Duration::from_secs(20);
const MAC: &str = "52:54:00:aa:00:42";

fn bootenv(console: &str) -> String {
    format!(
        "scripts = [\"hello.sh\"]\n[arch.bios]\nkernel = \"vmlinuz\"\ninitrds = [\"initrd.img\"]\n\
         cmdline = \"console={console} rackboot.url={{{{ server_url }}}}\"\n"
    )
}

fn script(rb: &Server) -> String {
    rb.get(&format!("/boot/{MAC}.ipxe?arch=bios")).text()
}

fn wait_for(what: &str, mut f: impl FnMut() -> bool) {
    assert!(
        lab::poll_until(WAIT, || f().then_some(())).is_some(),
        "timed out waiting for {what}"
    );
}

#[test]
fn edited_bootenvs_apply_without_restart_and_broken_ones_are_refused() {
    // Boot scripts go to any address (the documented opt-out): this test's curl asks for a
    // node's script from rackboot's own address.
    let rb = Setup::new("reload")
        .no_address()
        .no_api_tokens()
        .lab_subnet(10, 20)
        .tftp("")
        .tokens_from_any_address()
        .file("assets/vmlinuz", "kernel")
        .file("assets/initrd.img", "initrd")
        .file("scripts/hello.sh", "echo hi\n")
        .file("bootenvs/discovery.toml", bootenv("ttyS0"))
        .start();
    assert!(script(&rb).contains("console=ttyS0"), "{}", script(&rb));

    // An edit is in force within a few seconds.
    let file = rb.path("bootenvs/discovery.toml");
    std::fs::write(&file, bootenv("ttyS1")).unwrap();
    wait_for("the edited command line", || {
        script(&rb).contains("console=ttyS1")
    });
    assert_eq!(
        rb.try_metric("rackboot_catalog_reloads_total{result=\"applied\"}"),
        Some(1.0)
    );

    // A broken file is refused with file and line; the last good version keeps serving.
    std::fs::write(
        &file,
        "scripts = [\"hello.sh\"]\n[arch.bios\nkernel = \"vmlinuz\"\n",
    )
    .unwrap();
    wait_for("the rejection in the log", || {
        rb.log_text().contains("refused (files changed)")
    });
    let text = rb.log_text();
    let line = text
        .lines()
        .find(|l| l.contains("refused (files changed)"))
        .unwrap();
    assert!(
        line.contains(&file.display().to_string()) && line.contains("line 2"),
        "{line}"
    );
    assert!(
        script(&rb).contains("console=ttyS1"),
        "the previous version serves: {}",
        script(&rb)
    );
    assert_eq!(
        rb.try_metric("rackboot_catalog_reloads_total{result=\"rejected\"}"),
        Some(1.0)
    );
    assert_eq!(rb.try_metric("rackboot_catalog_files_ok"), Some(0.0));

    // A bootenv naming a kernel that does not exist is refused too.
    std::fs::write(&file, bootenv("ttyS2").replace("\"vmlinuz\"", "\"gone\"")).unwrap();
    wait_for("the second rejection", || {
        rb.try_metric("rackboot_catalog_reloads_total{result=\"rejected\"}") == Some(2.0)
    });
    assert!(
        rb.log_text()
            .contains("`gone` is not in the assets directory")
    );
    assert!(script(&rb).contains("console=ttyS1"));

    // Fixed, and SIGHUP reloads at once (the poll would too, a little later).
    std::fs::write(&file, bootenv("ttyS3")).unwrap();
    rb.lab.signal(rb.pid(), "HUP");
    wait_for("the fixed file", || script(&rb).contains("console=ttyS3"));
    assert_eq!(rb.try_metric("rackboot_catalog_files_ok"), Some(1.0));
    assert!(rb.is_running(), "rackboot kept serving throughout");
}
