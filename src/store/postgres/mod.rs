//! The PostgreSQL engine: several appliances, one truth.
//!
//! Each appliance keeps every node record and lease in memory (a
//! [`Mirror`], as the SQLite engine does) and answers reads from it; every
//! write is a PostgreSQL transaction, and the database alone decides what
//! holds:
//!
//! - **Leases** are unique by address (the primary key) and by MAC. An
//!   address is taken with one conditional upsert that succeeds only when the
//!   address is free, expired, or already this MAC's; an appliance whose
//!   memory is behind simply finds the row taken and tries the next
//!   candidate. No address is ever bound to two MACs, whichever appliance
//!   asks, and a released or expired address is free to every appliance.
//!   A bound lease is committed before `allocate` returns (so before the
//!   ACK leaves).
//! - **Writes are grouped** ([`writer`]): the writer task takes every write
//!   waiting and runs them in one transaction, each under a savepoint (one
//!   refused write costs only itself), so a burst of DHCP clients shares
//!   one commit.
//! - **Changes reach every appliance** through `NOTIFY`: each write
//!   announces what it changed, with the data, inside its transaction
//!   (all of a batch's notes packed into as few payloads as fit:
//!   [`announce`]), so the announcements go out on commit and in commit
//!   order. Every appliance, the writing one too (from what it holds,
//!   not reading its own notes), applies them to its mirror in that order
//!   ([`listen`]) and passes them on to its feed (DNS names, kept scripts,
//!   agents waiting for a reconfigure, boot slots). A write returns once
//!   its own appliance has applied it, so what a caller wrote is what it
//!   reads next.
//! - **Losing the database**: writes fail at once as unavailable (callers
//!   refuse what they cannot promise), reads go on from memory, and both
//!   connections come back by themselves; the listener reloads everything
//!   when it reconnects, since announcements made meanwhile are lost.

mod announce;
mod copy;
mod lead;
mod listen;
mod quick;
mod rows;
mod schema;
pub mod scratch;
mod timeline;
mod tls;
pub use copy::{Copied, copy_site};
mod writer;

use std::net::Ipv4Addr;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use async_trait::async_trait;
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

use self::quick::Quick;
use self::writer::Op;
use super::mirror::Mirror;
use super::{
    Edited, LeaseRequest, NodeEdit, NodeQuery, NodesEdit, Store, StoreError, StoreHealth, Written,
};
use crate::model::{
    BootArch, Event, Lease, LeaseState, Mac, Node, NodeState, Rollout, ScriptReport, Timestamp,
};

/// The channel every appliance announces its changes on.
const CHANNEL: &str = "rackboot";

/// How long a write waits for its own announcement to come back before it
/// answers anyway (the change is committed; the mirror catches up when the
/// listener reconnects).
const ECHO_WITHIN: Duration = Duration::from_secs(5);

/// Writes waiting for the writer; beyond this, callers wait to queue.
const QUEUE: usize = 4096;

/// Where to find the database.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PostgresConfig {
    /// libpq's connection string (`host=... dbname=...`) or URL
    /// (`postgresql://...`), without the password.
    pub url: String,
    /// The password, when the database asks for one.
    pub password: Option<String>,
    /// This appliance's name on the timeline and in the announcements.
    pub appliance: String,
    /// CA certificates (PEM) to verify the database with, when `url` says
    /// `sslmode=require` ([`tls`]); else the system's roots.
    pub ca_file: Option<std::path::PathBuf>,
}

impl PostgresConfig {
    pub(super) fn connector(&self) -> Result<tls::Connector, StoreError> {
        let mut c: tokio_postgres::Config = self.url.parse().map_err(|e| StoreError::Engine {
            op: "open",
            fault: super::Fault::Permanent,
            cause: format!("store.url is not a PostgreSQL connection string: {e}"),
        })?;
        if let Some(p) = &self.password {
            c.password(p);
        }
        if c.get_application_name().is_none() {
            c.application_name(format!("rackboot {}", self.appliance));
        }
        c.connect_timeout(Duration::from_secs(5));
        tls::Connector::new(c, self.ca_file.as_deref())
    }
}

