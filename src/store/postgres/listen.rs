//! The listener: one connection that hears every appliance's announcements
//! (its own included), in commit order, and applies each to this
//! appliance's mirror, whose feed passes it on. When the connection drops,
//! announcements are lost, so it reconnects and reloads everything, putting
//! in what changed meanwhile and taking out what was deleted.

use std::sync::Arc;

use serde_json::Value;
use tokio::sync::mpsc;
use tokio_postgres::{AsyncMessage, Client};
use tokio_util::sync::CancellationToken;

use super::rows::{all_nodes, db, describe, lease_from_row, node_from_json, node_from_row};
use super::tls::Connector;
use super::writer::backoff;
use super::{CHANNEL, Shared};
use crate::model::{Lease, Mac};
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

/// Applies one announcement (JSON with one key: what changed).
async fn apply(client: &Client, shared: &Shared, payload: &str) -> Result<(), StoreError> {
    let note: Value =
        serde_json::from_str(payload).map_err(|e| super::rows::corrupt("announcement", e))?;
    let Some((what, data)) = note.as_object().and_then(|o| o.iter().next()) else {
        return Err(super::rows::corrupt("announcement", payload));
    };
    let mac = || -> Result<Mac, StoreError> {
        data.as_str()
            .and_then(|m| m.parse().ok())
            .ok_or_else(|| super::rows::corrupt("announcement", payload))
    };
    match what.as_str() {
        "node" => {
            let node = node_from_json(data.clone())?;
            shared.mirror().put_node(node);
        }
        "fetch" => {
            let mac = mac()?;
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
        "gone" => {
            shared.mirror().remove_node(mac()?);
        }
        "lease" => {
            let (ip, mac, state, expires): (std::net::Ipv4Addr, Option<Mac>, String, i64) =
                serde_json::from_value(data.clone())
                    .map_err(|e| super::rows::corrupt("announced lease", e))?;
            let lease = Lease {
                ip,
                mac,
                state: state
                    .parse()
                    .map_err(|e| super::rows::corrupt("announced lease", e))?,
                expires: crate::model::Timestamp(expires),
            };
            shared.mirror().put_lease(lease);
        }
        "lease_gone" => {
            let ip: std::net::Ipv4Addr = serde_json::from_value(data.clone())
                .map_err(|e| super::rows::corrupt("announced lease", e))?;
            shared.mirror().drop_lease(u32::from(ip));
        }
        "bumped" => {
            let bumped: Vec<(Mac, u64)> = serde_json::from_value(data.clone())
                .map_err(|e| super::rows::corrupt("announced reconfigure", e))?;
            let mut m = shared.mirror();
            for (mac, generation) in &bumped {
                m.nodes.update(mac, |n| {
                    n.config_generation = n.config_generation.max(*generation);
                });
            }
            let macs: Vec<Mac> = bumped.iter().map(|(mac, _)| *mac).collect();
            m.feed.emit(&Change::ConfigBumped(&macs));
        }
        "done" => {
            let mine = data.get("appliance").and_then(Value::as_str) == Some(&shared.appliance);
            if let (true, Some(batch)) = (mine, data.get("batch").and_then(Value::as_u64)) {
                let waiting = shared
                    .echoes
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner)
                    .remove(&batch);
                if let Some(waiting) = waiting {
                    let _ = waiting.send(());
                }
            }
        }
        other => {
            tracing::debug!(
                what = other,
                "store: an announcement of a kind this rackboot does not know"
            );
        }
    }
    Ok(())
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
