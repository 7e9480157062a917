//! The store: node records, leases and events. One trait, so every engine
//! (embedded SQLite by default) is interchangeable and passes the same tests
//! (`contract`). Nothing of an engine shows here: errors are
//! [`StoreError`]s with predicates, queries are data ([`NodeQuery`]), edits
//! answer with what they did ([`Edited`]).

use std::net::Ipv4Addr;

use async_trait::async_trait;

use crate::model::{
    BootArch, Event, Lease, LeaseState, Mac, Node, NodeState, Rollout, ScriptReport, Timestamp,
};

#[cfg(test)]
mod contract;
pub mod feed;
mod mirror;
pub mod packed;
pub mod postgres;
mod query;
pub mod sparse;
pub mod sqlite;

pub use feed::{Change, Feed, Subscriber};
pub use packed::NodeMap;
pub use postgres::{Copied, PostgresConfig, PostgresStore, copy_site};
pub use query::NodeQuery;
pub use sqlite::SqliteStore;
pub use sqlite::journal::SyncMode;

/// How many events each node keeps; older ones are dropped first.
pub const EVENTS_PER_NODE: i64 = 500;

/// How many config script reports each node keeps; older ones are dropped
/// first and counted (see [`Store::reports`]).
pub const REPORTS_PER_NODE: i64 = 200;

/// Whether an engine's own failure may pass by trying again later. The
/// engine decides when it builds the error (it alone knows its error
/// codes); callers ask [`StoreError::is_unavailable`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// Busy, locked, out of space or memory, an I/O error, a lost
    /// connection: the same request may succeed later.
    Transient,
    /// Anything else (a malformed statement, a corrupt file): waiting will
    /// not help; the log says what failed.
    Permanent,
}

/// What went wrong in the store, engine-neutral: an engine turns its own
/// error into text and a [`Fault`] where it builds one of these. Callers ask
/// the predicates (`is_not_found`, `is_conflict`, ...) rather than match
/// variants.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("store: {op} failed: {cause}")]
    Engine {
        op: &'static str,
        fault: Fault,
        cause: String,
    },
    #[error("store: cannot open {path}: {cause}")]
    Open {
        path: std::path::PathBuf,
        fault: Fault,
        cause: String,
    },
    #[error("store: {path}: {source}")]
    Io {
        path: std::path::PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("store: row for {key} is corrupt: {reason}")]
    Corrupt { key: String, reason: String },
    #[error("store: no node with MAC {0}")]
    NoSuchNode(Mac),
    #[error("store: {0}")]
    Conflict(String),
    /// An edit of a node record refused by the edit itself (e.g. a protected node).
    #[error("{0}")]
    Refused(Refusal),
    #[error(
        "store: the state directory {0} is in use by another rackboot (only one process may own it)"
    )]
    Locked(std::path::PathBuf),
    #[error("store: the writer task has stopped; rackboot is shutting down")]
    WriterGone,
    #[error("store: commit failed: {0}")]
    Commit(String),
    /// A change that could not be made durable (a full or failing disk under
    /// the state directory): whoever asked must not be told it is done.
    #[error("store: not saved: {0}")]
    Unsaved(String),
}

impl StoreError {
    /// The node named does not exist.
    pub fn is_not_found(&self) -> bool {
        matches!(self, StoreError::NoSuchNode(_))
    }

    /// A hostname, fixed address or MAC the change gives one record already
    /// belongs to another (or twice within the change).
    pub fn is_conflict(&self) -> bool {
        matches!(self, StoreError::Conflict(_))
    }

    /// The edit itself refused the change (its message says why); nothing
    /// was written.
    pub fn is_refused(&self) -> bool {
        matches!(self, StoreError::Refused(_))
    }

    /// The change asked for could not be made durable (yet); nothing was
    /// wrong with the request.
    pub fn is_unsaved(&self) -> bool {
        matches!(self, StoreError::Unsaved(_))
    }

