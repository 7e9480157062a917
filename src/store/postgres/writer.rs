//! The one task that writes to PostgreSQL. It takes every write waiting
//! (up to [`MAX_BATCH`]), runs them in one transaction, each under a
//! savepoint so a refused write undoes only itself, announces what changed
//! (`NOTIFY`, delivered on commit), commits once, waits until the listener
//! has applied its own announcements, and only then answers each write.
//! Timeline events it holds back briefly and writes packed ([`timeline`]).

use std::net::Ipv4Addr;
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;

use serde_json::{Value, json};
use tokio::sync::{mpsc, oneshot};
use tokio_postgres::{Client, GenericClient};
use tokio_util::sync::CancellationToken;

use super::announce::{BUMPED_PER_NOTE, Notes};
use super::quick::{self, Prepared, Quick};
use super::rows::{all_nodes, db, describe, fault, ip_col, mac_text, node_from_row, node_text};
use super::timeline::{self, Held, Rows};
use super::tls::Connector;
use super::{CHANNEL, ECHO_WITHIN, Echo, Shared};
use crate::model::{Event, Lease, Mac, Node, Rollout, ScriptReport, Timestamp};
use crate::store::{
    Edited, Fault, NodeEdit, NodeMap, NodeQuery, NodesEdit, REPORTS_PER_NODE, StoreError, Written,
};

/// How often the writer tries to reconnect while writes keep coming.
const RECONNECT_EVERY: Duration = Duration::from_secs(1);

/// The most writes one transaction carries. A storm's exchange makes about
/// five (a new record, two address claims, timeline events), so 256 cut
/// batches at about fifty exchanges just when a transaction's own cost
/// (its commit's flush, its statements) was worth sharing most.
const MAX_BATCH: usize = 1024;

/// How many addresses an allocation tries in the database before it gives
/// up (each one found taken by another appliance first).
pub(super) const TRIES: usize = 64;

pub(super) type Reply<T> = oneshot::Sender<Result<T, StoreError>>;

/// One write (or a read that must see the writes queued before it).
pub(super) enum Op {
    Sync(Reply<()>),
    Update(Mac, NodeEdit, Reply<Edited>),
    EditNodes(NodesEdit, Reply<Vec<Written>>),
    DeleteIf(Vec<Mac>, NodeQuery, Reply<Vec<Mac>>),
    /// Fields of a record's JSON, replaced as given.
    SetFields(Mac, serde_json::Map<String, Value>, Reply<()>),
    Bump(Vec<Mac>, Reply<Vec<(Mac, u64)>>),
    Report(Mac, Box<ScriptReport>, Reply<()>),
    Reports(Mac, Reply<(Vec<ScriptReport>, u64)>),
    /// A new record or a lease allocation: sent with the others of its
    /// kind around it, without a savepoint ([`quick`]).
    Quick(Quick),
    /// A timeline event: held back, then written packed with the MAC's
    /// next ones ([`timeline`]).
    Event(Mac, Box<Event>),
    Events(Mac, Reply<Vec<Event>>),
    Release(Mac, Ipv4Addr, Reply<bool>),
    Decline(Lease, Reply<()>),
    CreateRollout(Box<Rollout>, Reply<()>),
    Rollouts(Reply<Vec<Rollout>>),
    EditRollout(String, crate::store::RolloutEdit, Reply<Option<Rollout>>),
}

/// Why a whole batch failed (the commit, or the connection), given to each
/// of its writes as a fresh error.
#[derive(Clone)]
pub(super) struct BatchFailure {
    fault: Fault,
    cause: String,
}

impl BatchFailure {
    fn of(e: &tokio_postgres::Error) -> BatchFailure {
        BatchFailure {
            fault: fault(e),
            cause: describe(e),
        }
    }

    fn error(&self) -> StoreError {
        StoreError::Engine {
            op: "commit",
            fault: self.fault,
            cause: self.cause.clone(),
        }
    }
}

/// A write's answer, held until its batch is committed (or failed).
pub(super) type Pending = Box<dyn FnOnce(Option<&BatchFailure>) + Send>;

