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
//! `[lifecycle] reap_discovered_after`. The candidates come out of the scan
//! the pass makes anyway; at most [`REAP_PER_PASS`] go per pass, in one
//! write.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::boot::{Timeouts, diagnose, lifecycle, stall_deadline};
use crate::control::timeline::Timeline;
use crate::metrics::Metrics;
use crate::model::{LeaseState, Mac, Node, Timestamp};
use crate::store::{LeaderTicks, NodeQuery, Store, StoreError};

/// How often the sweep runs: a lease is reverted at most this late.
pub const INTERVAL: Duration = Duration::from_secs(5);

/// Records reaped in one pass at most: a flood's leftovers go at up to
/// 200 a second, and no pass holds the store for long.
pub const REAP_PER_PASS: usize = 1000;

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

/// The sweep and what it remembers between passes: per node, the last-seen
/// time it was looked at with and when its boot could next count as
/// stalled, so a quiet node's timeline is not read again every pass.
pub struct Sweep {
    store: Arc<dyn Store>,
    timeline: Timeline,
    timeouts: Timeouts,
    checked: HashMap<Mac, Checked>,
    /// `[lifecycle] reap_discovered_after`, and where reaping is counted.
    reap: Option<(Duration, Arc<Metrics>)>,
}

struct Checked {
    last_seen: Option<Timestamp>,
    /// `None`: nothing pending until the node does something new.
    recheck_at: Option<Timestamp>,
}

impl Sweep {
    pub fn new(store: Arc<dyn Store>, timeline: Timeline, timeouts: Timeouts) -> Sweep {
        Sweep {
            store,
            timeline,
            timeouts,
            checked: HashMap::new(),
            reap: None,
        }
    }

