//! The writer thread: the queue of writes, how they are sorted into
//! batches (urgent now, lazy later), group commit, and retrying what a
//! failed commit held.

use std::collections::{BTreeMap, HashMap};
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use rusqlite::{Connection, TransactionBehavior, params};
use tokio::sync::{Notify, oneshot};

use super::Health;
use super::journal::{self, Change, Journal};
use super::rows::{
    NODE_COLUMNS, NODE_PARAMS, db, execute_node, ip_col, mac_key, read_events, read_reports,
};
use crate::model::{Event, Lease, Mac, Node, Rollout, ScriptReport};
use crate::store::{EVENTS_PER_NODE, REPORTS_PER_NODE, StoreError};

/// One change for the writer thread. Lazy writes (a node's last-seen time,
/// timeline events, offers) promise nothing to anyone: they ride along with
/// one commit a second (or sooner when something reads or syncs), so under a
/// DHCP storm the pages they touch (random places in the MAC indexes) are
/// written once for thousands of writes instead of once per commit.
pub(super) enum Write {
    Node(Box<Node>),
    LazyNode(Box<Node>),
    /// Records written in the same transaction (one message is never split),
    /// whose hostnames and fixed addresses may have moved between them.
    Nodes(Vec<Node>),
    /// Delete the record and its timeline.
    DeleteNode(Mac),
    Lease(Lease),
    LazyLease(Lease),
    DropLease(Ipv4Addr),
    /// A dropped lease already made durable by the journal.
    LazyDropLease(Ipv4Addr),
    /// Appended to the timeline (lazy).
    Event(Mac, Event),
    /// Trim the MAC's timeline to the newest [`EVENTS_PER_NODE`] (lazy).
    Trim(Mac),
    /// Answered once every write but the lazy ones queued before it is committed.
    Flush(oneshot::Sender<Result<(), String>>),
    /// Answered once everything queued before it is committed.
    Sync(oneshot::Sender<Result<(), String>>),
    /// The MAC's timeline, read after everything queued before it is committed.
    Events(Mac, oneshot::Sender<Result<Vec<Event>, String>>),
    /// A config script report (trimmed to [`REPORTS_PER_NODE`] in the same transaction).
    Report(Mac, ScriptReport),
    /// The MAC's reports and drop count, read after everything queued before it is committed.
    Reports(
        Mac,
        oneshot::Sender<Result<(Vec<ScriptReport>, u64), String>>,
    ),
    /// A rollout's whole record, created or replaced.
    Rollout(Box<Rollout>),
}

/// How long lazy writes may wait for a commit to ride along with.
const LAZY_DELAY: Duration = Duration::from_millis(1000);

/// Lazy writes that commit on their own even before [`LAZY_DELAY`].
pub(super) const LAZY_MAX: usize = 20_000;

/// Most lazy writes one transaction carries: a commit holds the core it runs
/// on, and the DHCP socket must not overflow meanwhile.
const LAZY_CHUNK: usize = 1_000;

/// Most timeline events kept while commits fail; older ones are dropped.
const UNSAVED_EVENTS_MAX: usize = 100_000;

/// The writes waiting for the writer thread. Only a write somebody waits on
/// wakes the writer (once per batch, however many arrive while it commits),
/// so on a busy core the writer and the DHCP server do not hand the CPU back
/// and forth for every packet.
#[derive(Default)]
pub(super) struct WriteQueue {
    pending: Mutex<Pending>,
    wake: Notify,
}

#[derive(Default)]
struct Pending {
    writes: Vec<Write>,
    lazy: usize,
    /// The writer has been woken for what is pending.
    woken: bool,
    closed: bool,
}

impl WriteQueue {
    pub(super) fn push(&self, w: Write) -> Result<(), StoreError> {
        let mut p = self.pending.lock().unwrap_or_else(PoisonError::into_inner);
        if p.closed {
            return Err(StoreError::WriterGone);
        }
        let lazy = matches!(
            w,
            Write::LazyNode(_)
                | Write::LazyLease(_)
                | Write::LazyDropLease(_)
                | Write::Event(..)
                | Write::Trim(_)
        );
        p.writes.push(w);
        if lazy {
            p.lazy += 1;
        }
        if (!lazy || p.lazy >= LAZY_MAX) && !p.woken {
            p.woken = true;
            self.wake.notify_one();
        }
        Ok(())
    }

