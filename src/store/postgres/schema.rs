//! The PostgreSQL schema, as numbered migrations applied in order at open.
//! A database whose schema is newer than this binary knows is refused: an
//! older rackboot must not write rows it does not understand.

use tokio_postgres::Client;

use super::rows::db;
use crate::store::{Fault, StoreError};

/// Each step brings the schema from its index to the next version; a step
/// is never changed once released, only new ones added.
const MIGRATIONS: &[&str] = &[
    // 1: nodes as JSON records with their unique keys beside them (the
    // constraints are deferrable, so an import may swap two hostnames in one
    // transaction); leases unique by address (what keeps two appliances from
    // binding one address) and by MAC; timelines and reports.
    r#"
CREATE TABLE nodes (
    mac         TEXT PRIMARY KEY,
    hostname_lc TEXT NOT NULL,
    ipv4        BIGINT,
    record      JSONB NOT NULL,
    CONSTRAINT nodes_hostname UNIQUE (hostname_lc) DEFERRABLE INITIALLY IMMEDIATE,
    CONSTRAINT nodes_ipv4 UNIQUE (ipv4) DEFERRABLE INITIALLY IMMEDIATE
);
CREATE TABLE leases (
    ip      BIGINT PRIMARY KEY,
    mac     TEXT,
    state   TEXT NOT NULL,
    expires BIGINT NOT NULL
);
CREATE UNIQUE INDEX leases_mac ON leases (mac) WHERE mac IS NOT NULL;
CREATE TABLE events (
    mac  TEXT NOT NULL,
    seq  BIGSERIAL,
    at   BIGINT NOT NULL,
    kind TEXT NOT NULL,
    data JSONB NOT NULL,
    PRIMARY KEY (mac, seq)
);
CREATE TABLE reports (
    id          BIGSERIAL PRIMARY KEY,
    mac         TEXT NOT NULL,
    at          BIGINT NOT NULL,
    generation  BIGINT NOT NULL,
    script      TEXT NOT NULL,
    status      INTEGER NOT NULL,
    duration_ms BIGINT,
    output      TEXT NOT NULL
);
CREATE INDEX reports_by_mac ON reports (mac, id);
CREATE TABLE report_drops (
    mac     TEXT PRIMARY KEY,
    dropped BIGINT NOT NULL
);
"#,
    // 2: which appliance recorded each timeline event (none for events
    // copied from a single appliance's SQLite store).
    "ALTER TABLE events ADD COLUMN appliance TEXT;",
    // 3: an allocation in one round trip: the candidates in order, each taken
    // by one conditional upsert that only a free, expired or already-this-MAC's
    // row lets through (the MAC's other lease given up with it), under its own
    // subtransaction, so a candidate found taken costs nothing but the next.
    r#"
CREATE FUNCTION rackboot_allocate(p_mac TEXT, p_ips BIGINT[], p_state TEXT, p_expires BIGINT,
                                  p_now BIGINT)
RETURNS TABLE (got_ip BIGINT, dropped_ips BIGINT[])
LANGUAGE plpgsql AS $fn$
DECLARE
    cand BIGINT;
    got BIGINT;
    gone BIGINT[];
BEGIN
    FOREACH cand IN ARRAY p_ips LOOP
        BEGIN
            WITH d AS (DELETE FROM leases l WHERE l.mac = p_mac AND l.ip <> cand RETURNING l.ip)
            SELECT coalesce(array_agg(d.ip), '{}') INTO gone FROM d;
            INSERT INTO leases AS l (ip, mac, state, expires)
            VALUES (cand, p_mac, p_state, p_expires)
            ON CONFLICT ON CONSTRAINT leases_pkey DO UPDATE
                SET mac = EXCLUDED.mac, state = EXCLUDED.state, expires = EXCLUDED.expires
                WHERE l.mac = EXCLUDED.mac OR l.expires <= p_now
            RETURNING l.ip INTO got;
            IF got IS NOT NULL THEN
                got_ip := got;
                dropped_ips := gone;
                RETURN NEXT;
                RETURN;
            END IF;
            -- Held by another MAC: undo the delete, try the next.
            RAISE SQLSTATE 'RBTKN';
        EXCEPTION WHEN SQLSTATE 'RBTKN' OR unique_violation THEN
            -- unique_violation: this MAC was bound elsewhere at the same moment.
            NULL;
        END;
    END LOOP;
END
$fn$;
"#,
    // 4: a new node record in one statement, without a savepoint around it: a
    // hostname or address another node holds is answered (its constraint
    // and detail), not raised, so the writes sent with it go on.
    r#"
CREATE FUNCTION rackboot_create_node(p_mac TEXT, p_hostname_lc TEXT, p_ipv4 BIGINT,
                                     p_record JSONB)
RETURNS TABLE (made BOOLEAN, existing JSONB, taken TEXT, detail TEXT)
LANGUAGE plpgsql AS $fn$
BEGIN
    made := false;
    BEGIN
        INSERT INTO nodes (mac, hostname_lc, ipv4, record)
        VALUES (p_mac, p_hostname_lc, p_ipv4, p_record)
        ON CONFLICT (mac) DO NOTHING;
        IF FOUND THEN
            made := true;
            RETURN NEXT;
            RETURN;
        END IF;
    EXCEPTION WHEN unique_violation THEN
        GET STACKED DIAGNOSTICS taken = CONSTRAINT_NAME, detail = PG_EXCEPTION_DETAIL;
        RETURN NEXT;
        RETURN;
    END;
    SELECT n.record INTO existing FROM nodes n WHERE n.mac = p_mac;
    RETURN NEXT;
END
$fn$;
"#,
    // 5: rollouts, each its whole record (`model::Rollout`), rewritten at
    // every step under a row lock.
    "CREATE TABLE rollouts (id TEXT PRIMARY KEY, created BIGINT NOT NULL, doc JSONB NOT NULL);",
    // 6: cheaper rows for the writes every DHCP exchange makes. Keys that
    // are MACs or lowercase hostnames compare byte by byte (collation "C"):
    // under a database's default locale every index comparison went through
    // strcoll, and a new client adds about six index entries keyed by its
    // MAC or hostname. A timeline event's data is `json`, kept as written
    // (checked, never rebuilt into `jsonb`'s binary form): events are only
    // appended and read whole. Node records stay `jsonb`: edits merge fields
    // into them in SQL. Measured here on PostgreSQL 15: an event row 5.1 ->
    // 4.4 us, a new node row 10.6 -> 10.1 us.
    r#"
ALTER TABLE nodes ALTER COLUMN mac TYPE TEXT COLLATE "C",
                  ALTER COLUMN hostname_lc TYPE TEXT COLLATE "C";
ALTER TABLE leases ALTER COLUMN mac TYPE TEXT COLLATE "C";
ALTER TABLE events ALTER COLUMN mac TYPE TEXT COLLATE "C",
                   ALTER COLUMN data TYPE JSON USING data::json;
ALTER TABLE reports ALTER COLUMN mac TYPE TEXT COLLATE "C";
ALTER TABLE report_drops ALTER COLUMN mac TYPE TEXT COLLATE "C";
"#,
    // 7: the two rows a new client costs most, made cheaper. A node record
    // is `json` after all: every new client writes one, and building
    // `jsonb`'s binary form was a quarter of that row, where an edit (an
    // admin's, or a reconfigure) is rare and goes through `jsonb` in SQL
    // (`writer::set_fields`, `writer::bump`). Leases leave half of each
    // heap page free: an address is written twice in a row (the OFFER's
    // claim, then the ACK; later each renewal), and with room on its page
    // the second write is a HOT update, which adds no index entry to
    // either lease index. Measured here on PostgreSQL 15, runs of 100: a
    // new node row 12.2 -> 9.0 us; an OFFER's claim and its ACK 6.0 -> 3.9
    // us a row. Pages already full (a site upgraded from 6) get their room
    // back as their old versions are pruned. `rackboot_create_node` (4)
    // stays as it is: it runs only when a run goes one write at a time,
    // and its `jsonb` record goes into the `json` column (and back) by
    // assignment cast.
    r#"
ALTER TABLE leases SET (fillfactor = 50);
ALTER TABLE nodes ALTER COLUMN record TYPE JSON USING record::json;
"#,
    // 8: no table changes: announcements go packed, all of a batch's notes
    // in as few payloads as fit (`announce`). A rackboot of schema 7 would
    // pass them over as a kind it does not know and answer from a memory
    // gone stale, so the version moves and such a rackboot is refused.
    "COMMENT ON TABLE rackboot_schema IS 'since 8, announcements are packed per batch';",
    // 9: node records and timeline data as `text`. `json` checked every
    // value as it went in (a lexer pass over each record and event), yet
    // only rackboot writes them, from its own serializer, and it parses
    // every one it reads; edits still go through `jsonb` in SQL
    // (`writer::set_fields`, `writer::bump`). Measured here on PostgreSQL
    // 15: an event row 5.2 -> 4.2 us (runs of 40); at 14 000 DORA/s
    // offered, PostgreSQL 33.8 -> 31.0 us of CPU an exchange.
    // `rackboot_create_node` casts its `jsonb` record both ways.
    r#"
ALTER TABLE nodes ALTER COLUMN record TYPE TEXT;
ALTER TABLE events ALTER COLUMN data TYPE TEXT;
CREATE OR REPLACE FUNCTION rackboot_create_node(p_mac TEXT, p_hostname_lc TEXT, p_ipv4 BIGINT,
                                                p_record JSONB)
RETURNS TABLE (made BOOLEAN, existing JSONB, taken TEXT, detail TEXT)
LANGUAGE plpgsql AS $fn$
BEGIN
    made := false;
    BEGIN
        INSERT INTO nodes (mac, hostname_lc, ipv4, record)
        VALUES (p_mac, p_hostname_lc, p_ipv4, p_record::text)
        ON CONFLICT (mac) DO NOTHING;
        IF FOUND THEN
            made := true;
            RETURN NEXT;
            RETURN;
        END IF;
    EXCEPTION WHEN unique_violation THEN
        GET STACKED DIAGNOSTICS taken = CONSTRAINT_NAME, detail = PG_EXCEPTION_DETAIL;
        RETURN NEXT;
        RETURN;
    END;
    SELECT n.record::jsonb INTO existing FROM nodes n WHERE n.mac = p_mac;
    RETURN NEXT;
END
$fn$;
"#,
    // 10: no table changes: a timeline row may hold several events of one
    // MAC, those it made within a quarter of a second (`kind` 'packed',
    // `data` a JSON array of them: `timeline`). A rackboot of schema 9
    // would read such a row as corrupt, so the version moves and such a
    // rackboot is refused.
    "COMMENT ON TABLE events IS 'since 10, a row of kind packed holds several events of its MAC';",
];

