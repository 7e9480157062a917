//! The lifecycle sweep: every few seconds it reverts bootenv leases that ran
//! out and turns boots that stalled past their timeout into `failed` (or
//! `unreachable` for a booted node that stopped reporting), with the
//! diagnosis as the reason, so the store (and the API) tells the truth also
//! about nodes that do not boot again. Policy is `boot::lifecycle` and
//! `boot::diagnose`; this module only reads the clock and the store.
//!
//! It also reaps what a flood of made-up MACs leaves behind: a record DHCP
//! made for an unknown MAC that never went further (still `discovered`, no
//! live lease, nothing an admin gave it) is deleted once idle for
//! `[lifecycle] reap_discovered_after`, at most [`REAP_PER_PASS`] a pass,
//! in one write.
//!
//! A pass looks only at the nodes that are due ([`due`]): its work follows
//! what happens on the boot network, not the size of the fleet.

mod due;

use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::boot::{Timeouts, diagnose, lifecycle, stall_deadline};
use crate::control::timeline::Timeline;
use crate::metrics::Metrics;
use crate::model::{LeaseState, Mac, Node, Timestamp};
use crate::store::{LeaderTicks, NodeQuery, Store, StoreError};

pub use due::Due;
use due::{Rules, after};

/// How often the sweep runs: a lease is reverted at most this late.
pub const INTERVAL: Duration = Duration::from_secs(5);

/// Records reaped in one pass at most: a flood's leftovers go at up to
/// 200 a second, and no pass holds the store for long.
pub const REAP_PER_PASS: usize = 1000;

/// Nodes looked at in one pass at most, and timelines read (the costly
/// part: a read from the database each). What is left stays due for the
/// next pass: after a restart with a large fleet that was busy, the first
/// checks spread over a few passes instead of one long one.
pub const NODES_PER_PASS: usize = 5000;
pub const TIMELINES_PER_PASS: usize = 500;

/// What one pass changed, for logs and tests.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Swept {
    pub leases_expired: usize,
    pub stalls: usize,
    pub reaped: usize,
}

/// The records that may be reaped at `now` after `idle` without a request:
/// bare records DHCP made, neither made nor seen for that long. (A live
/// lease is checked apart: it is not on the record.)
fn reapable(now: Timestamp, idle: Duration) -> NodeQuery {
    let since = before(now, idle);
    NodeQuery {
        bare_discovery: true,
        seen_by: Some(since),
        created_by: Some(since),
        ..NodeQuery::default()
    }
}

/// `span` before `now`.
fn before(now: Timestamp, span: Duration) -> Timestamp {
    Timestamp(now.millis().saturating_sub(span.as_millis() as i64))
}

/// The sweep, and its index of when each node is next due.
pub struct Sweep {
    store: Arc<dyn Store>,
    timeline: Timeline,
    timeouts: Timeouts,
    due: Arc<Due>,
    /// Where reaping is counted, when it is on.
    reaped: Option<Arc<Metrics>>,
}

/// What looking at one node found.
struct Looked {
    expired: bool,
    stalled: bool,
    /// Its bare record may go now.
    doomed: bool,
    /// When to look at it again (`None`: only when it changes).
    next: Option<Timestamp>,
}

impl Sweep {
    /// A sweep over `store`; with `reap_after`, bare records idle that long
    /// are reaped and counted in `metrics`. Joins the store's feed at once:
    /// from here on the index misses no change.
    pub fn new(
        store: Arc<dyn Store>,
        timeline: Timeline,
        timeouts: Timeouts,
        reap_after: Option<Duration>,
        metrics: Arc<Metrics>,
    ) -> Sweep {
        let quiet = timeouts
            .report
            .min(timeouts.install)
            .min(timeouts.heartbeat);
        let due = Arc::new(Due::new(Rules { quiet, reap_after }));
        store.subscribe(due.clone());
        Sweep {
            store,
            timeline,
            timeouts,
            due,
            reaped: reap_after.map(|_| metrics),
        }
    }

    /// The index (for tests and memory figures).
    pub fn due(&self) -> &Arc<Due> {
        &self.due
    }

    /// Runs a pass every [`INTERVAL`] until `cancel` fires. A failed pass is
    /// logged and the next one tries again.
    pub async fn run(mut self, cancel: CancellationToken) {
        // Appliances sharing a store take turns: one sweeps, the others
        // would only repeat its changes.
        let mut turns = LeaderTicks::every(INTERVAL);
        while turns.next(&*self.store, &cancel).await {
            match self.pass(Timestamp::now()).await {
                Ok(s) if s != Swept::default() => tracing::debug!(?s, "lifecycle sweep"),
                Ok(_) => {}
                Err(e) => tracing::warn!(error = %e, "lifecycle sweep failed"),
            }
        }
    }

