//! Boot assets: importing kernels and initrds into the assets directory.
//!
//! Owns recognising what a kernel file is from its first bytes
//! ([`detect_kernel`], pure), and storing files content-addressed under
//! `<assets_dir>/sha256/<hex digest>` ([`import`]) after checking the kernel
//! is built for the architecture the operator said it is for; then, in
//! submodules, naming them in a bootenv file ([`into_bootenv`]), watching a
//! drop folder for them ([`drop`](mod@drop)) and fetching the ones bootenvs name by URL
//! and digest ([`remote`]). It does not serve anything: TFTP and HTTP serve
//! the assets directory as they find it, opening what a client asks for
//! through [`resolve`], so both refuse the same paths.

pub mod cache;
pub mod drop;
pub mod into_bootenv;
pub mod remote;
pub mod resolve;
pub mod signature;

pub use signature::Signature;

use std::fmt;
use std::fs::{self, File};
use std::io::{self, Read, Seek, SeekFrom, Write};
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

crate::model::named_values!(KernelArch);

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

    /// The command that writes the decompressed file to stdout.
    fn cat(self) -> &'static str {
        match self {
            Compression::Gzip => "zcat",
            Compression::Zstd => "zstdcat",
            Compression::Xz => "xzcat",
        }
    }
}

/// What a file offered as a kernel is, read from its header.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum KernelKind {
    /// An x86 bzImage (Linux boot protocol, "HdrS" at 0x202). `long_mode` is
    /// XLF_KERNEL_64 in xloadflags (boot protocol 2.12+); `efi_stub` is an MZ
    /// header in front, which x86 kernels built with CONFIG_EFI_STUB carry:
    /// one file that is both a bzImage (for BIOS) and a PE (for UEFI).
    BzImage { long_mode: bool, efi_stub: bool },
    /// An arm64 Image ("ARM\x64" at offset 56); `efi_stub` as above.
    Arm64Image { efi_stub: bool },
    /// A Linux EFI zboot image (CONFIG_EFI_ZBOOT: "zimg" at offset 4 of a
    /// PE): a compressed kernel behind an EFI stub that decompresses it, so
    /// UEFI boots it as it is. `compression` is the name in its header.
    Zboot {
        arch: KernelArch,
        compression: &'static str,
    },
    /// A PE/COFF EFI application without a Linux boot header: a loader
    /// (iPXE, GRUB, shim) or any other EFI program. Not a kernel.
    EfiApplication { arch: KernelArch },
    /// A unified kernel image: an EFI application (systemd-stub) carrying a
    /// kernel in its `.linux` section and usually initrd and command line in
    /// others. Not a kernel rackboot can hand initrds and a command line to.
    UnifiedKernelImage { arch: KernelArch },
    /// A compressed file: the kernel inside is not visible, and neither
    /// firmware nor iPXE's EFI build would decompress it.
    Compressed(Compression),
}

impl KernelKind {
    /// The CPU it runs on; `None` when compressed.
    pub fn arch(self) -> Option<KernelArch> {
        match self {
            KernelKind::BzImage { long_mode, .. } => Some(if long_mode {
                KernelArch::X86_64
            } else {
                KernelArch::X86
            }),
            KernelKind::Arm64Image { .. } => Some(KernelArch::Arm64),
            KernelKind::Zboot { arch, .. }
            | KernelKind::EfiApplication { arch }
            | KernelKind::UnifiedKernelImage { arch } => Some(arch),
            KernelKind::Compressed(_) => None,
        }
    }

