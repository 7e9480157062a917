//! Boot assets: importing kernels and initrds into the assets directory.
//!
//! Owns recognising what a kernel file is from its first bytes
//! ([`detect_kernel`], pure), and storing files content-addressed under
//! `<assets_dir>/sha256/<hex digest>` ([`import`]) after checking the kernel
//! is built for the architecture the operator said it is for; then, in
//! submodules, naming them in a bootenv file ([`into_bootenv`]), watching a
//! drop folder for them ([`drop`](mod@drop)) and fetching the ones bootenvs name by URL
//! and digest ([`remote`]). It does not serve
//! anything: TFTP and HTTP serve the assets directory as they find it.

pub mod drop;
pub mod into_bootenv;
pub mod remote;

use std::fmt;
use std::fs::{self, File};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::atomic::{AtomicU64, Ordering};

use sha2::{Digest, Sha256};

use crate::model::BootArch;

/// How many leading bytes [`detect_kernel`] wants: the x86 setup header ends
/// well before 0x300, and every PE header seen in kernels sits below 4 KiB.
pub const DETECT_PREFIX: usize = 4096;

/// The directory under the assets directory that holds imported files.
pub const STORE_DIR: &str = "sha256";

/// The CPU a kernel runs on, as far as a bootenv cares: `bios` and
/// `x86_64_efi` nodes boot x86_64 kernels, `arm64_efi` nodes boot arm64 ones.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash)]
pub enum KernelArch {
    /// 32-bit x86 (or an x86 kernel whose boot protocol is too old to say).
    /// No rackboot architecture boots it; it exists so the refusal can say so.
    X86,
    X86_64,
    Arm64,
}

impl KernelArch {
    pub fn as_str(self) -> &'static str {
        match self {
            KernelArch::X86 => "x86 (32-bit)",
            KernelArch::X86_64 => "x86_64",
            KernelArch::Arm64 => "arm64",
        }
    }

    /// The kernel architecture a node of boot architecture `arch` needs.
    pub fn for_boot_arch(arch: BootArch) -> KernelArch {
        match arch {
            BootArch::Bios | BootArch::X86_64Efi => KernelArch::X86_64,
            BootArch::Arm64Efi => KernelArch::Arm64,
        }
    }

    /// The bootenv `[arch.…]` tables a kernel of this architecture can fill.
    pub fn boot_arches(self) -> Vec<BootArch> {
        BootArch::ALL
            .into_iter()
            .filter(|a| KernelArch::for_boot_arch(*a) == self)
            .collect()
    }
}

impl fmt::Display for KernelArch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Accepts what an operator types: `x86_64`/`amd64`, `arm64`/`aarch64`, or a
/// rackboot boot architecture (`bios`, `x86_64_efi`, `arm64_efi`).
impl FromStr for KernelArch {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "x86_64" | "amd64" => Ok(KernelArch::X86_64),
            "arm64" | "aarch64" => Ok(KernelArch::Arm64),
            other => other
                .parse::<BootArch>()
                .map(KernelArch::for_boot_arch)
                .map_err(|_| {
                    format!(
                        "unknown architecture `{other}` (expected x86_64 or arm64, \
                         or one of bios, x86_64_efi, arm64_efi)"
                    )
                }),
        }
    }
}

/// What `--arch` (or a drop folder's architecture directory) names: the
/// kernel architecture to check for, and the bootenv `[arch.…]` tables the
/// kernel fills. `x86_64` fills both `bios` and `x86_64_efi`; naming one boot
/// architecture (`x86_64_efi`) fills only that one.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ArchSpec {
    pub kernel: KernelArch,
    pub boot: Vec<BootArch>,
}

impl ArchSpec {
    pub fn all_of(kernel: KernelArch) -> ArchSpec {
        ArchSpec {
            kernel,
            boot: kernel.boot_arches(),
        }
    }
}

impl FromStr for ArchSpec {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.parse::<BootArch>() {
            Ok(boot) => Ok(ArchSpec {
                kernel: KernelArch::for_boot_arch(boot),
                boot: vec![boot],
            }),
            Err(_) => s.parse::<KernelArch>().map(ArchSpec::all_of),
        }
    }
}

