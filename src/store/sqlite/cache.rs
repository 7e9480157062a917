//! What reads are served from: every node record and lease, loaded at open
//! and kept in step with every write (under one lock), with the indexes
//! that keep hostnames and fixed addresses unique, and the feed
//! ([`crate::store::feed`]) every change goes out on.

use std::collections::{BTreeMap, HashMap};
use std::net::Ipv4Addr;

use crate::model::{Lease, Mac, Node, Timestamp};
use crate::store::StoreError;
use crate::store::feed::{Change, Feed};

/// Everything reads need, kept in step with the database.
#[derive(Default)]
pub(super) struct Cache {
    pub(super) nodes: HashMap<Mac, Node>,
    /// Lowercase hostname → MAC.
    pub(super) by_hostname: HashMap<String, Mac>,
    /// Fixed address → MAC.
    pub(super) by_fixed_ip: HashMap<Ipv4Addr, Mac>,
    pub(super) leases: BTreeMap<u32, Lease>,
    pub(super) lease_of: HashMap<Mac, u32>,
    /// Where the next free-address search in a range starts.
    pub(super) cursors: HashMap<(u32, u32), u32>,
    /// Events written per MAC since the last trim of its timeline.
    pub(super) events_since_trim: HashMap<Mac, i64>,
    /// When each node's last-seen time was last written to the file.
    pub(super) seen_saved: HashMap<Mac, Timestamp>,
    /// Told of every record and lease put in or taken out here, under this cache's lock, so
    /// no subscriber disagrees with the store.
    pub(super) feed: Feed,
}

impl Cache {
    pub(super) fn put_node(&mut self, node: Node) {
        if let Some(old) = self.nodes.get(&node.mac) {
            self.by_hostname.remove(&old.hostname.to_ascii_lowercase());
            if let Some(ip) = old.ipv4 {
                self.by_fixed_ip.remove(&ip);
            }
        }
        self.by_hostname
            .insert(node.hostname.to_ascii_lowercase(), node.mac);
        if let Some(ip) = node.ipv4 {
            self.by_fixed_ip.insert(ip, node.mac);
        }
        self.feed.emit(&Change::Node(&node));
        self.nodes.insert(node.mac, node);
    }

    pub(super) fn remove_node(&mut self, mac: Mac) -> Option<Node> {
        let old = self.nodes.remove(&mac)?;
        if self.by_hostname.get(&old.hostname.to_ascii_lowercase()) == Some(&mac) {
            self.by_hostname.remove(&old.hostname.to_ascii_lowercase());
        }
        if let Some(ip) = old.ipv4
            && self.by_fixed_ip.get(&ip) == Some(&mac)
        {
            self.by_fixed_ip.remove(&ip);
        }
        self.events_since_trim.remove(&mac);
        self.seen_saved.remove(&mac);
        self.feed.emit(&Change::NodeGone(mac));
        Some(old)
    }

    /// Why `node` cannot be stored beside the records of every MAC not in
    /// `replaced`: its hostname or fixed address belongs to one of them.
    pub(super) fn clash(&self, node: &Node, replaced: &dyn Fn(Mac) -> bool) -> Option<String> {
        if let Some(other) = self.by_hostname.get(&node.hostname.to_ascii_lowercase())
            && *other != node.mac
            && !replaced(*other)
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
    pub(super) fn check_and_put(&mut self, nodes: &[Node]) -> Result<(), StoreError> {
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

    pub(super) fn put_lease(&mut self, lease: Lease) {
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

    pub(super) fn drop_lease(&mut self, ip: u32) -> Option<Lease> {
        let old = self.leases.remove(&ip)?;
        if let Some(m) = old.mac
            && self.lease_of.get(&m) == Some(&ip)
        {
            self.lease_of.remove(&m);
        }
        self.feed.emit(&Change::LeaseGone(old.ip));
        Some(old)
    }

    /// Whether `ip` is held right now by anyone but `mac`: a live lease of
    /// another MAC (or a declined address), or another node's fixed address.
    pub(super) fn taken_by_other(&self, ip: Ipv4Addr, mac: Mac, now: Timestamp) -> bool {
        let leased = self
            .leases
            .get(&u32::from(ip))
            .is_some_and(|l| l.is_live(now) && l.mac != Some(mac));
        let fixed = self.by_fixed_ip.get(&ip).is_some_and(|m| *m != mac);
        leased || fixed
    }
}