pub(super) fn pending<T: Send + 'static>(
    reply: Reply<T>,
    result: Result<T, StoreError>,
) -> Pending {
    Box::new(move |failed| {
        let _ = reply.send(match failed {
            None => result,
            Some(f) => Err(f.error()),
        });
    })
}

/// Connects, with the connection's own task ended by `stop`.
pub(super) async fn connect(
    config: &Connector,
    stop: &CancellationToken,
) -> Result<Client, StoreError> {
    let (client, connection) = config.connect().await?;
    let stop = stop.clone();
    tokio::spawn(async move {
        tokio::select! {
            _ = stop.cancelled() => {}
            r = connection => if let Err(e) = r {
                tracing::warn!(error = %describe(&e), "store: PostgreSQL connection lost");
            }
        }
    });
    Ok(client)
}

pub(super) async fn run(
    mut client: Client,
    config: Connector,
    mut queue: mpsc::Receiver<Op>,
    shared: Arc<Shared>,
    stop: CancellationToken,
) {
    let mut batch = 0u64;
    let mut last_attempt: Option<std::time::Instant> = None;
    // The statements prepared on this connection (none after a reconnect).
    let mut prepared: Option<Prepared> = None;
    let mut held = Held::default();
    loop {
        let due = held.due();
        let first = tokio::select! {
            _ = stop.cancelled() => return,
            op = queue.recv() => match op {
                Some(op) => Some(op),
                None => return,
            },
            // Nothing else to write: the holds that ended go alone.
            _ = tokio::time::sleep_until(due.unwrap_or_else(tokio::time::Instant::now)), if due.is_some() => None,
            // Idle without a connection: try again, so the appliance says it
            // is whole again without waiting for a write.
            _ = tokio::time::sleep(RECONNECT_EVERY), if client.is_closed() => {
                if let Ok(c) = connect(&config, &stop).await {
                    tracing::info!("store: PostgreSQL connection for writes is back");
                    shared.writer_up.store(true, Relaxed);
                    client = c;
                    prepared = None;
                } else {
                    shared.writer_up.store(false, Relaxed);
                }
                continue;
            }
        };
        let mut ops: Vec<Op> = first.into_iter().collect();
        while ops.len() < MAX_BATCH {
            match queue.try_recv() {
                Ok(op) => ops.push(op),
                Err(_) => break,
            }
        }
        // Out of `held` now, so written first in the batch: its timeline
        // reads (which add what is held) then find them in the database.
        let ended = held.take(tokio::time::Instant::now(), false);
        if ops.is_empty() && ended.is_empty() {
            continue;
        }
        let rows = Rows::of(ended, &shared);
        if client.is_closed() {
            shared.writer_up.store(false, Relaxed);
            // While the database is away, one connection attempt a second at
            // most: the writes between are refused at once, not queued behind
            // a connect timeout.
            let attempt = match last_attempt {
                Some(at) if at.elapsed() < RECONNECT_EVERY => Err(StoreError::Engine {
                    op: "connect",
                    fault: Fault::Transient,
                    cause: "no connection (retried every second)".into(),
                }),
                _ => {
                    last_attempt = Some(std::time::Instant::now());
                    connect(&config, &stop).await
                }
            };
            match attempt {
                Ok(c) => {
                    tracing::info!("store: PostgreSQL connection for writes is back");
                    shared.writer_up.store(true, Relaxed);
                    client = c;
                    prepared = None;
                }
                Err(e) => {
                    // Refused at once: a DHCP client retries, an admin sees why.
                    let failed = BatchFailure {
                        fault: Fault::Transient,
                        cause: format!("the database is unreachable: {e}"),
                    };
                    rows.lost(&failed.cause);
                    for op in ops {
                        fail(op, &failed, &mut held);
                    }
                    continue;
                }
            }
        }
        let statements = match prepared.take() {
            Some(p) => p,
            None => match Prepared::new(&client).await {
                Ok(p) => p,
                Err(e) => {
                    let failed = BatchFailure::of(&e);
                    rows.lost(&failed.cause);
                    for op in ops {
                        fail(op, &failed, &mut held);
                    }
                    continue;
                }
            },
        };
        batch += 1;
        // A panic in one batch (a bug) costs its writes, answered as the
        // writer gone (their senders dropped), not the store.
        let ran = futures_lite::FutureExt::catch_unwind(std::panic::AssertUnwindSafe(run_batch(
            &mut client,
            &statements,
            Batch {
                ops,
                rows,
                number: batch,
            },
            &mut held,
            &shared,
        )))
        .await;
        prepared = Some(statements);
        if ran.is_err() {
            tracing::error!(
                batch,
                "store: a PostgreSQL write batch panicked; its writes failed"
            );
            // Its transaction may still be open: undone, or the next batch
            // would join it.
            if let Err(e) = client.batch_execute("ROLLBACK").await {
                tracing::warn!(error = %describe(&e), "store: PostgreSQL rollback failed");
            }
            shared
                .echoes
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .remove(&batch);
        }
    }
}

