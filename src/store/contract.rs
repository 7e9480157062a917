//! The contract every store engine keeps: one battery of tests written
//! against `dyn Store` alone (nodes, leases under concurrency, events,
//! reports, counters, names, reopening and crashing). An engine joins by
//! implementing [`Engine`] (how to open it at a place, what a crash leaves
//! there) and adding one line at the bottom of this file; each case then
//! runs as a test of its own, named `store::contract::<engine>::<case>`.
//! What only one engine has (SQLite's journal, file modes, old schemas) is
//! tested beside that engine.

use std::net::Ipv4Addr;
use std::path::Path;
use std::sync::Arc;

use super::{
    Change, EVENTS_PER_NODE, LeaseRequest, NodeQuery, REPORTS_PER_NODE, Store, StoreHealth,
    Subscriber, set_fields,
};
use crate::model::{
    BootArch, Event, EventData, EventKind, Lease, LeaseState, Mac, Node, NodeOrigin, NodeState,
    ScriptReport, Timestamp,
};
use crate::names::NameTable;

/// How the battery makes and breaks the stores of one engine.
pub(crate) trait Engine {
    /// The appliance the engine names on each event it records: where
    /// several appliances share the store, its timelines say which one
    /// recorded what.
    const APPLIANCE: Option<&'static str>;

    /// Opens the store kept at `place` (an empty directory the first time).
    /// Opened again at the same place once the store before is dropped, it
    /// holds everything the one before acknowledged.
    async fn open(place: &Path) -> Arc<dyn Store>;

    /// What a process killed at once (`kill -9`) while it ran the store
    /// at `from` leaves, ready to be opened at `to` (an empty directory).
    /// The store at `from` runs on.
    fn crash(from: &Path, to: &Path);
}

/// One `#[tokio::test]` per contract case for the engine `$harness`
/// (an [`Engine`]), in a module named `$engine`.
macro_rules! store_contract_tests {
    ($engine:ident, $harness:ty) => {
        mod $engine {
            $crate::store::contract::cases!($harness;
                nodes_are_created_once_and_read_back,
                edits_return_before_and_after_and_refuse_clashes,
                imports_are_all_or_none_and_may_swap_names,
                edit_nodes_reads_and_writes_in_one_step_all_or_nothing,
                a_deleted_node_takes_its_timeline_and_reports_but_not_its_lease,
                queries_select_what_they_say_and_deletes_recheck,
                allocation_never_doubles_an_address_and_keeps_a_macs_lease,
                fixed_and_wanted_addresses_are_honoured,
                an_exact_request_binds_only_the_address_it_names,
                declined_addresses_leave_the_pool_until_they_expire,
                visiting_leases_shows_those_in_the_range_in_address_order,
                concurrent_allocations_never_give_one_address_to_two_macs,
                events_are_kept_in_order_and_bounded_per_node,
                reports_are_durable_bounded_and_count_what_was_dropped,
                config_generations_bump_all_or_none_and_survive_reopening,
                names_and_addresses_answer_from_records_and_leases,
                the_name_table_follows_nodes_and_leases,
                the_feed_gives_a_snapshot_then_every_change_in_order,
                everything_acknowledged_survives_reopening,
                origins_survive_and_conditional_deletes_are_durable,
                a_new_node_record_and_its_lease_survive_a_crash,
                a_change_acknowledged_before_a_crash_is_not_undone,
                rollouts_are_made_once_edited_one_at_a_time_and_survive_reopening,
            );
        }
    };
}

/// The tests of [`store_contract_tests!`], each running its case.
macro_rules! cases {
    ($harness:ty; $($case:ident),+ $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $case() {
                $crate::store::contract::$case::<$harness>().await
            }
        )+
    };
}
pub(crate) use cases;

fn mac(n: u8) -> Mac {
    Mac::new([0x52, 0x54, 0, 0, 0, n])
}

fn ip(s: &str) -> Ipv4Addr {
    s.parse().unwrap()
}

/// A bound lease for `m` at `now` (for an hour) from 10.0.0.10–12.
/// A bound lease request for `m` in 10.0.0.10–12, an hour from `now`.
pub(crate) fn req(m: Mac, now: i64) -> LeaseRequest {
    LeaseRequest {
        mac: m,
        ranges: vec![(ip("10.0.0.10"), ip("10.0.0.12"))],
        fixed: None,
        wanted: None,
        exact: false,
        state: LeaseState::Bound,
        expires: Timestamp(now + 3_600_000),
        now: Timestamp(now),
    }
}

/// A record for `mac(n)` as DHCP makes it, token `t<n>`.
fn discovered(n: u8) -> Node {
    Node::discovered(mac(n), "discovery", format!("t{n}"), Timestamp(1))
}

/// A record for `mac(n)` called `host`, with a fixed address if given.
fn named(n: u8, host: &str, fixed: Option<&str>) -> Node {
    Node {
        hostname: host.into(),
        ipv4: fixed.map(ip),
        ..discovered(n)
    }
}

/// `e` as the engine `E` gives it back: named after the appliance that
/// recorded it, where the engine names one.
fn recorded<E: Engine>(mut e: Event) -> Event {
    e.appliance = E::APPLIANCE.map(String::from);
    e
}

/// An event of `kind` whose sentence is `text` (a note: the store keeps
/// every kind of data alike).
fn event(at: i64, kind: EventKind, text: impl Into<String>) -> Event {
    Event::new(
        Timestamp(at),
        EventData::Note {
            of: kind,
            text: text.into(),
        },
    )
}

pub(crate) fn report(i: i64) -> ScriptReport {
    ScriptReport {
        at: Timestamp(i),
        generation: 1,
        script: format!("{i:02}-s.sh"),
        status: (i % 3) as i32,
        duration_ms: (i % 2 == 0).then_some(i as u64 * 10),
        output: format!("out {i}"),
    }
}

/// Drops `s` (the last handle) and opens its place again.
async fn reopen<E: Engine>(s: Arc<dyn Store>, place: &Path) -> Arc<dyn Store> {
    assert_eq!(
        Arc::strong_count(&s),
        1,
        "the battery holds the only handle"
    );
    drop(s);
    E::open(place).await
}

/// A store holding b1 (10.0.0.1) and b2 (10.0.0.2), in a folder of its own.
async fn with_b1_b2<E: Engine>() -> (tempfile::TempDir, Arc<dyn Store>) {
    with_nodes::<E>(vec![
        named(1, "b1", Some("10.0.0.1")),
        named(2, "b2", Some("10.0.0.2")),
    ])
    .await
}

