//! Timeline events on PostgreSQL: held back briefly by the writer and
//! written packed, the events one MAC made within [`HOLD`] as one row.
//!
//! A DHCP exchange records its OFFER and its ACK (and, for a new client,
//! that its record was made) milliseconds apart, each in its own batch:
//! as rows of their own they were the largest share of the database's
//! work in a storm (an index entry and a heap tuple each, more than the
//! lease rows). Held for a quarter of a second, the exchange's events go
//! as one row, and a storm writes about one timeline row per client
//! instead of three.
//!
//! What this costs, and why it is acceptable: events are fire-and-forget
//! already (losing one never fails a boot), so a crash of the appliance
//! loses at most the last [`HOLD`] of them; `sync` (which `serve` calls on
//! its way out) and every delete of nodes write them first. The appliance
//! that holds them reads them with its own timeline reads; a sibling sees
//! them once they are written, within [`HOLD`] and its batch.
//!
//! A row of one event is written as before (`kind` the event's); a row of
//! several has `kind` [`PACKED`] and `data` a JSON array of the events
//! (schema 10, which refuses older binaries that would not read it).

use std::collections::{HashMap, VecDeque};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::time::Instant;
use tokio_postgres::{Client, Statement};

use super::Shared;
use super::rows::{corrupt, db, mac_text};
use crate::model::{Event, EventData, Mac, Timestamp};
use crate::store::{EVENTS_PER_NODE, StoreError};

/// How long the writer holds a MAC's first event back for the ones that
/// follow it. Well under the second within which siblings see changes.
pub(super) const HOLD: Duration = Duration::from_millis(250);

/// Holds that would end within this of a batch end with it: one commit
/// for them all, not one each, while the writer has nothing else to do.
const SLACK: Duration = Duration::from_millis(50);

/// The most events one row carries: a MAC with this many held goes out
/// with the batch at hand.
const PACK_MAX: usize = 32;

/// A node's timeline is trimmed to [`EVENTS_PER_NODE`] rows once every
/// this many rows of it.
const TRIM_EVERY: i64 = 50;

/// The `kind` of a row that holds several events.
pub(super) const PACKED: &str = "packed";

/// One event inside a packed row, as written.
#[derive(Serialize)]
struct PackedOut<'a> {
    at: i64,
    data: &'a EventData,
    #[serde(skip_serializing_if = "Option::is_none")]
    appliance: Option<&'a str>,
}

/// One event inside a packed row, as read.
#[derive(Deserialize)]
struct PackedIn {
    at: i64,
    data: EventData,
    appliance: Option<String>,
}

/// The events held back, by MAC, with the order their holds began.
#[derive(Default)]
pub(super) struct Held {
    by_mac: HashMap<Mac, Vec<Event>>,
    /// When each MAC's hold began, oldest first. A MAC written early (full)
    /// leaves its entry behind: when that ends, the MAC's newer hold, if it
    /// has one, goes early with it.
    began: VecDeque<(Instant, Mac)>,
    /// MACs holding [`PACK_MAX`] events: written with the batch at hand.
    full: Vec<Mac>,
}

impl Held {
    pub(super) fn hold(&mut self, mac: Mac, event: Event) {
        let events = self.by_mac.entry(mac).or_default();
        if events.is_empty() {
            self.began.push_back((Instant::now(), mac));
        }
        events.push(event);
        if events.len() == PACK_MAX {
            self.full.push(mac);
        }
    }

    /// When the oldest hold ends, if any is held.
    pub(super) fn due(&self) -> Option<Instant> {
        self.began.front().map(|(at, _)| *at + HOLD)
    }

    /// The events `mac` holds now, oldest first.
    pub(super) fn of(&self, mac: Mac) -> &[Event] {
        self.by_mac.get(&mac).map_or(&[], Vec::as_slice)
    }

    /// Every hold that ended by `now` or ends within [`SLACK`] of it (or
    /// every one, with `all`) and every full one, taken out, in the order
    /// they began.
    pub(super) fn take(&mut self, now: Instant, all: bool) -> Vec<(Mac, Vec<Event>)> {
        let mut ended: Vec<(Mac, Vec<Event>)> = Vec::new();
        for mac in std::mem::take(&mut self.full) {
            if let Some(events) = self.by_mac.remove(&mac) {
                ended.push((mac, events));
            }
        }
        while let Some((at, mac)) = self.began.front().copied() {
            if !all && at + HOLD > now + SLACK {
                break;
            }
            self.began.pop_front();
            if let Some(events) = self.by_mac.remove(&mac) {
                ended.push((mac, events));
            }
        }
        if self.by_mac.is_empty() {
            // A storm's worth of MACs held: give the room back.
            self.by_mac.shrink_to(64);
            self.began.shrink_to(64);
        }
        ended
    }
}

/// Held events as the columns of one insert, and the timelines to trim
/// after it.
#[derive(Default)]
pub(super) struct Rows {
    macs: Vec<String>,
    ats: Vec<i64>,
    kinds: Vec<&'static str>,
    /// As JSON text, which the `text` column keeps as sent.
    data: Vec<String>,
    appliances: Vec<Option<String>>,
    trims: Vec<String>,
    /// How many events the rows carry.
    events: usize,
}

