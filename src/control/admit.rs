//! Whether a MAC may boot here: the one decision DHCP (port 67), the PXE
//! boot server (port 4011) and HTTP (`/boot/<mac>.ipxe`) all ask before they
//! act for a client, and the one place a client's first request makes its
//! node record. (HTTP asks only where `[http] bind_tokens_to_address =
//! false`: otherwise boot scripts go only to known nodes' addresses
//! ([`super::bind`]), so an unknown MAC is refused before it gets here.)
//!
//! A MAC with a record is admitted everywhere. An unknown MAC is admitted,
//! and gets a record in state `discovered` with the default bootenv, where
//! `unknown_clients = "serve"` holds; where it is `"ignore"` it is refused
//! and nothing is written. A protocol that may still say nothing to an
//! admitted MAC (DHCP without an address to offer) looks first
//! ([`Door::look`]) and makes the record only when it answers
//! ([`Door::welcome`]): a flood of made-up MACs that gets no answer leaves
//! no records behind. A record made by one protocol admits the MAC on
//! every other (DHCP leases to a node that exists), which is why no protocol
//! may make one on its own: an HTTP request from a subnet that ignores
//! unknown clients must not do what its DHCP refuses.
//!
//! Where a client is: DHCP knows its subnet (relay, ciaddr, boot interface);
//! HTTP knows only the peer address, which is looked up among the same
//! subnets. A peer outside every `[[dhcp.subnet]]` (routed from elsewhere,
//! or a spoofed source) gets the strictest rule configured: if any subnet
//! ignores unknown clients, so does the rest of the world.

use std::net::Ipv4Addr;
use std::sync::Arc;

use ipnet::Ipv4Net;

use crate::config::{HostnameScheme, UnknownClients};
use crate::control::timeline::Timeline;
use crate::metrics::{Metrics, NodeCreator};
use crate::model::{EventData, Mac, Node, StateChange, Timestamp};
use crate::nodes;
use crate::store::{Store, StoreError};

/// Where a client asks from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Place {
    /// The subnet DHCP placed it in.
    Subnet(Ipv4Net),
    /// The source address of a request (HTTP); `None` when unknown.
    Peer(Option<Ipv4Addr>),
}

/// What `unknown_clients` says at `place`, and the place's name for logs
/// and refusals (the subnet's CIDR, or `outside every [[dhcp.subnet]]`).
/// Pure: `subnets` is each configured subnet's rule.
pub fn rule(subnets: &[(Ipv4Net, UnknownClients)], place: Place) -> (UnknownClients, String) {
    match subnet_of(subnets, place) {
        Some((net, r)) => (r, net.to_string()),
        None => {
            let strictest = if subnets.iter().any(|(_, r)| *r == UnknownClients::Ignore) {
                UnknownClients::Ignore
            } else {
                UnknownClients::Serve
            };
            (strictest, "outside every [[dhcp.subnet]]".to_string())
        }
    }
}

/// The configured subnet `place` is in, and its rule.
fn subnet_of(
    subnets: &[(Ipv4Net, UnknownClients)],
    place: Place,
) -> Option<(Ipv4Net, UnknownClients)> {
    match place {
        Place::Subnet(net) => subnets.iter().find(|(n, _)| *n == net),
        Place::Peer(Some(ip)) => subnets.iter().find(|(n, _)| n.contains(&ip)),
        Place::Peer(None) => None,
    }
    .copied()
}

/// Which request asked (a model type: the new node's first event carries
/// it). Put into words only when a record is made: DHCP asks on every packet.
pub use crate::model::Via;

/// Which request made a record, for `/metrics`.
fn creator(via: Via) -> NodeCreator {
    match via {
        Via::Dhcp { .. } => NodeCreator::Dhcp,
        Via::PxeBootServer => NodeCreator::PxeBootServer,
        Via::BootScript { .. } => NodeCreator::BootScript,
    }
}

/// What [`Door::look`] found, before anything is written.
#[derive(Debug)]
pub enum Looked {
    /// It has a record.
    Known(Node),
    /// Unknown and admitted here: the record it would get (not stored, no
    /// token yet), to decide with; [`Door::welcome`] stores it.
    Unknown(Node),
    /// Unknown, and `unknown_clients = "ignore"` where it asked.
    Refused { place: String },
}

