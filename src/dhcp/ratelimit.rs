//! Per-MAC and per-relay rate limits, so one broken or hostile client (a NIC
//! stuck in a DISCOVER loop, a flood of made-up MACs behind one relay) can
//! neither exhaust a pool nor starve everyone else. Pure: the caller passes
//! the time; no I/O.

use std::collections::HashMap;
use std::hash::Hash;
use std::net::Ipv4Addr;
use std::time::Duration;

use crate::model::Mac;

/// A token bucket: `rate` packets per second on average, bursts up to `burst`.
#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    /// When the bucket was last refilled, as a duration since an arbitrary origin.
    at: Duration,
}

/// Buckets keyed by `K`, at most `capacity` of them: when full, buckets that
/// are full again (idle clients) are dropped, so memory stays bounded even
/// under a flood of distinct keys.
#[derive(Debug)]
struct Buckets<K> {
    rate: f64,
    burst: f64,
    capacity: usize,
    map: HashMap<K, Bucket>,
}

impl<K: Eq + Hash + Copy> Buckets<K> {
    fn new(rate: u32, burst: u32, capacity: usize) -> Self {
        Buckets {
            rate: f64::from(rate),
            burst: f64::from(burst.max(1)),
            capacity,
            map: HashMap::new(),
        }
    }

    fn allow(&mut self, key: K, now: Duration) -> bool {
        if self.rate <= 0.0 {
            return true; // 0 = no limit
        }
        if self.map.len() >= self.capacity && !self.map.contains_key(&key) {
            let (rate, burst) = (self.rate, self.burst);
            self.map
                .retain(|_, b| b.tokens + (now.saturating_sub(b.at)).as_secs_f64() * rate < burst);
            if self.map.len() >= self.capacity {
                // Every tracked key is busy: a flood of distinct keys. New
                // keys wait until some bucket refills.
                return false;
            }
        }
        let b = self.map.entry(key).or_insert(Bucket {
            tokens: self.burst,
            at: now,
        });
        b.tokens = (b.tokens + now.saturating_sub(b.at).as_secs_f64() * self.rate).min(self.burst);
        b.at = now;
        if b.tokens >= 1.0 {
            b.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

/// Why a packet was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Limited {
    Mac,
    Relay,
}

/// The limits of one DHCP service.
#[derive(Debug)]
pub struct RateLimits {
    per_mac: Buckets<Mac>,
    per_relay: Buckets<Ipv4Addr>,
}

/// Distinct MACs tracked at once (a few MB at most).
const MAC_BUCKETS: usize = 100_000;
const RELAY_BUCKETS: usize = 4096;

impl RateLimits {
    /// `per_mac` and `per_relay` in packets per second (0 = unlimited);
    /// bursts of twice the rate pass, so a client's retransmissions and a
    /// rack powering on at once are not cut.
    pub fn new(per_mac: u32, per_relay: u32) -> RateLimits {
        RateLimits {
            per_mac: Buckets::new(per_mac, per_mac.saturating_mul(2), MAC_BUCKETS),
            per_relay: Buckets::new(per_relay, per_relay.saturating_mul(2), RELAY_BUCKETS),
        }
    }

    /// Whether a packet from `mac` (through `relay`, if relayed) may be served now.
    pub fn check(
        &mut self,
        mac: Mac,
        relay: Option<Ipv4Addr>,
        now: Duration,
    ) -> Result<(), Limited> {
        if let Some(r) = relay
            && !self.per_relay.allow(r, now)
        {
            return Err(Limited::Relay);
        }
        if !self.per_mac.allow(mac, now) {
            return Err(Limited::Mac);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dhcp::test_client_mac as mac;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn a_chatty_mac_is_cut_to_its_rate_and_others_are_not() {
        let mut rl = RateLimits::new(5, 0);
        let allowed = (0..100)
            .filter(|_| rl.check(mac(1), None, ms(0)).is_ok())
            .count();
        assert_eq!(allowed, 10, "burst of twice the rate");
        assert_eq!(rl.check(mac(1), None, ms(100)), Err(Limited::Mac));
        assert!(rl.check(mac(1), None, ms(300)).is_ok(), "refills at 5/s");
        assert!(
            rl.check(mac(2), None, ms(0)).is_ok(),
            "another MAC is unaffected"
        );
    }

    #[test]
    fn a_flooding_relay_is_cut_but_its_rate_passes() {
        let mut rl = RateLimits::new(0, 1000);
        let mut passed = 0;
        // 10 000 distinct MACs in one second through one relay.
        for i in 0..10_000u32 {
            if rl
                .check(
                    mac(i),
                    Some(Ipv4Addr::new(10, 0, 0, 1)),
                    ms(u64::from(i) / 10),
                )
                .is_ok()
            {
                passed += 1;
            }
        }
        assert!((2000..=3100).contains(&passed), "{passed}");
        assert!(
            rl.check(mac(1), Some(Ipv4Addr::new(10, 0, 1, 1)), ms(999))
                .is_ok(),
            "other relays pass"
        );
    }

    #[test]
    fn zero_means_unlimited() {
        let mut rl = RateLimits::new(0, 0);
        assert!((0..10_000).all(|i| {
            rl.check(mac(1), Some(Ipv4Addr::new(10, 0, 0, 1)), ms(i))
                .is_ok()
        }));
    }

    #[test]
    fn memory_stays_bounded_under_a_flood_of_macs() {
        let mut b: Buckets<u32> = Buckets::new(1, 2, 100);
        for i in 0..10_000 {
            b.allow(i, ms(0));
        }
        assert!(b.map.len() <= 100);
        // Once the tracked buckets have refilled, new keys are admitted again.
        assert!(b.allow(99_999, Duration::from_secs(10)));
    }
}