/// Answers `op` with the batch's failure. (An event is held all the same:
/// it goes with a later batch.)
fn fail(op: Op, failed: &BatchFailure, held: &mut Held) {
    fn send<T>(r: Reply<T>, failed: &BatchFailure) {
        let _ = r.send(Err(failed.error()));
    }
    match op {
        Op::Sync(r) => send(r, failed),
        Op::Update(_, _, r) => send(r, failed),
        Op::EditNodes(_, r) => send(r, failed),
        Op::DeleteIf(_, _, r) => send(r, failed),
        Op::SetFields(_, _, r) => send(r, failed),
        Op::Bump(_, r) => send(r, failed),
        Op::Report(_, _, r) => send(r, failed),
        Op::Reports(_, r) => send(r, failed),
        Op::Event(mac, event) => held.hold(mac, *event),
        Op::Quick(Quick::Allocate(_, r)) => send(r, failed),
        Op::Quick(Quick::Create(_, r)) => send(r, failed),
        Op::Events(_, r) => send(r, failed),
        Op::Release(_, _, r) => send(r, failed),
        Op::Decline(_, r) => send(r, failed),
        Op::CreateRollout(_, r) => send(r, failed),
        Op::Rollouts(r) => send(r, failed),
        Op::EditRollout(_, _, r) => send(r, failed),
    }
}

/// One transaction's writes: `ops` as they came, after `rows` (the
/// timeline holds that ended).
struct Batch {
    ops: Vec<Op>,
    rows: Rows,
    number: u64,
}

