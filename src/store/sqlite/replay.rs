//! At open, before anything is read: the journal's segments are committed
//! to the file (what a crash left only there), then removed.

use std::path::{Path, PathBuf};

use rusqlite::{Connection, params};

use super::journal::{self, Change, Journal};
use super::rows::{NODE_COLUMNS, NODE_PARAMS, db, execute_node, mac_key};
use super::writer::{Batch, save_leases};
use crate::model::{Mac, Node};
use crate::store::StoreError;

/// Commits the lease changes the journal segments in `dir` hold, removes the
/// segments, and starts a fresh journal (segment 0).
pub(super) fn replay_journal(conn: &Connection, dir: &Path) -> Result<Journal, StoreError> {
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
            skipped = found.skipped,
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
pub(super) fn replay_node(tx: &Connection, n: &Node) -> Result<(), StoreError> {
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
pub(super) fn replay_forget(tx: &Connection, mac: Mac, token: &str) -> Result<(), StoreError> {
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