    /// Everything pending, and whether the queue is closed.
    fn take(&self) -> (Vec<Write>, bool) {
        let mut p = self.pending.lock().unwrap_or_else(PoisonError::into_inner);
        p.woken = false;
        p.lazy = 0;
        (std::mem::take(&mut p.writes), p.closed)
    }

    pub(super) fn close(&self) {
        self.pending
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .closed = true;
        self.wake.notify_one();
    }
}

/// The write that commits a journaled change: `lazy` when the journal holds
/// it, urgent when it does not. A `forget` has none (its delete is queued
/// by itself).
pub(super) fn write_of(c: &Change, lazy: bool) -> Option<Write> {
    Some(match (c, lazy) {
        (Change::Put(l), true) => Write::LazyLease(l.clone()),
        (Change::Put(l), false) => Write::Lease(l.clone()),
        (Change::Drop(ip), true) => Write::LazyDropLease(*ip),
        (Change::Drop(ip), false) => Write::DropLease(*ip),
        (Change::Node(n), true) => Write::LazyNode(n.clone()),
        (Change::Node(n), false) => Write::Node(n.clone()),
        (Change::Forget { .. }, _) => return None,
    })
}

/// The writer thread's side of the lease journal: it numbers the segments
/// and makes each next one before it is needed, outside the journal's lock.
pub(super) struct Sealer<'a> {
    pub(super) journal: &'a Mutex<Journal>,
    pub(super) dir: &'a Path,
    /// The segment being appended to.
    pub(super) current: u64,
    /// Segment `current + 1`, made ahead of time.
    pub(super) spare: Option<std::fs::File>,
    /// `[store] sync` is on: a sealed segment is synced before its commit.
    pub(super) sync: bool,
}

impl Sealer<'_> {
    /// Makes the next segment if it is not made yet.
    fn prepare(&mut self) -> std::io::Result<()> {
        if self.spare.is_none() {
            self.spare = Some(journal::create_segment(self.dir, self.current + 1)?);
        }
        Ok(())
    }
}

/// What one transaction writes: the batch, with later changes of the same
/// record replacing earlier ones (one row each).
#[derive(Default)]
pub(super) struct Batch {
    deletes: Vec<Mac>,
    rekeyed: Vec<Mac>,
    nodes: HashMap<Mac, Box<Node>>,
    pub(super) leases: BTreeMap<u32, Option<Lease>>,
    events: Vec<(Mac, Event)>,
    trims: Vec<Mac>,
    reports: Vec<(Mac, ScriptReport)>,
    /// By id: a newer copy replaces an older one.
    rollouts: BTreeMap<String, Box<Rollout>>,
}

impl Batch {
    /// Writes it holds (for the lazy batch's size limit).
    fn len(&self) -> usize {
        self.nodes.len() + self.leases.len() + self.events.len()
    }

    /// This batch as batches of at most about `max` writes each, in order:
    /// deletes and rekeys first, timeline trims last (after the events).
    fn into_chunks(self, max: usize) -> Vec<Batch> {
        let mut out = vec![Batch {
            deletes: self.deletes,
            rekeyed: self.rekeyed,
            reports: self.reports,
            rollouts: self.rollouts,
            ..Batch::default()
        }];
        let room = |out: &mut Vec<Batch>| {
            if out.last().is_none_or(|b| b.len() >= max) {
                out.push(Batch::default());
            }
        };
        for (mac, n) in self.nodes {
            room(&mut out);
            if let Some(b) = out.last_mut() {
                b.nodes.insert(mac, n);
            }
        }
        for (ip, l) in self.leases {
            room(&mut out);
            if let Some(b) = out.last_mut() {
                b.leases.insert(ip, l);
            }
        }
        for e in self.events {
            room(&mut out);
            if let Some(b) = out.last_mut() {
                b.events.push(e);
            }
        }
        if let Some(b) = out.last_mut() {
            b.trims = self.trims;
        }
        out
    }