    /// The store cannot serve this now but may later (try again): a change
    /// not saved, the writer gone (shutting down), the state directory held
    /// by another process, or an engine failure it called transient.
    pub fn is_unavailable(&self) -> bool {
        match self {
            StoreError::Unsaved(_) | StoreError::WriterGone | StoreError::Locked(_) => true,
            StoreError::Engine { fault, .. } | StoreError::Open { fault, .. } => {
                *fault == Fault::Transient
            }
            _ => false,
        }
    }
}

/// How the store keeps up with saving what it is given, for `/metrics` and
/// `/healthz`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StoreHealth {
    /// `sqlite` or `postgres`.
    pub engine: &'static str,
    /// Whether the store can take writes now (a database reached); reads go
    /// on from memory either way.
    pub reachable: bool,
    /// Changes a commit failed to save, held in memory and retried (0 when
    /// everything is saved).
    pub unsaved: u64,
    /// Commits that failed since start-up.
    pub failed_commits: u64,
    /// Journal appends that failed since start-up.
    pub failed_appends: u64,
}

impl Default for StoreHealth {
    fn default() -> Self {
        StoreHealth {
            engine: "sqlite",
            reachable: true,
            unsaved: 0,
            failed_commits: 0,
            failed_appends: 0,
        }
    }
}

/// Why an edit refused its change: any error (a sentence, or a typed error
/// its caller takes back out with `downcast`), returned as
/// [`StoreError::Refused`].
pub type Refusal = Box<dyn std::error::Error + Send + Sync>;

/// A change to one node record, applied atomically with respect to every
/// other change of that record; `Err` refuses it and nothing is written.
pub type NodeEdit = Box<dyn FnOnce(&mut Node) -> Result<(), Refusal> + Send>;

/// A change to one rollout record, applied atomically with respect to every
/// other change of it (whichever appliance makes it); `Err` refuses it and
/// nothing is written.
pub type RolloutEdit = Box<dyn FnOnce(&mut Rollout) -> Result<(), Refusal> + Send>;

/// A node record as it was before an edit and as the edit left it (what
/// [`Store::update_node`] wrote), so a caller learns what changed from the
/// answer, not from values set aside inside the edit.
#[derive(Debug, Clone, PartialEq)]
pub struct Edited {
    pub before: Node,
    pub after: Node,
}

/// A change to many node records at once: given every record in force (by
/// MAC), the records to write (created or replaced). `Err` refuses the whole
/// change and nothing is written.
pub type NodesEdit = Box<dyn FnOnce(&NodeMap) -> Result<Vec<Node>, Refusal> + Send>;

/// A node record written by [`Store::edit_nodes`]: what it replaced (none
/// for a record made) and what it is now.
#[derive(Debug, Clone, PartialEq)]
pub struct Written {
    pub before: Option<Node>,
    pub after: Node,
}

/// What a lease allocation asks for.
#[derive(Debug, Clone)]
pub struct LeaseRequest {
    pub mac: Mac,
    /// The dynamic ranges, inclusive, searched in order.
    pub ranges: Vec<(Ipv4Addr, Ipv4Addr)>,
    /// The node's fixed address, which wins over everything else.
    pub fixed: Option<Ipv4Addr>,
    /// The address the client asked for (option 50), honoured when free.
    pub wanted: Option<Ipv4Addr>,
    /// Only `wanted` (or the fixed address) will do, nothing else is
    /// picked: a DHCPREQUEST names its address, and the NAK that answers one
    /// that cannot be had must bind nothing.
    pub exact: bool,
    pub state: LeaseState,
    pub expires: Timestamp,
    pub now: Timestamp,
}