impl Rows {
    /// `ended` holds as rows, each counted towards its timeline's trim.
    pub(super) fn of(ended: Vec<(Mac, Vec<Event>)>, shared: &Shared) -> Rows {
        let mut rows = Rows::default();
        if ended.is_empty() {
            return rows;
        }
        let mut m = shared.mirror();
        for (mac, events) in ended {
            let Some(row) = row_of(mac, &events) else {
                continue;
            };
            let n = m.events_since_trim.entry(mac).or_insert(0);
            *n += 1;
            let key = mac_text(mac);
            if *n >= TRIM_EVERY {
                *n = 0;
                rows.trims.push(key.clone());
            }
            rows.events += events.len();
            rows.macs.push(key);
            rows.ats.push(events[0].at.millis());
            rows.kinds.push(row.kind);
            rows.data.push(row.data);
            rows.appliances.push(events[0].appliance.clone());
        }
        rows
    }

    pub(super) fn is_empty(&self) -> bool {
        self.macs.is_empty()
    }

    /// Inserts the rows in one statement, then trims the timelines due.
    /// Only the connection fails an insert (and then the commit does too):
    /// what failed is logged here.
    pub(super) async fn write(&self, tx: &Client, prepared: &Prepared) {
        if self.is_empty() {
            return;
        }
        let params: [&(dyn tokio_postgres::types::ToSql + Sync); 5] = [
            &self.macs,
            &self.ats,
            &self.kinds,
            &self.data,
            &self.appliances,
        ];
        let insert = tx.execute(&prepared.insert, &params);
        let trims = futures_util::future::join_all(self.trims.iter().map(|key| async move {
            (
                key,
                tx.execute(&prepared.trim, &[key, &EVENTS_PER_NODE]).await,
            )
        }));
        let (inserted, trimmed) = futures_util::join!(insert, trims);
        if let Err(e) = inserted {
            let e = db("add events")(e);
            tracing::warn!(error = %e, "store: {} timeline events were not saved", self.events);
        }
        for (key, done) in trimmed {
            if let Err(e) = done {
                let e = db("trim a timeline")(e);
                tracing::warn!(mac = %key, error = %e, "store: a timeline was not trimmed");
            }
        }
    }

    /// Logs the rows as lost (their batch could not be sent).
    pub(super) fn lost(&self, cause: &str) {
        if !self.is_empty() {
            tracing::warn!(
                cause,
                "store: {} timeline events were not saved",
                self.events
            );
        }
    }
}

/// One timeline row's `kind` and `data`.
struct Row {
    kind: &'static str,
    data: String,
}

/// `events` (one MAC's, at least one) as one row: the event itself when
/// alone, else packed. None when they would not serialise (logged).
fn row_of(mac: Mac, events: &[Event]) -> Option<Row> {
    let (kind, data) = match events {
        [event] => (event.kind().as_str(), serde_json::to_string(&event.data)),
        _ => {
            let packed: Vec<PackedOut<'_>> = events
                .iter()
                .map(|e| PackedOut {
                    at: e.at.millis(),
                    data: &e.data,
                    appliance: e.appliance.as_deref(),
                })
                .collect();
            (PACKED, serde_json::to_string(&packed))
        }
    };
    match data {
        Ok(data) => Some(Row { kind, data }),
        Err(e) => {
            tracing::warn!(%mac, error = %e, "store: {} timeline events were not saved", events.len());
            None
        }
    }
}

/// The statements of timeline writes, prepared once per connection.
pub(super) struct Prepared {
    insert: Statement,
    trim: Statement,
}

impl Prepared {
    pub(super) async fn new(client: &Client) -> Result<Prepared, tokio_postgres::Error> {
        Ok(Prepared {
            // Rows are cheap, statements are not: every row at once.
            insert: client
                .prepare(
                    "INSERT INTO events (mac, at, kind, data, appliance) \
                     SELECT m, a, k, d, ap \
                     FROM unnest($1::text[], $2::int8[], $3::text[], $4::text[], $5::text[]) \
                     AS t(m, a, k, d, ap)",
                )
                .await?,
            trim: client.prepare(TRIM_ROWS).await?,
        })
    }
}

/// Trims `$1`'s timeline to its newest `$2` rows (each at least one event).
const TRIM_ROWS: &str = "DELETE FROM events WHERE mac = $1 AND seq <= \
     (SELECT seq FROM events WHERE mac = $1 ORDER BY seq DESC OFFSET $2 LIMIT 1)";