    /// Reaps bare records idle for `after` (`None`: never), counting them in
    /// `metrics`.
    pub fn reaping(mut self, after: Option<Duration>, metrics: Arc<Metrics>) -> Sweep {
        self.reap = after.map(|a| (a, metrics));
        self
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

    /// One pass at `now`.
    pub async fn pass(&mut self, now: Timestamp) -> Result<Swept, StoreError> {
        let mut swept = Swept::default();
        let quiet = self
            .timeouts
            .report
            .min(self.timeouts.install)
            .min(self.timeouts.heartbeat)
            .as_millis() as i64;
        // Only nodes with something to look at: in a storm nearly every node
        // was seen moments ago, and copying all their records every pass
        // would hold the store (and the DHCP answers waiting on it).
        let mut wanted = vec![
            // A bootenv lease ran out (what lifecycle::expire_lease acts on).
            NodeQuery {
                bootenv_expired_by: Some(now),
                ..NodeQuery::default()
            },
            NodeQuery {
                seen_by: Some(Timestamp(now.millis() - quiet)),
                ..NodeQuery::default()
            },
        ];
        if let Some((after, _)) = &self.reap {
            wanted.push(reapable(now, *after));
        }
        let nodes = self.store.nodes_where(&wanted).await?;
        let (nodes, reaped) = self.reap(nodes, now).await?;
        swept.reaped = reaped;
        // A node no longer quiet is looked at afresh once it is again.
        let candidates: HashSet<Mac> = nodes.iter().map(|n| n.mac).collect();
        self.checked.retain(|mac, _| candidates.contains(mac));
        for node in nodes {
            let mac = node.mac;
            if lifecycle::expire_lease(&node, now).is_some() {
                let changed = self
                    .timeline
                    .change_bootenv(mac, move |n| lifecycle::expire_lease(n, now))
                    .await;
                match changed {
                    Ok(Some(_)) => swept.leases_expired += 1,
                    Ok(None) => {}
                    Err(e) if e.is_not_found() => continue,
                    Err(e) => return Err(e),
                }
            }
            // A boot stalls only after `quiet` without a step. Until a node
            // has been unseen that long its timeline (a read from the file)
            // is not needed: a stall is at worst noticed a little after its
            // deadline, never missed, and a pass stays cheap in a storm.
            let seen = node.last_seen.unwrap_or(node.created);
            if now.millis() - seen.millis() < quiet {
                continue;
            }
            let due = match self.checked.get(&mac) {
                None => true,
                Some(c) => c.last_seen != node.last_seen || c.recheck_at.is_some_and(|t| t <= now),
            };
            if !due {
                continue;
            }
            let events = self.store.events(mac).await?;
            let mut recheck_at = stall_deadline(&node, &events, &self.timeouts);
            if let Some(stall) = diagnose(&node, &events, now, &self.timeouts) {
                recheck_at = None;
                let already = node.state == stall.verdict
                    && node.state_reason.as_deref() == Some(stall.reason.as_str());
                if !already {
                    let (seen, state) = (node.last_seen, node.state);
                    let set = self
                        .timeline
                        .set_state_if(mac, stall.verdict, stall.reason, move |n| {
                            n.last_seen == seen && n.state == state
                        })
                        .await;
                    match set {
                        Ok(true) => swept.stalls += 1,
                        // It moved on meanwhile: look again next pass.
                        Ok(false) => {
                            self.checked.remove(&mac);
                            continue;
                        }
                        Err(e) if e.is_not_found() => continue,
                        Err(e) => return Err(e),
                    }
                }
            }
            self.checked.insert(
                mac,
                Checked {
                    last_seen: node.last_seen,
                    recheck_at,
                },
            );
        }
        Ok(swept)
    }

    /// Deletes the reapable records among `nodes` (up to
    /// [`REAP_PER_PASS`]) and returns the others, and how many went.
    async fn reap(
        &mut self,
        nodes: Vec<Node>,
        now: Timestamp,
    ) -> Result<(Vec<Node>, usize), StoreError> {
        let Some((after, metrics)) = self.reap.clone() else {
            return Ok((nodes, 0));
        };
        let reapable = reapable(now, after);
        let mut doomed = Vec::new();
        let mut kept = Vec::with_capacity(nodes.len());
        for n in nodes {
            if doomed.len() < REAP_PER_PASS && reapable.matches(&n) {
                // An address it still holds (a renewing client that never
                // PXE boots) keeps it: the record is in use.
                let holds = self
                    .store
                    .lease_of(n.mac)
                    .await?
                    .is_some_and(|l| l.state == LeaseState::Bound && l.is_live(now));
                if !holds {
                    doomed.push(n.mac);
                    continue;
                }
            }
            kept.push(n);
        }
        if doomed.is_empty() {
            return Ok((kept, 0));
        }
        // Only if it is still reapable: a request meanwhile moved its
        // last-seen time past `now - after` (it came after this pass began),
        // an edit made it more than bare.
        let deleted = self.store.delete_nodes_if(&doomed, &reapable).await?;
        for mac in &deleted {
            self.checked.remove(mac);
        }
        if !deleted.is_empty() {
            tracing::info!(
                count = deleted.len(),
                after = %humantime::format_duration(after),
                "reaped node records made for unknown MACs that never booted"
            );
            metrics.nodes_reaped(deleted.len());
        }
        Ok((kept, deleted.len()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Event, EventData, EventKind, Node, NodeState};
    use crate::store::SqliteStore;

    const MIN: i64 = 60_000;

    async fn setup() -> (Arc<dyn Store>, Sweep) {
        let store: Arc<dyn Store> = Arc::new(SqliteStore::in_memory().await.unwrap());
        let sweep = Sweep::new(
            store.clone(),
            Timeline::new(store.clone()),
            Timeouts::default(),
        );
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
        let (store, sweep) = setup().await;
        let metrics = Arc::new(Metrics::new(&[]));
        let mut sweep = sweep.reaping(Some(Duration::from_secs(3600)), metrics.clone());
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
    async fn nothing_is_reaped_when_reaping_is_off() {
        let (store, sweep) = setup().await;
        let mut sweep = sweep.reaping(None, Arc::new(Metrics::new(&[])));
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
        let mut fresh = Sweep::new(
            store.clone(),
            Timeline::new(store.clone()),
            Timeouts::default(),
        );
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
