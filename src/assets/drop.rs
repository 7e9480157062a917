//! The watched drop folder (`assets.drop_dir`): kernels and initrds copied
//! into `<drop_dir>/<bootenv>/<arch>/` are imported by the running server as
//! `rackboot assets add --bootenv <bootenv> --arch <arch>` would import them.
//!
//! Layout: a `kernel` file and any number of `initrd*` files (in name order)
//! per architecture folder; `<arch>` is what `--arch` takes. A folder is
//! imported once it holds `kernel` and none of its files changed name, size
//! or modification time between two polls ([`crate::reload::POLL`] apart):
//! a copy in progress keeps changing. Then the folder is moved to
//! `done/<time>-<bootenv>-<arch>/` or `rejected/…`, with a `.reason` file of
//! the same name beside it (what was imported, or why not), logged, and
//! counted in `rackboot_asset_drops_total`. Only the newest [`KEEP`] of each
//! are kept. The bootenv file it writes is put in force by the hot reload.
//!
//! Does not own the import itself ([`super::into_bootenv`]).

use std::collections::HashMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::SystemTime;

use tokio_util::sync::CancellationToken;

use super::into_bootenv::{self, Target};
use super::{ArchSpec, Source};
use crate::beneath::Refused;
use crate::metrics::{AssetDrop, Metrics};

/// Folders kept in `done/` and in `rejected/` each (with their `.reason`).
pub const KEEP: usize = 20;
pub const DONE: &str = "done";
pub const REJECTED: &str = "rejected";

/// Each file's name, size and modification time.
type Fingerprint = Vec<(String, u64, Option<SystemTime>)>;

/// The drop folder and what it imports into.
pub struct DropFolder {
    pub dir: PathBuf,
    pub target: Target,
    pub metrics: Arc<Metrics>,
    /// What each candidate folder looked like at the previous poll.
    seen: HashMap<PathBuf, Fingerprint>,
}

/// What one poll did with one folder.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Imported { into: PathBuf, reason: String },
    Rejected { into: PathBuf, reason: String },
}

impl DropFolder {
    pub fn new(dir: PathBuf, target: Target, metrics: Arc<Metrics>) -> DropFolder {
        DropFolder {
            dir,
            target,
            metrics,
            seen: HashMap::new(),
        }
    }