async fn run_batch(
    client: &mut Client,
    prepared: &Prepared,
    Batch {
        ops,
        rows,
        number: batch,
    }: Batch,
    held: &mut Held,
    shared: &Shared,
) {
    let tx: &Client = client;
    // BEGIN goes out with the batch's first statements, not a round trip
    // ahead of them (and COMMIT with the announcements, below): each round
    // trip costs both processes a wake-up, on a core they share with DHCP.
    // BEGIN fails only with the connection, and so then does all the rest.
    let (begun, (), (answers, notes)) = futures_util::join!(
        tx.batch_execute("BEGIN"),
        rows.write(tx, &prepared.timeline),
        async {
            let mut answers: Vec<Pending> = Vec::with_capacity(ops.len());
            let mut notes = Notes::default();
            // Runs of quick writes go out together (events held in between
            // do not end a run); every other write alone, under its
            // savepoint, in the order they came.
            let mut run: Vec<Quick> = Vec::new();
            for op in ops {
                match op {
                    Op::Quick(q) => run.push(q),
                    Op::Event(mac, event) => held.hold(mac, *event),
                    op => {
                        if !run.is_empty() {
                            let sent = std::mem::take(&mut run);
                            answers
                                .extend(quick::send(tx, prepared, sent, &mut notes, shared).await);
                        }
                        // A sync promises every event before it saved; a
                        // delete takes the timelines with it, so whatever
                        // is held goes first, as if never held.
                        if matches!(op, Op::Sync(_) | Op::DeleteIf(..)) {
                            let all = held.take(tokio::time::Instant::now(), true);
                            Rows::of(all, shared).write(tx, &prepared.timeline).await;
                        }
                        if let Some(answer) =
                            savepointed(tx, prepared, op, &mut notes, held, shared).await
                        {
                            answers.push(answer);
                        }
                    }
                }
            }
            if !run.is_empty() {
                answers.extend(quick::send(tx, prepared, run, &mut notes, shared).await);
            }
            (answers, notes)
        }
    );
    if let Err(e) = begun {
        let failed = BatchFailure::of(&e);
        tracing::error!(batch, cause = %failed.cause, "store: PostgreSQL BEGIN failed");
        for answer in answers {
            answer(Some(&failed));
        }
        return;
    }
    // Answered once the batch's last payload comes back: this appliance
    // then has applied everything committed before it, and this batch.
    let (payloads, echo) = if notes.is_empty() {
        (Vec::new(), None)
    } else {
        let (payloads, held) = notes.pack(shared.process, batch);
        let (done, echoed) = oneshot::channel();
        shared
            .echoes
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .insert(batch, Echo { done, held });
        (payloads, Some(echoed))
    };
    // Sent together: if the announcements fail, the transaction is
    // aborted and PostgreSQL answers the COMMIT behind them by rolling it
    // back.
    let (announced, committed) = futures_util::join!(
        async {
            if payloads.is_empty() {
                Ok(0)
            } else {
                tx.execute(&prepared.notify, &[&CHANNEL, &payloads]).await
            }
        },
        tx.batch_execute("COMMIT")
    );
    let committed = announced.and(committed);
    match committed {
        Ok(()) => {
            if let Some(echoed) = echo
                && tokio::time::timeout(ECHO_WITHIN, echoed).await.is_err()
            {
                // Not held any longer: when it does come back, the listener
                // reads it as a sibling's.
                shared
                    .echoes
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner)
                    .remove(&batch);
                tracing::warn!(
                    batch,
                    "store: PostgreSQL did not echo this appliance's changes within {ECHO_WITHIN:?}; \
                     answering anyway (they are committed), memory catches up when the listener reconnects"
                );
            }
            for answer in answers {
                answer(None);
            }
        }
        Err(e) => {
            shared
                .echoes
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .remove(&batch);
            shared
                .health
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .failed_commits += 1;
            let failed = BatchFailure::of(&e);
            tracing::error!(batch, cause = %failed.cause, "store: PostgreSQL commit failed");
            rows.lost(&failed.cause);
            for answer in answers {
                answer(Some(&failed));
            }
        }
    }
}

/// Runs `op` under a savepoint: its announcements join `notes` only when
/// it succeeds; when it fails, what it did is undone and the rest of the
/// batch goes on.
async fn savepointed(
    tx: &Client,
    prepared: &Prepared,
    op: Op,
    notes: &mut Notes,
    held: &mut Held,
    shared: &Shared,
) -> Option<Pending> {
    if let Err(e) = tx.batch_execute("SAVEPOINT op").await {
        fail(op, &BatchFailure::of(&e), held);
        return None;
    }
    let mut mine = Notes::default();
    let (answer, ok) = apply(tx, prepared, op, &mut mine, held, shared).await;
    let end = if ok {
        "RELEASE SAVEPOINT op"
    } else {
        // A refused import may have deferred the unique checks.
        "ROLLBACK TO SAVEPOINT op; SET CONSTRAINTS nodes_hostname, nodes_ipv4 IMMEDIATE"
    };
    if let Err(e) = tx.batch_execute(end).await {
        tracing::error!(cause = %describe(&e), "store: PostgreSQL savepoint failed");
    }
    if ok {
        notes.append(mine);
    }
    answer
}

