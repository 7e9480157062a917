//! The README's "Running it as a service" recipe, followed as written in a scratch root: its
//! commands run one by one from a copy of the checkout, with `/etc`, `/srv` and `/usr/local/bin`
//! under a temporary directory. `cargo build` is replaced by the binary under test and
//! `systemctl` is not run (no systemd here); every other line runs as it is. The installed
//! `rackboot check` must then pass on a machine whose boot network is the example's (a lab
//! namespace with `br0` = 10.77.0.1/24), and refuse, naming the file and key, where
//! `network.interface` does not exist.
//!
//! Needs root (namespaces). Every command is bounded; the namespace goes when the lab drops.

mod common;

use std::path::Path;
use std::time::Duration;

use common::lab::Lab;

const STEP: Duration = Duration::from_secs(60);

/// The shell lines of the README's "Running it as a service" code block.
fn recipe() -> Vec<String> {
    let readme =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("README.md")).unwrap();
    let section = readme
        .split("\n## Running it as a service\n")
        .nth(1)
        .expect("README has a `## Running it as a service` section");
    let block = section
        .split("```sh\n")
        .nth(1)
        .and_then(|b| b.split("\n```").next())
        .expect("that section has a ```sh block");
    block.lines().map(str::to_string).collect()
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        if e.file_type().unwrap().is_dir() {
            copy_dir(&e.path(), &to.join(e.file_name()));
        } else {
            std::fs::copy(e.path(), to.join(e.file_name())).unwrap();
        }
    }
}

/// A bzImage (x86_64, EFI stub) or arm64 Image (EFI stub) header: what setup.sh puts in dist/.
fn kernel(arm64: bool) -> Vec<u8> {
    let mut b = vec![0u8; 4096];
    b[0..2].copy_from_slice(b"MZ");
    b[0x3c..0x40].copy_from_slice(&0x400u32.to_le_bytes());
    b[0x400..0x404].copy_from_slice(b"PE\0\0");
    if arm64 {
        b[0x404..0x406].copy_from_slice(&0xAA64u16.to_le_bytes());
        b[56..60].copy_from_slice(b"ARM\x64");
    } else {
        b[0x404..0x406].copy_from_slice(&0x8664u16.to_le_bytes());
        b[510] = 0x55;
        b[511] = 0xAA;
        b[0x202..0x206].copy_from_slice(b"HdrS");
        b[0x206..0x208].copy_from_slice(&0x020fu16.to_le_bytes());
        b[0x236..0x238].copy_from_slice(&1u16.to_le_bytes());
    }
    b
}

/// A checkout as the recipe expects it: configs/, systemd/, the built binary, and
/// boot-assets/dist/ as setup.sh leaves it (small stand-ins, same names).
fn checkout(dir: &Path) {
    let repo = Path::new(env!("CARGO_MANIFEST_DIR"));
    for d in ["configs", "systemd"] {
        copy_dir(&repo.join(d), &dir.join(d));
    }
    std::fs::create_dir_all(dir.join("target/release")).unwrap();
    std::fs::copy(
        env!("CARGO_BIN_EXE_rackboot"),
        dir.join("target/release/rackboot"),
    )
    .unwrap();
    let dist = dir.join("boot-assets/dist");
    for (name, bytes) in [
        ("undionly.kpxe", b"kpxe".to_vec()),
        ("ipxe-amd64.efi", b"efi".to_vec()),
        ("snponly.efi", b"efi".to_vec()),
        ("ipxe-arm64.efi", b"efi".to_vec()),
        ("x86_64/vmlinuz", kernel(false)),
        ("x86_64/initrd.img", b"initrd".to_vec()),
        ("arm64/Image", kernel(true)),
        ("arm64/initrd.img", b"initrd".to_vec()),
    ] {
        let p = dist.join(name);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, bytes).unwrap();
    }
}

/// `line` with the system directories it names moved under `root`.
fn rooted(line: &str, root: &Path) -> String {
    let r = root.display();
    line.replace(" /etc/", &format!(" {r}/etc/"))
        .replace(" /srv/", &format!(" {r}/srv/"))
        .replace(" /usr/local/bin/", &format!(" {r}/usr/local/bin/"))
}