#[async_trait]
pub trait Store: Send + Sync + 'static {
    /// Waits until every change made so far is durable (used at shutdown).
    async fn sync(&self) -> Result<(), StoreError>;

    /// Whether everything given to the store is saved, and how often saving
    /// failed.
    fn health(&self) -> StoreHealth {
        StoreHealth::default()
    }

    /// Whether this appliance runs the jobs that must run once among all
    /// appliances sharing the store (the lifecycle sweep: bootenv-lease
    /// reverts, stalled boots, heartbeats, reaping). An engine only one
    /// process can open always does.
    fn leads(&self) -> bool {
        true
    }

    /// The in-memory image of the store every engine keeps and serves its
    /// reads from ([`mirror`]): the reads below are answered from it alike
    /// by every engine. Held briefly; never across an await.
    #[doc(hidden)]
    fn mirror(&self) -> std::sync::MutexGuard<'_, mirror::Mirror>;

    async fn node(&self, mac: Mac) -> Result<Option<Node>, StoreError> {
        Ok(self.mirror().nodes.get(&mac))
    }
    /// Inserts `node` unless a record for its MAC exists; returns the record
    /// in force and whether it was created. A created record is durable on
    /// return (its token may go out in a boot script, a DHCP ACK may follow
    /// at once); when it cannot be made so, nothing is created and the error
    /// is [`StoreError::Unsaved`].
    async fn create_node_if_absent(&self, node: Node) -> Result<(Node, bool), StoreError>;
    async fn nodes(&self) -> Result<Vec<Node>, StoreError> {
        Ok(self.mirror().nodes_where(None))
    }
    /// The records at least one of `any_of` selects, by MAC (none for an
    /// empty slice). For background passes over a large fleet: an engine
    /// runs the queries where the records are (`WHERE q1 OR q2 ...`, or a
    /// scan in memory), so a pass costs a scan, not a copy of every record.
    async fn nodes_where(&self, any_of: &[NodeQuery]) -> Result<Vec<Node>, StoreError> {
        Ok(self.mirror().nodes_where(Some(any_of)))
    }
    /// Applies `edit` to the record of `mac` and returns the record before
    /// and after, durable on return. A hostname or fixed address that
    /// another node holds is a conflict ([`StoreError::is_conflict`]); the
    /// edit's own refusal is [`StoreError::is_refused`].
    async fn update_node(&self, mac: Mac, edit: NodeEdit) -> Result<Edited, StoreError>;
    /// Creates or replaces (by MAC) every record in `nodes` in one
    /// transaction: all of them are written or none is (a whole rack imported
    /// at once). Hostnames and fixed addresses must be unique across the
    /// result.
    async fn put_nodes(&self, nodes: Vec<Node>) -> Result<(), StoreError> {
        self.edit_nodes(Box::new(move |_| Ok(nodes))).await?;
        Ok(())
    }
    /// [`Store::put_nodes`] of the records `edit` makes from the records in
    /// force, read and written as one step: no change to those records
    /// (a state reported by a node, an admin's edit) can fall between the
    /// read and the write and be lost. Returns each record written, in the
    /// order `edit` gave them, with the record it replaced.
    async fn edit_nodes(&self, edit: NodesEdit) -> Result<Vec<Written>, StoreError>;
    /// Deletes the record of `mac` and its timeline; whether it existed. The
    /// MAC's lease stays until it expires: the machine may still be using
    /// the address, and handing it to another would double it.
    async fn delete_node(&self, mac: Mac) -> Result<bool, StoreError> {
        // A query with no condition selects any record.
        let deleted = self.delete_nodes_if(&[mac], &NodeQuery::default()).await?;
        Ok(!deleted.is_empty())
    }
    /// Deletes, in one durable write, each record of `macs` that `doomed`
    /// still selects when its turn comes (a record that changed since the
    /// caller looked is left alone), with its timeline; returns the MACs
    /// deleted. Leases stay, as with [`Store::delete_node`]. For the sweep
    /// that reaps records a flood of made-up MACs left behind.
    async fn delete_nodes_if(
        &self,
        macs: &[Mac],
        doomed: &NodeQuery,
    ) -> Result<Vec<Mac>, StoreError>;
    /// Records that the node was seen now, on `arch` if known.
    async fn touch_node(
        &self,
        mac: Mac,
        arch: Option<BootArch>,
        now: Timestamp,
    ) -> Result<(), StoreError>;
    async fn set_node_state(
        &self,
        mac: Mac,
        state: NodeState,
        reason: Option<&str>,
    ) -> Result<(), StoreError>;

    /// Records where a relayed node is plugged in (option 82).
    async fn set_node_relay_info(&self, mac: Mac, info: Option<&str>) -> Result<(), StoreError>;

    /// Adds one to the config generation of every node in `macs`, in one
    /// durable write (all or none), and returns each one's new generation.
    /// An unknown MAC is [`StoreError::NoSuchNode`] and nothing changes.
    async fn bump_config_generation(&self, macs: &[Mac]) -> Result<Vec<(Mac, u64)>, StoreError>;

    /// Keeps a config script's report, durable on return, dropping the node's
    /// oldest reports beyond [`REPORTS_PER_NODE`] (and counting them).
    async fn add_report(&self, mac: Mac, report: &ScriptReport) -> Result<(), StoreError>;
    /// The node's script reports, oldest first, and how many older ones were
    /// dropped to keep within [`REPORTS_PER_NODE`].
    async fn reports(&self, mac: Mac) -> Result<(Vec<ScriptReport>, u64), StoreError>;

    /// Appends to the node's timeline, dropping its oldest events beyond
    /// [`EVENTS_PER_NODE`].
    async fn add_event(&self, mac: Mac, event: &Event) -> Result<(), StoreError>;
    /// The node's timeline, oldest first.
    async fn events(&self, mac: Mac) -> Result<Vec<Event>, StoreError>;

    async fn lease_of(&self, mac: Mac) -> Result<Option<Lease>, StoreError> {
        Ok(self.mirror().lease_of(mac).cloned())
    }
    async fn lease_at(&self, ip: Ipv4Addr) -> Result<Option<Lease>, StoreError> {
        Ok(self.mirror().leases.get(&u32::from(ip)).cloned())
    }
    async fn leases(&self) -> Result<Vec<Lease>, StoreError> {
        Ok(self.mirror().leases.values().cloned().collect())
    }
    /// Calls `f` with each lease from `first` to `last`, in address order,
    /// reading them where they are kept: a metrics scrape counts a /16's
    /// leases without copying them, and DHCP waits only for the count.
    /// The store is held while `f` runs; keep it to a few comparisons.
    fn visit_leases(&self, first: Ipv4Addr, last: Ipv4Addr, f: &mut dyn FnMut(&Lease)) {
        self.mirror().visit_leases(first, last, f);
    }
    /// Calls `f` with every node record, where the store keeps them (nothing
    /// copied): the console's fleet page counts and sorts a large fleet
    /// without copying it. The store is held while `f` runs; keep it to a
    /// few comparisons a record.
    fn visit_nodes(&self, f: &mut dyn FnMut(&Node)) {
        self.mirror().nodes.values().for_each(|n| f(&n));
    }
    /// The records `selector` matches, by MAC; only those are copied.
    async fn nodes_matching(
        &self,
        selector: &crate::model::LabelSelector,
    ) -> Result<Vec<Node>, StoreError> {
        let mut matched = Vec::new();
        self.visit_nodes(&mut |n| {
            if selector.matches(&n.labels) {
                matched.push(n.clone());
            }
        });
        matched.sort_by_key(|n| n.mac);
        Ok(matched)
    }
    /// Atomically picks and records an address for `req.mac`: its fixed
    /// address, else its current lease, else the wanted address if free, else
    /// the next free address in the ranges, searching on from where the last
    /// search ended (so a released address is not handed out again at once).
    /// `None` when the pool is exhausted. Never hands a live lease or another
    /// node's fixed address to this MAC. A bound lease is durable on return.
    async fn allocate(&self, req: &LeaseRequest) -> Result<Option<Lease>, StoreError>;
    /// Drops the lease of `ip` if `mac` holds it (DHCPRELEASE).
    async fn release(&self, mac: Mac, ip: Ipv4Addr) -> Result<bool, StoreError>;
    /// Takes `ip` out of the pool until `until` (DHCPDECLINE).
    async fn decline(&self, ip: Ipv4Addr, until: Timestamp) -> Result<(), StoreError>;

    /// The address of the node called `hostname`: its fixed address, else its
    /// live bound lease.
    async fn host_addr(
        &self,
        hostname: &str,
        now: Timestamp,
    ) -> Result<Option<Ipv4Addr>, StoreError> {
        Ok(self.mirror().host_addr(hostname, now))
    }
    /// The hostname of the node holding `ip`.
    async fn addr_host(&self, ip: Ipv4Addr, now: Timestamp) -> Result<Option<String>, StoreError> {
        Ok(self.mirror().addr_host(ip, now))
    }
    /// Gives `subscriber` every node record and lease the store holds now, then
    /// [`Change::Loaded`], then every change from here on ([`feed`]), with nothing missed or
    /// given twice between the snapshot and the feed.
    fn subscribe(&self, subscriber: std::sync::Arc<dyn Subscriber>) {
        self.mirror().subscribe(subscriber);
    }
    /// The MAC holding `ip` (to put a TFTP or HTTP fetch on a timeline).
    async fn mac_at(&self, ip: Ipv4Addr, now: Timestamp) -> Result<Option<Mac>, StoreError> {
        Ok(self.mirror().mac_at(ip, now))
    }

    /// Stores a new rollout, durably; a conflict if its id is taken.
    async fn create_rollout(&self, rollout: &Rollout) -> Result<(), StoreError>;
    /// Every rollout, oldest first.
    async fn rollouts(&self) -> Result<Vec<Rollout>, StoreError>;
    /// Changes rollout `id` as `edit` says, durably; the record after it.
    /// `Ok(None)` when there is no such rollout.
    async fn edit_rollout(
        &self,
        id: &str,
        edit: RolloutEdit,
    ) -> Result<Option<Rollout>, StoreError>;
}