    /// Whether a node of boot architecture `boot` can boot this file as the
    /// kernel of its bootenv's `[arch.<boot>]` table, and if not, why not.
    ///
    /// BIOS nodes boot through iPXE's PC BIOS build, which loads a bzImage
    /// by its setup header and cannot run an EFI executable. UEFI nodes boot
    /// through iPXE's EFI build (or the firmware itself, for HTTP boot),
    /// which runs EFI executables only (its bzImage loader is BIOS-only): a
    /// kernel there needs its EFI stub.
    pub fn boots_on(self, boot: BootArch) -> Result<(), KernelError> {
        match self {
            KernelKind::EfiApplication { arch } => {
                return Err(KernelError::EfiApplication { arch });
            }
            KernelKind::UnifiedKernelImage { arch } => {
                return Err(KernelError::UnifiedKernelImage { arch });
            }
            KernelKind::Compressed(c) => return Err(KernelError::Compressed(c)),
            _ => {}
        }
        let wanted = KernelArch::for_boot_arch(boot);
        if self.arch() != Some(wanted) {
            return Err(KernelError::WrongArch { kind: self, wanted });
        }
        match (self, boot) {
            (KernelKind::BzImage { .. }, BootArch::Bios) => Ok(()),
            (
                KernelKind::BzImage {
                    efi_stub: false, ..
                }
                | KernelKind::Arm64Image { efi_stub: false },
                _,
            ) => Err(KernelError::NoEfiStub { kind: self, boot }),
            (KernelKind::BzImage { .. } | KernelKind::Arm64Image { .. }, _) => Ok(()),
            (KernelKind::Zboot { .. }, BootArch::Bios) => {
                Err(KernelError::EfiOnly { kind: self, boot })
            }
            (KernelKind::Zboot { .. }, _) => Ok(()),
            (
                KernelKind::EfiApplication { .. }
                | KernelKind::UnifiedKernelImage { .. }
                | KernelKind::Compressed(_),
                _,
            ) => unreachable!("refused above"),
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
            KernelKind::Zboot { arch, compression } => write!(
                f,
                "{arch} EFI zboot Linux kernel ({compression}, decompressed by its EFI stub)"
            ),
            KernelKind::EfiApplication { arch } => {
                write!(f, "{arch} EFI application (PE/COFF, no Linux boot header)")
            }
            KernelKind::UnifiedKernelImage { arch } => {
                write!(
                    f,
                    "{arch} unified kernel image (EFI application with a .linux section)"
                )
            }
            KernelKind::Compressed(c) => write!(f, "{}-compressed file", c.as_str()),
        }
    }
}

/// Why a file cannot be the kernel of a bootenv table. Each message is the
/// rest of a sentence whose subject (the file, or the download) the caller
/// gives: "kernel /srv/ipxe-amd64.efi {error}". It says what the file is
/// and what to give instead.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KernelError {
    #[error(
        "is not a Linux kernel: {seen}; a kernel is an x86_64 bzImage or an arm64 Image \
         (with an EFI stub for UEFI)"
    )]
    Unrecognised { seen: String },
    #[error(
        "is an {arch} EFI application, not a Linux kernel: a PE/COFF executable without a \
         Linux boot header (no \"HdrS\" at 0x202, no \"ARM\\x64\" at 0x38), such as iPXE, \
         GRUB or shim. Loaders are served from assets_dir by their own name ([dhcp.loaders]); \
         a bootenv's kernel is a Linux kernel: an x86_64 bzImage or arm64 Image, with the EFI \
         stub for UEFI (a distribution's vmlinuz)"
    )]
    EfiApplication { arch: KernelArch },
    #[error(
        "is an {arch} unified kernel image (an EFI application carrying the kernel in its \
         .linux section), not a bare Linux kernel: rackboot hands iPXE the kernel, the initrds \
         and the command line separately. Extract the kernel with \
         `objcopy -O binary --only-section=.linux FILE vmlinuz` (and the initrd from .initrd) \
         and pass those"
    )]
    UnifiedKernelImage { arch: KernelArch },
    #[error(
        "is a {}-compressed file, and rackboot does not decompress kernels (UEFI firmware and \
         iPXE's EFI build load the raw kernel): decompress it first, e.g. `{} vmlinuz > Image` \
         (Debian's arm64 vmlinuz is a gzip'd Image), and pass the result",
        .0.as_str(),
        .0.cat()
    )]
    Compressed(Compression),
    #[error("is for {} ({kind}), not {wanted}", kind.arch().map_or("?", KernelArch::as_str))]
    WrongArch {
        kind: KernelKind,
        wanted: KernelArch,
    },
    #[error(
        "is an {kind} without an EFI stub: [arch.{boot}] nodes boot through UEFI (iPXE's EFI \
         build), which runs EFI executables only; use a kernel built with CONFIG_EFI_STUB \
         (distribution kernels are){}",
        if *boot == BootArch::X86_64Efi { ", or fill [arch.bios] only (--arch bios)" } else { "" }
    )]
    NoEfiStub { kind: KernelKind, boot: BootArch },
    #[error(
        "is an {kind}: [arch.{boot}] nodes boot through PC BIOS (iPXE's BIOS build), which \
         loads a bzImage and cannot run an EFI executable; pass an x86_64 bzImage"
    )]
    EfiOnly { kind: KernelKind, boot: BootArch },
}