/// What the writer, the listener and the store share.
pub(super) struct Shared {
    pub(super) mirror: Mutex<Mirror>,
    /// The mirror's feed, for the changes that need not be emitted under
    /// the mirror's lock (a timeline entry: one per packet of a boot).
    pub(super) feed: Arc<crate::store::feed::Feed>,
    pub(super) appliance: String,
    /// This process among all that announce on the database (random: two
    /// appliances given one name must still not take each other's batches
    /// for their own).
    pub(super) process: u64,
    /// Batches of this process whose announcements have not come back
    /// yet, by batch number.
    pub(super) echoes: Mutex<std::collections::HashMap<u64, Echo>>,
    pub(super) health: Mutex<StoreHealth>,
    /// Whether the writer's and the listener's connections are up.
    pub(super) writer_up: std::sync::atomic::AtomicBool,
    pub(super) listener_up: std::sync::atomic::AtomicBool,
}

/// A batch committed or on its way: what it changed, applied when its
/// announcements come back, and its writer, woken then.
pub(super) struct Echo {
    done: oneshot::Sender<()>,
    held: Vec<announce::Held>,
}

impl Shared {
    pub(super) fn mirror(&self) -> MutexGuard<'_, Mirror> {
        self.mirror.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// A store in a PostgreSQL database that other appliances may share.
pub struct PostgresStore {
    shared: Arc<Shared>,
    writes: mpsc::Sender<Op>,
    /// Whether this appliance holds the lead ([`lead`]).
    leading: Arc<std::sync::atomic::AtomicBool>,
    /// Ends the writer and the listener when the store is dropped.
    stop: CancellationToken,
}

impl Drop for PostgresStore {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

impl PostgresStore {
    /// Connects, brings the schema up to date, loads every record and
    /// lease, and starts listening for the other appliances' changes.
    /// Fails when the database cannot be reached or is newer than this
    /// binary.
    pub async fn open(config: PostgresConfig) -> Result<PostgresStore, StoreError> {
        let connect = config.connector()?;
        let mirror = Mirror::default();
        let shared = Arc::new(Shared {
            feed: mirror.feed.clone(),
            mirror: Mutex::new(mirror),
            appliance: config.appliance.clone(),
            process: rand::random(),
            echoes: Mutex::new(Default::default()),
            health: Mutex::new(StoreHealth {
                engine: "postgres",
                ..StoreHealth::default()
            }),
            writer_up: std::sync::atomic::AtomicBool::new(true),
            listener_up: std::sync::atomic::AtomicBool::new(true),
        });
        let stop = CancellationToken::new();
        let mut client = writer::connect(&connect, &stop).await?;
        schema::migrate(&mut client).await?;
        // Listening before loading: nothing committed after the load is
        // missed, and what is announced twice is applied twice, harmlessly.
        let loaded = listen::start(connect.clone(), shared.clone(), stop.clone()).await?;
        tracing::info!(
            nodes = loaded.0,
            leases = loaded.1,
            appliance = %config.appliance,
            "store: PostgreSQL opened"
        );
        let leading = Arc::new(std::sync::atomic::AtomicBool::new(false));
        tokio::spawn(lead::run(
            connect.clone(),
            config.appliance.clone(),
            leading.clone(),
            stop.clone(),
        ));
        let (writes, queue) = mpsc::channel(QUEUE);
        tokio::spawn(writer::run(
            client,
            connect,
            queue,
            shared.clone(),
            stop.clone(),
        ));
        Ok(PostgresStore {
            shared,
            writes,
            leading,
            stop,
        })
    }

    /// Sends `op` to the writer and waits for its answer.
    async fn ask<T>(
        &self,
        op: impl FnOnce(oneshot::Sender<Result<T, StoreError>>) -> Op,
    ) -> Result<T, StoreError> {
        let (tx, rx) = oneshot::channel();
        self.writes
            .send(op(tx))
            .await
            .map_err(|_| StoreError::WriterGone)?;
        rx.await.map_err(|_| StoreError::WriterGone)?
    }
}

#[async_trait]
impl Store for PostgresStore {
    fn mirror(&self) -> MutexGuard<'_, Mirror> {
        self.shared.mirror()
    }

    async fn sync(&self) -> Result<(), StoreError> {
        // Every write is committed before it answers; one more round through
        // the writer waits for any that are still queued.
        self.ask(Op::Sync).await
    }

    fn leads(&self) -> bool {
        self.leading.load(std::sync::atomic::Ordering::Relaxed)
    }

