//! The writes a DHCP exchange makes (new node records and lease
//! allocations), sent to PostgreSQL together and answered in order. (Its
//! timeline events go their own way, held back and packed: [`super::timeline`].)
//!
//! A run goes out as a few set-based statements, one round trip, whatever
//! its length: all its new records in one insert, the first choices of all
//! its allocations in one conditional upsert.
//! PostgreSQL's cost is per statement far more than per row, so this is what
//! keeps an appliance on a shared database fast under a storm. Those two
//! inserts run under one savepoint: a record whose hostname or address
//! another node holds, or a MAC bound elsewhere meanwhile by a sibling,
//! raises inside them, and then the run is undone and sent again one write
//! at a time (`rackboot_create_node` and `rackboot_allocate`, schema
//! migrations 4 and 3), each of which answers such a clash instead of
//! raising. What the set-based statements leave undone (a MAC that already
//! had a record, a first choice a sibling took) goes the same one-at-a-time
//! way after them.
//!
//! Addresses are planned here before anything is sent: each allocation of
//! the run skips the addresses the ones before it in the same run will try
//! first, so a run of new clients does not queue up on one address.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;

use serde_json::{Value, json};
use tokio_postgres::types::ToSql;
use tokio_postgres::{Client, Row, Statement};

use super::Shared;
use super::announce::Notes;
use super::rows::{db, describe, ip_col, ip_of, key_taken, mac_text, node_from_json, node_text};
use super::writer::{Pending, Reply, TRIES, pending};
use crate::boot::address::{self, Candidate, Range};
use crate::model::{Lease, Mac, Node};
use crate::store::mirror::Mirror;
use crate::store::{LeaseRequest, StoreError};

/// The statements of the quick writes (and the announcement), prepared once
/// per connection: each then costs one message, not a parse and a bind.
pub(super) struct Prepared {
    /// Every new record of a run, in one statement.
    creates: Statement,
    /// The first choice of every allocation of a run, in one statement.
    firsts: Statement,
    create: Statement,
    allocate: Statement,
    pub(super) notify: Statement,
    pub(super) timeline: super::timeline::Prepared,
}

impl Prepared {
    pub(super) async fn new(client: &Client) -> Result<Prepared, tokio_postgres::Error> {
        Ok(Prepared {
            creates: client
                .prepare(
                    "INSERT INTO nodes (mac, hostname_lc, ipv4, record) \
                     SELECT m, h, i, r \
                     FROM unnest($1::text[], $2::text[], $3::int8[], $4::text[]) AS t(m, h, i, r) \
                     ON CONFLICT (mac) DO NOTHING RETURNING mac",
                )
                .await?,
            // As `rackboot_allocate` takes one candidate: only a free,
            // expired or already-this-MAC's row lets the upsert through.
            firsts: client
                .prepare(
                    "INSERT INTO leases AS l (ip, mac, state, expires) \
                     SELECT * FROM unnest($1::int8[], $2::text[], $3::text[], $4::int8[]) \
                     ON CONFLICT ON CONSTRAINT leases_pkey DO UPDATE \
                     SET mac = EXCLUDED.mac, state = EXCLUDED.state, expires = EXCLUDED.expires \
                     WHERE l.mac = EXCLUDED.mac OR l.expires <= $5 \
                     RETURNING l.ip",
                )
                .await?,
            create: client
                .prepare(
                    // The record goes as JSON text: made once, announced as it is
                    // (and as `jsonb`, the function's type since schema 4).
                    "SELECT made, existing, taken, detail FROM rackboot_create_node($1, $2, $3, $4::text::jsonb)",
                )
                .await?,
            allocate: client
                .prepare("SELECT got_ip, dropped_ips FROM rackboot_allocate($1, $2, $3, $4, $5)")
                .await?,
            notify: client
                .prepare(
                    "SELECT pg_notify($1, p) FROM unnest($2::text[]) WITH ORDINALITY AS t(p, i) \
                     ORDER BY i",
                )
                .await?,
            timeline: super::timeline::Prepared::new(client).await?,
        })
    }
}

/// A write that can go in a run.
pub(super) enum Quick {
    /// A node record, unless its MAC has one: (the record, whether made).
    Create(Box<Node>, Reply<(Node, bool)>),
    Allocate(Box<LeaseRequest>, Reply<Option<Lease>>),
}

