//! The journal: an append-only file that makes an acknowledged lease, and a
//! new node record, durable before the answer leaves, at the cost of one
//! `write(2)`.
//!
//! Committing each ACK to SQLite would hand the core to the writer thread
//! and back for every REQUEST (a third of the CPU of a DHCP storm went to
//! those switches). Instead a lease change is appended here, in the page
//! cache, which survives the process being killed exactly as a WAL commit
//! with `synchronous=NORMAL` does, and reaches SQLite with the next lazy
//! commit. Kea's memfile backend makes the same trade.
//!
//! A node record is journaled when it is created: its token may go out at
//! once (in a boot script), and a DHCP client is ACKed for it within
//! milliseconds, long before the lazy commit. A record lost in a crash
//! would come back with a new token and lock the booted node out. Only the
//! creation is journaled (later changes of a record are committed before
//! they are answered), so replay inserts a record only where the file has
//! none; `forget` (a deleted record) removes it only while it still has the
//! token it was created with.
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
//! node 8d3c…e1 {"mac":"52:54:00:12:34:56","hostname":"node-525400123456",…}
//! forget 52:54:00:12:34:56 8d3c…e1
//! ```
//!
//! A last line without its newline is a write the process did not finish;
//! it was never acknowledged, so replay skips it. A write that fails (a full
//! disk) is cut off again, so the next append starts on a line of its own.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write as _};
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};

use std::io::{Seek as _, SeekFrom};

use crate::model::{Lease, LeaseState, Mac, Node, Timestamp};

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

/// One durable change.
#[derive(Debug, Clone, PartialEq)]
pub enum Change {
    Put(Lease),
    Drop(Ipv4Addr),
    /// A node record created (kept unless the file has a record of its MAC).
    Node(Box<Node>),
    /// A node record deleted: removed if it still has this token.
    Forget {
        mac: Mac,
        token: String,
    },
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
            // The token is not part of a record's JSON (it never leaves in
            // the API), so it goes first; it is hex, without spaces.
            Change::Node(n) => format!(
                "node {} {}\n",
                n.token,
                serde_json::to_string(n).unwrap_or_default()
            ),
            Change::Forget { mac, token } => format!("forget {mac} {token}\n"),
        }
    }

    fn parse(line: &str) -> Result<Change, String> {
        if let Some(rest) = line.strip_prefix("node ") {
            let (token, json) = rest
                .split_once(' ')
                .ok_or("`node` needs a token and a record")?;
            let mut record: serde_json::Value =
                serde_json::from_str(json).map_err(|e| format!("the record: {e}"))?;
            let fields = record
                .as_object_mut()
                .ok_or("the record is not a JSON object")?;
            fields.insert("token".into(), token.into());
            let node: Node =
                serde_json::from_value(record).map_err(|e| format!("the record: {e}"))?;
            return Ok(Change::Node(Box::new(node)));
        }
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
            ["forget", mac, token] => Ok(Change::Forget {
                mac: mac.parse::<Mac>().map_err(|e| format!("`{mac}`: {e}"))?,
                token: token.to_string(),
            }),
            _ => Err(
                "none of `put <ip> <mac|-> <state> <expires>`, `drop <ip>`, `node <token> <json>`, `forget <mac> <token>`"
                    .into(),
            ),
        }
    }
}

/// The segment being appended to.
pub struct Journal {
    file: File,
    /// Bytes appended to it (nothing to seal when 0).
    written: u64,
    /// A failed write left part of a line that could not be cut off.
    torn: bool,
}

/// What [`replay`] found: the changes in order, and the segment files that
/// hold them (to delete once the changes are committed).
pub struct Replay {
    pub changes: Vec<Change>,
    pub segments: Vec<PathBuf>,
}