    /// One pass at `now`: the nodes due, at most [`NODES_PER_PASS`].
    pub async fn pass(&mut self, now: Timestamp) -> Result<Swept, StoreError> {
        let mut swept = Swept::default();
        let mut timelines = TIMELINES_PER_PASS;
        let mut doomed = Vec::new();
        let mut failed = None;
        for (i, mac) in self.due.take(now, NODES_PER_PASS).into_iter().enumerate() {
            // Other tasks share these threads: a long pass lets them in.
            if i % 64 == 63 {
                tokio::task::yield_now().await;
            }
            if failed.is_some() {
                self.due.again(mac, now);
                continue;
            }
            match self.look(mac, now, &mut timelines).await {
                Ok(l) => {
                    swept.leases_expired += usize::from(l.expired);
                    swept.stalls += usize::from(l.stalled);
                    if l.doomed && doomed.len() < REAP_PER_PASS {
                        doomed.push(mac);
                    } else if l.doomed {
                        self.due.again(mac, after(now, INTERVAL));
                    }
                    if let Some(at) = l.next {
                        self.due.again(mac, at);
                    }
                }
                Err(e) if e.is_not_found() => {}
                // Tried again next pass, with every node not reached yet.
                Err(e) => {
                    self.due.again(mac, now);
                    failed = Some(e);
                }
            }
        }
        swept.reaped = self.reap(&doomed, now).await?;
        match failed {
            Some(e) => Err(e),
            None => Ok(swept),
        }
    }

    /// Looks at `mac` at `now`: reverts its bootenv lease if it ran out,
    /// fails its boot if it stalled, says if its bare record may be reaped,
    /// and when it is next due. Reads its timeline only once it has been
    /// quiet for the shortest timeout, and only while `timelines` lasts.
    async fn look(
        &mut self,
        mac: Mac,
        now: Timestamp,
        timelines: &mut usize,
    ) -> Result<Looked, StoreError> {
        let mut looked = Looked {
            expired: false,
            stalled: false,
            doomed: false,
            next: None,
        };
        let Some(mut node) = self.store.node(mac).await? else {
            return Ok(looked);
        };
        if lifecycle::expire_lease(&node, now).is_some() {
            let changed = self
                .timeline
                .change_bootenv(mac, move |n| lifecycle::expire_lease(n, now))
                .await?;
            if let Some(n) = changed {
                looked.expired = true;
                node = n;
            }
        }
        let rules = *self.due.rules();
        let mut next = node.bootenv_expires.filter(|t| *t > now);
        if let Some(after_idle) = rules.reap_after {
            match self.reap_check(&node, now, after_idle).await? {
                Ok(()) => looked.doomed = true,
                Err(at) => next = min(next, at),
            }
        }
        // A boot stalls only after `quiet` without a step. Until a node
        // has been unseen that long its timeline (a read from the database)
        // is not needed: a stall is at worst noticed a little after its
        // deadline, never missed.
        let seen = node.last_seen.unwrap_or(node.created);
        let quiet_at = after(seen, rules.quiet);
        if now < quiet_at {
            looked.next = min(next, Some(quiet_at));
            return Ok(looked);
        }
        if *timelines == 0 {
            looked.next = Some(now);
            return Ok(looked);
        }
        *timelines -= 1;
        let events = self.store.events(mac).await?;
        let mut recheck_at = stall_deadline(&node, &events, &self.timeouts);
        if let Some(stall) = diagnose(&node, &events, now, &self.timeouts) {
            recheck_at = None;
            let already = node.state == stall.verdict
                && node.state_reason.as_deref() == Some(stall.reason.as_str());
            if !already {
                let (seen, state) = (node.last_seen, node.state);
                looked.stalled = self
                    .timeline
                    .set_state_if(mac, stall.verdict, stall.reason, move |n| {
                        n.last_seen == seen && n.state == state
                    })
                    .await?;
                // It moved on meanwhile: look again next pass.
                if !looked.stalled {
                    recheck_at = Some(after(now, INTERVAL));
                }
            }
        }
        looked.next = min(next, recheck_at);
        Ok(looked)
    }