    /// Changes it holds (what [`crate::store::Store::health`] reports as unsaved).
    fn changes(&self) -> usize {
        self.len() + self.deletes.len() + self.reports.len() + self.rollouts.len()
    }

    /// Adds `newer`, written after everything in this batch, so that
    /// committing the result ends as committing both in turn would: a
    /// record's newer copy replaces the older one, a delete drops what this
    /// batch would write of the record (deletes run first in a commit, so a
    /// record written again after its delete survives it), events and
    /// reports follow in order.
    fn absorb(&mut self, newer: Batch) {
        for mac in newer.deletes {
            self.nodes.remove(&mac);
            self.events.retain(|(m, _)| *m != mac);
            self.trims.retain(|m| *m != mac);
            self.reports.retain(|(m, _)| *m != mac);
            self.deletes.push(mac);
        }
        self.rekeyed.extend(newer.rekeyed);
        self.nodes.extend(newer.nodes);
        self.leases.extend(newer.leases);
        self.events.extend(newer.events);
        self.trims.extend(newer.trims);
        self.reports.extend(newer.reports);
        self.rollouts.extend(newer.rollouts);
    }

    fn is_empty(&self) -> bool {
        self.deletes.is_empty()
            && self.rekeyed.is_empty()
            && self.nodes.is_empty()
            && self.leases.is_empty()
            && self.events.is_empty()
            && self.trims.is_empty()
            && self.reports.is_empty()
            && self.rollouts.is_empty()
    }
}

/// Where the writer answers a caller waiting on it.
type Answer<T> = oneshot::Sender<Result<T, String>>;

/// A node's reports and how many the bound dropped.
type ReportsRead = (Vec<ScriptReport>, u64);

/// What one wake-up of the writer took from the queue, sorted.
#[derive(Default)]
struct Taken {
    /// Writes somebody waits on: committed first, at once.
    now: Batch,
    flushes: Vec<Answer<()>>,
    syncs: Vec<Answer<()>>,
    reads: Vec<(Mac, Answer<Vec<Event>>)>,
    report_reads: Vec<(Mac, Answer<ReportsRead>)>,
    closed: bool,
}

impl Taken {
    /// Sorts `writes` (in queue order) into this wake-up's batches and the
    /// writer's `lazy` batch.
    fn sort(&mut self, writes: Vec<Write>, lazy: &mut Batch) {
        let now = &mut self.now;
        for w in writes {
            match w {
                Write::Node(n) => {
                    // Every record written is the whole record as it is
                    // now: an older lazy copy must not land after it.
                    lazy.nodes.remove(&n.mac);
                    now.nodes.insert(n.mac, n);
                }
                Write::LazyNode(n) => match now.nodes.get_mut(&n.mac) {
                    Some(newer_than) => *newer_than = n,
                    None => {
                        lazy.nodes.insert(n.mac, n);
                    }
                },
                Write::Nodes(all) => {
                    for n in all {
                        lazy.nodes.remove(&n.mac);
                        now.rekeyed.push(n.mac);
                        now.nodes.insert(n.mac, Box::new(n));
                    }
                }
                Write::DeleteNode(mac) => {
                    // Deletes run first in the transaction: a record
                    // written again after its delete must survive it.
                    for b in [&mut *now, &mut *lazy] {
                        b.nodes.remove(&mac);
                        b.events.retain(|(m, _)| *m != mac);
                        b.trims.retain(|m| *m != mac);
                        b.reports.retain(|(m, _)| *m != mac);
                    }
                    now.deletes.push(mac);
                }
                Write::Lease(l) => {
                    lazy.leases.remove(&u32::from(l.ip));
                    now.leases.insert(u32::from(l.ip), Some(l));
                }
                Write::LazyLease(l) => lazy_lease(now, lazy, u32::from(l.ip), Some(l)),
                Write::LazyDropLease(ip) => lazy_lease(now, lazy, u32::from(ip), None),
                Write::DropLease(ip) => {
                    lazy.leases.remove(&u32::from(ip));
                    now.leases.insert(u32::from(ip), None);
                }
                Write::Event(mac, e) => lazy.events.push((mac, e)),
                Write::Trim(mac) => lazy.trims.push(mac),
                Write::Flush(tx) => self.flushes.push(tx),
                Write::Sync(tx) => self.syncs.push(tx),
                Write::Events(mac, tx) => self.reads.push((mac, tx)),
                Write::Report(mac, r) => now.reports.push((mac, r)),
                Write::Rollout(r) => {
                    now.rollouts.insert(r.id.clone(), r);
                }
                Write::Reports(mac, tx) => self.report_reads.push((mac, tx)),
            }
        }
    }
}