/// The answer to "may this MAC boot here?".
#[derive(Debug)]
pub enum Admitted {
    /// It has a record.
    Known(Node),
    /// It was unknown; its record was made now.
    New(Node),
    /// Unknown, and `unknown_clients = "ignore"` where it asked: nothing
    /// was written. `place` names where (for the protocol's own answer).
    Refused { place: String },
}

/// The admission decision with what it needs: the store, the rules of each
/// subnet, the bootenv new nodes get. One per appliance, shared by every
/// protocol.
pub struct Door {
    pub(super) store: Arc<dyn Store>,
    pub(super) timeline: Timeline,
    default_bootenv: String,
    subnets: Vec<(Ipv4Net, UnknownClients)>,
    metrics: Arc<Metrics>,
    pub(super) hostnames: HostnameScheme,
}

impl Door {
    pub fn new(
        store: Arc<dyn Store>,
        timeline: Timeline,
        default_bootenv: &str,
        subnets: Vec<(Ipv4Net, UnknownClients)>,
        metrics: Arc<Metrics>,
    ) -> Door {
        Door {
            store,
            timeline,
            default_bootenv: default_bootenv.to_string(),
            subnets,
            metrics,
            hostnames: HostnameScheme::Mac,
        }
    }

    /// New records get hostnames by `scheme` (`[nodes] default_hostname`).
    pub fn with_hostnames(mut self, scheme: HostnameScheme) -> Door {
        self.hostnames = scheme;
        self
    }

    /// How new records are named (`[nodes] default_hostname`).
    pub fn hostnames(&self) -> HostnameScheme {
        self.hostnames
    }

    /// Whether `mac`, asking from `place`, may boot, writing nothing: its
    /// record, or the one it would get. One store read, as for `admit`.
    pub async fn look(&self, mac: Mac, place: Place, now: Timestamp) -> Result<Looked, StoreError> {
        if let Some(node) = self.store.node(mac).await? {
            return Ok(Looked::Known(node));
        }
        let (rule, place) = rule(&self.subnets, place);
        if rule == UnknownClients::Ignore {
            tracing::info!(%mac, subnet = %place, "ignoring unknown client (unknown_clients = \"ignore\")");
            return Ok(Looked::Refused { place });
        }
        let mut node = Node::discovered(mac, &self.default_bootenv, String::new(), now);
        node.hostname = nodes::default_hostname(mac, self.hostnames);
        Ok(Looked::Unknown(node))
    }

    /// Stores `node`, the record [`Door::look`] proposed (perhaps with what
    /// the protocol learnt since: arch, relay information), with a token of
    /// its own and a `state` event saying where it came from. Returns the
    /// record in force, and whether it was made now (not by another request
    /// meanwhile).
    pub async fn welcome(
        &self,
        mut node: Node,
        place: Place,
        via: Via,
    ) -> Result<(Node, bool), StoreError> {
        let mac = node.mac;
        node.token = nodes::new_token();
        // A random name may be taken (one in 2^32 per node): draw again.
        let mut attempt = 0;
        let (node, created) = loop {
            match self.store.create_node_if_absent(node.clone()).await {
                Err(e)
                    if e.is_conflict()
                        && self.hostnames == HostnameScheme::Random
                        && attempt < 3 =>
                {
                    attempt += 1;
                    node.hostname = nodes::default_hostname(mac, self.hostnames);
                }
                other => break other?,
            }
        };
        if !created {
            return Ok((node, false));
        }
        self.created(&node, place, via).await;
        Ok((node, true))
    }

    /// A record was made for a client's first request: counted, and its
    /// timeline says where and by which request.
    pub(super) async fn created(&self, node: &Node, place: Place, via: Via) {
        self.metrics.node_created(creator(via));
        let created = StateChange::Created {
            subnet: subnet_of(&self.subnets, place).map(|(net, _)| net),
            via,
            bootenv: node.bootenv.clone(),
        };
        self.timeline
            .record(node.mac, EventData::State(created))
            .await;
    }

