//! What an engine serves reads from: every node record and lease, loaded at
//! open and kept in step with every write (under one lock), with the indexes
//! that keep hostnames and fixed addresses unique, and the feed
//! ([`crate::store::feed`]) every change goes out on. The SQLite engine keeps
//! it in step with its file; the PostgreSQL engine with the database's
//! announcements.

use std::collections::{BTreeMap, HashMap};
use std::net::Ipv4Addr;

use std::sync::Arc;

use crate::boot::address::AddressAsk;
use crate::model::{BootArch, Lease, LeaseState, Mac, Node, Timestamp};
use crate::store::feed::{Change, Feed, Subscriber};
use crate::store::packed::{NodeMap, Peek};
use crate::store::{LeaseRequest, NodeQuery, StoreError};

/// How stale the stored last-seen time of a node may get before a touch
/// writes it: every DHCP packet touches its node, and each write would be a
/// commit (and, on PostgreSQL, an announcement to every appliance).
const LAST_SEEN_GRAIN_MS: i64 = 60_000;

/// Everything reads need, kept in step with the database.
#[derive(Default)]
pub struct Mirror {
    pub(crate) nodes: NodeMap,
    /// Fixed address → MAC.
    pub(crate) by_fixed_ip: HashMap<Ipv4Addr, Mac>,
    pub(crate) leases: BTreeMap<u32, Lease>,
    pub(crate) lease_of: HashMap<Mac, u32>,
    /// Where the next free-address search in a range starts.
    pub(crate) cursors: HashMap<(u32, u32), u32>,
    /// Timeline rows written per MAC since the last trim of its timeline
    /// (on SQLite one per event; on PostgreSQL a row may hold several).
    pub(crate) events_since_trim: HashMap<Mac, i64>,
    /// When each node's last-seen time was last written to the file.
    pub(crate) seen_saved: HashMap<Mac, Timestamp>,
    /// Told of every record and lease put in or taken out here, under this cache's lock, so
    /// no subscriber disagrees with the store.
    pub(crate) feed: Arc<Feed>,
}

impl Mirror {
    pub(crate) fn put_node(&mut self, node: Node) {
        // The old address is dropped only while it is still this MAC's:
        // records that swap addresses arrive one at a time. (The hostname
        // index is the records' own.)
        if let Some(Some(ip)) = self.nodes.ipv4(&node.mac)
            && self.by_fixed_ip.get(&ip) == Some(&node.mac)
        {
            self.by_fixed_ip.remove(&ip);
        }
        if let Some(ip) = node.ipv4 {
            self.by_fixed_ip.insert(ip, node.mac);
        }
        self.feed.emit(&Change::Node(&node));
        self.nodes.insert(&node);
    }

    pub(crate) fn remove_node(&mut self, mac: Mac) -> Option<Node> {
        let old = self.nodes.remove(&mac)?;
        if let Some(ip) = old.ipv4
            && self.by_fixed_ip.get(&ip) == Some(&mac)
        {
            self.by_fixed_ip.remove(&ip);
        }
        self.events_since_trim.remove(&mac);
        self.seen_saved.remove(&mac);
        super::sparse::shrink(&mut self.events_since_trim);
        super::sparse::shrink(&mut self.seen_saved);
        super::sparse::shrink(&mut self.by_fixed_ip);
        self.feed.emit(&Change::NodeGone(mac));
        Some(old)
    }

    /// Why `node` cannot be stored beside the records of every MAC not in
    /// `replaced`: its hostname or fixed address belongs to one of them.
    pub(crate) fn clash(&self, node: &Node, replaced: &dyn Fn(Mac) -> bool) -> Option<String> {
        if let Some(other) = self.nodes.by_hostname(&node.hostname)
            && other != node.mac
            && !replaced(other)
        {
            return Some(format!(
                "hostname {} already belongs to {other}",
                node.hostname
            ));
        }
        let ip = node.ipv4?;
        let other = self.by_fixed_ip.get(&ip)?;
        (*other != node.mac && !replaced(*other))
            .then(|| format!("address {ip} already belongs to {other}"))
    }

