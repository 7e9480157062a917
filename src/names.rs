//! The name table: which node hostname has which IPv4 address right now, for DNS.
//!
//! What it owns:
//! - hostname → address and address → hostname, answered from memory without touching the
//!   store, so a DNS question costs two hash lookups under an uncontended read lock;
//! - the SOA serial of rackboot's zones, which increases whenever a name or an address changes.
//!
//! What it does not own: the records themselves. It learns of every node record and lease the
//! store puts in or takes out from the store's change feed ([`crate::store::feed`]), which
//! delivers each change while the store still holds it, so the table is always in step with the
//! store (nothing that could lag, no resync). DNS only reads.
//!
//! An address is a node's fixed address, else its bound lease while the lease lives. A lease
//! that expires without a write (the client went away) stops answering at its expiry time, but
//! does not bump the serial: nothing was written, and the 60 s TTLs bound what caches keep.

use std::collections::HashMap;
use std::net::Ipv4Addr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError, RwLock};

use crate::model::{Lease, LeaseState, Mac, Timestamp};
use crate::store::packed::host_hash;
use crate::store::{Change, Subscriber};

/// Names and addresses of nodes, kept current by the store, read by DNS.
pub struct NameTable {
    inner: RwLock<Inner>,
    /// Changes to what a lookup can answer since the table was made.
    changes: AtomicU64,
    serial: Mutex<Serial>,
}

#[derive(Default)]
struct Inner {
    nodes: HashMap<Mac, NodeName>,
    /// Hostname → MAC, by the hash of the lowercase name: it holds MACs
    /// only, the names being those of `nodes` (a fleet's worth of names is
    /// not kept twice).
    by_host: hashbrown::HashTable<Mac>,
    hasher: hashbrown::DefaultHashBuilder,
    /// Fixed address → MAC.
    by_fixed: HashMap<Ipv4Addr, Mac>,
    /// Bound leases: address → (holder, expiry).
    leases: HashMap<Ipv4Addr, (Mac, Timestamp)>,
    /// Holder → its bound lease's address.
    lease_of: HashMap<Mac, Ipv4Addr>,
}

#[derive(Clone, PartialEq, Eq)]
struct NodeName {
    /// Lowercase: DNS names compare case-insensitively, and PTR answers are given lowercase.
    hostname: Arc<str>,
    fixed: Option<Ipv4Addr>,
}

/// The serial handed out last, and the change count it covers.
struct Serial {
    published: u32,
    covers: u64,
}

impl Default for NameTable {
    fn default() -> Self {
        Self::new()
    }
}

impl NameTable {
    /// An empty table whose serial starts at the current Unix time, so a restarted rackboot
    /// hands out a larger serial than the one before it (see [`NameTable::serial`]).
    pub fn new() -> Self {
        Self {
            inner: RwLock::default(),
            changes: AtomicU64::new(0),
            serial: Mutex::new(Serial {
                published: unix_seconds(Timestamp::now()),
                covers: 0,
            }),
        }
    }

    /// The address of the node called `hostname` (case-insensitive) at `now`: its fixed address,
    /// else its live bound lease.
    pub fn host_addr(&self, hostname: &str, now: Timestamp) -> Option<Ipv4Addr> {
        let inner = self.read();
        let mac = &inner.lookup_host(hostname)?;
        if let Some(ip) = inner.nodes.get(mac).and_then(|n| n.fixed) {
            return Some(ip);
        }
        let ip = inner.lease_of.get(mac)?;
        inner
            .leases
            .get(ip)
            .filter(|(_, expires)| *expires > now)
            .map(|_| *ip)
    }

    /// Whether a node is called `hostname`, whatever its address.
    pub fn has_host(&self, hostname: &str) -> bool {
        self.read().lookup_host(hostname).is_some()
    }

