//! Small asset files kept in memory for a moment, so a boot network asking
//! for the same loader config, script or answer file thousands of times a
//! second costs no open, stat, read and close each time.
//!
//! Only files of at most [`SMALL`] bytes, and only for [`VALID`] after they
//! were opened and read through [`resolve`] (the same check as every other
//! asset): a file changed or replaced on disk is served as it now is within
//! that time, as nginx's `open_file_cache_valid` does in minutes. Kernels
//! and initrds are not kept: one open per transfer of megabytes is nothing,
//! and holding their descriptors would pin deleted files. No descriptor is
//! held at all: what is kept is the bytes and their metadata, at most
//! [`MAX_FILES`] × [`SMALL`] (4 MiB).

use std::collections::HashMap;
use std::fs::Metadata;
use std::os::unix::fs::FileExt;
use std::path::PathBuf;
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use bytes::Bytes;

use super::resolve::{Refusal, resolve};
use crate::beneath::Opened;

/// Files up to this size are kept in memory (and sent from one buffer).
pub const SMALL: u64 = 64 * 1024;
/// How long a kept file is served without looking at the disk again.
pub const VALID: Duration = Duration::from_secs(1);
/// How many files are kept at most; a boot network's hot set is a few
/// configs per bootenv.
const MAX_FILES: usize = 64;

/// An asset ready to send: a small file's bytes, or the open descriptor of
/// a larger one.
pub enum Asset {
    Small { bytes: Bytes, meta: Metadata },
    File(Opened),
}

impl Asset {
    pub fn meta(&self) -> &Metadata {
        match self {
            Asset::Small { meta, .. } => meta,
            Asset::File(o) => &o.meta,
        }
    }
}

struct Kept {
    bytes: Bytes,
    meta: Metadata,
    read_at: Instant,
}

/// The assets directory, opened through [`resolve`], small files kept.
pub struct AssetFiles {
    root: PathBuf,
    kept: Mutex<HashMap<String, Kept>>,
}

impl AssetFiles {
    pub fn new(root: impl Into<PathBuf>) -> AssetFiles {
        AssetFiles {
            root: root.into(),
            kept: Mutex::new(HashMap::new()),
        }
    }

    /// The file `requested` names beneath the assets directory, refused as
    /// [`resolve`] refuses it (refusals are not kept: a file that appears
    /// is served at once).
    pub fn open(&self, requested: &str) -> Result<Asset, Refusal> {
        let now = Instant::now();
        if let Some(k) = self.lock().get(requested)
            && now.duration_since(k.read_at) < VALID
        {
            return Ok(Asset::Small {
                bytes: k.bytes.clone(),
                meta: k.meta.clone(),
            });
        }
        // Opened and read outside the lock: that touches the disk.
        let opened = resolve(&self.root, requested)?;
        let size = opened.meta.len();
        if size > SMALL {
            return Ok(Asset::File(opened));
        }
        let mut buf = vec![0; size as usize];
        if opened.file.read_exact_at(&mut buf, 0).is_err() {
            // Shrunk while read, or an I/O error: the descriptor's own
            // path says what happened (a short body, a logged error).
            return Ok(Asset::File(opened));
        }
        let bytes = Bytes::from(buf);
        let meta = opened.meta;
        let mut kept = self.lock();
        if kept.len() >= MAX_FILES && !kept.contains_key(requested) {
            kept.retain(|_, k| now.duration_since(k.read_at) < VALID);
            if kept.len() >= MAX_FILES {
                kept.clear();
            }
        }
        kept.insert(
            requested.to_string(),
            Kept {
                bytes: bytes.clone(),
                meta: meta.clone(),
                read_at: now,
            },
        );
        Ok(Asset::Small { bytes, meta })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Kept>> {
        self.kept.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn small(a: Asset) -> Bytes {
        match a {
            Asset::Small { bytes, .. } => bytes,
            Asset::File(_) => panic!("a small file came back as a descriptor"),
        }
    }

    #[test]
    fn a_small_file_is_kept_for_a_moment_then_read_again() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("a.cfg"), b"one").unwrap();
        let files = AssetFiles::new(dir.path());
        assert_eq!(small(files.open("a.cfg").unwrap()), "one");
        // Replaced on disk: served as kept until VALID has passed...
        std::fs::write(dir.path().join("a.cfg"), b"two").unwrap();
        assert_eq!(small(files.open("a.cfg").unwrap()), "one");
        // ...then as it now is.
        files.lock().get_mut("a.cfg").unwrap().read_at -= VALID;
        assert_eq!(small(files.open("a.cfg").unwrap()), "two");
    }

    #[test]
    fn large_files_and_refusals_are_not_kept() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("big"), vec![7u8; SMALL as usize + 1]).unwrap();
        let files = AssetFiles::new(dir.path());
        assert!(matches!(files.open("big").unwrap(), Asset::File(_)));
        assert_eq!(files.open("late").err(), Some(Refusal::NotFound));
        assert_eq!(files.open("../x").err(), Some(Refusal::OutsideRoot));
        std::fs::write(dir.path().join("late"), b"here").unwrap();
        assert_eq!(small(files.open("late").unwrap()), "here");
        assert_eq!(files.lock().len(), 1);
    }

    #[test]
    fn the_kept_set_is_bounded() {
        let dir = tempfile::tempdir().unwrap();
        let files = AssetFiles::new(dir.path());
        for i in 0..MAX_FILES * 2 {
            std::fs::write(dir.path().join(i.to_string()), b"x").unwrap();
            files.open(&i.to_string()).unwrap();
            assert!(files.lock().len() <= MAX_FILES);
        }
    }
}