/// A compression format a kernel file may be wrapped in.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum Compression {
    Gzip,
    Zstd,
    Xz,
}

impl Compression {
    pub fn as_str(self) -> &'static str {
        match self {
            Compression::Gzip => "gzip",
            Compression::Zstd => "zstd",
            Compression::Xz => "xz",
        }
    }
}

/// What a kernel file is, read from its header.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum KernelKind {
    /// An x86 bzImage (Linux boot protocol, "HdrS" at 0x202). `long_mode` is
    /// XLF_KERNEL_64 in xloadflags (boot protocol 2.12+); `efi_stub` is an MZ
    /// header in front, which x86 kernels built with CONFIG_EFI_STUB carry.
    BzImage { long_mode: bool, efi_stub: bool },
    /// An arm64 Image ("ARM\x64" at offset 56); `efi_stub` as above.
    Arm64Image { efi_stub: bool },
    /// A PE/COFF EFI application that is neither of the above (a unified
    /// kernel image, a loader), by its COFF Machine field.
    Efi { arch: KernelArch },
    /// A compressed file: the architecture inside is not visible.
    Compressed(Compression),
}

impl KernelKind {
    /// The architecture it runs on; `None` when compressed.
    pub fn arch(self) -> Option<KernelArch> {
        match self {
            KernelKind::BzImage { long_mode, .. } => Some(if long_mode {
                KernelArch::X86_64
            } else {
                KernelArch::X86
            }),
            KernelKind::Arm64Image { .. } => Some(KernelArch::Arm64),
            KernelKind::Efi { arch } => Some(arch),
            KernelKind::Compressed(_) => None,
        }
    }
}

impl fmt::Display for KernelKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let stub = |s: bool| if s { " with EFI stub" } else { "" };
        match *self {
            KernelKind::BzImage {
                long_mode: true,
                efi_stub,
            } => write!(f, "x86_64 Linux bzImage{}", stub(efi_stub)),
            KernelKind::BzImage {
                long_mode: false,
                efi_stub,
            } => write!(
                f,
                "x86 Linux bzImage{} (32-bit, or boot protocol older than 2.12)",
                stub(efi_stub)
            ),
            KernelKind::Arm64Image { efi_stub } => {
                write!(f, "arm64 Linux Image{}", stub(efi_stub))
            }
            KernelKind::Efi { arch } => write!(f, "{arch} EFI application (PE/COFF)"),
            KernelKind::Compressed(c) => write!(
                f,
                "{}-compressed file: decompress first (arm64 firmware and iPXE need the raw Image)",
                c.as_str()
            ),
        }
    }
}

/// The first bytes are not a kernel rackboot knows. Says what was seen.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("not a recognised kernel: {seen}")]
pub struct DetectError {
    pub seen: String,
}

fn le16(b: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_le_bytes(b.get(at..at + 2)?.try_into().ok()?))
}

fn le32(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_le_bytes(b.get(at..at + 4)?.try_into().ok()?))
}