/// Does `op`; its answer (none for an event) and whether it succeeded.
async fn apply(
    tx: &Client,
    prepared: &Prepared,
    op: Op,
    notes: &mut Notes,
    held: &mut Held,
    shared: &Shared,
) -> (Option<Pending>, bool) {
    fn done<T: Send + 'static>(
        r: Reply<T>,
        result: Result<T, StoreError>,
    ) -> (Option<Pending>, bool) {
        let ok = result.is_ok();
        (Some(pending(r, result)), ok)
    }
    match op {
        Op::Sync(r) => done(r, Ok(())),
        Op::Update(mac, edit, r) => done(r, update(tx, mac, edit, notes).await),
        Op::EditNodes(edit, r) => done(r, edit_nodes(tx, edit, notes).await),
        Op::DeleteIf(macs, doomed, r) => done(r, delete_if(tx, &macs, &doomed, notes).await),
        Op::SetFields(mac, fields, r) => done(r, set_fields(tx, mac, fields, notes).await),
        Op::Bump(macs, r) => done(r, bump(tx, &macs, notes).await),
        Op::Report(mac, report, r) => done(r, add_report(tx, mac, &report).await),
        Op::Reports(mac, r) => done(r, reports(tx, mac).await),
        Op::Events(mac, r) => done(r, timeline::read(tx, mac, held).await),
        Op::Event(mac, event) => {
            held.hold(mac, *event);
            (None, true)
        }
        Op::Quick(q) => {
            let mut answers = quick::send(tx, prepared, vec![q], notes, shared).await;
            (answers.pop(), true)
        }
        Op::Release(mac, ip, r) => done(r, release(tx, mac, ip, notes).await),
        Op::Decline(lease, r) => done(r, decline(tx, lease, notes).await),
        Op::CreateRollout(rollout, r) => done(r, create_rollout(tx, &rollout).await),
        Op::Rollouts(r) => done(r, rollouts(tx).await),
        Op::EditRollout(id, edit, r) => done(r, edit_rollout(tx, &id, edit).await),
    }
}

fn rollout_json(r: &Rollout) -> Result<Value, StoreError> {
    serde_json::to_value(r).map_err(|e| super::rows::corrupt(&r.id, e))
}

async fn create_rollout(tx: &Client, r: &Rollout) -> Result<(), StoreError> {
    let made = tx
        .execute(
            "INSERT INTO rollouts (id, created, doc) VALUES ($1, $2, $3) ON CONFLICT (id) DO NOTHING",
            &[&r.id, &r.created.millis(), &rollout_json(r)?],
        )
        .await
        .map_err(db("save a rollout"))?;
    if made == 0 {
        return Err(StoreError::Conflict(format!("a rollout {} exists", r.id)));
    }
    Ok(())
}

async fn rollouts(tx: &Client) -> Result<Vec<Rollout>, StoreError> {
    let mut out = Vec::new();
    for row in tx
        .query("SELECT id, doc FROM rollouts ORDER BY created, id", &[])
        .await
        .map_err(db("list rollouts"))?
    {
        let id: String = row.get(0);
        out.push(serde_json::from_value(row.get(1)).map_err(|e| super::rows::corrupt(id, e))?);
    }
    Ok(out)
}

/// Read under a row lock, so an edit made on another appliance at the same
/// time waits for this one and then sees it.
async fn edit_rollout(
    tx: &Client,
    id: &str,
    edit: crate::store::RolloutEdit,
) -> Result<Option<Rollout>, StoreError> {
    let Some(row) = tx
        .query_opt("SELECT doc FROM rollouts WHERE id = $1 FOR UPDATE", &[&id])
        .await
        .map_err(db("read a rollout"))?
    else {
        return Ok(None);
    };
    let mut r: Rollout =
        serde_json::from_value(row.get(0)).map_err(|e| super::rows::corrupt(id, e))?;
    edit(&mut r).map_err(StoreError::Refused)?;
    r.id = id.to_string();
    tx.execute(
        "UPDATE rollouts SET doc = $2 WHERE id = $1",
        &[&id, &rollout_json(&r)?],
    )
    .await
    .map_err(db("save a rollout"))?;
    Ok(Some(r))
}