    fn health(&self) -> StoreHealth {
        use std::sync::atomic::Ordering::Relaxed;
        let mut h = *self
            .shared
            .health
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        h.reachable = self.shared.writer_up.load(Relaxed) && self.shared.listener_up.load(Relaxed);
        h
    }

    async fn create_node_if_absent(&self, node: Node) -> Result<(Node, bool), StoreError> {
        if let Some(existing) = self.mirror().nodes.get(&node.mac) {
            return Ok((existing, false));
        }
        let (node, created) = self
            .ask(|tx| Op::Quick(Quick::Create(Box::new(node), tx)))
            .await?;
        if created && let Some(seen) = node.last_seen {
            // Saved with the record: a touch right after (a new client's
            // REQUEST) need not write it again.
            self.mirror().seen_saved.insert(node.mac, seen);
        }
        Ok((node, created))
    }

    async fn update_node(&self, mac: Mac, edit: NodeEdit) -> Result<Edited, StoreError> {
        self.ask(|tx| Op::Update(mac, edit, tx)).await
    }

    async fn edit_nodes(&self, edit: NodesEdit) -> Result<Vec<Written>, StoreError> {
        self.ask(|tx| Op::EditNodes(edit, tx)).await
    }

    async fn delete_nodes_if(
        &self,
        macs: &[Mac],
        doomed: &NodeQuery,
    ) -> Result<Vec<Mac>, StoreError> {
        if macs.is_empty() {
            return Ok(Vec::new());
        }
        let (macs, doomed) = (macs.to_vec(), doomed.clone());
        self.ask(|tx| Op::DeleteIf(macs, doomed, tx)).await
    }

    async fn touch_node(
        &self,
        mac: Mac,
        arch: Option<BootArch>,
        now: Timestamp,
    ) -> Result<(), StoreError> {
        if self.mirror().touch(mac, arch, now)?.is_none() {
            return Ok(());
        }
        let mut fields = serde_json::Map::new();
        fields.insert(
            "last_seen".into(),
            serde_json::to_value(now).unwrap_or_default(),
        );
        if let Some(arch) = arch {
            fields.insert(
                "arch".into(),
                serde_json::to_value(arch).unwrap_or_default(),
            );
        }
        self.ask(|tx| Op::SetFields(mac, fields, tx)).await
    }

    async fn set_node_state(
        &self,
        mac: Mac,
        state: NodeState,
        reason: Option<&str>,
    ) -> Result<(), StoreError> {
        let mut fields = serde_json::Map::new();
        fields.insert("state".into(), state.as_str().into());
        fields.insert("state_reason".into(), reason.into());
        self.ask(|tx| Op::SetFields(mac, fields, tx)).await
    }

    async fn set_node_relay_info(&self, mac: Mac, info: Option<&str>) -> Result<(), StoreError> {
        {
            let m = self.mirror();
            let n = m.nodes.get(&mac).ok_or(StoreError::NoSuchNode(mac))?;
            if n.relay_info.as_deref() == info {
                return Ok(());
            }
        }
        let mut fields = serde_json::Map::new();
        fields.insert("relay_info".into(), info.into());
        self.ask(|tx| Op::SetFields(mac, fields, tx)).await
    }

    async fn bump_config_generation(&self, macs: &[Mac]) -> Result<Vec<(Mac, u64)>, StoreError> {
        if macs.is_empty() {
            return Ok(Vec::new());
        }
        let mut seen = std::collections::HashSet::new();
        let macs: Vec<Mac> = macs.iter().copied().filter(|m| seen.insert(*m)).collect();
        self.ask(|tx| Op::Bump(macs, tx)).await
    }

    async fn add_report(&self, mac: Mac, report: &ScriptReport) -> Result<(), StoreError> {
        let report = report.clone();
        self.ask(|tx| Op::Report(mac, Box::new(report), tx)).await
    }

    async fn reports(&self, mac: Mac) -> Result<(Vec<ScriptReport>, u64), StoreError> {
        self.ask(|tx| Op::Reports(mac, tx)).await
    }

    async fn add_event(&self, mac: Mac, event: &Event) -> Result<(), StoreError> {
        // Queued, not waited for: a timeline entry promises nothing to a
        // client, and the reads of timelines queue behind it. Stamped with
        // this appliance's name: the timeline is shared with its siblings.
        let mut event = event.clone();
        event
            .appliance
            .get_or_insert_with(|| self.shared.appliance.clone());
        let at = event.at;
        self.writes
            .send(Op::Event(mac, Box::new(event)))
            .await
            .map_err(|_| StoreError::WriterGone)?;
        self.shared
            .feed
            .emit(&crate::store::feed::Change::Event(mac, at));
        Ok(())
    }