    /// Whether `node` may be reaped at `now` (`Ok`), or else when to ask
    /// again (`Err`): never for a record that is more than bare; when its
    /// idle time is up; when the lease it still holds ends (a renewing
    /// client that never PXE boots keeps its record: it is in use).
    async fn reap_check(
        &self,
        node: &Node,
        now: Timestamp,
        idle: Duration,
    ) -> Result<Result<(), Option<Timestamp>>, StoreError> {
        if !node.is_bare_discovery() {
            return Ok(Err(None));
        }
        let idle_since = node.last_seen.unwrap_or(node.created).max(node.created);
        if now < after(idle_since, idle) {
            return Ok(Err(Some(after(idle_since, idle))));
        }
        let lease = self.store.lease_of(node.mac).await?;
        match lease.filter(|l| l.state == LeaseState::Bound && l.is_live(now)) {
            Some(l) => Ok(Err(Some(l.expires))),
            None => Ok(Ok(())),
        }
    }

    /// Deletes `doomed` where still reapable, and says how many went.
    async fn reap(&mut self, doomed: &[Mac], now: Timestamp) -> Result<usize, StoreError> {
        let (Some(metrics), Some(after_idle)) = (self.reaped.clone(), self.due.rules().reap_after)
        else {
            return Ok(0);
        };
        if doomed.is_empty() {
            return Ok(0);
        }
        // Only if it is still reapable: a request meanwhile moved its
        // last-seen time past `now - after` (it came after this pass began),
        // an edit made it more than bare.
        let deleted = self
            .store
            .delete_nodes_if(doomed, &reapable(now, after_idle))
            .await?;
        // A record spared because it was seen meanwhile (in memory only, so
        // the index was not told) comes due again when idle again.
        if deleted.len() < doomed.len() {
            for mac in doomed.iter().filter(|m| !deleted.contains(m)) {
                if let Some(n) = self.store.node(*mac).await?
                    && let Some(at) = self.due.rules().record_says(&n)
                {
                    self.due.again(*mac, at);
                }
            }
        }
        if !deleted.is_empty() {
            tracing::info!(
                count = deleted.len(),
                after = %humantime::format_duration(after_idle),
                "reaped node records made for unknown MACs that never booted"
            );
            metrics.nodes_reaped(deleted.len());
            crate::memory::give_back();
        }
        Ok(deleted.len())
    }
}

