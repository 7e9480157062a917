//! Moving a site to PostgreSQL: every node record, lease, timeline, script
//! report and rollout of another store (a SQLite state directory), copied into
//! an empty database in one transaction: all of it or nothing.

use super::PostgresConfig;
use super::rows::{db, ip_col, mac_text, node_text};
use super::writer::{insert_event, insert_report};
use crate::store::{Store, StoreError};

/// What was copied.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Copied {
    pub nodes: usize,
    pub leases: usize,
    pub events: usize,
    pub reports: usize,
    pub rollouts: usize,
}

/// Copies everything `from` holds into the database of `to`, which must
/// hold no node records or leases yet (its schema is made if missing).
/// Timelines are copied for the MACs that have a record.
pub async fn copy_site(from: &dyn Store, to: &PostgresConfig) -> Result<Copied, StoreError> {
    let (mut client, connection) = to.connector()?.connect().await?;
    let connection = tokio::spawn(connection);
    super::schema::migrate(&mut client).await?;
    let tx = client.transaction().await.map_err(db("begin the copy"))?;
    let held: i64 = tx
        .query_one(
            "SELECT (SELECT count(*) FROM nodes) + (SELECT count(*) FROM leases)",
            &[],
        )
        .await
        .map_err(db("look at the target"))?
        .get(0);
    if held > 0 {
        return Err(StoreError::Conflict(format!(
            "the database already holds {held} node records and leases: copy into an empty one \
             (nothing was copied)"
        )));
    }
    let mut copied = Copied::default();
    for n in from.nodes().await? {
        tx.execute(
            "INSERT INTO nodes (mac, hostname_lc, ipv4, record) VALUES ($1, $2, $3, $4)",
            &[
                &mac_text(n.mac),
                &n.hostname.to_ascii_lowercase(),
                &n.ipv4.map(ip_col),
                &node_text(&n)?,
            ],
        )
        .await
        .map_err(db("copy a node"))?;
        copied.nodes += 1;
        for e in from.events(n.mac).await? {
            insert_event(&tx, n.mac, &e).await?;
            copied.events += 1;
        }
        let (reports, dropped) = from.reports(n.mac).await?;
        for r in reports {
            insert_report(&tx, n.mac, &r).await?;
            copied.reports += 1;
        }
        if dropped > 0 {
            tx.execute(
                "INSERT INTO report_drops (mac, dropped) VALUES ($1, $2)",
                &[&mac_text(n.mac), &(dropped as i64)],
            )
            .await
            .map_err(db("copy a report count"))?;
        }
    }
    for l in from.leases().await? {
        tx.execute(
            "INSERT INTO leases (ip, mac, state, expires) VALUES ($1, $2, $3, $4)",
            &[
                &ip_col(l.ip),
                &l.mac.map(mac_text),
                &l.state.as_str(),
                &l.expires.millis(),
            ],
        )
        .await
        .map_err(db("copy a lease"))?;
        copied.leases += 1;
    }
    // A rollout in flight goes on from the new store where it was.
    for r in from.rollouts().await? {
        let doc = serde_json::to_value(&r).map_err(|e| super::rows::corrupt(&r.id, e))?;
        tx.execute(
            "INSERT INTO rollouts (id, created, doc) VALUES ($1, $2, $3)",
            &[&r.id, &r.created.millis(), &doc],
        )
        .await
        .map_err(db("copy a rollout"))?;
        copied.rollouts += 1;
    }
    tx.commit().await.map_err(db("commit the copy"))?;
    drop(client);
    let _ = connection.await;
    Ok(copied)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Event, EventData, Lease, LeaseState, Mac, Node, ScriptReport, Timestamp};
    use crate::store::postgres::{PostgresStore, scratch::ScratchCluster};
    use crate::store::{LeaseRequest, SqliteStore};

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_sqlite_site_is_copied_whole_and_only_into_an_empty_database() {
        let dir = tempfile::tempdir().unwrap();
        let from = SqliteStore::open(dir.path()).await.unwrap();
        let mac = |n: u8| Mac::new([0x52, 0x54, 0, 0, 2, n]);
        for n in 1..=3 {
            let mut node =
                Node::discovered(mac(n), "discovery", format!("t{n}"), Timestamp(n as i64));
            node.labels.insert("rack".into(), "r1".into());
            from.create_node_if_absent(node).await.unwrap();
            from.add_event(
                mac(n),
                &Event::new(
                    Timestamp(10),
                    EventData::moved(
                        crate::model::NodeState::Discovered,
                        crate::model::NodeState::Booting,
                        "test",
                    ),
                ),
            )
            .await
            .unwrap();
        }
        from.add_report(
            mac(1),
            &ScriptReport {
                at: Timestamp(20),
                generation: 1,
                script: "10-disk.sh".into(),
                status: 0,
                duration_ms: Some(5),
                output: "ok".into(),
            },
        )
        .await
        .unwrap();
        let lease = from
            .allocate(&LeaseRequest {
                mac: mac(2),
                ranges: vec![("10.8.0.10".parse().unwrap(), "10.8.0.20".parse().unwrap())],
                fixed: None,
                wanted: None,
                exact: false,
                state: LeaseState::Bound,
                expires: Timestamp(i64::MAX),
                now: Timestamp(1),
            })
            .await
            .unwrap()
            .unwrap();
        let rollout = crate::store::contract::rollout("r-1", 30);
        from.create_rollout(&rollout).await.unwrap();
        from.sync().await.unwrap();

        let cluster = ScratchCluster::for_process();
        cluster.create_database("copy_target").unwrap();
        let to = PostgresConfig {
            url: cluster.url("copy_target"),
            password: None,
            appliance: "copy".into(),
            ca_file: None,
        };
        let copied = copy_site(&from, &to).await.unwrap();
        assert_eq!(
            copied,
            Copied {
                nodes: 3,
                leases: 1,
                events: 3,
                reports: 1,
                rollouts: 1,
            }
        );
        let pg = PostgresStore::open(to.clone()).await.unwrap();
        assert_eq!(pg.nodes().await.unwrap(), from.nodes().await.unwrap());
        assert_eq!(pg.rollouts().await.unwrap(), [rollout]);
        assert_eq!(pg.leases().await.unwrap(), vec![Lease { ..lease }]);
        assert_eq!(
            pg.events(mac(3)).await.unwrap(),
            from.events(mac(3)).await.unwrap()
        );
        assert_eq!(
            pg.reports(mac(1)).await.unwrap(),
            from.reports(mac(1)).await.unwrap()
        );
        // A second copy would mix two sites: refused, nothing written.
        let err = copy_site(&from, &to).await.unwrap_err();
        assert!(
            err.is_conflict() && err.to_string().contains("empty"),
            "{err}"
        );
        assert_eq!(pg.nodes().await.unwrap().len(), 3);
    }
}
