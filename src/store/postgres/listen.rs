//! The listener: one connection that hears every appliance's announcements
//! (its own included), in commit order, and applies each to this
//! appliance's mirror, whose feed passes it on. When the connection drops,
//! announcements are lost, so it reconnects and reloads everything, putting
//! in what changed meanwhile and taking out what was deleted.

use std::net::Ipv4Addr;
use std::sync::Arc;

use tokio::sync::mpsc;
use tokio_postgres::{AsyncMessage, Client};
use tokio_util::sync::CancellationToken;

use super::announce::Held;
use super::rows::{all_nodes, db, describe, lease_from_row, node_from_row};
use super::tls::Connector;
use super::writer::backoff;
use super::{CHANNEL, Shared};
use crate::model::{Lease, LeaseState, Mac, Node};
use crate::store::StoreError;
use crate::store::feed::Change;

/// Connects, listens, loads every record and lease into the mirror, and
/// goes on listening in a task of its own; the counts loaded.
pub(super) async fn start(
    config: Connector,
    shared: Arc<Shared>,
    stop: CancellationToken,
) -> Result<(usize, usize), StoreError> {
    let (client, heard) = listening(&config, &stop).await?;
    let loaded = reload(&client, &shared).await?;
    tokio::spawn(run(config, shared, stop, client, heard));
    Ok(loaded)
}

/// A connection that listens on [`CHANNEL`], and what it hears; the
/// receiver ends when the connection does.
async fn listening(
    config: &Connector,
    stop: &CancellationToken,
) -> Result<(Client, mpsc::UnboundedReceiver<String>), StoreError> {
    let (client, mut connection) = config.connect().await?;
    let (tx, rx) = mpsc::unbounded_channel();
    let stop = stop.clone();
    tokio::spawn(async move {
        loop {
            let message = tokio::select! {
                _ = stop.cancelled() => return,
                m = std::future::poll_fn(|cx| connection.poll_message(cx)) => m,
            };
            match message {
                Some(Ok(AsyncMessage::Notification(n))) => {
                    if tx.send(n.payload().to_string()).is_err() {
                        return;
                    }
                }
                Some(Ok(_)) => {}
                Some(Err(e)) => {
                    tracing::warn!(error = %describe(&e), "store: PostgreSQL listener connection lost");
                    return;
                }
                None => return,
            }
        }
    });
    client
        .batch_execute(&format!("LISTEN {CHANNEL}"))
        .await
        .map_err(db("listen"))?;
    Ok((client, rx))
}

async fn run(
    config: Connector,
    shared: Arc<Shared>,
    stop: CancellationToken,
    mut client: Client,
    mut heard: mpsc::UnboundedReceiver<String>,
) {
    loop {
        while let Some(payload) = tokio::select! {
            _ = stop.cancelled() => return,
            p = heard.recv() => p,
        } {
            if let Err(e) = apply(&client, &shared, &payload).await {
                tracing::warn!(error = %e, "store: an announcement could not be applied; reloading");
                if let Err(e) = reload(&client, &shared).await {
                    tracing::warn!(error = %e, "store: reload failed");
                }
            }
        }
        // The connection is gone: whatever was announced meanwhile is lost.
        shared
            .listener_up
            .store(false, std::sync::atomic::Ordering::Relaxed);
        tracing::error!("store: lost the PostgreSQL database; writes are refused until it is back");
        let mut attempt = 0;
        loop {
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = tokio::time::sleep(backoff(attempt)) => {}
            }
            attempt += 1;
            let again = match listening(&config, &stop).await {
                Ok((c, h)) => reload(&c, &shared).await.map(|loaded| (c, h, loaded)),
                Err(e) => Err(e),
            };
            match again {
                Ok((c, h, (nodes, leases))) => {
                    tracing::info!(nodes, leases, "store: PostgreSQL is back; reloaded");
                    shared
                        .listener_up
                        .store(true, std::sync::atomic::Ordering::Relaxed);
                    (client, heard) = (c, h);
                    break;
                }
                Err(e) => {
                    if attempt == 1 || attempt.is_multiple_of(10) {
                        tracing::warn!(error = %e, attempt, "store: PostgreSQL unreachable for announcements");
                    }
                }
            }
        }
    }
}

