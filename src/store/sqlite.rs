//! The embedded store engine: one SQLite file in the state directory, in WAL
//! mode, so nothing has to be installed or started.
//!
//! Reads are served from memory: node records and leases are loaded at open
//! and kept in step with every write, so a DHCP storm never waits on a query.
//! Writes go through one writer thread that commits whatever has queued up in a
//! single transaction (group commit): under load one commit carries hundreds
//! of leases. Callers that promise something to a client (a state change, a
//! report) wait for their write's commit; with WAL a committed transaction
//! survives the process being killed. An acknowledged lease, and a new node
//! record, is made durable by the journal instead (see [`super::journal`]):
//! one append, no hand-over to the writer thread per ACK. One process owns
//! the state directory (an exclusive lock), so memory and file cannot
//! disagree.
//!
//! A commit that fails (a full disk) loses nothing: its changes stay with
//! the writer, in order, and every later commit carries them again until one
//! succeeds (at least once a second). Meanwhile whoever waits on a write is
//! told it is not saved, journal segments are kept for replay, and
//! [`Store::health`] counts what is waiting.

use std::collections::{BTreeMap, HashMap};
use std::net::Ipv4Addr;
use std::os::unix::fs::{DirBuilderExt as _, OpenOptionsExt as _};
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use async_trait::async_trait;
use rusqlite::{Connection, OptionalExtension, Row, TransactionBehavior, params};
use tokio::sync::{Notify, oneshot};

use super::journal::{self, Change, Journal, SyncMode, Syncer, Ticket};
use super::{
    EVENTS_PER_NODE, LeaseRequest, NodeEdit, NodeFilter, NodesEdit, REPORTS_PER_NODE, Store,
    StoreError, StoreHealth,
};
use crate::model::{
    BootArch, Event, EventData, EventKind, Lease, LeaseState, Mac, Node, NodeOrigin, NodeState,
    ScriptReport, Timestamp,
};
use crate::names::NameTable;

