//! Rows and model types: the node columns, reading and writing a record,
//! a lease, a timeline and reports; and the engine's errors turned into
//! [`StoreError`]s.

use std::net::Ipv4Addr;
use std::str::FromStr;

use rusqlite::{Connection, OptionalExtension, Row, params};

use crate::model::{
    BootArch, Event, Lease, LeaseState, Mac, Node, NodeOrigin, NodeState, ScriptReport, Timestamp,
};
use crate::store::{EVENTS_PER_NODE, Fault, StoreError};

/// Turns SQLite's error, while doing `op`, into the store's.
pub(super) fn db(op: &'static str) -> impl FnOnce(rusqlite::Error) -> StoreError {
    move |e| StoreError::Engine {
        op,
        fault: fault(&e),
        cause: e.to_string(),
    }
}

/// Whether SQLite's error may pass by trying again: the file busy or
/// locked, the disk full or failing, memory short.
pub(super) fn fault(e: &rusqlite::Error) -> Fault {
    use rusqlite::ErrorCode as C;
    match e.sqlite_error_code() {
        Some(
            C::DatabaseBusy | C::DatabaseLocked | C::DiskFull | C::SystemIoFailure | C::OutOfMemory,
        ) => Fault::Transient,
        _ => Fault::Permanent,
    }
}

/// The last `seq` the timeline used (0 in a new store).
pub(super) fn timeline_seq(conn: &Connection) -> Result<i64, StoreError> {
    let counted: Option<i64> = conn
        .query_row(
            "SELECT value FROM counters WHERE name = 'timeline_seq'",
            [],
            |r| r.get(0),
        )
        .optional()
        .map_err(db("read the timeline counter"))?;
    match counted {
        Some(seq) => Ok(seq),
        // Never counted: whatever the table holds (nothing, in a new store).
        None => conn
            .query_row("SELECT coalesce(max(seq), 0) FROM timeline", [], |r| {
                r.get(0)
            })
            .map_err(db("read the timeline counter")),
    }
}

/// A MAC as the timeline's key: its six octets as one number.
pub(super) fn mac_key(mac: Mac) -> i64 {
    let o = mac.octets();
    i64::from_be_bytes([0, 0, o[0], o[1], o[2], o[3], o[4], o[5]])
}

pub(super) fn read_events(conn: &Connection, mac: Mac) -> Result<Vec<Event>, StoreError> {
    let mut q = conn
        .prepare_cached(
            "SELECT at, data FROM (SELECT seq, at, data FROM timeline \
             WHERE mac = ?1 ORDER BY seq DESC LIMIT ?2) ORDER BY seq",
        )
        .map_err(db("list events"))?;
    let mut rows = q
        .query(params![mac_key(mac), EVENTS_PER_NODE])
        .map_err(db("list events"))?;
    let mut out = Vec::new();
    while let Some(r) = rows.next().map_err(db("list events"))? {
        let data: String = r.get("data").map_err(db("read event"))?;
        out.push(Event::new(
            Timestamp(r.get("at").map_err(db("read event"))?),
            serde_json::from_str(&data).map_err(|e| corrupt(mac, e))?,
        ));
    }
    Ok(out)
}

pub(super) fn read_reports(
    conn: &Connection,
    mac: Mac,
) -> Result<(Vec<ScriptReport>, u64), StoreError> {
    let read = || db("list reports");
    let mut q = conn
        .prepare_cached(
            "SELECT at, generation, script, status, duration_ms, output FROM reports \
             WHERE mac = ?1 ORDER BY id",
        )
        .map_err(read())?;
    let mut rows = q.query([mac.to_string()]).map_err(read())?;
    let mut out = Vec::new();
    while let Some(r) = rows.next().map_err(read())? {
        let generation: i64 = r.get("generation").map_err(read())?;
        let duration: Option<i64> = r.get("duration_ms").map_err(read())?;
        out.push(ScriptReport {
            at: Timestamp(r.get("at").map_err(read())?),
            generation: generation.max(0) as u64,
            script: r.get("script").map_err(read())?,
            status: r.get("status").map_err(read())?,
            duration_ms: duration.map(|d| d.max(0) as u64),
            output: r.get("output").map_err(read())?,
        });
    }
    let dropped: Option<i64> = conn
        .prepare_cached("SELECT dropped FROM report_drops WHERE mac = ?1")
        .and_then(|mut q| {
            q.query_row([mac.to_string()], |r| r.get(0))
                .map(Some)
                .or_else(|e| match e {
                    rusqlite::Error::QueryReturnedNoRows => Ok(None),
                    e => Err(e),
                })
        })
        .map_err(read())?;
    Ok((out, dropped.unwrap_or(0).max(0) as u64))
}

