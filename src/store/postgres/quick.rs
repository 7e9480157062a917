//! The writes a DHCP exchange makes (new node records, lease allocations and
//! timeline events), sent to PostgreSQL together and answered in order: one
//! round trip for a run of them instead of several each. They need no
//! savepoint: a record whose hostname or address is taken, and an address
//! taken by another MAC, are found inside one statement
//! (`rackboot_create_node` and `rackboot_allocate`, schema migrations 4 and
//! 3), and an event only appends, so none fails but with the connection, and
//! then the whole batch does.
//!
//! Addresses are planned here before anything is sent: each allocation of
//! the run skips the addresses the ones before it in the same run will try
//! first, so a run of new clients does not queue up on one address.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;

use serde_json::{Value, json};
use tokio_postgres::{Client, Row, Statement, Transaction};

use super::Shared;
use super::rows::{db, ip_col, ip_of, key_taken, mac_text, node_from_json, node_json};
use super::writer::{Pending, Reply, TRIES, TRIM_EVERY, lease_note, node_note_of, pending};
use crate::boot::address::{self, Candidate, Range};
use crate::model::{Event, Lease, Mac, Node};
use crate::store::{EVENTS_PER_NODE, LeaseRequest, StoreError};

/// The statements of the quick writes (and the announcement), prepared once
/// per connection: each then costs one message, not a parse and a bind.
pub(super) struct Prepared {
    create: Statement,
    allocate: Statement,
    /// Every event of a run, in one statement: rows are cheap, statements
    /// are not.
    events: Statement,
    trim: Statement,
    pub(super) notify: Statement,
}

impl Prepared {
    pub(super) async fn new(client: &Client) -> Result<Prepared, tokio_postgres::Error> {
        Ok(Prepared {
            create: client
                .prepare(
                    // The record goes as JSON text: made once, announced as it is.
                    "SELECT made, existing, taken, detail FROM rackboot_create_node($1, $2, $3, $4::text::jsonb)",
                )
                .await?,
            allocate: client
                .prepare("SELECT got_ip, dropped_ips FROM rackboot_allocate($1, $2, $3, $4, $5)")
                .await?,
            events: client
                .prepare(
                    "INSERT INTO events (mac, at, kind, data, appliance) \
                     SELECT * FROM unnest($1::text[], $2::int8[], $3::text[], $4::jsonb[], $5::text[])",
                )
                .await?,
            trim: client.prepare(super::writer::TRIM_EVENTS).await?,
            notify: client
                .prepare(
                    "SELECT pg_notify($1, p) FROM unnest($2::text[]) WITH ORDINALITY AS t(p, i) \
                     ORDER BY i",
                )
                .await?,
        })
    }
}

/// A write that can go in a run.
pub(super) enum Quick {
    /// A node record, unless its MAC has one: (the record, whether made).
    Create(Box<Node>, Reply<(Node, bool)>),
    Allocate(Box<LeaseRequest>, Reply<Option<Lease>>),
    Event(Mac, Box<Event>),
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
    },
}

type Sent<'a> =
    Pin<Box<dyn Future<Output = Result<Option<Row>, tokio_postgres::Error>> + Send + 'a>>;