impl KernelError {
    /// The file is a kernel, for another CPU than asked.
    pub fn is_wrong_arch(&self) -> bool {
        matches!(self, KernelError::WrongArch { .. })
    }
}

/// The first bytes are not a format rackboot knows. Says what was seen.
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
///   (0x8664 x86_64, 0xAA64 arm64, 0x014c i386). "zimg" at 4 makes it an
///   EFI zboot kernel (drivers/firmware/efi/libstub/zboot-header.S), a
///   `.linux` section a unified kernel image; any other PE is an EFI
///   application, not a kernel.
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
        return detect_pe(b);
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

/// A PE/COFF file without a Linux boot header: a zboot kernel, a unified
/// kernel image, or an EFI application (see [`detect_kernel`]).
fn detect_pe(b: &[u8]) -> Result<KernelKind, DetectError> {
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
    let arch = match le16(b, pe + 4) {
        Some(0x8664) => KernelArch::X86_64,
        Some(0xAA64) => KernelArch::Arm64,
        Some(0x014c) => KernelArch::X86,
        Some(m) => {
            return Err(DetectError {
                seen: format!("a PE/EFI file for COFF machine {m:#06x}, not x86_64 or arm64"),
            });
        }
        None => {
            return Err(DetectError {
                seen: "a PE header cut short before its Machine field".into(),
            });
        }
    };
    if b.get(4..8) == Some(b"zimg") {
        // The compression type is a NUL-terminated name at offset 24.
        let name = b.get(24..40).unwrap_or_default();
        let name = &name[..name.iter().position(|&c| c == 0).unwrap_or(name.len())];
        let compression = ["gzip", "lz4", "lzma", "lzo", "xzkern", "zstd22", "zstd"]
            .into_iter()
            .find(|known| known.as_bytes() == name)
            .unwrap_or("unknown compression");
        return Ok(KernelKind::Zboot { arch, compression });
    }
    if pe_sections(b, pe).any(|name| name == b".linux") {
        return Ok(KernelKind::UnifiedKernelImage { arch });
    }
    Ok(KernelKind::EfiApplication { arch })
}

/// The section names of the PE header at `pe`, as far as `b` holds them:
/// the COFF header (20 bytes after the signature) gives their number and
/// the optional header's size, then 40 bytes a section, name first.
fn pe_sections(b: &[u8], pe: usize) -> impl Iterator<Item = &[u8]> {
    let count = le16(b, pe + 6).unwrap_or(0) as usize;
    let table = pe + 24 + le16(b, pe + 20).unwrap_or(0) as usize;
    (0..count).map_while(move |i| {
        let name = b.get(table + 40 * i..table + 40 * i + 8)?;
        Some(&name[..name.iter().position(|&c| c == 0).unwrap_or(8)])
    })
}

