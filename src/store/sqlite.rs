//! The embedded store engine: one SQLite file in the state directory, in WAL
//! mode, so nothing has to be installed or started.
//!
//! Reads are served from memory: node records and leases are loaded at open
//! and kept in step with every write, so a DHCP storm never waits on a query.
//! Writes go through one writer task that commits whatever has queued up in a
//! single transaction (group commit): under load one commit carries hundreds
//! of leases. Callers that promise something to a client (an ACK, a new node
//! record) wait for their write's commit; with WAL a committed transaction
//! survives the process being killed. One process owns the state directory
//! (an exclusive lock), so memory and file cannot disagree.

use std::collections::{BTreeMap, HashMap};
use std::net::Ipv4Addr;
use std::path::Path;
use std::str::FromStr;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use async_trait::async_trait;
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteRow,
    SqliteSynchronous,
};
use sqlx::{QueryBuilder, Row, Sqlite};
use tokio::sync::{mpsc, oneshot};

use super::{EVENTS_PER_NODE, LeaseRequest, NodeEdit, NodesEdit, Store, StoreError};
use crate::model::{
    BootArch, Event, EventKind, Lease, LeaseState, Mac, Node, NodeState, Timestamp,
};

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
    arch            TEXT,
    last_seen       INTEGER,
    token           TEXT NOT NULL,
    created         INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS leases (
    ip      INTEGER PRIMARY KEY NOT NULL,
    mac     TEXT,
    state   TEXT NOT NULL,
    expires INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS leases_by_mac ON leases(mac);
CREATE TABLE IF NOT EXISTS events (
    id     INTEGER PRIMARY KEY AUTOINCREMENT,
    mac    TEXT NOT NULL,
    at     INTEGER NOT NULL,
    kind   TEXT NOT NULL,
    detail TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS events_by_mac ON events(mac, id);
"#;

pub struct SqliteStore {
    pool: SqlitePool,
    cache: Arc<Mutex<Cache>>,
    writer: mpsc::Sender<Write>,
    /// Held for the life of the store: the exclusive lock on the state directory.
    _lock: Option<nix::fcntl::Flock<std::fs::File>>,
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
        self.nodes.insert(node.mac, node);
    }

    fn remove_node(&mut self, mac: Mac) -> Option<Node> {
        let old = self.nodes.remove(&mac)?;
        if self.by_hostname.get(&old.hostname.to_ascii_lowercase()) == Some(&mac) {
            self.by_hostname.remove(&old.hostname.to_ascii_lowercase());
        }
        if let Some(ip) = old.ipv4 {
            if self.by_fixed_ip.get(&ip) == Some(&mac) {
                self.by_fixed_ip.remove(&ip);
            }
        }
        self.events_since_trim.remove(&mac);
        self.seen_saved.remove(&mac);
        Some(old)
    }

    /// Why `node` cannot be stored beside the records of every MAC not in
    /// `replaced`: its hostname or fixed address belongs to one of them.
    fn clash(&self, node: &Node, replaced: &dyn Fn(Mac) -> bool) -> Option<String> {
        if let Some(other) = self.by_hostname.get(&node.hostname.to_ascii_lowercase()) {
            if *other != node.mac && !replaced(*other) {
                return Some(format!(
                    "hostname {} already belongs to {other}",
                    node.hostname
                ));
            }
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
            if let Some(ip) = n.ipv4 {
                if let Some(other) = addrs.insert(ip, n.mac) {
                    return Err(StoreError::Conflict(format!(
                        "address {ip} is given to both {other} and {}",
                        n.mac
                    )));
                }
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
        if let Some(old) = self.leases.get(&ip) {
            if let Some(m) = old.mac {
                if self.lease_of.get(&m) == Some(&ip) {
                    self.lease_of.remove(&m);
                }
            }
        }
        if let Some(m) = lease.mac {
            self.lease_of.insert(m, ip);
        }
        self.leases.insert(ip, lease);
    }

    fn drop_lease(&mut self, ip: u32) -> Option<Lease> {
        let old = self.leases.remove(&ip)?;
        if let Some(m) = old.mac {
            if self.lease_of.get(&m) == Some(&ip) {
                self.lease_of.remove(&m);
            }
        }
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

/// One change for the writer task.
enum Write {
    Node(Box<Node>),
    /// Records written in the same transaction (one message is never split),
    /// whose hostnames and fixed addresses may have moved between them.
    Nodes(Vec<Node>),
    /// Delete the record and its timeline.
    DeleteNode(Mac),
    Lease(Lease),
    DropLease(Ipv4Addr),
    Event(Mac, Event),
    /// Trim the MAC's timeline to the newest [`EVENTS_PER_NODE`].
    Trim(Mac),
    /// Answered once everything queued before it is committed.
    Flush(oneshot::Sender<Result<(), String>>),
}

/// Writes queued before the writer catches up; past this, writers wait.
const WRITE_QUEUE: usize = 65_536;
/// Most changes one transaction carries.
const BATCH: usize = 4096;
/// How stale the stored last-seen time may get before a touch writes it.
const LAST_SEEN_GRAIN_MS: i64 = 60_000;
/// Timelines are trimmed after this many new events per node.
const TRIM_EVERY: i64 = 50;

fn db(op: &'static str) -> impl FnOnce(sqlx::Error) -> StoreError {
    move |source| StoreError::Database { op, source }
}

impl SqliteStore {
    /// Opens (creating if needed) `rackboot.db` in `state_dir`, taking an
    /// exclusive lock on the directory.
    pub async fn open(state_dir: &Path) -> Result<SqliteStore, StoreError> {
        let path = state_dir.join("rackboot.db");
        let open_err = |source| StoreError::Open {
            path: path.clone(),
            source,
        };
        std::fs::create_dir_all(state_dir).map_err(|e| open_err(sqlx::Error::Io(e)))?;
        let lock = lock_dir(state_dir)?;
        let options = SqliteConnectOptions::new()
            .filename(&path)
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            // WAL + NORMAL survives a process crash (kill -9) without losing
            // committed transactions; only a power loss may drop the last ones.
            .synchronous(SqliteSynchronous::Normal)
            .busy_timeout(Duration::from_secs(5))
            .foreign_keys(true);
        let pool = SqlitePoolOptions::new()
            .max_connections(4)
            .connect_with(options)
            .await
            .map_err(open_err)?;
        SqliteStore::start(pool, Some(lock)).await
    }

    /// A private store in memory, for tests.
    pub async fn in_memory() -> Result<SqliteStore, StoreError> {
        let options = SqliteConnectOptions::from_str("sqlite::memory:")
            .map_err(db("open in-memory database"))?;
        // One connection: each in-memory connection would be its own database.
        let pool = SqlitePoolOptions::new()
            .max_connections(1)
            .connect_with(options)
            .await
            .map_err(db("open in-memory database"))?;
        SqliteStore::start(pool, None).await
    }

    async fn start(
        pool: SqlitePool,
        lock: Option<nix::fcntl::Flock<std::fs::File>>,
    ) -> Result<SqliteStore, StoreError> {
        sqlx::raw_sql(SCHEMA)
            .execute(&pool)
            .await
            .map_err(db("create schema"))?;
        // Columns added after a store was first created (CREATE TABLE IF NOT
        // EXISTS leaves an existing table as it was).
        let columns: Vec<String> =
            sqlx::query_scalar("SELECT name FROM pragma_table_info('nodes')")
                .fetch_all(&pool)
                .await
                .map_err(db("read schema"))?;
        for (column, ty) in [("relay_info", "TEXT"), ("loader", "TEXT")] {
            if !columns.iter().any(|c| c == column) {
                sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
                    "ALTER TABLE nodes ADD COLUMN {column} {ty}"
                )))
                .execute(&pool)
                .await
                .map_err(db("upgrade schema"))?;
            }
        }
        let mut cache = Cache::default();
        let rows = sqlx::query(
            "SELECT mac, hostname, ipv4, labels, params, bootenv, next_bootenv, bootenv_expires, \
             loader, protected, state, state_reason, relay_info, arch, last_seen, token, created FROM nodes",
        )
        .fetch_all(&pool)
        .await
        .map_err(db("load nodes"))?;
        for row in &rows {
            cache.put_node(node_from_row(row)?);
        }
        let rows = sqlx::query("SELECT ip, mac, state, expires FROM leases")
            .fetch_all(&pool)
            .await
            .map_err(db("load leases"))?;
        for row in &rows {
            cache.put_lease(lease_from_row(row)?);
        }
        let (writer, queue) = mpsc::channel(WRITE_QUEUE);
        tokio::spawn(write_loop(pool.clone(), queue));
        Ok(SqliteStore {
            pool,
            cache: Arc::new(Mutex::new(cache)),
            writer,
            _lock: lock,
        })
    }

    fn cache(&self) -> MutexGuard<'_, Cache> {
        // The cache holds no invariant a panicking writer could half-break
        // beyond one entry; keep serving rather than poison every request.
        self.cache.lock().unwrap_or_else(PoisonError::into_inner)
    }

    async fn queue(&self, w: Write) -> Result<(), StoreError> {
        self.writer
            .send(w)
            .await
            .map_err(|_| StoreError::WriterGone)
    }

    /// Waits until every write queued so far is committed.
    async fn flush(&self) -> Result<(), StoreError> {
        let (tx, rx) = oneshot::channel();
        self.queue(Write::Flush(tx)).await?;
        rx.await
            .map_err(|_| StoreError::WriterGone)?
            .map_err(StoreError::Commit)
    }
}

fn lock_dir(state_dir: &Path) -> Result<nix::fcntl::Flock<std::fs::File>, StoreError> {
    let path = state_dir.join("rackboot.lock");
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(|e| StoreError::Open {
            path: path.clone(),
            source: sqlx::Error::Io(e),
        })?;
    nix::fcntl::Flock::lock(file, nix::fcntl::FlockArg::LockExclusiveNonblock)
        .map_err(|_| StoreError::Locked(state_dir.to_path_buf()))
}

/// The writer task: commits whatever has queued, in order, a transaction at a time.
async fn write_loop(pool: SqlitePool, mut queue: mpsc::Receiver<Write>) {
    let mut batch = Vec::with_capacity(BATCH);
    while queue.recv_many(&mut batch, BATCH).await > 0 {
        let mut nodes: HashMap<Mac, Box<Node>> = HashMap::new();
        let mut leases: BTreeMap<u32, Option<Lease>> = BTreeMap::new();
        let mut events = Vec::new();
        let mut trims = Vec::new();
        let mut deletes = Vec::new();
        let mut rekeyed = Vec::new();
        let mut flushes = Vec::new();
        // Later changes of the same record replace earlier ones: one row each.
        for w in batch.drain(..) {
            match w {
                Write::Node(n) => {
                    nodes.insert(n.mac, n);
                }
                Write::Nodes(all) => {
                    for n in all {
                        rekeyed.push(n.mac);
                        nodes.insert(n.mac, Box::new(n));
                    }
                }
                Write::DeleteNode(mac) => {
                    // Deletes run first in the transaction: a record written
                    // again after its delete must survive it.
                    nodes.remove(&mac);
                    events.retain(|(m, _)| *m != mac);
                    trims.retain(|m| *m != mac);
                    deletes.push(mac);
                }
                Write::Lease(l) => {
                    leases.insert(u32::from(l.ip), Some(l));
                }
                Write::DropLease(ip) => {
                    leases.insert(u32::from(ip), None);
                }
                Write::Event(mac, e) => events.push((mac, e)),
                Write::Trim(mac) => trims.push(mac),
                Write::Flush(tx) => flushes.push(tx),
            }
        }
        let result = commit(&pool, deletes, rekeyed, nodes, leases, events, trims)
            .await
            .map_err(|e| e.to_string());
        if let Err(e) = &result {
            tracing::error!(error = %e, "store: cannot commit; these changes are not saved");
        }
        for tx in flushes {
            let _ = tx.send(result.clone());
        }
    }
}

async fn commit(
    pool: &SqlitePool,
    deletes: Vec<Mac>,
    rekeyed: Vec<Mac>,
    nodes: HashMap<Mac, Box<Node>>,
    leases: BTreeMap<u32, Option<Lease>>,
    events: Vec<(Mac, Event)>,
    trims: Vec<Mac>,
) -> Result<(), StoreError> {
    if deletes.is_empty()
        && rekeyed.is_empty()
        && nodes.is_empty()
        && leases.is_empty()
        && events.is_empty()
        && trims.is_empty()
    {
        return Ok(());
    }
    let mut tx = pool
        .begin_with("BEGIN IMMEDIATE")
        .await
        .map_err(db("begin transaction"))?;
    for mac in deletes {
        for sql in [
            "DELETE FROM events WHERE mac = ?",
            "DELETE FROM nodes WHERE mac = ?",
        ] {
            sqlx::query(sql)
                .bind(mac.to_string())
                .execute(&mut *tx)
                .await
                .map_err(db("delete node"))?;
        }
    }
    // Hostnames and fixed addresses are unique per row, and SQLite checks
    // that row by row: records that swap them (an import, an edit) first
    // give theirs up, so no order of the upserts below trips the check.
    for chunk in rekeyed.chunks(1000) {
        let mut q: QueryBuilder<Sqlite> = QueryBuilder::new(
            "UPDATE nodes SET ipv4 = NULL, hostname = char(1) || mac WHERE mac IN (",
        );
        let mut sep = q.separated(", ");
        for mac in chunk {
            sep.push_bind(mac.to_string());
        }
        q.push(")");
        q.build()
            .execute(&mut *tx)
            .await
            .map_err(db("save nodes"))?;
    }
    let nodes: Vec<Box<Node>> = nodes.into_values().collect();
    // SQLite allows 32766 bound values per statement.
    for chunk in nodes.chunks(1000) {
        let mut q: QueryBuilder<Sqlite> = QueryBuilder::new(
            "INSERT INTO nodes (mac, hostname, ipv4, labels, params, bootenv, next_bootenv, \
             bootenv_expires, loader, protected, state, state_reason, relay_info, arch, last_seen, token, created) ",
        );
        q.push_values(chunk, |mut b, n| {
            b.push_bind(n.mac.to_string())
                .push_bind(n.hostname.clone())
                .push_bind(n.ipv4.map(ip_col))
                .push_bind(serde_json::to_string(&n.labels).unwrap_or_else(|_| "{}".into()))
                .push_bind(serde_json::to_string(&n.params).unwrap_or_else(|_| "{}".into()))
                .push_bind(n.bootenv.clone())
                .push_bind(n.next_bootenv.clone())
                .push_bind(n.bootenv_expires.map(Timestamp::millis))
                .push_bind(n.loader.clone())
                .push_bind(n.protected)
                .push_bind(n.state.as_str())
                .push_bind(n.state_reason.clone())
                .push_bind(n.relay_info.clone())
                .push_bind(n.arch.map(BootArch::as_str))
                .push_bind(n.last_seen.map(Timestamp::millis))
                .push_bind(n.token.clone())
                .push_bind(n.created.millis());
        });
        q.push(
            " ON CONFLICT(mac) DO UPDATE SET hostname = excluded.hostname, ipv4 = excluded.ipv4, \
             labels = excluded.labels, params = excluded.params, bootenv = excluded.bootenv, \
             next_bootenv = excluded.next_bootenv, bootenv_expires = excluded.bootenv_expires, \
             loader = excluded.loader, \
             protected = excluded.protected, state = excluded.state, state_reason = excluded.state_reason, \
             relay_info = excluded.relay_info, arch = excluded.arch, last_seen = excluded.last_seen, \
             token = excluded.token",
        );
        q.build()
            .execute(&mut *tx)
            .await
            .map_err(db("save nodes"))?;
    }
    let (upserts, drops): (Vec<_>, Vec<_>) = leases.into_iter().partition(|(_, l)| l.is_some());
    for chunk in drops.chunks(5000) {
        let mut q: QueryBuilder<Sqlite> = QueryBuilder::new("DELETE FROM leases WHERE ip IN (");
        let mut sep = q.separated(", ");
        for (ip, _) in chunk {
            sep.push_bind(*ip as i64);
        }
        q.push(")");
        q.build()
            .execute(&mut *tx)
            .await
            .map_err(db("drop leases"))?;
    }
    let upserts: Vec<Lease> = upserts.into_iter().filter_map(|(_, l)| l).collect();
    for chunk in upserts.chunks(5000) {
        let mut q: QueryBuilder<Sqlite> =
            QueryBuilder::new("INSERT INTO leases (ip, mac, state, expires) ");
        q.push_values(chunk, |mut b, l| {
            b.push_bind(ip_col(l.ip))
                .push_bind(l.mac.map(|m| m.to_string()))
                .push_bind(l.state.as_str())
                .push_bind(l.expires.millis());
        });
        q.push(
            " ON CONFLICT(ip) DO UPDATE SET mac = excluded.mac, state = excluded.state, \
             expires = excluded.expires",
        );
        q.build()
            .execute(&mut *tx)
            .await
            .map_err(db("save leases"))?;
    }
    for chunk in events.chunks(5000) {
        let mut q: QueryBuilder<Sqlite> =
            QueryBuilder::new("INSERT INTO events (mac, at, kind, detail) ");
        q.push_values(chunk, |mut b, (mac, e)| {
            b.push_bind(mac.to_string())
                .push_bind(e.at.millis())
                .push_bind(e.kind.as_str())
                .push_bind(e.detail.clone());
        });
        q.build()
            .execute(&mut *tx)
            .await
            .map_err(db("save events"))?;
    }
    for mac in trims {
        sqlx::query(
            "DELETE FROM events WHERE mac = ?1 AND id <= \
             (SELECT id FROM events WHERE mac = ?1 ORDER BY id DESC LIMIT 1 OFFSET ?2)",
        )
        .bind(mac.to_string())
        .bind(EVENTS_PER_NODE)
        .execute(&mut *tx)
        .await
        .map_err(db("trim events"))?;
    }
    tx.commit().await.map_err(db("commit"))
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

fn node_from_row(row: &SqliteRow) -> Result<Node, StoreError> {
    let mac_s: String = row.try_get("mac").map_err(db("read node"))?;
    let mac = Mac::from_str(&mac_s).map_err(|e| corrupt(&mac_s, e))?;
    let get_s =
        |col: &str| -> Result<String, StoreError> { row.try_get(col).map_err(db("read node")) };
    let labels = serde_json::from_str(&get_s("labels")?).map_err(|e| corrupt(mac, e))?;
    let params = serde_json::from_str(&get_s("params")?).map_err(|e| corrupt(mac, e))?;
    let state_s = get_s("state")?;
    let arch: Option<String> = row.try_get("arch").map_err(db("read node"))?;
    Ok(Node {
        mac,
        hostname: get_s("hostname")?,
        ipv4: row
            .try_get::<Option<i64>, _>("ipv4")
            .map_err(db("read node"))?
            .map(ip_of),
        labels,
        params,
        bootenv: get_s("bootenv")?,
        next_bootenv: row.try_get("next_bootenv").map_err(db("read node"))?,
        bootenv_expires: row
            .try_get::<Option<i64>, _>("bootenv_expires")
            .map_err(db("read node"))?
            .map(Timestamp),
        loader: row.try_get("loader").map_err(db("read node"))?,
        protected: row.try_get("protected").map_err(db("read node"))?,
        state: NodeState::from_str(&state_s).map_err(|e| corrupt(mac, e))?,
        state_reason: row.try_get("state_reason").map_err(db("read node"))?,
        relay_info: row.try_get("relay_info").map_err(db("read node"))?,
        arch: arch
            .map(|a| BootArch::from_str(&a))
            .transpose()
            .map_err(|e| corrupt(mac, e))?,
        last_seen: row
            .try_get::<Option<i64>, _>("last_seen")
            .map_err(db("read node"))?
            .map(Timestamp),
        token: get_s("token")?,
        created: Timestamp(row.try_get("created").map_err(db("read node"))?),
    })
}

fn lease_from_row(row: &SqliteRow) -> Result<Lease, StoreError> {
    let ip = ip_of(row.try_get("ip").map_err(db("read lease"))?);
    let mac: Option<String> = row.try_get("mac").map_err(db("read lease"))?;
    let state: String = row.try_get("state").map_err(db("read lease"))?;
    Ok(Lease {
        ip,
        mac: mac
            .map(|m| Mac::from_str(&m))
            .transpose()
            .map_err(|e| corrupt(ip, e))?,
        state: LeaseState::from_str(&state).map_err(|e| corrupt(ip, e))?,
        expires: Timestamp(row.try_get("expires").map_err(db("read lease"))?),
    })
}

#[async_trait]
impl Store for SqliteStore {
    async fn sync(&self) -> Result<(), StoreError> {
        self.flush().await
    }

    async fn node(&self, mac: Mac) -> Result<Option<Node>, StoreError> {
        Ok(self.cache().nodes.get(&mac).cloned())
    }

    async fn create_node_if_absent(&self, node: Node) -> Result<(Node, bool), StoreError> {
        {
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
            c.put_node(node.clone());
        }
        self.queue(Write::Node(Box::new(node.clone()))).await?;
        // A new record is a promise to the node (its token is in its script): durable first.
        self.flush().await?;
        Ok((node, true))
    }

    async fn nodes(&self) -> Result<Vec<Node>, StoreError> {
        let mut all: Vec<Node> = self.cache().nodes.values().cloned().collect();
        all.sort_by_key(|n| n.mac);
        Ok(all)
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
        if self.cache().remove_node(mac).is_none() {
            return Ok(false);
        }
        self.queue(Write::DeleteNode(mac)).await?;
        self.flush().await?;
        Ok(true)
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
        self.queue(Write::Node(Box::new(node))).await
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
        self.queue(Write::Node(Box::new(node))).await
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
        self.flush().await?;
        let rows = sqlx::query(
            "SELECT at, kind, detail FROM (SELECT id, at, kind, detail FROM events WHERE mac = ? \
             ORDER BY id DESC LIMIT ?) ORDER BY id",
        )
        .bind(mac.to_string())
        .bind(EVENTS_PER_NODE)
        .fetch_all(&self.pool)
        .await
        .map_err(db("list events"))?;
        rows.iter()
            .map(|r| {
                let kind: String = r.try_get("kind").map_err(db("read event"))?;
                Ok(Event {
                    at: Timestamp(r.try_get("at").map_err(db("read event"))?),
                    kind: EventKind::from_str(&kind).map_err(|e| corrupt(mac, e))?,
                    detail: r.try_get("detail").map_err(db("read event"))?,
                })
            })
            .collect()
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
                chosen = current
                    .into_iter()
                    .chain(req.wanted)
                    .find(|ip| in_range(*ip) && !c.taken_by_other(*ip, req.mac, now));
                for &(first, last) in &req.ranges {
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
        if let Some(old) = dropped {
            self.queue(Write::DropLease(old)).await?;
        }
        self.queue(Write::Lease(lease.clone())).await?;
        if lease.state == LeaseState::Bound {
            // An ACK promises the address: it must survive a crash before it is sent.
            self.flush().await?;
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
            self.queue(Write::DropLease(ip)).await?;
            self.flush().await?;
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
        self.queue(Write::Lease(lease)).await?;
        self.flush().await
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

    fn mac(n: u8) -> Mac {
        Mac::new([0x52, 0x54, 0, 0, 0, n])
    }

    fn req(m: Mac, now: i64) -> LeaseRequest {
        LeaseRequest {
            mac: m,
            ranges: vec![("10.0.0.10".parse().unwrap(), "10.0.0.12".parse().unwrap())],
            fixed: None,
            wanted: None,
            state: LeaseState::Bound,
            expires: Timestamp(now + 3_600_000),
            now: Timestamp(now),
        }
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
            s.add_event(
                mac(2),
                &Event {
                    at: Timestamp(2),
                    kind: EventKind::DhcpAck,
                    detail: "10.0.0.2".into(),
                },
            )
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
            s.add_event(
                mac(1),
                &Event {
                    at: Timestamp(1),
                    kind: EventKind::DhcpAck,
                    detail: "x".into(),
                },
            )
            .await
            .unwrap();
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

    #[tokio::test]
    async fn events_are_bounded_per_node_oldest_dropped_first() {
        let s = SqliteStore::in_memory().await.unwrap();
        for i in 0..(EVENTS_PER_NODE + 5) {
            let e = Event {
                at: Timestamp(i),
                kind: EventKind::DhcpAck,
                detail: format!("{i}"),
            };
            s.add_event(mac(1), &e).await.unwrap();
        }
        s.add_event(
            mac(2),
            &Event {
                at: Timestamp(0),
                kind: EventKind::TftpSent,
                detail: String::new(),
            },
        )
        .await
        .unwrap();
        let ev = s.events(mac(1)).await.unwrap();
        assert_eq!(ev.len() as i64, EVENTS_PER_NODE);
        assert_eq!(ev[0].detail, "5");
        assert_eq!(s.events(mac(2)).await.unwrap().len(), 1);
    }
}
