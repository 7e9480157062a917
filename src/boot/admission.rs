//! Admission control, pure: how many nodes of one subnet may be fetching
//! their kernel and initrds at once, who goes next, and how long a node that
//! must wait is told to sleep.
//!
//! A rack powering on together shares one link: a thousand transfers
//! crawling side by side all finish late, while a few dozen at a time each
//! finish fast and make room for the next. So a node takes a *slot* when its
//! boot script is handed out and gives it back when its last initrd has
//! gone out in full (or it reports in, or [`Admission::slot_timeout`]
//! passes). A node refused a slot gets a script that sleeps and asks again;
//! refused nodes are served first come, first served (a ticket each), so a
//! node that waited long is not overtaken by one that just arrived.
//!
//! No I/O and no clock: the caller passes `now`. The HTTP service holds one
//! [`Admission`] behind a lock and asks it for every boot script that
//! fetches a kernel.

use std::collections::{BTreeMap, HashMap};
use std::net::Ipv4Addr;
use std::time::Duration;

use ipnet::Ipv4Net;

use crate::model::{Mac, Timestamp};

/// The first wait, in seconds; each refusal doubles it up to [`MAX_DELAY`].
const FIRST_DELAY: u32 = 1;
/// The longest base wait, in seconds. Short on purpose: a waiting node's
/// retry costs a cached script, and the first in line must not leave a
/// freed slot idle for long.
const MAX_DELAY: u32 = 10;
/// A waiter keeps its place in line only if it comes back within this many
/// seconds of the time it was told (a powered-off node must not hold up
/// the line).
const GRACE: i64 = 3;
/// Waiters not heard from for this long are forgotten altogether.
const WAITER_TTL_MS: i64 = 5 * 60 * 1000;
/// Most waiters remembered: past it, a refused node still sleeps and
/// retries, but without a place in line (a flood of made-up MACs must not
/// grow memory without bound).
const MAX_WAITERS: usize = 65_536;
/// Expired slots and waiters are swept at most this often.
const SWEEP_EVERY_MS: i64 = 1000;

/// What a subnet's limit is, by address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    /// Each configured subnet and its limit (0 = no limit).
    pub subnets: Vec<(Ipv4Net, u32)>,
    /// For a client in no configured subnet (0 = no limit).
    pub other: u32,
    pub slot_timeout: Duration,
}

impl Limits {
    /// No limit anywhere.
    pub fn none() -> Limits {
        Limits {
            subnets: Vec::new(),
            other: 0,
            slot_timeout: Duration::from_secs(300),
        }
    }

    /// The pool of a client at `ip` (its subnet's index, or the one past
    /// the last subnet for everything else).
    pub fn pool_of(&self, ip: Option<Ipv4Addr>) -> usize {
        ip.and_then(|ip| self.subnets.iter().position(|(n, _)| n.contains(&ip)))
            .unwrap_or(self.subnets.len())
    }

    /// The pools that have a limit, by index.
    pub fn limited(&self) -> impl Iterator<Item = usize> + '_ {
        (0..=self.subnets.len()).filter(|&p| self.limit(p) > 0)
    }

    fn limit(&self, pool: usize) -> u32 {
        self.subnets.get(pool).map_or(self.other, |(_, l)| *l)
    }

    /// The pool's name for logs and metrics: its CIDR, or `other`.
    pub fn pool_name(&self, pool: usize) -> String {
        self.subnets
            .get(pool)
            .map_or_else(|| "other".to_string(), |(n, _)| n.to_string())
    }
}

/// The answer to a node that asks for its boot script.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// It may boot now (it holds a slot, or its subnet has no limit).
    Go,
    /// Its subnet is full: sleep `delay_secs` and ask again.
    Wait {
        /// How many times in a row it was refused, this one included.
        attempt: u32,
        delay_secs: u32,
        /// Nodes of its subnet holding a slot, and its limit.
        booting: u32,
        limit: u32,
        /// Waiters ahead of it in line.
        ahead: usize,
    },
}

#[derive(Debug, Clone, Copy)]
struct Slot {
    pool: usize,
    expires: Timestamp,
}

