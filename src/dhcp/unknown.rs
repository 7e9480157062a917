//! How much of one subnet's pool clients rackboot knows nothing of may take:
//! at most `unknown_share` percent of the dynamic ranges at once, and new
//! leases no faster than `unknown_rate` a second. Without it one host
//! sending DISCOVERs from made-up MACs takes a pool in under a second, and
//! the machines rackboot is there to boot get nothing.
//!
//! An unknown client is one without a record, or with only the bare record
//! DHCP made for it ([`Node::is_bare_discovery`](crate::model::Node)): it has
//! not booted, and no admin has given it anything. A node with a record that
//! went further, or a fixed address, is never limited here; its leases come
//! from the rest of the pool.
//!
//! Pure: the caller passes the time and keeps the books in step (each lease
//! an unknown client gets, each it gives back, each client that turned out
//! to be known). No I/O, no store: the count lives in memory, seeded from the
//! store at start-up, and recounted against the store when full.

use std::collections::HashMap;

use crate::model::{Mac, Timestamp};

/// How often a full share may be recounted against the store at most: a
/// recount looks up every client counted, and under a flood the share
/// stays full.
const RECOUNT_EVERY_MS: i64 = 1000;

/// Why an unknown client gets no new lease.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// Unknown clients hold `unknown_share` of the pool.
    ShareFull { held: usize, cap: usize },
    /// New leases for unknown clients came faster than `unknown_rate`.
    TooFast,
}

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Refusal::ShareFull { held, cap } => write!(
                f,
                "unknown clients hold {held} of the {cap} addresses unknown_share gives them"
            ),
            Refusal::TooFast => f.write_str("new unknown clients arrive faster than unknown_rate"),
        }
    }
}

/// One subnet's unknown clients and their leases.
#[derive(Debug)]
pub struct Unknown {
    /// Leases unknown clients may hold at once.
    cap: usize,
    /// Each unknown client holding a lease here, and when that lease runs out.
    held: HashMap<Mac, Timestamp>,
    /// `unknown_rate`'s token bucket (tokens, when last filled); bursts of
    /// twice the rate pass.
    rate: Option<(f64, Timestamp)>,
    /// `unknown_rate`; 0: no limit.
    per_second: f64,
    recounted: Option<Timestamp>,
}

impl Unknown {
    /// `pool` addresses in the dynamic ranges, `share` percent of them for
    /// unknown clients, `rate` new leases a second (0 = no limit).
    pub fn new(pool: u64, share: u8, rate: u32) -> Unknown {
        let cap = pool.saturating_mul(u64::from(share.min(100))) / 100;
        Unknown {
            cap: usize::try_from(cap).unwrap_or(usize::MAX),
            held: HashMap::new(),
            rate: None,
            per_second: f64::from(rate),
            recounted: None,
        }
    }

    /// Whether `mac` holds a lease counted here.
    pub fn holds(&self, mac: Mac, now: Timestamp) -> bool {
        self.held.get(&mac).is_some_and(|&until| until > now)
    }

    /// Whether `mac`, unknown, may have a new lease now. One it already
    /// holds is no new lease. A `Ok` is only leave: call [`Unknown::took`]
    /// once the lease is made.
    pub fn may_take(&mut self, mac: Mac, now: Timestamp) -> Result<(), Refusal> {
        if self.holds(mac, now) {
            return Ok(());
        }
        if self.held.len() >= self.cap {
            self.held.retain(|_, until| *until > now);
            if self.held.len() >= self.cap {
                return Err(Refusal::ShareFull {
                    held: self.held.len(),
                    cap: self.cap,
                });
            }
        }
        if self.per_second > 0.0 {
            let burst = (self.per_second * 2.0).max(1.0);
            let (tokens, at) = match self.rate {
                Some((tokens, at)) => (tokens, at),
                None => (burst, now),
            };
            let elapsed = (now.millis() - at.millis()).max(0) as f64 / 1000.0;
            let tokens = (tokens + elapsed * self.per_second).min(burst);
            if tokens < 1.0 {
                self.rate = Some((tokens, now));
                return Err(Refusal::TooFast);
            }
            self.rate = Some((tokens - 1.0, now));
        }
        Ok(())
    }

    /// `mac`, unknown, holds a lease until `until`.
    pub fn took(&mut self, mac: Mac, until: Timestamp) {
        self.held.insert(mac, until);
    }

