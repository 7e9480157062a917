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
];

/// The schema version this binary writes.
pub(super) const VERSION: i32 = MIGRATIONS.len() as i32;

/// Brings the database to [`VERSION`], under a lock every appliance takes,
/// so two starting at once migrate once.
pub(super) async fn migrate(client: &mut Client) -> Result<(), StoreError> {
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
    for (i, step) in MIGRATIONS.iter().enumerate().skip(found as usize) {
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
