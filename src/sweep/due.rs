//! When each node next needs the sweep: a due-time index kept from the
//! store's change feed, so a pass pops what is due instead of reading the
//! fleet. A fleet of 100k records that are quiet costs a pass nothing.
//!
//! A time here is never later than the moment something can be due, and
//! may be earlier: the pass reads the node then and, finding nothing yet,
//! puts it back at the right time. The times come from:
//! - a node record (put in, edited, or read at open): its bootenv lease
//!   running out, its last-seen time plus the shortest stall timeout (a
//!   boot cannot stall before it has been that long unseen), and, for a
//!   bare record DHCP made, when it may be reaped;
//! - a timeline event: a boot step resets the stall clock, so the node is
//!   looked at once it has been quiet for the shortest timeout after it;
//! - the pass itself: the deadline `boot::stall_deadline` gives, or the
//!   expiry of the lease that kept a bare record alive.
//!
//! A record that was never seen on the wire has taken no boot step (every
//! step comes after its DHCP, which stamps last-seen), so imported records
//! waiting for their first boot are in the index only for a bootenv lease.
//! Last-seen times that move in memory only (a packet within a minute of
//! the last stored one) are not announced: the pass reads them when the
//! older time comes due.

use std::collections::{BTreeSet, HashMap};
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use crate::model::{Mac, Node, Timestamp};
use crate::store::{Change, NodeQuery, Subscriber};

/// What decides when a record is due.
#[derive(Debug, Clone, Copy)]
pub(super) struct Rules {
    /// The shortest stall timeout: no boot stalls sooner after its last step.
    pub quiet: Duration,
    /// `[lifecycle] reap_discovered_after`, when reaping is on.
    pub reap_after: Option<Duration>,
}

impl Rules {
    /// The earliest time `node`'s record alone says to look at it, or
    /// `None` when it says nothing is pending.
    pub fn record_says(&self, node: &Node) -> Option<Timestamp> {
        let stall = node.last_seen.map(|s| after(s, self.quiet));
        let reap = self.reap_after.and_then(|a| {
            let bare = NodeQuery {
                bare_discovery: true,
                ..NodeQuery::default()
            };
            let idle_since = node.last_seen.unwrap_or(node.created).max(node.created);
            bare.matches(node).then(|| after(idle_since, a))
        });
        [node.bootenv_expires, stall, reap]
            .into_iter()
            .flatten()
            .min()
    }
}

/// `span` after `t`.
pub(super) fn after(t: Timestamp, span: Duration) -> Timestamp {
    Timestamp(t.millis().saturating_add(span.as_millis() as i64))
}

/// The index: one time per node at most, in time order.
pub struct Due {
    rules: Rules,
    schedule: Mutex<Schedule>,
}

#[derive(Default)]
struct Schedule {
    at: HashMap<Mac, Timestamp>,
    queue: BTreeSet<(Timestamp, Mac)>,
}

impl Schedule {
    fn set(&mut self, mac: Mac, at: Timestamp) {
        if let Some(old) = self.at.insert(mac, at) {
            self.queue.remove(&(old, mac));
        }
        self.queue.insert((at, mac));
    }

    fn earlier(&mut self, mac: Mac, at: Timestamp) {
        if self.at.get(&mac).is_none_or(|old| at < *old) {
            self.set(mac, at);
        }
    }

    fn clear(&mut self, mac: Mac) {
        if let Some(old) = self.at.remove(&mac) {
            self.queue.remove(&(old, mac));
            crate::store::sparse::shrink(&mut self.at);
        }
    }
}

impl Due {
    pub(super) fn new(rules: Rules) -> Due {
        Due {
            rules,
            schedule: Mutex::new(Schedule::default()),
        }
    }

    pub(super) fn rules(&self) -> &Rules {
        &self.rules
    }

    fn schedule(&self) -> std::sync::MutexGuard<'_, Schedule> {
        self.schedule.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Takes out up to `max` nodes due at `now`, the most overdue first.
    pub(super) fn take(&self, now: Timestamp, max: usize) -> Vec<Mac> {
        let mut s = self.schedule();
        let mut due = Vec::new();
        while due.len() < max {
            match s.queue.first() {
                Some(&(at, mac)) if at <= now => {
                    s.queue.pop_first();
                    s.at.remove(&mac);
                    due.push(mac);
                }
                _ => break,
            }
        }
        due
    }

