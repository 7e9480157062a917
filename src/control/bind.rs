//! Which address a node's credentials belong to: its boot script, its node
//! token and everything the token opens (config scripts, reports, the
//! install callback, cloud-init and answer files) are given only to the
//! address of the node's own machine, as rackboot's DHCP knows it.
//!
//! The address of a MAC is, in order: the lease rackboot's DHCP bound to it
//! (direct or relayed), its fixed address, and on a proxyDHCP subnet (where
//! another server leases) the address its firmware used in its DHCP exchange
//! with rackboot ([`Binding::saw`]). A MAC with none of these has no
//! credentials to hand out. Like Tinkerbell's metadata service, this trusts
//! the source address of a request: it stops another host on the boot
//! network, not one that forges the node's address on the link.
//!
//! `[http] bind_tokens_to_address = false` turns the check off (load tests
//! that fetch many nodes' scripts from one address); nothing else changes.
//!
//! Owns no protocol and no policy: HTTP asks [`Binding::check`], DHCP tells
//! [`Binding::saw`].

use std::net::Ipv4Addr;
use std::sync::Arc;

use crate::model::{LeaseState, Mac, Node, Timestamp};
use crate::store::{self, Store, StoreError};

/// Why a request may not act for a node.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// rackboot knows no address for the MAC: no lease from it, no fixed
    /// address, not seen in a proxyDHCP exchange.
    NoAddress,
    /// The request came from an address that is not the node's.
    OtherAddress { node: Ipv4Addr },
}

impl Refusal {
    /// The reason a client reads (HTTP 403), saying what would work.
    pub fn explain(&self, mac: Mac, peer: Option<Ipv4Addr>) -> String {
        let peer = peer.map_or_else(|| "an unknown address".to_string(), |p| p.to_string());
        match self {
            Refusal::NoAddress => format!(
                "{mac}'s credentials go only to its own address, and rackboot knows none for it (no lease from rackboot's DHCP, no fixed address, no proxyDHCP exchange); boot it through rackboot's DHCP or give it a fixed address"
            ),
            Refusal::OtherAddress { .. } => format!(
                "{mac}'s credentials go only to its own address, and this request came from {peer}, which is not it"
            ),
        }
    }
}

/// The binding of node credentials to node addresses, one per appliance.
pub struct Binding {
    store: Arc<dyn Store>,
    enforced: bool,
}

impl Binding {
    pub fn new(store: Arc<dyn Store>, enforced: bool) -> Binding {
        Binding { store, enforced }
    }

    /// Whether credentials are bound at all (`[http] bind_tokens_to_address`).
    pub fn enforced(&self) -> bool {
        self.enforced
    }

    /// The address of `node` now: its bound lease, else its fixed address,
    /// else the address it used in proxyDHCP.
    pub async fn address_of(&self, node: &Node) -> Result<Option<Ipv4Addr>, StoreError> {
        if let Some(lease) = self.store.lease_of(node.mac).await?
            && lease.state == LeaseState::Bound
            && lease.mac == Some(node.mac)
        {
            return Ok(Some(lease.ip));
        }
        Ok(node.ipv4.or(node.boot_ipv4))
    }

    /// The MAC whose lease from rackboot holds `ip` at `now`, if any: whose
    /// request this is, for a protocol that carries no MAC (TFTP).
    pub async fn leased_to(&self, ip: Ipv4Addr, now: Timestamp) -> Result<Option<Mac>, StoreError> {
        self.store.mac_at(ip, now).await
    }

    /// Whether a request from `peer` may act for `node`.
    pub async fn check(
        &self,
        node: &Node,
        peer: Option<Ipv4Addr>,
    ) -> Result<Result<(), Refusal>, StoreError> {
        if !self.enforced {
            return Ok(Ok(()));
        }
        Ok(match self.address_of(node).await? {
            None => Err(Refusal::NoAddress),
            Some(addr) if Some(addr) == peer => Ok(()),
            Some(addr) => Err(Refusal::OtherAddress { node: addr }),
        })
    }

    /// DHCP on a proxyDHCP subnet saw `mac` use `ip` (the source of its
    /// port-4011 request, its `ciaddr`, or the address it requests from the
    /// other server): keep it on the record, written only when it changed.
    /// Returns whether it did.
    pub async fn saw(&self, mac: Mac, ip: Ipv4Addr) -> Result<bool, StoreError> {
        if ip.is_unspecified() || ip.is_broadcast() {
            return Ok(false);
        }
        match self.store.node(mac).await? {
            Some(n) if n.boot_ipv4 != Some(ip) => {}
            _ => return Ok(false),
        }
        store::update_fields(self.store.as_ref(), mac, move |n| n.boot_ipv4 = Some(ip)).await?;
        Ok(true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{LeaseRequest, SqliteStore};

    fn mac(n: u8) -> Mac {
        Mac::new([0x52, 0x54, 0, 0, 0x12, n])
    }

    async fn node(store: &Arc<dyn Store>, mac: Mac, now: Timestamp) -> Node {
        let mut n = Node::discovered(mac, "discovery", crate::nodes::new_token(), now);
        n.hostname = mac.default_hostname();
        store.create_node_if_absent(n).await.unwrap().0
    }

    #[tokio::test]
    async fn a_node_address_is_its_lease_else_its_fixed_address_else_what_proxy_dhcp_saw() {
        let store: Arc<dyn Store> = Arc::new(SqliteStore::in_memory().await.unwrap());
        let b = Binding::new(store.clone(), true);
        let now = Timestamp::now();
        let ip = |s: &str| -> Ipv4Addr { s.parse().unwrap() };
        let n1 = node(&store, mac(1), now).await;
        assert_eq!(b.address_of(&n1).await.unwrap(), None);
        assert_eq!(
            b.check(&n1, Some(ip("10.0.0.5"))).await.unwrap(),
            Err(Refusal::NoAddress)
        );

        // What proxyDHCP saw, written once.
        assert!(b.saw(mac(1), ip("10.0.0.7")).await.unwrap());
        assert!(!b.saw(mac(1), ip("10.0.0.7")).await.unwrap());
        let n1 = store.node(mac(1)).await.unwrap().unwrap();
        assert_eq!(b.check(&n1, Some(ip("10.0.0.7"))).await.unwrap(), Ok(()));
        assert_eq!(
            b.check(&n1, Some(ip("10.0.0.8"))).await.unwrap(),
            Err(Refusal::OtherAddress {
                node: ip("10.0.0.7")
            })
        );

        // A fixed address wins over that, a bound lease over both.
        let mut fixed = n1.clone();
        fixed.ipv4 = Some(ip("10.0.0.20"));
        assert_eq!(b.address_of(&fixed).await.unwrap(), Some(ip("10.0.0.20")));
        let lease = store
            .allocate(&LeaseRequest {
                mac: mac(1),
                ranges: vec![(ip("10.0.0.100"), ip("10.0.0.110"))],
                fixed: None,
                wanted: None,
                exact: false,
                state: LeaseState::Bound,
                expires: Timestamp(now.millis() + 60_000),
                now,
            })
            .await
            .unwrap()
            .unwrap();
        assert_eq!(b.address_of(&fixed).await.unwrap(), Some(lease.ip));

        // Off: anyone, from anywhere.
        let open = Binding::new(store.clone(), false);
        let n2 = node(&store, mac(2), now).await;
        assert_eq!(open.check(&n2, None).await.unwrap(), Ok(()));
    }
}