/// Checks the first bytes of a file named as the kernel of each table in
/// `boot`: the kind it is, or the first reason one of them cannot boot it.
/// A kernel for the wrong CPU is reported before a missing EFI stub.
pub fn check_kernel(prefix: &[u8], boot: &[BootArch]) -> Result<KernelKind, KernelError> {
    let kind = detect_kernel(prefix).map_err(|e| KernelError::Unrecognised { seen: e.seen })?;
    let results: Vec<Result<(), KernelError>> = boot.iter().map(|b| kind.boots_on(*b)).collect();
    if let Some(Err(e)) = results
        .iter()
        .find(|r| matches!(r, Err(e) if e.is_wrong_arch()))
    {
        return Err(e.clone());
    }
    results.into_iter().collect::<Result<(), _>>()?;
    Ok(kind)
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
    /// Whether the kernel carries a signature Secure Boot can verify.
    pub signed: Signature,
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
    #[error("kernel {path} {source}{}", wrong_arch_hint(source))]
    Kernel { path: PathBuf, source: KernelError },
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

/// What `--arch` (or a drop folder) to use instead for a kernel of the
/// wrong architecture.
fn wrong_arch_hint(e: &KernelError) -> String {
    match e {
        KernelError::WrongArch { kind, wanted } => {
            let arg = match kind.arch() {
                Some(KernelArch::Arm64) => "arm64",
                _ => "x86_64",
            };
            format!("; pass the {wanted} kernel or --arch {arg}")
        }
        _ => String::new(),
    }
}

impl AssetError {
    /// The kernel is fine but for another architecture than asked.
    pub fn is_wrong_arch(&self) -> bool {
        matches!(self, AssetError::Kernel { source, .. } if source.is_wrong_arch())
    }
}

fn read_prefix(path: &Path) -> Result<Vec<u8>, AssetError> {
    let read = |source| AssetError::Read {
        path: path.to_path_buf(),
        source,
    };
    prefix_of(&File::open(path).map_err(read)?).map_err(read)
}

/// The first [`DETECT_PREFIX`] bytes of `file`, read from its start.
fn prefix_of(file: &File) -> io::Result<Vec<u8>> {
    let mut prefix = Vec::with_capacity(DETECT_PREFIX);
    let mut f = file;
    f.seek(SeekFrom::Start(0))?;
    f.take(DETECT_PREFIX as u64).read_to_end(&mut prefix)?;
    Ok(prefix)
}

/// A file to import, opened by whoever named it, and read only through this
/// descriptor (checked, hashed and copied: the same file throughout).
/// `rackboot assets add` follows the links an admin typed ([`Source::open`]);
/// the drop folder opens beneath its folder through no link
/// ([`crate::beneath`]), so a planted link cannot publish what it points to.
#[derive(Debug)]
pub struct Source {
    pub path: PathBuf,
    pub file: File,
}

impl Source {
    /// Opens `path` (following links), refusing anything but a regular file.
    pub fn open(path: &Path) -> Result<Source, AssetError> {
        let read = |source| AssetError::Read {
            path: path.to_path_buf(),
            source,
        };
        let file = File::open(path).map_err(read)?;
        if !file.metadata().map_err(read)?.is_file() {
            return Err(AssetError::NotAFile {
                path: path.to_path_buf(),
            });
        }
        Ok(Source {
            path: path.to_path_buf(),
            file,
        })
    }

    /// [`Source::open`] for each path.
    pub fn open_all(paths: &[PathBuf]) -> Result<Vec<Source>, AssetError> {
        paths.iter().map(|p| Source::open(p)).collect()
    }
}

/// Reads the first [`DETECT_PREFIX`] bytes of `path` and says what it is
/// and which boot architectures could boot it as their kernel (`rackboot
/// assets identify`). A file no table could boot is an error saying why.
pub fn identify(path: &Path) -> Result<(KernelKind, Vec<BootArch>), AssetError> {
    let kernel_err = |source| AssetError::Kernel {
        path: path.to_path_buf(),
        source,
    };
    let kind = detect_kernel(&read_prefix(path)?)
        .map_err(|e| kernel_err(KernelError::Unrecognised { seen: e.seen }))?;
    let mut boots = Vec::new();
    let mut first_refusal = None;
    for b in BootArch::ALL {
        match kind.boots_on(b) {
            Ok(()) => boots.push(b),
            Err(e) => {
                first_refusal.get_or_insert(e);
            }
        }
    }
    match first_refusal {
        Some(e) if boots.is_empty() => Err(kernel_err(e)),
        _ => Ok((kind, boots)),
    }
}

/// Checks `kernel` can be booted by every table `arch` fills (right CPU,
/// a Linux kernel, the EFI stub where UEFI boots it), then stores it and
/// each initrd under `<assets_dir>/sha256/<hex digest>`. Every check happens
/// before anything is written, so a refused kernel leaves the assets
/// directory as it was. Importing the same file twice is a no-op; a
/// different file already under a digest's name is never overwritten.
pub fn import(
    assets_dir: &Path,
    arch: &ArchSpec,
    kernel: &Source,
    initrds: &[Source],
) -> Result<Imported, AssetError> {
    let prefix = prefix_of(&kernel.file).map_err(|source| AssetError::Read {
        path: kernel.path.clone(),
        source,
    })?;
    let kind = check_kernel(&prefix, &arch.boot).map_err(|source| AssetError::Kernel {
        path: kernel.path.clone(),
        source,
    })?;
    let signed = signature::signature(&kernel.file).map_err(|source| AssetError::Read {
        path: kernel.path.clone(),
        source,
    })?;
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
        signed,
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
fn store(dir: &Path, src: &Source) -> Result<Stored, AssetError> {
    static SEQ: AtomicU64 = AtomicU64::new(0);
    let read = |e| AssetError::Read {
        path: src.path.clone(),
        source: e,
    };
    let mut input = &src.file;
    input.seek(SeekFrom::Start(0)).map_err(read)?;
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
        source: src.path.clone(),
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

/// Synthetic kernel and EFI headers, just enough for detection: the one
/// set every test of this module tree builds its files from.
#[cfg(test)]
pub(crate) mod test_headers {
    /// A synthetic x86 setup header: boot sector signature, "HdrS", protocol
    /// `version`, xloadflags; optionally an MZ/PE stub in front.
    pub(crate) fn bzimage(version: u16, xloadflags: u16, efi_stub: bool) -> Vec<u8> {
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

    pub(crate) fn arm64_image(efi_stub: bool) -> Vec<u8> {
        let mut b = vec![0u8; 0x200];
        b[56..60].copy_from_slice(b"ARM\x64");
        if efi_stub {
            pe_stub(&mut b, 0xAA64);
        }
        b
    }

    /// "MZ", e_lfanew = 0x80, "PE\0\0" and the COFF Machine there.
    pub(crate) fn pe_stub(b: &mut [u8], machine: u16) {
        b[0..2].copy_from_slice(b"MZ");
        b[0x3c..0x40].copy_from_slice(&0x80u32.to_le_bytes());
        b[0x80..0x84].copy_from_slice(b"PE\0\0");
        b[0x84..0x86].copy_from_slice(&machine.to_le_bytes());
    }

    /// A PE/COFF header for `machine` and nothing Linux: iPXE's .efi, GRUB, shim.
    pub(crate) fn efi_application(machine: u16) -> Vec<u8> {
        let mut b = vec![0u8; 0x400];
        pe_stub(&mut b, machine);
        b
    }
}

#[cfg(test)]
mod tests {
    use super::test_headers::*;
    use super::*;

    fn pe(machine: u16) -> Vec<u8> {
        pe_with_sections(machine, &[".text", ".reloc"])
    }

    /// A PE header whose section table (after a 0xF0-byte optional header)
    /// names `sections`.
    fn pe_with_sections(machine: u16, sections: &[&str]) -> Vec<u8> {
        let mut b = vec![0u8; 0x400];
        pe_stub(&mut b, machine);
        b[0x86..0x88].copy_from_slice(&(sections.len() as u16).to_le_bytes());
        b[0x94..0x96].copy_from_slice(&0xF0u16.to_le_bytes());
        for (i, name) in sections.iter().enumerate() {
            let at = 0x80 + 24 + 0xF0 + 40 * i;
            b[at..at + name.len()].copy_from_slice(name.as_bytes());
        }
        b
    }

    /// An EFI zboot header: a PE with "zimg" at 4 and the compression name at 24.
    fn zboot(machine: u16, compression: &[u8]) -> Vec<u8> {
        let mut b = pe(machine);
        b[4..8].copy_from_slice(b"zimg");
        b[24..24 + compression.len()].copy_from_slice(compression);
        b
    }

    #[test]
    fn detect_kernel_table() {
        use KernelKind::*;
        let bz = |long_mode, efi_stub| BzImage {
            long_mode,
            efi_stub,
        };
        let cases: Vec<(&str, Vec<u8>, KernelKind)> = vec![
            ("bzImage 64-bit", bzimage(0x020f, 1, false), bz(true, false)),
            (
                "bzImage 64-bit EFI stub",
                bzimage(0x020f, 0b11, true),
                bz(true, true),
            ),
            (
                "bzImage 32-bit",
                bzimage(0x020f, 0, false),
                bz(false, false),
            ),
            (
                "bzImage protocol 2.10 (no xloadflags)",
                bzimage(0x020a, 1, false),
                bz(false, false),
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
                "PE x86_64 (iPXE, GRUB, shim)",
                pe(0x8664),
                EfiApplication {
                    arch: KernelArch::X86_64,
                },
            ),
            (
                "PE arm64",
                pe(0xAA64),
                EfiApplication {
                    arch: KernelArch::Arm64,
                },
            ),
            (
                "PE with a .linux section",
                pe_with_sections(0x8664, &[".text", ".osrel", ".linux", ".initrd"]),
                UnifiedKernelImage {
                    arch: KernelArch::X86_64,
                },
            ),
            (
                "arm64 EFI zboot",
                zboot(0xAA64, b"zstd22\0"),
                Zboot {
                    arch: KernelArch::Arm64,
                    compression: "zstd22",
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

    /// What each `[arch.…]` table can boot: BIOS a bzImage, UEFI an EFI
    /// executable that is a Linux kernel, nothing an EFI application.
    #[test]
    fn which_tables_boot_which_kind() {
        fn outcome(r: Result<(), KernelError>) -> &'static str {
            match r {
                Ok(()) => "ok",
                Err(KernelError::WrongArch { .. }) => "arch",
                Err(KernelError::NoEfiStub { .. }) => "stub",
                Err(KernelError::EfiOnly { .. }) => "efi-only",
                Err(KernelError::EfiApplication { .. }) => "efi-app",
                Err(KernelError::UnifiedKernelImage { .. }) => "uki",
                Err(KernelError::Compressed(_)) => "compressed",
                Err(KernelError::Unrecognised { .. }) => "unrecognised",
            }
        }
        // [bios, x86_64_efi, arm64_efi]
        let cases: Vec<(&str, Vec<u8>, [&str; 3])> = vec![
            ("bzImage", bzimage(0x020f, 1, false), ["ok", "stub", "arch"]),
            (
                "bzImage EFI stub",
                bzimage(0x020f, 3, true),
                ["ok", "ok", "arch"],
            ),
            ("bzImage 32-bit", bzimage(0x020f, 0, false), ["arch"; 3]),
            ("arm64 Image", arm64_image(false), ["arch", "arch", "stub"]),
            (
                "arm64 Image EFI stub",
                arm64_image(true),
                ["arch", "arch", "ok"],
            ),
            (
                "arm64 zboot",
                zboot(0xAA64, b"gzip\0"),
                ["arch", "arch", "ok"],
            ),
            (
                "x86_64 zboot",
                zboot(0x8664, b"gzip\0"),
                ["efi-only", "ok", "arch"],
            ),
            ("iPXE-like x86_64", pe(0x8664), ["efi-app"; 3]),
            ("iPXE-like arm64", pe(0xAA64), ["efi-app"; 3]),
            ("UKI", pe_with_sections(0x8664, &[".linux"]), ["uki"; 3]),
            ("gzip", vec![0x1f, 0x8b, 8, 0], ["compressed"; 3]),
        ];
        for (name, bytes, want) in cases {
            let kind = detect_kernel(&bytes).unwrap();
            let got: Vec<&str> = BootArch::ALL.map(|b| outcome(kind.boots_on(b))).to_vec();
            assert_eq!(got, want, "{name} ({kind})");
        }
    }

    #[test]
    fn check_kernel_reports_the_wrong_cpu_first_and_says_what_to_do() {
        use BootArch::*;
        let x86 = KernelArch::X86_64.boot_arches();
        // An arm64 Image without its stub, offered for x86_64: the CPU is the problem.
        let err = check_kernel(&arm64_image(false), &x86).unwrap_err();
        assert!(err.is_wrong_arch(), "{err}");
        let err = check_kernel(&bzimage(0x020f, 1, false), &x86).unwrap_err();
        assert!(
            matches!(
                err,
                KernelError::NoEfiStub {
                    boot: X86_64Efi,
                    ..
                }
            ),
            "{err}"
        );
        assert!(err.to_string().contains("--arch bios"), "{err}");
        assert!(check_kernel(&bzimage(0x020f, 1, false), &[Bios]).is_ok());
        let err = check_kernel(&pe(0x8664), &[Bios]).unwrap_err().to_string();
        assert!(
            err.starts_with("is an x86_64 EFI application, not a Linux kernel")
                && err.contains("[dhcp.loaders]"),
            "{err}"
        );
        let err = check_kernel(&[0x1f, 0x8b, 8, 0], &[Arm64Efi])
            .unwrap_err()
            .to_string();
        assert!(err.contains("`zcat vmlinuz > Image`"), "{err}");
        let err = check_kernel(b"#!ipxe\n", &[Bios]).unwrap_err().to_string();
        assert!(
            err.starts_with("is not a Linux kernel: first bytes"),
            "{err}"
        );
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
    fn detects_real_debian_kernels_and_loaders() {
        if let Some(p) = dist("x86_64/vmlinuz") {
            let (kind, boots) = identify(&p).unwrap();
            assert_eq!(kind.arch(), Some(KernelArch::X86_64), "{kind}");
            assert!(matches!(kind, KernelKind::BzImage { efi_stub: true, .. }));
            assert_eq!(boots, vec![BootArch::Bios, BootArch::X86_64Efi]);
        }
        if let Some(p) = dist("arm64/Image") {
            let (kind, boots) = identify(&p).unwrap();
            assert_eq!(kind, KernelKind::Arm64Image { efi_stub: true });
            assert_eq!(boots, vec![BootArch::Arm64Efi]);
        }
        // The loaders next to them are EFI applications and a PXE program, not kernels.
        for (loader, arch) in [
            ("ipxe-amd64.efi", Some(KernelArch::X86_64)),
            ("snponly.efi", Some(KernelArch::X86_64)),
            ("ipxe-arm64.efi", Some(KernelArch::Arm64)),
            ("undionly.kpxe", None),
        ] {
            let Some(p) = dist(loader) else { continue };
            let err = identify(&p).unwrap_err();
            match (arch, &err) {
                (
                    Some(want),
                    AssetError::Kernel {
                        source: KernelError::EfiApplication { arch },
                        ..
                    },
                ) => assert_eq!(*arch, want, "{loader}"),
                (
                    None,
                    AssetError::Kernel {
                        source: KernelError::Unrecognised { .. },
                        ..
                    },
                ) => {}
                _ => panic!("{loader}: {err}"),
            }
        }
    }

    /// [`super::import`] of files named by path, as `rackboot assets add` opens them.
    fn import(
        dir: &Path,
        arch: &ArchSpec,
        kernel: &Path,
        initrds: &[PathBuf],
    ) -> Result<Imported, AssetError> {
        super::import(
            dir,
            arch,
            &Source::open(kernel)?,
            &Source::open_all(initrds)?,
        )
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
            &ArchSpec::all_of(KernelArch::X86_64),
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

        let again = import(
            assets.path(),
            &ArchSpec::all_of(KernelArch::X86_64),
            &kernel,
            &[initrd],
        )
        .unwrap();
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
        let x86_64 = ArchSpec::all_of(KernelArch::X86_64);
        let arm64 = ArchSpec::all_of(KernelArch::Arm64);
        let err = import(assets.path(), &x86_64, &kernel, &[initrd]).unwrap_err();
        assert!(err.is_wrong_arch(), "{err}");
        let msg = err.to_string();
        assert!(
            msg.contains("Image") && msg.contains("arm64") && msg.contains("--arch arm64"),
            "{msg}"
        );
        assert!(listing(assets.path()).is_empty());

        let gz = write(src.path(), "Image.gz", &[0x1f, 0x8b, 8, 0]);
        let err = import(assets.path(), &arm64, &gz, &[]).unwrap_err();
        assert!(err.to_string().contains("decompress"), "{err}");
        assert!(listing(assets.path()).is_empty());

        // iPXE's EFI build, offered as the x86_64 kernel: named, said what it is, not stored.
        let ipxe = write(src.path(), "ipxe-amd64.efi", &pe(0x8664));
        let err = import(assets.path(), &x86_64, &ipxe, &[]).unwrap_err();
        let msg = err.to_string();
        assert!(
            msg.starts_with(&format!(
                "kernel {} is an x86_64 EFI application, not a Linux kernel",
                ipxe.display()
            )),
            "{msg}"
        );
        assert!(listing(assets.path()).is_empty());
    }

    #[test]
    fn a_different_file_under_the_digest_is_not_overwritten() {
        let src = tempfile::tempdir().unwrap();
        let assets = tempfile::tempdir().unwrap();
        let kernel = write(src.path(), "Image", &arm64_image(true));
        let digest = hex(&Sha256::digest(fs::read(&kernel).unwrap()));
        fs::create_dir(assets.path().join(STORE_DIR)).unwrap();
        let squatter = assets.path().join(STORE_DIR).join(&digest);
        fs::write(&squatter, b"damaged").unwrap();
        let arm64 = ArchSpec::all_of(KernelArch::Arm64);
        let err = import(assets.path(), &arm64, &kernel, &[]).unwrap_err();
        assert!(matches!(err, AssetError::Collision { .. }), "{err}");
        assert_eq!(fs::read(&squatter).unwrap(), b"damaged");
        assert_eq!(listing(&assets.path().join(STORE_DIR)), vec![digest]);
    }
}