const UPSERT_NODE: &str = "INSERT INTO nodes (mac, hostname_lc, ipv4, record) VALUES ($1, $2, $3, $4) \
     ON CONFLICT (mac) DO UPDATE SET hostname_lc = EXCLUDED.hostname_lc, ipv4 = EXCLUDED.ipv4, \
     record = EXCLUDED.record";

async fn write_node(tx: &Client, sql: &str, n: &Node) -> Result<u64, StoreError> {
    tx.execute(
        sql,
        &[
            &mac_text(n.mac),
            &n.hostname.to_ascii_lowercase(),
            &n.ipv4.map(ip_col),
            &node_text(n)?,
        ],
    )
    .await
    .map_err(db("write a node"))
}

async fn read_node(tx: &Client, mac: Mac, lock: bool) -> Result<Option<Node>, StoreError> {
    let sql = if lock {
        "SELECT record FROM nodes WHERE mac = $1 FOR UPDATE"
    } else {
        "SELECT record FROM nodes WHERE mac = $1"
    };
    tx.query_opt(sql, &[&mac_text(mac)])
        .await
        .map_err(db("read a node"))?
        .map(|row| node_from_row(&row))
        .transpose()
}

async fn update(
    tx: &Client,
    mac: Mac,
    edit: NodeEdit,
    notes: &mut Notes,
) -> Result<Edited, StoreError> {
    let before = read_node(tx, mac, true)
        .await?
        .ok_or(StoreError::NoSuchNode(mac))?;
    let mut after = before.clone();
    edit(&mut after).map_err(StoreError::Refused)?;
    // The MAC is the key: an edit cannot move a record to another one.
    after.mac = mac;
    write_node(tx, UPSERT_NODE, &after).await?;
    notes.node_record(&after);
    Ok(Edited { before, after })
}

async fn edit_nodes(
    tx: &Client,
    edit: NodesEdit,
    notes: &mut Notes,
) -> Result<Vec<Written>, StoreError> {
    // No other appliance changes a record between the read and the write.
    tx.batch_execute("LOCK TABLE nodes IN SHARE ROW EXCLUSIVE MODE")
        .await
        .map_err(db("lock the nodes"))?;
    let mut all: NodeMap = all_nodes(tx, "read the nodes")
        .await?
        .into_values()
        .collect();
    let nodes = edit(&all).map_err(StoreError::Refused)?;
    let mut seen = std::collections::HashSet::new();
    if let Some(dup) = nodes.iter().find(|n| !seen.insert(n.mac)) {
        return Err(StoreError::Conflict(format!(
            "MAC {} appears more than once",
            dup.mac
        )));
    }
    // Checked once all are written: records replaced in the same write
    // give up their names and addresses to it.
    tx.batch_execute("SET CONSTRAINTS nodes_hostname, nodes_ipv4 DEFERRED")
        .await
        .map_err(db("defer the unique checks"))?;
    for n in &nodes {
        write_node(tx, UPSERT_NODE, n).await?;
    }
    tx.batch_execute("SET CONSTRAINTS nodes_hostname, nodes_ipv4 IMMEDIATE")
        .await
        .map_err(db("check hostnames and addresses"))?;
    let mut written = Vec::with_capacity(nodes.len());
    for after in nodes {
        notes.node_record(&after);
        written.push(Written {
            before: all.remove(&after.mac),
            after,
        });
    }
    Ok(written)
}