    async fn events(&self, mac: Mac) -> Result<Vec<Event>, StoreError> {
        self.ask(|tx| Op::Events(mac, tx)).await
    }

    async fn allocate(&self, req: &LeaseRequest) -> Result<Option<Lease>, StoreError> {
        let req = req.clone();
        self.ask(|tx| Op::Quick(Quick::Allocate(Box::new(req), tx)))
            .await
    }

    async fn release(&self, mac: Mac, ip: Ipv4Addr) -> Result<bool, StoreError> {
        let holds = self
            .mirror()
            .leases
            .get(&u32::from(ip))
            .is_some_and(|l| l.mac == Some(mac));
        if !holds {
            return Ok(false);
        }
        self.ask(|tx| Op::Release(mac, ip, tx)).await
    }

    async fn decline(&self, ip: Ipv4Addr, until: Timestamp) -> Result<(), StoreError> {
        let lease = Lease {
            ip,
            mac: None,
            state: LeaseState::Declined,
            expires: until,
        };
        self.ask(|tx| Op::Decline(lease, tx)).await
    }

    async fn create_rollout(&self, rollout: &Rollout) -> Result<(), StoreError> {
        let rollout = Box::new(rollout.clone());
        self.ask(|tx| Op::CreateRollout(rollout, tx)).await
    }

    async fn rollouts(&self) -> Result<Vec<Rollout>, StoreError> {
        self.ask(Op::Rollouts).await
    }

    async fn edit_rollout(
        &self,
        id: &str,
        edit: crate::store::RolloutEdit,
    ) -> Result<Option<Rollout>, StoreError> {
        let id = id.to_string();
        self.ask(|tx| Op::EditRollout(id, edit, tx)).await
    }
}

/// The store contract battery (`super::contract`) on PostgreSQL: one
/// scratch cluster for the test process, a database per place. A crash of
/// an appliance leaves the database as it was: every acknowledged change
/// is committed there, and a new appliance on it finds them all.
#[cfg(test)]
pub(crate) struct Contract;

#[cfg(test)]
impl super::contract::Engine for Contract {
    const APPLIANCE: Option<&'static str> = Some("test");

    async fn open(place: &std::path::Path) -> Arc<dyn Store> {
        static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let cluster = scratch::ScratchCluster::for_process();
        let file = place.join("postgres-database");
        let name = match std::fs::read_to_string(&file) {
            Ok(name) => name,
            Err(_) => {
                let name = format!(
                    "contract_{}",
                    NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
                );
                cluster.create_database(&name).unwrap();
                std::fs::write(&file, &name).unwrap();
                name
            }
        };
        let config = PostgresConfig {
            url: cluster.url(&name),
            password: None,
            appliance: Self::APPLIANCE.unwrap_or_default().into(),
            ca_file: None,
        };
        Arc::new(PostgresStore::open(config).await.unwrap())
    }

