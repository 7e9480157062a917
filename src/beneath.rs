//! Opening a file by a name that came from outside (a TFTP read, an HTTP
//! asset path, a template or drop-folder name) so that it cannot leave the
//! folder it is named in.
//!
//! Checking the name is not enough: a symbolic link anywhere on the way
//! (`assets/evil-dir -> /etc`, `x86_64/up -> ../..`) takes a lexically clean
//! path outside, and checking the file system first and opening after races
//! with whoever can write in the folder. So the kernel resolves the name
//! beneath the folder in the same call that opens it: `openat2(2)` with
//! `RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS` (Linux 5.6). Where the kernel
//! lacks `openat2` (or a seccomp filter refuses it), the name is walked one
//! component at a time with `O_NOFOLLOW`, which refuses the same links.
//! Every symbolic link is refused, also one that stays inside: rackboot
//! never makes them, and a rule with no exception cannot be talked around.
//!
//! The caller serves from the descriptor this returns; nothing opens the
//! path a second time.
//!
//! Owns no policy about which folder or which names; callers say that.

use std::fs::{File, Metadata};
use std::io;
use std::os::fd::{AsFd, OwnedFd};
use std::path::Path;

use nix::errno::Errno;
use nix::fcntl::{OFlag, OpenHow, ResolveFlag};
use nix::sys::stat::Mode;

/// Why a name was not opened.
#[derive(Debug)]
pub enum Refused {
    /// Absolute, `..`, `.` or empty: the name itself would leave the folder.
    Outside,
    /// A symbolic link on the way or at the end.
    Link,
    /// Nothing of that name (or a component on the way is not a folder).
    NotFound,
    /// It exists but is not a regular file (a folder, a FIFO, a device...).
    NotAFile,
    /// The folder or the file could not be opened (permissions, say).
    Io(io::Error),
}

impl Refused {
    /// The request named something rackboot will not hand out at all (as
    /// opposed to something that is merely absent or failed).
    pub fn is_forbidden(&self) -> bool {
        matches!(self, Refused::Outside | Refused::Link)
    }
}

impl std::fmt::Display for Refused {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Refused::Outside => f.write_str("the name leaves its folder (absolute, `..` or `.`)"),
            Refused::Link => f.write_str(
                "a symbolic link is on the way; only regular files beneath the folder are served",
            ),
            Refused::NotFound => f.write_str("no such file"),
            Refused::NotAFile => f.write_str("not a regular file"),
            Refused::Io(e) => write!(f, "cannot open: {e}"),
        }
    }
}

/// A regular file opened beneath its folder, and its metadata (from the
/// descriptor, so they describe the same file).
#[derive(Debug)]
pub struct Opened {
    pub file: File,
    pub meta: Metadata,
}