/// Recognises a kernel from its first bytes (pass at least [`DETECT_PREFIX`]
/// when the file is that long). Formats, checked in this order:
/// - x86 bzImage: 0x55AA at 510 and "HdrS" at 0x202 (Documentation/arch/x86/boot.rst).
///   Checked before PE because an x86 EFI-stub kernel is both.
/// - arm64 Image: "ARM\x64" at 56 (Documentation/arch/arm64/booting.rst);
///   with EFI stub it also starts with "MZ".
/// - PE/COFF: "MZ", e_lfanew at 0x3c, "PE\0\0" there, then Machine
///   (0x8664 x86_64, 0xAA64 arm64, 0x014c i386).
/// - gzip, zstd, xz magic.
pub fn detect_kernel(b: &[u8]) -> Result<KernelKind, DetectError> {
    let mz = b.starts_with(b"MZ");
    if b.get(510..512) == Some(&[0x55, 0xAA]) && b.get(0x202..0x206) == Some(b"HdrS") {
        // Boot protocol version at 0x206; xloadflags (0x236) exist from 2.12.
        let version = le16(b, 0x206).unwrap_or(0);
        let xloadflags = le16(b, 0x236).unwrap_or(0);
        const XLF_KERNEL_64: u16 = 1 << 0;
        let long_mode = version >= 0x020c && xloadflags & XLF_KERNEL_64 != 0;
        return Ok(KernelKind::BzImage {
            long_mode,
            efi_stub: mz,
        });
    }
    if b.get(56..60) == Some(b"ARM\x64") {
        return Ok(KernelKind::Arm64Image { efi_stub: mz });
    }
    if mz {
        let Some(pe) = le32(b, 0x3c).map(|o| o as usize) else {
            return Err(DetectError {
                seen: "an MZ header cut short before e_lfanew".into(),
            });
        };
        if b.get(pe..pe + 4) != Some(b"PE\0\0") {
            return Err(DetectError {
                seen: format!(
                    "an MZ (DOS) header without a PE signature at e_lfanew {pe:#x} \
                     (or beyond the first {} bytes read)",
                    b.len()
                ),
            });
        }
        return match le16(b, pe + 4) {
            Some(0x8664) => Ok(KernelKind::Efi {
                arch: KernelArch::X86_64,
            }),
            Some(0xAA64) => Ok(KernelKind::Efi {
                arch: KernelArch::Arm64,
            }),
            Some(0x014c) => Ok(KernelKind::Efi {
                arch: KernelArch::X86,
            }),
            Some(m) => Err(DetectError {
                seen: format!("a PE/EFI file for COFF machine {m:#06x}, not x86_64 or arm64"),
            }),
            None => Err(DetectError {
                seen: "a PE header cut short before its Machine field".into(),
            }),
        };
    }
    if b.starts_with(&[0x1f, 0x8b]) {
        return Ok(KernelKind::Compressed(Compression::Gzip));
    }
    if b.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
        return Ok(KernelKind::Compressed(Compression::Zstd));
    }
    if b.starts_with(&[0xfd, b'7', b'z', b'X', b'Z', 0x00]) {
        return Ok(KernelKind::Compressed(Compression::Xz));
    }
    let head: Vec<String> = b.iter().take(8).map(|x| format!("{x:02x}")).collect();
    Err(DetectError {
        seen: if b.is_empty() {
            "an empty file".into()
        } else {
            format!(
                "first bytes {} ({} bytes read): no bzImage, arm64 Image, PE or compression magic",
                head.join(" "),
                b.len()
            )
        },
    })
}

/// One file as stored in the assets directory.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Stored {
    /// The file given on the command line.
    pub source: PathBuf,
    /// Path relative to the assets directory, as a bootenv names it: `sha256/<hex>`.
    pub relative: String,
    /// Lowercase hex SHA-256 of the content.
    pub sha256: String,
    pub bytes: u64,
    /// The same content was already stored; nothing was written.
    pub already_present: bool,
}

/// What [`import`] stored.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Imported {
    pub kind: KernelKind,
    pub kernel: Stored,
    pub initrds: Vec<Stored>,
}

/// Why an import was refused. Names the file and what to do about it.
#[derive(Debug, thiserror::Error)]
pub enum AssetError {
    #[error("cannot read {path}: {source}")]
    Read { path: PathBuf, source: io::Error },
    #[error("{path} is not a regular file")]
    NotAFile { path: PathBuf },
    #[error("kernel {path}: {source}; pass a Linux bzImage, arm64 Image or EFI kernel")]
    NotAKernel { path: PathBuf, source: DetectError },
    #[error(
        "kernel {path} is a {}-compressed file; decompress it first (arm64 firmware and iPXE need the raw Image)",
        compression.as_str()
    )]
    Compressed {
        path: PathBuf,
        compression: Compression,
    },
    #[error(
        "kernel {path} is for {detected} ({kind}), not {wanted}; pass the {wanted} kernel or --arch {}",
        detected_arg(*detected)
    )]
    WrongArch {
        path: PathBuf,
        kind: KernelKind,
        detected: KernelArch,
        wanted: KernelArch,
    },
    #[error("cannot write {path}: {source}; check the assets directory is writable")]
    Write { path: PathBuf, source: io::Error },
    #[error(
        "{path} already exists with different content (sha256 {found}, expected {expected}); \
         the assets store is damaged: remove that file and import again"
    )]
    Collision {
        path: PathBuf,
        expected: String,
        found: String,
    },
}

