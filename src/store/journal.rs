//! The lease journal: an append-only file that makes an acknowledged lease
//! durable before the ACK leaves, at the cost of one `write(2)`.
//!
//! Committing each ACK to SQLite would hand the core to the writer thread
//! and back for every REQUEST (a third of the CPU of a DHCP storm went to
//! those switches). Instead a lease change is appended here, in the page
//! cache, which survives the process being killed exactly as a WAL commit
//! with `synchronous=NORMAL` does, and reaches SQLite with the next lazy
//! commit. Kea's memfile backend makes the same trade.
//!
//! The journal is a series of numbered segments, `leases.journal.<n>`. The
//! writer thread creates the next segment ahead of time and, just before a
//! commit that carries every change appended so far, swaps it in under the
//! journal's lock: no file system call happens under that lock, so a slow
//! disk never holds up an ACK waiting to append. Sealed segments are
//! deleted once that commit succeeded. Opening the store replays whatever
//! segments are left, in order, into SQLite: they hold every lease change
//! the file lacks.
//!
//! One line per change, so an admin can read it:
//!
//! ```text
//! put 10.0.1.7 52:54:00:12:34:56 bound 1764489600000
//! put 10.0.1.9 - declined 1764489600000
//! drop 10.0.1.7
//! ```
//!
//! A last line without its newline is a write the process did not finish;
//! it was never acknowledged, so replay skips it.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write as _};
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};

use crate::model::{Lease, LeaseState, Mac, Timestamp};

/// Segment `n` of the journal in `dir`.
pub fn segment(dir: &Path, n: u64) -> PathBuf {
    dir.join(format!("leases.journal.{n}"))
}

/// Creates (empty) segment `n`, to be swapped in later.
pub fn create_segment(dir: &Path, n: u64) -> io::Result<File> {
    OpenOptions::new()
        .create(true)
        .write(true)
        .truncate(true)
        .open(segment(dir, n))
}

/// One durable lease change.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    Put(Lease),
    Drop(Ipv4Addr),
}

impl Change {
    fn line(&self) -> String {
        match self {
            Change::Put(l) => format!(
                "put {} {} {} {}\n",
                l.ip,
                l.mac.map_or_else(|| "-".to_string(), |m| m.to_string()),
                l.state.as_str(),
                l.expires.millis()
            ),
            Change::Drop(ip) => format!("drop {ip}\n"),
        }
    }

    fn parse(line: &str) -> Result<Change, String> {
        let fields: Vec<&str> = line.split(' ').collect();
        let ip = |s: &str| {
            s.parse::<Ipv4Addr>()
                .map_err(|_| format!("`{s}` is not an IPv4 address"))
        };
        match fields.as_slice() {
            ["put", addr, mac, state, expires] => Ok(Change::Put(Lease {
                ip: ip(addr)?,
                mac: match *mac {
                    "-" => None,
                    m => Some(m.parse::<Mac>().map_err(|e| format!("`{m}`: {e}"))?),
                },
                state: state.parse::<LeaseState>()?,
                expires: Timestamp(
                    expires
                        .parse::<i64>()
                        .map_err(|_| format!("`{expires}` is not a time in milliseconds"))?,
                ),
            })),
            ["drop", addr] => Ok(Change::Drop(ip(addr)?)),
            _ => Err("neither `put <ip> <mac|-> <state> <expires>` nor `drop <ip>`".into()),
        }
    }
}

/// The segment being appended to.
pub struct Journal {
    file: File,
    /// Bytes appended to it (nothing to seal when 0).
    written: u64,
}

/// What [`replay`] found: the changes in order, and the segment files that
/// hold them (to delete once the changes are committed).
pub struct Replay {
    pub changes: Vec<Change>,
    pub segments: Vec<PathBuf>,
}

/// Reads every segment left in `dir`, in order. A line that does not parse
/// is skipped with a warning naming the file and line: one bad line must
/// not cost the other leases.
pub fn replay(dir: &Path) -> io::Result<Replay> {
    let segments = segments(dir)?;
    let mut changes = Vec::new();
    for path in &segments {
        let text = fs::read_to_string(path)?;
        let complete = text.rfind('\n').map_or("", |end| &text[..end]);
        if complete.len() + 1 < text.len() {
            tracing::warn!(path = %path.display(), "lease journal: skipping an unfinished last line (the process stopped while writing it)");
        }
        for (n, line) in complete.lines().enumerate() {
            match Change::parse(line) {
                Ok(c) => changes.push(c),
                Err(why) => tracing::warn!(
                    path = %path.display(),
                    line = n + 1,
                    %why,
                    "lease journal: skipping a line that does not parse"
                ),
            }
        }
    }
    Ok(Replay { changes, segments })
}