    /// The hostname (lowercase) of the node holding `ip` at `now`: by fixed address, else by a
    /// live bound lease.
    pub fn addr_host(&self, ip: Ipv4Addr, now: Timestamp) -> Option<Arc<str>> {
        let inner = self.read();
        let mac = inner.by_fixed.get(&ip).or_else(|| {
            inner
                .leases
                .get(&ip)
                .filter(|(_, expires)| *expires > now)
                .map(|(mac, _)| mac)
        })?;
        inner.nodes.get(mac).map(|n| Arc::clone(&n.hostname))
    }

    /// The SOA serial: larger than every serial handed out before whenever a name or an address
    /// changed since, else the same.
    ///
    /// It is the Unix time of the first question after a change, or one more than the last
    /// serial when that is larger (two changes within one second). So it only runs ahead of the
    /// clock while SOAs are read more than once a second across changes, and a restart (which
    /// starts from the clock again) does not hand out a smaller serial than before unless it ran
    /// that far ahead; RFC 1982 arithmetic makes the wrap in 2106 harmless.
    pub fn serial(&self) -> u32 {
        let changes = self.changes.load(Ordering::Acquire);
        let mut serial = self.serial.lock().unwrap_or_else(PoisonError::into_inner);
        if changes != serial.covers {
            serial.published = serial
                .published
                .wrapping_add(1)
                .max(unix_seconds(Timestamp::now()));
            serial.covers = changes;
        }
        serial.published
    }

    /// The changes so far are the state the table starts with (the store's contents at open):
    /// they belong to the first serial rather than bumping it.
    pub fn loaded(&self) {
        let changes = self.changes.load(Ordering::Acquire);
        self.serial
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .covers = changes;
    }

    /// The node `mac` is called `hostname` and has fixed address `fixed` (if any). Called by the
    /// store for every record it puts in; an unchanged name and address change nothing.
    pub fn set_node(&self, mac: Mac, hostname: &str, fixed: Option<Ipv4Addr>) {
        let mut inner = self.write();
        if inner
            .nodes
            .get(&mac)
            .is_some_and(|n| n.fixed == fixed && n.hostname.eq_ignore_ascii_case(hostname))
        {
            return;
        }
        inner.remove_node(mac);
        let hostname: Arc<str> = hostname.to_ascii_lowercase().into();
        if let Some(ip) = fixed {
            inner.by_fixed.insert(ip, mac);
        }
        let hash = inner.hash(&hostname);
        inner.nodes.insert(mac, NodeName { hostname, fixed });
        let Inner {
            nodes,
            by_host,
            hasher,
            ..
        } = &mut *inner;
        let rehash = |m: &Mac| nodes.get(m).map_or(0, |n| host_hash(hasher, &n.hostname));
        by_host.insert_unique(hash, mac, rehash);
        self.changed();
    }

    /// The record of `mac` is gone. Its lease, if any, stays (as in the store) but no longer
    /// names anything.
    pub fn remove_node(&self, mac: Mac) {
        if self.write().remove_node(mac) {
            self.changed();
        }
    }

    /// The store put `lease` in, replacing whatever lease `lease.ip` had. Only a bound lease
    /// names its holder; an offer or a declined address takes the name off the address.
    pub fn set_lease(&self, lease: &Lease) {
        let (LeaseState::Bound, Some(mac)) = (lease.state, lease.mac) else {
            self.drop_lease(lease.ip);
            return;
        };
        let mut inner = self.write();
        // A renewal moves the expiry only: what a lookup answers is the same.
        let same_holder = inner.leases.get(&lease.ip).map(|(m, _)| *m) == Some(mac)
            && inner.lease_of.get(&mac) == Some(&lease.ip);
        if !same_holder {
            inner.drop_lease(lease.ip);
            if let Some(old) = inner.lease_of.get(&mac).copied() {
                inner.drop_lease(old);
            }
            inner.lease_of.insert(mac, lease.ip);
        }
        inner.leases.insert(lease.ip, (mac, lease.expires));
        drop(inner);
        if !same_holder {
            self.changed();
        }
    }