/// Sends `run` in one go inside `tx` and turns what comes back into answers
/// (held until the commit) and announcements.
pub(super) async fn send(
    tx: &Transaction<'_>,
    prepared: &Prepared,
    run: Vec<Quick>,
    notes: &mut Vec<String>,
    shared: &Shared,
) -> Vec<Pending> {
    let (plans, events) = plan(run, shared);
    let mut sent: Vec<Sent<'_>> = Vec::with_capacity(plans.len() + 2 + events.trims.len());
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
    let events_sent = !events.macs.is_empty();
    let events = &events;
    if events_sent {
        sent.push(Box::pin(async move {
            tx.execute(
                &prepared.events,
                &[
                    &events.macs,
                    &events.ats,
                    &events.kinds,
                    &events.data,
                    &events.appliances,
                ],
            )
            .await
            .map(|_| None)
        }));
    }
    for key in &events.trims {
        sent.push(Box::pin(async move {
            tx.execute(&prepared.trim, &[key, &EVENTS_PER_NODE])
                .await
                .map(|_| None)
        }));
    }
    // Polled together: tokio-postgres sends each statement as it is first
    // polled, in this order, and the server runs them in that order.
    let mut results = futures_util::future::join_all(sent).await.into_iter();
    let mut answers = Vec::new();
    for p in plans {
        let got = results.next().expect("one result per statement");
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
                let result = got
                    .map_err(db("allocate"))
                    .map(|row| row.map(|row| taken(&row, &req, &candidates, notes, shared)));
                answers.push(pending(reply, result));
            }
        }
    }
    if events_sent && let Some(Err(e)) = results.next() {
        // Only the connection fails an append, and then the commit does too.
        let e = db("add events")(e);
        tracing::warn!(error = %e, "store: {} timeline events were not saved", events.macs.len());
    }
    for (key, done) in events.trims.iter().zip(results) {
        if let Err(e) = done {
            let e = db("trim a timeline")(e);
            tracing::warn!(mac = %key, error = %e, "store: a timeline was not trimmed");
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
    notes: &mut Vec<String>,
) -> Result<(Node, bool), StoreError> {
    let row = row.ok_or_else(|| StoreError::NoSuchNode(node.mac))?;
    let made: bool = row.try_get(0).map_err(db("create a node"))?;
    if made {
        notes.push(node_note_of(node.mac, record));
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

/// The lease an allocation took, announced; the scan of its range moves on.
fn taken(
    row: &Row,
    req: &LeaseRequest,
    candidates: &[Candidate],
    notes: &mut Vec<String>,
    shared: &Shared,
) -> Lease {
    let ip = ip_of(row.get(0));
    let dropped: Vec<i64> = row.get(1);
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
    notes.push(lease_note(&lease));
    lease
}

/// Each write's statement parameters (a run's events together). An allocation's candidates are the
/// addresses this appliance knows to be free, in policy's order, less the
/// first choices of the allocations before it in the run.
fn plan(run: Vec<Quick>, shared: &Shared) -> (Vec<Plan>, Events) {
    let mut m = shared.mirror();
    let mut cursors: HashMap<Range, u32> = m.cursors.clone();
    // Each address first tried in this run, and for which MAC: another MAC's
    // first choice is skipped; the same MAC's (a DISCOVER retransmitted beside
    // its REQUEST) is not, or its REQUEST would be refused its own offer.
    let mut claimed: HashMap<std::net::Ipv4Addr, Mac> = HashMap::new();
    let mut plans = Vec::with_capacity(run.len());
    let mut events = Events::default();
    for q in run {
        match q {
            Quick::Create(node, reply) => match node_json(&node) {
                Ok(record) => plans.push(Plan::Create {
                    mac: mac_text(node.mac),
                    hostname_lc: node.hostname.to_ascii_lowercase(),
                    ipv4: node.ipv4.map(ip_col),
                    record: record.to_string(),
                    node,
                    reply,
                }),
                // Nothing to send: refused now.
                Err(e) => {
                    let _ = reply.send(Err(e));
                }
            },
            Quick::Allocate(req, reply) => {
                let ask = m.address_ask(&req);
                let candidates: Vec<Candidate> =
                    address::candidates(ask, |r| cursors.get(&r).copied())
                        .filter(|c| {
                            !m.taken_by_other(c.ip, req.mac, req.now)
                                && claimed.get(&c.ip).is_none_or(|by| *by == req.mac)
                        })
                        .take(TRIES)
                        .collect();
                if let Some(first) = candidates.first() {
                    claimed.insert(first.ip, req.mac);
                    if let Some(range) = first.scanned {
                        cursors.insert(range, address::cursor_after(range, first.ip));
                    }
                }
                let ips = candidates.iter().map(|c| ip_col(c.ip)).collect();
                plans.push(Plan::Allocate {
                    mac: mac_text(req.mac),
                    req,
                    reply,
                    candidates,
                    ips,
                });
            }
            Quick::Event(mac, event) => {
                let n = m.events_since_trim.entry(mac).or_insert(0);
                *n += 1;
                let trim = *n >= TRIM_EVERY;
                if trim {
                    *n = 0;
                }
                let data = match serde_json::to_value(&event.data) {
                    Ok(data) => data,
                    Err(e) => {
                        tracing::warn!(%mac, error = %e, "store: a timeline event was not saved: {event}");
                        continue;
                    }
                };
                events.push(mac_text(mac), &event, data, trim);
            }
        }
    }
    (plans, events)
}

/// A run's events as the columns of one insert, and the timelines to trim
/// after it.
#[derive(Default)]
struct Events {
    macs: Vec<String>,
    ats: Vec<i64>,
    kinds: Vec<&'static str>,
    data: Vec<Value>,
    appliances: Vec<Option<String>>,
    trims: Vec<String>,
}

impl Events {
    fn push(&mut self, key: String, event: &Event, data: Value, trim: bool) {
        if trim {
            self.trims.push(key.clone());
        }
        self.macs.push(key);
        self.ats.push(event.at.millis());
        self.kinds.push(event.kind().as_str());
        self.data.push(data);
        self.appliances.push(event.appliance.clone());
    }
}