/// An announcement: JSON with one key, what changed, as the writer makes
/// them. Read straight into this (a storm announces a record and an address
/// for every new client); one that does not read is looked at again as
/// plain JSON to tell a kind this rackboot does not know from a broken one.
#[derive(serde::Deserialize)]
#[serde(rename_all = "snake_case")]
enum Note {
    Node(Box<Node>),
    /// A record too large to announce: read it from the table.
    Fetch(Mac),
    Gone(Mac),
    /// `[ip, mac, state, expires in ms]`
    Lease(Ipv4Addr, Option<Mac>, LeaseState, i64),
    LeaseGone(Ipv4Addr),
    Bumped(Vec<(Mac, u64)>),
    /// A batch's notes, or some of them ([`super::announce`]).
    Batch(Packed),
}

/// One payload of a batch: its writing process, its number, whether it is
/// its last, and its notes, left unread until they are a sibling's.
#[derive(serde::Deserialize)]
struct Packed {
    process: u64,
    n: u64,
    last: bool,
    notes: Box<serde_json::value::RawValue>,
}

/// [`Note`]'s variants as serde names them (serde does not list them for
/// an externally tagged enum): what [`unread`] knows is not a newer kind.
const KINDS: &[&str] = &[
    "node",
    "fetch",
    "gone",
    "lease",
    "lease_gone",
    "bumped",
    "batch",
];

/// Applies one announcement: a payload of a batch, or (from a rackboot
/// before batches were packed) a single note.
async fn apply(client: &Client, shared: &Shared, payload: &str) -> Result<(), StoreError> {
    let packed = match serde_json::from_str::<Note>(payload) {
        Ok(Note::Batch(packed)) => packed,
        Ok(note) => return apply_note(client, shared, note).await,
        Err(e) => return unread(payload, e),
    };
    if packed.process == shared.process {
        // This process's own batch: what it changed is at hand, in memory
        // form, and goes in with the batch's last payload (all of a
        // batch's payloads come together: they are one commit's).
        if !packed.last {
            return Ok(());
        }
        let echo = shared
            .echoes
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .remove(&packed.n);
        if let Some(echo) = echo {
            for held in echo.held {
                match held {
                    Held::Node(node) => shared.mirror().put_node(*node),
                    Held::Lease(lease) => shared.mirror().put_lease(lease),
                    Held::Note(note) => apply_one(client, shared, &note).await?,
                }
            }
            let _ = echo.done.send(());
            return Ok(());
        }
        // Its writer gave it up (a panic, or no echo within ECHO_WITHIN):
        // read it as a sibling would.
    }
    let notes: Vec<&serde_json::value::RawValue> = serde_json::from_str(packed.notes.get())
        .map_err(|e| super::rows::corrupt("announcement", format!("{e}: {payload}")))?;
    for note in notes {
        apply_one(client, shared, note.get()).await?;
    }
    Ok(())
}

/// Applies one note of a batch.
async fn apply_one(client: &Client, shared: &Shared, text: &str) -> Result<(), StoreError> {
    match serde_json::from_str::<Note>(text) {
        Ok(note) => apply_note(client, shared, note).await,
        Err(e) => unread(text, e),
    }
}

async fn apply_note(client: &Client, shared: &Shared, note: Note) -> Result<(), StoreError> {
    match note {
        Note::Node(node) => {
            shared.mirror().put_node(*node);
        }
        Note::Fetch(mac) => {
            let row = client
                .query_opt(
                    "SELECT record FROM nodes WHERE mac = $1",
                    &[&mac.to_string()],
                )
                .await
                .map_err(db("read a node"))?;
            match row {
                Some(row) => {
                    let node = node_from_row(&row)?;
                    shared.mirror().put_node(node);
                }
                None => {
                    shared.mirror().remove_node(mac);
                }
            }
        }
        Note::Gone(mac) => {
            shared.mirror().remove_node(mac);
        }
        Note::Lease(ip, mac, state, expires) => {
            shared.mirror().put_lease(Lease {
                ip,
                mac,
                state,
                expires: crate::model::Timestamp(expires),
            });
        }
        Note::LeaseGone(ip) => {
            shared.mirror().drop_lease(u32::from(ip));
        }
        Note::Bumped(bumped) => {
            let mut m = shared.mirror();
            for (mac, generation) in &bumped {
                m.nodes.update(mac, |n| {
                    n.config_generation = n.config_generation.max(*generation);
                });
            }
            let macs: Vec<Mac> = bumped.iter().map(|(mac, _)| *mac).collect();
            m.feed.emit(&Change::ConfigBumped(&macs));
        }
        // Taken apart by `apply`: one inside a batch is broken.
        Note::Batch(_) => {
            return Err(super::rows::corrupt(
                "announcement",
                "a batch inside a batch".to_string(),
            ));
        }
    }
    Ok(())
}