    fn crash(from: &std::path::Path, to: &std::path::Path) {
        std::fs::copy(from.join("postgres-database"), to.join("postgres-database")).unwrap();
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::time::Instant;

    use super::*;
    use crate::store::feed::Change;

    /// Two appliances on one new database.
    async fn two(name: &str) -> (PostgresStore, PostgresStore) {
        two_named(name, "a", "b").await
    }

    async fn two_named(name: &str, first: &str, second: &str) -> (PostgresStore, PostgresStore) {
        let (a, b, _) = two_at(name, first, second).await;
        (a, b)
    }

    /// Two appliances on one new database, and its URL.
    async fn two_at(
        name: &str,
        first: &str,
        second: &str,
    ) -> (PostgresStore, PostgresStore, String) {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let cluster = scratch::ScratchCluster::for_process();
        let db = format!("{name}_{}", NEXT.fetch_add(1, Ordering::Relaxed));
        cluster.create_database(&db).unwrap();
        let open = |appliance: &str| {
            PostgresStore::open(PostgresConfig {
                url: cluster.url(&db),
                password: None,
                appliance: appliance.into(),
                ca_file: None,
            })
        };
        let (a, b) = (open(first).await.unwrap(), open(second).await.unwrap());
        (a, b, cluster.url(&db))
    }

    /// Waits (bounded) until `cond` holds.
    async fn until(what: &str, within: Duration, cond: impl Fn() -> bool) {
        let deadline = Instant::now() + within;
        while !cond() {
            assert!(Instant::now() < deadline, "not within {within:?}: {what}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    fn mac(n: u8) -> Mac {
        Mac::new([0x52, 0x54, 0, 0, 1, n])
    }

    /// A request to bind `m` an address of `range`, for good, at time 1.
    fn bind_in(range: (Ipv4Addr, Ipv4Addr), m: Mac) -> LeaseRequest {
        LeaseRequest {
            mac: m,
            ranges: vec![range],
            fixed: None,
            wanted: None,
            exact: false,
            state: LeaseState::Bound,
            expires: Timestamp(i64::MAX / 2),
            now: Timestamp(1),
        }
    }

    #[derive(Default)]
    struct Reconfigured(Mutex<Vec<Mac>>);

    impl crate::store::Subscriber for Reconfigured {
        fn changed(&self, change: &Change<'_>) {
            if let Change::ConfigBumped(macs) = change {
                self.0.lock().unwrap().extend_from_slice(macs);
            }
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_change_through_one_appliance_reaches_the_other_within_a_second() {
        let (a, b) = two("reach").await;
        let told = Arc::new(Reconfigured::default());
        a.subscribe(told.clone());
        let node = Node::discovered(mac(1), "discovery", "t".into(), Timestamp(0));
        b.create_node_if_absent(node).await.unwrap();
        let start = Instant::now();
        until("a sees the node b made", Duration::from_secs(1), || {
            a.mirror().nodes.contains_key(&mac(1))
        })
        .await;
        // A reconfigure sent to b wakes what waits on a.
        b.bump_config_generation(&[mac(1)]).await.unwrap();
        until(
            "a is told of b's reconfigure",
            Duration::from_secs(1),
            || told.0.lock().unwrap().contains(&mac(1)),
        )
        .await;
        assert_eq!(a.mirror().nodes.get(&mac(1)).unwrap().config_generation, 1);
        assert!(start.elapsed() < Duration::from_secs(2));
        b.delete_node(mac(1)).await.unwrap();
        until(
            "a forgets the node b deleted",
            Duration::from_secs(1),
            || !a.mirror().nodes.contains_key(&mac(1)),
        )
        .await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_fleet_made_and_reconfigured_at_once_reaches_the_other_appliance() {
        // Both given one name: each still tells its own batches from the
        // other's.
        let (a, b) = two_named("fleet", "row-a", "row-a").await;
        let (a, b) = (Arc::new(a), Arc::new(b));
        let told = Arc::new(Reconfigured::default());
        a.subscribe(told.clone());
        let fleet: Vec<Mac> = (0..1000u32)
            .map(|i| Mac::new([0x52, 0x54, 0, 2, (i >> 8) as u8, i as u8]))
            .collect();
        // Made together: batches whose notes need several payloads.
        let mut tasks = Vec::new();
        for m in &fleet {
            let (b, node) = (
                b.clone(),
                Node::discovered(*m, "discovery", "t".into(), Timestamp(0)),
            );
            tasks.push(tokio::spawn(
                async move { b.create_node_if_absent(node).await },
            ));
        }
        for t in tasks {
            assert!(t.await.unwrap().unwrap().1, "made");
        }
        assert_eq!(b.mirror().nodes.len(), 1000, "b answers from what it wrote");
        until(
            "a hears of every node b made",
            Duration::from_secs(5),
            || a.mirror().nodes.len() == 1000,
        )
        .await;
        // One reconfigure of all of them: more MACs than one note carries.
        let bumped = b.bump_config_generation(&fleet).await.unwrap();
        assert_eq!(bumped.len(), 1000);
        until("a is told of all 1000", Duration::from_secs(5), || {
            told.0.lock().unwrap().len() == 1000
        })
        .await;
        let m = a.mirror();
        assert!(
            fleet
                .iter()
                .all(|mac| m.nodes.get(mac).unwrap().config_generation == 1)
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn two_appliances_never_bind_one_address_to_two_macs() {
        let (a, b) = two("alloc").await;
        let (a, b) = (Arc::new(a), Arc::new(b));
        let range = (Ipv4Addr::new(10, 9, 0, 10), Ipv4Addr::new(10, 9, 0, 49));
        let ask = |m: Mac| bind_in(range, m);
        // Each appliance knows nothing of the other's leases when it picks:
        // both start from the bottom of the range.
        let mut tasks = Vec::new();
        for n in 0..40u8 {
            let s = if n % 2 == 0 { a.clone() } else { b.clone() };
            let req = ask(mac(n));
            tasks.push(tokio::spawn(async move { s.allocate(&req).await }));
        }
        let mut given = std::collections::HashMap::new();
        for t in tasks {
            if let Some(l) = t.await.unwrap().unwrap() {
                assert_eq!(given.insert(l.ip, l.mac), None, "{} bound twice", l.ip);
            }
        }
        assert_eq!(given.len(), 40, "40 addresses for 40 MACs");
        // A 41st finds the pool full on either side.
        let mut req = ask(mac(99));
        req.state = LeaseState::Offered;
        until("b hears of a's leases", Duration::from_secs(1), || {
            b.mirror().leases.len() == 40
        })
        .await;
        assert_eq!(b.allocate(&req).await.unwrap(), None);
        // A released address is free to the other appliance.
        let (ip, holder) = given
            .iter()
            .next()
            .map(|(ip, m)| (*ip, m.unwrap()))
            .unwrap();
        assert!(a.release(holder, ip).await.unwrap() || b.release(holder, ip).await.unwrap());
        until("b hears of the release", Duration::from_secs(1), || {
            !b.mirror().leases.contains_key(&u32::from(ip))
        })
        .await;
        assert_eq!(b.allocate(&req).await.unwrap().map(|l| l.ip), Some(ip));
    }

    /// A client whose DISCOVER was retransmitted (say, while the database was
    /// away) can have the retransmission and its REQUEST answered by one
    /// batch: the DISCOVER tries the client's own offer first, and that must
    /// not keep its REQUEST from binding it.
    #[tokio::test(flavor = "current_thread")]
    async fn a_discover_beside_its_own_request_in_one_batch_leaves_the_offer_to_it() {
        let (a, _b) = two("same_mac").await;
        let range = (Ipv4Addr::new(10, 9, 1, 10), Ipv4Addr::new(10, 9, 1, 49));
        let ask = |state, wanted, exact| LeaseRequest {
            mac: mac(1),
            ranges: vec![range],
            fixed: None,
            wanted,
            exact,
            state,
            expires: Timestamp(i64::MAX / 2),
            now: Timestamp(1),
        };
        let offered = a
            .allocate(&ask(LeaseState::Offered, None, false))
            .await
            .unwrap()
            .expect("an offer");
        // Queued together: this runtime has one thread, so the writer takes
        // both off its queue in one batch, the DISCOVER's first.
        let discover = ask(LeaseState::Offered, None, false);
        let request = ask(LeaseState::Bound, Some(offered.ip), true);
        let (again, bound) = tokio::join!(a.allocate(&discover), a.allocate(&request));
        assert_eq!(again.unwrap().map(|l| l.ip), Some(offered.ip));
        let bound = bound.unwrap().expect("the REQUEST bound its offer");
        assert_eq!((bound.ip, bound.state), (offered.ip, LeaseState::Bound));
    }

    /// A run goes out as set-based statements; a hostname taken by another
    /// node makes the new-record insert raise, and the run is sent again
    /// one write at a time: the clash is that write's answer, every other
    /// write of the run is done, and the sibling hears of all of them.
    #[tokio::test(flavor = "current_thread")]
    async fn a_clash_in_a_run_of_quick_writes_refuses_only_its_own_write() {
        use crate::model::{EventData, Timestamp};
        let (a, b) = two("clash").await;
        let range = (Ipv4Addr::new(10, 9, 2, 10), Ipv4Addr::new(10, 9, 2, 49));
        let ask = |m: Mac| bind_in(range, m);
        let node = |m: Mac, hostname: &str| {
            let mut n = Node::discovered(m, "discovery", format!("t{m}"), Timestamp(1));
            n.hostname = hostname.into();
            n
        };
        a.create_node_if_absent(node(mac(1), "taken"))
            .await
            .unwrap();
        // b holds the first address of the range, unknown to a yet: a's
        // first choice for mac 3 is refused and it takes the next.
        let held = b.allocate(&ask(mac(9))).await.unwrap().unwrap();
        assert_eq!(held.ip, range.0);
        let note = || {
            Event::new(
                Timestamp(2),
                EventData::Note {
                    of: crate::model::EventKind::DhcpAck,
                    text: "x".into(),
                },
            )
        };
        // Queued together: this runtime has one thread, so the writer takes
        // them off its queue in one batch.
        let (ask3, event) = (ask(mac(3)), note());
        let (clash, made, mine, again, _) = tokio::join!(
            a.create_node_if_absent(node(mac(2), "TAKEN")),
            a.create_node_if_absent(node(mac(3), "free")),
            a.allocate(&ask3),
            a.create_node_if_absent(node(mac(1), "whatever")),
            a.add_event(mac(3), &event),
        );
        let clash = clash.unwrap_err().to_string();
        assert!(clash.contains("hostname"), "{clash}");
        assert!(made.unwrap().1, "mac 3's record made");
        let mine = mine.unwrap().expect("mac 3 bound");
        assert_eq!(mine.ip, Ipv4Addr::new(10, 9, 2, 11), "the next after b's");
        let (existing, made) = again.unwrap();
        assert!(!made);
        assert_eq!(existing.hostname, "taken", "mac 1's record as it was");
        assert_eq!(a.events(mac(3)).await.unwrap().len(), 1, "the event saved");
        until(
            "b hears of mac 3's record and lease",
            Duration::from_secs(1),
            || {
                let m = b.mirror();
                m.nodes.contains_key(&mac(3)) && m.lease_of(mac(3)).is_some_and(|l| l.ip == mine.ip)
            },
        )
        .await;
        assert!(!b.mirror().nodes.contains_key(&mac(2)));
    }

    /// The events one MAC makes close together go as one timeline row:
    /// the appliance holding them reads them at once, a sibling once they
    /// are written (within the hold), each event as it was recorded.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_macs_events_go_as_one_row_that_a_sibling_reads_whole() {
        use crate::model::EventData;
        let (a, b, url) = two_at("packed", "row-a", "row-b").await;
        let note = |at: i64| {
            Event::new(
                Timestamp(at),
                EventData::Note {
                    of: crate::model::EventKind::DhcpAck,
                    text: format!("event {at}"),
                },
            )
        };
        for at in 1..=3 {
            a.add_event(mac(5), &note(at)).await.unwrap();
        }
        b.add_event(mac(5), &note(4)).await.unwrap();
        let stamped = |at: i64, by: &str| Event {
            appliance: Some(by.into()),
            ..note(at)
        };
        let mine: Vec<Event> = (1..=3).map(|at| stamped(at, "row-a")).collect();
        assert_eq!(a.events(mac(5)).await.unwrap(), mine, "held, and read");

        // b sees a's three (and its own) once a has written them.
        let deadline = Instant::now() + timeline::HOLD + Duration::from_secs(2);
        let seen = loop {
            let seen = b.events(mac(5)).await.unwrap();
            if seen.len() == 4 || Instant::now() > deadline {
                break seen;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        // Each appliance's events in the order it made them; the two
        // appliances' rows in the order they were written.
        let mut want = mine.clone();
        want.push(stamped(4, "row-b"));
        let mut got = seen.clone();
        got.sort_by_key(|e| e.at);
        assert_eq!(got, want, "b reads both appliances' events: {seen:?}");

        let (client, connection) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
            .await
            .unwrap();
        tokio::spawn(connection);
        let rows = client
            .query(
                "SELECT kind FROM events WHERE mac = $1 ORDER BY seq",
                &[&rows::mac_text(mac(5))],
            )
            .await
            .unwrap();
        let kinds: Vec<&str> = rows.iter().map(|r| r.get(0)).collect();
        assert!(
            kinds.contains(&timeline::PACKED) && kinds.len() == 2,
            "a's three events in one row, b's in another: {kinds:?}"
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn one_appliance_leads_and_another_takes_over_when_it_goes() {
        let (a, b) = two("lead").await;
        let wait = lead::TRY_EVERY * 3;
        until("one leads", wait, || a.leads() || b.leads()).await;
        assert!(!(a.leads() && b.leads()), "both lead");
        let (leader, other) = if a.leads() { (a, b) } else { (b, a) };
        drop(leader);
        until("the other takes over", wait, || other.leads()).await;
    }
}