/// A store holding `nodes`, in a folder of its own.
async fn with_nodes<E: Engine>(nodes: Vec<Node>) -> (tempfile::TempDir, Arc<dyn Store>) {
    let dir = tempfile::tempdir().unwrap();
    let s = E::open(dir.path()).await;
    s.put_nodes(nodes).await.unwrap();
    (dir, s)
}

/// The origin of each record of `macs`, which must all exist.
pub(crate) async fn origins(s: &dyn Store, macs: std::ops::RangeInclusive<u8>) -> Vec<NodeOrigin> {
    let mut origins = Vec::new();
    for n in macs {
        origins.push(s.node(mac(n)).await.unwrap().unwrap().origin);
    }
    origins
}

fn summary(nodes: &[Node]) -> Vec<(Mac, &str, Option<Ipv4Addr>, &str)> {
    nodes
        .iter()
        .map(|n| (n.mac, n.hostname.as_str(), n.ipv4, n.bootenv.as_str()))
        .collect()
}

pub(crate) async fn nodes_are_created_once_and_read_back<E: Engine>() {
    let dir = tempfile::tempdir().unwrap();
    let s = E::open(dir.path()).await;
    let mut n = Node::discovered(mac(1), "discovery", "t1".into(), Timestamp(5));
    n.labels.insert("rack".into(), "r1".into());
    let (got, created) = s.create_node_if_absent(n.clone()).await.unwrap();
    assert!(created);
    assert_eq!(got, n);
    let other = Node::discovered(mac(1), "local", "t2".into(), Timestamp(6));
    let (got, created) = s.create_node_if_absent(other).await.unwrap();
    assert!(!created);
    assert_eq!(got.bootenv, "discovery", "the first record stays");
    // Another MAC cannot take its hostname.
    let clash = Node {
        hostname: n.hostname.to_uppercase(),
        ..discovered(2)
    };
    let err = s.create_node_if_absent(clash).await.unwrap_err();
    assert!(err.is_conflict(), "{err}");
    assert!(s.node(mac(2)).await.unwrap().is_none());

    s.set_node_state(mac(1), NodeState::Failed, Some("why"))
        .await
        .unwrap();
    s.touch_node(mac(1), Some(BootArch::Arm64Efi), Timestamp(9))
        .await
        .unwrap();
    s.set_node_relay_info(mac(1), Some("circuit-id 1/2"))
        .await
        .unwrap();
    let got = s.node(mac(1)).await.unwrap().unwrap();
    assert_eq!(
        (got.state, got.state_reason.as_deref()),
        (NodeState::Failed, Some("why"))
    );
    assert_eq!(
        (got.arch, got.last_seen, got.relay_info.as_deref()),
        (
            Some(BootArch::Arm64Efi),
            Some(Timestamp(9)),
            Some("circuit-id 1/2")
        )
    );
    assert_eq!(s.nodes().await.unwrap(), vec![got]);
    for err in [
        s.set_node_state(mac(2), NodeState::Booted, None)
            .await
            .unwrap_err(),
        s.touch_node(mac(2), None, Timestamp(9)).await.unwrap_err(),
        s.add_report(mac(2), &report(0)).await.unwrap_err(),
    ] {
        assert!(err.is_not_found(), "{err}");
        assert!(!err.is_unavailable(), "{err}");
    }
}

pub(crate) async fn edits_return_before_and_after_and_refuse_clashes<E: Engine>() {
    let (_dir, s) = with_b1_b2::<E>().await;
    let edited = set_fields(s.as_ref(), mac(1), |n| {
        n.bootenv = "rescue".into();
        // The MAC is the key: an edit cannot move the record.
        n.mac = mac(7);
    })
    .await;
    assert_eq!(
        (
            edited.before.bootenv.as_str(),
            edited.after.bootenv.as_str()
        ),
        ("discovery", "rescue")
    );
    assert_eq!(edited.after.mac, mac(1));
    assert_eq!(s.node(mac(1)).await.unwrap(), Some(edited.after.clone()));
    assert!(s.node(mac(7)).await.unwrap().is_none());

    let refused = s
        .update_node(mac(1), Box::new(|_| Err("node b1 is protected".into())))
        .await
        .unwrap_err();
    assert!(refused.is_refused(), "{refused}");
    assert_eq!(refused.to_string(), "node b1 is protected");
    let clashes: [fn(&mut Node); 2] = [
        // Hostnames are unique whatever their case.
        |n| n.hostname = "B2".into(),
        |n| n.ipv4 = Some(ip("10.0.0.2")),
    ];
    for clash in clashes {
        let err = s
            .update_node(
                mac(1),
                Box::new(move |n| {
                    n.bootenv = "local".into();
                    clash(n);
                    Ok(())
                }),
            )
            .await
            .unwrap_err();
        assert!(err.is_conflict() && !err.is_refused(), "{err}");
    }
    assert_eq!(
        s.node(mac(1)).await.unwrap(),
        Some(edited.after),
        "nothing of a refused edit is written"
    );
    let err = s
        .update_node(mac(9), Box::new(|_| Ok(())))
        .await
        .unwrap_err();
    assert!(err.is_not_found(), "{err}");
}

pub(crate) async fn imports_are_all_or_none_and_may_swap_names<E: Engine>() {
    let (_dir, s) = with_b1_b2::<E>().await;
    // One bad record refuses the whole import: nothing of it is written.
    let bad = [
        vec![named(3, "b3", None), named(4, "b4", Some("10.0.0.1"))],
        vec![named(3, "b3", None), named(4, "B1", None)],
        vec![named(3, "b3", None), named(4, "b3", None)],
        vec![named(3, "b3", None), named(3, "b4", None)],
    ];
    for import in bad {
        let err = s.put_nodes(import).await.unwrap_err();
        assert!(err.is_conflict(), "{err}");
        assert!(s.node(mac(3)).await.unwrap().is_none(), "{err}");
        assert!(s.node(mac(4)).await.unwrap().is_none(), "{err}");
    }
    // Swapping addresses and names between records in one import is fine.
    s.put_nodes(vec![
        named(1, "b2", Some("10.0.0.2")),
        named(2, "b1", Some("10.0.0.1")),
    ])
    .await
    .unwrap();
    assert_eq!(
        summary(&s.nodes().await.unwrap()),
        [
            (mac(1), "b2", Some(ip("10.0.0.2")), "discovery"),
            (mac(2), "b1", Some(ip("10.0.0.1")), "discovery"),
        ]
    );
}