    /// Polls every [`crate::reload::POLL`] until `cancel` fires. The file
    /// work runs on the blocking pool.
    pub async fn watch(mut self, cancel: CancellationToken) {
        let mut tick = tokio::time::interval(crate::reload::POLL);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = cancel.cancelled() => return,
                _ = tick.tick() => {
                    self = match tokio::task::spawn_blocking(move || { self.poll(); self }).await {
                        Ok(me) => me,
                        Err(e) => {
                            tracing::error!("drop folder poll failed: {e}; drop folder no longer watched");
                            return;
                        }
                    };
                }
            }
        }
    }

    /// One pass: imports every folder that was stable since the last pass.
    pub fn poll(&mut self) -> Vec<Outcome> {
        for d in [DONE, REJECTED] {
            if let Err(e) = fs::create_dir_all(self.dir.join(d)) {
                tracing::error!(
                    "drop folder {}: cannot create {d}/: {e}",
                    self.dir.display()
                );
                return Vec::new();
            }
        }
        let mut outcomes = Vec::new();
        let mut present = Vec::new();
        for bootenv_dir in subdirs(&self.dir) {
            let name = file_name(&bootenv_dir);
            if name == DONE || name == REJECTED || name.starts_with('.') {
                continue;
            }
            let mut moved = false;
            for arch_dir in subdirs(&bootenv_dir) {
                if file_name(&arch_dir).starts_with('.') {
                    continue;
                }
                let now = fingerprint(&arch_dir);
                present.push(arch_dir.clone());
                let stable = self.seen.get(&arch_dir) == Some(&now);
                if !stable || !now.iter().any(|(n, _, _)| n == "kernel") {
                    self.seen.insert(arch_dir, now);
                    continue;
                }
                self.seen.remove(&arch_dir);
                outcomes.push(self.import(&bootenv_dir, &arch_dir));
                moved = true;
            }
            if moved {
                // Emptied by this poll: it goes too (fails, harmlessly, if not empty).
                let _ = fs::remove_dir(&bootenv_dir);
            }
        }
        self.seen.retain(|p, _| present.contains(p));
        outcomes
    }

    fn import(&self, bootenv_dir: &Path, arch_dir: &Path) -> Outcome {
        let (bootenv, arch) = (file_name(bootenv_dir), file_name(arch_dir));
        let result = self.try_import(&bootenv, &arch, arch_dir);
        let (sub, reason) = match &result {
            Ok(r) => (DONE, r.clone()),
            Err(r) => (REJECTED, r.clone()),
        };
        let into = match self.move_aside(arch_dir, sub, &format!("{bootenv}-{arch}"), &reason) {
            Ok(p) => p,
            Err(e) => {
                // Left in place, it would be imported again at every poll.
                tracing::error!(
                    "drop folder: cannot move {} to {sub}/: {e}; remove it by hand",
                    arch_dir.display()
                );
                arch_dir.to_path_buf()
            }
        };
        prune(&self.dir.join(sub));
        match result {
            Ok(_) => {
                self.metrics.asset_dropped(AssetDrop::Imported);
                tracing::info!("drop folder: {bootenv}/{arch}: {reason}");
                Outcome::Imported { into, reason }
            }
            Err(_) => {
                self.metrics.asset_dropped(AssetDrop::Rejected);
                tracing::error!("drop folder: {bootenv}/{arch} rejected: {reason}");
                Outcome::Rejected { into, reason }
            }
        }
    }

    /// Imports one folder; the text for its `.reason` file either way.
    ///
    /// Every file is opened beneath the drop folder through no symbolic
    /// link, and must be a regular file ([`crate::beneath`]): a link would
    /// publish whatever it points to (an `initrd` linked to the API tokens
    /// file was imported and served). The import reads those descriptors.
    fn try_import(&self, bootenv: &str, arch: &str, dir: &Path) -> Result<String, String> {
        let spec: ArchSpec = arch.parse().map_err(|e| format!("folder `{arch}`: {e}"))?;
        let mut kernel = None;
        let mut initrds = Vec::new();
        // fingerprint() lists names sorted: initrds go in name order.
        for (name, _, _) in fingerprint(dir) {
            if name != "kernel" && !name.starts_with("initrd") {
                return Err(format!(
                    "unexpected file `{name}`: a drop folder holds `kernel` and `initrd*` files only"
                ));
            }
            let opened = crate::beneath::open(&self.dir, &format!("{bootenv}/{arch}/{name}"))
                .map_err(|e| match e {
                    Refused::Link => format!(
                        "`{name}` is a symbolic link (or is reached through one); the drop folder imports regular files only: copy the file itself"
                    ),
                    Refused::NotAFile => format!(
                        "`{name}` is not a regular file; the drop folder imports regular files only"
                    ),
                    e => format!("`{name}`: {e}"),
                })?;
            let source = Source {
                path: dir.join(&name),
                file: opened.file,
            };
            if name == "kernel" {
                kernel = Some(source);
            } else {
                initrds.push(source);
            }
        }
        let kernel = kernel.ok_or("no `kernel` file (it went while the folder was imported)")?;
        let added = into_bootenv::add(&self.target, bootenv, &spec, &kernel, &initrds)
            .map_err(|e| e.to_string())?;
        let tables: Vec<String> = added.arches.iter().map(|a| format!("[arch.{a}]")).collect();
        let initrds: Vec<&str> = added
            .imported
            .initrds
            .iter()
            .map(|s| s.relative.as_str())
            .collect();
        Ok(format!(
            "imported into {} {}: kernel {} ({}), initrds [{}]",
            added.path.display(),
            tables.join(" "),
            added.imported.kernel.relative,
            added.imported.kind,
            initrds.join(", ")
        ))
    }

    /// Moves `dir` to `<drop_dir>/<sub>/<time>-<label>` and writes `reason`
    /// beside it.
    fn move_aside(
        &self,
        dir: &Path,
        sub: &str,
        label: &str,
        reason: &str,
    ) -> std::io::Result<PathBuf> {
        let stamp = humantime::format_rfc3339_seconds(SystemTime::now())
            .to_string()
            .replace(':', "");
        let base = self.dir.join(sub);
        let mut name = format!("{stamp}-{label}");
        let mut n = 1;
        while base.join(&name).exists() {
            n += 1;
            name = format!("{stamp}-{label}-{n}");
        }
        let into = base.join(&name);
        fs::rename(dir, &into)?;
        fs::write(base.join(format!("{name}.reason")), format!("{reason}\n"))?;
        Ok(into)
    }
}