/// A lease write nobody waits on: it replaces a newer-queued urgent write
/// of the same address in place (so it still lands after it), else joins
/// the lazy batch.
fn lazy_lease(now: &mut Batch, lazy: &mut Batch, ip: u32, lease: Option<Lease>) {
    match now.leases.get_mut(&ip) {
        Some(newer_than) => *newer_than = lease,
        None => {
            lazy.leases.insert(ip, lease);
        }
    }
}

/// The writer thread: commits whatever has queued, in order, a transaction
/// at a time, until the queue is closed. It runs a small runtime of its own
/// only to wait for a wake-up with a timeout (the lazy writes' deadline).
///
/// With a lease journal, each commit of everything first seals the journal's
/// segment (every change in it is then in this commit) and removes the
/// sealed segments once the commit succeeded.
///
/// A commit that fails keeps its changes (`unsaved`); every later commit
/// carries them first, in order, and lazy writes queue up behind them, so a
/// newer copy of a record never lands before an older one it replaced.
pub(super) fn write_loop(
    mut conn: Connection,
    queue: &WriteQueue,
    mut sealer: Option<Sealer<'_>>,
    mut seq: i64,
    health: &Health,
) {
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            tracing::error!(error = %e, "store: cannot start the writer; nothing will be saved");
            queue.close();
            return;
        }
    };
    runtime.block_on(async move {
        // Lazy writes not committed yet, and since when.
        let mut lazy = Batch::default();
        let mut lazy_since: Option<tokio::time::Instant> = None;
        // Sealed journal segments whose changes are not committed yet.
        let mut sealed: Vec<PathBuf> = Vec::new();
        // Once a committed segment could not be removed, only a replay of
        // it with every later one is harmless: keep them all until then.
        let mut keep_segments = false;
        // Changes a commit failed to save, older than everything queued
        // since; retried at least every LAZY_DELAY.
        let mut unsaved = Batch::default();
        loop {
            match lazy_since {
                None => queue.wake.notified().await,
                Some(since) => {
                    let _ =
                        tokio::time::timeout_at(since + LAZY_DELAY, queue.wake.notified()).await;
                }
            }
            let mut t = Taken::default();
            let (writes, closed) = queue.take();
            t.closed = closed;
            t.sort(writes, &mut lazy);
            let due = lazy_since.is_some_and(|t| t.elapsed() >= LAZY_DELAY);
            let everything = t.closed
                || !t.syncs.is_empty()
                || !t.reads.is_empty()
                || !t.report_reads.is_empty()
                || due
                || lazy.len() >= LAZY_MAX;
            if everything && let Some(s) = sealer.as_mut() {
                match s.prepare() {
                    Ok(()) => {
                        let next = s.spare.take().expect("prepared");
                        let swapped = {
                            let mut j = s.journal.lock().unwrap_or_else(PoisonError::into_inner);
                            // Under the journal's lock nothing more is appended:
                            // what the segment holds is now all in this
                            // wake-up's batches.
                            let (more, closed) = queue.take();
                            t.closed |= closed;
                            t.sort(more, &mut lazy);
                            j.swap(next)
                        };
                        match swapped {
                            // Closed here, outside the lock.
                            Ok(old) => {
                                sealed.push(journal::segment(s.dir, s.current));
                                s.current += 1;
                                // Waiters sync only the current segment and
                                // the one sealed last: this one, until now.
                                if s.sync {
                                    match old.sync_data() {
                                        Ok(()) => s
                                            .journal
                                            .lock()
                                            .unwrap_or_else(PoisonError::into_inner)
                                            .synced(&old),
                                        Err(e) => tracing::error!(error = %e, "store: cannot fdatasync a sealed lease journal segment"),
                                    }
                                }
                            }
                            Err(next) => s.spare = Some(next),
                        }
                    }
                    // The current segment then grows on, holding committed
                    // changes too; replaying them in order is harmless.
                    Err(e) => tracing::error!(error = %e, "store: cannot make the next lease journal segment; the current one is kept"),
                }
            }
            // What somebody waits on goes first, in one transaction, after
            // whatever failed before (so a flush succeeds only once that is
            // saved too).
            if !unsaved.is_empty() {
                unsaved.absorb(std::mem::take(&mut t.now));
                t.now = std::mem::take(&mut unsaved);
            }
            let result = commit_logged(&mut conn, &t.now, &mut seq, health);
            if result.is_err() {
                unsaved = std::mem::take(&mut t.now);
            }
            for tx in t.flushes {
                let _ = tx.send(result.clone());
            }
            let mut synced = result;
            if everything {
                let lazy_writes = std::mem::take(&mut lazy);
                if unsaved.is_empty() {
                    // The lazy writes hold no record that a write above
                    // replaced (those were dropped from them as they came),
                    // so they may go after it: in transactions of LAZY_CHUNK,
                    // letting the DHCP server (sharing the core) drain its
                    // socket in between. A chunk that fails keeps itself and
                    // every later one, in order.
                    let mut chunks = lazy_writes.into_chunks(LAZY_CHUNK).into_iter();
                    while let Some(chunk) = chunks.next() {
                        if let Err(e) = commit_logged(&mut conn, &chunk, &mut seq, health) {
                            synced = Err(e);
                            unsaved.absorb(chunk);
                            chunks.by_ref().for_each(|c| unsaved.absorb(c));
                            break;
                        }
                        std::thread::yield_now();
                    }
                } else {
                    // Behind changes that failed: they wait with them.
                    unsaved.absorb(lazy_writes);
                }
                lazy_since = None;
                // A sealed segment's changes are all saved only once nothing
                // is left unsaved.
                if unsaved.is_empty() && !keep_segments {
                    for segment in sealed.drain(..) {
                        if let Err(e) = std::fs::remove_file(&segment) {
                            // Replayed alone it would bring back stale leases;
                            // replayed with every later segment it is harmless.
                            tracing::error!(path = %segment.display(), error = %e, "store: cannot remove a committed lease journal segment; keeping every later one for replay at the next start");
                            keep_segments = true;
                        }
                    }
                }
            } else if !lazy.is_empty() && lazy_since.is_none() {
                lazy_since = Some(tokio::time::Instant::now());
            }
            if unsaved.events.len() > UNSAVED_EVENTS_MAX {
                // Timeline events promise nothing; a long outage must not
                // grow memory without bound.
                let extra = unsaved.events.len() - UNSAVED_EVENTS_MAX;
                unsaved.events.drain(..extra);
                tracing::warn!(dropped = extra, "store: dropped the oldest unsaved timeline events");
            }
            if !unsaved.is_empty() && lazy_since.is_none() {
                // Retried with the next commit of everything, at the latest.
                lazy_since = Some(tokio::time::Instant::now());
            }
            health
                .unsaved
                .store(unsaved.changes() as u64, Ordering::Relaxed);
            for tx in t.syncs {
                let _ = tx.send(synced.clone());
            }
            for (mac, tx) in t.reads {
                let _ = tx.send(read_events(&conn, mac).map_err(|e| e.to_string()));
            }
            for (mac, tx) in t.report_reads {
                let _ = tx.send(read_reports(&conn, mac).map_err(|e| e.to_string()));
            }
            if t.closed {
                if !unsaved.is_empty() {
                    tracing::error!(
                        changes = unsaved.changes(),
                        "store: stopping with changes not saved; the journal keeps new node records and leases for the next start, the rest (timelines, last-seen times, offers) is lost"
                    );
                }
                return;
            }
        }
    })
}