#[derive(Debug, Clone, Copy)]
struct Waiter {
    pool: usize,
    ticket: u64,
    attempt: u32,
    /// When it was told to come back.
    due: Timestamp,
    last_seen: Timestamp,
}

/// Slots in use and the line of waiters, per pool.
#[derive(Debug)]
pub struct Admission {
    limits: Limits,
    slots: HashMap<Mac, Slot>,
    /// Slots in use per pool (index as in [`Limits::pool_of`]).
    in_use: Vec<u32>,
    waiters: HashMap<Mac, Waiter>,
    /// The line: (pool, ticket) → MAC, oldest ticket first.
    line: BTreeMap<(usize, u64), Mac>,
    next_ticket: u64,
    last_sweep: Timestamp,
}

impl Admission {
    pub fn new(limits: Limits) -> Admission {
        let pools = limits.subnets.len() + 1;
        Admission {
            limits,
            slots: HashMap::new(),
            in_use: vec![0; pools],
            waiters: HashMap::new(),
            line: BTreeMap::new(),
            next_ticket: 0,
            last_sweep: Timestamp(i64::MIN),
        }
    }

    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    /// May `mac`, a client at `ip`, start fetching its kernel now? A node
    /// that holds a slot keeps it (its deadline starts again: it is booting
    /// again); one that gets a slot leaves the line.
    pub fn admit(&mut self, mac: Mac, ip: Option<Ipv4Addr>, now: Timestamp) -> Verdict {
        self.sweep(now);
        let pool = self.limits.pool_of(ip);
        let limit = self.limits.limit(pool);
        let expires = Timestamp(
            now.millis()
                .saturating_add(self.limits.slot_timeout.as_millis() as i64),
        );
        if let Some(slot) = self.slots.get_mut(&mac) {
            if slot.pool == pool {
                slot.expires = expires;
                return Verdict::Go;
            }
            // It moved subnets: give back the old slot, ask in the new one.
            self.release(mac);
        }
        if limit == 0 {
            self.leave_line(mac);
            return Verdict::Go;
        }
        let booting = self.in_use[pool];
        let free = limit.saturating_sub(booting) as usize;
        let ahead = self.ahead_of(mac, pool, now, free);
        if ahead < free {
            self.leave_line(mac);
            self.slots.insert(mac, Slot { pool, expires });
            self.in_use[pool] += 1;
            return Verdict::Go;
        }
        let attempt = self.queue(mac, pool, now);
        let delay_secs = delay(mac, attempt);
        if let Some(w) = self.waiters.get_mut(&mac) {
            w.due = now.plus_secs(u64::from(delay_secs));
        }
        Verdict::Wait {
            attempt,
            delay_secs,
            booting,
            limit,
            ahead,
        }
    }

    /// Gives back the slot of `mac` (its last initrd went out, it reported
    /// in, it was deleted); whether it held one.
    pub fn release(&mut self, mac: Mac) -> bool {
        match self.slots.remove(&mac) {
            Some(slot) => {
                self.in_use[slot.pool] -= 1;
                true
            }
            None => false,
        }
    }

    /// Nodes of `pool` holding a slot.
    pub fn booting(&self, pool: usize) -> u32 {
        self.in_use.get(pool).copied().unwrap_or(0)
    }

    /// Nodes waiting in line (all pools).
    pub fn waiting(&self) -> usize {
        self.waiters.len()
    }

    /// How many live waiters of `pool` are ahead of `mac` in line, counted
    /// up to `enough` (the caller only needs to know whether it is fewer
    /// than the free slots). A newcomer is behind every live waiter.
    fn ahead_of(&self, mac: Mac, pool: usize, now: Timestamp, enough: usize) -> usize {
        if enough == 0 {
            return 0;
        }
        let mine = self
            .waiters
            .get(&mac)
            .filter(|w| w.pool == pool)
            .map_or(u64::MAX, |w| w.ticket);
        self.line
            .range((pool, 0)..(pool, mine))
            .filter(|(_, m)| {
                self.waiters
                    .get(m)
                    .is_some_and(|w| now.millis() <= w.due.millis() + GRACE * 1000)
            })
            .take(enough)
            .count()
    }