    /// Looks at `mac` again at `at`, unless it is already due sooner.
    pub(super) fn again(&self, mac: Mac, at: Timestamp) {
        self.schedule().earlier(mac, at);
    }

    /// How many nodes have a time (for tests and the memory figures).
    pub fn len(&self) -> usize {
        self.schedule().at.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// When the soonest node is due.
    pub fn next(&self) -> Option<Timestamp> {
        self.schedule().queue.first().map(|(at, _)| *at)
    }
}

impl Subscriber for Due {
    /// Called under the store's hold on what changed: only memory is
    /// touched, under a lock the pass never holds across a store call.
    fn changed(&self, change: &Change<'_>) {
        match *change {
            // What the record says replaces what was kept: it is never
            // later than the truth (see the module's comment).
            Change::Node(n) => {
                if let Some(at) = self.rules.record_says(n) {
                    self.schedule().set(n.mac, at);
                }
            }
            Change::NodeGone(mac) => self.schedule().clear(mac),
            Change::Event(mac, at) => self.again(mac, after(at, self.rules.quiet)),
            Change::Lease(_) | Change::LeaseGone(_) | Change::ConfigBumped(_) | Change::Loaded => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIN: i64 = 60_000;

    fn mac(n: u8) -> Mac {
        Mac::new([0x52, 0x54, 0, 0, 0, n])
    }

    fn rules() -> Rules {
        Rules {
            quiet: Duration::from_secs(120),
            reap_after: Some(Duration::from_secs(3600)),
        }
    }

    /// A bare record as DHCP makes it at 0, but not yet seen.
    fn node(n: u8) -> Node {
        let mut n = Node::discovered(mac(n), "local", format!("n{n}"), Timestamp(0));
        n.last_seen = None;
        n
    }

    #[test]
    fn a_record_never_seen_is_due_only_for_its_bootenv_lease() {
        let r = rules();
        let mut imported = node(1);
        imported.origin = crate::model::NodeOrigin::Admin;
        assert_eq!(r.record_says(&imported), None);
        imported.bootenv_expires = Some(Timestamp(30 * MIN));
        assert_eq!(r.record_says(&imported), Some(Timestamp(30 * MIN)));
    }

    #[test]
    fn a_seen_record_is_due_once_quiet_and_a_bare_one_also_for_reaping() {
        let r = rules();
        let mut seen = node(1);
        seen.origin = crate::model::NodeOrigin::Admin;
        seen.last_seen = Some(Timestamp(10 * MIN));
        assert_eq!(r.record_says(&seen), Some(Timestamp(12 * MIN)));
        // Bare, never seen: reaped an hour after it was made.
        assert_eq!(r.record_says(&node(2)), Some(Timestamp(60 * MIN)));
        let no_reaping = Rules {
            reap_after: None,
            ..r
        };
        assert_eq!(no_reaping.record_says(&node(2)), None);
    }

    #[test]
    fn the_feed_keeps_one_time_per_node_and_take_gives_only_what_is_due() {
        let due = Due::new(rules());
        let mut a = node(1);
        a.last_seen = Some(Timestamp(0));
        due.changed(&Change::Node(&a));
        due.changed(&Change::Node(&node(2)));
        assert_eq!(due.len(), 2);
        // A boot step moves nothing later, only sooner.
        due.changed(&Change::Event(mac(2), Timestamp(MIN)));
        assert_eq!(due.next(), Some(Timestamp(2 * MIN)));
        due.changed(&Change::Event(mac(2), Timestamp(50 * MIN)));
        assert_eq!(due.len(), 2);
        assert_eq!(due.take(Timestamp(2 * MIN - 1), 10), vec![]);
        assert_eq!(due.take(Timestamp(3 * MIN), 10), vec![mac(1), mac(2)]);
        assert!(due.is_empty());
        // A newer record replaces the time; a record gone leaves none.
        a.last_seen = Some(Timestamp(30 * MIN));
        due.changed(&Change::Node(&a));
        assert_eq!(due.next(), Some(Timestamp(32 * MIN)));
        due.changed(&Change::NodeGone(mac(1)));
        assert!(due.is_empty());
    }

    #[test]
    fn take_stops_at_its_limit_and_leaves_the_rest_due() {
        let due = Due::new(rules());
        for n in 1..=5 {
            due.changed(&Change::Event(mac(n), Timestamp(i64::from(n))));
        }
        assert_eq!(due.take(Timestamp(10 * MIN), 2), vec![mac(1), mac(2)]);
        assert_eq!(due.len(), 3);
    }
}
