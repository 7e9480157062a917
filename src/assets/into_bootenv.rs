//! `assets add --bootenv NAME` and the drop folder: import a kernel and its
//! initrds, then name them in `<bootenvs_dir>/NAME.toml` for their
//! architecture, so that a typo or a wrong kernel can never break booting.
//!
//! Order, and why: the kernel's architecture is checked first (nothing is
//! written for a wrong one); the files are stored by digest; the edited text
//! is loaded as a whole catalog exactly as the server would load it
//! ([`Catalog::load_with`]); only then is the file replaced, atomically
//! (temporary file, fsync, rename), so the server's hot reload only ever
//! sees the old file or the new, valid one. A refused edit also removes the
//! files this import stored, so a refusal changes nothing. Edits hold an
//! exclusive lock on `<bootenvs_dir>/.rackboot-edit.lock`, so the CLI and
//! the server's drop folder never lose each other's edits.
//!
//! The edit is made with `toml_edit`: comments, key order and every key this
//! does not set (description, scripts, other architectures, `cmdline`) stay
//! as the image maintainer wrote them.

use std::fs::{self, File};
use std::io::Write;
use std::path::{Path, PathBuf};

use toml_edit::{Array, DocumentMut, InlineTable, Item, Table, Value};

use super::{ArchSpec, AssetError, Imported, KernelArch, Source};
use crate::boot::bootenv::{ArchBoot, Bootenv, BootenvError, LOCAL, is_bootenv_name};
use crate::boot::{Catalog, CatalogError};
use crate::model::BootArch;

/// The command line a new `[arch.…]` table gets when the default bootenv
/// (normally `discovery`) has none for that architecture: the serial console
/// of that architecture in qemu and most servers, and what the operational
/// image needs to find rackboot. Other kernels ignore the `rackboot.*` words.
pub fn default_cmdline(arch: KernelArch) -> &'static str {
    match arch {
        KernelArch::Arm64 => {
            "console=ttyAMA0 rackboot.url={{ server_url }} rackboot.mac={{ node.mac }} rackboot.token={{ node.token }}"
        }
        KernelArch::X86 | KernelArch::X86_64 => {
            "console=ttyS0 rackboot.url={{ server_url }} rackboot.mac={{ node.mac }} rackboot.token={{ node.token }}"
        }
    }
}

/// The directories an edit reads and writes, and the bootenv new command
/// lines are copied from.
#[derive(Clone, Debug)]
pub struct Target {
    pub assets_dir: PathBuf,
    pub bootenvs_dir: PathBuf,
    pub scripts_dir: PathBuf,
    pub default_bootenv: String,
}

impl From<&crate::config::Config> for Target {
    fn from(cfg: &crate::config::Config) -> Target {
        Target {
            assets_dir: cfg.assets_dir.clone(),
            bootenvs_dir: cfg.bootenvs_dir.clone(),
            scripts_dir: cfg.scripts_dir.clone(),
            default_bootenv: cfg.default_bootenv.clone(),
        }
    }
}

/// What [`add`] did.
#[derive(Clone, Debug)]
pub struct Added {
    pub imported: Imported,
    /// The bootenv file.
    pub path: PathBuf,
    /// The file did not exist before.
    pub created: bool,
    /// The file's text changed (false when it already named these files).
    pub changed: bool,
    /// The `[arch.…]` tables written.
    pub arches: Vec<BootArch>,
}

/// Why a kernel was not put into a bootenv. In every case the bootenv file
/// and the assets directory are as they were.
#[derive(Debug, thiserror::Error)]
pub enum IntoBootenvError {
    #[error("`{0}` is not a bootenv name (letters, digits, - and _)")]
    BadName(String),
    #[error("`local` boots the node's own disk and names no kernel; choose another bootenv")]
    Local,
    #[error(
        "bootenv {path}: [arch.{arch}] boots the local disk (`local = ...`); remove that line first to boot a kernel there"
    )]
    LocalArch { path: PathBuf, arch: BootArch },
    #[error(transparent)]
    Asset(#[from] AssetError),
    /// The file as it is on disk does not parse; fix it before adding to it.
    #[error("{0}; fix it first (nothing was changed)")]
    Existing(BootenvError),
    #[error(
        "refused, the bootenvs would not load with this change: {source} ({path} left as it was)"
    )]
    Invalid { path: PathBuf, source: CatalogError },
    #[error("cannot write {path}: {source}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
}

impl IntoBootenvError {
    /// The kernel is for another architecture than the bootenv tables asked.
    pub fn is_wrong_arch(&self) -> bool {
        matches!(self, IntoBootenvError::Asset(e) if e.is_wrong_arch())
    }
}