    /// Puts `mac` in line (or keeps its place); returns its attempt number.
    fn queue(&mut self, mac: Mac, pool: usize, now: Timestamp) -> u32 {
        if let Some(w) = self.waiters.get_mut(&mac) {
            if w.pool == pool {
                w.attempt = w.attempt.saturating_add(1);
                w.last_seen = now;
                return w.attempt;
            }
            self.leave_line(mac);
        }
        if self.waiters.len() >= MAX_WAITERS {
            return 1;
        }
        let ticket = self.next_ticket;
        self.next_ticket += 1;
        self.waiters.insert(
            mac,
            Waiter {
                pool,
                ticket,
                attempt: 1,
                due: now,
                last_seen: now,
            },
        );
        self.line.insert((pool, ticket), mac);
        1
    }

    fn leave_line(&mut self, mac: Mac) {
        if let Some(w) = self.waiters.remove(&mac) {
            self.line.remove(&(w.pool, w.ticket));
        }
    }

    /// Drops slots past their deadline and waiters long gone.
    fn sweep(&mut self, now: Timestamp) {
        if now.millis() < self.last_sweep.millis().saturating_add(SWEEP_EVERY_MS) {
            return;
        }
        self.last_sweep = now;
        let expired: Vec<Mac> = self
            .slots
            .iter()
            .filter(|(_, s)| s.expires.millis() <= now.millis())
            .map(|(m, _)| *m)
            .collect();
        for mac in expired {
            self.release(mac);
        }
        let gone: Vec<Mac> = self
            .waiters
            .iter()
            .filter(|(_, w)| now.millis() - w.last_seen.millis() > WAITER_TTL_MS)
            .map(|(m, _)| *m)
            .collect();
        for mac in gone {
            self.leave_line(mac);
        }
    }
}