/// The scratch root's stand-in for the edit the recipe asks for: the installed config names
/// `/srv/rackboot/assets` and `/var/lib/rackboot`, which are under `root` here. The network is
/// left as it is: the lab's is the example's.
fn reroot_config(root: &Path) {
    let path = root.join("etc/rackboot/rackboot.toml");
    let text = std::fs::read_to_string(&path).unwrap();
    let mut moved = 0;
    let text: Vec<String> = text
        .lines()
        .map(|l| {
            for key in ["state_dir = \"/", "assets_dir = \"/"] {
                if let Some(rest) = l.strip_prefix(key) {
                    moved += 1;
                    return format!("{}{}/{rest}", &key[..key.len() - 1], root.display());
                }
            }
            l.to_string()
        })
        .collect();
    assert_eq!(
        moved,
        2,
        "state_dir and assets_dir are absolute in {}",
        path.display()
    );
    std::fs::write(&path, text.join("\n") + "\n").unwrap();
}

fn text(o: &std::process::Output) -> String {
    format!(
        "exit {:?}\n--- stdout\n{}--- stderr\n{}",
        o.status.code(),
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

#[test]
fn the_readme_install_recipe_works_as_written_and_check_finds_a_missing_interface() {
    let lab = Lab::new("install");
    let tmp = tempfile::tempdir().unwrap();
    let (src, root) = (tmp.path().join("rackboot"), tmp.path().join("root"));
    checkout(&src);
    // What a clean Debian machine with systemd already has.
    let bin = root.join("usr/local/bin");
    for d in [
        bin.clone(),
        root.join("etc/systemd/system"),
        root.join("srv"),
    ] {
        std::fs::create_dir_all(d).unwrap();
    }

    let lines = recipe();
    let mut ran_check = false;
    let mut skipped = Vec::new();
    for line in &lines {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        // The binary under test stands for the release build; systemd is not running here.
        if line.starts_with("cargo build") || line.starts_with("systemctl") {
            skipped.push(line.to_string());
            continue;
        }
        if line.starts_with("rackboot check") {
            reroot_config(&root);
        }
        let cmd = format!(
            "cd '{}' && PATH='{}':\"$PATH\" {}",
            src.display(),
            bin.display(),
            rooted(line, &root)
        );
        // In the lab: its br0 (10.77.0.1/24) is the boot network the example config names.
        let out = lab.run("bash", &["-ec", &cmd], STEP);
        assert!(
            out.status.success(),
            "README step `{line}`:\n{}",
            text(&out)
        );
        if line.starts_with("rackboot check") {
            ran_check = true;
            let stdout = String::from_utf8_lossy(&out.stdout);
            assert!(
                stdout.contains("network.interface br0: ok, address 10.77.0.1")
                    && stdout.contains("bootenv discovery: bios, x86_64_efi, arm64_efi"),
                "{}",
                text(&out)
            );
        }
    }
    assert!(ran_check, "the recipe runs `rackboot check`: {lines:?}");
    assert_eq!(
        skipped.len(),
        2,
        "only the build and systemctl are skipped: {skipped:?}"
    );
    assert!(
        lines.last().is_some_and(|l| l.starts_with("systemctl")),
        "checked before systemd starts it: {lines:?}"
    );

    // The installed unit starts what was installed, with the installed config.
    let config = root.join("etc/rackboot/rackboot.toml");
    let unit = std::fs::read_to_string(root.join("etc/systemd/system/rackboot.service")).unwrap();
    assert!(
        unit.contains(
            "ExecStart=/usr/local/bin/rackboot serve --config /etc/rackboot/rackboot.toml"
        ),
        "{unit}"
    );
    assert!(bin.join("rackboot").is_file() && config.is_file());

    // The same install on a host without the example's br0: refused, file and key named.
    let installed = bin.join("rackboot");
    let out = lab.run(
        "unshare",
        &[
            "-n",
            installed.to_str().unwrap(),
            "check",
            "--config",
            config.to_str().unwrap(),
        ],
        STEP,
    );
    let all = text(&out);
    assert_eq!(out.status.code(), Some(1), "{all}");
    assert!(
        all.contains(&format!(
            "no network interface `br0` (network.interface in {})",
            config.display()
        )) && all.contains("this host has: lo"),
        "{all}"
    );
}