/// An announcement that did not read as a [`Note`]: one of a kind a newer
/// rackboot makes is passed over; one of a known kind is broken, and the
/// caller reloads.
fn unread(payload: &str, e: serde_json::Error) -> Result<(), StoreError> {
    let kind = serde_json::from_str::<serde_json::Value>(payload)
        .ok()
        .and_then(|v| Some(v.as_object()?.keys().next()?.clone()));
    match kind {
        Some(kind) if !KINDS.contains(&kind.as_str()) => {
            tracing::debug!(
                what = kind,
                "store: an announcement of a kind this rackboot does not know"
            );
            Ok(())
        }
        _ => Err(super::rows::corrupt(
            "announcement",
            format!("{e}: {payload}"),
        )),
    }
}

/// Makes the mirror what the database holds: records and leases put in
/// where they differ, taken out where the database has none.
async fn reload(client: &Client, shared: &Shared) -> Result<(usize, usize), StoreError> {
    let nodes = all_nodes(client, "load the nodes").await?;
    let mut leases = std::collections::BTreeMap::new();
    for row in client
        .query("SELECT ip, mac, state, expires FROM leases", &[])
        .await
        .map_err(db("load the leases"))?
    {
        let l = lease_from_row(&row)?;
        leases.insert(u32::from(l.ip), l);
    }
    let counts = (nodes.len(), leases.len());
    let mut m = shared.mirror();
    for mac in gone(m.nodes.keys(), |k| nodes.contains_key(k)) {
        m.remove_node(mac);
    }
    for (mac, n) in nodes {
        if m.nodes.get(&mac).as_ref() != Some(&n) {
            m.put_node(n);
        }
    }
    for ip in gone(m.leases.keys(), |k| leases.contains_key(k)) {
        m.drop_lease(ip);
    }
    for (ip, l) in leases {
        if m.leases.get(&ip) != Some(&l) {
            m.put_lease(l);
        }
    }
    Ok(counts)
}

/// The keys of the mirror's `have` that the database no longer holds:
/// collected first, as taking them out changes the mirror.
fn gone<'a, K: Copy + 'a>(
    have: impl Iterator<Item = &'a K>,
    still_held: impl Fn(&K) -> bool,
) -> Vec<K> {
    have.filter(|k| !still_held(k)).copied().collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Timestamp;
    use crate::store::postgres::announce::{lease_note, node_note_of};
    use crate::store::postgres::rows::node_text;

    fn mac(s: &str) -> Mac {
        s.parse().unwrap()
    }

    #[test]
    fn a_node_announcement_reads_back_as_the_record_with_its_token() {
        let mut node = Node::discovered(
            mac("02:00:00:00:00:01"),
            "discovery",
            "tok\"en\\1".into(),
            Timestamp(1_700_000_000_000),
        );
        node.labels.insert("rack".into(), "r1".into());
        node.ipv4 = Some(Ipv4Addr::new(10, 0, 0, 5));
        let note = node_note_of(node.mac, &node_text(&node).unwrap());
        let Ok(Note::Node(read)) = serde_json::from_str::<Note>(&note) else {
            panic!("not read as a node: {note}");
        };
        assert_eq!(*read, node);
        assert_eq!(read.token, node.token);
    }

    #[test]
    fn a_lease_announcement_reads_back_as_the_lease() {
        for (owner, state) in [
            (Some(mac("02:00:00:00:00:02")), LeaseState::Bound),
            (None, LeaseState::Declined),
        ] {
            let lease = Lease {
                ip: Ipv4Addr::new(10, 0, 1, 7),
                mac: owner,
                state,
                expires: Timestamp(-5),
            };
            let note = lease_note(&lease);
            let Ok(Note::Lease(ip, m, s, expires)) = serde_json::from_str::<Note>(&note) else {
                panic!("not read as a lease: {note}");
            };
            assert_eq!((ip, m, s, expires), (lease.ip, owner, state, -5));
        }
    }

    #[test]
    fn an_announcement_of_an_unknown_kind_is_passed_over_and_a_broken_one_is_not() {
        let unknown = r#"{"comet":{"tail":1}}"#;
        let e = serde_json::from_str::<Note>(unknown).err().unwrap();
        assert!(unread(unknown, e).is_ok());
        for broken in [
            r#"{"lease":["10.0.0.1"]}"#,
            r#"{"node":{"mac":"x"}}"#,
            "not json",
        ] {
            let e = serde_json::from_str::<Note>(broken).err().unwrap();
            assert!(
                matches!(unread(broken, e), Err(StoreError::Corrupt { .. })),
                "{broken}"
            );
        }
    }
}
