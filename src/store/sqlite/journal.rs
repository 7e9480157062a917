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
//!
//! What survives a power loss is `[store] sync` ([`SyncMode`]): by default
//! (`none`) an appended change is in the page cache only, and the kernel
//! writes it out within its writeback delay (about 30 s); `group` and
//! `always` make it durable (`fdatasync`) before the answer leaves, and the
//! SQLite commits that take over from the journal are then `synchronous =
//! FULL`. `group` lets the changes that arrive while one `fdatasync` runs
//! share the next one (one leader syncs for every waiter behind it);
//! `always` syncs each change by itself. A segment is synced by the writer
//! right after it is sealed, so a waiter only ever needs the current
//! segment and the one sealed last.
//!
//! Segments hold node tokens: they are created `0600`.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write as _};
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};

use std::io::{Seek as _, SeekFrom};
use std::os::unix::fs::OpenOptionsExt as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use crate::model::{Lease, LeaseState, Mac, Node, Timestamp};

/// Segment `n` of the journal in `dir`.
pub fn segment(dir: &Path, n: u64) -> PathBuf {
    dir.join(format!("leases.journal.{n}"))
}

/// Creates (empty) segment `n`, to be swapped in later; readable by
/// rackboot alone (it holds node tokens).
pub fn create_segment(dir: &Path, n: u64) -> io::Result<File> {
    OpenOptions::new()
        .create(true)
        .write(true)
        .truncate(true)
        .mode(0o600)
        .open(segment(dir, n))
}

/// `[store] sync`: how far a journaled change is on disk before it is
/// answered (see the module comment).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SyncMode {
    /// In the page cache: survives the process dying, not a power loss.
    #[default]
    None,
    /// On disk; changes that arrive during one `fdatasync` share the next.
    Group,
    /// On disk; one `fdatasync` per change.
    Always,
}

impl SyncMode {
    pub fn as_str(self) -> &'static str {
        match self {
            SyncMode::None => "none",
            SyncMode::Group => "group",
            SyncMode::Always => "always",
        }
    }
}

/// Where the changes appended so far are: the segment being appended to,
/// the one sealed last (until the writer has synced it), and how many
/// changes were appended in all.
#[derive(Clone)]
pub struct Ticket {
    file: Arc<File>,
    sealed: Option<Arc<File>>,
    seq: u64,
}

impl Ticket {
    fn sync(&self) -> io::Result<()> {
        if let Some(f) = &self.sealed {
            f.sync_data()?;
        }
        self.file.sync_data()
    }
}

/// Makes appended changes durable as `[store] sync` asks.
pub struct Syncer {
    mode: SyncMode,
    /// Every change up to this one is on disk (`group`).
    synced: AtomicU64,
    /// The one `fdatasync` in flight (`group`): whoever holds it syncs for
    /// everyone waiting behind it.
    leader: Mutex<()>,
    /// `fdatasync` rounds run by waiters (for tests and the benchmark).
    rounds: AtomicU64,
}

impl Syncer {
    pub fn new(mode: SyncMode) -> Syncer {
        Syncer {
            mode,
            synced: AtomicU64::new(0),
            leader: Mutex::new(()),
            rounds: AtomicU64::new(0),
        }
    }

    /// How many `fdatasync` rounds waiters ran.
    #[cfg(test)]
    pub fn rounds(&self) -> u64 {
        self.rounds.load(Ordering::Relaxed)
    }

    pub fn mode(&self) -> SyncMode {
        self.mode
    }

    /// Blocks until the change `mine` was taken after is on disk; `now`
    /// says where the journal is at (taken under its lock).
    pub fn wait(&self, mine: &Ticket, now: impl FnOnce() -> Ticket) -> io::Result<()> {
        match self.mode {
            SyncMode::None => Ok(()),
            SyncMode::Always => {
                self.rounds.fetch_add(1, Ordering::Relaxed);
                mine.sync()
            }
            SyncMode::Group => {
                if self.synced.load(Ordering::Acquire) >= mine.seq {
                    return Ok(());
                }
                let _leader = self.leader.lock().unwrap_or_else(PoisonError::into_inner);
                if self.synced.load(Ordering::Acquire) >= mine.seq {
                    return Ok(()); // the previous leader's sync covered it
                }
                let now = now();
                self.rounds.fetch_add(1, Ordering::Relaxed);
                now.sync()?;
                // Sealed two segments ago: the writer synced it already, but
                // syncing it again costs nothing and needs no proof.
                let covered = |f: &Arc<File>| {
                    Arc::ptr_eq(f, &now.file)
                        || now.sealed.as_ref().is_some_and(|s| Arc::ptr_eq(f, s))
                };
                if !covered(&mine.file) {
                    mine.file.sync_data()?;
                }
                self.synced.fetch_max(now.seq, Ordering::AcqRel);
                Ok(())
            }
        }
    }
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
    file: Arc<File>,
    /// Bytes appended to it (nothing to seal when 0).
    written: u64,
    /// A failed write left part of a line that could not be cut off.
    torn: bool,
    /// Changes appended since the store opened (all segments).
    appended: u64,
    /// The segment sealed last, until the writer has synced it.
    sealed: Option<Arc<File>>,
}