async fn delete_if(
    tx: &Client,
    macs: &[Mac],
    doomed: &NodeQuery,
    notes: &mut Notes,
) -> Result<Vec<Mac>, StoreError> {
    let keys: Vec<String> = macs.iter().map(|m| mac_text(*m)).collect();
    let mut found = std::collections::HashMap::new();
    for row in tx
        .query(
            "SELECT record FROM nodes WHERE mac = ANY($1) FOR UPDATE",
            &[&keys],
        )
        .await
        .map_err(db("read the nodes to delete"))?
    {
        let n = node_from_row(&row)?;
        found.insert(n.mac, n);
    }
    // In the order asked, each only if the query still selects it.
    let mut gone = Vec::new();
    for mac in macs {
        if found.remove(mac).is_some_and(|n| doomed.matches(&n)) {
            gone.push(*mac);
        }
    }
    if gone.is_empty() {
        return Ok(gone);
    }
    let keys: Vec<String> = gone.iter().map(|m| mac_text(*m)).collect();
    for (table, op) in [
        ("nodes", "delete nodes"),
        ("events", "delete timelines"),
        ("reports", "delete reports"),
        ("report_drops", "delete reports"),
    ] {
        tx.execute(
            &format!("DELETE FROM {table} WHERE mac = ANY($1)"),
            &[&keys],
        )
        .await
        .map_err(db(op))?;
    }
    for mac in &gone {
        notes.push(json!({ "gone": mac_text(*mac) }).to_string());
    }
    Ok(gone)
}

async fn set_fields(
    tx: &Client,
    mac: Mac,
    fields: serde_json::Map<String, Value>,
    notes: &mut Notes,
) -> Result<(), StoreError> {
    let row = tx
        .query_opt(
            // Merged as `jsonb` (a record is kept as `text`: see schema 9).
            "UPDATE nodes SET record = (record::jsonb || $2::jsonb)::text WHERE mac = $1 \
             RETURNING record",
            &[&mac_text(mac), &Value::Object(fields)],
        )
        .await
        .map_err(db("set node fields"))?
        .ok_or(StoreError::NoSuchNode(mac))?;
    notes.node_record(&node_from_row(&row)?);
    Ok(())
}

async fn bump(tx: &Client, macs: &[Mac], notes: &mut Notes) -> Result<Vec<(Mac, u64)>, StoreError> {
    let keys: Vec<String> = macs.iter().map(|m| mac_text(*m)).collect();
    let mut bumped = std::collections::HashMap::new();
    for row in tx
        .query(
            "UPDATE nodes SET record = jsonb_set(record::jsonb, '{config_generation}', \
             to_jsonb(COALESCE((record::jsonb->>'config_generation')::bigint, 0) + 1))::text \
             WHERE mac = ANY($1) RETURNING record",
            &[&keys],
        )
        .await
        .map_err(db("bump config generations"))?
    {
        let n = node_from_row(&row)?;
        bumped.insert(n.mac, n.config_generation);
    }
    if let Some(missing) = macs.iter().find(|m| !bumped.contains_key(m)) {
        return Err(StoreError::NoSuchNode(*missing));
    }
    let generations: Vec<(Mac, u64)> = macs.iter().map(|m| (*m, bumped[m])).collect();
    // One announcement, not a record each: the feed says "reconfigure",
    // as the SQLite engine's does, and each mirror moves the generations on.
    // (In notes of at most BUMPED_PER_NOTE: a fleet's reconfigure would
    // outgrow one.)
    for some in generations.chunks(BUMPED_PER_NOTE) {
        notes.push(json!({ "bumped": some }).to_string());
    }
    Ok(generations)
}

async fn add_report(tx: &Client, mac: Mac, r: &ScriptReport) -> Result<(), StoreError> {
    let key = mac_text(mac);
    let known = tx
        .query_opt("SELECT 1 FROM nodes WHERE mac = $1", &[&key])
        .await
        .map_err(db("find the node of a report"))?;
    if known.is_none() {
        return Err(StoreError::NoSuchNode(mac));
    }
    insert_report(tx, mac, r).await?;
    let dropped = tx
        .execute(
            "DELETE FROM reports WHERE mac = $1 AND id <= \
             (SELECT id FROM reports WHERE mac = $1 ORDER BY id DESC OFFSET $2 LIMIT 1)",
            &[&key, &REPORTS_PER_NODE],
        )
        .await
        .map_err(db("trim reports"))?;
    if dropped > 0 {
        tx.execute(
            "INSERT INTO report_drops (mac, dropped) VALUES ($1, $2) \
             ON CONFLICT (mac) DO UPDATE SET dropped = report_drops.dropped + EXCLUDED.dropped",
            &[&key, &(dropped as i64)],
        )
        .await
        .map_err(db("count dropped reports"))?;
    }
    Ok(())
}

