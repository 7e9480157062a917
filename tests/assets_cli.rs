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

/// `assets add --bootenv BOOTENV --arch ARCH --config CONFIG --kernel KERNEL`.
fn add_command(config: &Path, bootenv: &str, arch: &str, kernel: &Path) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_rackboot"));
    c.args(["assets", "add", "--bootenv", bootenv, "--arch", arch])
        .arg("--config")
        .arg(config)
        .arg("--kernel")
        .arg(kernel);
    c
}

/// `assets add --bootenv` with initrds.
fn add_to(config: &Path, bootenv: &str, arch: &str, kernel: &Path, initrd: &Path) -> Output {
    add_command(config, bootenv, arch, kernel)
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

// ---------------------------------------------------------------------------------------------
// What is a kernel: EFI applications, unified kernel images, compressed kernels and kernels
// without the EFI stub their table needs are refused with the file named and what to do. The
// fixtures are synthesized headers (just the bytes detection reads), not real binaries.

/// An x86 setup header ("HdrS" at 0x202, boot protocol 2.15, 64-bit), optionally behind the
/// MZ/PE header of the EFI stub, as CONFIG_EFI_STUB builds it: one file, both formats.
fn bzimage(efi_stub: bool) -> Vec<u8> {
    let mut b = vec![0u8; 8192];
    b[510] = 0x55;
    b[511] = 0xAA;
    b[0x202..0x206].copy_from_slice(b"HdrS");
    b[0x206..0x208].copy_from_slice(&0x020fu16.to_le_bytes());
    b[0x236..0x238].copy_from_slice(&1u16.to_le_bytes());
    if efi_stub {
        pe_header(&mut b, 0x8664, &[".setup", ".reloc", ".compat", ".text"]);
    }
    b
}

/// "MZ", e_lfanew = 0x400 (after the x86 setup header, as in a kernel), "PE\0\0", the COFF
/// header with `machine` and a 0xF0-byte optional header, then one 40-byte section header per
/// name.
fn pe_header(b: &mut [u8], machine: u16, sections: &[&str]) {
    const PE: usize = 0x400;
    b[0..2].copy_from_slice(b"MZ");
    b[0x3c..0x40].copy_from_slice(&(PE as u32).to_le_bytes());
    b[PE..PE + 4].copy_from_slice(b"PE\0\0");
    b[PE + 4..PE + 6].copy_from_slice(&machine.to_le_bytes());
    b[PE + 6..PE + 8].copy_from_slice(&(sections.len() as u16).to_le_bytes());
    b[PE + 20..PE + 22].copy_from_slice(&0xF0u16.to_le_bytes());
    let table = PE + 24 + 0xF0;
    for (i, name) in sections.iter().enumerate() {
        let at = table + 40 * i;
        b[at..at + name.len()].copy_from_slice(name.as_bytes());
    }
}

/// A PE/COFF EFI application such as iPXE's ipxe-amd64.efi: no Linux header anywhere.
fn efi_application(machine: u16) -> Vec<u8> {
    let mut b = vec![0u8; 8192];
    pe_header(&mut b, machine, &[".text", ".data", ".reloc"]);
    b
}

fn write_fixture(dir: &Path, name: &str, bytes: &[u8]) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, bytes).unwrap();
    p
}