pub(super) fn corrupt(key: impl ToString, reason: impl ToString) -> StoreError {
    StoreError::Corrupt {
        key: key.to_string(),
        reason: reason.to_string(),
    }
}

pub(super) fn ip_of(v: i64) -> Ipv4Addr {
    Ipv4Addr::from(v as u32)
}

pub(super) fn ip_col(ip: Ipv4Addr) -> i64 {
    u32::from(ip) as i64
}

/// The node columns, in the order of the upsert's parameters.
pub(super) const NODE_COLUMNS: &str = "mac, hostname, ipv4, labels, params, bootenv, next_bootenv, \
     bootenv_expires, loader, protected, state, state_reason, relay_info, arch, last_seen, \
     token, created, config_generation, origin, boot_ipv4, booted_bootenv, bmc, uuid";

/// The parameters [`execute_node`] binds, one per column of [`NODE_COLUMNS`].
pub(super) const NODE_PARAMS: &str = "?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17, ?18, ?19, ?20, ?21, ?22, ?23";

/// Runs `stmt` (an insert of [`NODE_COLUMNS`]) for `n`; the rows changed.
pub(super) fn execute_node(
    stmt: &mut rusqlite::CachedStatement<'_>,
    n: &Node,
) -> rusqlite::Result<usize> {
    stmt.execute(params![
        n.mac.to_string(),
        n.hostname,
        n.ipv4.map(ip_col),
        serde_json::to_string(&n.labels).unwrap_or_else(|_| "{}".into()),
        serde_json::to_string(&n.params).unwrap_or_else(|_| "{}".into()),
        n.bootenv,
        n.next_bootenv,
        n.bootenv_expires.map(Timestamp::millis),
        n.loader,
        n.protected,
        n.state.as_str(),
        n.state_reason,
        n.relay_info,
        n.arch.map(BootArch::as_str),
        n.last_seen.map(Timestamp::millis),
        n.token,
        n.created.millis(),
        n.config_generation as i64,
        origin_text(n.origin),
        n.boot_ipv4.map(ip_col),
        n.booted_bootenv,
        n.bmc
            .as_ref()
            .map(|b| serde_json::to_string(b).unwrap_or_default()),
        n.uuid,
    ])
}

pub(super) fn node_from_row(row: &Row<'_>) -> Result<Node, StoreError> {
    let read = db("read node");
    let mac_s: String = row.get("mac").map_err(db("read node"))?;
    let mac = Mac::from_str(&mac_s).map_err(|e| corrupt(&mac_s, e))?;
    let get_s = |col: &str| -> Result<String, StoreError> { row.get(col).map_err(db("read node")) };
    let get_opt_s =
        |col: &str| -> Result<Option<String>, StoreError> { row.get(col).map_err(db("read node")) };
    let get_opt_i =
        |col: &str| -> Result<Option<i64>, StoreError> { row.get(col).map_err(db("read node")) };
    let labels = serde_json::from_str(&get_s("labels")?).map_err(|e| corrupt(mac, e))?;
    let params = serde_json::from_str(&get_s("params")?).map_err(|e| corrupt(mac, e))?;
    let state_s = get_s("state")?;
    let origin = get_opt_s("origin")?;
    let mut node = Node {
        mac,
        hostname: get_s("hostname")?,
        ipv4: get_opt_i("ipv4")?.map(ip_of),
        labels,
        params,
        bootenv: get_s("bootenv")?,
        next_bootenv: get_opt_s("next_bootenv")?,
        bootenv_expires: get_opt_i("bootenv_expires")?.map(Timestamp),
        booted_bootenv: get_opt_s("booted_bootenv")?,
        loader: get_opt_s("loader")?,
        protected: row.get("protected").map_err(read)?,
        state: NodeState::from_str(&state_s).map_err(|e| corrupt(mac, e))?,
        state_reason: get_opt_s("state_reason")?,
        relay_info: get_opt_s("relay_info")?,
        uuid: get_opt_s("uuid")?,
        boot_ipv4: get_opt_i("boot_ipv4")?.map(ip_of),
        arch: get_opt_s("arch")?
            .map(|a| BootArch::from_str(&a))
            .transpose()
            .map_err(|e| corrupt(mac, e))?,
        last_seen: get_opt_i("last_seen")?.map(Timestamp),
        token: get_s("token")?,
        created: Timestamp(row.get("created").map_err(db("read node"))?),
        config_generation: get_opt_i("config_generation")?.unwrap_or(0).max(0) as u64,
        origin: NodeOrigin::Admin,
        bmc: get_opt_s("bmc")?
            .map(|b| serde_json::from_str(&b))
            .transpose()
            .map_err(|e| corrupt(mac, e))?,
    };
    node.origin = match origin.as_deref() {
        Some("discovered") => NodeOrigin::Discovered,
        Some("admin") => NodeOrigin::Admin,
        Some(other) => return Err(corrupt(mac, format!("unknown origin `{other}`"))),
        // Written before rackboot kept origins: a record exactly as DHCP
        // makes one (default hostname, nothing an admin sets) was made
        // by DHCP; anything else is the admin's, and never reaped.
        None => {
            let bare = Node {
                origin: NodeOrigin::Discovered,
                ..node.clone()
            };
            if bare.is_bare_discovery() && bare.hostname == mac.default_hostname() {
                NodeOrigin::Discovered
            } else {
                NodeOrigin::Admin
            }
        }
    };
    Ok(node)
}