/// Seconds to sleep after the `attempt`-th refusal in a row: doubling from
/// [`FIRST_DELAY`] to [`MAX_DELAY`], plus up to half again, fixed by MAC and
/// attempt (nodes refused together do not all come back in the same second,
/// and a test can predict the figure).
pub fn delay(mac: Mac, attempt: u32) -> u32 {
    let base = FIRST_DELAY
        .saturating_mul(1u32 << attempt.saturating_sub(1).min(8))
        .min(MAX_DELAY);
    // FNV-1a over the MAC and the attempt: cheap and well spread.
    let mut h: u32 = 0x811c_9dc5;
    for b in mac.octets().into_iter().chain(attempt.to_le_bytes()) {
        h ^= u32::from(b);
        h = h.wrapping_mul(0x0100_0193);
    }
    base + h % (base / 2 + 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mac(i: u8) -> Mac {
        Mac::new([0x52, 0x54, 0, 0, 0, i])
    }

    fn net() -> Ipv4Net {
        "10.0.0.0/24".parse().unwrap()
    }

    fn ip(i: u8) -> Option<Ipv4Addr> {
        Some(Ipv4Addr::new(10, 0, 0, i))
    }

    fn limited(n: u32) -> Admission {
        Admission::new(Limits {
            subnets: vec![(net(), n)],
            other: 0,
            slot_timeout: Duration::from_secs(60),
        })
    }

    fn secs(s: i64) -> Timestamp {
        Timestamp(1_000_000 + s * 1000)
    }

    /// Node `i` of the subnet asks to boot at second `at`.
    fn asks(a: &mut Admission, i: u8, at: i64) -> Verdict {
        a.admit(mac(i), ip(i), secs(at))
    }

    #[test]
    fn no_limit_admits_everyone_and_holds_no_slot() {
        let mut a = Admission::new(Limits::none());
        for i in 0..100 {
            assert_eq!(asks(&mut a, i, 0), Verdict::Go);
        }
        assert_eq!(a.booting(0), 0);
    }

    #[test]
    fn over_the_limit_waits_until_a_slot_is_released() {
        let mut a = limited(2);
        assert_eq!(asks(&mut a, 1, 0), Verdict::Go);
        assert_eq!(asks(&mut a, 2, 0), Verdict::Go);
        let Verdict::Wait {
            attempt,
            booting,
            limit,
            ahead,
            ..
        } = asks(&mut a, 3, 0)
        else {
            panic!("the third node must wait");
        };
        assert_eq!((attempt, booting, limit, ahead), (1, 2, 2, 0));
        // Asking again while holding a slot keeps it; still full.
        assert_eq!(asks(&mut a, 1, 1), Verdict::Go);
        assert!(matches!(
            asks(&mut a, 3, 1),
            Verdict::Wait { attempt: 2, .. }
        ));
        assert!(a.release(mac(1)));
        assert!(!a.release(mac(1)), "released once");
        assert_eq!(asks(&mut a, 3, 2), Verdict::Go);
        assert_eq!(a.booting(0), 2);
    }

    #[test]
    fn a_freed_slot_goes_to_the_first_in_line_not_a_newcomer() {
        let mut a = limited(1);
        assert_eq!(asks(&mut a, 1, 0), Verdict::Go);
        assert!(matches!(asks(&mut a, 2, 0), Verdict::Wait { ahead: 0, .. }));
        assert!(matches!(asks(&mut a, 3, 0), Verdict::Wait { ahead: 0, .. }));
        a.release(mac(1));
        // mac 3 asks first, but mac 2 was refused first and is due back.
        assert!(matches!(asks(&mut a, 3, 1), Verdict::Wait { ahead: 1, .. }));
        assert_eq!(asks(&mut a, 2, 1), Verdict::Go);
        // A waiter that does not come back in time loses its place.
        a.release(mac(2));
        assert!(matches!(asks(&mut a, 4, 2), Verdict::Wait { .. }));
        let late = secs(2 + i64::from(MAX_DELAY) * 2 + GRACE + 1);
        assert_eq!(a.admit(mac(4), ip(4), late), Verdict::Go);
    }

    #[test]
    fn a_slot_not_released_expires() {
        let mut a = limited(1);
        assert_eq!(asks(&mut a, 1, 0), Verdict::Go);
        assert!(matches!(asks(&mut a, 2, 30), Verdict::Wait { .. }));
        assert_eq!(asks(&mut a, 2, 61), Verdict::Go);
        assert_eq!(a.booting(0), 1);
    }

    #[test]
    fn subnets_have_their_own_limits() {
        let other: Ipv4Net = "10.1.0.0/24".parse().unwrap();
        let mut a = Admission::new(Limits {
            subnets: vec![(net(), 1), (other, 0)],
            other: 1,
            slot_timeout: Duration::from_secs(60),
        });
        assert_eq!(asks(&mut a, 1, 0), Verdict::Go);
        assert!(matches!(asks(&mut a, 2, 0), Verdict::Wait { .. }));
        // Unlimited subnet.
        for i in 10..20 {
            assert_eq!(
                a.admit(mac(i), Some(Ipv4Addr::new(10, 1, 0, i)), secs(0)),
                Verdict::Go
            );
        }
        // Outside every subnet: the `other` pool, limit 1.
        let far = Some(Ipv4Addr::new(192, 168, 0, 1));
        assert_eq!(a.admit(mac(30), far, secs(0)), Verdict::Go);
        assert!(matches!(
            a.admit(mac(31), None, secs(0)),
            Verdict::Wait { .. }
        ));
        assert_eq!(a.limits().pool_name(0), "10.0.0.0/24");
        assert_eq!(a.limits().pool_name(2), "other");
    }

    #[test]
    fn delays_back_off_with_jitter_and_a_cap() {
        for i in 0..50 {
            let d: Vec<u32> = (1..=8).map(|n| delay(mac(i), n)).collect();
            assert_eq!(d[0], 1, "{d:?}");
            assert!((2..=3).contains(&d[1]), "{d:?}");
            assert!((4..=6).contains(&d[2]), "{d:?}");
            assert!(d[5..].iter().all(|&x| (10..=15).contains(&x)), "{d:?}");
            assert_eq!(delay(mac(i), 3), d[2], "fixed by MAC and attempt");
        }
        let spread: std::collections::HashSet<u32> = (0..50).map(|i| delay(mac(i), 6)).collect();
        assert!(spread.len() > 3, "jitter spreads nodes out: {spread:?}");
    }
}
