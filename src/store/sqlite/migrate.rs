//! Upgrading a store made by an older rackboot, in place, at open: columns
//! added since, and timelines moved out of the old `events` table.

use rusqlite::{Connection, Transaction, params};

use super::rows::{db, mac_key};
use std::collections::HashMap;
use std::str::FromStr;

use crate::model::{EventData, EventKind, Mac};
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
        ("booted_bootenv", "TEXT"),
        ("bmc", "TEXT"),
        ("uuid", "TEXT"),
    ] {
        if !columns.iter().any(|c| c == column) {
            conn.execute_batch(&format!("ALTER TABLE nodes ADD COLUMN {column} {ty}"))
                .map_err(db("upgrade schema"))?;
        }
    }
    give_the_timeline_data(conn)?;
    move_events_to_timeline(conn)
}

/// An event of a store made before events had data, as a note: its kind
/// and its sentence, kept as they were.
fn old_event_data(kind: &str, text: String) -> Result<String, String> {
    let of = EventKind::from_str(kind)?;
    serde_json::to_string(&EventData::Note { of, text }).map_err(|e| e.to_string())
}

/// The bootenv an old `http.script` sentence names (`bootenv X, arch Y…`,
/// the one shape rackboot wrote them in), read once while upgrading, to
/// fill in which bootenv each node last booted; the sentence stays as it
/// was. `None` for any other shape (a name must be a bootenv name).
fn bootenv_of_old_script_text(text: &str) -> Option<&str> {
    let name = text.strip_prefix("bootenv ")?.split(',').next()?;
    let valid = !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-'));
    valid.then_some(name)
}

/// Sets `booted_bootenv` from the last old `http.script` sentence of each
/// node that has none yet.
fn fill_booted_bootenv(
    tx: &Connection,
    last_script: &HashMap<Mac, String>,
) -> Result<(), StoreError> {
    let mut set = tx
        .prepare("UPDATE nodes SET booted_bootenv = ?2 WHERE mac = ?1 AND booted_bootenv IS NULL")
        .map_err(db("upgrade the timeline"))?;
    for (mac, text) in last_script {
        if let Some(bootenv) = bootenv_of_old_script_text(text) {
            set.execute(params![mac.to_string(), bootenv])
                .map_err(db("upgrade the timeline"))?;
        }
    }
    Ok(())
}

/// The MAC a timeline key stands for ([`mac_key`] backwards).
fn mac_of_key(key: i64) -> Mac {
    let b = key.to_be_bytes();
    Mac::new([b[2], b[3], b[4], b[5], b[6], b[7]])
}

/// Whether the schema query `sql` (a `SELECT count(*) > 0 ...` of the
/// catalog) finds what it looks for.
fn schema_has(conn: &Connection, sql: &str) -> Result<bool, StoreError> {
    conn.query_row(sql, [], |r| r.get(0))
        .map_err(db("read schema"))
}

/// The transaction a timeline upgrade runs in (a failure leaves the store
/// as it was), when the schema query `old` finds the store needs it;
/// `None` when it does not.
fn timeline_upgrade<'c>(
    conn: &'c Connection,
    old: &str,
) -> Result<Option<Transaction<'c>>, StoreError> {
    if !schema_has(conn, old)? {
        return Ok(None);
    }
    conn.unchecked_transaction()
        .map(Some)
        .map_err(db("upgrade the timeline"))
}

/// A timeline whose events have no data yet, only a sentence (`detail`).
const TIMELINE_WITHOUT_DATA: &str =
    "SELECT count(*) > 0 FROM pragma_table_info('timeline') WHERE name = 'detail'";

/// The table timelines were kept in before the `timeline` table.
const OLD_EVENTS_TABLE: &str =
    "SELECT count(*) > 0 FROM sqlite_master WHERE type = 'table' AND name = 'events'";

/// Gives the timeline of a store made before events had data its `data`
/// column, in one transaction (a failure leaves the store as it was): each
/// old event becomes a note of its kind and sentence, and each node's
/// `booted_bootenv` is read from its last boot script event.
fn give_the_timeline_data(conn: &Connection) -> Result<(), StoreError> {
    let Some(tx) = timeline_upgrade(conn, TIMELINE_WITHOUT_DATA)? else {
        return Ok(());
    };
    let mut last_script = HashMap::new();
    {
        let mut read = tx
            .prepare(
                "SELECT mac, detail FROM timeline WHERE kind = 'http.script' ORDER BY mac, seq",
            )
            .map_err(db("upgrade the timeline"))?;
        let mut rows = read.query([]).map_err(db("upgrade the timeline"))?;
        while let Some(r) = rows.next().map_err(db("upgrade the timeline"))? {
            let key: i64 = r.get(0).map_err(db("upgrade the timeline"))?;
            let text: String = r.get(1).map_err(db("upgrade the timeline"))?;
            last_script.insert(mac_of_key(key), text);
        }
    }
    fill_booted_bootenv(&tx, &last_script)?;
    tx.execute_batch(
        "ALTER TABLE timeline RENAME COLUMN detail TO data; \
         UPDATE timeline SET data = json_object('kind', 'note', 'of', kind, 'text', data);",
    )
    .map_err(db("upgrade the timeline"))?;
    tx.commit().map_err(db("upgrade the timeline"))?;
    tracing::info!("store: timeline events now carry data; older ones are kept as notes");
    Ok(())
}

/// Moves the timelines of a store made before the `timeline` table (from
/// `events`, in their order) and drops the old table, in one transaction:
/// a failure leaves the store as it was.
fn move_events_to_timeline(conn: &Connection) -> Result<(), StoreError> {
    let Some(tx) = timeline_upgrade(conn, OLD_EVENTS_TABLE)? else {
        return Ok(());
    };
    let mut moved = 0i64;
    let mut last_script = HashMap::new();
    {
        let mut read = tx
            .prepare("SELECT mac, at, kind, detail FROM events ORDER BY id")
            .map_err(db("upgrade the timeline"))?;
        let mut write = tx
            .prepare("INSERT INTO timeline (mac, seq, at, kind, data) VALUES (?1, ?2, ?3, ?4, ?5)")
            .map_err(db("upgrade the timeline"))?;
        let mut rows = read.query([]).map_err(db("upgrade the timeline"))?;
        while let Some(r) = rows.next().map_err(db("upgrade the timeline"))? {
            let mac: String = r.get(0).map_err(db("upgrade the timeline"))?;
            let Ok(mac) = mac.parse::<Mac>() else {
                tracing::warn!(mac, "store: an event of a malformed MAC is not kept");
                continue;
            };
            let kind: String = r.get(2).map_err(db("upgrade the timeline"))?;
            let text: String = r.get(3).map_err(db("upgrade the timeline"))?;
            if kind == EventKind::HttpScript.as_str() {
                last_script.insert(mac, text.clone());
            }
            let Ok(data) = old_event_data(&kind, text) else {
                tracing::warn!(%mac, kind, "store: an event of an unknown kind is not kept");
                continue;
            };
            moved += 1;
            write
                .execute(params![
                    mac_key(mac),
                    moved,
                    r.get::<_, i64>(1).map_err(db("upgrade the timeline"))?,
                    kind,
                    data,
                ])
                .map_err(db("upgrade the timeline"))?;
        }
    }
    fill_booted_bootenv(&tx, &last_script)?;
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
