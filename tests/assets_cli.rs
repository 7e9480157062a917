//! `rackboot assets add` as an operator runs it: the real binary, the real
//! Debian arm64 kernel, a config in a temporary directory.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn arm64_kernel() -> Option<PathBuf> {
    let p = Path::new(env!("CARGO_MANIFEST_DIR")).join("boot-assets/dist/arm64/Image");
    if p.exists() {
        Some(p)
    } else {
        eprintln!(
            "SKIP: {} is missing (fetch the Debian boot assets)",
            p.display()
        );
        None
    }
}

/// A minimal valid config whose assets_dir is `<dir>/assets`.
fn config(dir: &Path) -> PathBuf {
    let path = dir.join("rackboot.toml");
    std::fs::write(
        &path,
        "state_dir = \"state\"\nassets_dir = \"assets\"\n\
         [network]\ninterface = \"lo\"\n[dhcp]\nenabled = false\n",
    )
    .unwrap();
    path
}

fn add(config: &Path, arch: &str, kernel: &Path) -> Output {
    Command::new(env!("CARGO_BIN_EXE_rackboot"))
        .args(["assets", "add", "--config"])
        .arg(config)
        .args(["--arch", arch, "--kernel"])
        .arg(kernel)
        .output()
        .unwrap()
}

#[test]
fn assets_add_refuses_wrong_arch_and_stores_the_right_one() {
    let Some(kernel) = arm64_kernel() else { return };
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path());
    let store = dir.path().join("assets/sha256");

    let out = add(&cfg, "x86_64", &kernel);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "wrong arch accepted: {stderr}");
    assert!(
        stderr.contains(&kernel.display().to_string()) && stderr.contains("is for arm64"),
        "{stderr}"
    );
    assert!(
        !store.exists(),
        "a refused import wrote {}",
        store.display()
    );

    let out = add(&cfg, "arm64", &kernel);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stored: Vec<_> = std::fs::read_dir(&store)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    assert_eq!(stored.len(), 1, "{stored:?}");
    assert_eq!(stored[0].len(), 64, "{stored:?}");
    assert_eq!(
        std::fs::metadata(store.join(&stored[0])).unwrap().len(),
        std::fs::metadata(&kernel).unwrap().len()
    );
    assert!(
        stdout.contains("[arch.arm64_efi]")
            && stdout.contains(&format!("kernel = \"sha256/{}\"", stored[0])),
        "{stdout}"
    );
}