/// Reads every segment left in `dir`, in order. A line that does not parse
/// (not UTF-8, or not a change) is skipped with a warning naming the file,
/// line and byte offset: one bad line must not cost the other changes.
pub fn replay(dir: &Path) -> io::Result<Replay> {
    let segments = segments(dir)?;
    let mut changes = Vec::new();
    for path in &segments {
        let bytes = fs::read(path)?;
        let complete = bytes
            .iter()
            .rposition(|b| *b == b'\n')
            .map_or(&bytes[..0], |end| &bytes[..end]);
        if complete.len() + 1 < bytes.len() {
            tracing::warn!(path = %path.display(), offset = complete.len(), "journal: skipping an unfinished last line (the process stopped while writing it)");
        }
        let mut offset = 0;
        for (n, line) in complete.split(|b| *b == b'\n').enumerate() {
            let parsed = std::str::from_utf8(line)
                .map_err(|e| format!("not UTF-8 (at byte {} of the line)", e.valid_up_to()))
                .and_then(Change::parse);
            match parsed {
                Ok(c) => changes.push(c),
                Err(why) => tracing::warn!(
                    path = %path.display(),
                    line = n + 1,
                    offset,
                    %why,
                    "journal: skipping a line that does not parse"
                ),
            }
            offset += line.len() + 1;
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
        Journal {
            file,
            written: 0,
            torn: false,
        }
    }

    /// Appends `change` with one `write(2)`: once this returns, a crash of
    /// the process no longer loses it.
    ///
    /// A write that fails (a full disk) may have left part of the line; it
    /// is cut off again, so the next line does not run into it (and is not
    /// lost with it at replay). If even that fails, the next append starts
    /// with a newline, ending the torn line as one replay skips.
    pub fn append(&mut self, change: &Change) -> io::Result<()> {
        let mut line = change.line();
        if self.torn {
            line.insert(0, '\n');
        }
        match self.file.write_all(line.as_bytes()) {
            Ok(()) => {
                self.torn = false;
                self.written += line.len() as u64;
                Ok(())
            }
            Err(e) => {
                let cut = self
                    .file
                    .set_len(self.written)
                    .and_then(|()| self.file.seek(SeekFrom::Start(self.written)));
                if cut.is_err() {
                    self.torn = true;
                }
                Err(e)
            }
        }
    }

    /// Appends to `next` from now on and returns the segment sealed (to
    /// close outside the lock), or gives `next` back when nothing was
    /// appended to the current one. Makes no system call.
    pub fn swap(&mut self, next: File) -> Result<File, File> {
        if self.written == 0 {
            return Err(next);
        }
        self.written = 0;
        self.torn = false;
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
            Change::Node(Box::new(Node::discovered(
                "52:54:00:12:34:56".parse().unwrap(),
                "discovery",
                "0123abcd".into(),
                Timestamp(1_764_489_600_000),
            ))),
            Change::Forget {
                mac: "52:54:00:12:34:56".parse().unwrap(),
                token: "0123abcd".into(),
            },
        ] {
            let line = c.line();
            assert_eq!(line.matches('\n').count(), 1, "{line:?}");
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
            "node 0123abcd",
            "node 0123abcd {\"mac\":\"52:54:00:12:34:56\"}",
            "node 0123abcd []",
            "forget 52:54:00:12:34:56",
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

    /// A segment with bytes that are not UTF-8 (a disk error, a stray
    /// editor) costs only the line they are on, not the start-up.
    #[test]
    fn a_line_that_is_not_utf8_is_skipped_like_any_bad_line() {
        let dir = tempfile::tempdir().unwrap();
        let a = Change::Put(lease(
            [10, 0, 1, 1],
            Some("52:54:00:00:00:01"),
            LeaseState::Bound,
        ));
        let b = Change::Drop(Ipv4Addr::new(10, 0, 1, 1));
        let mut bytes = a.line().into_bytes();
        bytes.extend_from_slice(b"put 10.0.1.2 \xff\xfe bound 1\n");
        bytes.extend_from_slice(b.line().as_bytes());
        std::fs::write(segment(dir.path(), 0), bytes).unwrap();
        let r = replay(dir.path()).unwrap();
        assert_eq!(r.changes, vec![a, b]);
    }

    /// A failed append (a full disk) leaves no part of its line for the
    /// next one to run into.
    #[test]
    fn a_failed_append_leaves_the_journal_whole() {
        let dir = tempfile::tempdir().unwrap();
        let a = Change::Drop(Ipv4Addr::new(10, 0, 1, 1));
        let mut j = Journal::new(create_segment(dir.path(), 0).unwrap());
        j.append(&a).unwrap();
        // What a write cut short by ENOSPC leaves behind.
        j.file.write_all(b"put 10.0.1.").unwrap();
        j.torn = true;
        let b = Change::Drop(Ipv4Addr::new(10, 0, 1, 2));
        j.append(&b).unwrap();
        assert_eq!(replay(dir.path()).unwrap().changes, vec![a, b]);
    }
}