    /// The store took the lease of `ip` out (released, or replaced by another MAC's).
    pub fn drop_lease(&self, ip: Ipv4Addr) {
        if self.write().drop_lease(ip) {
            self.changed();
        }
    }

    fn changed(&self) {
        self.changes.fetch_add(1, Ordering::Release);
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, Inner> {
        // Every write leaves the maps consistent before it can panic; keep answering.
        self.inner.read().unwrap_or_else(PoisonError::into_inner)
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, Inner> {
        self.inner.write().unwrap_or_else(PoisonError::into_inner)
    }
}

impl Inner {
    fn hash(&self, hostname: &str) -> u64 {
        host_hash(&self.hasher, hostname)
    }

    /// The MAC of the node called `hostname`, ASCII case aside.
    fn lookup_host(&self, hostname: &str) -> Option<Mac> {
        let named = |m: &Mac| {
            self.nodes
                .get(m)
                .is_some_and(|n| n.hostname.eq_ignore_ascii_case(hostname))
        };
        self.by_host.find(self.hash(hostname), named).copied()
    }

    fn remove_node(&mut self, mac: Mac) -> bool {
        let Some(old) = self.nodes.get(&mac) else {
            return false;
        };
        let hash = self.hash(&old.hostname);
        if let Ok(entry) = self.by_host.find_entry(hash, |m| *m == mac) {
            entry.remove();
        }
        let Some(old) = self.nodes.remove(&mac) else {
            return false;
        };
        if let Some(ip) = old.fixed
            && self.by_fixed.get(&ip) == Some(&mac)
        {
            self.by_fixed.remove(&ip);
        }
        crate::store::sparse::shrink(&mut self.nodes);
        let (nodes, hasher) = (&self.nodes, &self.hasher);
        crate::store::sparse::shrink_table(&mut self.by_host, |m| {
            nodes.get(m).map_or(0, |n| host_hash(hasher, &n.hostname))
        });
        true
    }

    fn drop_lease(&mut self, ip: Ipv4Addr) -> bool {
        let Some((mac, _)) = self.leases.remove(&ip) else {
            return false;
        };
        if self.lease_of.get(&mac) == Some(&ip) {
            self.lease_of.remove(&mac);
        }
        crate::store::sparse::shrink(&mut self.leases);
        crate::store::sparse::shrink(&mut self.lease_of);
        true
    }
}

fn unix_seconds(t: Timestamp) -> u32 {
    u32::try_from(t.millis().div_euclid(1000)).unwrap_or(u32::MAX)
}

/// The table follows the store: names and fixed addresses from node records, addresses from
/// bound leases; the snapshot a new subscriber is given is the first serial's.
impl Subscriber for NameTable {
    fn changed(&self, change: &Change<'_>) {
        match *change {
            Change::Node(n) => self.set_node(n.mac, &n.hostname, n.ipv4),
            Change::NodeGone(mac) => self.remove_node(mac),
            Change::Lease(l) => self.set_lease(l),
            Change::LeaseGone(ip) => self.drop_lease(ip),
            Change::Loaded => self.loaded(),
            Change::ConfigBumped(_) | Change::Event(..) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mac(n: u8) -> Mac {
        Mac::new([0x52, 0x54, 0, 0, 0, n])
    }

    fn ip(n: u8) -> Ipv4Addr {
        Ipv4Addr::new(10, 0, 0, n)
    }

    fn lease(n: u8, m: u8, state: LeaseState, expires: i64) -> Lease {
        Lease {
            ip: ip(n),
            mac: Some(mac(m)),
            state,
            expires: Timestamp(expires),
        }
    }

    const NOW: Timestamp = Timestamp(1_000);

    #[test]
    fn fixed_addresses_win_over_leases() {
        let t = NameTable::new();
        t.set_node(mac(1), "Node1", Some(ip(10)));
        t.set_lease(&lease(20, 1, LeaseState::Bound, 5_000));
        assert_eq!(t.host_addr("node1", NOW), Some(ip(10)));
        assert_eq!(t.host_addr("NODE1", NOW), Some(ip(10)));
        assert_eq!(t.addr_host(ip(10), NOW).as_deref(), Some("node1"));
        // The lease names its holder too.
        assert_eq!(t.addr_host(ip(20), NOW).as_deref(), Some("node1"));
        assert!(t.has_host("node1"));
        assert!(!t.has_host("node2"));
    }

    #[test]
    fn leases_name_while_bound_and_live() {
        let t = NameTable::new();
        t.set_node(mac(2), "node2", None);
        assert_eq!(t.host_addr("node2", NOW), None);
        t.set_lease(&lease(30, 2, LeaseState::Offered, 5_000));
        assert_eq!(t.host_addr("node2", NOW), None, "an offer names nothing");
        t.set_lease(&lease(30, 2, LeaseState::Bound, 5_000));
        assert_eq!(t.host_addr("node2", NOW), Some(ip(30)));
        assert_eq!(t.addr_host(ip(30), NOW).as_deref(), Some("node2"));
        // Expired: no longer answered, though nothing was written.
        assert_eq!(t.host_addr("node2", Timestamp(5_000)), None);
        assert_eq!(t.addr_host(ip(30), Timestamp(5_000)), None);
        // Moving to another address drops the old one.
        t.set_lease(&lease(31, 2, LeaseState::Bound, 5_000));
        assert_eq!(t.host_addr("node2", NOW), Some(ip(31)));
        assert_eq!(t.addr_host(ip(30), NOW), None);
        // Another MAC taking the address takes the name off it.
        t.set_lease(&lease(31, 3, LeaseState::Bound, 5_000));
        assert_eq!(t.host_addr("node2", NOW), None);
        assert_eq!(t.addr_host(ip(31), NOW), None, "mac 3 has no record");
        t.drop_lease(ip(31));
        t.set_lease(&lease(31, 2, LeaseState::Bound, 5_000));
        assert_eq!(t.host_addr("node2", NOW), Some(ip(31)));
        t.drop_lease(ip(31));
        assert_eq!(t.host_addr("node2", NOW), None);
    }

    #[test]
    fn renames_and_removals() {
        let t = NameTable::new();
        t.set_node(mac(1), "old", Some(ip(10)));
        t.set_node(mac(1), "new", Some(ip(11)));
        assert_eq!(t.host_addr("old", NOW), None);
        assert_eq!(t.host_addr("new", NOW), Some(ip(11)));
        assert_eq!(t.addr_host(ip(10), NOW), None);
        // A hostname handed from one record to another in one import: the new owner keeps it
        // whatever order the store reports the two records in.
        t.set_node(mac(2), "new", None);
        t.remove_node(mac(1));
        assert!(t.has_host("new"));
        assert_eq!(t.host_addr("new", NOW), None, "mac 2 has no address");
        t.remove_node(mac(2));
        assert!(!t.has_host("new"));
    }

    #[test]
    fn serial_moves_only_on_changes() {
        let t = NameTable::new();
        t.set_node(mac(1), "node1", None);
        t.loaded();
        let first = t.serial();
        assert!(first >= unix_seconds(Timestamp::now()) - 1);
        assert_eq!(t.serial(), first, "nothing changed");
        // Same name and address, other case: not a change.
        t.set_node(mac(1), "NODE1", None);
        assert_eq!(t.serial(), first);
        t.set_lease(&lease(40, 1, LeaseState::Bound, 5_000));
        let second = t.serial();
        assert!(second > first);
        // A renewal only moves the expiry.
        t.set_lease(&lease(40, 1, LeaseState::Bound, 9_000));
        assert_eq!(t.serial(), second);
        t.set_node(mac(1), "node1", Some(ip(9)));
        let third = t.serial();
        assert!(third > second);
        t.remove_node(mac(7));
        t.drop_lease(ip(99));
        assert_eq!(
            t.serial(),
            third,
            "removing what is not there changes nothing"
        );
        t.remove_node(mac(1));
        assert!(t.serial() > third);
    }
}