/// The journal's segments in `dir`, oldest first.
fn segments(dir: &Path) -> io::Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    for entry in fs::read_dir(dir)? {
        let entry = entry?;
        let name = entry.file_name();
        let Some(n) = name
            .to_str()
            .and_then(|n| n.strip_prefix("leases.journal."))
            .and_then(|s| s.parse::<u64>().ok())
        else {
            continue;
        };
        out.push((n, entry.path()));
    }
    out.sort();
    Ok(out.into_iter().map(|(_, p)| p).collect())
}

impl Journal {
    /// Appends to `file`, a segment made by [`create_segment`].
    pub fn new(file: File) -> Journal {
        Journal { file, written: 0 }
    }

    /// Appends `change` with one `write(2)`: once this returns, a crash of
    /// the process no longer loses it.
    pub fn append(&mut self, change: &Change) -> io::Result<()> {
        let line = change.line();
        self.file.write_all(line.as_bytes())?;
        self.written += line.len() as u64;
        Ok(())
    }

    /// Appends to `next` from now on and returns the segment sealed (to
    /// close outside the lock), or gives `next` back when nothing was
    /// appended to the current one. Makes no system call.
    pub fn swap(&mut self, next: File) -> Result<File, File> {
        if self.written == 0 {
            return Err(next);
        }
        self.written = 0;
        Ok(std::mem::replace(&mut self.file, next))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lease(ip: [u8; 4], mac: Option<&str>, state: LeaseState) -> Lease {
        Lease {
            ip: Ipv4Addr::from(ip),
            mac: mac.map(|m| m.parse().unwrap()),
            state,
            expires: Timestamp(1_764_489_600_000),
        }
    }

    #[test]
    fn every_change_reads_back_as_written() {
        for c in [
            Change::Put(lease(
                [10, 0, 1, 7],
                Some("52:54:00:12:34:56"),
                LeaseState::Bound,
            )),
            Change::Put(lease([10, 0, 1, 9], None, LeaseState::Declined)),
            Change::Drop(Ipv4Addr::new(10, 0, 1, 7)),
        ] {
            let line = c.line();
            assert!(line.ends_with('\n'));
            assert_eq!(Change::parse(line.trim_end()), Ok(c));
        }
        for bad in [
            "",
            "put 10.0.1.7",
            "put 10.0.1.300 - bound 1",
            "put 10.0.1.7 zz bound 1",
            "put 10.0.1.7 - gone 1",
            "put 10.0.1.7 - bound soon",
            "drop",
            "keep 10.0.1.7",
        ] {
            assert!(Change::parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn replay_reads_segments_in_order_and_skips_a_torn_tail() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let a = Change::Put(lease(
            [10, 0, 1, 1],
            Some("52:54:00:00:00:01"),
            LeaseState::Bound,
        ));
        let b = Change::Drop(Ipv4Addr::new(10, 0, 1, 1));
        let c = Change::Put(lease(
            [10, 0, 1, 2],
            Some("52:54:00:00:00:02"),
            LeaseState::Bound,
        ));
        let mut j = Journal::new(create_segment(d, 9).unwrap());
        let next = create_segment(d, 10).unwrap();
        let next = j.swap(next).expect_err("nothing appended, nothing sealed");
        j.append(&a).unwrap();
        j.swap(next).expect("sealed 9");
        j.append(&b).unwrap();
        j.swap(create_segment(d, 11).unwrap()).expect("sealed 10");
        j.append(&c).unwrap();
        drop(j);
        // A write the process never finished, and a line somebody mangled.
        let mut f = OpenOptions::new()
            .append(true)
            .open(segment(d, 11))
            .unwrap();
        f.write_all(b"nonsense\nput 10.0.1.3 52:54:00:00:00:03 bou")
            .unwrap();

        let r = replay(d).unwrap();
        assert_eq!(r.changes, vec![a, b, c]);
        // By number, not by name: 9 before 10.
        assert_eq!(
            r.segments,
            vec![segment(d, 9), segment(d, 10), segment(d, 11)]
        );
    }

    #[test]
    fn an_empty_directory_replays_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let r = replay(dir.path()).unwrap();
        assert!(r.changes.is_empty() && r.segments.is_empty());
    }
}