/// Commits `b` (nothing when it is empty); a failure is logged, counted
/// and returned.
fn commit_logged(
    conn: &mut Connection,
    b: &Batch,
    seq: &mut i64,
    health: &Health,
) -> Result<(), String> {
    if b.is_empty() {
        return Ok(());
    }
    let result = commit(conn, b, seq).map_err(|e| e.to_string());
    if let Err(e) = &result {
        health.failed_commits.fetch_add(1, Ordering::Relaxed);
        tracing::error!(error = %e, changes = b.changes(), "store: cannot commit; the changes are kept and retried");
    }
    result
}

/// `seq` is the timeline's last `seq` used: each event takes the next.
fn commit(conn: &mut Connection, b: &Batch, seq: &mut i64) -> Result<(), StoreError> {
    let tx = conn
        .transaction_with_behavior(TransactionBehavior::Immediate)
        .map_err(db("begin transaction"))?;
    {
        let mut delete_events = tx
            .prepare_cached("DELETE FROM timeline WHERE mac = ?1")
            .map_err(db("delete node"))?;
        // The node's record goes last, after what hangs off it.
        let mut delete_by_text = ["reports", "report_drops", "nodes"]
            .iter()
            .map(|table| tx.prepare_cached(&format!("DELETE FROM {table} WHERE mac = ?1")))
            .collect::<Result<Vec<_>, _>>()
            .map_err(db("delete node"))?;
        for mac in &b.deletes {
            // The timeline is keyed by the MAC as a number, the rest by text.
            delete_events
                .execute([mac_key(*mac)])
                .map_err(db("delete node"))?;
            let mac = mac.to_string();
            for delete in &mut delete_by_text {
                delete.execute([&mac]).map_err(db("delete node"))?;
            }
        }
        // Hostnames and fixed addresses are unique per row, and SQLite checks
        // that row by row: records that swap them (an import, an edit) first
        // give theirs up, so no order of the upserts below trips the check.
        let mut rekey = tx
            .prepare_cached(
                "UPDATE nodes SET ipv4 = NULL, hostname = char(1) || mac WHERE mac = ?1",
            )
            .map_err(db("save nodes"))?;
        for mac in &b.rekeyed {
            rekey.execute([mac.to_string()]).map_err(db("save nodes"))?;
        }
        let mut upsert = tx
            .prepare_cached(&format!(
                "INSERT INTO nodes ({NODE_COLUMNS}) \
                 VALUES ({NODE_PARAMS}) \
                 ON CONFLICT(mac) DO UPDATE SET hostname = excluded.hostname, ipv4 = excluded.ipv4, \
                 labels = excluded.labels, params = excluded.params, bootenv = excluded.bootenv, \
                 next_bootenv = excluded.next_bootenv, bootenv_expires = excluded.bootenv_expires, \
                 loader = excluded.loader, protected = excluded.protected, state = excluded.state, \
                 state_reason = excluded.state_reason, relay_info = excluded.relay_info, \
                 arch = excluded.arch, last_seen = excluded.last_seen, token = excluded.token, \
                 config_generation = excluded.config_generation, origin = excluded.origin, \
                 boot_ipv4 = excluded.boot_ipv4, booted_bootenv = excluded.booted_bootenv, \
                 bmc = excluded.bmc, uuid = excluded.uuid"
            ))
            .map_err(db("save nodes"))?;
        for n in b.nodes.values() {
            execute_node(&mut upsert, n).map_err(db("save nodes"))?;
        }
        save_leases(&tx, b)?;
        let mut add_event = tx
            .prepare_cached(
                "INSERT INTO timeline (mac, seq, at, kind, data) VALUES (?1, ?2, ?3, ?4, ?5)",
            )
            .map_err(db("save events"))?;
        for (mac, e) in &b.events {
            *seq += 1;
            let data = serde_json::to_string(&e.data).map_err(|err| StoreError::Corrupt {
                key: mac.to_string(),
                reason: format!("an event's data does not serialize: {err}"),
            })?;
            add_event
                .execute(params![
                    mac_key(*mac),
                    *seq,
                    e.at.millis(),
                    e.kind().as_str(),
                    data
                ])
                .map_err(db("save events"))?;
        }
        if !b.events.is_empty() {
            tx.prepare_cached(
                "INSERT INTO counters (name, value) VALUES ('timeline_seq', ?1) \
                 ON CONFLICT (name) DO UPDATE SET value = excluded.value",
            )
            .and_then(|mut q| q.execute([*seq]))
            .map_err(db("save events"))?;
        }
        let mut trim = tx
            .prepare_cached(&keep_newest("timeline", "seq"))
            .map_err(db("trim events"))?;
        for mac in &b.trims {
            trim.execute(params![mac_key(*mac), EVENTS_PER_NODE])
                .map_err(db("trim events"))?;
        }
        let mut add_report = tx
            .prepare_cached(
                "INSERT INTO reports (mac, at, generation, script, status, duration_ms, output) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
            )
            .map_err(db("save reports"))?;
        let mut trim_reports = tx
            .prepare_cached(&keep_newest("reports", "id"))
            .map_err(db("trim reports"))?;
        let mut count_drops = tx
            .prepare_cached(
                "INSERT INTO report_drops (mac, dropped) VALUES (?1, ?2) \
                 ON CONFLICT(mac) DO UPDATE SET dropped = dropped + excluded.dropped",
            )
            .map_err(db("trim reports"))?;
        for (mac, r) in &b.reports {
            let mac = mac.to_string();
            add_report
                .execute(params![
                    mac,
                    r.at.millis(),
                    r.generation as i64,
                    r.script,
                    r.status,
                    r.duration_ms.map(|d| d as i64),
                    r.output
                ])
                .map_err(db("save reports"))?;
            // One report at a time: the bound holds after every commit.
            let dropped = trim_reports
                .execute(params![mac, REPORTS_PER_NODE])
                .map_err(db("trim reports"))?;
            if dropped > 0 {
                count_drops
                    .execute(params![mac, dropped as i64])
                    .map_err(db("trim reports"))?;
            }
        }
        let mut put_rollout = tx
            .prepare_cached(
                "INSERT INTO rollouts (id, created, doc) VALUES (?1, ?2, ?3) \
                 ON CONFLICT(id) DO UPDATE SET doc = excluded.doc",
            )
            .map_err(db("save rollouts"))?;
        for r in b.rollouts.values() {
            let doc = serde_json::to_string(r).map_err(|e| StoreError::Corrupt {
                key: r.id.clone(),
                reason: e.to_string(),
            })?;
            put_rollout
                .execute(params![r.id, r.created.millis(), doc])
                .map_err(db("save rollouts"))?;
        }
    }
    tx.commit().map_err(db("commit"))
}

