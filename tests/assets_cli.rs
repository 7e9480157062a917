//! `rackboot assets add` as an operator runs it: the real binary, the real
//! Debian kernels of both architectures, a config in a temporary directory.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn arm64_kernel() -> Option<PathBuf> {
    dist("arm64/Image")
}

fn dist(rel: &str) -> Option<PathBuf> {
    let p = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("boot-assets/dist")
        .join(rel);
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

/// A minimal valid config whose assets_dir is `<dir>/assets`, with a
/// `discovery` bootenv (its kernel a placeholder) and one config script.
fn config(dir: &Path) -> PathBuf {
    for sub in ["assets", "bootenvs", "scripts"] {
        std::fs::create_dir_all(dir.join(sub)).unwrap();
    }
    std::fs::write(dir.join("assets/placeholder"), b"k").unwrap();
    std::fs::write(dir.join("scripts/hello.sh"), "echo hi\n").unwrap();
    std::fs::write(
        dir.join("bootenvs/discovery.toml"),
        "scripts = [\"hello.sh\"]\n[arch.x86_64_efi]\nkernel = \"placeholder\"\n\
         cmdline = \"console=ttyS7 rackboot.url={{ server_url }}\"\n",
    )
    .unwrap();
    let path = dir.join("rackboot.toml");
    std::fs::write(
        &path,
        "state_dir = \"state\"\nassets_dir = \"assets\"\n\
         [network]\ninterface = \"lo\"\n[dhcp]\nenabled = false\n",
    )
    .unwrap();
    path
}

fn rackboot(args: &[&str], config: &Path, rest: &[&Path]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_rackboot"))
        .args(args)
        .arg("--config")
        .arg(config)
        .args(rest)
        .output()
        .unwrap()
}

/// `assets add --bootenv` with initrds.
fn add_to(config: &Path, bootenv: &str, arch: &str, kernel: &Path, initrd: &Path) -> Output {
    Command::new(env!("CARGO_BIN_EXE_rackboot"))
        .args([
            "assets",
            "add",
            "--bootenv",
            bootenv,
            "--arch",
            arch,
            "--config",
        ])
        .arg(config)
        .arg("--kernel")
        .arg(kernel)
        .arg("--initrd")
        .arg(initrd)
        .output()
        .unwrap()
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

fn listing(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .map(|rd| {
            rd.map(|e| e.unwrap().file_name().into_string().unwrap())
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    names
}

#[test]
fn assets_add_bootenv_writes_a_bootenv_that_check_accepts() {
    let (Some(vmlinuz), Some(x_initrd), Some(image), Some(a_initrd)) = (
        dist("x86_64/vmlinuz"),
        dist("x86_64/initrd.img"),
        dist("arm64/Image"),
        dist("arm64/initrd.img"),
    ) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path());
    let file = dir.path().join("bootenvs/debian.toml");

    let out = add_to(&cfg, "debian", "x86_64", &vmlinuz, &x_initrd);
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        text(&out).contains("bootenv debian: created"),
        "{}",
        text(&out)
    );
    let out = add_to(&cfg, "debian", "arm64", &image, &a_initrd);
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        text(&out).contains("bootenv debian: updated"),
        "{}",
        text(&out)
    );

    let written = std::fs::read_to_string(&file).unwrap();
    let stored = listing(&dir.path().join("assets/sha256"));
    assert_eq!(stored.len(), 4, "{stored:?}");
    for table in ["[arch.bios]", "[arch.x86_64_efi]", "[arch.arm64_efi]"] {
        assert!(written.contains(table), "{table}: {written}");
    }
    for digest in &stored {
        assert!(written.contains(&format!("sha256/{digest}")), "{written}");
    }
    // Copied from discovery where it has one, the documented default elsewhere.
    assert!(written.contains("console=ttyS7"), "{written}");
    assert!(written.contains("console=ttyAMA0"), "{written}");

    let out = rackboot(&["check"], &cfg, &[]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        text(&out).contains("bootenv debian: bios, x86_64_efi, arm64_efi"),
        "{}",
        text(&out)
    );

    // The x86_64 kernel offered as the arm64 one: refused, nothing changed.
    let out = add_to(&cfg, "debian", "arm64", &vmlinuz, &a_initrd);
    assert!(!out.status.success(), "wrong arch accepted: {}", text(&out));
    assert!(text(&out).contains("is for x86_64"), "{}", text(&out));
    assert_eq!(std::fs::read_to_string(&file).unwrap(), written);
    assert_eq!(listing(&dir.path().join("assets/sha256")), stored);
    assert!(
        !listing(&dir.path().join("bootenvs"))
            .iter()
            .any(|n| n.ends_with(".tmp")),
        "no temporary files left"
    );
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