/// One report row (no trim).
pub(super) async fn insert_report(
    tx: &impl GenericClient,
    mac: Mac,
    r: &ScriptReport,
) -> Result<(), StoreError> {
    tx.execute(
        "INSERT INTO reports (mac, at, generation, script, status, duration_ms, output) \
         VALUES ($1, $2, $3, $4, $5, $6, $7)",
        &[
            &mac_text(mac),
            &r.at.millis(),
            &(r.generation as i64),
            &r.script,
            &r.status,
            &r.duration_ms.map(|d| d as i64),
            &r.output,
        ],
    )
    .await
    .map_err(db("add a report"))?;
    Ok(())
}

async fn reports(tx: &Client, mac: Mac) -> Result<(Vec<ScriptReport>, u64), StoreError> {
    let key = mac_text(mac);
    let mut out = Vec::new();
    for row in tx
        .query(
            "SELECT at, generation, script, status, duration_ms, output FROM reports \
             WHERE mac = $1 ORDER BY id",
            &[&key],
        )
        .await
        .map_err(db("list reports"))?
    {
        let generation: i64 = row.get(1);
        let duration: Option<i64> = row.get(4);
        out.push(ScriptReport {
            at: Timestamp(row.get(0)),
            generation: generation as u64,
            script: row.get(2),
            status: row.get(3),
            duration_ms: duration.map(|d| d as u64),
            output: row.get(5),
        });
    }
    let dropped: i64 = tx
        .query_opt("SELECT dropped FROM report_drops WHERE mac = $1", &[&key])
        .await
        .map_err(db("count dropped reports"))?
        .map_or(0, |row| row.get(0));
    Ok((out, dropped as u64))
}

/// Appends a timeline row: `mac, at, kind, data, appliance`.
pub(super) const INSERT_EVENT: &str =
    "INSERT INTO events (mac, at, kind, data, appliance) VALUES ($1, $2, $3, $4, $5)";

/// One timeline row (no trim).
pub(super) async fn insert_event(
    tx: &impl GenericClient,
    mac: Mac,
    e: &Event,
) -> Result<(), StoreError> {
    let data = serde_json::to_string(&e.data).map_err(|err| super::rows::corrupt(mac, err))?;
    tx.execute(
        INSERT_EVENT,
        &[
            &mac_text(mac),
            &e.at.millis(),
            &e.kind().as_str(),
            &data,
            &e.appliance,
        ],
    )
    .await
    .map_err(db("add an event"))?;
    Ok(())
}

async fn release(
    tx: &Client,
    mac: Mac,
    ip: Ipv4Addr,
    notes: &mut Notes,
) -> Result<bool, StoreError> {
    let n = tx
        .execute(
            "DELETE FROM leases WHERE ip = $1 AND mac = $2",
            &[&ip_col(ip), &mac_text(mac)],
        )
        .await
        .map_err(db("release a lease"))?;
    if n > 0 {
        notes.push(json!({ "lease_gone": ip }).to_string());
    }
    Ok(n > 0)
}

async fn decline(tx: &Client, lease: Lease, notes: &mut Notes) -> Result<(), StoreError> {
    tx.execute(
        "INSERT INTO leases (ip, mac, state, expires) VALUES ($1, NULL, $2, $3) \
         ON CONFLICT (ip) DO UPDATE SET mac = NULL, state = EXCLUDED.state, expires = EXCLUDED.expires",
        &[&ip_col(lease.ip), &lease.state.as_str(), &lease.expires.millis()],
    )
    .await
    .map_err(db("decline an address"))?;
    notes.lease(lease);
    Ok(())
}

/// How long a reconnect waits after `attempt` failures.
pub(super) fn backoff(attempt: u32) -> Duration {
    Duration::from_millis(200u64.saturating_mul(1 << attempt.min(5))).min(Duration::from_secs(5))
}