    /// Whether `mac`, asking from `place`, may boot; its record when it may
    /// (made now if it was unknown, with a `state` event saying where it
    /// came from, and `via` which request).
    pub async fn admit(
        &self,
        mac: Mac,
        place: Place,
        via: Via,
        now: Timestamp,
    ) -> Result<Admitted, StoreError> {
        match self.look(mac, place, now).await? {
            Looked::Known(node) => Ok(Admitted::Known(node)),
            Looked::Refused { place } => Ok(Admitted::Refused { place }),
            Looked::Unknown(node) => Ok(match self.welcome(node, place, via).await? {
                (node, true) => Admitted::New(node),
                (node, false) => Admitted::Known(node),
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::SqliteStore;
    use UnknownClients::{Ignore, Serve};

    fn net(s: &str) -> Ipv4Net {
        s.parse().unwrap()
    }

    fn ip(s: &str) -> Place {
        Place::Peer(Some(s.parse().unwrap()))
    }

    #[test]
    fn the_rule_is_the_subnets_and_outside_them_the_strictest() {
        let mixed = [(net("10.77.0.0/24"), Serve), (net("10.78.0.0/22"), Ignore)];
        let table = [
            (Place::Subnet(net("10.77.0.0/24")), Serve, "10.77.0.0/24"),
            (Place::Subnet(net("10.78.0.0/22")), Ignore, "10.78.0.0/22"),
            (ip("10.77.0.9"), Serve, "10.77.0.0/24"),
            (ip("10.78.3.9"), Ignore, "10.78.0.0/22"),
            (ip("192.168.1.1"), Ignore, "outside every [[dhcp.subnet]]"),
            (Place::Peer(None), Ignore, "outside every [[dhcp.subnet]]"),
        ];
        for (place, want, name) in table {
            assert_eq!(rule(&mixed, place), (want, name.to_string()), "{place:?}");
        }
        let open = [(net("10.77.0.0/24"), Serve)];
        assert_eq!(rule(&open, ip("192.168.1.1")).0, Serve);
        assert_eq!(rule(&[], Place::Peer(None)).0, Serve);
    }

    #[tokio::test]
    async fn an_unknown_mac_gets_a_record_only_where_unknown_clients_are_served() {
        let store: Arc<dyn Store> = Arc::new(SqliteStore::in_memory().await.unwrap());
        let door = Door::new(
            store.clone(),
            Timeline::new(store.clone()),
            "discovery",
            vec![(net("10.77.0.0/24"), Serve), (net("10.78.0.0/24"), Ignore)],
            Arc::new(Metrics::new(&[])),
        );
        let mac: Mac = "52:54:00:78:00:01".parse().unwrap();
        for place in [
            ip("10.78.0.7"),
            ip("172.16.0.1"),
            Place::Subnet(net("10.78.0.0/24")),
        ] {
            let a = door
                .admit(mac, place, Via::BootScript { from: None }, Timestamp(1))
                .await
                .unwrap();
            assert!(matches!(a, Admitted::Refused { .. }), "{place:?}: {a:?}");
            assert!(store.node(mac).await.unwrap().is_none(), "nothing written");
        }
        let a = door
            .admit(
                mac,
                ip("10.77.0.7"),
                Via::BootScript {
                    from: Some("10.77.0.7".parse().unwrap()),
                },
                Timestamp(2),
            )
            .await
            .unwrap();
        let Admitted::New(node) = a else {
            panic!("{a:?}")
        };
        assert_eq!(node.bootenv, "discovery");
        let events = store.events(mac).await.unwrap();
        assert_eq!(
            events[0].sentence(),
            "new node on 10.77.0.0/24 (boot script fetched from 10.77.0.7), bootenv discovery"
        );
        // Known now: admitted on the subnet that ignores unknown clients too.
        let a = door
            .admit(
                mac,
                Place::Subnet(net("10.78.0.0/24")),
                Via::Dhcp { relay: None },
                Timestamp(3),
            )
            .await
            .unwrap();
        assert!(matches!(a, Admitted::Known(_)), "{a:?}");
    }
}
