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
//! record, is made durable by the journal instead (see [`journal`]):
//! one append, no hand-over to the writer thread per ACK. One process owns
//! the state directory (an exclusive lock), so memory and file cannot
//! disagree.
//!
//! A commit that fails (a full disk) loses nothing: its changes stay with
//! the writer, in order, and every later commit carries them again until one
//! succeeds (at least once a second). Meanwhile whoever waits on a write is
//! told it is not saved, journal segments are kept for replay, and
//! [`Store::health`] counts what is waiting.

pub(crate) mod journal;
mod migrate;
mod replay;
mod rows;
mod schema;
mod writer;

use std::net::Ipv4Addr;
use std::os::unix::fs::{DirBuilderExt as _, OpenOptionsExt as _};
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use async_trait::async_trait;
use rusqlite::Connection;
use tokio::sync::oneshot;

use self::journal::{Change, Journal, SyncMode, Syncer, Ticket};
use self::rows::{NODE_COLUMNS, db, lease_from_row, node_from_row};
use self::writer::{Sealer, Write, WriteQueue, write_loop, write_of};
use super::feed;
use super::mirror::Mirror;
use super::{
    Edited, LeaseRequest, NodeEdit, NodeQuery, NodesEdit, RolloutEdit, Store, StoreError,
    StoreHealth, Written,
};
use crate::boot::address::{self, Candidate};
use crate::model::{
    BootArch, Event, Lease, LeaseState, Mac, Node, NodeState, Rollout, ScriptReport, Timestamp,
};