/// `mac`'s timeline, oldest first: its newest [`EVENTS_PER_NODE`] events,
/// from its rows and what `held` holds of it.
pub(super) async fn read(tx: &Client, mac: Mac, held: &Held) -> Result<Vec<Event>, StoreError> {
    // The newest rows hold at least as many events as are kept.
    let rows = tx
        .query(
            "SELECT at, kind, data, appliance FROM (SELECT seq, at, kind, data, appliance \
             FROM events WHERE mac = $1 ORDER BY seq DESC LIMIT $2) newest ORDER BY seq",
            &[&mac_text(mac), &EVENTS_PER_NODE],
        )
        .await
        .map_err(db("list events"))?;
    let mut events = Vec::new();
    for row in &rows {
        let (at, kind, data, appliance): (i64, &str, &str, Option<String>) =
            (row.get(0), row.get(1), row.get(2), row.get(3));
        if kind == PACKED {
            events.extend(unpack(mac, data)?);
        } else {
            events.push(Event {
                at: Timestamp(at),
                data: serde_json::from_str(data).map_err(|e| corrupt(mac, e))?,
                appliance,
            });
        }
    }
    events.extend(held.of(mac).iter().cloned());
    let extra = events.len().saturating_sub(EVENTS_PER_NODE as usize);
    events.drain(..extra);
    Ok(events)
}

/// The events of a packed row.
fn unpack(mac: Mac, data: &str) -> Result<Vec<Event>, StoreError> {
    let packed: Vec<PackedIn> = serde_json::from_str(data).map_err(|e| corrupt(mac, e))?;
    Ok(packed
        .into_iter()
        .map(|p| Event {
            at: Timestamp(p.at),
            data: p.data,
            appliance: p.appliance,
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::EventKind;

    fn mac(n: u8) -> Mac {
        format!("52:54:00:00:00:{n:02x}").parse().unwrap()
    }

    fn note(at: i64, text: &str) -> Event {
        Event {
            at: Timestamp(at),
            data: EventData::Note {
                of: EventKind::DhcpAck,
                text: text.into(),
            },
            appliance: Some("row-a".into()),
        }
    }

    #[test]
    fn a_packed_row_reads_back_as_its_events_in_order() {
        let mut events = vec![note(1, "one"), note(2, "two \"quoted\""), note(3, "three")];
        events[1].appliance = None;
        let row = row_of(mac(1), &events).unwrap();
        assert_eq!(row.kind, PACKED);
        assert_eq!(unpack(mac(1), &row.data).unwrap(), events);
    }

    #[test]
    fn a_lone_event_is_a_row_of_its_own_kind() {
        let e = note(1, "one");
        let row = row_of(mac(1), std::slice::from_ref(&e)).unwrap();
        assert_eq!(row.kind, "dhcp.ack");
        assert_eq!(row.data, serde_json::to_string(&e.data).unwrap());
    }

    #[tokio::test(start_paused = true)]
    async fn holds_end_in_the_order_they_began_each_with_its_later_events() {
        let mut held = Held::default();
        held.hold(mac(1), note(1, "a1"));
        tokio::time::advance(Duration::from_millis(100)).await;
        held.hold(mac(2), note(2, "b1"));
        held.hold(mac(1), note(3, "a2"));
        assert_eq!(held.of(mac(1)).len(), 2, "read while held");
        assert_eq!(
            held.due(),
            Some(Instant::now() + HOLD - Duration::from_millis(100))
        );

        tokio::time::advance(HOLD - Duration::from_millis(100)).await;
        let ended = held.take(Instant::now(), false);
        assert_eq!(ended.len(), 1, "only the hold that began first ended");
        assert_eq!(ended[0].0, mac(1));
        assert_eq!(ended[0].1, vec![note(1, "a1"), note(3, "a2")]);
        assert!(held.of(mac(1)).is_empty());

        // A MAC's next event begins a new hold.
        held.hold(mac(1), note(4, "a3"));
        let all = held.take(Instant::now(), true);
        let macs: Vec<Mac> = all.iter().map(|(m, _)| *m).collect();
        assert_eq!(macs, [mac(2), mac(1)]);
        assert!(held.of(mac(2)).is_empty() && held.due().is_none());
    }

    #[tokio::test(start_paused = true)]
    async fn holds_ending_within_the_slack_go_with_the_one_that_ended() {
        let mut held = Held::default();
        held.hold(mac(1), note(1, "a"));
        tokio::time::advance(SLACK / 2).await;
        held.hold(mac(2), note(2, "b"));
        tokio::time::advance(SLACK * 2).await;
        held.hold(mac(3), note(3, "c"));
        // Now mac 1's hold ends; mac 2's would in half the slack.
        tokio::time::advance(HOLD - SLACK * 2 - SLACK / 2).await;
        let macs: Vec<Mac> = held
            .take(Instant::now(), false)
            .into_iter()
            .map(|(m, _)| m)
            .collect();
        assert_eq!(macs, [mac(1), mac(2)], "mac 3's ends after the slack");
        assert_eq!(held.of(mac(3)).len(), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn a_full_hold_goes_with_the_next_batch() {
        let mut held = Held::default();
        for i in 0..PACK_MAX as i64 + 1 {
            held.hold(mac(1), note(i, "x"));
        }
        held.hold(mac(2), note(0, "y"));
        let ended = held.take(Instant::now(), false);
        assert_eq!(ended.len(), 1);
        assert_eq!(ended[0].1.len(), PACK_MAX + 1, "every event held so far");
        assert_eq!(held.of(mac(2)).len(), 1, "the others wait their time");
    }
}