/// The schema version this binary writes.
pub(super) const VERSION: i32 = MIGRATIONS.len() as i32;

/// Brings the database to [`VERSION`], under a lock every appliance takes,
/// so two starting at once migrate once.
pub(super) async fn migrate(client: &mut Client) -> Result<(), StoreError> {
    migrate_to(client, VERSION).await
}

/// Brings the database to `target` (a test makes an older schema with it).
async fn migrate_to(client: &mut Client, target: i32) -> Result<(), StoreError> {
    let tx = client.transaction().await.map_err(db("begin migration"))?;
    // Any number, the same in every rackboot: the key of the migration lock.
    tx.execute("SELECT pg_advisory_xact_lock(7365823)", &[])
        .await
        .map_err(db("lock for migration"))?;
    tx.batch_execute("CREATE TABLE IF NOT EXISTS rackboot_schema (version INTEGER NOT NULL)")
        .await
        .map_err(db("make the schema table"))?;
    let found: Option<i32> = tx
        .query_opt("SELECT max(version) FROM rackboot_schema", &[])
        .await
        .map_err(db("read the schema version"))?
        .and_then(|row| row.get(0));
    let found = found.unwrap_or(0);
    if found > VERSION {
        return Err(StoreError::Engine {
            op: "open",
            fault: Fault::Permanent,
            cause: format!(
                "the database's schema is version {found}, newer than this rackboot knows \
                 ({VERSION}): another appliance runs a newer rackboot; upgrade this one"
            ),
        });
    }
    let steps = MIGRATIONS.iter().enumerate().take(target as usize);
    for (i, step) in steps.skip(found as usize) {
        tx.batch_execute(step)
            .await
            .map_err(db("migrate the schema"))?;
        tx.execute(
            "INSERT INTO rackboot_schema (version) VALUES ($1)",
            &[&(i as i32 + 1)],
        )
        .await
        .map_err(db("record the schema version"))?;
        tracing::info!(version = i + 1, "store: PostgreSQL schema migrated");
    }
    tx.commit().await.map_err(db("commit migration"))
}