pub(crate) async fn edit_nodes_reads_and_writes_in_one_step_all_or_nothing<E: Engine>() {
    let (_dir, s) = with_nodes::<E>(vec![named(1, "a1", None), named(2, "a2", None)]).await;
    s.set_node_state(mac(2), NodeState::Booted, None)
        .await
        .unwrap();
    // The edit sees the records in force, the state change included.
    let written = s
        .edit_nodes(Box::new(move |all| {
            let mut out: Vec<Node> = all.values().collect();
            out.sort_by_key(|n| n.mac);
            for n in &mut out {
                n.bootenv = "rescue".into();
            }
            out.push(named(3, "a3", None));
            Ok(out)
        }))
        .await
        .unwrap();
    // Each with the record it replaced, in the order given.
    let befores: Vec<Option<Mac>> = written
        .iter()
        .map(|w| w.before.as_ref().map(|b| b.mac))
        .collect();
    assert_eq!(befores, [Some(mac(1)), Some(mac(2)), None]);
    assert_eq!(written[1].before.as_ref().unwrap().bootenv, "discovery");
    assert_eq!(written[1].after.bootenv, "rescue");
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
    assert!(err.is_refused(), "{err}");
    // So does a clash.
    let err = s
        .edit_nodes(Box::new(move |all| {
            let mut one = all.get(&mac(1)).unwrap();
            one.bootenv = "local".into();
            Ok(vec![one, named(4, "A2", None)])
        }))
        .await
        .unwrap_err();
    assert!(err.is_conflict(), "{err}");
    assert_eq!(s.node(mac(1)).await.unwrap().unwrap().bootenv, "rescue");
    assert!(s.node(mac(4)).await.unwrap().is_none());
}

pub(crate) async fn a_deleted_node_takes_its_timeline_and_reports_but_not_its_lease<E: Engine>() {
    let (_dir, s) = with_nodes::<E>(vec![named(1, "b1", Some("10.0.0.50")), discovered(2)]).await;
    s.add_event(mac(1), &event(1, EventKind::State, "old"))
        .await
        .unwrap();
    s.add_report(mac(1), &report(1)).await.unwrap();
    let lease = s.allocate(&req(mac(1), 0)).await.unwrap().unwrap();
    // Read back first: an engine that writes lazily has them saved.
    assert_eq!(s.events(mac(1)).await.unwrap().len(), 1);
    assert!(s.delete_node(mac(1)).await.unwrap());
    assert!(!s.delete_node(mac(1)).await.unwrap());
    assert_eq!(s.node(mac(1)).await.unwrap(), None);
    assert_eq!(s.events(mac(1)).await.unwrap(), vec![]);
    assert_eq!(s.reports(mac(1)).await.unwrap(), (vec![], 0));
    // The machine may still use its address: it is not handed to another.
    assert_eq!(s.lease_of(mac(1)).await.unwrap(), Some(lease));
    // Its hostname and fixed address are free for another record.
    s.put_nodes(vec![named(3, "b1", Some("10.0.0.50"))])
        .await
        .unwrap();
    assert_eq!(s.nodes().await.unwrap().len(), 2);
}

pub(crate) async fn queries_select_what_they_say_and_deletes_recheck<E: Engine>() {
    let dir = tempfile::tempdir().unwrap();
    let s = E::open(dir.path()).await;
    let mut leased = named(1, "leased", None);
    leased.next_bootenv = Some("install".into());
    leased.bootenv_expires = Some(Timestamp(500));
    let mut quiet = discovered(2);
    quiet.last_seen = Some(Timestamp(100));
    let mut busy = discovered(3);
    busy.last_seen = Some(Timestamp(900));
    let admins = Node {
        origin: NodeOrigin::Admin,
        ..named(4, "admins", None)
    };
    s.put_nodes(vec![leased, quiet, busy, admins])
        .await
        .unwrap();
    let macs = |nodes: Vec<Node>| nodes.into_iter().map(|n| n.mac).collect::<Vec<_>>();
    let expired = NodeQuery {
        bootenv_expired_by: Some(Timestamp(600)),
        ..NodeQuery::default()
    };
    let idle = NodeQuery {
        bare_discovery: true,
        seen_by: Some(Timestamp(500)),
        ..NodeQuery::default()
    };
    assert_eq!(
        macs(s.nodes_where(std::slice::from_ref(&expired)).await.unwrap()),
        [mac(1)]
    );
    assert_eq!(
        macs(s.nodes_where(std::slice::from_ref(&idle)).await.unwrap()),
        [mac(2)]
    );
    assert_eq!(
        macs(s.nodes_where(&[idle.clone(), expired]).await.unwrap()),
        [mac(1), mac(2)],
        "any of them, by MAC"
    );
    assert_eq!(
        macs(s.nodes_where(&[NodeQuery::default()]).await.unwrap()),
        [mac(1), mac(2), mac(3), mac(4)]
    );
    assert!(s.nodes_where(&[]).await.unwrap().is_empty());

    // The node is seen after it was picked: the delete leaves it alone.
    s.touch_node(mac(2), None, Timestamp(800)).await.unwrap();
    let gone = s
        .delete_nodes_if(&[mac(1), mac(2), mac(3), mac(9)], &idle)
        .await
        .unwrap();
    assert!(gone.is_empty(), "{gone:?}");
    let gone = s
        .delete_nodes_if(
            &[mac(2), mac(3), mac(4), mac(9)],
            &NodeQuery {
                seen_by: Some(Timestamp(5000)),
                ..idle
            },
        )
        .await
        .unwrap();
    assert_eq!(gone, [mac(2), mac(3)]);
    assert_eq!(macs(s.nodes().await.unwrap()), [mac(1), mac(4)]);
    let s = reopen::<E>(s, dir.path()).await;
    assert_eq!(
        macs(s.nodes().await.unwrap()),
        [mac(1), mac(4)],
        "deleted for good"
    );
}