/// Writes (or deletes) the batch's leases inside the caller's transaction.
pub(super) fn save_leases(tx: &Connection, b: &Batch) -> Result<(), StoreError> {
    let mut drop_lease = tx
        .prepare_cached("DELETE FROM leases WHERE ip = ?1")
        .map_err(db("drop leases"))?;
    let mut put_lease = tx
        .prepare_cached(
            "INSERT INTO leases (ip, mac, state, expires) VALUES (?1, ?2, ?3, ?4) \
             ON CONFLICT(ip) DO UPDATE SET mac = excluded.mac, state = excluded.state, \
             expires = excluded.expires",
        )
        .map_err(db("save leases"))?;
    for (ip, lease) in &b.leases {
        match lease {
            None => drop_lease
                .execute([i64::from(*ip)])
                .map_err(db("drop leases"))?,
            Some(l) => put_lease
                .execute(params![
                    ip_col(l.ip),
                    l.mac.map(|m| m.to_string()),
                    l.state.as_str(),
                    l.expires.millis()
                ])
                .map_err(db("save leases"))?,
        };
    }
    Ok(())
}

/// The statement that keeps a node's newest `?2` rows of `table` (ordered
/// by `order`) and deletes the older ones; `?1` is the node's key.
fn keep_newest(table: &str, order: &str) -> String {
    format!(
        "DELETE FROM {table} WHERE mac = ?1 AND {order} <= \
         (SELECT {order} FROM {table} WHERE mac = ?1 ORDER BY {order} DESC LIMIT 1 OFFSET ?2)"
    )
}