#[cfg(test)]
mod tests {
    use std::net::Ipv4Addr;

    use super::*;
    use crate::model::{
        Event, EventData, EventKind, Lease, LeaseState, Mac, Node, NodeState, Timestamp,
    };
    use crate::store::Store;
    use crate::store::postgres::rows::{ip_col, mac_text, node_text};
    use crate::store::postgres::scratch::ScratchCluster;
    use crate::store::postgres::{PostgresConfig, PostgresStore};

    /// A site written by a rackboot of schema 5 (`jsonb` event data, keys
    /// in the database's collation) reads back whole after the upgrade.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_database_of_schema_5_is_upgraded_with_its_rows() {
        let cluster = ScratchCluster::for_process();
        cluster.create_database("upgrade_from_5").unwrap();
        let url = cluster.url("upgrade_from_5");
        let (mut client, connection) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
            .await
            .unwrap();
        tokio::spawn(connection);
        migrate_to(&mut client, 5).await.unwrap();

        let mac: Mac = "52:54:00:00:06:01".parse().unwrap();
        let mut node = Node::discovered(mac, "discovery", "tok".into(), Timestamp(5));
        node.hostname = "Rack1-Node1".into();
        let event = Event::new(
            Timestamp(6),
            EventData::Note {
                of: EventKind::DhcpAck,
                text: "before the upgrade".into(),
            },
        );
        let ip = Ipv4Addr::new(10, 6, 0, 1);
        client
            .execute(
                "INSERT INTO nodes (mac, hostname_lc, ipv4, record) VALUES ($1, $2, NULL, $3::text::jsonb)",
                &[&mac_text(mac), &"rack1-node1", &node_text(&node).unwrap()],
            )
            .await
            .unwrap();
        client
            .execute(
                "INSERT INTO events (mac, at, kind, data) VALUES ($1, 6, $2, $3::text::jsonb)",
                &[
                    &mac_text(mac),
                    &event.kind().as_str(),
                    &serde_json::to_string(&event.data).unwrap(),
                ],
            )
            .await
            .unwrap();
        client
            .execute(
                "INSERT INTO leases (ip, mac, state, expires) VALUES ($1, $2, 'bound', 9)",
                &[&ip_col(ip), &mac_text(mac)],
            )
            .await
            .unwrap();