/// `assets add` (with `--bootenv NAME` when given) must fail saying `wants`, naming the file,
/// and change nothing: no stored file, no bootenv.
fn refused(cfg: &Path, arch: &str, kernel: &Path, bootenv: Option<&str>, wants: &[&str]) {
    let dir = cfg.parent().unwrap();
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_rackboot"));
    cmd.args(["assets", "add", "--config"])
        .arg(cfg)
        .args(["--arch", arch, "--kernel"])
        .arg(kernel);
    if let Some(b) = bootenv {
        cmd.args(["--bootenv", b]);
    }
    let out = cmd.output().unwrap();
    let all = text(&out);
    assert!(
        !out.status.success(),
        "{} accepted as {arch}: {all}",
        kernel.display()
    );
    assert!(
        all.contains(&kernel.display().to_string()),
        "the file is not named: {all}"
    );
    for w in wants {
        assert!(all.contains(w), "wanted `{w}` in: {all}");
    }
    assert_eq!(
        listing(&dir.join("assets/sha256")),
        Vec::<String>::new(),
        "a refused kernel was stored: {all}"
    );
    let bootenvs: Vec<String> = listing(&dir.join("bootenvs"))
        .into_iter()
        .filter(|n| n != ".rackboot-edit.lock")
        .collect();
    assert_eq!(
        bootenvs,
        vec!["discovery.toml".to_string()],
        "a refused kernel changed the bootenvs: {all}"
    );
}

#[test]
fn an_efi_application_is_not_taken_as_a_kernel() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path());
    let src = tempfile::tempdir().unwrap();
    let ipxe = write_fixture(src.path(), "ipxe-amd64.efi", &efi_application(0x8664));
    let what = "is an x86_64 EFI application, not a Linux kernel";
    for arch in ["x86_64", "bios", "x86_64_efi"] {
        refused(&cfg, arch, &ipxe, Some("efi"), &[what, "iPXE", "bzImage"]);
        refused(&cfg, arch, &ipxe, None, &[what]);
    }
    let arm = write_fixture(src.path(), "ipxe-arm64.efi", &efi_application(0xAA64));
    refused(
        &cfg,
        "arm64",
        &arm,
        Some("efi"),
        &["is an arm64 EFI application, not a Linux kernel"],
    );
    // The real loaders, when boot-assets/setup.sh has fetched them.
    for loader in ["ipxe-amd64.efi", "snponly.efi"] {
        if let Some(real) = dist(loader) {
            refused(&cfg, "x86_64", &real, Some("efi"), &[what]);
        }
    }
    if let Some(real) = dist("ipxe-arm64.efi") {
        refused(
            &cfg,
            "arm64",
            &real,
            Some("efi"),
            &["arm64 EFI application"],
        );
    }
    if let Some(real) = dist("undionly.kpxe") {
        refused(&cfg, "bios", &real, Some("efi"), &["not a Linux kernel"]);
    }

    // `assets identify` says the same, and fails.
    let out = Command::new(env!("CARGO_BIN_EXE_rackboot"))
        .args(["assets", "identify"])
        .arg(&ipxe)
        .output()
        .unwrap();
    assert!(!out.status.success(), "{}", text(&out));
    assert!(text(&out).contains(what), "{}", text(&out));
}

#[test]
fn a_kernel_is_checked_against_the_firmware_of_each_table_it_fills() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path());
    let src = tempfile::tempdir().unwrap();

    // No EFI stub: UEFI cannot run it, BIOS can.
    let plain = write_fixture(src.path(), "bzImage", &bzimage(false));
    for arch in ["x86_64", "x86_64_efi"] {
        refused(
            &cfg,
            arch,
            &plain,
            Some("k"),
            &[
                "without an EFI stub",
                "[arch.x86_64_efi]",
                "CONFIG_EFI_STUB",
            ],
        );
    }
    let out = add_bootenv(&cfg, "plain", "bios", &plain);
    assert!(out.status.success(), "{}", text(&out));

    // With the stub: both tables.
    let stub = write_fixture(src.path(), "vmlinuz", &bzimage(true));
    let out = add_bootenv(&cfg, "stub", "x86_64", &stub);
    assert!(out.status.success(), "{}", text(&out));
    let written = std::fs::read_to_string(dir.path().join("bootenvs/stub.toml")).unwrap();
    assert!(
        written.contains("[arch.bios]") && written.contains("[arch.x86_64_efi]"),
        "{written}"
    );
}