/// Imports `kernel` and `initrds` for `arch` and names them in bootenv
/// `name` (see the module comment for the order of checks).
pub fn add(
    target: &Target,
    name: &str,
    arch: &ArchSpec,
    kernel: &Source,
    initrds: &[Source],
) -> Result<Added, IntoBootenvError> {
    if !is_bootenv_name(name) {
        return Err(IntoBootenvError::BadName(name.to_string()));
    }
    if name == LOCAL {
        return Err(IntoBootenvError::Local);
    }
    let write_err = |path: &Path| {
        let path = path.to_path_buf();
        move |source| IntoBootenvError::Write { path, source }
    };
    fs::create_dir_all(&target.bootenvs_dir).map_err(write_err(&target.bootenvs_dir))?;
    let _lock = lock(&target.bootenvs_dir)?;

    let path = target.bootenvs_dir.join(format!("{name}.toml"));
    let old = match fs::read_to_string(&path) {
        Ok(text) => Some(text),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(source) => {
            return Err(IntoBootenvError::Existing(BootenvError::Read {
                path: path.clone(),
                source,
            }));
        }
    };
    let mut doc = match &old {
        Some(text) => {
            let parsed = Bootenv::parse(&path, text).map_err(IntoBootenvError::Existing)?;
            for a in &arch.boot {
                if let Some(ArchBoot::Local(_)) = parsed.for_arch(*a) {
                    return Err(IntoBootenvError::LocalArch {
                        path: path.clone(),
                        arch: *a,
                    });
                }
            }
            text.parse::<DocumentMut>().map_err(|e| {
                IntoBootenvError::Existing(BootenvError::Parse {
                    path: path.clone(),
                    message: e.to_string(),
                })
            })?
        }
        None => {
            let mut doc = DocumentMut::new();
            doc["description"] =
                toml_edit::value(format!("{name} (written by rackboot assets add)"));
            doc
        }
    };

    let imported = super::import(&target.assets_dir, arch, kernel, initrds)?;
    let cmdline = |a: BootArch| template_cmdline(target, a, arch.kernel);
    set_arches(&mut doc, &arch.boot, &imported, cmdline);
    let text = doc.to_string();

    // Refused below: forget the files this import stored, so nothing changed.
    let undo = |imported: &Imported| {
        for s in std::iter::once(&imported.kernel).chain(&imported.initrds) {
            if !s.already_present {
                let _ = fs::remove_file(target.assets_dir.join(&s.relative));
            }
        }
    };
    if let Err(source) = Catalog::load_with(
        &target.bootenvs_dir,
        &target.scripts_dir,
        &target.assets_dir,
        &target.default_bootenv,
        Some((&path, &text)),
    ) {
        undo(&imported);
        return Err(IntoBootenvError::Invalid { path, source });
    }
    let changed = old.as_deref() != Some(text.as_str());
    if changed && let Err(e) = replace_file(&path, &text) {
        undo(&imported);
        return Err(e);
    }
    Ok(Added {
        imported,
        path,
        created: old.is_none(),
        changed,
        arches: arch.boot.clone(),
    })
}

/// The command line for a new `[arch.a]` table: the default bootenv's for
/// that architecture if it boots a kernel there, else [`default_cmdline`].
fn template_cmdline(target: &Target, a: BootArch, kernel: KernelArch) -> String {
    let path = target
        .bootenvs_dir
        .join(format!("{}.toml", target.default_bootenv));
    match Bootenv::load(&path)
        .ok()
        .and_then(|b| b.arches.get(&a).cloned())
    {
        Some(ArchBoot::Kernel { cmdline, .. }) if !cmdline.trim().is_empty() => cmdline,
        _ => default_cmdline(kernel).to_string(),
    }
}

/// Sets `kernel` and `initrds` in each `[arch.a]`, creating the table (with a
/// `cmdline`) where it is missing; a value that is replaced keeps its comments.
fn set_arches(
    doc: &mut DocumentMut,
    arches: &[BootArch],
    imported: &Imported,
    cmdline: impl Fn(BootArch) -> String,
) {
    let root = doc.as_table_mut();
    if !root.contains_key("arch") {
        let mut t = Table::new();
        t.set_implicit(true);
        root.insert("arch", Item::Table(t));
    }
    let arch_item = root.get_mut("arch").expect("inserted above");
    let parent_is_inline = arch_item.is_inline_table();
    let arch_tables = arch_item
        .as_table_like_mut()
        .expect("Bootenv::parse accepted `arch` as a table");
    for a in arches {
        if !arch_tables.contains_key(a.as_str()) {
            let new = if parent_is_inline {
                Item::Value(Value::InlineTable(InlineTable::new()))
            } else {
                Item::Table(Table::new())
            };
            arch_tables.insert(a.as_str(), new);
        }
        let t = arch_tables
            .get_mut(a.as_str())
            .and_then(Item::as_table_like_mut)
            .expect("Bootenv::parse accepted [arch.*] as a table");
        let mut initrds = Array::new();
        for i in &imported.initrds {
            initrds.push(i.relative.as_str());
        }
        set_value(t, "kernel", Value::from(imported.kernel.relative.as_str()));
        set_value(t, "initrds", Value::Array(initrds));
        if !t.contains_key("cmdline") {
            t.insert("cmdline", toml_edit::value(cmdline(*a)));
        }
    }
}