        let store = PostgresStore::open(PostgresConfig {
            url,
            password: None,
            appliance: "a".into(),
            ca_file: None,
        })
        .await
        .unwrap();
        assert_eq!(store.node(mac).await.unwrap(), Some(node));
        assert_eq!(store.events(mac).await.unwrap(), vec![event]);
        assert_eq!(
            store.leases().await.unwrap(),
            vec![Lease {
                ip,
                mac: Some(mac),
                state: LeaseState::Bound,
                expires: Timestamp(9),
            }]
        );
        let row = client
            .query_one(
                "SELECT (SELECT max(version) FROM rackboot_schema), \
                 (SELECT data_type FROM information_schema.columns \
                  WHERE table_name = 'events' AND column_name = 'data')::text, \
                 (SELECT collation_name FROM information_schema.columns \
                  WHERE table_name = 'leases' AND column_name = 'mac')::text, \
                 (SELECT data_type FROM information_schema.columns \
                  WHERE table_name = 'nodes' AND column_name = 'record')::text, \
                 (SELECT reloptions FROM pg_class WHERE relname = 'leases')",
                &[],
            )
            .await
            .unwrap();
        let (version, data, collation, record, options): (
            i32,
            String,
            Option<String>,
            String,
            Option<Vec<String>>,
        ) = (row.get(0), row.get(1), row.get(2), row.get(3), row.get(4));
        assert_eq!(
            (
                version,
                data.as_str(),
                collation.as_deref(),
                record.as_str()
            ),
            (VERSION, "text", Some("C"), "text")
        );
        assert_eq!(options, Some(vec!["fillfactor=50".to_string()]));

        // A record edited after the upgrade merges its fields (through
        // `jsonb`, as schema 9 keeps records as `text`), and is bumped.
        store
            .set_node_state(mac, NodeState::Failed, Some("after the upgrade"))
            .await
            .unwrap();
        assert_eq!(
            store.bump_config_generation(&[mac]).await.unwrap(),
            vec![(mac, 1)]
        );
        let edited = store.node(mac).await.unwrap().unwrap();
        assert_eq!(
            (
                edited.state,
                edited.state_reason.as_deref(),
                edited.config_generation
            ),
            (NodeState::Failed, Some("after the upgrade"), 1)
        );
        assert_eq!(edited.hostname, "Rack1-Node1");
    }
}