const SCHEMA: &str = r#"
CREATE TABLE IF NOT EXISTS nodes (
    mac             TEXT PRIMARY KEY NOT NULL,
    hostname        TEXT NOT NULL UNIQUE COLLATE NOCASE,
    ipv4            INTEGER UNIQUE,
    labels          TEXT NOT NULL DEFAULT '{}',
    params          TEXT NOT NULL DEFAULT '{}',
    bootenv         TEXT NOT NULL,
    next_bootenv    TEXT,
    bootenv_expires INTEGER,
    loader          TEXT,
    protected       INTEGER NOT NULL DEFAULT 0,
    state           TEXT NOT NULL,
    state_reason    TEXT,
    relay_info      TEXT,
    boot_ipv4       INTEGER,
    arch            TEXT,
    last_seen       INTEGER,
    token           TEXT NOT NULL,
    created         INTEGER NOT NULL,
    origin          TEXT
);
CREATE TABLE IF NOT EXISTS leases (
    ip      INTEGER PRIMARY KEY NOT NULL,
    mac     TEXT,
    state   TEXT NOT NULL,
    expires INTEGER NOT NULL
);
-- Leases are looked up by MAC in memory only; an index on it would cost a
-- write at a random place per lease.
DROP INDEX IF EXISTS leases_by_mac;
-- Each node's timeline, kept together on disk (one B-tree, no index
-- beside it): an event is one insert, a trim one range delete. `mac` is the
-- address as a number; `seq` orders a node's events; `data` is the event's
-- data as JSON, tagged by its kind (`kind` repeats the kind's name, so a
-- query can pick kinds without reading the JSON). Replaces `events`
-- (TEXT mac, rowid and an index: twice the work per event).
CREATE TABLE IF NOT EXISTS timeline (
    mac    INTEGER NOT NULL,
    seq    INTEGER NOT NULL,
    at     INTEGER NOT NULL,
    kind   TEXT NOT NULL,
    data   TEXT NOT NULL,
    PRIMARY KEY (mac, seq)
) WITHOUT ROWID;
-- Counters that must survive a restart: `timeline_seq`, the last `seq` used.
CREATE TABLE IF NOT EXISTS counters (
    name  TEXT PRIMARY KEY NOT NULL,
    value INTEGER NOT NULL
) WITHOUT ROWID;
-- Config script reports, kept apart from the timeline (whose events are
-- dropped much sooner), bounded per node; `report_drops` counts what the
-- bound dropped.
CREATE TABLE IF NOT EXISTS reports (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    mac         TEXT NOT NULL,
    at          INTEGER NOT NULL,
    generation  INTEGER NOT NULL,
    script      TEXT NOT NULL,
    status      INTEGER NOT NULL,
    duration_ms INTEGER,
    output      TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS reports_by_mac ON reports(mac, id);
CREATE TABLE IF NOT EXISTS report_drops (
    mac     TEXT PRIMARY KEY NOT NULL,
    dropped INTEGER NOT NULL
);
"#;

pub struct SqliteStore {
    cache: Arc<Mutex<Cache>>,
    queue: Arc<WriteQueue>,
    /// Where acknowledged leases go first (none for an in-memory store,
    /// which commits them instead).
    journal: Option<Arc<Mutex<Journal>>>,
    /// `[store] sync`: what makes a journaled change durable.
    syncer: Arc<Syncer>,
    /// The writer thread, which also holds the exclusive lock on the state
    /// directory until it has closed the file.
    thread: Option<std::thread::JoinHandle<()>>,
    health: Arc<Health>,
}

/// What [`Store::health`] reports, kept by the writer and the journal's users.
#[derive(Default)]
struct Health {
    unsaved: AtomicU64,
    failed_commits: AtomicU64,
    failed_appends: AtomicU64,
}

impl Health {
    fn append_failed(&self, e: &std::io::Error) {
        self.failed_appends.fetch_add(1, Ordering::Relaxed);
        tracing::error!(error = %e, "store: cannot append to the journal in the state directory (is it full?)");
    }
}

/// What a caller is told when its change is not durable yet.
fn unsaved(cause: impl std::fmt::Display) -> StoreError {
    StoreError::Unsaved(format!(
        "{cause}; rackboot keeps the change and retries every second (free space in the state directory; `rackboot_store_unsaved_changes` in /metrics shows what waits)"
    ))
}

impl Drop for SqliteStore {
    /// Closes the queue and waits for the writer to commit what is left, so
    /// the directory is free again when the store is gone.
    fn drop(&mut self) {
        self.queue.close();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// Everything reads need, kept in step with the database.
#[derive(Default)]
struct Cache {
    nodes: HashMap<Mac, Node>,
    /// Lowercase hostname → MAC.
    by_hostname: HashMap<String, Mac>,
    /// Fixed address → MAC.
    by_fixed_ip: HashMap<Ipv4Addr, Mac>,
    leases: BTreeMap<u32, Lease>,
    lease_of: HashMap<Mac, u32>,
    /// Where the next free-address search in a range starts.
    cursors: HashMap<(u32, u32), u32>,
    /// Events written per MAC since the last trim of its timeline.
    events_since_trim: HashMap<Mac, i64>,
    /// When each node's last-seen time was last written to the file.
    seen_saved: HashMap<Mac, Timestamp>,
    /// What DNS answers from, told of every name and address put in or taken out here, under
    /// this cache's lock, so it never disagrees with the store.
    names: Arc<NameTable>,
}

impl Cache {
    fn put_node(&mut self, node: Node) {
        if let Some(old) = self.nodes.get(&node.mac) {
            self.by_hostname.remove(&old.hostname.to_ascii_lowercase());
            if let Some(ip) = old.ipv4 {
                self.by_fixed_ip.remove(&ip);
            }
        }
        self.by_hostname
            .insert(node.hostname.to_ascii_lowercase(), node.mac);
        if let Some(ip) = node.ipv4 {
            self.by_fixed_ip.insert(ip, node.mac);
        }
        self.names.set_node(node.mac, &node.hostname, node.ipv4);
        self.nodes.insert(node.mac, node);
    }

    fn remove_node(&mut self, mac: Mac) -> Option<Node> {
        let old = self.nodes.remove(&mac)?;
        if self.by_hostname.get(&old.hostname.to_ascii_lowercase()) == Some(&mac) {
            self.by_hostname.remove(&old.hostname.to_ascii_lowercase());
        }
        if let Some(ip) = old.ipv4
            && self.by_fixed_ip.get(&ip) == Some(&mac)
        {
            self.by_fixed_ip.remove(&ip);
        }
        self.events_since_trim.remove(&mac);
        self.seen_saved.remove(&mac);
        self.names.remove_node(mac);
        Some(old)
    }

    /// Why `node` cannot be stored beside the records of every MAC not in
    /// `replaced`: its hostname or fixed address belongs to one of them.
    fn clash(&self, node: &Node, replaced: &dyn Fn(Mac) -> bool) -> Option<String> {
        if let Some(other) = self.by_hostname.get(&node.hostname.to_ascii_lowercase())
            && *other != node.mac
            && !replaced(*other)
        {
            return Some(format!(
                "hostname {} already belongs to {other}",
                node.hostname
            ));
        }
        let ip = node.ipv4?;
        let other = self.by_fixed_ip.get(&ip)?;
        (*other != node.mac && !replaced(*other))
            .then(|| format!("address {ip} already belongs to {other}"))
    }

    /// Checks that `nodes` can replace (by MAC) or join the records in
    /// force, hostnames and fixed addresses unique, and puts them in.
    fn check_and_put(&mut self, nodes: &[Node]) -> Result<(), StoreError> {
        let mut hostnames: HashMap<String, Mac> = HashMap::new();
        let mut addrs: HashMap<Ipv4Addr, Mac> = HashMap::new();
        let macs: std::collections::HashSet<Mac> = nodes.iter().map(|n| n.mac).collect();
        if macs.len() != nodes.len() {
            let mut seen = std::collections::HashSet::new();
            let dup = nodes.iter().find(|n| !seen.insert(n.mac)).map(|n| n.mac);
            return Err(StoreError::Conflict(format!(
                "MAC {} appears more than once",
                dup.map(|m| m.to_string()).unwrap_or_default()
            )));
        }
        for n in nodes {
            if let Some(other) = hostnames.insert(n.hostname.to_ascii_lowercase(), n.mac) {
                return Err(StoreError::Conflict(format!(
                    "hostname {} is given to both {other} and {}",
                    n.hostname, n.mac
                )));
            }
            if let Some(ip) = n.ipv4
                && let Some(other) = addrs.insert(ip, n.mac)
            {
                return Err(StoreError::Conflict(format!(
                    "address {ip} is given to both {other} and {}",
                    n.mac
                )));
            }
            // Records being replaced in this same write give up their
            // names and addresses to it.
            if let Some(why) = self.clash(n, &|m| macs.contains(&m)) {
                return Err(StoreError::Conflict(format!("{}: {why}", n.mac)));
            }
        }
        for n in nodes {
            self.remove_node(n.mac);
        }
        for n in nodes {
            self.put_node(n.clone());
        }
        Ok(())
    }

    fn put_lease(&mut self, lease: Lease) {
        let ip = u32::from(lease.ip);
        if let Some(old) = self.leases.get(&ip)
            && let Some(m) = old.mac
            && self.lease_of.get(&m) == Some(&ip)
        {
            self.lease_of.remove(&m);
        }
        if let Some(m) = lease.mac {
            self.lease_of.insert(m, ip);
        }
        self.names.set_lease(&lease);
        self.leases.insert(ip, lease);
    }

    fn drop_lease(&mut self, ip: u32) -> Option<Lease> {
        let old = self.leases.remove(&ip)?;
        if let Some(m) = old.mac
            && self.lease_of.get(&m) == Some(&ip)
        {
            self.lease_of.remove(&m);
        }
        self.names.drop_lease(old.ip);
        Some(old)
    }

    /// Whether `ip` is held right now by anyone but `mac`: a live lease of
    /// another MAC (or a declined address), or another node's fixed address.
    fn taken_by_other(&self, ip: Ipv4Addr, mac: Mac, now: Timestamp) -> bool {
        let leased = self
            .leases
            .get(&u32::from(ip))
            .is_some_and(|l| l.is_live(now) && l.mac != Some(mac));
        let fixed = self.by_fixed_ip.get(&ip).is_some_and(|m| *m != mac);
        leased || fixed
    }
}

/// One change for the writer thread. Lazy writes (a node's last-seen time,
/// timeline events, offers) promise nothing to anyone: they ride along with
/// one commit a second (or sooner when something reads or syncs), so under a
/// DHCP storm the pages they touch (random places in the MAC indexes) are
/// written once for thousands of writes instead of once per commit.
enum Write {
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
}

/// How long lazy writes may wait for a commit to ride along with.
const LAZY_DELAY: Duration = Duration::from_millis(1000);
/// Lazy writes that commit on their own even before [`LAZY_DELAY`].
const LAZY_MAX: usize = 20_000;
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
struct WriteQueue {
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
    fn push(&self, w: Write) -> Result<(), StoreError> {
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

    fn close(&self) {
        self.pending
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .closed = true;
        self.wake.notify_one();
    }
}
/// How stale the stored last-seen time may get before a touch writes it.
const LAST_SEEN_GRAIN_MS: i64 = 60_000;
/// Timelines are trimmed after this many new events per node.
const TRIM_EVERY: i64 = 50;

fn db(op: &'static str) -> impl FnOnce(rusqlite::Error) -> StoreError {
    move |source| StoreError::Database { op, source }
}

impl SqliteStore {
    /// Opens (creating if needed) `rackboot.db` in `state_dir`, taking an
    /// exclusive lock on the directory; `[store] sync = "none"`.
    pub async fn open(state_dir: &Path) -> Result<SqliteStore, StoreError> {
        SqliteStore::open_with(state_dir, SyncMode::None).await
    }

    /// [`SqliteStore::open`] with what makes a change durable (`[store] sync`).
    pub async fn open_with(state_dir: &Path, sync: SyncMode) -> Result<SqliteStore, StoreError> {
        let path = state_dir.join("rackboot.db");
        let open_err = |source| StoreError::Open {
            path: path.clone(),
            source,
        };
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(state_dir)
            .map_err(|e| StoreError::Io {
                path: state_dir.to_path_buf(),
                source: e,
            })?;
        let lock = lock_dir(state_dir)?;
        // Node tokens live in the file, its WAL and the journal: rackboot's
        // alone. SQLite gives the -wal and -shm files the database's mode.
        keep_private(&path, true)?;
        for companion in ["rackboot.db-wal", "rackboot.db-shm", "rackboot.db-journal"] {
            keep_private(&state_dir.join(companion), false)?;
        }
        let conn = Connection::open(&path).map_err(open_err)?;
        // WAL + NORMAL survives a process crash (kill -9) without losing
        // committed transactions; only a power loss may drop the last ones.
        // With `[store] sync`, every commit is on disk before it returns.
        conn.pragma_update(None, "journal_mode", "WAL")
            .map_err(open_err)?;
        let synchronous = match sync {
            SyncMode::None => "NORMAL",
            SyncMode::Group | SyncMode::Always => "FULL",
        };
        conn.pragma_update(None, "synchronous", synchronous)
            .map_err(open_err)?;
        conn.busy_timeout(Duration::from_secs(5))
            .map_err(open_err)?;
        // rackboot alone uses the file (it holds the directory lock), so
        // SQLite need not lock and unlock it around every transaction.
        conn.pragma_update(None, "locking_mode", "EXCLUSIVE")
            .map_err(open_err)?;
        SqliteStore::start(conn, Some(lock), Some(state_dir), sync)
    }

    /// A private store in memory, for tests.
    pub async fn in_memory() -> Result<SqliteStore, StoreError> {
        let conn = Connection::open_in_memory().map_err(db("open in-memory database"))?;
        SqliteStore::start(conn, None, None, SyncMode::None)
    }

    fn start(
        conn: Connection,
        lock: Option<nix::fcntl::Flock<std::fs::File>>,
        journal_dir: Option<&Path>,
        sync: SyncMode,
    ) -> Result<SqliteStore, StoreError> {
        conn.execute_batch(SCHEMA).map_err(db("create schema"))?;
        // Columns added after a store was first created (CREATE TABLE IF NOT
        // EXISTS leaves an existing table as it was).
        let columns: Vec<String> = conn
            .prepare("SELECT name FROM pragma_table_info('nodes')")
            .and_then(|mut s| s.query_map([], |r| r.get(0))?.collect())
            .map_err(db("read schema"))?;
        for (column, ty) in [
            ("relay_info", "TEXT"),
            ("loader", "TEXT"),
            ("config_generation", "INTEGER NOT NULL DEFAULT 0"),
            ("origin", "TEXT"),
            ("boot_ipv4", "INTEGER"),
            ("booted_bootenv", "TEXT"),
        ] {
            if !columns.iter().any(|c| c == column) {
                conn.execute_batch(&format!("ALTER TABLE nodes ADD COLUMN {column} {ty}"))
                    .map_err(db("upgrade schema"))?;
            }
        }
        give_the_timeline_data(&conn)?;
        move_events_to_timeline(&conn)?;
        let seq = timeline_seq(&conn)?;
        // Leases the journal holds and the file may lack, before the cache
        // is loaded from the file.
        let journal = journal_dir
            .map(|dir| replay_journal(&conn, dir))
            .transpose()?;
        let mut cache = Cache::default();
        {
            let mut q = conn
                .prepare(&format!("SELECT {NODE_COLUMNS} FROM nodes"))
                .map_err(db("load nodes"))?;
            let mut rows = q.query([]).map_err(db("load nodes"))?;
            while let Some(row) = rows.next().map_err(db("load nodes"))? {
                cache.put_node(node_from_row(row)?);
            }
            let mut q = conn
                .prepare("SELECT ip, mac, state, expires FROM leases")
                .map_err(db("load leases"))?;
            let mut rows = q.query([]).map_err(db("load leases"))?;
            while let Some(row) = rows.next().map_err(db("load leases"))? {
                cache.put_lease(lease_from_row(row)?);
            }
        }
        cache.names.loaded();
        let queue = Arc::new(WriteQueue::default());
        let writer = queue.clone();
        let journal = journal.map(|j| Arc::new(Mutex::new(j)));
        let sealer = journal.clone().zip(journal_dir.map(Path::to_path_buf));
        let health = Arc::new(Health::default());
        let writer_health = health.clone();
        // The writer is a thread of its own, not a task: SQLite calls block,
        // and one thread that commits a whole batch per wake-up costs a
        // fraction of handing every statement to a worker and back.
        let thread = std::thread::Builder::new()
            .name("rackboot-store".into())
            .spawn(move || {
                let sealer = sealer.as_ref().map(|(j, dir)| Sealer {
                    journal: j,
                    dir,
                    current: 0,
                    spare: None,
                    sync: sync != SyncMode::None,
                });
                write_loop(conn, &writer, sealer, seq, &writer_health);
                // The directory is released only once the file is closed.
                drop(lock);
            })
            .map_err(|e| StoreError::Io {
                path: "rackboot-store thread".into(),
                source: e,
            })?;
        Ok(SqliteStore {
            cache: Arc::new(Mutex::new(cache)),
            queue,
            journal,
            syncer: Arc::new(Syncer::new(sync)),
            thread: Some(thread),
            health,
        })
    }

    /// Makes lease changes durable before returning: appended to the journal
    /// (and committed to the file later, lazily), or, without a journal or
    /// when it cannot be written, committed now.
    async fn durable(&self, changes: &[Change]) -> Result<(), StoreError> {
        if changes.is_empty() {
            return Ok(());
        }
        if let Some(journal) = &self.journal {
            let journaled = {
                let mut j = journal.lock().unwrap_or_else(PoisonError::into_inner);
                // Appended and queued under one lock, so a seal never
                // separates a journal line from its write in the queue.
                match changes.iter().try_for_each(|c| j.append(c)) {
                    Ok(()) => {
                        for w in changes.iter().filter_map(|c| write_of(c, true)) {
                            self.queue.push(w)?;
                        }
                        Ok(self.syncing().then(|| j.ticket()))
                    }
                    Err(e) => Err(e),
                }
            };
            match journaled {
                Ok(ticket) => return self.settle(ticket).await,
                Err(e) => {
                    self.health.append_failed(&e);
                    tracing::warn!("store: committing the leases instead of journaling them");
                }
            }
        }
        for w in changes.iter().filter_map(|c| write_of(c, false)) {
            self.queue.push(w)?;
        }
        self.flush().await
    }

    /// Whether a journaled change waits for `fdatasync` (`[store] sync`).
    fn syncing(&self) -> bool {
        self.syncer.mode() != SyncMode::None
    }

    /// Returns once the changes `ticket` was taken after are on disk. When
    /// that fails, the file takes them instead: committed now, with
    /// `synchronous = FULL`.
    async fn settle(&self, ticket: Option<Ticket>) -> Result<(), StoreError> {
        let (Some(ticket), Some(journal)) = (ticket, self.journal.clone()) else {
            return Ok(());
        };
        let syncer = self.syncer.clone();
        let synced = tokio::task::spawn_blocking(move || {
            syncer.wait(&ticket, || {
                journal
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .ticket()
            })
        })
        .await
        .unwrap_or_else(|e| Err(std::io::Error::other(e)));
        if let Err(e) = synced {
            self.health.append_failed(&e);
            tracing::warn!(error = %e, "store: cannot fdatasync the lease journal; committing the changes to the file instead");
            return self.sync().await;
        }
        Ok(())
    }

    fn cache(&self) -> MutexGuard<'_, Cache> {
        // The cache holds no invariant a panicking writer could half-break
        // beyond one entry; keep serving rather than poison every request.
        self.cache.lock().unwrap_or_else(PoisonError::into_inner)
    }

    async fn queue(&self, w: Write) -> Result<(), StoreError> {
        self.queue.push(w)
    }

    /// Waits until every write queued so far is committed.
    async fn flush(&self) -> Result<(), StoreError> {
        let (tx, rx) = oneshot::channel();
        self.queue(Write::Flush(tx)).await?;
        rx.await
            .map_err(|_| StoreError::WriterGone)?
            .map_err(unsaved)
    }
}

/// The write that commits a journaled change: `lazy` when the journal holds
/// it, urgent when it does not. A `forget` has none (its delete is queued
/// by itself).
fn write_of(c: &Change, lazy: bool) -> Option<Write> {
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

/// Commits the lease changes the journal segments in `dir` hold, removes the
/// segments, and starts a fresh journal (segment 0).
fn replay_journal(conn: &Connection, dir: &Path) -> Result<Journal, StoreError> {
    let io_err = |path: PathBuf| move |source| StoreError::Io { path, source };
    let found = journal::replay(dir).map_err(io_err(dir.to_path_buf()))?;
    if !found.changes.is_empty() {
        let mut b = Batch::default();
        let tx = conn
            .unchecked_transaction()
            .map_err(db("replay the journal"))?;
        for c in &found.changes {
            match c {
                Change::Put(l) => {
                    b.leases.insert(u32::from(l.ip), Some(l.clone()));
                }
                Change::Drop(ip) => {
                    b.leases.insert(u32::from(*ip), None);
                }
                // Node records in order, as they came: a record created,
                // deleted and created again ends as the second one.
                Change::Node(n) => replay_node(&tx, n)?,
                Change::Forget { mac, token } => replay_forget(&tx, *mac, token)?,
            }
        }
        save_leases(&tx, &b)?;
        tx.commit().map_err(db("replay the journal"))?;
        tracing::info!(
            changes = found.changes.len(),
            segments = found.segments.len(),
            "store: replayed the lease journal"
        );
    }
    for segment in &found.segments {
        std::fs::remove_file(segment).map_err(io_err(segment.clone()))?;
    }
    journal::create_segment(dir, 0)
        .map(Journal::new)
        .map_err(io_err(journal::segment(dir, 0)))
}

/// Inserts a journaled new record unless the file has one of its MAC: the
/// file's is as new or newer (every later change of a record is committed
/// before it is answered).
fn replay_node(tx: &Connection, n: &Node) -> Result<(), StoreError> {
    let mut insert = tx
        .prepare_cached(&format!(
            "INSERT INTO nodes ({NODE_COLUMNS}) VALUES ({NODE_PARAMS}) ON CONFLICT DO NOTHING"
        ))
        .map_err(db("replay a node record"))?;
    let inserted = execute_node(&mut insert, n).map_err(db("replay a node record"))?;
    if inserted == 0 {
        let kept: bool = tx
            .query_row(
                "SELECT count(*) > 0 FROM nodes WHERE mac = ?1",
                [n.mac.to_string()],
                |r| r.get(0),
            )
            .map_err(db("replay a node record"))?;
        if !kept {
            tracing::warn!(mac = %n.mac, hostname = %n.hostname, "journal: a new node record is not replayed: its hostname or fixed address now belongs to another record");
        }
    }
    Ok(())
}

/// Removes a deleted record (and its timeline and reports) if the file
/// still has the one created with `token`.
fn replay_forget(tx: &Connection, mac: Mac, token: &str) -> Result<(), StoreError> {
    let op = db("replay a node deletion");
    let gone = tx
        .execute(
            "DELETE FROM nodes WHERE mac = ?1 AND token = ?2",
            params![mac.to_string(), token],
        )
        .map_err(op)?;
    if gone > 0 {
        let m = mac.to_string();
        tx.execute("DELETE FROM timeline WHERE mac = ?1", [mac_key(mac)])
            .and_then(|_| tx.execute("DELETE FROM reports WHERE mac = ?1", [&m]))
            .and_then(|_| tx.execute("DELETE FROM report_drops WHERE mac = ?1", [&m]))
            .map_err(db("replay a node deletion"))?;
    }
    Ok(())
}

/// The writer thread's side of the lease journal: it numbers the segments
/// and makes each next one before it is needed, outside the journal's lock.
struct Sealer<'a> {
    journal: &'a Mutex<Journal>,
    dir: &'a Path,
    /// The segment being appended to.
    current: u64,
    /// Segment `current + 1`, made ahead of time.
    spare: Option<std::fs::File>,
    /// `[store] sync` is on: a sealed segment is synced before its commit.
    sync: bool,
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

/// Makes `path` readable by rackboot alone: created `0600` when `create`
/// and missing, narrowed to `0600` (saying so) when others could read it.
fn keep_private(path: &Path, create: bool) -> Result<(), StoreError> {
    use std::os::unix::fs::PermissionsExt;
    let io = |source| StoreError::Io {
        path: path.to_path_buf(),
        source,
    };
    if create {
        match std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(path)
        {
            Ok(_) => return Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(io(e)),
        }
    }
    let mode = match std::fs::metadata(path) {
        Ok(m) => m.permissions().mode(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(io(e)),
    };
    if mode & 0o077 != 0 {
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).map_err(io)?;
        tracing::warn!(path = %path.display(), "store file was readable by others (mode {:o}); it holds node tokens: now 0600", mode & 0o777);
    }
    Ok(())
}

fn lock_dir(state_dir: &Path) -> Result<nix::fcntl::Flock<std::fs::File>, StoreError> {
    let path = state_dir.join("rackboot.lock");
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .mode(0o600)
        .write(true)
        .open(&path)
        .map_err(|e| StoreError::Io { path, source: e })?;
    nix::fcntl::Flock::lock(file, nix::fcntl::FlockArg::LockExclusiveNonblock)
        .map_err(|_| StoreError::Locked(state_dir.to_path_buf()))
}

/// What one transaction writes: the batch, with later changes of the same
/// record replacing earlier ones (one row each).
#[derive(Default)]
struct Batch {
    deletes: Vec<Mac>,
    rekeyed: Vec<Mac>,
    nodes: HashMap<Mac, Box<Node>>,
    leases: BTreeMap<u32, Option<Lease>>,
    events: Vec<(Mac, Event)>,
    trims: Vec<Mac>,
    reports: Vec<(Mac, ScriptReport)>,
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

    /// Changes it holds (what [`Store::health`] reports as unsaved).
    fn changes(&self) -> usize {
        self.len() + self.deletes.len() + self.reports.len()
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
    }

    fn is_empty(&self) -> bool {
        self.deletes.is_empty()
            && self.rekeyed.is_empty()
            && self.nodes.is_empty()
            && self.leases.is_empty()
            && self.events.is_empty()
            && self.trims.is_empty()
            && self.reports.is_empty()
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
fn write_loop(
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
        let mut delete_node = tx
            .prepare_cached("DELETE FROM nodes WHERE mac = ?1")
            .map_err(db("delete node"))?;
        let mut delete_reports = tx
            .prepare_cached("DELETE FROM reports WHERE mac = ?1")
            .map_err(db("delete node"))?;
        let mut delete_drops = tx
            .prepare_cached("DELETE FROM report_drops WHERE mac = ?1")
            .map_err(db("delete node"))?;
        for mac in &b.deletes {
            // The timeline is keyed by the MAC as a number, the rest by text.
            delete_events
                .execute([mac_key(*mac)])
                .map_err(db("delete node"))?;
            let mac = mac.to_string();
            delete_reports.execute([&mac]).map_err(db("delete node"))?;
            delete_drops.execute([&mac]).map_err(db("delete node"))?;
            delete_node.execute([&mac]).map_err(db("delete node"))?;
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
                 boot_ipv4 = excluded.boot_ipv4, booted_bootenv = excluded.booted_bootenv"
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
            .prepare_cached(
                "DELETE FROM timeline WHERE mac = ?1 AND seq <= \
                 (SELECT seq FROM timeline WHERE mac = ?1 ORDER BY seq DESC LIMIT 1 OFFSET ?2)",
            )
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
            .prepare_cached(
                "DELETE FROM reports WHERE mac = ?1 AND id <= \
                 (SELECT id FROM reports WHERE mac = ?1 ORDER BY id DESC LIMIT 1 OFFSET ?2)",
            )
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
    }
    tx.commit().map_err(db("commit"))
}

/// Writes (or deletes) the batch's leases inside the caller's transaction.
fn save_leases(tx: &Connection, b: &Batch) -> Result<(), StoreError> {
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

/// An event of a store made before events had data, as a note: its kind
/// and its sentence, kept as they were.
fn old_event_data(kind: &str, text: String) -> Result<String, String> {
    let of = EventKind::from_str(kind)?;
    serde_json::to_string(&EventData::Note { of, text }).map_err(|e| e.to_string())
}

/// The bootenv an old `http.script` sentence names (`bootenv X, arch Y…`,
/// the one shape rackboot wrote them in), read once while upgrading, to
/// fill in which bootenv each node last booted; the sentence stays as it
/// was. `None` for any other shape (a name must be a bootenv name).
fn bootenv_of_old_script_text(text: &str) -> Option<&str> {
    let name = text.strip_prefix("bootenv ")?.split(',').next()?;
    let valid = !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-'));
    valid.then_some(name)
}

/// Sets `booted_bootenv` from the last old `http.script` sentence of each
/// node that has none yet.
fn fill_booted_bootenv(
    tx: &Connection,
    last_script: &HashMap<Mac, String>,
) -> Result<(), StoreError> {
    let mut set = tx
        .prepare("UPDATE nodes SET booted_bootenv = ?2 WHERE mac = ?1 AND booted_bootenv IS NULL")
        .map_err(db("upgrade the timeline"))?;
    for (mac, text) in last_script {
        if let Some(bootenv) = bootenv_of_old_script_text(text) {
            set.execute(params![mac.to_string(), bootenv])
                .map_err(db("upgrade the timeline"))?;
        }
    }
    Ok(())
}

/// The MAC a timeline key stands for ([`mac_key`] backwards).
fn mac_of_key(key: i64) -> Mac {
    let b = key.to_be_bytes();
    Mac::new([b[2], b[3], b[4], b[5], b[6], b[7]])
}

/// Gives the timeline of a store made before events had data its `data`
/// column, in one transaction (a failure leaves the store as it was): each
/// old event becomes a note of its kind and sentence, and each node's
/// `booted_bootenv` is read from its last boot script event.
fn give_the_timeline_data(conn: &Connection) -> Result<(), StoreError> {
    let old: bool = conn
        .query_row(
            "SELECT count(*) > 0 FROM pragma_table_info('timeline') WHERE name = 'detail'",
            [],
            |r| r.get(0),
        )
        .map_err(db("read schema"))?;
    if !old {
        return Ok(());
    }
    let tx = conn
        .unchecked_transaction()
        .map_err(db("upgrade the timeline"))?;
    let mut last_script = HashMap::new();
    {
        let mut read = tx
            .prepare(
                "SELECT mac, detail FROM timeline WHERE kind = 'http.script' ORDER BY mac, seq",
            )
            .map_err(db("upgrade the timeline"))?;
        let mut rows = read.query([]).map_err(db("upgrade the timeline"))?;
        while let Some(r) = rows.next().map_err(db("upgrade the timeline"))? {
            let key: i64 = r.get(0).map_err(db("upgrade the timeline"))?;
            let text: String = r.get(1).map_err(db("upgrade the timeline"))?;
            last_script.insert(mac_of_key(key), text);
        }
    }
    fill_booted_bootenv(&tx, &last_script)?;
    tx.execute_batch(
        "ALTER TABLE timeline RENAME COLUMN detail TO data; \
         UPDATE timeline SET data = json_object('kind', 'note', 'of', kind, 'text', data);",
    )
    .map_err(db("upgrade the timeline"))?;
    tx.commit().map_err(db("upgrade the timeline"))?;
    tracing::info!("store: timeline events now carry data; older ones are kept as notes");
    Ok(())
}

/// Moves the timelines of a store made before the `timeline` table (from
/// `events`, in their order, as notes) and drops the old table, in one
/// transaction: a failure leaves the store as it was.
fn move_events_to_timeline(conn: &Connection) -> Result<(), StoreError> {
    let old: bool = conn
        .query_row(
            "SELECT count(*) > 0 FROM sqlite_master WHERE type = 'table' AND name = 'events'",
            [],
            |r| r.get(0),
        )
        .map_err(db("read schema"))?;
    if !old {
        return Ok(());
    }
    let tx = conn
        .unchecked_transaction()
        .map_err(db("upgrade the timeline"))?;
    let mut moved = 0i64;
    let mut last_script = HashMap::new();
    {
        let mut read = tx
            .prepare("SELECT mac, at, kind, detail FROM events ORDER BY id")
            .map_err(db("upgrade the timeline"))?;
        let mut write = tx
            .prepare("INSERT INTO timeline (mac, seq, at, kind, data) VALUES (?1, ?2, ?3, ?4, ?5)")
            .map_err(db("upgrade the timeline"))?;
        let mut rows = read.query([]).map_err(db("upgrade the timeline"))?;
        while let Some(r) = rows.next().map_err(db("upgrade the timeline"))? {
            let mac: String = r.get(0).map_err(db("upgrade the timeline"))?;
            let Ok(mac) = mac.parse::<Mac>() else {
                tracing::warn!(mac, "store: an event of a malformed MAC is not kept");
                continue;
            };
            let kind: String = r.get(2).map_err(db("upgrade the timeline"))?;
            let text: String = r.get(3).map_err(db("upgrade the timeline"))?;
            if kind == EventKind::HttpScript.as_str() {
                last_script.insert(mac, text.clone());
            }
            let Ok(data) = old_event_data(&kind, text) else {
                tracing::warn!(%mac, kind, "store: an event of an unknown kind is not kept");
                continue;
            };
            moved += 1;
            write
                .execute(params![
                    mac_key(mac),
                    moved,
                    r.get::<_, i64>(1).map_err(db("upgrade the timeline"))?,
                    kind,
                    data,
                ])
                .map_err(db("upgrade the timeline"))?;
        }
    }
    fill_booted_bootenv(&tx, &last_script)?;
    tx.execute(
        "INSERT INTO counters (name, value) VALUES ('timeline_seq', ?1) \
         ON CONFLICT (name) DO UPDATE SET value = max(value, excluded.value)",
        [moved],
    )
    .map_err(db("upgrade the timeline"))?;
    tx.execute_batch("DROP TABLE events")
        .map_err(db("upgrade the timeline"))?;
    tx.commit().map_err(db("upgrade the timeline"))?;
    tracing::info!(moved, "store: timelines moved to the `timeline` table");
    Ok(())
}

/// The last `seq` the timeline used (0 in a new store).
fn timeline_seq(conn: &Connection) -> Result<i64, StoreError> {
    let counted: Option<i64> = conn
        .query_row(
            "SELECT value FROM counters WHERE name = 'timeline_seq'",
            [],
            |r| r.get(0),
        )
        .optional()
        .map_err(db("read the timeline counter"))?;
    match counted {
        Some(seq) => Ok(seq),
        // Never counted: whatever the table holds (nothing, in a new store).
        None => conn
            .query_row("SELECT coalesce(max(seq), 0) FROM timeline", [], |r| {
                r.get(0)
            })
            .map_err(db("read the timeline counter")),
    }
}

/// A MAC as the timeline's key: its six octets as one number.
fn mac_key(mac: Mac) -> i64 {
    let o = mac.octets();
    i64::from_be_bytes([0, 0, o[0], o[1], o[2], o[3], o[4], o[5]])
}

fn read_events(conn: &Connection, mac: Mac) -> Result<Vec<Event>, StoreError> {
    let mut q = conn
        .prepare_cached(
            "SELECT at, data FROM (SELECT seq, at, data FROM timeline \
             WHERE mac = ?1 ORDER BY seq DESC LIMIT ?2) ORDER BY seq",
        )
        .map_err(db("list events"))?;
    let mut rows = q
        .query(params![mac_key(mac), EVENTS_PER_NODE])
        .map_err(db("list events"))?;
    let mut out = Vec::new();
    while let Some(r) = rows.next().map_err(db("list events"))? {
        let data: String = r.get("data").map_err(db("read event"))?;
        out.push(Event {
            at: Timestamp(r.get("at").map_err(db("read event"))?),
            data: serde_json::from_str(&data).map_err(|e| corrupt(mac, e))?,
        });
    }
    Ok(out)
}

fn read_reports(conn: &Connection, mac: Mac) -> Result<(Vec<ScriptReport>, u64), StoreError> {
    let read = || db("list reports");
    let mut q = conn
        .prepare_cached(
            "SELECT at, generation, script, status, duration_ms, output FROM reports \
             WHERE mac = ?1 ORDER BY id",
        )
        .map_err(read())?;
    let mut rows = q.query([mac.to_string()]).map_err(read())?;
    let mut out = Vec::new();
    while let Some(r) = rows.next().map_err(read())? {
        let generation: i64 = r.get("generation").map_err(read())?;
        let duration: Option<i64> = r.get("duration_ms").map_err(read())?;
        out.push(ScriptReport {
            at: Timestamp(r.get("at").map_err(read())?),
            generation: generation.max(0) as u64,
            script: r.get("script").map_err(read())?,
            status: r.get("status").map_err(read())?,
            duration_ms: duration.map(|d| d.max(0) as u64),
            output: r.get("output").map_err(read())?,
        });
    }
    let dropped: Option<i64> = conn
        .prepare_cached("SELECT dropped FROM report_drops WHERE mac = ?1")
        .and_then(|mut q| {
            q.query_row([mac.to_string()], |r| r.get(0))
                .map(Some)
                .or_else(|e| match e {
                    rusqlite::Error::QueryReturnedNoRows => Ok(None),
                    e => Err(e),
                })
        })
        .map_err(read())?;
    Ok((out, dropped.unwrap_or(0).max(0) as u64))
}

fn corrupt(key: impl ToString, reason: impl ToString) -> StoreError {
    StoreError::Corrupt {
        key: key.to_string(),
        reason: reason.to_string(),
    }
}

fn ip_of(v: i64) -> Ipv4Addr {
    Ipv4Addr::from(v as u32)
}

fn ip_col(ip: Ipv4Addr) -> i64 {
    u32::from(ip) as i64
}

/// The node columns, in the order of the upsert's parameters.
const NODE_COLUMNS: &str = "mac, hostname, ipv4, labels, params, bootenv, next_bootenv, \
     bootenv_expires, loader, protected, state, state_reason, relay_info, arch, last_seen, \
     token, created, config_generation, origin, boot_ipv4, booted_bootenv";
/// The parameters [`execute_node`] binds, one per column of [`NODE_COLUMNS`].
const NODE_PARAMS: &str = "?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17, ?18, ?19, ?20, ?21";

/// Runs `stmt` (an insert of [`NODE_COLUMNS`]) for `n`; the rows changed.
fn execute_node(stmt: &mut rusqlite::CachedStatement<'_>, n: &Node) -> rusqlite::Result<usize> {
    stmt.execute(params![
        n.mac.to_string(),
        n.hostname,
        n.ipv4.map(ip_col),
        serde_json::to_string(&n.labels).unwrap_or_else(|_| "{}".into()),
        serde_json::to_string(&n.params).unwrap_or_else(|_| "{}".into()),
        n.bootenv,
        n.next_bootenv,
        n.bootenv_expires.map(Timestamp::millis),
        n.loader,
        n.protected,
        n.state.as_str(),
        n.state_reason,
        n.relay_info,
        n.arch.map(BootArch::as_str),
        n.last_seen.map(Timestamp::millis),
        n.token,
        n.created.millis(),
        n.config_generation as i64,
        origin_text(n.origin),
        n.boot_ipv4.map(ip_col),
        n.booted_bootenv,
    ])
}

fn node_from_row(row: &Row<'_>) -> Result<Node, StoreError> {
    let read = db("read node");
    let mac_s: String = row.get("mac").map_err(db("read node"))?;
    let mac = Mac::from_str(&mac_s).map_err(|e| corrupt(&mac_s, e))?;
    let get_s = |col: &str| -> Result<String, StoreError> { row.get(col).map_err(db("read node")) };
    let get_opt_s =
        |col: &str| -> Result<Option<String>, StoreError> { row.get(col).map_err(db("read node")) };
    let get_opt_i =
        |col: &str| -> Result<Option<i64>, StoreError> { row.get(col).map_err(db("read node")) };
    let labels = serde_json::from_str(&get_s("labels")?).map_err(|e| corrupt(mac, e))?;
    let params = serde_json::from_str(&get_s("params")?).map_err(|e| corrupt(mac, e))?;
    let state_s = get_s("state")?;
    let origin = get_opt_s("origin")?;
    let mut node = Node {
        mac,
        hostname: get_s("hostname")?,
        ipv4: get_opt_i("ipv4")?.map(ip_of),
        labels,
        params,
        bootenv: get_s("bootenv")?,
        next_bootenv: get_opt_s("next_bootenv")?,
        bootenv_expires: get_opt_i("bootenv_expires")?.map(Timestamp),
        booted_bootenv: get_opt_s("booted_bootenv")?,
        loader: get_opt_s("loader")?,
        protected: row.get("protected").map_err(read)?,
        state: NodeState::from_str(&state_s).map_err(|e| corrupt(mac, e))?,
        state_reason: get_opt_s("state_reason")?,
        relay_info: get_opt_s("relay_info")?,
        boot_ipv4: get_opt_i("boot_ipv4")?.map(ip_of),
        arch: get_opt_s("arch")?
            .map(|a| BootArch::from_str(&a))
            .transpose()
            .map_err(|e| corrupt(mac, e))?,
        last_seen: get_opt_i("last_seen")?.map(Timestamp),
        token: get_s("token")?,
        created: Timestamp(row.get("created").map_err(db("read node"))?),
        config_generation: get_opt_i("config_generation")?.unwrap_or(0).max(0) as u64,
        origin: NodeOrigin::Admin,
    };
    node.origin = match origin.as_deref() {
        Some("discovered") => NodeOrigin::Discovered,
        Some("admin") => NodeOrigin::Admin,
        Some(other) => return Err(corrupt(mac, format!("unknown origin `{other}`"))),
        // Written before rackboot kept origins: a record exactly as DHCP
        // makes one (default hostname, nothing an admin sets) was made
        // by DHCP; anything else is the admin's, and never reaped.
        None => {
            let bare = Node {
                origin: NodeOrigin::Discovered,
                ..node.clone()
            };
            if bare.is_bare_discovery() && bare.hostname == mac.default_hostname() {
                NodeOrigin::Discovered
            } else {
                NodeOrigin::Admin
            }
        }
    };
    Ok(node)
}

fn origin_text(o: NodeOrigin) -> &'static str {
    match o {
        NodeOrigin::Admin => "admin",
        NodeOrigin::Discovered => "discovered",
    }
}

fn lease_from_row(row: &Row<'_>) -> Result<Lease, StoreError> {
    let ip = ip_of(row.get("ip").map_err(db("read lease"))?);
    let mac: Option<String> = row.get("mac").map_err(db("read lease"))?;
    let state: String = row.get("state").map_err(db("read lease"))?;
    Ok(Lease {
        ip,
        mac: mac
            .map(|m| Mac::from_str(&m))
            .transpose()
            .map_err(|e| corrupt(ip, e))?,
        state: LeaseState::from_str(&state).map_err(|e| corrupt(ip, e))?,
        expires: Timestamp(row.get("expires").map_err(db("read lease"))?),
    })
}

#[async_trait]
impl Store for SqliteStore {
    async fn sync(&self) -> Result<(), StoreError> {
        let (tx, rx) = oneshot::channel();
        self.queue(Write::Sync(tx)).await?;
        rx.await
            .map_err(|_| StoreError::WriterGone)?
            .map_err(unsaved)
    }

    fn health(&self) -> StoreHealth {
        StoreHealth {
            unsaved: self.health.unsaved.load(Ordering::Relaxed),
            failed_commits: self.health.failed_commits.load(Ordering::Relaxed),
            failed_appends: self.health.failed_appends.load(Ordering::Relaxed),
        }
    }

    async fn node(&self, mac: Mac) -> Result<Option<Node>, StoreError> {
        Ok(self.cache().nodes.get(&mac).cloned())
    }

    async fn create_node_if_absent(&self, node: Node) -> Result<(Node, bool), StoreError> {
        let ticket = {
            let mut c = self.cache();
            if let Some(existing) = c.nodes.get(&node.mac) {
                return Ok((existing.clone(), false));
            }
            if let Some(other) = c.by_hostname.get(&node.hostname.to_ascii_lowercase()) {
                return Err(StoreError::Conflict(format!(
                    "hostname {} already belongs to {other}",
                    node.hostname
                )));
            }
            if let Some(other) = node.ipv4.and_then(|ip| c.by_fixed_ip.get(&ip)) {
                return Err(StoreError::Conflict(format!(
                    "address {} already belongs to {other}",
                    node.ipv4.unwrap_or(Ipv4Addr::UNSPECIFIED)
                )));
            }
            let Some(journal) = &self.journal else {
                c.put_node(node.clone());
                self.queue.push(Write::LazyNode(Box::new(node.clone())))?;
                return Ok((node, true));
            };
            // A promise at once: the token may go out in a boot script, and
            // the DHCP ACK for this record follows within milliseconds. So
            // it is journaled (one append, no commit) before anyone can see
            // it in memory, and appended and queued under the journal's
            // lock so a seal never separates the two.
            let mut j = journal.lock().unwrap_or_else(PoisonError::into_inner);
            if let Err(e) = j.append(&Change::Node(Box::new(node.clone()))) {
                self.health.append_failed(&e);
                return Err(StoreError::Unsaved(format!(
                    "cannot journal the new record of {}: {e} (free space in the state directory)",
                    node.mac
                )));
            }
            c.put_node(node.clone());
            self.queue.push(Write::LazyNode(Box::new(node.clone())))?;
            self.syncing().then(|| j.ticket())
        };
        self.settle(ticket).await?;
        Ok((node, true))
    }

    async fn nodes(&self) -> Result<Vec<Node>, StoreError> {
        let mut all: Vec<Node> = self.cache().nodes.values().cloned().collect();
        all.sort_by_key(|n| n.mac);
        Ok(all)
    }

    async fn nodes_where(&self, keep: NodeFilter) -> Result<Vec<Node>, StoreError> {
        let mut some: Vec<Node> = self
            .cache()
            .nodes
            .values()
            .filter(|n| keep(n))
            .cloned()
            .collect();
        some.sort_by_key(|n| n.mac);
        Ok(some)
    }

    async fn update_node(&self, mac: Mac, edit: NodeEdit) -> Result<Node, StoreError> {
        let node = {
            let mut c = self.cache();
            let mut node = c
                .nodes
                .get(&mac)
                .ok_or(StoreError::NoSuchNode(mac))?
                .clone();
            edit(&mut node).map_err(StoreError::Refused)?;
            // The MAC is the key: an edit cannot move a record to another one.
            node.mac = mac;
            if let Some(why) = c.clash(&node, &|_| false) {
                return Err(StoreError::Conflict(why));
            }
            c.put_node(node.clone());
            node
        };
        self.queue(Write::Nodes(vec![node.clone()])).await?;
        self.flush().await?;
        Ok(node)
    }

    async fn put_nodes(&self, nodes: Vec<Node>) -> Result<(), StoreError> {
        self.edit_nodes(Box::new(move |_| Ok(nodes))).await?;
        Ok(())
    }

    async fn edit_nodes(&self, edit: NodesEdit) -> Result<Vec<Node>, StoreError> {
        let nodes = {
            let mut c = self.cache();
            let nodes = edit(&c.nodes).map_err(StoreError::Refused)?;
            c.check_and_put(&nodes)?;
            nodes
        };
        self.queue(Write::Nodes(nodes.clone())).await?;
        self.flush().await?;
        Ok(nodes)
    }

    async fn delete_node(&self, mac: Mac) -> Result<bool, StoreError> {
        {
            let mut c = self.cache();
            let Some(old) = c.remove_node(mac) else {
                return Ok(false);
            };
            if let Some(journal) = &self.journal {
                // Its creation may still be in the journal: replayed after a
                // crash, it must not bring the record back.
                let mut j = journal.lock().unwrap_or_else(PoisonError::into_inner);
                let forget = Change::Forget {
                    mac,
                    token: old.token,
                };
                if let Err(e) = j.append(&forget) {
                    self.health.append_failed(&e);
                }
                self.queue.push(Write::DeleteNode(mac))?;
            } else {
                self.queue.push(Write::DeleteNode(mac))?;
            }
        }
        self.flush().await?;
        Ok(true)
    }

    async fn delete_nodes_if(
        &self,
        macs: &[Mac],
        doomed: NodeFilter,
    ) -> Result<Vec<Mac>, StoreError> {
        let mut deleted = Vec::new();
        {
            let mut c = self.cache();
            for &mac in macs {
                if !c.nodes.get(&mac).is_some_and(&doomed) {
                    continue;
                }
                let Some(old) = c.remove_node(mac) else {
                    continue;
                };
                if let Some(journal) = &self.journal {
                    // As in delete_node: a creation still in the journal
                    // must not bring the record back after a crash.
                    let mut j = journal.lock().unwrap_or_else(PoisonError::into_inner);
                    let forget = Change::Forget {
                        mac,
                        token: old.token,
                    };
                    if let Err(e) = j.append(&forget) {
                        self.health.append_failed(&e);
                    }
                }
                self.queue.push(Write::DeleteNode(mac))?;
                deleted.push(mac);
            }
        }
        if !deleted.is_empty() {
            self.flush().await?;
        }
        Ok(deleted)
    }

    async fn touch_node(
        &self,
        mac: Mac,
        arch: Option<BootArch>,
        now: Timestamp,
    ) -> Result<(), StoreError> {
        let node = {
            let mut c = self.cache();
            let n = c.nodes.get_mut(&mac).ok_or(StoreError::NoSuchNode(mac))?;
            // Every packet touches its node; the file needs last-seen only to
            // the minute (memory has it exact), so most touches write nothing.
            let arch_changed = arch.is_some() && arch != n.arch;
            n.last_seen = Some(now);
            if arch.is_some() {
                n.arch = arch;
            }
            let node = n.clone();
            let stale = c
                .seen_saved
                .get(&mac)
                .is_none_or(|saved| now.millis() - saved.millis() >= LAST_SEEN_GRAIN_MS);
            if !(stale || arch_changed) {
                return Ok(());
            }
            c.seen_saved.insert(mac, now);
            node
        };
        self.queue(Write::LazyNode(Box::new(node))).await
    }

    async fn set_node_state(
        &self,
        mac: Mac,
        state: NodeState,
        reason: Option<&str>,
    ) -> Result<(), StoreError> {
        let node = {
            let mut c = self.cache();
            let n = c.nodes.get_mut(&mac).ok_or(StoreError::NoSuchNode(mac))?;
            n.state = state;
            n.state_reason = reason.map(str::to_string);
            n.clone()
        };
        self.queue(Write::Node(Box::new(node))).await?;
        self.flush().await
    }

    async fn set_node_relay_info(&self, mac: Mac, info: Option<&str>) -> Result<(), StoreError> {
        let node = {
            let mut c = self.cache();
            let n = c.nodes.get_mut(&mac).ok_or(StoreError::NoSuchNode(mac))?;
            if n.relay_info.as_deref() == info {
                return Ok(());
            }
            n.relay_info = info.map(str::to_string);
            n.clone()
        };
        self.queue(Write::LazyNode(Box::new(node))).await
    }

    async fn bump_config_generation(&self, macs: &[Mac]) -> Result<Vec<(Mac, u64)>, StoreError> {
        if macs.is_empty() {
            return Ok(Vec::new());
        }
        let mut bumped = Vec::with_capacity(macs.len());
        {
            let mut c = self.cache();
            if let Some(missing) = macs.iter().find(|m| !c.nodes.contains_key(m)) {
                return Err(StoreError::NoSuchNode(*missing));
            }
            let mut records = Vec::with_capacity(macs.len());
            for mac in macs {
                let Some(n) = c.nodes.get_mut(mac) else {
                    continue;
                };
                if bumped.iter().any(|(m, _)| m == mac) {
                    continue;
                }
                n.config_generation += 1;
                bumped.push((*mac, n.config_generation));
                records.push(n.clone());
            }
            // Queued under the cache lock: no other write of these records
            // can land between the bump and its write (and overwrite it with
            // an older copy). One message is one transaction: all or none.
            self.queue.push(Write::Nodes(records))?;
        }
        self.flush().await?;
        Ok(bumped)
    }

    async fn add_report(&self, mac: Mac, report: &ScriptReport) -> Result<(), StoreError> {
        if !self.cache().nodes.contains_key(&mac) {
            return Err(StoreError::NoSuchNode(mac));
        }
        self.queue(Write::Report(mac, report.clone())).await?;
        self.flush().await
    }

    async fn reports(&self, mac: Mac) -> Result<(Vec<ScriptReport>, u64), StoreError> {
        let (tx, rx) = oneshot::channel();
        self.queue(Write::Reports(mac, tx)).await?;
        rx.await
            .map_err(|_| StoreError::WriterGone)?
            .map_err(StoreError::Commit)
    }

    async fn add_event(&self, mac: Mac, event: &Event) -> Result<(), StoreError> {
        let trim = {
            let mut c = self.cache();
            let n = c.events_since_trim.entry(mac).or_insert(0);
            *n += 1;
            if *n >= TRIM_EVERY {
                *n = 0;
                true
            } else {
                false
            }
        };
        self.queue(Write::Event(mac, event.clone())).await?;
        if trim {
            self.queue(Write::Trim(mac)).await?;
        }
        Ok(())
    }

    async fn events(&self, mac: Mac) -> Result<Vec<Event>, StoreError> {
        let (tx, rx) = oneshot::channel();
        self.queue(Write::Events(mac, tx)).await?;
        rx.await
            .map_err(|_| StoreError::WriterGone)?
            .map_err(StoreError::Commit)
    }

    async fn lease_of(&self, mac: Mac) -> Result<Option<Lease>, StoreError> {
        let c = self.cache();
        Ok(c.lease_of
            .get(&mac)
            .and_then(|ip| c.leases.get(ip))
            .cloned())
    }

    async fn lease_at(&self, ip: Ipv4Addr) -> Result<Option<Lease>, StoreError> {
        Ok(self.cache().leases.get(&u32::from(ip)).cloned())
    }

    async fn leases(&self) -> Result<Vec<Lease>, StoreError> {
        Ok(self.cache().leases.values().cloned().collect())
    }

    fn visit_leases(&self, first: Ipv4Addr, last: Ipv4Addr, f: &mut dyn FnMut(&Lease)) {
        let (first, last) = (u32::from(first), u32::from(last));
        if first <= last {
            self.cache()
                .leases
                .range(first..=last)
                .for_each(|(_, l)| f(l));
        }
    }

    async fn allocate(&self, req: &LeaseRequest) -> Result<Option<Lease>, StoreError> {
        let now = req.now;
        let (lease, dropped) = {
            let mut c = self.cache();
            let in_range = |ip: Ipv4Addr| {
                req.ranges
                    .iter()
                    .any(|(a, b)| (u32::from(*a)..=u32::from(*b)).contains(&u32::from(ip)))
            };
            let current = c
                .lease_of
                .get(&req.mac)
                .and_then(|ip| c.leases.get(ip))
                .filter(|l| l.state != LeaseState::Declined)
                .map(|l| l.ip);
            let mut chosen = None;
            if let Some(fixed) = req.fixed {
                // A fixed address is the node's own: no other MAC may hold it,
                // but a stale dynamic lease of someone else on it is overridden
                // only once it has expired.
                if !c.taken_by_other(fixed, req.mac, now) {
                    chosen = Some(fixed);
                }
            } else {
                let candidates = if req.exact { None } else { current };
                chosen = candidates
                    .into_iter()
                    .chain(req.wanted)
                    .find(|ip| in_range(*ip) && !c.taken_by_other(*ip, req.mac, now));
                for &(first, last) in req.ranges.iter().filter(|_| !req.exact) {
                    if chosen.is_some() {
                        break;
                    }
                    let (lo, hi) = (u32::from(first), u32::from(last));
                    // Start where the last search ended: a storm of new clients
                    // costs O(1) each instead of a scan from the bottom.
                    let start = c
                        .cursors
                        .get(&(lo, hi))
                        .copied()
                        .unwrap_or(lo)
                        .clamp(lo, hi);
                    let found = (start..=hi)
                        .chain(lo..start)
                        .find(|ip| !c.taken_by_other(Ipv4Addr::from(*ip), req.mac, now));
                    if let Some(ip) = found {
                        c.cursors
                            .insert((lo, hi), if ip == hi { lo } else { ip + 1 });
                        chosen = Some(Ipv4Addr::from(ip));
                    }
                }
            }
            let Some(ip) = chosen else {
                return Ok(None);
            };
            // One lease per MAC: drop any other address it held.
            let dropped = match c.lease_of.get(&req.mac).copied() {
                Some(old) if old != u32::from(ip) => c.drop_lease(old).map(|l| l.ip),
                _ => None,
            };
            let lease = Lease {
                ip,
                mac: Some(req.mac),
                state: req.state,
                expires: req.expires,
            };
            c.put_lease(lease.clone());
            (lease, dropped)
        };
        if lease.state == LeaseState::Bound {
            // An ACK promises the address: it must survive a crash before it is sent.
            let mut changes: Vec<Change> = dropped.map(Change::Drop).into_iter().collect();
            changes.push(Change::Put(lease.clone()));
            self.durable(&changes).await?;
        } else {
            // An offer promises nothing (RFC 2131 §4.3.1: the server need not
            // keep it); losing one in a crash costs the client a new DISCOVER.
            if let Some(old) = dropped {
                self.queue(Write::LazyDropLease(old)).await?;
            }
            self.queue(Write::LazyLease(lease.clone())).await?;
        }
        Ok(Some(lease))
    }

    async fn release(&self, mac: Mac, ip: Ipv4Addr) -> Result<bool, StoreError> {
        let released = {
            let mut c = self.cache();
            let holds = c
                .leases
                .get(&u32::from(ip))
                .is_some_and(|l| l.mac == Some(mac));
            holds && c.drop_lease(u32::from(ip)).is_some()
        };
        if released {
            self.durable(&[Change::Drop(ip)]).await?;
        }
        Ok(released)
    }

    async fn decline(&self, ip: Ipv4Addr, until: Timestamp) -> Result<(), StoreError> {
        let lease = Lease {
            ip,
            mac: None,
            state: LeaseState::Declined,
            expires: until,
        };
        self.cache().put_lease(lease.clone());
        self.durable(&[Change::Put(lease)]).await
    }

    async fn host_addr(
        &self,
        hostname: &str,
        now: Timestamp,
    ) -> Result<Option<Ipv4Addr>, StoreError> {
        let c = self.cache();
        let Some(mac) = c.by_hostname.get(&hostname.to_ascii_lowercase()) else {
            return Ok(None);
        };
        if let Some(ip) = c.nodes.get(mac).and_then(|n| n.ipv4) {
            return Ok(Some(ip));
        }
        Ok(c.lease_of
            .get(mac)
            .and_then(|ip| c.leases.get(ip))
            .filter(|l| l.state == LeaseState::Bound && l.is_live(now))
            .map(|l| l.ip))
    }

    async fn addr_host(&self, ip: Ipv4Addr, now: Timestamp) -> Result<Option<String>, StoreError> {
        let c = self.cache();
        let mac = c.by_fixed_ip.get(&ip).copied().or_else(|| {
            c.leases
                .get(&u32::from(ip))
                .filter(|l| l.state == LeaseState::Bound && l.is_live(now))
                .and_then(|l| l.mac)
        });
        Ok(mac
            .and_then(|m| c.nodes.get(&m))
            .map(|n| n.hostname.clone()))
    }

    fn names(&self) -> Arc<NameTable> {
        Arc::clone(&self.cache().names)
    }

    async fn mac_at(&self, ip: Ipv4Addr, now: Timestamp) -> Result<Option<Mac>, StoreError> {
        let c = self.cache();
        Ok(c.leases
            .get(&u32::from(ip))
            .filter(|l| l.is_live(now))
            .and_then(|l| l.mac)
            .or_else(|| c.by_fixed_ip.get(&ip).copied()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An event whose sentence is `text`.
    fn said(at: Timestamp, text: &str) -> Event {
        Event::new(
            at,
            EventData::DhcpIgnored {
                reason: text.into(),
            },
        )
    }

    fn mac(n: u8) -> Mac {
        Mac::new([0x52, 0x54, 0, 0, 0, n])
    }

    fn req(m: Mac, now: i64) -> LeaseRequest {
        LeaseRequest {
            mac: m,
            ranges: vec![("10.0.0.10".parse().unwrap(), "10.0.0.12".parse().unwrap())],
            fixed: None,
            wanted: None,
            exact: false,
            state: LeaseState::Bound,
            expires: Timestamp(now + 3_600_000),
            now: Timestamp(now),
        }
    }

    /// Every way a name or address changes reaches the name table DNS answers from, and it
    /// agrees with `host_addr`/`addr_host`, also after reopening.
    #[tokio::test]
    async fn the_name_table_follows_nodes_and_leases() {
        let dir = tempfile::tempdir().unwrap();
        let now = Timestamp::now().millis();
        let ip = |s: &str| s.parse::<Ipv4Addr>().unwrap();
        {
            let s = SqliteStore::open(dir.path()).await.unwrap();
            let names = s.names();
            let n = Node::discovered(mac(1), "discovery", "t1".into(), Timestamp(now));
            let hostname = n.hostname.clone();
            s.create_node_if_absent(n).await.unwrap();
            assert!(names.has_host(&hostname));
            assert_eq!(names.host_addr(&hostname, Timestamp(now)), None);
            let serial = names.serial();

            // DHCP binds a lease.
            s.allocate(&req(mac(1), now)).await.unwrap().unwrap();
            assert_eq!(
                names.host_addr(&hostname, Timestamp(now)),
                Some(ip("10.0.0.10"))
            );
            assert_eq!(
                names.addr_host(ip("10.0.0.10"), Timestamp(now)).as_deref(),
                Some(hostname.as_str())
            );
            assert!(names.serial() > serial);

            // An admin renames the node and gives it a fixed address.
            s.update_node(
                mac(1),
                Box::new(|n| {
                    n.hostname = "Web1".into();
                    n.ipv4 = Some("10.0.0.99".parse().unwrap());
                    Ok(())
                }),
            )
            .await
            .unwrap();
            assert!(!names.has_host(&hostname));
            assert_eq!(
                names.host_addr("web1", Timestamp(now)),
                Some(ip("10.0.0.99"))
            );
            for addr in ["10.0.0.99", "10.0.0.10"] {
                // The table keeps hostnames lowercase, as DNS answers them.
                assert_eq!(
                    names
                        .addr_host(ip(addr), Timestamp(now))
                        .map(|h| h.to_string()),
                    s.addr_host(ip(addr), Timestamp(now))
                        .await
                        .unwrap()
                        .map(|h| h.to_ascii_lowercase()),
                    "{addr}"
                );
            }

            // An import of another node, then a release.
            let mut other = Node::discovered(mac(2), "discovery", "t2".into(), Timestamp(now));
            other.hostname = "db1".into();
            s.put_nodes(vec![other]).await.unwrap();
            s.allocate(&req(mac(2), now)).await.unwrap().unwrap();
            let leased = names.host_addr("db1", Timestamp(now)).unwrap();
            s.release(mac(2), leased).await.unwrap();
            assert_eq!(names.host_addr("db1", Timestamp(now)), None);
            s.sync().await.unwrap();
        }
        // Reopened: the table is loaded from the file.
        let s = SqliteStore::open(dir.path()).await.unwrap();
        let names = s.names();
        assert_eq!(
            names.host_addr("web1", Timestamp(now)),
            Some(ip("10.0.0.99"))
        );
        assert!(names.has_host("db1"));
        // Delete: the name is gone.
        s.delete_node(mac(1)).await.unwrap();
        assert!(!names.has_host("web1"));
        assert_eq!(names.addr_host(ip("10.0.0.99"), Timestamp(now)), None);
    }

    #[tokio::test]
    async fn nodes_are_created_once_and_read_back() {
        let s = SqliteStore::in_memory().await.unwrap();
        let mut n = Node::discovered(mac(1), "discovery", "t1".into(), Timestamp(5));
        n.labels.insert("rack".into(), "r1".into());
        let (got, created) = s.create_node_if_absent(n.clone()).await.unwrap();
        assert!(created);
        assert_eq!(got, n);
        let other = Node::discovered(mac(1), "local", "t2".into(), Timestamp(6));
        let (got, created) = s.create_node_if_absent(other).await.unwrap();
        assert!(!created);
        assert_eq!(got.bootenv, "discovery", "the first record stays");
        s.set_node_state(mac(1), NodeState::Failed, Some("why"))
            .await
            .unwrap();
        s.touch_node(mac(1), Some(BootArch::Arm64Efi), Timestamp(9))
            .await
            .unwrap();
        let got = s.node(mac(1)).await.unwrap().unwrap();
        assert_eq!(
            (got.state, got.state_reason.as_deref()),
            (NodeState::Failed, Some("why"))
        );
        assert_eq!(
            (got.arch, got.last_seen),
            (Some(BootArch::Arm64Efi), Some(Timestamp(9)))
        );
        assert!(
            s.set_node_state(mac(2), NodeState::Booted, None)
                .await
                .unwrap_err()
                .is_no_such_node()
        );
    }

    #[tokio::test]
    async fn edits_imports_and_deletes_are_atomic_and_survive_reopening() {
        let dir = tempfile::tempdir().unwrap();
        let node = |n: u8, host: &str, ip: Option<&str>| {
            let mut x = Node::discovered(mac(n), "discovery", format!("t{n}"), Timestamp(1));
            x.hostname = host.into();
            x.ipv4 = ip.map(|s| s.parse().unwrap());
            x
        };
        {
            let s = SqliteStore::open(dir.path()).await.unwrap();
            s.put_nodes(vec![
                node(1, "b1", Some("10.0.0.1")),
                node(2, "b2", Some("10.0.0.2")),
            ])
            .await
            .unwrap();
            s.add_event(mac(2), &said(Timestamp(2), "10.0.0.2"))
                .await
                .unwrap();
            // One bad record refuses the whole import: nothing of it is written.
            let err = s
                .put_nodes(vec![node(3, "b3", None), node(4, "b4", Some("10.0.0.1"))])
                .await
                .unwrap_err();
            assert!(err.to_string().contains("10.0.0.1"), "{err}");
            assert!(s.node(mac(3)).await.unwrap().is_none());
            // Swapping addresses between two records in one import is fine.
            s.put_nodes(vec![
                node(1, "b1", Some("10.0.0.2")),
                node(2, "b2", Some("10.0.0.1")),
            ])
            .await
            .unwrap();
            let edited = s
                .update_node(
                    mac(1),
                    Box::new(|n| {
                        n.bootenv = "rescue".into();
                        Ok(())
                    }),
                )
                .await
                .unwrap();
            assert_eq!(edited.bootenv, "rescue");
            let refused = s
                .update_node(mac(1), Box::new(|_| Err("node b1 is protected".into())))
                .await
                .unwrap_err();
            assert_eq!(refused.to_string(), "node b1 is protected");
            let clash = s
                .update_node(
                    mac(1),
                    Box::new(|n| {
                        n.hostname = "B2".into();
                        Ok(())
                    }),
                )
                .await
                .unwrap_err();
            assert!(matches!(clash, StoreError::Conflict(_)), "{clash}");
            assert!(s.delete_node(mac(2)).await.unwrap());
            assert!(!s.delete_node(mac(2)).await.unwrap());
            // The address of a deleted record is free for another.
            s.put_nodes(vec![node(5, "b2", Some("10.0.0.1"))])
                .await
                .unwrap();
            s.sync().await.unwrap();
        }
        let s = SqliteStore::open(dir.path()).await.unwrap();
        let all = s.nodes().await.unwrap();
        let summary: Vec<_> = all
            .iter()
            .map(|n| (n.mac, n.hostname.as_str(), n.ipv4, n.bootenv.as_str()))
            .collect();
        assert_eq!(
            summary,
            vec![
                (mac(1), "b1", Some("10.0.0.2".parse().unwrap()), "rescue"),
                (mac(5), "b2", Some("10.0.0.1".parse().unwrap()), "discovery"),
            ]
        );
        assert!(s.events(mac(2)).await.unwrap().is_empty());
    }

    #[tokio::test]
    async fn lazy_writes_are_saved_by_sync_and_never_overwrite_newer_ones() {
        let dir = tempfile::tempdir().unwrap();
        {
            let s = SqliteStore::open(dir.path()).await.unwrap();
            let n = Node::discovered(mac(1), "discovery", "t1".into(), Timestamp(1));
            s.create_node_if_absent(n).await.unwrap();
            // Lazy: last seen, then an urgent state change, then lazy again.
            s.touch_node(mac(1), Some(BootArch::Bios), Timestamp(2))
                .await
                .unwrap();
            s.set_node_state(mac(1), NodeState::Booting, Some("script"))
                .await
                .unwrap();
            s.set_node_relay_info(mac(1), Some("circuit-id 1/2"))
                .await
                .unwrap();
            let offer = LeaseRequest {
                state: LeaseState::Offered,
                ..req(mac(1), 0)
            };
            let offered = s.allocate(&offer).await.unwrap().unwrap();
            s.add_event(mac(1), &said(Timestamp(3), &offered.ip.to_string()))
                .await
                .unwrap();
            // A read of the timeline sees every event queued before it.
            assert_eq!(s.events(mac(1)).await.unwrap().len(), 1);
            s.sync().await.unwrap();
        }
        let s = SqliteStore::open(dir.path()).await.unwrap();
        let n = s.node(mac(1)).await.unwrap().unwrap();
        assert_eq!(
            (n.state, n.arch, n.relay_info.as_deref()),
            (
                NodeState::Booting,
                Some(BootArch::Bios),
                Some("circuit-id 1/2")
            )
        );
        let lease = s.lease_of(mac(1)).await.unwrap().unwrap();
        assert_eq!((lease.ip, lease.state), (offered_ip(), LeaseState::Offered));
        assert_eq!(s.events(mac(1)).await.unwrap().len(), 1);
    }

    fn offered_ip() -> Ipv4Addr {
        "10.0.0.10".parse().unwrap()
    }

    /// Origins are kept; a record from before origins were kept reads as DHCP's only when
    /// it is exactly what DHCP makes; `delete_nodes_if` deletes only what its test still
    /// accepts, for good (not back from the journal after reopening).
    #[tokio::test]
    async fn origins_survive_and_conditional_deletes_are_durable() {
        let dir = tempfile::tempdir().unwrap();
        {
            let s = SqliteStore::open(dir.path()).await.unwrap();
            for n in 1..=4 {
                let node = Node::discovered(mac(n), "discovery", format!("t{n}"), Timestamp(1));
                s.create_node_if_absent(node).await.unwrap();
            }
            s.update_node(
                mac(2),
                Box::new(|n| {
                    n.origin = NodeOrigin::Admin;
                    Ok(())
                }),
            )
            .await
            .unwrap();
            s.update_node(
                mac(4),
                Box::new(|n| {
                    n.hostname = "builder-4".into();
                    Ok(())
                }),
            )
            .await
            .unwrap();
            let gone = s
                .delete_nodes_if(
                    &[mac(1), mac(2), mac(9)],
                    Box::new(|n| n.is_bare_discovery()),
                )
                .await
                .unwrap();
            assert_eq!(gone, vec![mac(1)]);
            s.sync().await.unwrap();
        }
        {
            let s = SqliteStore::open(dir.path()).await.unwrap();
            assert!(s.node(mac(1)).await.unwrap().is_none(), "deleted for good");
            let origins = origins(&s).await;
            assert_eq!(
                origins,
                [
                    NodeOrigin::Admin,
                    NodeOrigin::Discovered,
                    NodeOrigin::Discovered
                ]
            );
            s.sync().await.unwrap();
        }
        // As a store from before origins were kept.
        let conn = Connection::open(dir.path().join("rackboot.db")).unwrap();
        conn.execute("UPDATE nodes SET origin = NULL", []).unwrap();
        drop(conn);
        let s = SqliteStore::open(dir.path()).await.unwrap();
        // 2 is bare again: DHCP's; 4 was renamed: an admin's.
        assert_eq!(
            origins(&s).await,
            [
                NodeOrigin::Discovered,
                NodeOrigin::Discovered,
                NodeOrigin::Admin
            ]
        );
    }

    /// The origins of the records of mac(2), mac(3), mac(4).
    async fn origins(s: &SqliteStore) -> Vec<NodeOrigin> {
        let mut out = Vec::new();
        for n in 2..=4 {
            out.push(s.node(mac(n)).await.unwrap().unwrap().origin);
        }
        out
    }

    #[tokio::test]
    async fn edit_nodes_reads_and_writes_in_one_step_all_or_nothing() {
        let node = |n: u8, host: &str, _: Option<&str>| {
            let mut x = Node::discovered(mac(n), "discovery", format!("t{n}"), Timestamp(1));
            x.hostname = host.into();
            x
        };
        let s = SqliteStore::in_memory().await.unwrap();
        s.put_nodes(vec![node(1, "a1", None), node(2, "a2", None)])
            .await
            .unwrap();
        s.set_node_state(mac(2), NodeState::Booted, None)
            .await
            .unwrap();
        // The edit sees the records in force, the state change included.
        let written = s
            .edit_nodes(Box::new(move |all| {
                let mut out: Vec<Node> = all.values().cloned().collect();
                out.sort_by_key(|n| n.mac);
                for n in &mut out {
                    n.bootenv = "rescue".into();
                }
                out.push(node(3, "a3", None));
                Ok(out)
            }))
            .await
            .unwrap();
        assert_eq!(written.len(), 3);
        let two = s.node(mac(2)).await.unwrap().unwrap();
        assert_eq!(
            (two.bootenv.as_str(), two.state),
            ("rescue", NodeState::Booted)
        );
        // A refusal writes nothing.
        let err = s
            .edit_nodes(Box::new(|_| Err("node a2 is protected".into())))
            .await
            .unwrap_err();
        assert!(matches!(err, StoreError::Refused(_)), "{err}");
        // So does a clash.
        let err = s
            .edit_nodes(Box::new(move |all| {
                let mut one = all[&mac(1)].clone();
                one.bootenv = "local".into();
                Ok(vec![one, node(4, "A2", None)])
            }))
            .await
            .unwrap_err();
        assert!(matches!(err, StoreError::Conflict(_)), "{err}");
        assert_eq!(s.node(mac(1)).await.unwrap().unwrap().bootenv, "rescue");
        assert!(s.node(mac(4)).await.unwrap().is_none());
    }

    #[tokio::test]
    async fn visiting_leases_shows_those_in_the_range_in_address_order() {
        let s = SqliteStore::in_memory().await.unwrap();
        for m in 1..=3 {
            s.allocate(&req(mac(m), 0)).await.unwrap().unwrap();
        }
        let seen = |first: &str, last: &str| {
            let mut ips = Vec::new();
            s.visit_leases(first.parse().unwrap(), last.parse().unwrap(), &mut |l| {
                ips.push(l.ip.to_string())
            });
            ips
        };
        assert_eq!(
            seen("10.0.0.0", "10.0.0.255"),
            ["10.0.0.10", "10.0.0.11", "10.0.0.12"]
        );
        assert_eq!(seen("10.0.0.11", "10.0.0.11"), ["10.0.0.11"]);
        assert!(seen("10.0.0.13", "10.0.0.20").is_empty());
        assert!(
            seen("10.0.0.12", "10.0.0.10").is_empty(),
            "first after last"
        );
    }

    #[tokio::test]
    async fn allocation_never_doubles_an_address_and_keeps_a_macs_lease() {
        let s = SqliteStore::in_memory().await.unwrap();
        let a = s.allocate(&req(mac(1), 0)).await.unwrap().unwrap();
        let b = s.allocate(&req(mac(2), 0)).await.unwrap().unwrap();
        let c = s.allocate(&req(mac(3), 0)).await.unwrap().unwrap();
        assert_eq!(
            [a.ip, b.ip, c.ip].map(|i| i.to_string()),
            ["10.0.0.10", "10.0.0.11", "10.0.0.12"]
        );
        assert_eq!(
            s.allocate(&req(mac(4), 0)).await.unwrap(),
            None,
            "pool exhausted"
        );
        // Renewal keeps the address, even when asking for another one.
        let mut r = req(mac(2), 10);
        r.wanted = Some("10.0.0.10".parse().unwrap());
        assert_eq!(s.allocate(&r).await.unwrap().unwrap().ip, b.ip);
        assert!(s.release(mac(1), a.ip).await.unwrap());
        assert_eq!(s.lease_of(mac(1)).await.unwrap(), None);
        // After expiry an address can move to another MAC.
        let late = req(mac(4), 3_600_001);
        assert_eq!(s.allocate(&late).await.unwrap().unwrap().ip, a.ip);
    }

    #[tokio::test]
    async fn fixed_addresses_are_reserved_for_their_node() {
        let s = SqliteStore::in_memory().await.unwrap();
        let mut n = Node::discovered(mac(9), "discovery", "t".into(), Timestamp(0));
        n.ipv4 = Some("10.0.0.10".parse().unwrap());
        s.create_node_if_absent(n).await.unwrap();
        let other = s.allocate(&req(mac(1), 0)).await.unwrap().unwrap();
        assert_eq!(
            other.ip.to_string(),
            "10.0.0.11",
            "reserved address skipped"
        );
        let mut r = req(mac(9), 0);
        r.fixed = Some("10.0.0.10".parse().unwrap());
        assert_eq!(
            s.allocate(&r).await.unwrap().unwrap().ip.to_string(),
            "10.0.0.10"
        );
        assert_eq!(
            s.mac_at("10.0.0.10".parse().unwrap(), Timestamp(0))
                .await
                .unwrap(),
            Some(mac(9))
        );
        assert_eq!(
            s.host_addr("NODE-525400000009", Timestamp(0))
                .await
                .unwrap(),
            Some("10.0.0.10".parse().unwrap())
        );
        assert_eq!(
            s.addr_host("10.0.0.11".parse().unwrap(), Timestamp(0))
                .await
                .unwrap(),
            None,
            "mac 1 has no node record"
        );
    }

    #[tokio::test]
    async fn declined_addresses_leave_the_pool_until_they_expire() {
        let s = SqliteStore::in_memory().await.unwrap();
        s.decline("10.0.0.10".parse().unwrap(), Timestamp(1000))
            .await
            .unwrap();
        let ip = |l: Option<Lease>| l.map(|l| l.ip.to_string());
        assert_eq!(
            ip(s.allocate(&req(mac(1), 0)).await.unwrap()).as_deref(),
            Some("10.0.0.11")
        );
        assert_eq!(
            ip(s.allocate(&req(mac(2), 0)).await.unwrap()).as_deref(),
            Some("10.0.0.12")
        );
        assert_eq!(
            s.allocate(&req(mac(3), 0)).await.unwrap(),
            None,
            "quarantined"
        );
        assert_eq!(
            ip(s.allocate(&req(mac(3), 2000)).await.unwrap()).as_deref(),
            Some("10.0.0.10")
        );
    }

    #[tokio::test]
    async fn writes_survive_reopening_and_one_process_owns_the_directory() {
        let dir = tempfile::tempdir().unwrap();
        {
            let s = SqliteStore::open(dir.path()).await.unwrap();
            let n = Node::discovered(mac(1), "discovery", "t".into(), Timestamp(0));
            s.create_node_if_absent(n).await.unwrap();
            s.allocate(&req(mac(1), 0)).await.unwrap().unwrap();
            let err = SqliteStore::open(dir.path())
                .await
                .err()
                .expect("second open must fail");
            assert!(
                err.to_string().contains("in use by another rackboot"),
                "{err}"
            );
            s.add_event(mac(1), &said(Timestamp(1), "x")).await.unwrap();
            s.events(mac(1)).await.unwrap();
        }
        // Let the first store's writer task wind down and drop its lock.
        tokio::time::sleep(Duration::from_millis(100)).await;
        let s = SqliteStore::open(dir.path()).await.unwrap();
        assert!(s.node(mac(1)).await.unwrap().is_some());
        assert_eq!(
            s.lease_of(mac(1)).await.unwrap().unwrap().ip.to_string(),
            "10.0.0.10"
        );
        assert_eq!(s.events(mac(1)).await.unwrap().len(), 1);
    }

    /// `[store] sync`: with `always` every journaled change had its own
    /// fdatasync before it returned, with `group` concurrent ones share
    /// rounds, with `none` there is none; each mode keeps every lease across
    /// a reopen. The state files hold node tokens: 0600, and an older store
    /// readable by others is narrowed.
    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn sync_modes_fdatasync_as_asked_and_state_files_are_private() {
        use std::os::unix::fs::PermissionsExt;
        for mode in [SyncMode::None, SyncMode::Group, SyncMode::Always] {
            let dir = tempfile::tempdir().unwrap();
            std::fs::write(dir.path().join("rackboot.db"), b"").unwrap();
            std::fs::set_permissions(
                dir.path().join("rackboot.db"),
                std::fs::Permissions::from_mode(0o644),
            )
            .unwrap();
            {
                let s = Arc::new(SqliteStore::open_with(dir.path(), mode).await.unwrap());
                let mut tasks = tokio::task::JoinSet::new();
                for i in 1..=8u8 {
                    let s = s.clone();
                    tasks.spawn(async move {
                        let n =
                            Node::discovered(mac(i), "discovery", format!("t{i}"), Timestamp(0));
                        s.create_node_if_absent(n).await.unwrap();
                        let wide = LeaseRequest {
                            ranges: vec![(
                                "10.0.0.10".parse().unwrap(),
                                "10.0.0.50".parse().unwrap(),
                            )],
                            ..req(mac(i), 0)
                        };
                        s.allocate(&wide).await.unwrap().unwrap();
                    });
                }
                while let Some(t) = tasks.join_next().await {
                    t.unwrap();
                }
                // 8 records and 8 ACKs journaled.
                let rounds = s.syncer.rounds();
                match mode {
                    SyncMode::None => assert_eq!(rounds, 0),
                    SyncMode::Always => assert_eq!(rounds, 16),
                    SyncMode::Group => assert!((1..=16).contains(&rounds), "{rounds}"),
                }
                for f in ["rackboot.db", "rackboot.lock", "leases.journal.0"] {
                    let m = std::fs::metadata(dir.path().join(f)).unwrap();
                    assert_eq!(m.permissions().mode() & 0o777, 0o600, "{f} ({mode:?})");
                }
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
            let s = SqliteStore::open_with(dir.path(), mode).await.unwrap();
            for i in 1..=8u8 {
                assert!(s.lease_of(mac(i)).await.unwrap().is_some(), "{mode:?} {i}");
            }
        }
    }

    #[tokio::test]
    async fn an_acknowledged_lease_is_in_the_journal_before_allocate_returns() {
        let dir = tempfile::tempdir().unwrap();
        let journal = dir.path().join("leases.journal.0");
        {
            let s = SqliteStore::open(dir.path()).await.unwrap();
            let n = Node::discovered(mac(1), "discovery", "t".into(), Timestamp(0));
            s.create_node_if_absent(n).await.unwrap();
            let offered = LeaseRequest {
                state: LeaseState::Offered,
                ..req(mac(1), 0)
            };
            s.allocate(&offered).await.unwrap().unwrap();
            let created = std::fs::read_to_string(&journal).unwrap();
            assert!(
                created.starts_with("node t {") && created.lines().count() == 1,
                "a new record is journaled, an offer is not: {created:?}"
            );
            s.allocate(&req(mac(1), 0)).await.unwrap().unwrap();
            // No commit has run yet (lazy writes wait up to a second): the
            // journal alone holds the ACK.
            assert_eq!(
                std::fs::read_to_string(&journal).unwrap(),
                format!("{created}put 10.0.0.10 52:54:00:00:00:01 bound 3600000\n")
            );
            assert!(
                s.release(mac(1), "10.0.0.10".parse().unwrap())
                    .await
                    .unwrap()
            );
            assert!(
                std::fs::read_to_string(&journal)
                    .unwrap()
                    .ends_with("drop 10.0.0.10\n")
            );
            // A sync commits everything: the segment is sealed and, once
            // committed, removed; the next one is empty.
            s.sync().await.unwrap();
            assert!(!journal.exists());
            assert_eq!(
                std::fs::read_to_string(dir.path().join("leases.journal.1")).unwrap(),
                ""
            );
        }
        // Closing commits everything too: what is left holds nothing.
        for e in std::fs::read_dir(dir.path()).unwrap() {
            let e = e.unwrap();
            let name = e.file_name().into_string().unwrap();
            if name.starts_with("leases.journal.") {
                assert_eq!(std::fs::read_to_string(e.path()).unwrap(), "", "{name}");
            }
        }
    }

    /// What `kill -9` leaves of a running store: its files as the page
    /// cache holds them, copied into `to` (a process killed writes nothing
    /// more, and a copy is exactly what the next start would find).
    fn crash_copy(from: &Path, to: &Path) {
        for e in std::fs::read_dir(from).unwrap() {
            let e = e.unwrap();
            if e.file_type().unwrap().is_file() {
                std::fs::copy(e.path(), to.join(e.file_name())).unwrap();
            }
        }
    }

    /// A record a client was answered for (its token went out in a boot
    /// script, a DHCP ACK followed) survives `kill -9` with its token, like
    /// its lease, although nothing was committed yet; a record deleted
    /// before the crash stays deleted, and one made again keeps its new token.
    #[tokio::test]
    async fn a_new_node_record_survives_a_crash_with_its_token() {
        let dir = tempfile::tempdir().unwrap();
        let after = tempfile::tempdir().unwrap();
        {
            let s = SqliteStore::open(dir.path()).await.unwrap();
            for (m, token) in [(1, "aa01"), (2, "aa02"), (3, "aa03")] {
                let n = Node::discovered(mac(m), "discovery", token.into(), Timestamp(0));
                assert!(s.create_node_if_absent(n).await.unwrap().1);
            }
            s.allocate(&req(mac(1), 0)).await.unwrap().unwrap();
            // An admin deletes 2 (committed at once), 3 is deleted and made again.
            assert!(s.delete_node(mac(2)).await.unwrap());
            assert!(s.delete_node(mac(3)).await.unwrap());
            let again = Node::discovered(mac(3), "discovery", "bb03".into(), Timestamp(1));
            assert!(s.create_node_if_absent(again).await.unwrap().1);
            // Well within the lazy commit's second: only the journal has 1 and 3.
            crash_copy(dir.path(), after.path());
        }
        let s = SqliteStore::open(after.path()).await.unwrap();
        let n1 = s
            .node(mac(1))
            .await
            .unwrap()
            .expect("the ACKed node's record");
        assert_eq!(n1.token, "aa01");
        assert_eq!(n1.state, NodeState::Discovered);
        assert_eq!(
            s.lease_of(mac(1)).await.unwrap().unwrap().ip.to_string(),
            "10.0.0.10"
        );
        assert!(
            s.node(mac(2)).await.unwrap().is_none(),
            "deleted before the crash"
        );
        assert_eq!(s.node(mac(3)).await.unwrap().unwrap().token, "bb03");
    }

    /// A journaled creation replayed over a file that already has a newer
    /// copy of the record (a state change committed before the crash) does
    /// not set it back.
    #[tokio::test]
    async fn replaying_a_creation_keeps_the_newer_record_in_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let after = tempfile::tempdir().unwrap();
        {
            let s = SqliteStore::open(dir.path()).await.unwrap();
            let n = Node::discovered(mac(1), "discovery", "aa01".into(), Timestamp(0));
            s.create_node_if_absent(n).await.unwrap();
            s.set_node_state(mac(1), NodeState::Booting, None)
                .await
                .unwrap();
            crash_copy(dir.path(), after.path());
        }
        let s = SqliteStore::open(after.path()).await.unwrap();
        let n = s.node(mac(1)).await.unwrap().unwrap();
        assert_eq!((n.state, n.token.as_str()), (NodeState::Booting, "aa01"));
    }

    /// A tmpfs of `size` mounted on a fresh temporary directory, unmounted on
    /// drop: a state directory whose disk really fills up.
    struct SmallDisk {
        dir: tempfile::TempDir,
    }

    impl SmallDisk {
        /// `None` (the test is skipped, said on stderr) when not root.
        fn mount(size: &str) -> Option<SmallDisk> {
            if unsafe { nix::libc::geteuid() } != 0 {
                eprintln!("skipped: mounting a small tmpfs as the state directory needs root");
                return None;
            }
            let dir = tempfile::tempdir().unwrap();
            let out = std::process::Command::new("mount")
                .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
                .arg(dir.path())
                .output()
                .expect("run mount");
            assert!(
                out.status.success(),
                "mount a tmpfs: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            Some(SmallDisk { dir })
        }

        fn path(&self) -> &Path {
            self.dir.path()
        }

        /// Writes a filler file until the disk is full.
        fn fill(&self) {
            use std::io::Write as _;
            let mut f = std::fs::File::create(self.path().join("filler")).unwrap();
            let block = vec![0xa5u8; 4096];
            loop {
                match f.write(&block) {
                    Ok(0) => break,
                    Ok(_) => {}
                    Err(e) if e.raw_os_error() == Some(nix::libc::ENOSPC) => break,
                    Err(e) => panic!("filling the disk: {e}"),
                }
            }
            let _ = f.sync_all();
        }

        fn free(&self) {
            std::fs::remove_file(self.path().join("filler")).unwrap();
        }
    }

    impl Drop for SmallDisk {
        fn drop(&mut self) {
            let _ = std::process::Command::new("umount")
                .arg("-l")
                .arg(self.dir.path())
                .status();
        }
    }

    /// Waits (at most 10 s) until the store has nothing left unsaved.
    async fn until_saved(s: &SqliteStore) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while s.health().unsaved > 0 {
            assert!(
                tokio::time::Instant::now() < deadline,
                "still unsaved after the disk has room: {:?}",
                s.health()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// A full state directory loses nothing the store said was done: a
    /// write it cannot make durable is refused (node creation, an ACK's
    /// lease) or reported unsaved (an edit, a delete), and whatever a
    /// failed commit held is kept and retried, by the writer once the disk
    /// has room or by replay after a restart.
    #[tokio::test(flavor = "multi_thread")]
    async fn a_full_disk_loses_nothing_the_store_said_was_done() {
        let Some(disk) = SmallDisk::mount("2m") else {
            return;
        };
        let now = Timestamp::now().millis();
        let mut done: Vec<Node> = Vec::new();
        let mut acked: Vec<Lease> = Vec::new();
        {
            let s = SqliteStore::open(disk.path()).await.unwrap();
            // Created and ACKed with room to spare: journaled, not committed.
            for m in 1..=2 {
                let n = Node::discovered(mac(m), "discovery", format!("a{m}"), Timestamp(now));
                done.push(s.create_node_if_absent(n).await.unwrap().0);
                acked.push(s.allocate(&req(mac(m), now)).await.unwrap().unwrap());
            }
            disk.fill();
            // The lazy batch holding them fails to commit; nothing is lost.
            assert!(s.sync().await.unwrap_err().is_unsaved());
            assert!(s.health().unsaved > 0 && s.health().failed_commits > 0);
            // A new record, an ACK's lease, an edit: none can be made durable.
            let n = Node::discovered(mac(3), "discovery", "a3".into(), Timestamp(now));
            assert!(s.create_node_if_absent(n).await.unwrap_err().is_unsaved());
            assert!(s.node(mac(3)).await.unwrap().is_none(), "not shown either");
            assert!(
                s.allocate(&req(mac(3), now))
                    .await
                    .unwrap_err()
                    .is_unsaved()
            );
            assert!(s.health().failed_appends > 0);
            let edit = s
                .update_node(
                    mac(1),
                    Box::new(|n| {
                        n.labels.insert("rack".into(), "r1".into());
                        Ok(())
                    }),
                )
                .await;
            assert!(edit.unwrap_err().is_unsaved());
            // rackboot stops with the disk still full.
        }
        disk.free();
        {
            // Started again once there is room: the journal brings back
            // every record and lease it acknowledged.
            let s = SqliteStore::open(disk.path()).await.unwrap();
            for n in &done {
                let got = s.node(n.mac).await.unwrap();
                assert_eq!(got.map(|g| g.token), Some(n.token.clone()), "{}", n.mac);
            }
            for l in &acked {
                assert_eq!(s.lease_at(l.ip).await.unwrap().as_ref(), Some(l));
            }

            // Full again, without a restart this time: what failed is kept
            // and retried by the writer as soon as the disk has room.
            let n = Node::discovered(mac(4), "discovery", "a4".into(), Timestamp(now));
            done.push(s.create_node_if_absent(n).await.unwrap().0);
            disk.fill();
            let edit = s
                .update_node(
                    mac(1),
                    Box::new(|n| {
                        n.labels.insert("rack".into(), "r2".into());
                        Ok(())
                    }),
                )
                .await;
            assert!(edit.unwrap_err().is_unsaved());
            assert!(s.delete_node(mac(2)).await.unwrap_err().is_unsaved());
            assert!(s.sync().await.is_err());
            assert!(s.health().unsaved > 0);
            disk.free();
            until_saved(&s).await;
            s.sync().await.unwrap();
        }
        let s = SqliteStore::open(disk.path()).await.unwrap();
        assert_eq!(s.node(mac(4)).await.unwrap().unwrap().token, "a4");
        let n1 = s.node(mac(1)).await.unwrap().unwrap();
        assert_eq!(n1.labels.get("rack").map(String::as_str), Some("r2"));
        assert!(
            s.node(mac(2)).await.unwrap().is_none(),
            "the retried delete"
        );
        assert_eq!(s.health(), StoreHealth::default());
    }

    #[tokio::test]
    async fn leases_only_the_journal_holds_are_replayed_at_open() {
        let dir = tempfile::tempdir().unwrap();
        {
            let s = SqliteStore::open(dir.path()).await.unwrap();
            let n = Node::discovered(mac(1), "discovery", "t".into(), Timestamp(0));
            s.create_node_if_absent(n).await.unwrap();
            s.allocate(&req(mac(1), 0)).await.unwrap().unwrap();
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        // What a process killed right after two ACKs and a release leaves:
        // a sealed segment it had not committed, and the current one with a
        // line it was still writing.
        std::fs::write(
            dir.path().join("leases.journal.5"),
            "put 10.0.0.11 52:54:00:00:00:02 bound 3600000\n\
             put 10.0.0.12 52:54:00:00:00:03 bound 3600000\n",
        )
        .unwrap();
        std::fs::write(
            dir.path().join("leases.journal.6"),
            "drop 10.0.0.10\nput 10.0.0.10 52:54:00:00:00:04 bou",
        )
        .unwrap();
        let s = SqliteStore::open(dir.path()).await.unwrap();
        let holder = |ip: &str| {
            let s = &s;
            let ip = ip.parse().unwrap();
            async move { s.lease_at(ip).await.unwrap().and_then(|l| l.mac) }
        };
        assert_eq!(
            holder("10.0.0.10").await,
            None,
            "released, then a torn line"
        );
        assert_eq!(holder("10.0.0.11").await, Some(mac(2)));
        assert_eq!(holder("10.0.0.12").await, Some(mac(3)));
        assert!(!dir.path().join("leases.journal.5").exists());
        assert!(!dir.path().join("leases.journal.6").exists());
        assert_eq!(
            std::fs::read_to_string(dir.path().join("leases.journal.0")).unwrap(),
            ""
        );
    }

    #[tokio::test]
    async fn events_are_bounded_per_node_oldest_dropped_first() {
        let s = SqliteStore::in_memory().await.unwrap();
        for i in 0..(EVENTS_PER_NODE + 5) {
            let e = said(Timestamp(i), &format!("{i}"));
            s.add_event(mac(1), &e).await.unwrap();
        }
        s.add_event(mac(2), &said(Timestamp(0), "")).await.unwrap();
        let ev = s.events(mac(1)).await.unwrap();
        assert_eq!(ev.len() as i64, EVENTS_PER_NODE);
        assert_eq!(ev[0].sentence(), "5");
        assert_eq!(s.events(mac(2)).await.unwrap().len(), 1);
    }

    fn report(i: i64) -> ScriptReport {
        ScriptReport {
            at: Timestamp(i),
            generation: 1,
            script: format!("{i:02}-s.sh"),
            status: (i % 3) as i32,
            duration_ms: (i % 2 == 0).then_some(i as u64 * 10),
            output: format!("out {i}"),
        }
    }

    #[tokio::test]
    async fn reports_are_durable_bounded_and_count_what_was_dropped() {
        let dir = tempfile::tempdir().unwrap();
        {
            let s = SqliteStore::open(dir.path()).await.unwrap();
            let nodes = [mac(1), mac(2)].map(|m| {
                let mut n = Node::discovered(m, "discovery", format!("t{m}"), Timestamp(0));
                n.hostname = format!("n{m}");
                n
            });
            s.put_nodes(nodes.to_vec()).await.unwrap();
            let err = s.add_report(mac(7), &report(0)).await.unwrap_err();
            assert!(err.is_no_such_node(), "{err}");
            for i in 0..(REPORTS_PER_NODE + 3) {
                s.add_report(mac(1), &report(i)).await.unwrap();
            }
            s.add_report(mac(2), &report(0)).await.unwrap();
            let (kept, dropped) = s.reports(mac(1)).await.unwrap();
            assert_eq!((kept.len() as i64, dropped), (REPORTS_PER_NODE, 3));
            assert_eq!(kept[0], report(3), "oldest dropped first");
            assert_eq!(kept.last(), Some(&report(REPORTS_PER_NODE + 2)));
            // Durable on return: nothing is synced before the store closes.
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        let s = SqliteStore::open(dir.path()).await.unwrap();
        let (kept, dropped) = s.reports(mac(1)).await.unwrap();
        assert_eq!((kept.len() as i64, dropped), (REPORTS_PER_NODE, 3));
        assert_eq!(s.reports(mac(2)).await.unwrap(), (vec![report(0)], 0));
        assert_eq!(s.reports(mac(9)).await.unwrap(), (vec![], 0));
        // A deleted node takes its reports and its drop count along.
        assert!(s.delete_node(mac(1)).await.unwrap());
        assert_eq!(s.reports(mac(1)).await.unwrap(), (vec![], 0));
    }

    #[tokio::test]
    async fn a_deleted_node_takes_its_timeline_along() {
        let s = SqliteStore::in_memory().await.unwrap();
        let n = Node::discovered(mac(1), "discovery", "t".into(), Timestamp(0));
        s.create_node_if_absent(n).await.unwrap();
        let e = said(Timestamp(1), "old");
        s.add_event(mac(1), &e).await.unwrap();
        // Read back: committed to the file before the delete.
        assert_eq!(s.events(mac(1)).await.unwrap().len(), 1);
        assert!(s.delete_node(mac(1)).await.unwrap());
        assert_eq!(s.events(mac(1)).await.unwrap(), vec![]);
    }

    #[tokio::test]
    async fn config_generations_bump_all_or_none_and_survive_reopening() {
        let dir = tempfile::tempdir().unwrap();
        {
            let s = SqliteStore::open(dir.path()).await.unwrap();
            let nodes = [mac(1), mac(2), mac(3)]
                .map(|m| Node::discovered(m, "discovery", format!("t{m}"), Timestamp(0)));
            s.put_nodes(nodes.to_vec()).await.unwrap();
            assert_eq!(
                s.bump_config_generation(&[mac(1), mac(2), mac(1)])
                    .await
                    .unwrap(),
                [(mac(1), 1), (mac(2), 1)]
            );
            assert_eq!(
                s.bump_config_generation(&[mac(2)]).await.unwrap(),
                [(mac(2), 2)]
            );
            let err = s
                .bump_config_generation(&[mac(3), mac(8)])
                .await
                .unwrap_err();
            assert!(err.is_no_such_node(), "{err}");
            assert_eq!(s.node(mac(3)).await.unwrap().unwrap().config_generation, 0);
            // A later lazy write of the record (a touch) keeps the bump.
            s.touch_node(mac(2), None, Timestamp(120_000))
                .await
                .unwrap();
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        let s = SqliteStore::open(dir.path()).await.unwrap();
        let gens: Vec<u64> = s
            .nodes()
            .await
            .unwrap()
            .iter()
            .map(|n| n.config_generation)
            .collect();
        assert_eq!(gens, [1, 2, 0]);
    }

    /// A store made before config generations and reports existed opens, and
    /// its nodes start at generation 0.
    #[tokio::test]
    async fn an_older_store_is_upgraded_in_place() {
        let dir = tempfile::tempdir().unwrap();
        {
            let conn = Connection::open(dir.path().join("rackboot.db")).unwrap();
            conn.execute_batch(
                "CREATE TABLE nodes (mac TEXT PRIMARY KEY NOT NULL, hostname TEXT NOT NULL UNIQUE COLLATE NOCASE, \
                 ipv4 INTEGER UNIQUE, labels TEXT NOT NULL DEFAULT '{}', params TEXT NOT NULL DEFAULT '{}', \
                 bootenv TEXT NOT NULL, next_bootenv TEXT, bootenv_expires INTEGER, protected INTEGER NOT NULL DEFAULT 0, \
                 state TEXT NOT NULL, state_reason TEXT, arch TEXT, last_seen INTEGER, token TEXT NOT NULL, \
                 created INTEGER NOT NULL); \
                 INSERT INTO nodes (mac, hostname, bootenv, state, token, created) \
                 VALUES ('52:54:00:00:00:01', 'old', 'discovery', 'configured', 't', 0);",
            )
            .unwrap();
        }
        let s = SqliteStore::open(dir.path()).await.unwrap();
        let n = s.node(mac(1)).await.unwrap().unwrap();
        assert_eq!((n.hostname.as_str(), n.config_generation), ("old", 0));
        assert_eq!(
            s.bump_config_generation(&[mac(1)]).await.unwrap(),
            [(mac(1), 1)]
        );
        s.add_report(mac(1), &report(1)).await.unwrap();
        assert_eq!(s.reports(mac(1)).await.unwrap().0.len(), 1);
    }

    /// A store made before events had data keeps its timelines: each old
    /// event is a note of its kind and its sentence, in order; which
    /// bootenv each node last booted is read once from its last boot script
    /// event; new events carry data, also after a restart.
    #[tokio::test]
    async fn timelines_from_before_events_had_data_are_kept_as_notes() {
        let dir = tempfile::tempdir().unwrap();
        {
            let conn = Connection::open(dir.path().join("rackboot.db")).unwrap();
            conn.execute_batch(&format!(
                "CREATE TABLE nodes (mac TEXT PRIMARY KEY NOT NULL, hostname TEXT NOT NULL UNIQUE COLLATE NOCASE, \
                 ipv4 INTEGER UNIQUE, labels TEXT NOT NULL DEFAULT '{{}}', params TEXT NOT NULL DEFAULT '{{}}', \
                 bootenv TEXT NOT NULL, next_bootenv TEXT, bootenv_expires INTEGER, protected INTEGER NOT NULL DEFAULT 0, \
                 state TEXT NOT NULL, state_reason TEXT, arch TEXT, last_seen INTEGER, token TEXT NOT NULL, \
                 created INTEGER NOT NULL); \
                 INSERT INTO nodes (mac, hostname, bootenv, state, token, created) VALUES \
                 ('52:54:00:00:00:01', 'a', 'discovery', 'booting', 't', 0), \
                 ('52:54:00:00:00:02', 'b', 'discovery', 'booting', 't', 0); \
                 CREATE TABLE timeline (mac INTEGER NOT NULL, seq INTEGER NOT NULL, at INTEGER NOT NULL, \
                 kind TEXT NOT NULL, detail TEXT NOT NULL, PRIMARY KEY (mac, seq)) WITHOUT ROWID; \
                 CREATE TABLE counters (name TEXT PRIMARY KEY NOT NULL, value INTEGER NOT NULL) WITHOUT ROWID; \
                 INSERT INTO counters VALUES ('timeline_seq', 5); \
                 INSERT INTO timeline VALUES \
                 ({a}, 1, 10, 'http.script', 'bootenv discovery, arch bios'), \
                 ({a}, 2, 20, 'http.script', 'bootenv rescue, arch x86_64_efi, once'), \
                 ({b}, 3, 25, 'http.script', 'a boot script, said otherwise'), \
                 ({a}, 4, 30, 'http.kernel', 'x86_64/vmlinuz'), \
                 ({a}, 5, 40, 'bootenv.changed', 'rescue once, then discovery -> discovery: rescue was booted once');",
                a = mac_key(mac(1)),
                b = mac_key(mac(2)),
            ))
            .unwrap();
        }
        let notes = |ev: &[Event]| {
            ev.iter()
                .map(|e| match &e.data {
                    EventData::Note { of, text } => (e.at.millis(), of.as_str(), text.clone()),
                    other => panic!("not a note: {other:?}"),
                })
                .collect::<Vec<_>>()
        };
        let kernel = Event::new(
            Timestamp(50),
            EventData::HttpKernel {
                path: "x86_64/vmlinuz".into(),
                range: None,
            },
        );
        {
            let s = SqliteStore::open(dir.path()).await.unwrap();
            let ev = s.events(mac(1)).await.unwrap();
            assert_eq!(
                notes(&ev),
                [
                    (
                        10,
                        "http.script",
                        "bootenv discovery, arch bios".to_string()
                    ),
                    (
                        20,
                        "http.script",
                        "bootenv rescue, arch x86_64_efi, once".to_string()
                    ),
                    (30, "http.kernel", "x86_64/vmlinuz".to_string()),
                    (
                        40,
                        "bootenv.changed",
                        "rescue once, then discovery -> discovery: rescue was booted once"
                            .to_string()
                    ),
                ]
            );
            assert_eq!(ev[2].sentence(), "x86_64/vmlinuz");
            let a = s.node(mac(1)).await.unwrap().unwrap();
            assert_eq!(a.booted_bootenv.as_deref(), Some("rescue"));
            // A sentence of another shape names no bootenv: nothing is made up.
            let b = s.node(mac(2)).await.unwrap().unwrap();
            assert_eq!(b.booted_bootenv, None);
            s.add_event(mac(1), &kernel).await.unwrap();
            s.sync().await.unwrap();
        }
        let s = SqliteStore::open(dir.path()).await.unwrap();
        let ev = s.events(mac(1)).await.unwrap();
        assert_eq!(ev.len(), 5);
        assert_eq!(ev[4], kernel, "after the old ones, with its data");
        assert_eq!(notes(&ev[..4]).len(), 4);
        assert_eq!(notes(&s.events(mac(2)).await.unwrap()).len(), 1);
    }

    /// A store whose timelines are in the old `events` table (TEXT MAC, an
    /// index beside it) keeps them, in order, and later events follow them,
    /// also after a restart.
    #[tokio::test]
    async fn old_timelines_move_to_the_timeline_table_in_order() {
        let dir = tempfile::tempdir().unwrap();
        {
            let conn = Connection::open(dir.path().join("rackboot.db")).unwrap();
            conn.execute_batch(
                "CREATE TABLE events (id INTEGER PRIMARY KEY AUTOINCREMENT, mac TEXT NOT NULL, \
                 at INTEGER NOT NULL, kind TEXT NOT NULL, detail TEXT NOT NULL); \
                 CREATE INDEX events_by_mac ON events(mac, id); \
                 INSERT INTO events (mac, at, kind, detail) VALUES \
                 ('52:54:00:00:00:01', 5, 'dhcp.ack', 'first'), \
                 ('52:54:00:00:00:02', 6, 'dhcp.ack', 'other node'), \
                 ('52:54:00:00:00:01', 4, 'tftp.sent', 'second, clock stepped back'), \
                 ('not a mac', 7, 'dhcp.ack', 'dropped');",
            )
            .unwrap();
        }
        let details = |ev: Vec<Event>| ev.iter().map(Event::sentence).collect::<Vec<_>>();
        {
            let s = SqliteStore::open(dir.path()).await.unwrap();
            assert_eq!(
                details(s.events(mac(1)).await.unwrap()),
                ["first", "second, clock stepped back"]
            );
            assert_eq!(details(s.events(mac(2)).await.unwrap()), ["other node"]);
            let e = said(Timestamp(1), "third");
            s.add_event(mac(1), &e).await.unwrap();
            s.sync().await.unwrap();
        }
        let s = SqliteStore::open(dir.path()).await.unwrap();
        let e = said(Timestamp(0), "fourth, after a restart");
        s.add_event(mac(1), &e).await.unwrap();
        assert_eq!(
            details(s.events(mac(1)).await.unwrap()),
            [
                "first",
                "second, clock stepped back",
                "third",
                "fourth, after a restart"
            ]
        );
    }
}