pub(crate) async fn allocation_never_doubles_an_address_and_keeps_a_macs_lease<E: Engine>() {
    let dir = tempfile::tempdir().unwrap();
    let s = E::open(dir.path()).await;
    let a = s.allocate(&req(mac(1), 0)).await.unwrap().unwrap();
    let b = s.allocate(&req(mac(2), 0)).await.unwrap().unwrap();
    let c = s.allocate(&req(mac(3), 0)).await.unwrap().unwrap();
    assert_eq!(
        [a.ip, b.ip, c.ip].map(|i| i.to_string()),
        ["10.0.0.10", "10.0.0.11", "10.0.0.12"]
    );
    assert_eq!(
        (b.mac, b.state, b.expires),
        (Some(mac(2)), LeaseState::Bound, Timestamp(3_600_000))
    );
    assert_eq!(
        s.allocate(&req(mac(4), 0)).await.unwrap(),
        None,
        "pool exhausted"
    );
    assert_eq!(s.lease_of(mac(4)).await.unwrap(), None);
    // Renewal keeps the address, even when asking for another one.
    let mut r = req(mac(2), 10);
    r.wanted = Some(ip("10.0.0.10"));
    let renewed = s.allocate(&r).await.unwrap().unwrap();
    assert_eq!((renewed.ip, renewed.expires), (b.ip, Timestamp(3_600_010)));
    // A release by another MAC is no release.
    assert!(!s.release(mac(2), a.ip).await.unwrap());
    assert!(s.release(mac(1), a.ip).await.unwrap());
    assert!(!s.release(mac(1), a.ip).await.unwrap());
    assert_eq!(s.lease_of(mac(1)).await.unwrap(), None);
    assert_eq!(s.lease_at(a.ip).await.unwrap(), None);
    // After expiry an address can move to another MAC.
    let late = req(mac(4), 3_600_001);
    assert_eq!(s.allocate(&late).await.unwrap().unwrap().ip, a.ip);
    let mut held: Vec<(Ipv4Addr, Option<Mac>)> = s
        .leases()
        .await
        .unwrap()
        .into_iter()
        .map(|l| (l.ip, l.mac))
        .collect();
    held.sort();
    assert_eq!(
        held,
        [
            (a.ip, Some(mac(4))),
            (b.ip, Some(mac(2))),
            (c.ip, Some(mac(3)))
        ]
    );
}

pub(crate) async fn fixed_and_wanted_addresses_are_honoured<E: Engine>() {
    let dir = tempfile::tempdir().unwrap();
    let s = E::open(dir.path()).await;
    s.create_node_if_absent(named(9, "fixed", Some("10.0.0.10")))
        .await
        .unwrap();
    // Another node's fixed address is never handed out, even when asked for.
    let mut r = req(mac(1), 0);
    r.wanted = Some(ip("10.0.0.10"));
    let other = s.allocate(&r).await.unwrap().unwrap();
    assert_eq!(other.ip, ip("10.0.0.11"), "reserved address skipped");
    // A wanted address that is free is given.
    let mut r = req(mac(2), 0);
    r.wanted = Some(ip("10.0.0.12"));
    assert_eq!(s.allocate(&r).await.unwrap().unwrap().ip, ip("10.0.0.12"));
    // One outside the ranges is not.
    let mut r = req(mac(3), 0);
    r.wanted = Some(ip("10.0.9.9"));
    assert_eq!(s.allocate(&r).await.unwrap(), None, "and the pool is full");
    // The fixed address wins over everything, also outside the ranges.
    let mut r = req(mac(9), 0);
    r.fixed = Some(ip("10.0.0.10"));
    r.wanted = Some(ip("10.0.0.11"));
    assert_eq!(s.allocate(&r).await.unwrap().unwrap().ip, ip("10.0.0.10"));
    let mut r = req(mac(9), 0);
    r.fixed = Some(ip("192.168.7.7"));
    assert_eq!(s.allocate(&r).await.unwrap().unwrap().ip, ip("192.168.7.7"));
    assert_eq!(
        s.lease_at(ip("10.0.0.10")).await.unwrap(),
        None,
        "one lease per MAC: the old one is dropped"
    );
    // A fixed address another MAC holds a live lease on waits for it to end.
    let mut r = req(mac(9), 0);
    r.fixed = Some(ip("10.0.0.11"));
    assert_eq!(s.allocate(&r).await.unwrap(), None);
    let mut r = req(mac(9), 3_600_001);
    r.fixed = Some(ip("10.0.0.11"));
    assert_eq!(s.allocate(&r).await.unwrap().unwrap().ip, ip("10.0.0.11"));
}

pub(crate) async fn an_exact_request_binds_only_the_address_it_names<E: Engine>() {
    let dir = tempfile::tempdir().unwrap();
    let s = E::open(dir.path()).await;
    let held = s.allocate(&req(mac(1), 0)).await.unwrap().unwrap();
    let mine = s.allocate(&req(mac(2), 0)).await.unwrap().unwrap();
    let exact = |m: Mac, wanted: Option<Ipv4Addr>| LeaseRequest {
        wanted,
        exact: true,
        ..req(m, 10)
    };
    // Another MAC's address: a NAK, and nothing bound or dropped.
    assert_eq!(
        s.allocate(&exact(mac(2), Some(held.ip))).await.unwrap(),
        None
    );
    // No address named: nothing (not even its current lease).
    assert_eq!(s.allocate(&exact(mac(2), None)).await.unwrap(), None);
    assert_eq!(s.lease_of(mac(2)).await.unwrap(), Some(mine.clone()));
    assert_eq!(
        s.lease_at(held.ip).await.unwrap().unwrap().mac,
        Some(mac(1))
    );
    // Its own address, or a free one, is bound as named.
    let renewed = s
        .allocate(&exact(mac(2), Some(mine.ip)))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(renewed.ip, mine.ip);
    let moved = s
        .allocate(&exact(mac(2), Some(ip("10.0.0.12"))))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(moved.ip, ip("10.0.0.12"));
    assert_eq!(s.lease_at(mine.ip).await.unwrap(), None);
}

