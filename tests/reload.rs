//! Bootenvs change without a restart: an edited file is in force within seconds; a broken one
//! is refused with its file and line, counted in /metrics, and the previous version keeps
//! serving; SIGHUP reloads at once.

mod common;

use std::path::PathBuf;
use std::time::Duration;

use common::lab::{self, BRIDGE, Lab, SERVER_IP};

const WAIT: Duration = Duration::from_secs(20);
const MAC: &str = "52:54:00:aa:00:42";

fn bootenv(console: &str) -> String {
    format!(
        "scripts = [\"hello.sh\"]\n[arch.bios]\nkernel = \"vmlinuz\"\ninitrds = [\"initrd.img\"]\n\
         cmdline = \"console={console} rackboot.url={{{{ server_url }}}}\"\n"
    )
}

/// Boot scripts go to any address (the documented opt-out): this test's curl asks for a node's
/// script from rackboot's own address.
fn setup(lab: &Lab) -> PathBuf {
    let d = lab.dir();
    for sub in ["assets", "bootenvs", "scripts"] {
        std::fs::create_dir_all(d.join(sub)).unwrap();
    }
    std::fs::write(d.join("assets/vmlinuz"), b"kernel").unwrap();
    std::fs::write(d.join("assets/initrd.img"), b"initrd").unwrap();
    std::fs::write(d.join("scripts/hello.sh"), "echo hi\n").unwrap();
    std::fs::write(d.join("bootenvs/discovery.toml"), bootenv("ttyS0")).unwrap();
    let config = d.join("rackboot.toml");
    std::fs::write(
        &config,
        format!(
            "state_dir = \"{p}/state\"\nassets_dir = \"{p}/assets\"\nbootenvs_dir = \"{p}/bootenvs\"\n\
             scripts_dir = \"{p}/scripts\"\n[network]\ninterface = \"{BRIDGE}\"\n\
             [[dhcp.subnet]]\ncidr = \"10.77.0.0/24\"\nranges = [[\"10.77.0.10\", \"10.77.0.20\"]]\n\
             [dns]\nenabled = false\n\
             [http]\nbind_tokens_to_address = false\n",
            p = d.display()
        ),
    )
    .unwrap();
    config
}

fn get(lab: &Lab, path: &str) -> String {
    let out = lab.run(
        "curl",
        &["-s", "-m", "5", &format!("http://{SERVER_IP}{path}")],
        WAIT,
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn script(lab: &Lab) -> String {
    get(lab, &format!("/boot/{MAC}.ipxe?arch=bios"))
}

fn metric(lab: &Lab, line_start: &str) -> Option<f64> {
    get(lab, "/metrics")
        .lines()
        .find(|l| l.starts_with(line_start))
        .and_then(|l| l.rsplit(' ').next()?.parse().ok())
}

fn wait_for(what: &str, mut f: impl FnMut() -> bool) {
    assert!(
        lab::poll_until(WAIT, || f().then_some(())).is_some(),
        "timed out waiting for {what}"
    );
}

#[test]
fn edited_bootenvs_apply_without_restart_and_broken_ones_are_refused() {
    let lab = Lab::new("reload");
    let config = setup(&lab);
    let log = lab.dir().join("rackboot.log");
    let pid = lab.spawn(
        env!("CARGO_BIN_EXE_rackboot"),
        &["serve", "--config", config.to_str().unwrap()],
        &log,
    );
    lab::wait_for_file(&log, "rackboot serving", WAIT).unwrap_or_else(|e| panic!("{e}"));
    assert!(script(&lab).contains("console=ttyS0"), "{}", script(&lab));

    // An edit is in force within a few seconds.
    let file = lab.dir().join("bootenvs/discovery.toml");
    std::fs::write(&file, bootenv("ttyS1")).unwrap();
    wait_for("the edited command line", || {
        script(&lab).contains("console=ttyS1")
    });
    assert_eq!(
        metric(&lab, "rackboot_catalog_reloads_total{result=\"applied\"}"),
        Some(1.0)
    );

    // A broken file is refused with file and line; the last good version keeps serving.
    std::fs::write(
        &file,
        "scripts = [\"hello.sh\"]\n[arch.bios\nkernel = \"vmlinuz\"\n",
    )
    .unwrap();
    wait_for("the rejection in the log", || {
        lab::read_text(&log).contains("refused (files changed)")
    });
    let text = lab::read_text(&log);
    let line = text
        .lines()
        .find(|l| l.contains("refused (files changed)"))
        .unwrap();
    assert!(
        line.contains(&file.display().to_string()) && line.contains("line 2"),
        "{line}"
    );
    assert!(
        script(&lab).contains("console=ttyS1"),
        "the previous version serves: {}",
        script(&lab)
    );
    assert_eq!(
        metric(&lab, "rackboot_catalog_reloads_total{result=\"rejected\"}"),
        Some(1.0)
    );
    assert_eq!(metric(&lab, "rackboot_catalog_files_ok "), Some(0.0));

    // A bootenv naming a kernel that does not exist is refused too.
    std::fs::write(&file, bootenv("ttyS2").replace("\"vmlinuz\"", "\"gone\"")).unwrap();
    wait_for("the second rejection", || {
        metric(&lab, "rackboot_catalog_reloads_total{result=\"rejected\"}") == Some(2.0)
    });
    assert!(lab::read_text(&log).contains("`gone` is not in the assets directory"));
    assert!(script(&lab).contains("console=ttyS1"));

    // Fixed, and SIGHUP reloads at once (the poll would too, a little later).
    std::fs::write(&file, bootenv("ttyS3")).unwrap();
    let out = std::process::Command::new("kill")
        .args(["-HUP", &pid.to_string()])
        .output()
        .unwrap();
    assert!(out.status.success());
    wait_for("the fixed file", || script(&lab).contains("console=ttyS3"));
    assert_eq!(metric(&lab, "rackboot_catalog_files_ok "), Some(1.0));
    assert!(lab.is_running(pid), "rackboot kept serving throughout");
}