/// What [`replay`] found: the changes in order, and the segment files that
/// hold them (to delete once the changes are committed).
pub struct Replay {
    pub changes: Vec<Change>,
    pub segments: Vec<PathBuf>,
    /// Lines skipped because they did not parse (each logged).
    pub skipped: usize,
}

/// Reads every segment left in `dir`, in order. A line that does not parse
/// (not UTF-8, or not a change) is skipped with a warning naming the file,
/// line and byte offset: one bad line must not cost the other changes.
pub fn replay(dir: &Path) -> io::Result<Replay> {
    let segments = segments(dir)?;
    let mut changes = Vec::new();
    let mut skipped = 0;
    for path in &segments {
        let bytes = fs::read(path)?;
        let end = bytes.iter().rposition(|b| *b == b'\n');
        let complete = end.map_or(&bytes[..0], |end| &bytes[..end]);
        if end.map_or(0, |e| e + 1) < bytes.len() {
            tracing::warn!(path = %path.display(), offset = end.map_or(0, |e| e + 1), "journal: skipping an unfinished last line (the process stopped while writing it)");
        }
        // A segment opened and never written to (every clean stop leaves
        // one) has no line at all, not one empty line.
        if end.is_none() {
            continue;
        }
        let mut offset = 0;
        for (n, line) in complete.split(|b| *b == b'\n').enumerate() {
            let parsed = std::str::from_utf8(line)
                .map_err(|e| format!("not UTF-8 (at byte {} of the line)", e.valid_up_to()))
                .and_then(Change::parse);
            match parsed {
                Ok(c) => changes.push(c),
                Err(why) => {
                    skipped += 1;
                    tracing::warn!(
                        path = %path.display(),
                        line = n + 1,
                        offset,
                        %why,
                        "journal: skipping a line that does not parse"
                    )
                }
            }
            offset += line.len() + 1;
        }
    }
    Ok(Replay {
        changes,
        segments,
        skipped,
    })
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
            file: Arc::new(file),
            written: 0,
            torn: false,
            appended: 0,
            sealed: None,
        }
    }

    /// Where the changes appended so far are, for [`Syncer::wait`].
    pub fn ticket(&self) -> Ticket {
        Ticket {
            file: self.file.clone(),
            sealed: self.sealed.clone(),
            seq: self.appended,
        }
    }

    /// The writer has synced `segment` (sealed by [`Journal::swap`]).
    pub fn synced(&mut self, segment: &Arc<File>) {
        if self
            .sealed
            .as_ref()
            .is_some_and(|s| Arc::ptr_eq(s, segment))
        {
            self.sealed = None;
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
        let mut file = &*self.file;
        match file.write_all(line.as_bytes()) {
            Ok(()) => {
                self.torn = false;
                self.written += line.len() as u64;
                self.appended += 1;
                Ok(())
            }
            Err(e) => {
                let cut = file
                    .set_len(self.written)
                    .and_then(|()| file.seek(SeekFrom::Start(self.written)));
                if cut.is_err() {
                    self.torn = true;
                }
                Err(e)
            }
        }
    }

    /// Appends to `next` from now on and returns the segment sealed (to
    /// close outside the lock), or gives `next` back when nothing was
    /// appended to the current one. Makes no system call. The sealed
    /// segment stays in the tickets until [`Journal::synced`].
    pub fn swap(&mut self, next: File) -> Result<Arc<File>, File> {
        if self.written == 0 {
            return Err(next);
        }
        self.written = 0;
        self.torn = false;
        let old = std::mem::replace(&mut self.file, Arc::new(next));
        self.sealed = Some(old.clone());
        Ok(old)
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

    /// A clean stop leaves an empty segment: replaying it finds nothing
    /// wrong (no warning of a line that does not parse).
    #[test]
    fn an_empty_segment_replays_nothing_and_skips_nothing() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("leases.journal.3"), b"").unwrap();
        let r = replay(dir.path()).unwrap();
        assert_eq!((r.changes.len(), r.segments.len(), r.skipped), (0, 1, 0));
        // An empty line is a bad line, though.
        std::fs::write(dir.path().join("leases.journal.4"), b"\n").unwrap();
        assert_eq!(replay(dir.path()).unwrap().skipped, 1);
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