pub struct SqliteStore {
    cache: Arc<Mutex<Mirror>>,
    /// The mirror's feed, for the changes that need not be emitted under
    /// the mirror's lock (a timeline entry: one per packet of a boot).
    feed: Arc<feed::Feed>,
    /// Every rollout, oldest first, as committed (or queued to be): edits
    /// run under this lock and queue their write before it is released, so
    /// two edits of one rollout land in the order they were made.
    rollouts: Mutex<Vec<Rollout>>,
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

/// Timelines are trimmed after this many new events per node.
const TRIM_EVERY: i64 = 50;

/// How much lower than the rest of rackboot the writer thread runs (nice
/// levels; at most 19).
const WRITER_NICE: libc::c_int = 10;

/// Lowers the calling thread (the writer) below the threads that answer
/// clients. Nothing a client waits for waits on the writer: new records
/// and leases are journaled first and committed to the file later. But at an
/// even share of a busy core, its commits into a large file (tens of
/// milliseconds with a million records) held the DHCP worker off long
/// enough for replies to leave in bursts that overflowed clients' receive
/// buffers. Lower, it gives way whenever a packet waits and commits in the
/// gaps, in larger batches. Failing to lower it costs only that.
fn yield_to_answers() {
    // SAFETY: gettid, getpriority and setpriority take no pointers; a
    // thread's ID names the thread alone for PRIO_PROCESS on Linux.
    unsafe {
        let tid = libc::gettid() as libc::id_t;
        *libc::__errno_location() = 0;
        let now = libc::getpriority(libc::PRIO_PROCESS, tid);
        if now == -1 && *libc::__errno_location() != 0 {
            return;
        }
        let lower = (now + WRITER_NICE).min(19);
        if libc::setpriority(libc::PRIO_PROCESS, tid, lower) != 0 {
            tracing::debug!(
                error = %std::io::Error::last_os_error(),
                "store: the writer thread runs at rackboot's own priority"
            );
        }
    }
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
        let open_err = |e: rusqlite::Error| StoreError::Open {
            path: path.clone(),
            fault: rows::fault(&e),
            cause: e.to_string(),
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
        conn.execute_batch(schema::SCHEMA)
            .map_err(db("create schema"))?;
        migrate::upgrade(&conn)?;
        let seq = rows::timeline_seq(&conn)?;
        // Leases the journal holds and the file may lack, before the cache
        // is loaded from the file.
        let journal = journal_dir
            .map(|dir| replay::replay_journal(&conn, dir))
            .transpose()?;
        let mut cache = Mirror::default();
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
        let rollouts = rows::load_rollouts(&conn)?;
        // The load read the whole file through SQLite's page cache (up to
        // 2 MiB, on the C heap); the mirror now answers every read, and the
        // writer touches a few pages at a time. Handed back, not kept idle.
        conn.execute_batch("PRAGMA shrink_memory")
            .map_err(db("release the page cache after loading"))?;
        crate::memory::trim_c_heap();
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
                yield_to_answers();
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
            feed: cache.feed.clone(),
            cache: Arc::new(Mutex::new(cache)),
            rollouts: Mutex::new(rollouts),
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

    fn cache(&self) -> MutexGuard<'_, Mirror> {
        // The cache holds no invariant a panicking writer could half-break
        // beyond one entry; keep serving rather than poison every request.
        self.cache.lock().unwrap_or_else(PoisonError::into_inner)
    }

    async fn queue(&self, w: Write) -> Result<(), StoreError> {
        self.queue.push(w)
    }

    /// Waits until every write queued so far is committed.
    async fn flush(&self) -> Result<(), StoreError> {
        self.until_written(Write::Flush).await
    }

    /// Queues the write `write` makes of a reply channel, then waits for
    /// the writer's reply: whether what it waits for is on disk.
    async fn until_written(
        &self,
        write: fn(oneshot::Sender<Result<(), String>>) -> Write,
    ) -> Result<(), StoreError> {
        let (tx, rx) = oneshot::channel();
        self.queue(write(tx)).await?;
        rx.await
            .map_err(|_| StoreError::WriterGone)?
            .map_err(unsaved)
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

#[async_trait]
impl Store for SqliteStore {
    fn mirror(&self) -> MutexGuard<'_, Mirror> {
        self.cache()
    }

    async fn sync(&self) -> Result<(), StoreError> {
        self.until_written(Write::Sync).await
    }

    fn health(&self) -> StoreHealth {
        StoreHealth {
            engine: "sqlite",
            reachable: true,
            unsaved: self.health.unsaved.load(Ordering::Relaxed),
            failed_commits: self.health.failed_commits.load(Ordering::Relaxed),
            failed_appends: self.health.failed_appends.load(Ordering::Relaxed),
        }
    }

    async fn create_node_if_absent(&self, node: Node) -> Result<(Node, bool), StoreError> {
        let ticket = {
            let mut c = self.cache();
            if let Some(existing) = c.nodes.get(&node.mac) {
                return Ok((existing, false));
            }
            if let Some(other) = c.nodes.by_hostname(&node.hostname) {
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

    async fn update_node(&self, mac: Mac, edit: NodeEdit) -> Result<Edited, StoreError> {
        let (before, node) = {
            let mut c = self.cache();
            let before = c.nodes.get(&mac).ok_or(StoreError::NoSuchNode(mac))?;
            let mut node = before.clone();
            edit(&mut node).map_err(StoreError::Refused)?;
            // The MAC is the key: an edit cannot move a record to another one.
            node.mac = mac;
            if let Some(why) = c.clash(&node, &|_| false) {
                return Err(StoreError::Conflict(why));
            }
            c.put_node(node.clone());
            (before, node)
        };
        self.queue(Write::Nodes(vec![node.clone()])).await?;
        self.flush().await?;
        Ok(Edited {
            before,
            after: node,
        })
    }

    async fn edit_nodes(&self, edit: NodesEdit) -> Result<Vec<Written>, StoreError> {
        let written = {
            let mut c = self.cache();
            let nodes = edit(&c.nodes).map_err(StoreError::Refused)?;
            let befores: Vec<Option<Node>> = nodes.iter().map(|n| c.nodes.get(&n.mac)).collect();
            c.check_and_put(&nodes)?;
            befores
                .into_iter()
                .zip(nodes)
                .map(|(before, after)| Written { before, after })
                .collect::<Vec<_>>()
        };
        let nodes = written.iter().map(|w| w.after.clone()).collect();
        self.queue(Write::Nodes(nodes)).await?;
        self.flush().await?;
        Ok(written)
    }

    async fn delete_nodes_if(
        &self,
        macs: &[Mac],
        doomed: &NodeQuery,
    ) -> Result<Vec<Mac>, StoreError> {
        let mut deleted = Vec::new();
        {
            let mut c = self.cache();
            for &mac in macs {
                if !c.nodes.get(&mac).is_some_and(|n| doomed.matches(&n)) {
                    continue;
                }
                let Some(old) = c.remove_node(mac) else {
                    continue;
                };
                if let Some(journal) = &self.journal {
                    // Its creation may still be in the journal: replayed
                    // after a crash, it must not bring the record back.
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
        let Some(node) = self.cache().touch(mac, arch, now)? else {
            return Ok(());
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
            c.nodes
                .update(&mac, |n| {
                    n.state = state;
                    n.state_reason = reason.map(str::to_string);
                })
                .ok_or(StoreError::NoSuchNode(mac))?
        };
        self.queue(Write::Node(Box::new(node))).await?;
        self.flush().await
    }

    async fn set_node_relay_info(&self, mac: Mac, info: Option<&str>) -> Result<(), StoreError> {
        let node = {
            let mut c = self.cache();
            let n = c.nodes.get(&mac).ok_or(StoreError::NoSuchNode(mac))?;
            if n.relay_info.as_deref() == info {
                return Ok(());
            }
            c.nodes
                .update(&mac, |n| n.relay_info = info.map(str::to_string))
                .ok_or(StoreError::NoSuchNode(mac))?
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
                if bumped.iter().any(|(m, _)| m == mac) {
                    continue;
                }
                let Some(n) = c.nodes.update(mac, |n| n.config_generation += 1) else {
                    continue;
                };
                bumped.push((*mac, n.config_generation));
                records.push(n.clone());
            }
            // Queued under the cache lock: no other write of these records
            // can land between the bump and its write (and overwrite it with
            // an older copy). One message is one transaction: all or none.
            self.queue.push(Write::Nodes(records))?;
            let macs: Vec<Mac> = bumped.iter().map(|(m, _)| *m).collect();
            c.feed.emit(&feed::Change::ConfigBumped(&macs));
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
        self.feed.emit(&feed::Change::Event(mac, event.at));
        Ok(())
    }

    async fn events(&self, mac: Mac) -> Result<Vec<Event>, StoreError> {
        let (tx, rx) = oneshot::channel();
        self.queue(Write::Events(mac, tx)).await?;
        rx.await
            .map_err(|_| StoreError::WriterGone)?
            .map_err(StoreError::Commit)
    }

    async fn allocate(&self, req: &LeaseRequest) -> Result<Option<Lease>, StoreError> {
        let now = req.now;
        let (lease, dropped) = {
            let mut c = self.cache();
            let ask = c.address_ask(req);
            // Policy orders the candidates; taken here is what no other MAC
            // holds under this lock, so no address goes to two.
            let chosen = {
                let cursors = &c.cursors;
                address::candidates(ask, |r| cursors.get(&r).copied())
                    .find(|cand| !c.taken_by_other(cand.ip, req.mac, now))
            };
            let Some(Candidate { ip, scanned }) = chosen else {
                return Ok(None);
            };
            if let Some(range) = scanned {
                c.cursors.insert(range, address::cursor_after(range, ip));
            }
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

    async fn create_rollout(&self, rollout: &Rollout) -> Result<(), StoreError> {
        {
            let mut all = self.rollouts.lock().unwrap_or_else(PoisonError::into_inner);
            if all.iter().any(|r| r.id == rollout.id) {
                return Err(StoreError::Conflict(format!(
                    "a rollout {} exists",
                    rollout.id
                )));
            }
            all.push(rollout.clone());
            self.queue.push(Write::Rollout(Box::new(rollout.clone())))?;
        }
        self.flush().await
    }

    async fn rollouts(&self) -> Result<Vec<Rollout>, StoreError> {
        Ok(self
            .rollouts
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone())
    }

    async fn edit_rollout(
        &self,
        id: &str,
        edit: RolloutEdit,
    ) -> Result<Option<Rollout>, StoreError> {
        let after = {
            let mut all = self.rollouts.lock().unwrap_or_else(PoisonError::into_inner);
            let Some(r) = all.iter_mut().find(|r| r.id == id) else {
                return Ok(None);
            };
            let mut after = r.clone();
            edit(&mut after).map_err(StoreError::Refused)?;
            *r = after.clone();
            self.queue.push(Write::Rollout(Box::new(after.clone())))?;
            after
        };
        self.flush().await?;
        Ok(Some(after))
    }
}

/// How the store contract battery (`super::contract`) opens this engine
/// and what a crash leaves of it.
#[cfg(test)]
pub(crate) struct Contract;

#[cfg(test)]
impl super::contract::Engine for Contract {
    const APPLIANCE: Option<&'static str> = None;

    async fn open(place: &Path) -> Arc<dyn Store> {
        Arc::new(SqliteStore::open(place).await.unwrap())
    }

    /// What `kill -9` leaves of a running store: its files as the page
    /// cache holds them, copied (a process killed writes nothing more, and a
    /// copy is exactly what the next start would find).
    fn crash(from: &Path, to: &Path) {
        for e in std::fs::read_dir(from).unwrap() {
            let e = e.unwrap();
            if e.file_type().unwrap().is_file() {
                std::fs::copy(e.path(), to.join(e.file_name())).unwrap();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::rows::mac_key;
    use super::*;
    use crate::model::{EventData, NodeOrigin};
    use crate::store::contract::req;
    use crate::store::set_fields;

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

    /// A record from before rackboot kept origins reads as DHCP's only
    /// when it is exactly what DHCP makes (its default hostname, nothing an
    /// admin sets); anything else is an admin's, and never reaped.
    #[tokio::test]
    async fn records_from_before_origins_were_kept_are_dhcps_only_when_bare() {
        let dir = tempfile::tempdir().unwrap();
        {
            let s = SqliteStore::open(dir.path()).await.unwrap();
            for n in 1..=3 {
                let node = Node::discovered(mac(n), "discovery", format!("t{n}"), Timestamp(1));
                s.create_node_if_absent(node).await.unwrap();
            }
            set_fields(&s, mac(2), |n| {
                n.hostname = "builder-2".into();
            })
            .await;
            set_fields(&s, mac(3), |n| {
                n.origin = NodeOrigin::Admin;
            })
            .await;
            s.sync().await.unwrap();
        }
        let conn = Connection::open(dir.path().join("rackboot.db")).unwrap();
        conn.execute("UPDATE nodes SET origin = NULL", []).unwrap();
        drop(conn);
        let s = SqliteStore::open(dir.path()).await.unwrap();
        // 1 is bare; 2 was renamed; 3 is bare again: DHCP's.
        assert_eq!(
            crate::store::contract::origins(&s, 1..=3).await,
            [
                NodeOrigin::Discovered,
                NodeOrigin::Admin,
                NodeOrigin::Discovered
            ]
        );
    }

    #[tokio::test]
    async fn writes_survive_reopening_and_one_process_owns_the_directory() {
        let dir = tempfile::tempdir().unwrap();
        {
            let s = SqliteStore::open(dir.path()).await.unwrap();
            record_and_lease(&s).await;
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
            crate::store::run_for_test(
                std::process::Command::new("mount")
                    .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
                    .arg(dir.path()),
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

    /// Node 1 discovered, and holding a lease.
    async fn record_and_lease(s: &SqliteStore) {
        let n = Node::discovered(mac(1), "discovery", "t".into(), Timestamp(0));
        s.create_node_if_absent(n).await.unwrap();
        s.allocate(&req(mac(1), 0)).await.unwrap().unwrap();
    }

    /// Node 1 moved to `rack`, as an edit (a change the store must keep).
    async fn move_to_rack(s: &SqliteStore, rack: &'static str) -> Result<Edited, StoreError> {
        crate::store::update_fields(s, mac(1), move |n| {
            n.labels.insert("rack".into(), rack.into());
        })
        .await
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
            assert!(move_to_rack(&s, "r1").await.unwrap_err().is_unsaved());
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
            assert!(move_to_rack(&s, "r2").await.unwrap_err().is_unsaved());
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
            record_and_lease(&s).await;
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

    use crate::store::contract::report;

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