pub(super) fn origin_text(o: NodeOrigin) -> &'static str {
    match o {
        NodeOrigin::Admin => "admin",
        NodeOrigin::Discovered => "discovered",
    }
}

pub(super) fn lease_from_row(row: &Row<'_>) -> Result<Lease, StoreError> {
    let ip = ip_of(row.get("ip").map_err(db("read lease"))?);
    let mac: Option<String> = row.get("mac").map_err(db("read lease"))?;
    let state: String = row.get("state").map_err(db("read lease"))?;
    Ok(Lease {
        ip,
        mac: mac
            .map(|m| Mac::from_str(&m))
            .transpose()
            .map_err(|e| corrupt(ip, e))?,
        state: LeaseState::from_str(&state).map_err(|e| corrupt(ip, e))?,
        expires: Timestamp(row.get("expires").map_err(db("read lease"))?),
    })
}

/// Every stored rollout, oldest first.
pub(super) fn load_rollouts(
    conn: &rusqlite::Connection,
) -> Result<Vec<crate::model::Rollout>, StoreError> {
    let mut q = conn
        .prepare("SELECT id, doc FROM rollouts ORDER BY created, id")
        .map_err(db("load rollouts"))?;
    let mut rows = q.query([]).map_err(db("load rollouts"))?;
    let mut out = Vec::new();
    while let Some(row) = rows.next().map_err(db("load rollouts"))? {
        let id: String = row.get(0).map_err(db("load rollouts"))?;
        let doc: String = row.get(1).map_err(db("load rollouts"))?;
        out.push(serde_json::from_str(&doc).map_err(|e| corrupt(&id, e))?);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// SQLite's busy, locked, full and I/O errors are "try again later";
    /// a malformed statement is not. Either way the text says what failed.
    #[test]
    fn engine_errors_say_whether_waiting_helps() {
        let sqlite = |code| rusqlite::Error::SqliteFailure(rusqlite::ffi::Error::new(code), None);
        for code in [
            rusqlite::ffi::SQLITE_BUSY,
            rusqlite::ffi::SQLITE_LOCKED,
            rusqlite::ffi::SQLITE_FULL,
            rusqlite::ffi::SQLITE_IOERR,
        ] {
            let e = db("save leases")(sqlite(code));
            assert!(e.is_unavailable(), "{code}: {e}");
            assert!(
                e.to_string().starts_with("store: save leases failed: "),
                "{e}"
            );
        }
        let conn = Connection::open_in_memory().unwrap();
        let e = db("read schema")(conn.execute_batch("SELEKT 1").unwrap_err());
        assert!(!e.is_unavailable(), "{e}");
        assert!(!(e.is_not_found() || e.is_conflict() || e.is_refused()));
        assert!(e.to_string().contains("syntax error"), "{e}");
    }
}