    /// `mac` holds nothing counted here any more: it gave its lease back,
    /// or turned out to be known.
    pub fn left(&mut self, mac: Mac) {
        self.held.remove(&mac);
    }

    /// How many leases unknown clients hold (some perhaps run out since the
    /// last refusal purged them).
    pub fn held(&self) -> usize {
        self.held.len()
    }

    /// The clients to look up again when the share is full and was not
    /// recounted within the last second; empty otherwise. Pass what the
    /// store says of them to [`Unknown::recount`].
    pub fn due_for_recount(&mut self, now: Timestamp) -> Vec<Mac> {
        let due = self.held.len() >= self.cap
            && self
                .recounted
                .is_none_or(|t| now.millis() - t.millis() >= RECOUNT_EVERY_MS);
        if !due {
            return Vec::new();
        }
        self.recounted = Some(now);
        self.held.keys().copied().collect()
    }

    /// Drops each client in `known` (it booted, or an admin made it theirs)
    /// and every lease that ran out.
    pub fn recount(&mut self, known: &[Mac], now: Timestamp) {
        for mac in known {
            self.held.remove(mac);
        }
        self.held.retain(|_, until| *until > now);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dhcp::test_client_mac as mac;

    fn at(ms: i64) -> Timestamp {
        Timestamp(ms)
    }

    #[test]
    fn unknown_clients_get_their_share_and_no_more() {
        let mut u = Unknown::new(100, 50, 0);
        let mut got = 0;
        for i in 0..1000 {
            if u.may_take(mac(i), at(0)).is_ok() {
                u.took(mac(i), at(60_000));
                got += 1;
            }
        }
        assert_eq!(got, 50);
        assert_eq!(
            u.may_take(mac(5000), at(1)),
            Err(Refusal::ShareFull { held: 50, cap: 50 })
        );
        // A client already counted keeps its lease (its REQUEST, a renewal).
        assert!(u.may_take(mac(3), at(1)).is_ok());
        // One gives its lease back: room for one more.
        u.left(mac(3));
        assert!(u.may_take(mac(5000), at(1)).is_ok());
        u.took(mac(5000), at(60_000));
        // Offers that were never taken run out, and the share is free again.
        assert!(u.may_take(mac(6000), at(60_000)).is_ok());
        assert_eq!(u.held(), 0);
    }

    #[test]
    fn a_full_share_is_recounted_at_most_once_a_second() {
        let mut u = Unknown::new(10, 20, 0);
        for i in 0..2 {
            u.took(mac(i), at(60_000));
        }
        let due = u.due_for_recount(at(0));
        assert_eq!(due.len(), 2);
        assert!(u.due_for_recount(at(999)).is_empty());
        // mac(0) booted meanwhile: it no longer counts.
        u.recount(&[mac(0)], at(1000));
        assert_eq!(u.held(), 1);
        assert!(u.due_for_recount(at(1000)).is_empty(), "not full");
        assert!(u.may_take(mac(7), at(1000)).is_ok());
    }

    #[test]
    fn new_unknown_clients_are_held_to_the_rate() {
        let mut u = Unknown::new(1000, 100, 5);
        let burst = (0..100)
            .filter(|&i| {
                let ok = u.may_take(mac(i), at(0)).is_ok();
                if ok {
                    u.took(mac(i), at(60_000));
                }
                ok
            })
            .count();
        assert_eq!(burst, 10, "a burst of twice the rate");
        assert_eq!(u.may_take(mac(200), at(100)), Err(Refusal::TooFast));
        assert!(u.may_take(mac(200), at(300)).is_ok(), "refills at 5/s");
        // One already counted is not a new lease: never too fast.
        assert!(u.may_take(mac(1), at(300)).is_ok());
    }

    #[test]
    fn share_zero_serves_known_nodes_only_and_a_hundred_the_whole_pool() {
        let mut none = Unknown::new(100, 0, 0);
        assert!(none.may_take(mac(1), at(0)).is_err());
        let mut all = Unknown::new(3, 100, 0);
        for i in 0..3 {
            assert!(all.may_take(mac(i), at(0)).is_ok());
            all.took(mac(i), at(1000));
        }
        assert!(all.may_take(mac(9), at(0)).is_err());
    }
}