/// The sooner of two times, either of which may be absent.
fn min(a: Option<Timestamp>, b: Option<Timestamp>) -> Option<Timestamp> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Event, EventData, EventKind, Node, NodeState};
    use crate::store::SqliteStore;

    const MIN: i64 = 60_000;

    fn sweep_of(store: &Arc<dyn Store>, reap: Option<(Duration, Arc<Metrics>)>) -> Sweep {
        let (after, metrics) = match reap {
            Some((a, m)) => (Some(a), m),
            None => (None, Arc::new(Metrics::new(&[]))),
        };
        Sweep::new(
            store.clone(),
            Timeline::new(store.clone()),
            Timeouts::default(),
            after,
            metrics,
        )
    }

    async fn setup() -> (Arc<dyn Store>, Sweep) {
        let store: Arc<dyn Store> = Arc::new(SqliteStore::in_memory().await.unwrap());
        let sweep = sweep_of(&store, None);
        (store, sweep)
    }

    fn mac(n: u8) -> Mac {
        Mac::new([0x52, 0x54, 0, 0, 0, n])
    }

    /// Node `n`, discovered at 0 and now in `state`.
    async fn node_in(store: &Arc<dyn Store>, n: u8, state: NodeState) {
        let node = Node::discovered(mac(n), "discovery", "t".into(), Timestamp(0));
        store.put_nodes(vec![node]).await.unwrap();
        store.set_node_state(mac(n), state, None).await.unwrap();
    }

    /// Node `n`'s timeline says `data` at minute `min`.
    async fn event_at(store: &Arc<dyn Store>, n: u8, min: i64, data: EventData) {
        let e = Event::new(Timestamp(min * MIN), data);
        store.add_event(mac(n), &e).await.unwrap();
    }

    #[tokio::test]
    async fn bare_records_of_unknown_macs_are_reaped_once_idle_and_no_other() {
        use crate::model::{LeaseState, NodeOrigin};
        use crate::store::LeaseRequest;
        let (store, _) = setup().await;
        let metrics = Arc::new(Metrics::new(&[]));
        let mut sweep = sweep_of(&store, Some((Duration::from_secs(3600), metrics.clone())));
        let bare = |n: u8| Node::discovered(mac(n), "discovery", format!("t{n}"), Timestamp(0));
        let mut admin = bare(2);
        admin.origin = NodeOrigin::Admin;
        let mut protected = bare(3);
        protected.protected = true;
        let mut booting = bare(4);
        booting.state = NodeState::Booting;
        let mut labelled = bare(5);
        labelled.labels.insert("rack".into(), "r1".into());
        let leased = bare(6);
        let mut seen_later = bare(7);
        seen_later.last_seen = Some(Timestamp(30 * MIN));
        store
            .put_nodes(vec![
                bare(1),
                admin,
                protected,
                booting,
                labelled,
                leased,
                seen_later,
            ])
            .await
            .unwrap();
        // mac(6) renews an address all along: the record is in use.
        store
            .allocate(&LeaseRequest {
                mac: mac(6),
                ranges: vec![("10.0.0.10".parse().unwrap(), "10.0.0.20".parse().unwrap())],
                fixed: None,
                wanted: None,
                exact: false,
                state: LeaseState::Bound,
                expires: Timestamp(300 * MIN),
                now: Timestamp(0),
            })
            .await
            .unwrap()
            .unwrap();

        assert_eq!(sweep.pass(Timestamp(59 * MIN)).await.unwrap().reaped, 0);
        assert_eq!(sweep.pass(Timestamp(61 * MIN)).await.unwrap().reaped, 1);
        assert!(store.node(mac(1)).await.unwrap().is_none(), "reaped");
        for n in 2..=7 {
            assert!(store.node(mac(n)).await.unwrap().is_some(), "{n} kept");
        }
        // Idle an hour since it was last seen: its turn comes then.
        assert_eq!(sweep.pass(Timestamp(91 * MIN)).await.unwrap().reaped, 1);
        assert!(store.node(mac(7)).await.unwrap().is_none());
        let text = metrics.render(crate::metrics::Format::Text).unwrap();
        assert!(
            text.lines().any(|l| l == "rackboot_nodes_reaped_total 2"),
            "{text}"
        );
    }

    #[tokio::test]
    async fn a_fleet_of_quiet_records_leaves_a_pass_nothing_to_look_at() {
        use crate::model::NodeOrigin;
        let (store, mut sweep) = setup().await;
        // Ten thousand records imported for machines not yet switched on.
        let fleet = (0..10_000u32)
            .map(|i| {
                let [_, a, b, c] = i.to_be_bytes();
                let mut n = Node::discovered(
                    Mac::new([0x02, 0, 0, a, b, c]),
                    "local",
                    format!("n{i}"),
                    Timestamp(0),
                );
                n.origin = NodeOrigin::Admin;
                n.last_seen = None;
                n
            })
            .collect();
        store.put_nodes(fleet).await.unwrap();
        assert!(sweep.due().is_empty(), "{} due", sweep.due().len());
        // One that installed and went to its disk: looked at once when
        // quiet, then not again until it does something.
        node_in(&store, 1, NodeState::Installed).await;
        store
            .touch_node(mac(1), None, Timestamp(MIN))
            .await
            .unwrap();
        let installed = EventData::ReportInstalled {
            bootenv: "install".into(),
            output: String::new(),
        };
        event_at(&store, 1, 1, installed).await;
        assert_eq!(sweep.due().len(), 1);
        assert_eq!(
            sweep.pass(Timestamp(60 * MIN)).await.unwrap(),
            Swept::default()
        );
        assert!(sweep.due().is_empty(), "{} due", sweep.due().len());
        // Its next step puts it back.
        event_at(
            &store,
            1,
            61,
            EventData::ReportBooted {
                output: String::new(),
            },
        )
        .await;
        assert_eq!(sweep.due().next(), Some(Timestamp(63 * MIN)));
    }

    #[tokio::test]
    async fn nothing_is_reaped_when_reaping_is_off() {
        let (store, mut sweep) = setup().await;
        let n = Node::discovered(mac(1), "discovery", "t".into(), Timestamp(0));
        store.put_nodes(vec![n]).await.unwrap();
        assert_eq!(sweep.pass(Timestamp(1000 * MIN)).await.unwrap().reaped, 0);
        assert!(store.node(mac(1)).await.unwrap().is_some());
    }

    #[tokio::test]
    async fn an_expired_lease_reverts_with_an_event() {
        let (store, mut sweep) = setup().await;
        let mut n = Node::discovered(mac(1), "local", "t".into(), Timestamp(0));
        n.next_bootenv = Some("install".into());
        n.bootenv_expires = Some(Timestamp(120 * MIN));
        store.put_nodes(vec![n]).await.unwrap();

        assert_eq!(
            sweep
                .pass(Timestamp(119 * MIN))
                .await
                .unwrap()
                .leases_expired,
            0
        );
        let s = sweep.pass(Timestamp(121 * MIN)).await.unwrap();
        assert_eq!(s.leases_expired, 1);
        let n = store.node(mac(1)).await.unwrap().unwrap();
        assert_eq!(
            (n.bootenv.as_str(), n.next_bootenv, n.bootenv_expires),
            ("local", None, None)
        );
        let events = store.events(mac(1)).await.unwrap();
        let e = events
            .iter()
            .find(|e| e.kind() == EventKind::BootenvChanged)
            .expect("bootenv.changed");
        let said = e.sentence();
        assert!(said.starts_with("install until "), "{said}");
        assert!(
            said.contains("-> local: the lease on install ran out"),
            "{said}"
        );
        // Nothing left to do.
        assert_eq!(
            sweep.pass(Timestamp(122 * MIN)).await.unwrap(),
            Swept::default()
        );
    }

    #[tokio::test]
    async fn a_stalled_boot_fails_once_with_its_diagnosis() {
        let (store, mut sweep) = setup().await;
        node_in(&store, 2, NodeState::Booting).await;
        let kernel = EventData::HttpKernel {
            path: "x86_64/vmlinuz".into(),
            range: None,
        };
        event_at(&store, 2, 1, kernel).await;

        assert_eq!(sweep.pass(Timestamp(5 * MIN)).await.unwrap().stalls, 0);
        assert_eq!(sweep.pass(Timestamp(12 * MIN)).await.unwrap().stalls, 1);
        let n = store.node(mac(2)).await.unwrap().unwrap();
        assert_eq!(n.state, NodeState::Failed);
        let reason = n.state_reason.unwrap();
        assert!(
            reason.starts_with("kernel x86_64/vmlinuz fetched at"),
            "{reason}"
        );
        let events = store.events(mac(2)).await.unwrap();
        let last = events.last().unwrap();
        assert_eq!(last.kind(), EventKind::State);
        assert!(
            last.sentence().starts_with("booting -> failed: kernel"),
            "{last}"
        );
        // Said once, not every pass; also after a restart (a new sweep).
        assert_eq!(sweep.pass(Timestamp(20 * MIN)).await.unwrap().stalls, 0);
        let mut fresh = sweep_of(&store, None);
        assert_eq!(fresh.pass(Timestamp(20 * MIN)).await.unwrap().stalls, 0);
    }

    #[tokio::test]
    async fn a_booted_node_that_stops_reporting_is_unreachable() {
        let (store, mut sweep) = setup().await;
        node_in(&store, 3, NodeState::Configuring).await;
        for (min, data) in [
            (
                1,
                EventData::ReportBooted {
                    output: String::new(),
                },
            ),
            (
                2,
                EventData::ConfigPull {
                    scripts: vec!["hello.sh".into()],
                },
            ),
        ] {
            event_at(&store, 3, min, data).await;
        }
        assert_eq!(sweep.pass(Timestamp(13 * MIN)).await.unwrap().stalls, 1);
        let n = store.node(mac(3)).await.unwrap().unwrap();
        assert_eq!(n.state, NodeState::Unreachable);
        assert!(n.state_reason.unwrap().contains("config script list"));
    }

    #[tokio::test]
    async fn a_configured_node_whose_heartbeats_stop_is_unreachable() {
        let (store, mut sweep) = setup().await;
        node_in(&store, 4, NodeState::Configured).await;
        let configured = EventData::ReportConfigured {
            output: String::new(),
        };
        event_at(&store, 4, 1, configured).await;
        // Heartbeats (wait requests) every 25 s for ten minutes.
        let mut t = MIN;
        while t < 11 * MIN {
            store.touch_node(mac(4), None, Timestamp(t)).await.unwrap();
            assert_eq!(sweep.pass(Timestamp(t + 1000)).await.unwrap().stalls, 0);
            t += 25_000;
        }
        let last = t - 25_000;
        // Silence: the default heartbeat timeout is 2 minutes.
        assert_eq!(
            sweep
                .pass(Timestamp(last + 2 * MIN - 1))
                .await
                .unwrap()
                .stalls,
            0
        );
        assert_eq!(
            sweep.pass(Timestamp(last + 2 * MIN)).await.unwrap().stalls,
            1
        );
        let n = store.node(mac(4)).await.unwrap().unwrap();
        assert_eq!(n.state, NodeState::Unreachable);
        let reason = n.state_reason.unwrap();
        assert!(reason.starts_with("configured at "), "{reason}");
        assert!(reason.contains("no heartbeat since"), "{reason}");
    }
}
