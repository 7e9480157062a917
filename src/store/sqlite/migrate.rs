//! Upgrading a store made by an older rackboot, in place, at open: columns
//! added since, and timelines moved out of the old `events` table.

use rusqlite::{Connection, params};

use super::rows::{db, mac_key};
use crate::model::Mac;
use crate::store::StoreError;

/// Brings a store made by any earlier rackboot up to [`super::schema`]:
/// columns added after a store was first created (CREATE TABLE IF NOT
/// EXISTS leaves an existing table as it was), and the old timeline table.
pub(super) fn upgrade(conn: &Connection) -> Result<(), StoreError> {
    let columns: Vec<String> = conn
        .prepare("SELECT name FROM pragma_table_info('nodes')")
        .and_then(|mut s| s.query_map([], |r| r.get(0))?.collect())
        .map_err(db("read schema"))?;
    for (column, ty) in [
        ("relay_info", "TEXT"),
        ("loader", "TEXT"),
        ("config_generation", "INTEGER NOT NULL DEFAULT 0"),
        ("origin", "TEXT"),
        ("boot_ipv4", "INTEGER"),
    ] {
        if !columns.iter().any(|c| c == column) {
            conn.execute_batch(&format!("ALTER TABLE nodes ADD COLUMN {column} {ty}"))
                .map_err(db("upgrade schema"))?;
        }
    }
    move_events_to_timeline(conn)
}

/// Moves the timelines of a store made before the `timeline` table (from
/// `events`, in their order) and drops the old table, in one transaction:
/// a failure leaves the store as it was.
fn move_events_to_timeline(conn: &Connection) -> Result<(), StoreError> {
    let old: bool = conn
        .query_row(
            "SELECT count(*) > 0 FROM sqlite_master WHERE type = 'table' AND name = 'events'",
            [],
            |r| r.get(0),
        )
        .map_err(db("read schema"))?;
    if !old {
        return Ok(());
    }
    let tx = conn
        .unchecked_transaction()
        .map_err(db("upgrade the timeline"))?;
    let mut moved = 0i64;
    {
        let mut read = tx
            .prepare("SELECT mac, at, kind, detail FROM events ORDER BY id")
            .map_err(db("upgrade the timeline"))?;
        let mut write = tx
            .prepare(
                "INSERT INTO timeline (mac, seq, at, kind, detail) VALUES (?1, ?2, ?3, ?4, ?5)",
            )
            .map_err(db("upgrade the timeline"))?;
        let mut rows = read.query([]).map_err(db("upgrade the timeline"))?;
        while let Some(r) = rows.next().map_err(db("upgrade the timeline"))? {
            let mac: String = r.get(0).map_err(db("upgrade the timeline"))?;
            let Ok(mac) = mac.parse::<Mac>() else {
                tracing::warn!(mac, "store: an event of a malformed MAC is not kept");
                continue;
            };
            moved += 1;
            write
                .execute(params![
                    mac_key(mac),
                    moved,
                    r.get::<_, i64>(1).map_err(db("upgrade the timeline"))?,
                    r.get::<_, String>(2).map_err(db("upgrade the timeline"))?,
                    r.get::<_, String>(3).map_err(db("upgrade the timeline"))?,
                ])
                .map_err(db("upgrade the timeline"))?;
        }
    }
    tx.execute(
        "INSERT INTO counters (name, value) VALUES ('timeline_seq', ?1) \
         ON CONFLICT (name) DO UPDATE SET value = max(value, excluded.value)",
        [moved],
    )
    .map_err(db("upgrade the timeline"))?;
    tx.execute_batch("DROP TABLE events")
        .map_err(db("upgrade the timeline"))?;
    tx.commit().map_err(db("upgrade the timeline"))?;
    tracing::info!(moved, "store: timelines moved to the `timeline` table");
    Ok(())
}