fn set_value(t: &mut dyn toml_edit::TableLike, key: &str, mut new: Value) {
    if let Some(old) = t.get(key).and_then(Item::as_value) {
        *new.decor_mut() = old.decor().clone();
    }
    t.insert(key, Item::Value(new));
}

/// Writes `text` to a temporary file next to `path`, syncs it, and renames it
/// over `path`: a reader (the server's reload) sees the old file or the new.
fn replace_file(path: &Path, text: &str) -> Result<(), IntoBootenvError> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let tmp = dir.join(format!(
        ".{}.{}.tmp",
        path.file_name()
            .and_then(|n| n.to_str())
            .unwrap_or("bootenv"),
        std::process::id()
    ));
    let err = |p: &Path| {
        let p = p.to_path_buf();
        move |source| IntoBootenvError::Write { path: p, source }
    };
    let result = (|| {
        let mut f = File::create(&tmp)?;
        // A replaced file keeps its permissions (group-readable for reviewers, say).
        if let Ok(meta) = fs::metadata(path) {
            f.set_permissions(meta.permissions())?;
        }
        f.write_all(text.as_bytes())?;
        f.sync_all()?;
        fs::rename(&tmp, path)?;
        // The rename itself is durable once the directory is synced.
        File::open(dir)?.sync_all()
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result.map_err(err(path))
}

/// An exclusive lock held for one edit (released on drop).
fn lock(bootenvs_dir: &Path) -> Result<nix::fcntl::Flock<File>, IntoBootenvError> {
    let path = bootenvs_dir.join(".rackboot-edit.lock");
    let file = File::options()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(|source| IntoBootenvError::Write {
            path: path.clone(),
            source,
        })?;
    nix::fcntl::Flock::lock(file, nix::fcntl::FlockArg::LockExclusive).map_err(|(_, errno)| {
        IntoBootenvError::Write {
            path,
            source: errno.into(),
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A synthetic x86_64 bzImage / arm64 Image header behind an EFI stub's
    /// "MZ", enough for detection.
    fn kernel(arch: KernelArch) -> Vec<u8> {
        use crate::assets::test_headers::{arm64_image, bzimage};
        match arch {
            KernelArch::Arm64 => arm64_image(true),
            _ => bzimage(0x020f, 1, true),
        }
    }

    struct Fixture {
        dir: tempfile::TempDir,
        target: Target,
    }

    const DISCOVERY: &str = r#"# the operational image
description = "discovery"
scripts = ["hello.sh"]

[arch.x86_64_efi]
kernel = "vmlinuz"
cmdline = "console=ttyS9 rackboot.url={{ server_url }}"
"#;

    impl Fixture {
        fn new() -> Fixture {
            let dir = tempfile::tempdir().unwrap();
            let p = dir.path();
            for d in ["assets", "bootenvs", "scripts", "src"] {
                fs::create_dir_all(p.join(d)).unwrap();
            }
            fs::write(p.join("assets/vmlinuz"), kernel(KernelArch::X86_64)).unwrap();
            fs::write(p.join("scripts/hello.sh"), "echo hi\n").unwrap();
            fs::write(p.join("bootenvs/discovery.toml"), DISCOVERY).unwrap();
            fs::write(p.join("src/vmlinuz"), kernel(KernelArch::X86_64)).unwrap();
            fs::write(p.join("src/Image"), kernel(KernelArch::Arm64)).unwrap();
            fs::write(p.join("src/initrd.img"), b"initrd").unwrap();
            let target = Target {
                assets_dir: p.join("assets"),
                bootenvs_dir: p.join("bootenvs"),
                scripts_dir: p.join("scripts"),
                default_bootenv: "discovery".into(),
            };
            Fixture { dir, target }
        }

        fn src(&self, name: &str) -> PathBuf {
            self.dir.path().join("src").join(name)
        }

        fn add(&self, name: &str, arch: &str, kernel: &str) -> Result<Added, IntoBootenvError> {
            add(
                &self.target,
                name,
                &arch.parse().unwrap(),
                &Source::open(&self.src(kernel))?,
                &[Source::open(&self.src("initrd.img"))?],
            )
        }

        fn bootenv(&self, name: &str) -> String {
            fs::read_to_string(self.target.bootenvs_dir.join(format!("{name}.toml"))).unwrap()
        }

        fn stored(&self) -> usize {
            fs::read_dir(self.target.assets_dir.join("sha256"))
                .map(|d| d.count())
                .unwrap_or(0)
        }

        fn catalog(&self) -> Catalog {
            let t = &self.target;
            Catalog::load(
                &t.bootenvs_dir,
                &t.scripts_dir,
                &t.assets_dir,
                &t.default_bootenv,
            )
            .unwrap()
        }
    }

    #[test]
    fn a_new_bootenv_gets_the_default_bootenvs_cmdline_and_loads() {
        let f = Fixture::new();
        let added = f.add("rescue", "x86_64", "vmlinuz").unwrap();
        assert!(added.created && added.changed);
        let text = f.bootenv("rescue");
        let k = &added.imported.kernel.relative;
        assert!(k.starts_with("sha256/") && k.len() == 7 + 64, "{k}");
        assert!(text.contains(&format!("kernel = \"{k}\"")), "{text}");
        // x86_64_efi copies discovery's command line; bios has none there.
        let b = f.catalog().get("rescue").unwrap().clone();
        let cmdline = |a| match b.for_arch(a) {
            Some(ArchBoot::Kernel { cmdline, .. }) => cmdline.clone(),
            other => panic!("{other:?}"),
        };
        assert_eq!(
            cmdline(BootArch::X86_64Efi),
            "console=ttyS9 rackboot.url={{ server_url }}"
        );
        assert_eq!(cmdline(BootArch::Bios), default_cmdline(KernelArch::X86_64));
        assert!(b.for_arch(BootArch::Arm64Efi).is_none());
    }

    #[test]
    fn an_update_keeps_other_keys_comments_and_architectures() {
        let f = Fixture::new();
        f.add("discovery", "arm64", "Image").unwrap();
        let text = f.bootenv("discovery");
        assert!(text.starts_with("# the operational image\n"), "{text}");
        assert!(text.contains("scripts = [\"hello.sh\"]"), "{text}");
        assert!(
            text.contains("[arch.x86_64_efi]\nkernel = \"vmlinuz\""),
            "{text}"
        );
        assert!(text.contains("[arch.arm64_efi]"), "{text}");
        assert!(text.contains("console=ttyAMA0"), "{text}");
        f.catalog();

        // A second kernel for one boot architecture replaces only its paths.
        let added = f.add("discovery", "x86_64_efi", "vmlinuz").unwrap();
        let text = f.bootenv("discovery");
        assert!(!text.contains("[arch.bios]"), "{text}");
        assert!(
            text.contains("cmdline = \"console=ttyS9 rackboot.url={{ server_url }}\""),
            "kept: {text}"
        );
        assert!(text.contains(&added.imported.kernel.relative));
        // The same again changes nothing.
        assert!(!f.add("discovery", "x86_64_efi", "vmlinuz").unwrap().changed);
    }

    #[test]
    fn refusals_change_nothing() {
        let f = Fixture::new();
        let before = f.bootenv("discovery");

        let err = f.add("discovery", "arm64", "vmlinuz").unwrap_err();
        assert!(err.is_wrong_arch(), "{err}");
        assert_eq!(f.stored(), 0);

        // The bootenv would not load (a script it names is gone): refused,
        // and the files stored for it are removed again.
        fs::remove_file(f.dir.path().join("scripts/hello.sh")).unwrap();
        let err = f.add("discovery", "arm64", "Image").unwrap_err();
        assert!(
            matches!(err, IntoBootenvError::Invalid { .. }) && err.to_string().contains("hello.sh"),
            "{err}"
        );
        assert_eq!(f.stored(), 0);
        assert_eq!(f.bootenv("discovery"), before);

        for (name, want) in [("local", "own disk"), ("../x", "not a bootenv name")] {
            let err = f.add(name, "arm64", "Image").unwrap_err().to_string();
            assert!(err.contains(want), "{err}");
        }
        fs::write(
            f.target.bootenvs_dir.join("disk.toml"),
            "[arch.arm64_efi]\nlocal = \"exit\"\n",
        )
        .unwrap();
        let err = f.add("disk", "arm64", "Image").unwrap_err().to_string();
        assert!(
            err.contains("[arch.arm64_efi] boots the local disk"),
            "{err}"
        );
        assert_eq!(f.stored(), 0);
        let names: Vec<_> = fs::read_dir(&f.target.bootenvs_dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .filter(|n| n.ends_with(".tmp"))
            .collect();
        assert!(names.is_empty(), "{names:?}");
    }
}