/// Sets fields of the record of `mac` through [`Store::update_node`], with
/// an edit that cannot refuse.
pub async fn update_fields<S: Store + ?Sized>(
    s: &S,
    mac: Mac,
    set: impl FnOnce(&mut Node) + Send + 'static,
) -> Result<Edited, StoreError> {
    s.update_node(
        mac,
        Box::new(move |n| {
            set(n);
            Ok(())
        }),
    )
    .await
}

/// The turns of a job that must run once among the appliances sharing a
/// store (see [`Store::leads`]): every `period`, those at which this
/// appliance leads. A late turn is taken late, not twice.
pub struct LeaderTicks {
    tick: tokio::time::Interval,
}

impl LeaderTicks {
    pub fn every(period: std::time::Duration) -> LeaderTicks {
        let mut tick = tokio::time::interval(period);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        LeaderTicks { tick }
    }

    /// Waits for the next tick at which this appliance leads; `false` once
    /// `cancel` fires.
    pub async fn next(
        &mut self,
        store: &dyn Store,
        cancel: &tokio_util::sync::CancellationToken,
    ) -> bool {
        loop {
            tokio::select! {
                _ = cancel.cancelled() => return false,
                _ = self.tick.tick() => {}
            }
            if store.leads() {
                return true;
            }
        }
    }
}

/// Runs `cmd` (openssl, mount) for a test, which fails, with the
/// command's stderr, unless it succeeds.
#[cfg(test)]
pub(crate) fn run_for_test(cmd: &mut std::process::Command) {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// [`update_fields`] of a record the test knows is there.
#[cfg(test)]
pub(crate) async fn set_fields<S: Store + ?Sized>(
    s: &S,
    mac: Mac,
    set: impl FnOnce(&mut Node) + Send + 'static,
) -> Edited {
    update_fields(s, mac, set).await.unwrap()
}