pub(crate) async fn declined_addresses_leave_the_pool_until_they_expire<E: Engine>() {
    let dir = tempfile::tempdir().unwrap();
    let s = E::open(dir.path()).await;
    s.decline(ip("10.0.0.10"), Timestamp(1000)).await.unwrap();
    let declined = s.lease_at(ip("10.0.0.10")).await.unwrap().unwrap();
    assert_eq!((declined.mac, declined.state), (None, LeaseState::Declined));
    let got = |l: Option<Lease>| l.map(|l| l.ip.to_string());
    assert_eq!(
        got(s.allocate(&req(mac(1), 0)).await.unwrap()).as_deref(),
        Some("10.0.0.11")
    );
    assert_eq!(
        got(s.allocate(&req(mac(2), 0)).await.unwrap()).as_deref(),
        Some("10.0.0.12")
    );
    assert_eq!(
        s.allocate(&req(mac(3), 0)).await.unwrap(),
        None,
        "quarantined"
    );
    assert_eq!(
        got(s.allocate(&req(mac(3), 2000)).await.unwrap()).as_deref(),
        Some("10.0.0.10")
    );
}

pub(crate) async fn visiting_leases_shows_those_in_the_range_in_address_order<E: Engine>() {
    let dir = tempfile::tempdir().unwrap();
    let s = E::open(dir.path()).await;
    for m in 1..=3 {
        s.allocate(&req(mac(m), 0)).await.unwrap().unwrap();
    }
    let seen = |first: &str, last: &str| {
        let mut ips = Vec::new();
        s.visit_leases(ip(first), ip(last), &mut |l| ips.push(l.ip.to_string()));
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

/// Many clients at once (a rack powering on), some asking for the same
/// address: each address goes to one MAC, each MAC holds one address, and
/// exactly as many are handed out as the pool holds.
pub(crate) async fn concurrent_allocations_never_give_one_address_to_two_macs<E: Engine>() {
    const POOL: usize = 24;
    const CLIENTS: u8 = 40;
    let dir = tempfile::tempdir().unwrap();
    let s = E::open(dir.path()).await;
    let ranges = vec![
        (ip("10.0.1.1"), ip("10.0.1.12")),
        (ip("10.0.2.1"), ip("10.0.2.12")),
    ];
    let mut tasks = tokio::task::JoinSet::new();
    for m in 1..=CLIENTS {
        let s = s.clone();
        let ranges = ranges.clone();
        tasks.spawn(async move {
            let mut got = Vec::new();
            // Offer, then request what was offered (or a popular address).
            for (state, exact) in [(LeaseState::Offered, false), (LeaseState::Bound, true)] {
                let wanted = got.last().map(|l: &Lease| l.ip).or(Some(ip("10.0.1.5")));
                let r = LeaseRequest {
                    ranges: ranges.clone(),
                    wanted,
                    exact,
                    state,
                    ..req(mac(m), 0)
                };
                if let Some(l) = s.allocate(&r).await.unwrap() {
                    assert_eq!(l.mac, Some(mac(m)));
                    got.push(l);
                }
                tokio::task::yield_now().await;
            }
            (mac(m), got)
        });
    }
    let mut bound = std::collections::HashMap::new();
    while let Some(t) = tasks.join_next().await {
        let (m, got) = t.unwrap();
        if let [offer, ack] = got.as_slice() {
            assert_eq!(offer.ip, ack.ip, "{m} was bound what it was offered");
            assert!(bound.insert(ack.ip, m).is_none(), "{} twice", ack.ip);
        }
    }
    let leases = s.leases().await.unwrap();
    assert_eq!(leases.len(), POOL, "{leases:?}");
    let mut macs: Vec<Mac> = leases.iter().filter_map(|l| l.mac).collect();
    macs.sort();
    macs.dedup();
    assert_eq!(macs.len(), POOL, "one address per MAC: {leases:?}");
    for l in leases.iter().filter(|l| l.state == LeaseState::Bound) {
        assert_eq!(bound.get(&l.ip), l.mac.as_ref(), "{l:?}");
    }
}

pub(crate) async fn events_are_kept_in_order_and_bounded_per_node<E: Engine>() {
    let dir = tempfile::tempdir().unwrap();
    let s = E::open(dir.path()).await;
    // A clock stepped back: order is the order of appending, not of time.
    for (at, detail) in [(5, "first"), (4, "second")] {
        s.add_event(mac(1), &event(at, EventKind::DhcpAck, detail))
            .await
            .unwrap();
    }
    let details = |ev: Vec<Event>| ev.iter().map(Event::sentence).collect::<Vec<_>>();
    assert_eq!(
        details(s.events(mac(1)).await.unwrap()),
        ["first", "second"]
    );
    for i in 0..EVENTS_PER_NODE {
        s.add_event(mac(1), &event(10 + i, EventKind::DhcpAck, format!("{i}")))
            .await
            .unwrap();
    }
    s.add_event(mac(2), &event(0, EventKind::TftpSent, ""))
        .await
        .unwrap();
    let ev = s.events(mac(1)).await.unwrap();
    assert_eq!(ev.len() as i64, EVENTS_PER_NODE);
    assert_eq!(
        ev[0],
        recorded::<E>(event(10, EventKind::DhcpAck, "0")),
        "oldest dropped"
    );
    assert_eq!(
        ev.last().unwrap().sentence(),
        (EVENTS_PER_NODE - 1).to_string()
    );
    assert_eq!(
        s.events(mac(2)).await.unwrap(),
        [recorded::<E>(event(0, EventKind::TftpSent, ""))]
    );
    assert!(s.events(mac(3)).await.unwrap().is_empty());
    let s = reopen::<E>(s, dir.path()).await;
    s.add_event(mac(1), &event(0, EventKind::HttpKernel, "after"))
        .await
        .unwrap();
    let ev = s.events(mac(1)).await.unwrap();
    assert!(ev.len() as i64 <= EVENTS_PER_NODE);
    assert_eq!(
        ev.last().unwrap().sentence(),
        "after",
        "still appended last"
    );
}

pub(crate) async fn reports_are_durable_bounded_and_count_what_was_dropped<E: Engine>() {
    let (dir, s) = with_nodes::<E>(vec![named(1, "n1", None), named(2, "n2", None)]).await;
    let err = s.add_report(mac(7), &report(0)).await.unwrap_err();
    assert!(err.is_not_found(), "{err}");
    for i in 0..(REPORTS_PER_NODE + 3) {
        s.add_report(mac(1), &report(i)).await.unwrap();
    }
    s.add_report(mac(2), &report(0)).await.unwrap();
    let (kept, dropped) = s.reports(mac(1)).await.unwrap();
    assert_eq!((kept.len() as i64, dropped), (REPORTS_PER_NODE, 3));
    assert_eq!(kept[0], report(3), "oldest dropped first");
    assert_eq!(kept.last(), Some(&report(REPORTS_PER_NODE + 2)));
    let s = reopen::<E>(s, dir.path()).await;
    let (kept, dropped) = s.reports(mac(1)).await.unwrap();
    assert_eq!((kept.len() as i64, dropped), (REPORTS_PER_NODE, 3));
    assert_eq!(s.reports(mac(2)).await.unwrap(), (vec![report(0)], 0));
    assert_eq!(s.reports(mac(9)).await.unwrap(), (vec![], 0));
    // A deleted node takes its reports and its drop count along.
    assert!(s.delete_node(mac(1)).await.unwrap());
    assert_eq!(s.reports(mac(1)).await.unwrap(), (vec![], 0));
}

pub(crate) async fn config_generations_bump_all_or_none_and_survive_reopening<E: Engine>() {
    let (dir, s) =
        with_nodes::<E>((1..=3).map(|n| named(n, &format!("g{n}"), None)).collect()).await;
    assert!(s.bump_config_generation(&[]).await.unwrap().is_empty());
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
    assert!(err.is_not_found(), "{err}");
    assert_eq!(s.node(mac(3)).await.unwrap().unwrap().config_generation, 0);
    // A later write of the record (a touch) keeps the bump.
    s.touch_node(mac(2), None, Timestamp(120_000))
        .await
        .unwrap();
    let s = reopen::<E>(s, dir.path()).await;
    let gens: Vec<u64> = s
        .nodes()
        .await
        .unwrap()
        .iter()
        .map(|n| n.config_generation)
        .collect();
    assert_eq!(gens, [1, 2, 0]);
}

pub(crate) async fn names_and_addresses_answer_from_records_and_leases<E: Engine>() {
    let (_dir, s) = with_nodes::<E>(vec![
        named(9, "Fixed9", Some("10.0.0.10")),
        named(2, "leased2", None),
    ])
    .await;
    let now = Timestamp(0);
    // mac(1) has a lease but no record; mac(2) a record and a lease.
    let one = s.allocate(&req(mac(1), 0)).await.unwrap().unwrap();
    let two = s.allocate(&req(mac(2), 0)).await.unwrap().unwrap();
    assert_eq!((one.ip, two.ip), (ip("10.0.0.11"), ip("10.0.0.12")));
    assert_eq!(
        s.host_addr("fixed9", now).await.unwrap(),
        Some(ip("10.0.0.10")),
        "any case; the fixed address without a lease"
    );
    assert_eq!(s.host_addr("LEASED2", now).await.unwrap(), Some(two.ip));
    assert_eq!(s.host_addr("nobody", now).await.unwrap(), None);
    assert_eq!(
        s.host_addr("leased2", Timestamp(3_600_000)).await.unwrap(),
        None,
        "an expired lease names no address"
    );
    assert_eq!(
        s.addr_host(ip("10.0.0.10"), now).await.unwrap().as_deref(),
        Some("Fixed9")
    );
    assert_eq!(
        s.addr_host(two.ip, now).await.unwrap().as_deref(),
        Some("leased2")
    );
    assert_eq!(
        s.addr_host(one.ip, now).await.unwrap(),
        None,
        "mac 1 has no node record"
    );
    assert_eq!(s.mac_at(ip("10.0.0.10"), now).await.unwrap(), Some(mac(9)));
    assert_eq!(s.mac_at(one.ip, now).await.unwrap(), Some(mac(1)));
    assert_eq!(s.mac_at(ip("10.0.0.99"), now).await.unwrap(), None);
    assert_eq!(
        s.mac_at(one.ip, Timestamp(3_600_000)).await.unwrap(),
        None,
        "expired"
    );
    // An offer names no host (nothing is promised yet).
    assert!(s.release(mac(2), two.ip).await.unwrap());
    let offer = LeaseRequest {
        state: LeaseState::Offered,
        ..req(mac(2), 0)
    };
    let offered = s.allocate(&offer).await.unwrap().unwrap();
    assert_eq!(s.addr_host(offered.ip, now).await.unwrap(), None);
    assert_eq!(s.host_addr("leased2", now).await.unwrap(), None);
    assert_eq!(s.mac_at(offered.ip, now).await.unwrap(), Some(mac(2)));
}

/// A name table following `s` ([`Store::subscribe`]).
fn name_table(s: &dyn Store) -> Arc<NameTable> {
    let t = Arc::new(NameTable::new());
    s.subscribe(t.clone());
    t
}

/// A subscriber that writes down what it was told, one line per change.
#[derive(Default)]
struct Told(std::sync::Mutex<Vec<String>>);

impl Subscriber for Told {
    fn changed(&self, change: &Change<'_>) {
        let line = match change {
            Change::Node(n) => format!("node {} {}", n.mac, n.hostname),
            Change::NodeGone(m) => format!("gone {m}"),
            Change::Lease(l) => format!("lease {} {:?}", l.ip, l.state),
            Change::LeaseGone(ip) => format!("lease gone {ip}"),
            Change::ConfigBumped(macs) => format!("bumped {macs:?}"),
            Change::Loaded => "loaded".to_string(),
            // Timelines are not what these tests follow.
            Change::Event(..) => return,
        };
        self.0.lock().unwrap().push(line);
    }
}

impl Told {
    fn take(&self) -> Vec<String> {
        std::mem::take(&mut *self.0.lock().unwrap())
    }
}

/// A subscriber that joins late is given what the store holds, then
/// `Loaded`, then each change as it is made, nothing twice; a reconfigure
/// is one change naming its nodes.
pub(crate) async fn the_feed_gives_a_snapshot_then_every_change_in_order<E: Engine>() {
    let dir = tempfile::tempdir().unwrap();
    let s = E::open(dir.path()).await;
    let a = Node::discovered(mac(1), "discovery", "t1".into(), Timestamp(0));
    s.create_node_if_absent(a.clone()).await.unwrap();
    let lease = s.allocate(&req(mac(1), 0)).await.unwrap().unwrap();
    let told = Arc::new(Told::default());
    s.subscribe(told.clone());
    assert_eq!(
        told.take(),
        [
            format!("node {} {}", a.mac, a.hostname),
            format!("lease {} {:?}", lease.ip, lease.state),
            "loaded".to_string(),
        ]
    );
    let b = Node::discovered(mac(2), "discovery", "t2".into(), Timestamp(0));
    s.create_node_if_absent(b.clone()).await.unwrap();
    s.bump_config_generation(&[mac(1), mac(2)]).await.unwrap();
    s.delete_node(mac(2)).await.unwrap();
    assert_eq!(
        told.take(),
        [
            format!("node {} {}", b.mac, b.hostname),
            format!("bumped {:?}", [mac(1), mac(2)]),
            format!("gone {}", mac(2)),
        ]
    );
}

/// Every way a name or address changes reaches the name table DNS answers
/// from, and it agrees with `host_addr`/`addr_host`, also after reopening.
pub(crate) async fn the_name_table_follows_nodes_and_leases<E: Engine>() {
    let dir = tempfile::tempdir().unwrap();
    let now = Timestamp::now().millis();
    let s = E::open(dir.path()).await;
    let names = name_table(s.as_ref());
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
    set_fields(s.as_ref(), mac(1), |n| {
        n.hostname = "Web1".into();
        n.ipv4 = Some("10.0.0.99".parse().unwrap());
    })
    .await;
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
    s.put_nodes(vec![Node {
        created: Timestamp(now),
        ..named(2, "db1", None)
    }])
    .await
    .unwrap();
    s.allocate(&req(mac(2), now)).await.unwrap().unwrap();
    let leased = names.host_addr("db1", Timestamp(now)).unwrap();
    s.release(mac(2), leased).await.unwrap();
    assert_eq!(names.host_addr("db1", Timestamp(now)), None);
    drop(names);

    // Reopened: the table is loaded from what the store keeps.
    let s = reopen::<E>(s, dir.path()).await;
    let names = name_table(s.as_ref());
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

/// What every call acknowledged is there after reopening: records made,
/// edited, imported and deleted, states, last-seen times, relay
/// information, offers and ACKs, events.
pub(crate) async fn everything_acknowledged_survives_reopening<E: Engine>() {
    let dir = tempfile::tempdir().unwrap();
    let s = E::open(dir.path()).await;
    s.create_node_if_absent(discovered(1)).await.unwrap();
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
    let acked = s.allocate(&req(mac(2), 0)).await.unwrap().unwrap();
    s.add_event(
        mac(1),
        &event(3, EventKind::DhcpOffer, offered.ip.to_string()),
    )
    .await
    .unwrap();
    let with_bmc = Node {
        bmc: Some(Box::new(crate::model::BmcRecord {
            driver: crate::model::Driver::Redfish,
            address: "https://10.1.0.3".into(),
            system: Some("1".into()),
            username: Some("admin".into()),
            password_secret: Some("bmc-b3".into()),
            insecure: true,
        })),
        uuid: Some("10111213-1415-1617-1819-1a1b1c1d1e1f".into()),
        ..named(3, "b3", Some("10.0.0.3"))
    };
    s.put_nodes(vec![with_bmc, named(4, "b4", Some("10.0.0.4"))])
        .await
        .unwrap();
    set_fields(s.as_ref(), mac(3), |n| {
        n.bootenv = "rescue".into();
    })
    .await;
    s.add_event(mac(4), &event(2, EventKind::DhcpAck, "10.0.0.4"))
        .await
        .unwrap();
    assert!(s.delete_node(mac(4)).await.unwrap());
    s.put_nodes(vec![named(5, "b4", Some("10.0.0.4"))])
        .await
        .unwrap();
    s.sync().await.unwrap();
    assert_eq!(
        s.health(),
        StoreHealth {
            engine: s.health().engine,
            ..StoreHealth::default()
        },
        "saved, reachable, nothing failed"
    );

    let s = reopen::<E>(s, dir.path()).await;
    let n = s.node(mac(1)).await.unwrap().unwrap();
    assert_eq!(
        (n.state, n.arch, n.relay_info.as_deref(), n.token.as_str()),
        (
            NodeState::Booting,
            Some(BootArch::Bios),
            Some("circuit-id 1/2"),
            "t1"
        )
    );
    assert_eq!(s.lease_of(mac(1)).await.unwrap(), Some(offered.clone()));
    assert_eq!(s.lease_of(mac(2)).await.unwrap(), Some(acked));
    assert_eq!(
        s.events(mac(1)).await.unwrap(),
        [recorded::<E>(event(
            3,
            EventKind::DhcpOffer,
            offered.ip.to_string()
        ))]
    );
    assert!(s.events(mac(4)).await.unwrap().is_empty());
    assert_eq!(
        summary(&s.nodes().await.unwrap()),
        [
            (mac(1), n.hostname.as_str(), None, "discovery"),
            (mac(3), "b3", Some(ip("10.0.0.3")), "rescue"),
            (mac(5), "b4", Some(ip("10.0.0.4")), "discovery"),
        ]
    );
    let b3 = s.node(mac(3)).await.unwrap().unwrap();
    assert_eq!(
        b3.uuid.as_deref(),
        Some("10111213-1415-1617-1819-1a1b1c1d1e1f"),
        "the board's UUID survives"
    );
    assert_eq!(
        b3.bmc.map(|b| b.summary()).as_deref(),
        Some("redfish https://10.1.0.3 system 1 user admin password secret bmc-b3 insecure"),
        "the BMC record survives"
    );
}

/// Who made a record is kept; `delete_nodes_if` deletes only what its
/// query still selects, for good.
pub(crate) async fn origins_survive_and_conditional_deletes_are_durable<E: Engine>() {
    let dir = tempfile::tempdir().unwrap();
    let s = E::open(dir.path()).await;
    for n in 1..=4 {
        s.create_node_if_absent(discovered(n)).await.unwrap();
    }
    set_fields(s.as_ref(), mac(2), |n| {
        n.origin = NodeOrigin::Admin;
    })
    .await;
    let gone = s
        .delete_nodes_if(
            &[mac(1), mac(2), mac(9)],
            &NodeQuery {
                bare_discovery: true,
                ..NodeQuery::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(gone, vec![mac(1)]);
    let s = reopen::<E>(s, dir.path()).await;
    assert!(s.node(mac(1)).await.unwrap().is_none(), "deleted for good");
    assert_eq!(
        origins(s.as_ref(), 2..=4).await,
        [
            NodeOrigin::Admin,
            NodeOrigin::Discovered,
            NodeOrigin::Discovered
        ]
    );
}

/// A record a client was answered for (its token went out in a boot
/// script, a DHCP ACK followed) survives `kill -9` with its token, like its
/// lease; a record deleted before the crash stays deleted, and one made
/// again keeps its new token.
pub(crate) async fn a_new_node_record_and_its_lease_survive_a_crash<E: Engine>() {
    let dir = tempfile::tempdir().unwrap();
    let after = tempfile::tempdir().unwrap();
    let s = E::open(dir.path()).await;
    for (m, token) in [(1, "aa01"), (2, "aa02"), (3, "aa03")] {
        let n = Node::discovered(mac(m), "discovery", token.into(), Timestamp(0));
        assert!(s.create_node_if_absent(n).await.unwrap().1);
    }
    let acked = s.allocate(&req(mac(1), 0)).await.unwrap().unwrap();
    assert!(s.delete_node(mac(2)).await.unwrap());
    assert!(s.delete_node(mac(3)).await.unwrap());
    let again = Node::discovered(mac(3), "discovery", "bb03".into(), Timestamp(1));
    assert!(s.create_node_if_absent(again).await.unwrap().1);
    E::crash(dir.path(), after.path());
    drop(s);

    let s = E::open(after.path()).await;
    let n1 = s
        .node(mac(1))
        .await
        .unwrap()
        .expect("the ACKed node's record");
    assert_eq!(
        (n1.token.as_str(), n1.state),
        ("aa01", NodeState::Discovered)
    );
    assert_eq!(s.lease_of(mac(1)).await.unwrap(), Some(acked));
    assert!(
        s.node(mac(2)).await.unwrap().is_none(),
        "deleted before the crash"
    );
    assert_eq!(s.node(mac(3)).await.unwrap().unwrap().token, "bb03");
}

/// Changes acknowledged before a crash (a state, an edit, a report, a
/// release) are there after it, and a record's creation replayed over them
/// does not set it back.
pub(crate) async fn a_change_acknowledged_before_a_crash_is_not_undone<E: Engine>() {
    let dir = tempfile::tempdir().unwrap();
    let after = tempfile::tempdir().unwrap();
    let s = E::open(dir.path()).await;
    s.create_node_if_absent(Node::discovered(
        mac(1),
        "discovery",
        "aa01".into(),
        Timestamp(0),
    ))
    .await
    .unwrap();
    s.set_node_state(mac(1), NodeState::Booting, None)
        .await
        .unwrap();
    set_fields(s.as_ref(), mac(1), |n| {
        n.labels.insert("rack".into(), "r1".into());
    })
    .await;
    s.add_report(mac(1), &report(1)).await.unwrap();
    let lease = s.allocate(&req(mac(1), 0)).await.unwrap().unwrap();
    assert!(s.release(mac(1), lease.ip).await.unwrap());
    s.decline(ip("10.0.0.11"), Timestamp(5000)).await.unwrap();
    E::crash(dir.path(), after.path());
    drop(s);

    let s = E::open(after.path()).await;
    let n = s.node(mac(1)).await.unwrap().unwrap();
    assert_eq!(
        (
            n.state,
            n.token.as_str(),
            n.labels.get("rack").map(String::as_str)
        ),
        (NodeState::Booting, "aa01", Some("r1"))
    );
    assert_eq!(s.reports(mac(1)).await.unwrap(), (vec![report(1)], 0));
    assert_eq!(s.lease_of(mac(1)).await.unwrap(), None, "released");
    assert_eq!(
        s.lease_at(ip("10.0.0.11")).await.unwrap().map(|l| l.state),
        Some(LeaseState::Declined)
    );
}

// Every engine, one line each.
store_contract_tests!(sqlite, crate::store::sqlite::Contract);
store_contract_tests!(postgres, crate::store::postgres::Contract);

pub(crate) fn rollout(id: &str, created: i64) -> crate::model::Rollout {
    use crate::model::{Budget, Phase, Rollout, RolloutNode, RolloutSpec, RolloutState};
    Rollout {
        id: id.into(),
        spec: RolloutSpec {
            selector: "role=builder".into(),
            bootenv: "install".into(),
            bootenv_for_ms: None,
            canary: 1,
            max_unavailable: Budget::Percent(10),
            max_failed: 2,
            drain: None,
            undrain: None,
            hook_timeout_ms: 60_000,
            deadline_ms: 600_000,
        },
        state: RolloutState::Running,
        actor: "token `ops`".into(),
        created: Timestamp(created),
        failed_since_resume: 0,
        nodes: vec![RolloutNode {
            mac: mac(1),
            hostname: "b1".into(),
            canary: true,
            phase: Phase::Pending,
            previous: None,
            changed: Timestamp(created),
            recycled: 0,
        }],
        waiting: None,
    }
}

/// A rollout is made once; edits of it (from many tasks at once) land one
/// after the other, none lost; a refused edit writes nothing; everything
/// is read back after reopening, oldest first.
pub(crate) async fn rollouts_are_made_once_edited_one_at_a_time_and_survive_reopening<E: Engine>() {
    let dir = tempfile::tempdir().unwrap();
    let s = E::open(dir.path()).await;
    s.create_rollout(&rollout("r-2", 20)).await.unwrap();
    s.create_rollout(&rollout("r-1", 10)).await.unwrap();
    let again = s.create_rollout(&rollout("r-1", 30)).await.unwrap_err();
    assert!(again.is_conflict(), "{again}");

    let mut edits = Vec::new();
    for _ in 0..20 {
        let s = s.clone();
        edits.push(tokio::spawn(async move {
            s.edit_rollout(
                "r-1",
                Box::new(|r| {
                    r.failed_since_resume += 1;
                    Ok(())
                }),
            )
            .await
            .unwrap()
            .unwrap()
        }));
    }
    for e in edits {
        e.await.unwrap();
    }
    let refused = s
        .edit_rollout(
            "r-1",
            Box::new(|r| {
                r.failed_since_resume = 999;
                Err("no".into())
            }),
        )
        .await
        .unwrap_err();
    assert!(refused.is_refused(), "{refused}");
    assert!(
        s.edit_rollout("r-9", Box::new(|_| Ok(())))
            .await
            .unwrap()
            .is_none()
    );
    s.sync().await.unwrap();

    let s = reopen::<E>(s, dir.path()).await;
    let all = s.rollouts().await.unwrap();
    assert_eq!(
        all.iter().map(|r| r.id.as_str()).collect::<Vec<_>>(),
        ["r-1", "r-2"],
        "oldest first"
    );
    assert_eq!(
        all[0].failed_since_resume, 20,
        "every edit landed, none twice"
    );
    assert_eq!(all[1], rollout("r-2", 20));
}
