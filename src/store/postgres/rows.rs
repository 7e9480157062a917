//! Rows and errors of the PostgreSQL engine: records as JSON, addresses as
//! numbers, PostgreSQL's error codes as [`StoreError`]s.

use std::collections::HashMap;
use std::net::Ipv4Addr;

use tokio_postgres::error::SqlState;
use tokio_postgres::{GenericClient, Row};

use crate::model::{Lease, LeaseState, Mac, Node, Timestamp};
use crate::store::{Fault, StoreError};

/// Turns a PostgreSQL error of `op` into a [`StoreError`]: a unique key
/// taken is a conflict; a lost connection, a server shutting down or out of
/// resources is transient (waiting helps).
pub(super) fn db(op: &'static str) -> impl FnOnce(tokio_postgres::Error) -> StoreError {
    move |e| {
        if let Some(db) = e.as_db_error()
            && *db.code() == SqlState::UNIQUE_VIOLATION
        {
            return key_taken(db.constraint(), db.detail().unwrap_or(db.message()));
        }
        StoreError::Engine {
            op,
            fault: fault(&e),
            cause: describe(&e),
        }
    }
}

/// The conflict of a unique key taken: `constraint` names which.
pub(super) fn key_taken(constraint: Option<&str>, detail: &str) -> StoreError {
    let what = match constraint {
        Some("nodes_hostname") => "the hostname already belongs to another node",
        Some("nodes_ipv4") => "the address already belongs to another node",
        Some("nodes_pkey") => "the MAC already has a record",
        _ => "a unique key is taken",
    };
    StoreError::Conflict(format!("{what} ({detail})"))
}

/// Whether waiting may help with `e`.
pub(super) fn fault(e: &tokio_postgres::Error) -> Fault {
    let Some(db) = e.as_db_error() else {
        // No answer from the server: the connection is gone or broken.
        return Fault::Transient;
    };
    let code = db.code().code();
    // 08: connection; 40: rollback (serialization, deadlock); 53:
    // resources; 57: operator intervention (shutdown); 58: system error.
    if ["08", "40", "53", "57", "58"]
        .iter()
        .any(|class| code.starts_with(class))
    {
        Fault::Transient
    } else {
        Fault::Permanent
    }
}

/// The server's message when there is one (tokio-postgres's own `Display`
/// says only "db error").
pub(super) fn describe(e: &tokio_postgres::Error) -> String {
    match e.as_db_error() {
        Some(db) => match db.detail() {
            Some(detail) => format!("{}: {detail}", db.message()),
            None => db.message().to_string(),
        },
        None => match std::error::Error::source(e) {
            Some(source) => format!("{e}: {source}"),
            None => e.to_string(),
        },
    }
}

pub(super) fn corrupt(key: impl ToString, reason: impl ToString) -> StoreError {
    StoreError::Corrupt {
        key: key.to_string(),
        reason: reason.to_string(),
    }
}

/// A record as stored: the API's JSON of it, with the token (which the API
/// never shows) beside the other fields, as text made without building a
/// tree of values: the record as the API writes it, its closing brace then
/// opened for the token. The writer makes one of these for every new node
/// of a storm.
pub(super) fn node_text(n: &Node) -> Result<String, StoreError> {
    let mut text = serde_json::to_string(n).map_err(|e| unstorable(n, e))?;
    let token = serde_json::to_string(&n.token).map_err(|e| unstorable(n, e))?;
    // A record always has fields (the MAC first), so a comma goes before the token.
    if text.pop() != Some('}') {
        return Err(unstorable(n, "its JSON is not an object"));
    }
    text.push_str(",\"token\":");
    text.push_str(&token);
    text.push('}');
    Ok(text)
}

fn unstorable(n: &Node, e: impl std::fmt::Display) -> StoreError {
    StoreError::Conflict(format!("the record of {} cannot be stored: {e}", n.mac))
}

pub(super) fn node_from_json(v: serde_json::Value) -> Result<Node, StoreError> {
    let mac = v
        .get("mac")
        .and_then(|m| m.as_str())
        .unwrap_or("?")
        .to_string();
    serde_json::from_value(v).map_err(|e| corrupt(mac, e))
}

/// A node's row: its record (first column, `text` since schema 9), read
/// straight into a [`Node`] (a load of a large store reads a million); one
/// that does not read is read again as plain JSON for an error that names
/// its MAC.
pub(super) fn node_from_row(row: &Row) -> Result<Node, StoreError> {
    let text: &str = row.try_get(0).map_err(db("read a node"))?;
    match serde_json::from_str::<Node>(text) {
        Ok(node) => Ok(node),
        Err(e) => match serde_json::from_str(text) {
            Ok(v) => node_from_json(v),
            Err(_) => Err(corrupt("?", e)),
        },
    }
}

/// Every node record, by MAC, as `client` (a connection or a transaction)
/// sees them; `op` says what they were read for.
pub(super) async fn all_nodes(
    client: &impl GenericClient,
    op: &'static str,
) -> Result<HashMap<Mac, Node>, StoreError> {
    let rows = client
        .query("SELECT record FROM nodes", &[])
        .await
        .map_err(db(op))?;
    rows.iter()
        .map(|row| node_from_row(row).map(|n| (n.mac, n)))
        .collect()
}

pub(super) fn mac_text(mac: Mac) -> String {
    mac.to_string()
}

pub(super) fn ip_col(ip: Ipv4Addr) -> i64 {
    i64::from(u32::from(ip))
}

pub(super) fn ip_of(v: i64) -> Ipv4Addr {
    Ipv4Addr::from(v as u32)
}

/// A lease's row: `ip, mac, state, expires`.
pub(super) fn lease_from_row(row: &Row) -> Result<Lease, StoreError> {
    let ip = ip_of(row.try_get(0).map_err(db("read a lease"))?);
    let mac: Option<String> = row.try_get(1).map_err(db("read a lease"))?;
    let state: String = row.try_get(2).map_err(db("read a lease"))?;
    Ok(Lease {
        ip,
        mac: mac
            .map(|m| m.parse().map_err(|e| corrupt(ip, e)))
            .transpose()?,
        state: state.parse::<LeaseState>().map_err(|e| corrupt(ip, e))?,
        expires: Timestamp(row.try_get(3).map_err(db("read a lease"))?),
    })
}