#[test]
fn compressed_and_unified_kernels_say_what_to_do() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path());
    let src = tempfile::tempdir().unwrap();

    // Debian's arm64 vmlinuz is a gzip'd Image: refused, with the command that makes the Image.
    let gz = write_fixture(src.path(), "vmlinuz-arm64", &[0x1f, 0x8b, 8, 0, 0, 0, 0, 0]);
    refused(
        &cfg,
        "arm64",
        &gz,
        Some("k"),
        &["gzip-compressed", "zcat", "does not decompress"],
    );

    // A unified kernel image: an EFI application carrying the kernel in its .linux section.
    let mut uki = vec![0u8; 8192];
    pe_header(
        &mut uki,
        0x8664,
        &[".text", ".osrel", ".cmdline", ".linux", ".initrd"],
    );
    let uki = write_fixture(src.path(), "linux.efi", &uki);
    refused(
        &cfg,
        "x86_64",
        &uki,
        Some("k"),
        &["unified kernel image", ".linux", "objcopy"],
    );

    // An arm64 EFI zboot kernel ("zimg" at 4) decompresses itself under UEFI: taken as is.
    let mut zboot = vec![0u8; 8192];
    pe_header(&mut zboot, 0xAA64, &[".text", ".data"]);
    zboot[4..8].copy_from_slice(b"zimg");
    zboot[24..29].copy_from_slice(b"gzip\0");
    let zboot = write_fixture(src.path(), "vmlinuz.efi", &zboot);
    refused(
        &cfg,
        "x86_64",
        &zboot,
        Some("k"),
        &["arm64 EFI zboot", "is for arm64"],
    );
    let out = add_bootenv(&cfg, "zboot", "arm64", &zboot);
    assert!(out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("arm64 EFI zboot"), "{}", text(&out));
}

/// `assets add --bootenv` with the kernel alone.
fn add_bootenv(config: &Path, bootenv: &str, arch: &str, kernel: &Path) -> Output {
    add_command(config, bootenv, arch, kernel).output().unwrap()
}

/// `assets add` says whether a kernel is signed for Secure Boot, and warns when a bootenv that
/// boots through GRUB (`loader = "grub"`) is given an unsigned one; Debian's own kernel is signed
/// and draws no warning. `assets identify` says the same.
#[test]
fn assets_add_knows_signed_kernels_and_warns_a_secure_boot_bootenv_of_an_unsigned_one() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path());
    std::fs::write(
        dir.path().join("bootenvs/secure.toml"),
        "loader = \"grub\"\n[arch.x86_64_efi]\nkernel = \"placeholder\"\n\
         cmdline = \"console=ttyS0 rackboot.url={{ server_url }}\"\n",
    )
    .unwrap();
    let initrd = write_fixture(dir.path(), "initrd.img", b"initrd");
    let unsigned = write_fixture(dir.path(), "vmlinuz-unsigned", &bzimage(true));
    let out = add_to(&cfg, "secure", "x86_64_efi", &unsigned, &initrd);
    let t = text(&out);
    assert!(out.status.success(), "{t}");
    assert!(
        t.contains("warning: bootenv secure boots through GRUB")
            && t.contains("vmlinuz-unsigned")
            && t.contains("will refuse it"),
        "{t}"
    );
    // The same kernel into a bootenv booted through iPXE: no warning.
    let out = add_to(&cfg, "plain", "x86_64_efi", &unsigned, &initrd);
    assert!(
        out.status.success() && !text(&out).contains("warning"),
        "{}",
        text(&out)
    );

    let Some(signed) = dist("x86_64/vmlinuz") else {
        return;
    };
    let out = add_to(&cfg, "secure", "x86_64_efi", &signed, &initrd);
    let t = text(&out);
    assert!(out.status.success(), "{t}");
    assert!(t.contains("signed (Authenticode)"), "{t}");
    assert!(!t.contains("warning"), "{t}");
    let out = Command::new(env!("CARGO_BIN_EXE_rackboot"))
        .args(["assets", "identify"])
        .arg(&signed)
        .output()
        .unwrap();
    assert!(
        text(&out).contains("signed (Authenticode)"),
        "{}",
        text(&out)
    );
}