fn detected_arg(a: KernelArch) -> &'static str {
    match a {
        KernelArch::X86 | KernelArch::X86_64 => "x86_64",
        KernelArch::Arm64 => "arm64",
    }
}

impl AssetError {
    /// The kernel is fine but for another architecture than asked.
    pub fn is_wrong_arch(&self) -> bool {
        matches!(self, AssetError::WrongArch { .. })
    }
}

/// Reads the first [`DETECT_PREFIX`] bytes of `path` and detects its kind.
pub fn identify(path: &Path) -> Result<KernelKind, AssetError> {
    let read = |source| AssetError::Read {
        path: path.to_path_buf(),
        source,
    };
    let mut prefix = Vec::with_capacity(DETECT_PREFIX);
    File::open(path)
        .map_err(read)?
        .take(DETECT_PREFIX as u64)
        .read_to_end(&mut prefix)
        .map_err(read)?;
    detect_kernel(&prefix).map_err(|source| AssetError::NotAKernel {
        path: path.to_path_buf(),
        source,
    })
}

/// Checks `kernel` is built for `arch`, then stores it and each initrd under
/// `<assets_dir>/sha256/<hex digest>`. Every check happens before anything is
/// written, so a refused kernel leaves the assets directory as it was.
/// Importing the same file twice is a no-op; a different file already under
/// a digest's name is never overwritten.
pub fn import(
    assets_dir: &Path,
    arch: KernelArch,
    kernel: &Path,
    initrds: &[PathBuf],
) -> Result<Imported, AssetError> {
    for path in std::iter::once(kernel).chain(initrds.iter().map(PathBuf::as_path)) {
        let meta = fs::metadata(path).map_err(|source| AssetError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        if !meta.is_file() {
            return Err(AssetError::NotAFile {
                path: path.to_path_buf(),
            });
        }
    }
    let kind = identify(kernel)?;
    match kind.arch() {
        None => {
            let KernelKind::Compressed(compression) = kind else {
                unreachable!("only compressed kernels have no architecture")
            };
            return Err(AssetError::Compressed {
                path: kernel.to_path_buf(),
                compression,
            });
        }
        Some(detected) if detected != arch => {
            return Err(AssetError::WrongArch {
                path: kernel.to_path_buf(),
                kind,
                detected,
                wanted: arch,
            });
        }
        Some(_) => {}
    }
    let dir = assets_dir.join(STORE_DIR);
    fs::create_dir_all(&dir).map_err(|source| AssetError::Write {
        path: dir.clone(),
        source,
    })?;
    let kernel = store(&dir, kernel)?;
    let initrds = initrds
        .iter()
        .map(|p| store(&dir, p))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(Imported {
        kind,
        kernel,
        initrds,
    })
}

pub(crate) fn hex(digest: &[u8]) -> String {
    digest.iter().map(|b| format!("{b:02x}")).collect()
}

fn hash_file(path: &Path) -> io::Result<String> {
    let mut hasher = Sha256::new();
    let mut file = File::open(path)?;
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = file.read(&mut buf)?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    Ok(hex(&hasher.finalize()))
}

/// Copies `source` into `dir` under its digest: to a temporary file in the
/// same directory while hashing, then hard-linked to the final name (which,
/// unlike rename, fails rather than replace an existing file).
fn store(dir: &Path, source: &Path) -> Result<Stored, AssetError> {
    static SEQ: AtomicU64 = AtomicU64::new(0);
    let read = |e| AssetError::Read {
        path: source.to_path_buf(),
        source: e,
    };
    let mut input = File::open(source).map_err(read)?;
    let tmp = dir.join(format!(
        ".import-{}-{}.tmp",
        std::process::id(),
        SEQ.fetch_add(1, Ordering::Relaxed)
    ));
    let write = |path: &Path, source| AssetError::Write {
        path: path.to_path_buf(),
        source,
    };
    let mut out = File::options()
        .write(true)
        .create_new(true)
        .open(&tmp)
        .map_err(|e| write(&tmp, e))?;
    // Removes the temporary file on every exit path below.
    struct Cleanup<'a>(&'a Path);
    impl Drop for Cleanup<'_> {
        fn drop(&mut self) {
            let _ = fs::remove_file(self.0);
        }
    }
    let _cleanup = Cleanup(&tmp);

    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 64 * 1024];
    let mut bytes = 0u64;
    loop {
        let n = input.read(&mut buf).map_err(read)?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
        out.write_all(&buf[..n]).map_err(|e| write(&tmp, e))?;
        bytes += n as u64;
    }
    out.sync_all().map_err(|e| write(&tmp, e))?;
    drop(out);
    let sha256 = hex(&hasher.finalize());
    let relative = format!("{STORE_DIR}/{sha256}");
    let dest = dir.join(&sha256);
    let already_present = match fs::hard_link(&tmp, &dest) {
        Ok(()) => false,
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
            let found = hash_file(&dest).map_err(|source| AssetError::Read {
                path: dest.clone(),
                source,
            })?;
            if found != sha256 {
                return Err(AssetError::Collision {
                    path: dest,
                    expected: sha256,
                    found,
                });
            }
            true
        }
        Err(e) => return Err(write(&dest, e)),
    };
    Ok(Stored {
        source: source.to_path_buf(),
        relative,
        sha256,
        bytes,
        already_present,
    })
}

