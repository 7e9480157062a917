//! The embedded store engine: one SQLite file in the state directory, in WAL
//! mode, so nothing has to be installed or started.

use std::net::Ipv4Addr;
use std::path::Path;
use std::str::FromStr;
use std::time::Duration;

use async_trait::async_trait;
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteRow,
    SqliteSynchronous,
};
use sqlx::{Row, Sqlite, Transaction};

use super::{EVENTS_PER_NODE, LeaseRequest, Store, StoreError};
use crate::model::{
    BootArch, Event, EventKind, Lease, LeaseState, Mac, Node, NodeState, Timestamp,
};

const SCHEMA: &str = r#"
CREATE TABLE IF NOT EXISTS nodes (
    mac             TEXT PRIMARY KEY NOT NULL,
    hostname        TEXT NOT NULL UNIQUE COLLATE NOCASE,
    ipv4            INTEGER UNIQUE,
    labels          TEXT NOT NULL DEFAULT '{}',
    params          TEXT NOT NULL DEFAULT '{}',
    bootenv         TEXT NOT NULL,
    next_bootenv    TEXT,
    bootenv_expires INTEGER,
    protected       INTEGER NOT NULL DEFAULT 0,
    state           TEXT NOT NULL,
    state_reason    TEXT,
    relay_info      TEXT,
    arch            TEXT,
    last_seen       INTEGER,
    token           TEXT NOT NULL,
    created         INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS leases (
    ip      INTEGER PRIMARY KEY NOT NULL,
    mac     TEXT,
    state   TEXT NOT NULL,
    expires INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS leases_by_mac ON leases(mac);
CREATE TABLE IF NOT EXISTS events (
    id     INTEGER PRIMARY KEY AUTOINCREMENT,
    mac    TEXT NOT NULL,
    at     INTEGER NOT NULL,
    kind   TEXT NOT NULL,
    detail TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS events_by_mac ON events(mac, id);
"#;

pub struct SqliteStore {
    pool: SqlitePool,
}

fn db(op: &'static str) -> impl FnOnce(sqlx::Error) -> StoreError {
    move |source| StoreError::Database { op, source }
}

impl SqliteStore {
    /// Opens (creating if needed) `rackboot.db` in `state_dir`.
    pub async fn open(state_dir: &Path) -> Result<SqliteStore, StoreError> {
        let path = state_dir.join("rackboot.db");
        let open_err = |source| StoreError::Open {
            path: path.clone(),
            source,
        };
        std::fs::create_dir_all(state_dir).map_err(|e| open_err(sqlx::Error::Io(e)))?;
        let options = SqliteConnectOptions::new()
            .filename(&path)
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            // WAL + NORMAL survives a process crash (kill -9) without losing
            // committed transactions; only a power loss may drop the last ones.
            .synchronous(SqliteSynchronous::Normal)
            .busy_timeout(Duration::from_secs(5))
            .foreign_keys(true);
        let pool = SqlitePoolOptions::new()
            .max_connections(4)
            .connect_with(options)
            .await
            .map_err(open_err)?;
        sqlx::raw_sql(SCHEMA)
            .execute(&pool)
            .await
            .map_err(open_err)?;
        Ok(SqliteStore { pool })
    }

    /// A private store in memory, for tests.
    pub async fn in_memory() -> Result<SqliteStore, StoreError> {
        let options = SqliteConnectOptions::from_str("sqlite::memory:")
            .map_err(db("open in-memory database"))?;
        // One connection: each in-memory connection would be its own database.
        let pool = SqlitePoolOptions::new()
            .max_connections(1)
            .connect_with(options)
            .await
            .map_err(db("open in-memory database"))?;
        sqlx::raw_sql(SCHEMA)
            .execute(&pool)
            .await
            .map_err(db("create schema"))?;
        Ok(SqliteStore { pool })
    }

    async fn write_tx(&self) -> Result<Transaction<'static, Sqlite>, StoreError> {
        // IMMEDIATE takes the write lock up front, so two allocations can
        // never both read the same free address.
        self.pool
            .begin_with("BEGIN IMMEDIATE")
            .await
            .map_err(db("begin transaction"))
    }
}

fn corrupt(key: impl ToString, reason: impl ToString) -> StoreError {
    StoreError::Corrupt {
        key: key.to_string(),
        reason: reason.to_string(),
    }
}

fn ip_of(v: i64) -> Ipv4Addr {
    Ipv4Addr::from(v as u32)
}

fn ip_col(ip: Ipv4Addr) -> i64 {
    u32::from(ip) as i64
}

fn node_from_row(row: &SqliteRow) -> Result<Node, StoreError> {
    let mac_s: String = row.try_get("mac").map_err(db("read node"))?;
    let mac = Mac::from_str(&mac_s).map_err(|e| corrupt(&mac_s, e))?;
    let get_s =
        |col: &str| -> Result<String, StoreError> { row.try_get(col).map_err(db("read node")) };
    let labels = serde_json::from_str(&get_s("labels")?).map_err(|e| corrupt(mac, e))?;
    let params = serde_json::from_str(&get_s("params")?).map_err(|e| corrupt(mac, e))?;
    let state_s = get_s("state")?;
    let arch: Option<String> = row.try_get("arch").map_err(db("read node"))?;
    Ok(Node {
        mac,
        hostname: get_s("hostname")?,
        ipv4: row
            .try_get::<Option<i64>, _>("ipv4")
            .map_err(db("read node"))?
            .map(ip_of),
        labels,
        params,
        bootenv: get_s("bootenv")?,
        next_bootenv: row.try_get("next_bootenv").map_err(db("read node"))?,
        bootenv_expires: row
            .try_get::<Option<i64>, _>("bootenv_expires")
            .map_err(db("read node"))?
            .map(Timestamp),
        protected: row.try_get("protected").map_err(db("read node"))?,
        state: NodeState::from_str(&state_s).map_err(|e| corrupt(mac, e))?,
        state_reason: row.try_get("state_reason").map_err(db("read node"))?,
        relay_info: row.try_get("relay_info").map_err(db("read node"))?,
        arch: arch
            .map(|a| BootArch::from_str(&a))
            .transpose()
            .map_err(|e| corrupt(mac, e))?,
        last_seen: row
            .try_get::<Option<i64>, _>("last_seen")
            .map_err(db("read node"))?
            .map(Timestamp),
        token: get_s("token")?,
        created: Timestamp(row.try_get("created").map_err(db("read node"))?),
    })
}

fn lease_from_row(row: &SqliteRow) -> Result<Lease, StoreError> {
    let ip = ip_of(row.try_get("ip").map_err(db("read lease"))?);
    let mac: Option<String> = row.try_get("mac").map_err(db("read lease"))?;
    let state: String = row.try_get("state").map_err(db("read lease"))?;
    Ok(Lease {
        ip,
        mac: mac
            .map(|m| Mac::from_str(&m))
            .transpose()
            .map_err(|e| corrupt(ip, e))?,
        state: LeaseState::from_str(&state).map_err(|e| corrupt(ip, e))?,
        expires: Timestamp(row.try_get("expires").map_err(db("read lease"))?),
    })
}

#[async_trait]
impl Store for SqliteStore {
    async fn node(&self, mac: Mac) -> Result<Option<Node>, StoreError> {
        let row = sqlx::query(
            "SELECT mac, hostname, ipv4, labels, params, bootenv, next_bootenv, bootenv_expires, \
             protected, state, state_reason, relay_info, arch, last_seen, token, created FROM nodes WHERE mac = ?",
        )
        .bind(mac.to_string())
        .fetch_optional(&self.pool)
        .await
        .map_err(db("get node"))?;
        row.as_ref().map(node_from_row).transpose()
    }

    async fn create_node_if_absent(&self, node: Node) -> Result<(Node, bool), StoreError> {
        let labels = serde_json::to_string(&node.labels).unwrap_or_else(|_| "{}".into());
        let params = serde_json::to_string(&node.params).unwrap_or_else(|_| "{}".into());
        let done = sqlx::query(
            "INSERT INTO nodes (mac, hostname, ipv4, labels, params, bootenv, next_bootenv, \
             bootenv_expires, protected, state, state_reason, relay_info, arch, last_seen, token, created) \
             VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT(mac) DO NOTHING",
        )
        .bind(node.mac.to_string())
        .bind(&node.hostname)
        .bind(node.ipv4.map(ip_col))
        .bind(labels)
        .bind(params)
        .bind(&node.bootenv)
        .bind(&node.next_bootenv)
        .bind(node.bootenv_expires.map(Timestamp::millis))
        .bind(node.protected)
        .bind(node.state.as_str())
        .bind(&node.state_reason)
        .bind(&node.relay_info)
        .bind(node.arch.map(BootArch::as_str))
        .bind(node.last_seen.map(Timestamp::millis))
        .bind(&node.token)
        .bind(node.created.millis())
        .execute(&self.pool)
        .await
        .map_err(db("create node"))?;
        let created = done.rows_affected() == 1;
        let stored = self
            .node(node.mac)
            .await?
            .ok_or(StoreError::NoSuchNode(node.mac))?;
        Ok((stored, created))
    }

    async fn nodes(&self) -> Result<Vec<Node>, StoreError> {
        let rows = sqlx::query(
            "SELECT mac, hostname, ipv4, labels, params, bootenv, next_bootenv, bootenv_expires, \
             protected, state, state_reason, relay_info, arch, last_seen, token, created FROM nodes ORDER BY mac",
        )
        .fetch_all(&self.pool)
        .await
        .map_err(db("list nodes"))?;
        rows.iter().map(node_from_row).collect()
    }

    async fn touch_node(
        &self,
        mac: Mac,
        arch: Option<BootArch>,
        now: Timestamp,
    ) -> Result<(), StoreError> {
        let done =
            sqlx::query("UPDATE nodes SET last_seen = ?, arch = COALESCE(?, arch) WHERE mac = ?")
                .bind(now.millis())
                .bind(arch.map(BootArch::as_str))
                .bind(mac.to_string())
                .execute(&self.pool)
                .await
                .map_err(db("touch node"))?;
        if done.rows_affected() == 0 {
            return Err(StoreError::NoSuchNode(mac));
        }
        Ok(())
    }

    async fn set_node_state(
        &self,
        mac: Mac,
        state: NodeState,
        reason: Option<&str>,
    ) -> Result<(), StoreError> {
        let done = sqlx::query("UPDATE nodes SET state = ?, state_reason = ? WHERE mac = ?")
            .bind(state.as_str())
            .bind(reason)
            .bind(mac.to_string())
            .execute(&self.pool)
            .await
            .map_err(db("set node state"))?;
        if done.rows_affected() == 0 {
            return Err(StoreError::NoSuchNode(mac));
        }
        Ok(())
    }

    async fn set_node_relay_info(&self, mac: Mac, info: Option<&str>) -> Result<(), StoreError> {
        sqlx::query("UPDATE nodes SET relay_info = ? WHERE mac = ? AND relay_info IS NOT ?")
            .bind(info)
            .bind(mac.to_string())
            .bind(info)
            .execute(&self.pool)
            .await
            .map_err(db("set relay info"))?;
        Ok(())
    }

    async fn add_event(&self, mac: Mac, event: &Event) -> Result<(), StoreError> {
        let mac_s = mac.to_string();
        let mut tx = self.write_tx().await?;
        let id = sqlx::query("INSERT INTO events (mac, at, kind, detail) VALUES (?, ?, ?, ?)")
            .bind(&mac_s)
            .bind(event.at.millis())
            .bind(event.kind.as_str())
            .bind(&event.detail)
            .execute(&mut *tx)
            .await
            .map_err(db("add event"))?
            .last_insert_rowid();
        sqlx::query("DELETE FROM events WHERE mac = ? AND id <= ?")
            .bind(&mac_s)
            .bind(id - EVENTS_PER_NODE)
            .execute(&mut *tx)
            .await
            .map_err(db("trim events"))?;
        tx.commit().await.map_err(db("add event"))
    }

    async fn events(&self, mac: Mac) -> Result<Vec<Event>, StoreError> {
        let rows = sqlx::query("SELECT at, kind, detail FROM events WHERE mac = ? ORDER BY id")
            .bind(mac.to_string())
            .fetch_all(&self.pool)
            .await
            .map_err(db("list events"))?;
        rows.iter()
            .map(|r| {
                let kind: String = r.try_get("kind").map_err(db("read event"))?;
                Ok(Event {
                    at: Timestamp(r.try_get("at").map_err(db("read event"))?),
                    kind: EventKind::from_str(&kind).map_err(|e| corrupt(mac, e))?,
                    detail: r.try_get("detail").map_err(db("read event"))?,
                })
            })
            .collect()
    }

    async fn lease_of(&self, mac: Mac) -> Result<Option<Lease>, StoreError> {
        let row = sqlx::query("SELECT ip, mac, state, expires FROM leases WHERE mac = ? ORDER BY expires DESC LIMIT 1")
            .bind(mac.to_string())
            .fetch_optional(&self.pool)
            .await
            .map_err(db("get lease"))?;
        row.as_ref().map(lease_from_row).transpose()
    }

    async fn lease_at(&self, ip: Ipv4Addr) -> Result<Option<Lease>, StoreError> {
        let row = sqlx::query("SELECT ip, mac, state, expires FROM leases WHERE ip = ?")
            .bind(ip_col(ip))
            .fetch_optional(&self.pool)
            .await
            .map_err(db("get lease"))?;
        row.as_ref().map(lease_from_row).transpose()
    }

    async fn leases(&self) -> Result<Vec<Lease>, StoreError> {
        let rows = sqlx::query("SELECT ip, mac, state, expires FROM leases ORDER BY ip")
            .fetch_all(&self.pool)
            .await
            .map_err(db("list leases"))?;
        rows.iter().map(lease_from_row).collect()
    }

    async fn allocate(&self, req: &LeaseRequest) -> Result<Option<Lease>, StoreError> {
        let mac_s = req.mac.to_string();
        let now = req.now.millis();
        let mut tx = self.write_tx().await?;

        // Who holds an address right now: a live lease of another MAC, or
        // another node's fixed address.
        async fn taken_by_other(
            tx: &mut Transaction<'static, Sqlite>,
            ip: Ipv4Addr,
            mac: &str,
            now: i64,
        ) -> Result<bool, StoreError> {
            let n: i64 = sqlx::query_scalar(
                "SELECT (SELECT COUNT(*) FROM leases WHERE ip = ?1 AND expires > ?3 \
                   AND (mac IS NULL OR mac != ?2)) \
                 + (SELECT COUNT(*) FROM nodes WHERE ipv4 = ?1 AND mac != ?2)",
            )
            .bind(ip_col(ip))
            .bind(mac)
            .bind(now)
            .fetch_one(&mut **tx)
            .await
            .map_err(db("check address"))?;
            Ok(n > 0)
        }

        let in_range = |ip: Ipv4Addr| {
            req.ranges
                .iter()
                .any(|(a, b)| (u32::from(*a)..=u32::from(*b)).contains(&u32::from(ip)))
        };

        let mut chosen = None;
        if let Some(fixed) = req.fixed {
            // A fixed address is the node's own: no other MAC may hold it,
            // but a stale dynamic lease of someone else on it is overridden
            // only once it has expired.
            if !taken_by_other(&mut tx, fixed, &mac_s, now).await? {
                chosen = Some(fixed);
            }
        } else {
            let current: Option<i64> = sqlx::query_scalar(
                "SELECT ip FROM leases WHERE mac = ? AND state != 'declined' ORDER BY expires DESC LIMIT 1",
            )
            .bind(&mac_s)
            .fetch_optional(&mut *tx)
            .await
            .map_err(db("find lease"))?;
            let candidates = current.map(ip_of).into_iter().chain(req.wanted);
            for ip in candidates {
                if in_range(ip) && !taken_by_other(&mut tx, ip, &mac_s, now).await? {
                    chosen = Some(ip);
                    break;
                }
            }
            for &(first, last) in &req.ranges {
                if chosen.is_some() {
                    break;
                }
                let busy: Vec<i64> = sqlx::query_scalar(
                    "SELECT ip FROM leases WHERE ip BETWEEN ?1 AND ?2 AND expires > ?3 \
                     UNION SELECT ipv4 FROM nodes WHERE ipv4 BETWEEN ?1 AND ?2 ORDER BY 1",
                )
                .bind(ip_col(first))
                .bind(ip_col(last))
                .bind(now)
                .fetch_all(&mut *tx)
                .await
                .map_err(db("scan pool"))?;
                let busy: std::collections::HashSet<u32> =
                    busy.into_iter().map(|v| v as u32).collect();
                chosen = (u32::from(first)..=u32::from(last))
                    .find(|ip| !busy.contains(ip))
                    .map(Ipv4Addr::from);
            }
        }
        let Some(ip) = chosen else {
            return Ok(None);
        };
        // One lease per MAC: drop any other address it held.
        sqlx::query("DELETE FROM leases WHERE mac = ? AND ip != ?")
            .bind(&mac_s)
            .bind(ip_col(ip))
            .execute(&mut *tx)
            .await
            .map_err(db("drop old lease"))?;
        sqlx::query(
            "INSERT INTO leases (ip, mac, state, expires) VALUES (?, ?, ?, ?) \
             ON CONFLICT(ip) DO UPDATE SET mac = excluded.mac, state = excluded.state, expires = excluded.expires",
        )
        .bind(ip_col(ip))
        .bind(&mac_s)
        .bind(req.state.as_str())
        .bind(req.expires.millis())
        .execute(&mut *tx)
        .await
        .map_err(db("record lease"))?;
        tx.commit().await.map_err(db("record lease"))?;
        Ok(Some(Lease {
            ip,
            mac: Some(req.mac),
            state: req.state,
            expires: req.expires,
        }))
    }

    async fn release(&self, mac: Mac, ip: Ipv4Addr) -> Result<bool, StoreError> {
        let done = sqlx::query("DELETE FROM leases WHERE ip = ? AND mac = ?")
            .bind(ip_col(ip))
            .bind(mac.to_string())
            .execute(&self.pool)
            .await
            .map_err(db("release lease"))?;
        Ok(done.rows_affected() > 0)
    }

    async fn decline(&self, ip: Ipv4Addr, until: Timestamp) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO leases (ip, mac, state, expires) VALUES (?, NULL, 'declined', ?) \
             ON CONFLICT(ip) DO UPDATE SET mac = NULL, state = 'declined', expires = excluded.expires",
        )
        .bind(ip_col(ip))
        .bind(until.millis())
        .execute(&self.pool)
        .await
        .map_err(db("decline address"))?;
        Ok(())
    }

    async fn host_addr(
        &self,
        hostname: &str,
        now: Timestamp,
    ) -> Result<Option<Ipv4Addr>, StoreError> {
        let v: Option<i64> = sqlx::query_scalar(
            "SELECT COALESCE(n.ipv4, (SELECT l.ip FROM leases l WHERE l.mac = n.mac \
               AND l.state = 'bound' AND l.expires > ? ORDER BY l.expires DESC LIMIT 1)) \
             FROM nodes n WHERE n.hostname = ? COLLATE NOCASE",
        )
        .bind(now.millis())
        .bind(hostname)
        .fetch_optional(&self.pool)
        .await
        .map_err(db("resolve hostname"))?
        .flatten();
        Ok(v.map(ip_of))
    }

    async fn addr_host(&self, ip: Ipv4Addr, now: Timestamp) -> Result<Option<String>, StoreError> {
        let v: Option<String> = sqlx::query_scalar(
            "SELECT hostname FROM nodes WHERE ipv4 = ?1 \
             UNION ALL SELECT n.hostname FROM nodes n JOIN leases l ON l.mac = n.mac \
               WHERE l.ip = ?1 AND l.state = 'bound' AND l.expires > ?2 LIMIT 1",
        )
        .bind(ip_col(ip))
        .bind(now.millis())
        .fetch_optional(&self.pool)
        .await
        .map_err(db("resolve address"))?;
        Ok(v)
    }

    async fn mac_at(&self, ip: Ipv4Addr, now: Timestamp) -> Result<Option<Mac>, StoreError> {
        let v: Option<String> = sqlx::query_scalar(
            "SELECT mac FROM leases WHERE ip = ?1 AND mac IS NOT NULL AND expires > ?2 \
             UNION ALL SELECT mac FROM nodes WHERE ipv4 = ?1 LIMIT 1",
        )
        .bind(ip_col(ip))
        .bind(now.millis())
        .fetch_optional(&self.pool)
        .await
        .map_err(db("find MAC by address"))?;
        v.map(|m| Mac::from_str(&m).map_err(|e| corrupt(ip, e)))
            .transpose()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mac(n: u8) -> Mac {
        Mac::new([0x52, 0x54, 0, 0, 0, n])
    }

    fn req(m: Mac, now: i64) -> LeaseRequest {
        LeaseRequest {
            mac: m,
            ranges: vec![("10.0.0.10".parse().unwrap(), "10.0.0.12".parse().unwrap())],
            fixed: None,
            wanted: None,
            state: LeaseState::Bound,
            expires: Timestamp(now + 3_600_000),
            now: Timestamp(now),
        }
    }

    #[tokio::test]
    async fn nodes_are_created_once_and_read_back() {
        let s = SqliteStore::in_memory().await.unwrap();
        let mut n = Node::discovered(mac(1), "discovery", "t1".into(), Timestamp(5));
        n.labels.insert("rack".into(), "r1".into());
        let (got, created) = s.create_node_if_absent(n.clone()).await.unwrap();
        assert!(created);
        assert_eq!(got, n);
        let other = Node::discovered(mac(1), "local", "t2".into(), Timestamp(6));
        let (got, created) = s.create_node_if_absent(other).await.unwrap();
        assert!(!created);
        assert_eq!(got.bootenv, "discovery", "the first record stays");
        s.set_node_state(mac(1), NodeState::Failed, Some("why"))
            .await
            .unwrap();
        s.touch_node(mac(1), Some(BootArch::Arm64Efi), Timestamp(9))
            .await
            .unwrap();
        let got = s.node(mac(1)).await.unwrap().unwrap();
        assert_eq!(
            (got.state, got.state_reason.as_deref()),
            (NodeState::Failed, Some("why"))
        );
        assert_eq!(
            (got.arch, got.last_seen),
            (Some(BootArch::Arm64Efi), Some(Timestamp(9)))
        );
        assert!(
            s.set_node_state(mac(2), NodeState::Booted, None)
                .await
                .unwrap_err()
                .is_no_such_node()
        );
    }

    #[tokio::test]
    async fn allocation_never_doubles_an_address_and_keeps_a_macs_lease() {
        let s = SqliteStore::in_memory().await.unwrap();
        let a = s.allocate(&req(mac(1), 0)).await.unwrap().unwrap();
        let b = s.allocate(&req(mac(2), 0)).await.unwrap().unwrap();
        let c = s.allocate(&req(mac(3), 0)).await.unwrap().unwrap();
        assert_eq!(
            [a.ip, b.ip, c.ip].map(|i| i.to_string()),
            ["10.0.0.10", "10.0.0.11", "10.0.0.12"]
        );
        assert_eq!(
            s.allocate(&req(mac(4), 0)).await.unwrap(),
            None,
            "pool exhausted"
        );
        // Renewal keeps the address, even when asking for another one.
        let mut r = req(mac(2), 10);
        r.wanted = Some("10.0.0.10".parse().unwrap());
        assert_eq!(s.allocate(&r).await.unwrap().unwrap().ip, b.ip);
        assert!(s.release(mac(1), a.ip).await.unwrap());
        assert_eq!(s.lease_of(mac(1)).await.unwrap(), None);
        // After expiry an address can move to another MAC.
        let late = req(mac(4), 3_600_001);
        assert_eq!(s.allocate(&late).await.unwrap().unwrap().ip, a.ip);
    }

    #[tokio::test]
    async fn fixed_addresses_are_reserved_for_their_node() {
        let s = SqliteStore::in_memory().await.unwrap();
        let mut n = Node::discovered(mac(9), "discovery", "t".into(), Timestamp(0));
        n.ipv4 = Some("10.0.0.10".parse().unwrap());
        s.create_node_if_absent(n).await.unwrap();
        let other = s.allocate(&req(mac(1), 0)).await.unwrap().unwrap();
        assert_eq!(
            other.ip.to_string(),
            "10.0.0.11",
            "reserved address skipped"
        );
        let mut r = req(mac(9), 0);
        r.fixed = Some("10.0.0.10".parse().unwrap());
        assert_eq!(
            s.allocate(&r).await.unwrap().unwrap().ip.to_string(),
            "10.0.0.10"
        );
        assert_eq!(
            s.mac_at("10.0.0.10".parse().unwrap(), Timestamp(0))
                .await
                .unwrap(),
            Some(mac(9))
        );
        assert_eq!(
            s.host_addr("NODE-525400000009", Timestamp(0))
                .await
                .unwrap(),
            Some("10.0.0.10".parse().unwrap())
        );
        assert_eq!(
            s.addr_host("10.0.0.11".parse().unwrap(), Timestamp(0))
                .await
                .unwrap(),
            None,
            "mac 1 has no node record"
        );
    }

    #[tokio::test]
    async fn declined_addresses_leave_the_pool_until_they_expire() {
        let s = SqliteStore::in_memory().await.unwrap();
        s.decline("10.0.0.10".parse().unwrap(), Timestamp(1000))
            .await
            .unwrap();
        assert_eq!(
            s.allocate(&req(mac(1), 0))
                .await
                .unwrap()
                .unwrap()
                .ip
                .to_string(),
            "10.0.0.11"
        );
        assert_eq!(
            s.allocate(&req(mac(2), 2000))
                .await
                .unwrap()
                .unwrap()
                .ip
                .to_string(),
            "10.0.0.10"
        );
    }

    #[tokio::test]
    async fn events_are_bounded_per_node_oldest_dropped_first() {
        let s = SqliteStore::in_memory().await.unwrap();
        for i in 0..(EVENTS_PER_NODE + 5) {
            let e = Event {
                at: Timestamp(i),
                kind: EventKind::DhcpAck,
                detail: format!("{i}"),
            };
            s.add_event(mac(1), &e).await.unwrap();
        }
        s.add_event(
            mac(2),
            &Event {
                at: Timestamp(0),
                kind: EventKind::TftpSent,
                detail: String::new(),
            },
        )
        .await
        .unwrap();
        let ev = s.events(mac(1)).await.unwrap();
        assert_eq!(ev.len() as i64, EVENTS_PER_NODE);
        assert_eq!(ev[0].detail, "5");
        assert_eq!(s.events(mac(2)).await.unwrap().len(), 1);
    }
}