/// Keeps the newest [`KEEP`] folders in `dir` (names start with the time),
/// with their `.reason` files.
fn prune(dir: &Path) {
    let mut names: Vec<PathBuf> = subdirs(dir);
    if names.len() <= KEEP {
        return;
    }
    names.sort();
    for old in &names[..names.len() - KEEP] {
        let _ = fs::remove_dir_all(old);
        let _ = fs::remove_file(old.with_file_name(format!("{}.reason", file_name(old))));
    }
}

fn subdirs(dir: &Path) -> Vec<PathBuf> {
    let mut out: Vec<PathBuf> = fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
        .map(|e| e.path())
        .collect();
    out.sort();
    out
}

fn file_name(p: &Path) -> String {
    p.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
}

fn fingerprint(dir: &Path) -> Fingerprint {
    let mut out: Fingerprint = fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| {
            let meta = e.metadata().ok();
            (
                e.file_name().to_string_lossy().into_owned(),
                meta.as_ref().map_or(0, |m| m.len()),
                meta.and_then(|m| m.modified().ok()),
            )
        })
        .collect();
    out.sort();
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An x86_64 bzImage behind an EFI stub: what `[arch.bios]` and
    /// `[arch.x86_64_efi]` both boot.
    fn bzimage() -> Vec<u8> {
        crate::assets::test_headers::bzimage(0x020f, 1, true)
    }

    /// iPXE's .efi, say.
    fn efi_application() -> Vec<u8> {
        crate::assets::test_headers::efi_application(0x8664)
    }

    fn fixture() -> (tempfile::TempDir, DropFolder) {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path();
        for d in ["assets", "bootenvs", "scripts", "drop"] {
            fs::create_dir_all(p.join(d)).unwrap();
        }
        fs::write(p.join("assets/vmlinuz"), bzimage()).unwrap();
        fs::write(
            p.join("bootenvs/discovery.toml"),
            "[arch.bios]\nkernel = \"vmlinuz\"\ncmdline = \"console=ttyS0\"\n",
        )
        .unwrap();
        let target = Target {
            assets_dir: p.join("assets"),
            bootenvs_dir: p.join("bootenvs"),
            scripts_dir: p.join("scripts"),
            default_bootenv: "discovery".into(),
        };
        let metrics = Arc::new(Metrics::new(&[]));
        let drop = DropFolder::new(p.join("drop"), target, metrics);
        (dir, drop)
    }

    /// A rejected drop leaves no bootenv and stores no file.
    fn nothing_installed(drop: &DropFolder) {
        assert!(!drop.target.bootenvs_dir.join("rescue.toml").exists());
        let store = drop.target.assets_dir.join(crate::assets::STORE_DIR);
        assert!(!store.exists(), "{} was made", store.display());
    }

    fn put(drop: &DropFolder, rel: &str, bytes: &[u8]) {
        let p = drop.dir.join(rel);
        fs::create_dir_all(p.parent().unwrap()).unwrap();
        fs::write(p, bytes).unwrap();
    }

    #[test]
    fn a_stable_folder_is_imported_once_and_moved_to_done() {
        let (_tmp, mut drop) = fixture();
        put(&drop, "rescue/x86_64/kernel", &bzimage());
        put(&drop, "rescue/x86_64/initrd-2.img", b"second");
        put(&drop, "rescue/x86_64/initrd-1.img", b"first");
        assert!(
            drop.poll().is_empty(),
            "first sight: wait for one more poll"
        );
        let out = drop.poll();
        let [Outcome::Imported { into, reason }] = &out[..] else {
            panic!("{out:?}")
        };
        assert!(into.starts_with(drop.dir.join(DONE)), "{into:?}");
        assert!(reason.contains("[arch.bios] [arch.x86_64_efi]"), "{reason}");
        let text = fs::read_to_string(drop.target.bootenvs_dir.join("rescue.toml")).unwrap();
        let first = text.find(&crate::assets::hex(&sha2::Sha256::digest(b"first")));
        let second = text.find(&crate::assets::hex(&sha2::Sha256::digest(b"second")));
        assert!(
            first.is_some() && first < second,
            "initrds in name order: {text}"
        );
        let reason_file = into.with_file_name(format!("{}.reason", file_name(into)));
        assert_eq!(
            fs::read_to_string(reason_file).unwrap(),
            format!("{reason}\n")
        );
        assert!(!drop.dir.join("rescue").exists());
        assert!(drop.poll().is_empty());
    }

    #[test]
    fn a_changing_folder_waits_and_a_bad_one_is_rejected_with_its_reason() {
        let (_tmp, mut drop) = fixture();
        put(&drop, "rescue/arm64/kernel", &bzimage());
        drop.poll();
        put(&drop, "rescue/arm64/initrd", b"still copying");
        assert!(drop.poll().is_empty(), "changed since the last poll");
        let out = drop.poll();
        let [Outcome::Rejected { into, reason }] = &out[..] else {
            panic!("{out:?}")
        };
        assert!(into.starts_with(drop.dir.join(REJECTED)), "{into:?}");
        assert!(reason.contains("is for x86_64"), "{reason}");
        assert!(!drop.target.bootenvs_dir.join("rescue.toml").exists());

        put(&drop, "rescue/ppc64/kernel", &bzimage());
        put(&drop, "other/x86_64/kernel", &bzimage());
        put(&drop, "other/x86_64/notes.txt", b"x");
        drop.poll();
        let reasons: Vec<String> = drop
            .poll()
            .into_iter()
            .map(|o| match o {
                Outcome::Rejected { reason, .. } => reason,
                other => panic!("{other:?}"),
            })
            .collect();
        assert!(reasons[0].contains("notes.txt"), "{reasons:?}");
        assert!(reasons[1].contains("ppc64"), "{reasons:?}");
    }

    /// A link in the drop folder would publish what it points to (the API
    /// tokens file, say): it is rejected, naming the file, and nothing of
    /// its target reaches the assets directory or a bootenv.
    #[test]
    fn links_and_non_files_are_rejected_naming_the_file() {
        let (tmp, mut drop) = fixture();
        let secret = tmp.path().join("tokens.toml");
        fs::write(&secret, b"admin-token = \"s3cret\"").unwrap();
        put(&drop, "rescue/x86_64/kernel", &bzimage());
        std::os::unix::fs::symlink(&secret, drop.dir.join("rescue/x86_64/initrd")).unwrap();
        put(&drop, "other/x86_64/kernel", &bzimage());
        let fifo = drop.dir.join("other/x86_64/initrd");
        nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
        // A linked arch folder is not even a candidate: it is no folder.
        fs::create_dir_all(drop.dir.join("third")).unwrap();
        std::os::unix::fs::symlink(tmp.path(), drop.dir.join("third/x86_64")).unwrap();
        drop.poll();
        let out = drop.poll();
        let reasons: Vec<&str> = out
            .iter()
            .map(|o| match o {
                Outcome::Rejected { reason, .. } => reason.as_str(),
                other => panic!("{other:?}"),
            })
            .collect();
        assert_eq!(reasons.len(), 2, "{reasons:?}");
        assert!(
            reasons[0].contains("`initrd` is not a regular file"),
            "{reasons:?}"
        );
        assert!(
            reasons[1].contains("`initrd` is a symbolic link"),
            "{reasons:?}"
        );
        nothing_installed(&drop);
    }

    #[test]
    fn an_efi_application_dropped_as_a_kernel_is_rejected() {
        let (_tmp, mut drop) = fixture();
        put(&drop, "rescue/x86_64/kernel", &efi_application());
        drop.poll();
        let out = drop.poll();
        let [Outcome::Rejected { reason, .. }] = &out[..] else {
            panic!("{out:?}")
        };
        assert!(
            reason.contains("is an x86_64 EFI application, not a Linux kernel"),
            "{reason}"
        );
        nothing_installed(&drop);
    }

    #[test]
    fn only_the_newest_are_kept() {
        let dir = tempfile::tempdir().unwrap();
        for i in 0..KEEP + 3 {
            fs::create_dir(dir.path().join(format!("{i:03}-x"))).unwrap();
            fs::write(dir.path().join(format!("{i:03}-x.reason")), "r").unwrap();
        }
        prune(dir.path());
        assert_eq!(subdirs(dir.path()).len(), KEEP);
        assert!(!dir.path().join("000-x.reason").exists());
        assert!(dir.path().join("003-x.reason").exists());
    }

    use sha2::Digest;
}