    /// Checks that `nodes` can replace (by MAC) or join the records in
    /// force, hostnames and fixed addresses unique, and puts them in.
    pub(crate) fn check_and_put(&mut self, nodes: &[Node]) -> Result<(), StoreError> {
        let mut hostnames: HashMap<String, Mac> = HashMap::new();
        let mut addrs: HashMap<Ipv4Addr, Mac> = HashMap::new();
        let macs: std::collections::HashSet<Mac> = nodes.iter().map(|n| n.mac).collect();
        if macs.len() != nodes.len() {
            let mut seen = std::collections::HashSet::new();
            let dup = nodes.iter().find(|n| !seen.insert(n.mac)).map(|n| n.mac);
            return Err(StoreError::Conflict(format!(
                "MAC {} appears more than once",
                dup.map(|m| m.to_string()).unwrap_or_default()
            )));
        }
        for n in nodes {
            if let Some(other) = hostnames.insert(n.hostname.to_ascii_lowercase(), n.mac) {
                return Err(StoreError::Conflict(format!(
                    "hostname {} is given to both {other} and {}",
                    n.hostname, n.mac
                )));
            }
            if let Some(ip) = n.ipv4
                && let Some(other) = addrs.insert(ip, n.mac)
            {
                return Err(StoreError::Conflict(format!(
                    "address {ip} is given to both {other} and {}",
                    n.mac
                )));
            }
            // Records being replaced in this same write give up their
            // names and addresses to it.
            if let Some(why) = self.clash(n, &|m| macs.contains(&m)) {
                return Err(StoreError::Conflict(format!("{}: {why}", n.mac)));
            }
        }
        for n in nodes {
            self.remove_node(n.mac);
        }
        for n in nodes {
            self.put_node(n.clone());
        }
        Ok(())
    }

    pub(crate) fn put_lease(&mut self, lease: Lease) {
        let ip = u32::from(lease.ip);
        if let Some(old) = self.leases.get(&ip)
            && let Some(m) = old.mac
            && self.lease_of.get(&m) == Some(&ip)
        {
            self.lease_of.remove(&m);
        }
        if let Some(m) = lease.mac {
            self.lease_of.insert(m, ip);
        }
        self.feed.emit(&Change::Lease(&lease));
        self.leases.insert(ip, lease);
    }

    pub(crate) fn drop_lease(&mut self, ip: u32) -> Option<Lease> {
        let old = self.leases.remove(&ip)?;
        if let Some(m) = old.mac
            && self.lease_of.get(&m) == Some(&ip)
        {
            self.lease_of.remove(&m);
            super::sparse::shrink(&mut self.lease_of);
        }
        self.feed.emit(&Change::LeaseGone(old.ip));
        Some(old)
    }

    /// Whether `ip` is held right now by anyone but `mac`: a live lease of
    /// another MAC (or a declined address), or another node's fixed address.
    pub(crate) fn taken_by_other(&self, ip: Ipv4Addr, mac: Mac, now: Timestamp) -> bool {
        let leased = self
            .leases
            .get(&u32::from(ip))
            .is_some_and(|l| l.is_live(now) && l.mac != Some(mac));
        let fixed = self.by_fixed_ip.get(&ip).is_some_and(|m| *m != mac);
        leased || fixed
    }

    /// The lease `mac` holds, if any.
    /// Notes that `mac` was seen at `now` (announcing `arch`, if it did),
    /// and gives its record when the stored copy should be written: its
    /// architecture changed, or its stored last-seen time is older than
    /// [`LAST_SEEN_GRAIN_MS`]. Every packet touches its node; memory has
    /// the time exact, so most touches write nothing.
    pub(crate) fn touch(
        &mut self,
        mac: Mac,
        arch: Option<BootArch>,
        now: Timestamp,
    ) -> Result<Option<Node>, StoreError> {
        let arch_changed = self
            .nodes
            .seen(&mac, arch, now)
            .ok_or(StoreError::NoSuchNode(mac))?;
        let stale = self
            .seen_saved
            .get(&mac)
            .is_none_or(|saved| now.millis() - saved.millis() >= LAST_SEEN_GRAIN_MS);
        if !(stale || arch_changed) {
            return Ok(None);
        }
        self.seen_saved.insert(mac, now);
        Ok(self.nodes.get(&mac))
    }

