//! Which file an asset path names: the one place TFTP and HTTP turn a path
//! a client asked for into an open file beneath the assets directory, so
//! both protocols hand out exactly the same files, each from the descriptor
//! opened here (never by path again, so nothing can be swapped in between).
//!
//! Owns the refusal (outside the directory, or not there); each protocol
//! says it in its own words (a TFTP error packet, an HTTP status).

use std::path::Path;

use crate::beneath::{self, Refused};

/// Why an asset path is not served.
#[derive(Debug, PartialEq, Eq)]
pub enum Refusal {
    /// Absolute paths, `..`, and anything else that could leave the root.
    OutsideRoot,
    NotFound,
}

/// Opens the file `requested` names beneath `root`, if it may be served:
/// a regular file reached without leaving `root` and without crossing a
/// symbolic link ([`crate::beneath`]). The transfer reads this descriptor.
pub fn resolve(root: &Path, requested: &str) -> Result<beneath::Opened, Refusal> {
    // Backslashes are path separators to some Windows-derived PXE stacks.
    if requested.contains('\\') {
        return Err(Refusal::OutsideRoot);
    }
    match beneath::open(root, requested) {
        Ok(o) => Ok(o),
        Err(e) if e.is_forbidden() => Err(Refusal::OutsideRoot),
        Err(Refused::Io(e)) => {
            tracing::warn!(path = requested, root = %root.display(), error = %e, "cannot open asset");
            Err(Refusal::NotFound)
        }
        Err(_) => Err(Refusal::NotFound),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_regular_files_below_the_root_are_served() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("sub")).unwrap();
        std::fs::write(dir.path().join("undionly.kpxe"), b"x").unwrap();
        std::fs::write(dir.path().join("sub/a.efi"), b"x").unwrap();
        std::os::unix::fs::symlink("/etc", dir.path().join("evil-dir")).unwrap();
        std::os::unix::fs::symlink("..", dir.path().join("sub/up")).unwrap();
        let r = dir.path();
        assert_eq!(resolve(r, "undionly.kpxe").unwrap().meta.len(), 1);
        assert!(resolve(r, "sub/a.efi").is_ok());
        for bad in [
            "../etc/passwd",
            "/etc/passwd",
            "sub/../../x",
            "sub\\a.efi",
            "./undionly.kpxe",
            "evil-dir/passwd",
            "sub/up/undionly.kpxe",
        ] {
            assert_eq!(resolve(r, bad).unwrap_err(), Refusal::OutsideRoot, "{bad}");
        }
        assert_eq!(
            resolve(r, "sub").unwrap_err(),
            Refusal::NotFound,
            "directories"
        );
        assert_eq!(resolve(r, "nope").unwrap_err(), Refusal::NotFound);
    }
}