/// A bootenv `[arch.…]` table per boot architecture in `arches`, naming the
/// stored files; the operator pastes it into a bootenv and adds a cmdline.
pub fn bootenv_snippet(arches: &[BootArch], imported: &Imported) -> String {
    let quote = |s: &str| toml::Value::String(s.to_string()).to_string();
    let initrds: Vec<String> = imported
        .initrds
        .iter()
        .map(|s| quote(&s.relative))
        .collect();
    let mut out = String::new();
    for boot_arch in arches {
        out.push_str(&format!(
            "[arch.{boot_arch}]\nkernel = {}\ninitrds = [{}]\n\n",
            quote(&imported.kernel.relative),
            initrds.join(", ")
        ));
    }
    out.truncate(out.trim_end().len());
    out.push('\n');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A synthetic x86 setup header: boot sector signature, "HdrS", protocol
    /// `version`, xloadflags; optionally an MZ/PE stub in front.
    fn bzimage(version: u16, xloadflags: u16, efi_stub: bool) -> Vec<u8> {
        let mut b = vec![0u8; 0x400];
        b[510] = 0x55;
        b[511] = 0xAA;
        b[0x202..0x206].copy_from_slice(b"HdrS");
        b[0x206..0x208].copy_from_slice(&version.to_le_bytes());
        b[0x236..0x238].copy_from_slice(&xloadflags.to_le_bytes());
        if efi_stub {
            pe_stub(&mut b, 0x8664);
        }
        b
    }

    fn arm64_image(efi_stub: bool) -> Vec<u8> {
        let mut b = vec![0u8; 0x200];
        b[56..60].copy_from_slice(b"ARM\x64");
        if efi_stub {
            pe_stub(&mut b, 0xAA64);
        }
        b
    }

    /// "MZ", e_lfanew = 0x80, "PE\0\0" and the COFF Machine there.
    fn pe_stub(b: &mut [u8], machine: u16) {
        b[0..2].copy_from_slice(b"MZ");
        b[0x3c..0x40].copy_from_slice(&0x80u32.to_le_bytes());
        b[0x80..0x84].copy_from_slice(b"PE\0\0");
        b[0x84..0x86].copy_from_slice(&machine.to_le_bytes());
    }

    fn pe(machine: u16) -> Vec<u8> {
        let mut b = vec![0u8; 0x100];
        pe_stub(&mut b, machine);
        b
    }

    #[test]
    fn detect_kernel_table() {
        use KernelKind::*;
        let cases: Vec<(&str, Vec<u8>, KernelKind)> = vec![
            (
                "bzImage 64-bit",
                bzimage(0x020f, 1, false),
                BzImage {
                    long_mode: true,
                    efi_stub: false,
                },
            ),
            (
                "bzImage 64-bit EFI stub",
                bzimage(0x020f, 0b11, true),
                BzImage {
                    long_mode: true,
                    efi_stub: true,
                },
            ),
            (
                "bzImage 32-bit",
                bzimage(0x020f, 0, false),
                BzImage {
                    long_mode: false,
                    efi_stub: false,
                },
            ),
            (
                "bzImage protocol 2.10 (no xloadflags)",
                bzimage(0x020a, 1, false),
                BzImage {
                    long_mode: false,
                    efi_stub: false,
                },
            ),
            (
                "arm64 Image",
                arm64_image(false),
                Arm64Image { efi_stub: false },
            ),
            (
                "arm64 Image EFI stub",
                arm64_image(true),
                Arm64Image { efi_stub: true },
            ),
            (
                "PE x86_64",
                pe(0x8664),
                Efi {
                    arch: KernelArch::X86_64,
                },
            ),
            (
                "PE arm64",
                pe(0xAA64),
                Efi {
                    arch: KernelArch::Arm64,
                },
            ),
            (
                "gzip",
                vec![0x1f, 0x8b, 8, 0, 0, 0],
                Compressed(Compression::Gzip),
            ),
            (
                "zstd",
                vec![0x28, 0xb5, 0x2f, 0xfd, 0],
                Compressed(Compression::Zstd),
            ),
            (
                "xz",
                vec![0xfd, b'7', b'z', b'X', b'Z', 0, 0],
                Compressed(Compression::Xz),
            ),
        ];
        for (name, bytes, want) in cases {
            assert_eq!(detect_kernel(&bytes), Ok(want), "{name}");
        }
    }

    #[test]
    fn detect_kernel_refusals_say_what_was_seen() {
        let cases: Vec<(&str, Vec<u8>, &str)> = vec![
            ("empty", vec![], "empty file"),
            ("text", b"#!/bin/sh\necho".to_vec(), "23 21 2f 62"),
            ("MZ without PE", b"MZ".to_vec(), "cut short"),
            ("PE riscv64", pe(0x5064), "0x5064"),
            (
                "MZ with bad e_lfanew",
                {
                    let mut b = pe(0x8664);
                    b[0x80] = b'X';
                    b
                },
                "without a PE signature",
            ),
        ];
        for (name, bytes, needle) in cases {
            let err = detect_kernel(&bytes).unwrap_err().to_string();
            assert!(err.contains(needle), "{name}: {err}");
        }
    }

    #[test]
    fn arch_names() {
        assert_eq!("x86_64".parse(), Ok(KernelArch::X86_64));
        assert_eq!("aarch64".parse(), Ok(KernelArch::Arm64));
        assert_eq!("bios".parse(), Ok(KernelArch::X86_64));
        assert_eq!("arm64_efi".parse(), Ok(KernelArch::Arm64));
        assert!("ppc64".parse::<KernelArch>().is_err());
        assert_eq!(
            KernelArch::X86_64.boot_arches(),
            vec![BootArch::Bios, BootArch::X86_64Efi]
        );
        assert_eq!(KernelArch::Arm64.boot_arches(), vec![BootArch::Arm64Efi]);
        let spec = |s: &str| s.parse::<ArchSpec>().unwrap();
        assert_eq!(spec("amd64"), ArchSpec::all_of(KernelArch::X86_64));
        assert_eq!(
            spec("x86_64_efi"),
            ArchSpec {
                kernel: KernelArch::X86_64,
                boot: vec![BootArch::X86_64Efi]
            }
        );
        assert_eq!(spec("arm64").boot, vec![BootArch::Arm64Efi]);
        assert!("mips".parse::<ArchSpec>().is_err());
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

    #[test]
    fn detects_real_debian_kernels() {
        if let Some(p) = dist("x86_64/vmlinuz") {
            let kind = identify(&p).unwrap();
            assert_eq!(kind.arch(), Some(KernelArch::X86_64), "{kind}");
            assert!(matches!(kind, KernelKind::BzImage { efi_stub: true, .. }));
        }
        if let Some(p) = dist("arm64/Image") {
            let kind = identify(&p).unwrap();
            assert_eq!(kind, KernelKind::Arm64Image { efi_stub: true });
        }
    }

    fn write(dir: &Path, name: &str, bytes: &[u8]) -> PathBuf {
        let p = dir.join(name);
        fs::write(&p, bytes).unwrap();
        p
    }

    fn listing(dir: &Path) -> Vec<String> {
        let mut names: Vec<String> = fs::read_dir(dir)
            .map(|rd| {
                rd.map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                    .collect()
            })
            .unwrap_or_default();
        names.sort();
        names
    }

    #[test]
    fn import_is_content_addressed_and_idempotent() {
        let src = tempfile::tempdir().unwrap();
        let assets = tempfile::tempdir().unwrap();
        let kernel = write(src.path(), "vmlinuz", &bzimage(0x020f, 1, true));
        let initrd = write(src.path(), "initrd.img", b"initrd contents");

        let first = import(
            assets.path(),
            KernelArch::X86_64,
            &kernel,
            std::slice::from_ref(&initrd),
        )
        .unwrap();
        let want = hex(&Sha256::digest(b"initrd contents"));
        assert_eq!(first.initrds[0].sha256, want);
        assert_eq!(first.initrds[0].relative, format!("sha256/{want}"));
        assert_eq!(
            fs::read(assets.path().join(&first.initrds[0].relative)).unwrap(),
            b"initrd contents"
        );
        assert_eq!(
            fs::read(assets.path().join(&first.kernel.relative)).unwrap(),
            fs::read(&kernel).unwrap()
        );
        assert!(!first.kernel.already_present);

        let again = import(assets.path(), KernelArch::X86_64, &kernel, &[initrd]).unwrap();
        assert!(again.kernel.already_present && again.initrds[0].already_present);
        assert_eq!(again.kernel.relative, first.kernel.relative);
        // Two files, no temporaries left behind.
        assert_eq!(listing(&assets.path().join(STORE_DIR)).len(), 2);

        let snippet = bootenv_snippet(&KernelArch::X86_64.boot_arches(), &first);
        assert!(snippet.contains("[arch.bios]") && snippet.contains("[arch.x86_64_efi]"));
        assert!(snippet.contains(&format!("initrds = [\"sha256/{want}\"]")));
    }

    #[test]
    fn wrong_arch_kernel_leaves_nothing_behind() {
        let src = tempfile::tempdir().unwrap();
        let assets = tempfile::tempdir().unwrap();
        let kernel = write(src.path(), "Image", &arm64_image(true));
        let initrd = write(src.path(), "initrd.img", b"x");
        let err = import(assets.path(), KernelArch::X86_64, &kernel, &[initrd]).unwrap_err();
        assert!(err.is_wrong_arch(), "{err}");
        let msg = err.to_string();
        assert!(
            msg.contains("Image") && msg.contains("arm64") && msg.contains("--arch arm64"),
            "{msg}"
        );
        assert!(listing(assets.path()).is_empty());

        let gz = write(src.path(), "Image.gz", &[0x1f, 0x8b, 8, 0]);
        let err = import(assets.path(), KernelArch::Arm64, &gz, &[]).unwrap_err();
        assert!(err.to_string().contains("decompress"), "{err}");
        assert!(listing(assets.path()).is_empty());
    }

    #[test]
    fn a_different_file_under_the_digest_is_not_overwritten() {
        let src = tempfile::tempdir().unwrap();
        let assets = tempfile::tempdir().unwrap();
        let kernel = write(src.path(), "Image", &arm64_image(false));
        let digest = hex(&Sha256::digest(fs::read(&kernel).unwrap()));
        fs::create_dir(assets.path().join(STORE_DIR)).unwrap();
        let squatter = assets.path().join(STORE_DIR).join(&digest);
        fs::write(&squatter, b"damaged").unwrap();
        let err = import(assets.path(), KernelArch::Arm64, &kernel, &[]).unwrap_err();
        assert!(matches!(err, AssetError::Collision { .. }), "{err}");
        assert_eq!(fs::read(&squatter).unwrap(), b"damaged");
        assert_eq!(listing(&assets.path().join(STORE_DIR)), vec![digest]);
    }
}