    pub(crate) fn lease_of(&self, mac: Mac) -> Option<&Lease> {
        self.lease_of.get(&mac).and_then(|ip| self.leases.get(ip))
    }

    /// What address policy is asked for `req`: the request's wishes and
    /// the address its MAC holds now (unless declined).
    pub(crate) fn address_ask<'a>(&self, req: &'a LeaseRequest) -> AddressAsk<'a> {
        AddressAsk {
            fixed: req.fixed,
            wanted: req.wanted,
            exact: req.exact,
            current: self
                .lease_of(req.mac)
                .filter(|l| l.state != LeaseState::Declined)
                .map(|l| l.ip),
            ranges: &req.ranges,
        }
    }

    /// Copies of the records `any_of` selects (every record with `None`),
    /// by MAC: what both engines answer `nodes` and `nodes_where` with.
    pub(crate) fn nodes_where(&self, any_of: Option<&[NodeQuery]>) -> Vec<Node> {
        // Looked at in place first: only a record some query may select is
        // unpacked (a claim by UUID among 100k records unpacks one).
        let maybe = |p: &Peek<'_>| any_of.is_none_or(|qs| qs.iter().any(|q| q.may_match(p)));
        let mut some: Vec<Node> = self
            .nodes
            .values_where(maybe)
            .filter(|n| any_of.is_none_or(|q| NodeQuery::any_matches(q, n)))
            .collect();
        some.sort_by_key(|n| n.mac);
        some
    }

    /// Calls `f` with each lease from `first` to `last`, in address order.
    pub(crate) fn visit_leases(&self, first: Ipv4Addr, last: Ipv4Addr, f: &mut dyn FnMut(&Lease)) {
        let (first, last) = (u32::from(first), u32::from(last));
        if first <= last {
            self.leases.range(first..=last).for_each(|(_, l)| f(l));
        }
    }

    /// The address of the node called `hostname`: its fixed address, else
    /// its live bound lease.
    pub(crate) fn host_addr(&self, hostname: &str, now: Timestamp) -> Option<Ipv4Addr> {
        let mac = &self.nodes.by_hostname(hostname)?;
        if let Some(Some(ip)) = self.nodes.ipv4(mac) {
            return Some(ip);
        }
        self.lease_of(*mac)
            .filter(|l| l.state == LeaseState::Bound && l.is_live(now))
            .map(|l| l.ip)
    }

    /// The hostname of the node holding `ip` (fixed, or a live bound lease).
    pub(crate) fn addr_host(&self, ip: Ipv4Addr, now: Timestamp) -> Option<String> {
        let mac = self.by_fixed_ip.get(&ip).copied().or_else(|| {
            self.leases
                .get(&u32::from(ip))
                .filter(|l| l.state == LeaseState::Bound && l.is_live(now))
                .and_then(|l| l.mac)
        });
        mac.and_then(|m| self.nodes.hostname(&m))
            .map(str::to_string)
    }

    /// The MAC holding `ip`: a live lease, else a fixed address.
    pub(crate) fn mac_at(&self, ip: Ipv4Addr, now: Timestamp) -> Option<Mac> {
        self.leases
            .get(&u32::from(ip))
            .filter(|l| l.is_live(now))
            .and_then(|l| l.mac)
            .or_else(|| self.by_fixed_ip.get(&ip).copied())
    }

    /// Gives `subscriber` every record and lease, then [`Change::Loaded`],
    /// and adds it to the feed: under this mirror's lock, which every change
    /// is emitted under, so the snapshot and the feed meet with nothing
    /// between them.
    pub(crate) fn subscribe(&self, subscriber: Arc<dyn Subscriber>) {
        for n in self.nodes.values() {
            subscriber.changed(&Change::Node(&n));
        }
        for l in self.leases.values() {
            subscriber.changed(&Change::Lease(l));
        }
        subscriber.changed(&Change::Loaded);
        self.feed.add(subscriber);
    }
}