/// What one quick write sends, planned before the run goes out.
enum Plan {
    Create {
        node: Box<Node>,
        reply: Reply<(Node, bool)>,
        mac: String,
        hostname_lc: String,
        ipv4: Option<i64>,
        /// As JSON text: the statement's parameter and the announcement.
        record: String,
    },
    Allocate {
        req: Box<LeaseRequest>,
        reply: Reply<Option<Lease>>,
        mac: String,
        candidates: Vec<Candidate>,
        ips: Vec<i64>,
        /// Its MAC holds another address now: giving that up is
        /// `rackboot_allocate`'s, one at a time.
        alone: bool,
        /// The first choice the set-based upsert was refused (a sibling
        /// appliance holds it): not tried again.
        refused: Option<std::net::Ipv4Addr>,
    },
}

type Sent<'a> =
    Pin<Box<dyn Future<Output = Result<Option<Row>, tokio_postgres::Error>> + Send + 'a>>;

/// Sends `run` inside `tx` and turns what comes back into answers (held
/// until the commit) and announcements.
pub(super) async fn send(
    tx: &Client,
    prepared: &Prepared,
    run: Vec<Quick>,
    notes: &mut Notes,
    shared: &Shared,
) -> Vec<Pending> {
    let (plans, claimed) = plan(run, shared);
    let (went, sent) = {
        let together = Together::of(&plans);
        (together.went.clone(), together.send(tx, prepared).await)
    };
    let mut answers = Vec::with_capacity(plans.len());
    let rest = match sent {
        Ok(done) => {
            let mut rest = Vec::new();
            for (p, went) in plans.into_iter().zip(went) {
                match settle(p, went, &done, notes, shared) {
                    Ok(answer) => answers.push(answer),
                    Err(later) => rest.push(later),
                }
            }
            rest
        }
        Err(e) => {
            // A clash raised inside a set-based statement: undo the run
            // and let each write meet its own clash.
            tracing::debug!(error = %describe(&e), "store: a run goes again one write at a time");
            if let Err(e) = tx.batch_execute("ROLLBACK TO SAVEPOINT run").await {
                tracing::warn!(error = %describe(&e), "store: PostgreSQL savepoint failed");
            }
            plans
        }
    };
    let rest = whole_lists(rest, &claimed, shared);
    answers.extend(one_by_one(tx, prepared, rest, notes, shared).await);
    answers
}

/// The columns of a run's set-based statements: its new records and the
/// first choices of its allocations, each at most once, so that no row of
/// a statement meets another row of the same statement.
struct Together<'p> {
    /// Which plans of the run are in it.
    went: Vec<bool>,
    c_macs: Vec<&'p str>,
    c_hostnames: Vec<&'p str>,
    c_ipv4s: Vec<Option<i64>>,
    c_records: Vec<&'p str>,
    a_ips: Vec<i64>,
    a_macs: Vec<&'p str>,
    a_states: Vec<&'static str>,
    a_expires: Vec<i64>,
    /// The earliest clock of the allocations (they are milliseconds apart):
    /// an address that expired between their clocks counts as held, and its
    /// allocation goes on to its next candidate.
    now: i64,
}

/// What the set-based statements did: the MACs given a new record and the
/// addresses taken.
struct Done {
    made: std::collections::HashSet<String>,
    took: std::collections::HashSet<i64>,
}