/// Opens `name` (relative, `/`-separated) beneath `dir` for reading.
pub fn open(dir: &Path, name: &str) -> Result<Opened, Refused> {
    if !crate::boot::bootenv::is_relative_inside(name) {
        return Err(Refused::Outside);
    }
    let folder = nix::fcntl::open(
        dir,
        OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
    .map_err(|e| match e {
        Errno::ENOENT | Errno::ENOTDIR => Refused::NotFound,
        e => Refused::Io(e.into()),
    })?;
    // O_NONBLOCK: a FIFO planted in the folder must not hang the open; it
    // changes nothing for the regular files that pass the check below.
    let flags = OFlag::O_RDONLY | OFlag::O_CLOEXEC | OFlag::O_NOCTTY | OFlag::O_NONBLOCK;
    let how = OpenHow::new()
        .flags(flags)
        .resolve(ResolveFlag::RESOLVE_BENEATH | ResolveFlag::RESOLVE_NO_SYMLINKS);
    let fd = match nix::fcntl::openat2(folder.as_fd(), name, how) {
        // No openat2 (before Linux 5.6), or a syscall filter that predates it.
        Err(Errno::ENOSYS | Errno::EPERM) => walk(folder, name, flags),
        other => other,
    }
    .map_err(refusal)?;
    let file = File::from(fd);
    let meta = file.metadata().map_err(Refused::Io)?;
    if !meta.is_file() {
        return Err(Refused::NotAFile);
    }
    Ok(Opened { file, meta })
}

/// `openat2` by hand: each folder on the way, then the file, opened with
/// `O_NOFOLLOW` relative to the one before.
fn walk(folder: OwnedFd, name: &str, flags: OFlag) -> nix::Result<OwnedFd> {
    let mut parts = name.split('/').filter(|p| !p.is_empty()).peekable();
    let mut at = folder;
    while let Some(part) = parts.next() {
        let last = parts.peek().is_none();
        let f = if last {
            flags | OFlag::O_NOFOLLOW
        } else {
            // No O_DIRECTORY: with it a link fails as ENOTDIR, and a
            // link must be told apart from a missing folder.
            OFlag::O_PATH | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC
        };
        let next = nix::fcntl::openat(at.as_fd(), part, f, Mode::empty())?;
        if !last {
            // O_PATH|O_NOFOLLOW opens a link itself rather than failing.
            match nix::sys::stat::fstat(next.as_fd())?.st_mode & libc::S_IFMT {
                libc::S_IFDIR => {}
                libc::S_IFLNK => return Err(Errno::ELOOP),
                _ => return Err(Errno::ENOTDIR),
            }
        }
        at = next;
    }
    Ok(at)
}

fn refusal(e: Errno) -> Refused {
    match e {
        // ELOOP: a link under RESOLVE_NO_SYMLINKS or O_NOFOLLOW; EXDEV: the
        // resolution tried to leave the folder.
        Errno::ELOOP => Refused::Link,
        Errno::EXDEV => Refused::Outside,
        Errno::ENOENT | Errno::ENOTDIR => Refused::NotFound,
        e => Refused::Io(e.into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    fn name(r: &Result<Opened, Refused>) -> String {
        match r {
            Ok(_) => "ok".into(),
            Err(Refused::Outside) => "outside".into(),
            Err(Refused::Link) => "link".into(),
            Err(Refused::NotFound) => "not found".into(),
            Err(Refused::NotAFile) => "not a file".into(),
            Err(Refused::Io(e)) => format!("io {e}"),
        }
    }

    /// A folder with a file, a subfolder, and every kind of link and
    /// non-file that has been used to leave one.
    fn fixture() -> (tempfile::TempDir, std::path::PathBuf) {
        let top = tempfile::tempdir().unwrap();
        let dir = top.path().join("assets");
        std::fs::create_dir_all(dir.join("x86_64")).unwrap();
        std::fs::write(top.path().join("secret"), b"tokens").unwrap();
        std::fs::write(dir.join("vmlinuz"), b"kernel").unwrap();
        std::fs::write(dir.join("x86_64/initrd"), b"initrd").unwrap();
        symlink("/etc", dir.join("evil-dir")).unwrap();
        symlink("../..", dir.join("x86_64/up")).unwrap();
        symlink("../secret", dir.join("secret-link")).unwrap();
        symlink("vmlinuz", dir.join("inside-link")).unwrap();
        symlink("x86_64", dir.join("inside-dir")).unwrap();
        nix::unistd::mkfifo(&dir.join("fifo"), Mode::from_bits_truncate(0o600)).unwrap();
        (top, dir)
    }

    #[test]
    fn only_regular_files_reached_without_links_are_opened() {
        let (_top, dir) = fixture();
        for (path, want) in [
            ("vmlinuz", "ok"),
            ("x86_64/initrd", "ok"),
            ("x86_64//initrd", "ok"),
            ("evil-dir/passwd", "link"),
            ("x86_64/up/secret", "link"),
            ("x86_64/up/assets/vmlinuz", "link"),
            ("secret-link", "link"),
            ("inside-link", "link"),
            ("inside-dir/initrd", "link"),
            ("../secret", "outside"),
            ("/etc/passwd", "outside"),
            ("x86_64/../vmlinuz", "outside"),
            ("", "outside"),
            ("x86_64", "not a file"),
            ("fifo", "not a file"),
            ("nope", "not found"),
            ("vmlinuz/x", "not found"),
        ] {
            assert_eq!(name(&open(&dir, path)), want, "{path}");
        }
        let mut text = String::new();
        std::io::Read::read_to_string(&mut open(&dir, "vmlinuz").unwrap().file, &mut text).unwrap();
        assert_eq!(text, "kernel");
    }

    /// The fallback for kernels without openat2 refuses the same links.
    #[test]
    fn the_walk_refuses_what_openat2_refuses() {
        let (_top, dir) = fixture();
        let flags = OFlag::O_RDONLY | OFlag::O_CLOEXEC | OFlag::O_NONBLOCK;
        let walked = |p: &str| {
            let folder =
                nix::fcntl::open(&dir, OFlag::O_PATH | OFlag::O_DIRECTORY, Mode::empty()).unwrap();
            match walk(folder, p, flags).map_err(refusal) {
                Ok(_) => "ok".to_string(),
                Err(e) => name(&Err(e)),
            }
        };
        for (path, want) in [
            ("vmlinuz", "ok"),
            ("x86_64/initrd", "ok"),
            ("evil-dir/passwd", "link"),
            ("x86_64/up/secret", "link"),
            ("secret-link", "link"),
            ("inside-dir/initrd", "link"),
            ("nope/x", "not found"),
        ] {
            assert_eq!(walked(path), want, "{path}");
        }
    }
}