impl<'p> Together<'p> {
    fn of(plans: &'p [Plan]) -> Together<'p> {
        use std::collections::HashSet;
        let mut t = Together {
            went: vec![false; plans.len()],
            c_macs: Vec::new(),
            c_hostnames: Vec::new(),
            c_ipv4s: Vec::new(),
            c_records: Vec::new(),
            a_ips: Vec::new(),
            a_macs: Vec::new(),
            a_states: Vec::new(),
            a_expires: Vec::new(),
            now: i64::MAX,
        };
        // What the rows so far hold: a row that would meet one of them
        // (and so make its statement fail, or touch a row twice) waits.
        let mut names: HashSet<&str> = HashSet::new();
        let mut addrs: HashSet<i64> = HashSet::new();
        let mut firsts: HashSet<i64> = HashSet::new();
        let mut holders: HashSet<&str> = HashSet::new();
        for (i, p) in plans.iter().enumerate() {
            match p {
                Plan::Create {
                    mac,
                    hostname_lc,
                    ipv4,
                    record,
                    ..
                } => {
                    // Hostnames and MAC texts never look alike (a MAC's has colons).
                    if names.contains(mac.as_str())
                        || names.contains(hostname_lc.as_str())
                        || ipv4.is_some_and(|ip| addrs.contains(&ip))
                    {
                        continue;
                    }
                    names.extend([mac.as_str(), hostname_lc.as_str()]);
                    addrs.extend(*ipv4);
                    t.went[i] = true;
                    t.c_macs.push(mac);
                    t.c_hostnames.push(hostname_lc);
                    t.c_ipv4s.push(*ipv4);
                    t.c_records.push(record);
                }
                Plan::Allocate {
                    req,
                    mac,
                    ips,
                    alone,
                    ..
                } => {
                    let Some(first) = ips.first() else { continue };
                    if *alone || firsts.contains(first) || holders.contains(mac.as_str()) {
                        continue;
                    }
                    firsts.insert(*first);
                    holders.insert(mac);
                    t.went[i] = true;
                    t.a_ips.push(*first);
                    t.a_macs.push(mac);
                    t.a_states.push(req.state.as_str());
                    t.a_expires.push(req.expires.millis());
                    t.now = t.now.min(req.now.millis());
                }
            }
        }
        t
    }

    /// Sends the set-based statements under a savepoint, in one round trip.
    async fn send(&self, tx: &Client, prepared: &Prepared) -> Result<Done, tokio_postgres::Error> {
        let any = !self.c_macs.is_empty() || !self.a_macs.is_empty();
        let savepoint = simple_if(tx, any, "SAVEPOINT run");
        let c_params: [&(dyn ToSql + Sync); 4] = [
            &self.c_macs,
            &self.c_hostnames,
            &self.c_ipv4s,
            &self.c_records,
        ];
        let a_params: [&(dyn ToSql + Sync); 5] = [
            &self.a_ips,
            &self.a_macs,
            &self.a_states,
            &self.a_expires,
            &self.now,
        ];
        let creates = rows_if(tx, &prepared.creates, &c_params, self.c_macs.len());
        let firsts = rows_if(tx, &prepared.firsts, &a_params, self.a_macs.len());
        let release = simple_if(tx, any, "RELEASE SAVEPOINT run");
        // Polled together: tokio-postgres sends each statement as it is
        // first polled, in this order, and the server runs them in that order.
        let (savepoint, creates, firsts, release) =
            futures_util::join!(savepoint, creates, firsts, release);
        savepoint?;
        let made = creates?.iter().map(|row| row.get(0)).collect();
        let took = firsts?.iter().map(|row| row.get(0)).collect();
        release?;
        Ok(Done { made, took })
    }
}

/// `sql` (no parameters), unless not `wanted`: then nothing is sent.
async fn simple_if(tx: &Client, wanted: bool, sql: &str) -> Result<(), tokio_postgres::Error> {
    if !wanted {
        return Ok(());
    }
    tx.batch_execute(sql).await
}

/// `statement`'s rows for `params`, columns of `rows` rows each; with none,
/// nothing is sent.
async fn rows_if(
    tx: &Client,
    statement: &Statement,
    params: &[&(dyn ToSql + Sync)],
    rows: usize,
) -> Result<Vec<Row>, tokio_postgres::Error> {
    if rows == 0 {
        return Ok(Vec::new());
    }
    tx.query(statement, params).await
}

/// A plan's answer, when the set-based statements settled it; otherwise the
/// plan, for the one-at-a-time path (an allocation without the first choice
/// it was refused).
fn settle(
    p: Plan,
    went: bool,
    done: &Done,
    notes: &mut Notes,
    shared: &Shared,
) -> Result<Pending, Plan> {
    if !went {
        return Err(p);
    }
    match p {
        Plan::Create {
            node,
            reply,
            mac,
            record,
            ..
        } if done.made.contains(&mac) => {
            notes.node(&node, &record);
            Ok(pending(reply, Ok((*node, true))))
        }
        Plan::Allocate {
            req,
            reply,
            candidates,
            ips,
            ..
        } if done.took.contains(&ips[0]) => {
            let lease = took(ips[0], Vec::new(), &req, &candidates, notes, shared);
            Ok(pending(reply, Ok(Some(lease))))
        }
        // An allocation refused its first choice (a sibling holds it), or a
        // record whose MAC had one: each goes one at a time.
        mut rest => {
            if let Plan::Allocate {
                candidates,
                refused,
                ..
            } = &mut rest
            {
                *refused = candidates.first().map(|c| c.ip);
            }
            Err(rest)
        }
    }
}

/// Sends `plans` one statement each, in one round trip.
async fn one_by_one(
    tx: &Client,
    prepared: &Prepared,
    plans: Vec<Plan>,
    notes: &mut Notes,
    shared: &Shared,
) -> Vec<Pending> {
    if plans.is_empty() {
        return Vec::new();
    }
    let mut sent: Vec<Sent<'_>> = Vec::with_capacity(plans.len());
    for p in &plans {
        match p {
            Plan::Create {
                mac,
                hostname_lc,
                ipv4,
                record,
                ..
            } => sent.push(Box::pin(async move {
                tx.query_opt(&prepared.create, &[mac, hostname_lc, ipv4, record])
                    .await
            })),
            Plan::Allocate { req, mac, ips, .. } => sent.push(Box::pin(async move {
                let (state, expires, now) =
                    (req.state.as_str(), req.expires.millis(), req.now.millis());
                tx.query_opt(&prepared.allocate, &[mac, ips, &state, &expires, &now])
                    .await
            })),
        }
    }
    let results = futures_util::future::join_all(sent).await;
    let mut answers = Vec::with_capacity(plans.len());
    for (p, got) in plans.into_iter().zip(results) {
        match p {
            Plan::Create {
                node,
                reply,
                record,
                ..
            } => {
                let result = got
                    .map_err(db("create a node"))
                    .and_then(|row| created(row, *node, &record, notes));
                answers.push(pending(reply, result));
            }
            Plan::Allocate {
                req,
                reply,
                candidates,
                ..
            } => {
                let result = got.map_err(db("allocate")).map(|row| {
                    row.map(|row| took(row.get(0), row.get(1), &req, &candidates, notes, shared))
                });
                answers.push(pending(reply, result));
            }
        }
    }
    answers
}

/// What `rackboot_create_node` answered for `node`: made (and announced),
/// the record its MAC already had, or the unique key another node holds.
fn created(
    row: Option<Row>,
    node: Node,
    record: &str,
    notes: &mut Notes,
) -> Result<(Node, bool), StoreError> {
    let row = row.ok_or_else(|| StoreError::NoSuchNode(node.mac))?;
    let made: bool = row.try_get(0).map_err(db("create a node"))?;
    if made {
        notes.node(&node, record);
        return Ok((node, true));
    }
    let taken_by: Option<String> = row.try_get(2).map_err(db("create a node"))?;
    if let Some(constraint) = taken_by {
        let detail: Option<String> = row.try_get(3).map_err(db("create a node"))?;
        return Err(key_taken(
            Some(&constraint),
            detail.as_deref().unwrap_or(""),
        ));
    }
    // Deleted between the insert that found it and the read: gone now.
    let existing: Option<Value> = row.try_get(1).map_err(db("create a node"))?;
    let existing = existing.ok_or(StoreError::NoSuchNode(node.mac))?;
    Ok((node_from_json(existing)?, false))
}

/// The lease an allocation took at `ip` (giving up `dropped`), announced;
/// the scan of its range moves on.
fn took(
    ip: i64,
    dropped: Vec<i64>,
    req: &LeaseRequest,
    candidates: &[Candidate],
    notes: &mut Notes,
    shared: &Shared,
) -> Lease {
    let ip = ip_of(ip);
    if let Some(range) = candidates
        .iter()
        .find(|c| c.ip == ip)
        .and_then(|c| c.scanned)
    {
        shared
            .mirror()
            .cursors
            .insert(range, address::cursor_after(range, ip));
    }
    for old in dropped {
        notes.push(json!({ "lease_gone": ip_of(old) }).to_string());
    }
    let lease = Lease {
        ip,
        mac: Some(req.mac),
        state: req.state,
        expires: req.expires,
    };
    notes.lease(lease.clone());
    lease
}

/// Each write's statement parameters. An allocation plans its first choice only: the first address this appliance
/// knows to be free, in policy's order, less the first choices of the
/// allocations before it in the run. Planning the whole list for every
/// allocation, under the mirror's lock, was an eighth of rackboot's work in
/// a storm on PostgreSQL, for the few that are refused their first choice.
fn plan(run: Vec<Quick>, shared: &Shared) -> (Vec<Plan>, Claimed) {
    let m = shared.mirror();
    let mut cursors: HashMap<Range, u32> = m.cursors.clone();
    // Each address first tried in this run, and for which MAC: another MAC's
    // first choice is skipped; the same MAC's (a DISCOVER retransmitted beside
    // its REQUEST) is not, or its REQUEST would be refused its own offer.
    let mut claimed = Claimed::new();
    let mut plans = Vec::with_capacity(run.len());
    for q in run {
        match q {
            Quick::Create(node, reply) => match node_text(&node) {
                Ok(record) => plans.push(Plan::Create {
                    mac: mac_text(node.mac),
                    hostname_lc: node.hostname.to_ascii_lowercase(),
                    ipv4: node.ipv4.map(ip_col),
                    record,
                    node,
                    reply,
                }),
                // Nothing to send: refused now.
                Err(e) => {
                    let _ = reply.send(Err(e));
                }
            },
            Quick::Allocate(req, reply) => {
                // The first choice alone: the set-based upsert tries nothing
                // else, and the rare allocation that goes one at a time gets
                // its whole list then (`whole_lists`).
                let candidates =
                    free_for(&m, &req, |r| cursors.get(&r).copied(), &claimed, None, 1);
                if let Some(first) = candidates.first() {
                    claimed.insert(first.ip, req.mac);
                    if let Some(range) = first.scanned {
                        cursors.insert(range, address::cursor_after(range, first.ip));
                    }
                }
                let ips = candidates.iter().map(|c| ip_col(c.ip)).collect();
                let alone = m
                    .lease_of(req.mac)
                    .is_some_and(|l| candidates.first().is_none_or(|c| c.ip != l.ip));
                plans.push(Plan::Allocate {
                    mac: mac_text(req.mac),
                    req,
                    reply,
                    candidates,
                    ips,
                    alone,
                    refused: None,
                });
            }
        }
    }
    (plans, claimed)
}

/// Each address first tried in a run, and by which MAC.
type Claimed = HashMap<std::net::Ipv4Addr, Mac>;

/// Up to `limit` addresses for `req`, in policy's order, that this
/// appliance knows to be free, that no other MAC of the run tries first,
/// and that are not `refused`.
fn free_for<'a>(
    m: &'a Mirror,
    req: &'a LeaseRequest,
    cursor: impl Fn(Range) -> Option<u32> + 'a,
    claimed: &Claimed,
    refused: Option<std::net::Ipv4Addr>,
    limit: usize,
) -> Vec<Candidate> {
    address::candidates(m.address_ask(req), cursor)
        .filter(|c| {
            Some(c.ip) != refused
                && !m.taken_by_other(c.ip, req.mac, req.now)
                && claimed.get(&c.ip).is_none_or(|by| *by == req.mac)
        })
        .take(limit)
        .collect()
}

/// The allocations among `plans` (those going one at a time) given their
/// whole lists of candidates ([`TRIES`]), planned from memory as it is now.
fn whole_lists(mut plans: Vec<Plan>, claimed: &Claimed, shared: &Shared) -> Vec<Plan> {
    if !plans.iter().any(|p| matches!(p, Plan::Allocate { .. })) {
        return plans;
    }
    let m = shared.mirror();
    for p in &mut plans {
        if let Plan::Allocate {
            req,
            candidates,
            ips,
            refused,
            ..
        } = p
        {
            *candidates = free_for(
                &m,
                req,
                |r| m.cursors.get(&r).copied(),
                claimed,
                *refused,
                TRIES,
            );
            *ips = candidates.iter().map(|c| ip_col(c.ip)).collect();
        }
    }
    plans
}
